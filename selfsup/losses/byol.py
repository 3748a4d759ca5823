"""BYOL's regression loss: the normalized mean squared error between a prediction and a target projection.

"Bootstrap Your Own Latent" (Grill et al., NeurIPS 2020), eq. (2): ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z).
The target carries no gradient. Several targets per prediction (the k nearest neighbours of Mean Shift, "Mean Shift
for Self-Supervised Learning", Koohpayegani et al., ICCV 2021, Sec. 3) give the mean over them.
"""

import torch.nn.functional as F
from torch import Tensor


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of 2 - 2 cos(prediction, target); gradient reaches only `prediction` (B, D). A target
    (B, k, D) of k embeddings per prediction gives the mean over the k as well."""
    prediction = prediction.float() if target.ndim == 2 else prediction.float()[:, None]
    cosine = F.cosine_similarity(prediction, target.detach().float(), dim=-1)
    return (2 - 2 * cosine).mean()
