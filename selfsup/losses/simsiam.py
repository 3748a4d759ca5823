"""SimSiam's loss: the negative cosine similarity between a prediction and a stop-gradient projection.

"Exploring Simple Siamese Representation Learning" (Chen and He, CVPR 2021), eq. (1): D(p, z) = -(p / |p|) .
(z / |z|), and eq. (3)-(4): z enters as stopgrad(z), a constant (the paper shows the stop-gradient is what keeps
the network from collapsing), symmetrised over the two views: L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2.
Its minimum is -1. It is BYOL's 2 - 2 cos(p, z) up to an affine map, but not the same loss: the gradient is
half as large, which the learning rate feels.

Also the paper's collapse monitor (Sec. 4.1, Fig. 2): the standard deviation over the batch of the l2-normalised
projections, averaged over channels; about 1 / sqrt(d) for outputs spread over the unit sphere in d dimensions,
0 when every output is the same vector.
"""

import torch.nn.functional as F
from torch import Tensor


def negative_cosine_similarity(prediction: Tensor, target: Tensor) -> Tensor:
    """D(p, stopgrad(z)): the mean over the batch of -cos(prediction, target); gradient reaches only `prediction`
    (B, D). A target (B, k, D) of k embeddings per prediction (nearest neighbours) gives the mean over the k too."""
    prediction = prediction.float() if target.ndim == 2 else prediction.float()[:, None]
    return -F.cosine_similarity(prediction, target.detach().float(), dim=-1).mean()


def normalized_output_std(projections: Tensor) -> Tensor:
    """() detached: the std over the batch of each channel of the unit-norm projections (N, d), mean over channels."""
    return F.normalize(projections.detach().float(), dim=1).std(dim=0).mean()
