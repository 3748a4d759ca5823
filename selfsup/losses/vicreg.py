"""VICReg's variance-invariance-covariance loss.

"VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning" (Bardes, Ponce and LeCun,
ICLR 2022), Sec. 3, eq. (1)-(6) and Algorithm 1. For the embeddings Z_a, Z_b (N x D) of two views of N images:

    s(Z_a, Z_b) = mean over samples and dimensions of (z_a - z_b)^2      invariance (eq. 5)
    v(Z) = 1/D sum_j max(0, gamma - sqrt(Var(Z_j) + eps))              variance (eq. 1, 2)
    c(Z) = 1/D sum_{i != j} Cov(Z)_ij^2                                 covariance (eq. 3, 4)
    L = lambda s + mu [v(Z_a) + v(Z_b)] + nu [c(Z_a) + c(Z_b)]          (eq. 6)

gamma = 1, eps = 1e-4, lambda = mu = 25, nu = 1; Var and Cov divide by N - 1. The variance term keeps every
dimension's std at least gamma (no collapse), the covariance term decorrelates the dimensions, the invariance term
pulls the views together. s is the mean over the N x D entries, as in Algorithm 1 (`mse_loss`) and the official
code, for which lambda = 25 was tuned (eq. 5's 1/N sum ||z_a - z_b||^2 is D times larger). v(Z_a) + v(Z_b) is
summed as in eq. 6 and Algorithm 1; the official code halves it.

v and c are over the global batch: the embeddings are gathered with gradient (`gather_with_grad`), so those terms
are the same on every rank and DDP's averaging of the gather's summed gradients gives the single-process
gradient. s is local, each rank's mean over its own samples: with equal batches on every rank the mean over ranks
is the single-process s, and DDP's averaging gives its gradient. So the mean of the ranks' losses, and the
gradient DDP applies, are those of one process on the concatenated batch (tested on 2 ranks).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import gather_with_grad
from selfsup.losses.barlow_twins import off_diagonal_square_sum

INVARIANCE_WEIGHT = 25.0  # lambda of eq. (6)
VARIANCE_WEIGHT = 25.0  # mu
COVARIANCE_WEIGHT = 1.0  # nu
VARIANCE_TARGET = 1.0  # gamma of eq. (1): the std each dimension is held at, at least
VARIANCE_EPSILON = 1e-4  # eps of eq. (2): keeps the root's gradient finite at zero variance


class VICRegTerms(NamedTuple):
    """The three terms of eq. (6), unweighted; `loss` combines them."""

    invariance: Tensor  # () s(Z_a, Z_b) over this rank's samples
    variance: Tensor  # () v(Z_a) + v(Z_b) over the global batch
    covariance: Tensor  # () c(Z_a) + c(Z_b) over the global batch

    def loss(
        self,
        invariance_weight: float = INVARIANCE_WEIGHT,
        variance_weight: float = VARIANCE_WEIGHT,
        covariance_weight: float = COVARIANCE_WEIGHT,
    ) -> Tensor:
        """Eq. (6): lambda s + mu [v(Z_a) + v(Z_b)] + nu [c(Z_a) + c(Z_b)]."""
        return (
            invariance_weight * self.invariance + variance_weight * self.variance + covariance_weight * self.covariance
        )


def _variance_and_covariance(z: Tensor) -> tuple[Tensor, Tensor]:
    """v(Z) and c(Z) (eq. 1 and 4) of this rank's embeddings (N, D) together with every other rank's."""
    z = gather_with_grad(z)  # (M, D), M = N * world size
    centred = z - z.mean(dim=0)
    std = torch.sqrt(centred.var(dim=0) + VARIANCE_EPSILON)  # (D,)
    variance = torch.relu(VARIANCE_TARGET - std).mean()
    covariance = centred.T @ centred / (z.shape[0] - 1)  # (D, D), Cov(Z) of eq. (3)
    return variance, off_diagonal_square_sum(covariance) / z.shape[1]


def vicreg_terms(z_a: Tensor, z_b: Tensor) -> VICRegTerms:
    """The invariance, variance and covariance terms of z_a, z_b: (N, D) embeddings (the paper's expander outputs)
    of two views of the same N images on this rank, in float32 outside autocast. Every rank must hold the same
    number of samples."""
    with torch.autocast(z_a.device.type, enabled=False):
        z_a, z_b = z_a.float(), z_b.float()
        invariance = F.mse_loss(z_a, z_b)  # local: the mean over ranks is the global mean
        variance_a, covariance_a = _variance_and_covariance(z_a)
        variance_b, covariance_b = _variance_and_covariance(z_b)
        return VICRegTerms(invariance, variance_a + variance_b, covariance_a + covariance_b)


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    invariance_weight: float = INVARIANCE_WEIGHT,
    variance_weight: float = VARIANCE_WEIGHT,
    covariance_weight: float = COVARIANCE_WEIGHT,
) -> Tensor:
    """Eq. (6) of z_a, z_b: (N, D) embeddings of two views of the same N images on this rank. The loss () differs
    between ranks by the local invariance term; the mean over ranks is the loss of the global batch."""
    return vicreg_terms(z_a, z_b).loss(invariance_weight, variance_weight, covariance_weight)
