"""SwAV's prototypes: K trainable vectors on the unit sphere that embeddings are scored against.

"Unsupervised Learning of Visual Features by Contrasting Cluster Assignments" (Caron et al., NeurIPS 2020),
Sec. 3.1: the prototypes C are a linear layer without bias whose rows are projected back onto the unit sphere
before every step, so z^T c_k is a cosine similarity.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigurationError


class Prototypes(nn.Module):
    """SwAV's K prototypes: a bias-free linear layer whose rows stay on the unit sphere ("Unsupervised Learning of
    Visual Features by Contrasting Cluster Assignments", Caron et al., NeurIPS 2020, Sec. 3.1).

    Takes unit-norm embeddings (B, dim) and returns their cosine scores (B, num_prototypes) in float32; call
    `normalize_` before each optimizer step, as `SwAV` does. `num_prototypes` is at least 2."""

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__()
        if num_prototypes < 2:
            raise ConfigurationError(f"SwAV needs at least 2 prototypes, got {num_prototypes}; raise num_prototypes")
        self.weight = nn.Parameter(F.normalize(torch.randn(num_prototypes, dim), dim=1))  # (K, D)

    @property
    def num_prototypes(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def normalize_(self) -> None:
        """Put every prototype back on the unit sphere (the optimizer step moves them off it)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, embeddings: Tensor) -> Tensor:
        """Scores (B, K) of unit-norm embeddings (B, D), in float32 even under autocast: Sinkhorn divides them
        by epsilon = 0.05, which would magnify bfloat16's rounding twentyfold."""
        with torch.autocast(embeddings.device.type, enabled=False):
            return embeddings.float() @ self.weight.float().T
