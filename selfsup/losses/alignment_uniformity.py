"""Alignment and uniformity of L2-normalised embeddings, as diagnostics and as a training objective.

"Understanding Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere" (Wang and
Isola, ICML 2020), Sec. 4.1.2, on embeddings f(x) on the unit hypersphere:

    L_align(f; alpha) = E_{(x, y) positive pair} ||f(x) - f(y)||_2^alpha                 (alpha > 0; paper: 2)
    L_uniform(f; t)   = log E_{x, y i.i.d.} exp(-t ||f(x) - f(y)||_2^2)                (t > 0; paper: 2)

Lower is better for both: positives close together, and the embeddings spread over the sphere (the log of the mean
Gaussian potential of every pair). Trained directly (their Sec. 6, and the PyTorch code of their appendix, which is
what `align_uniform_terms` follows), the objective is

    L = L_align(f; alpha) + lambda * (L_uniform(f; t) on view a + L_uniform(f; t) on view b) / 2.

`alignment` and `uniformity` are the plain batch estimates (the `selfsup eval` diagnostics use them, on one process).
Training uses `align_uniform_terms`, whose uniformity is over the pairs of the global batch: each rank takes the pairs
of its own rows with the rows of every rank (gathered with gradient), the sum of the Gaussian potentials is summed
over the ranks with gradient (`sum_with_grad`), and every rank takes the log of the global mean. The log of each
rank's own mean would not do: the mean over ranks of those logs is not the log of the mean over every pair. So every
rank's uniformity is the single-process value, the alignment term is each rank's mean over its own pairs (their mean
over ranks is the single-process value), and DDP's averaged gradients are the single-process ones (tested on 2 ranks).
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import all_reduce, gather, gather_with_grad, rank, sum_with_grad
from selfsup.models.hard_negative_mixing import unmixed_hardness_metrics

ALPHA = 2.0  # alpha of L_align (the paper's and its code's default)
T = 2.0  # t of L_uniform (likewise)
UNIFORMITY_WEIGHT = 1.0  # lambda: the official code's default weight of L_uniform against L_align


def alignment(z_a: Tensor, z_b: Tensor, alpha: float = ALPHA) -> Tensor:
    """L_align of the positive pairs (z_a[i], z_b[i]) of z_a, z_b (N, D), normalised here."""
    z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
    # ||a - b||^alpha as (||a - b||^2)^(alpha / 2), floored: at an identical pair the norm's gradient is 0 times the
    # power's infinite one for alpha < 1, a NaN
    return (z_a - z_b).pow(2).sum(dim=1).clamp_min(1e-12).pow(alpha / 2).mean()


def uniformity(z: Tensor, t: float = T) -> Tensor:
    """L_uniform over all distinct pairs of rows of z (N, D), normalised here; on this process's rows only."""
    squared_distances = torch.pdist(F.normalize(z.float(), dim=1)).pow(2)
    return squared_distances.mul(-t).exp().mean().log()


def global_uniformity(z: Tensor, t: float = T) -> Tensor:
    """L_uniform over all distinct pairs of the rows of every rank, (M, D) once gathered; `uniformity` in one process.

    Each rank sums exp(-t d^2) over the pairs of its rows with every other row (each pair of the global batch is met
    twice in all, once from each side) and the sums are added over the ranks with gradient; the largest exponent of
    every rank is taken out first, so no potential underflows to 0 at large t."""
    z = F.normalize(z.float(), dim=1)
    everyone = gather_with_grad(z)  # (M, D), M = N * world size
    n, m = z.shape[0], everyone.shape[0]
    squared_distances = (2 - 2 * z @ everyone.T).clamp_min(0)  # (N, M) on the sphere; no sqrt (no NaN gradient at 0)
    itself = torch.zeros_like(squared_distances, dtype=torch.bool)
    itself = itself.scatter(1, (torch.arange(n, device=z.device) + rank() * n)[:, None], True)
    exponents = (-t * squared_distances).masked_fill(itself, float("-inf"))
    largest = all_reduce(exponents.detach().amax(), op="max")  # () a constant of the log-sum-exp
    potentials = sum_with_grad((exponents - largest).exp().sum())  # () the sum over the M (M - 1) ordered pairs
    return largest + potentials.log() - math.log(m * (m - 1))


class AlignUniformTerms(NamedTuple):
    """The two terms of the objective, unweighted, and how hard the in-batch negatives were; `loss` weighs them."""

    alignment: Tensor  # () L_align of this rank's positive pairs
    uniformity: Tensor  # () (L_uniform(view a) + L_uniform(view b)) / 2 over the global batch
    hardness: dict[str, Tensor]  # () each, detached: the mean similarity of each view's most similar other image

    def loss(self, uniformity_weight: float = UNIFORMITY_WEIGHT) -> Tensor:
        """L_align + lambda * the mean of the two views' L_uniform."""
        return self.alignment + uniformity_weight * self.uniformity


def align_uniform_terms(z_a: Tensor, z_b: Tensor, alpha: float = ALPHA, t: float = T) -> AlignUniformTerms:
    """The terms of z_a, z_b: (N, D) projections of two views of the same N images on this rank (normalised here).
    Every rank must hold the same number of images."""
    z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
    terms = (alignment(z_a, z_b, alpha), (global_uniformity(z_a, t) + global_uniformity(z_b, t)) / 2)
    return AlignUniformTerms(*terms, _in_batch_hardness(z_a.detach(), z_b.detach()))


def align_uniform_loss(
    z_a: Tensor, z_b: Tensor, alpha: float = ALPHA, t: float = T, uniformity_weight: float = UNIFORMITY_WEIGHT
) -> Tensor:
    """L_align + lambda * (L_uniform(z_a) + L_uniform(z_b)) / 2 of z_a, z_b (N, D) of two views of N images."""
    return align_uniform_terms(z_a, z_b, alpha, t).loss(uniformity_weight)


@torch.no_grad()
def _in_batch_hardness(z_a: Tensor, z_b: Tensor) -> dict[str, Tensor]:
    """`train/hard_negative_sim` as SimCLR logs it: each view's most similar view of another image of the global
    batch, though this objective has no negatives as such (its uniformity term repels every pair alike)."""
    n = z_a.shape[0]
    candidates = torch.cat([gather(z_a), gather(z_b)])  # (2M, D)
    m = candidates.shape[0] // 2
    local = torch.arange(n, device=z_a.device) + rank() * n
    same_image = torch.cat([local, local + m])[:, None]  # (2N, 1) itself; its other view below
    similarity = torch.cat([z_a, z_b]) @ candidates.T  # (2N, 2M)
    similarity = similarity.scatter(1, same_image, float("-inf")).scatter(1, (same_image + m) % (2 * m), float("-inf"))
    return unmixed_hardness_metrics(similarity)
