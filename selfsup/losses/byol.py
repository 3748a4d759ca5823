"""BYOL's regression loss: the normalized mean squared error between a prediction and a target projection.

"Bootstrap Your Own Latent" (Grill et al., NeurIPS 2020), eq. (2): ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z).
The target carries no gradient.
"""

import torch.nn.functional as F
from torch import Tensor


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of 2 - 2 cos(prediction, target); gradient reaches only `prediction`."""
    cosine = F.cosine_similarity(prediction.float(), target.detach().float(), dim=1)
    return (2 - 2 * cosine).mean()
