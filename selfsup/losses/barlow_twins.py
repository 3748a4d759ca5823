"""Barlow Twins' redundancy-reduction loss, over the global batch.

"Barlow Twins: Self-Supervised Learning via Redundancy Reduction" (Zbontar, Jing, Misra, LeCun and Deny, ICML
2021), eq. (1) and Algorithm 1: standardise each of the D embedding dimensions over the batch (mean 0, std 1),
take the cross-correlation matrix of the two views' embeddings, C = z_a^T z_b / N (D x D), and drive it to the
identity:

    L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2

The on-diagonal term makes each dimension invariant to the augmentations; the off-diagonal term decorrelates the
dimensions from each other (redundancy reduction). lambda = 0.0051 (the official code's value; the paper rounds it
to 5e-3).

The mean, the std and C are over the global batch. The embeddings are gathered with gradient (`gather_with_grad`),
so every rank computes the same loss, the single-process loss of the concatenated batch. The gather's backward
sums every rank's gradient into each rank's own samples (world_size times the gradient of that one loss), and
DDP's averaging divides by world_size again: the gradient applied is exactly the single-process one (tested on 2
ranks). Reducing C with `torch.distributed.all_reduce`, which has no backward, keeps the value but leaves the
gradient 1/world_size too small (lightly's bug, its issues #1920 and #1977).

Standardisation divides by the biased std (over N, with 1e-5 inside the root), as the official code's
BatchNorm1d(affine=False) does, so identical views give C_ii = 1 exactly; the pseudo-code's `z.std(0)` is the
unbiased std, with which C_ii cannot exceed (N - 1) / N.
"""

from typing import NamedTuple

import torch
from torch import Tensor

from selfsup.distributed import gather_with_grad

OFF_DIAGONAL_WEIGHT = 0.0051  # lambda of eq. (1)
STD_EPSILON = 1e-5  # added to the variance before the root, as BatchNorm1d does: a constant dimension stays finite


class BarlowTwinsTerms(NamedTuple):
    """The two sums of eq. (1), unweighted; `loss` combines them."""

    on_diagonal: Tensor  # () sum_i (1 - C_ii)^2, the invariance term
    off_diagonal: Tensor  # () sum_{i != j} C_ij^2, the redundancy term, before lambda

    def loss(self, off_diagonal_weight: float = OFF_DIAGONAL_WEIGHT) -> Tensor:
        """Eq. (1): the on-diagonal term plus lambda times the off-diagonal term."""
        return self.on_diagonal + off_diagonal_weight * self.off_diagonal


def off_diagonal_square_sum(matrix: Tensor) -> Tensor:
    """sum_{i != j} M_ij^2 of a square matrix (masked, not the full sum less the diagonal's, which would cancel
    digits when the diagonal dominates)."""
    diagonal = torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
    return matrix.square().masked_fill(diagonal, 0).sum()


def _standardized_over_global_batch(z: Tensor) -> Tensor:
    """The embeddings (N, D) of every rank, (M, D), each dimension at mean 0 and biased std 1 over those M rows."""
    z = gather_with_grad(z.float())  # (M, D), M = N * world size
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, correction=0) + STD_EPSILON)


def barlow_twins_terms(z_a: Tensor, z_b: Tensor) -> BarlowTwinsTerms:
    """The on- and off-diagonal sums of the cross-correlation matrix of z_a, z_b: (N, D) projections of two views
    of the same N images on this rank, in float32 outside autocast (a D x D sum of squares in bfloat16 would keep
    three digits). Every rank must hold the same number of samples; every rank gets the same terms."""
    with torch.autocast(z_a.device.type, enabled=False):
        a, b = _standardized_over_global_batch(z_a), _standardized_over_global_batch(z_b)  # (M, D) each
        correlation = a.T @ b / a.shape[0]  # (D, D), C of eq. (1)
        on_diagonal = (1 - correlation.diagonal()).square().sum()
        return BarlowTwinsTerms(on_diagonal, off_diagonal_square_sum(correlation))


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, off_diagonal_weight: float = OFF_DIAGONAL_WEIGHT) -> Tensor:
    """Eq. (1) of z_a, z_b: (N, D) projections of two views of the same N images on this rank; the loss () of the
    global batch, equal on every rank."""
    return barlow_twins_terms(z_a, z_b).loss(off_diagonal_weight)
