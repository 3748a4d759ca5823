"""Poly-view contrastive losses: M >= 2 views of each image, every view of every other image a negative.

"Poly-View Contrastive Learning", Shidani, Hjelm, Ramapuram, Webb, Dhekane and Busbridge, ICLR 2024
(arXiv:2403.05490). The paper bounds the one-vs-rest mutual information I(x_a; X_{!=a}) between one view and the
M - 1 others (Sec. 2.4) and builds the set's critic from the pairwise ones in two ways, the Poly-View Contrastive
(PVC) objectives; its baseline averages the pairwise two-view objectives (multi-crop, Sec. 2.3). With s the cosine
similarity over the temperature T and, for anchor view a of image i and one of its other views b,

    p_ab(i) = exp(s(i_a, i_b)) / ( exp(s(i_a, i_b)) + sum_{j != i} sum_{c = 1..M} exp(s(i_a, j_c)) )

(the candidates: the positive i_b and every view of every other image; i's other views are neither), the losses
per anchor are

    geometric   -1/(M-1) sum_{b != a} log p_ab(i)         (-log of the geometric mean of the p_ab)
    arithmetic  -log( 1/(M-1) sum_{b != a} p_ab(i) )      (-log of their arithmetic mean)
    multi_crop  -1/(M-1) sum_{b != a} log q_ab(i),  q_ab(i) = exp(s(i_a, i_b)) /
                ( sum_{j != i} exp(s(i_a, j_a)) + sum_j exp(s(i_a, j_b)) ),

multi-crop's q_ab being SimCLR's NT-Xent on the pair of views (a, b) alone. Each is averaged over the N M anchors.
With M = 2 the three are one and the same: SimCLR's NT-Xent (`InfoNCELoss`), as the paper says of its PVC losses.
The paper's appendix code computes p_ab as a cross-entropy over all M K candidates with i's other views masked, as
here; the equation numbers of the published version could not be checked here (see docs/methods/polyview.md).
"""

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import gather_with_grad, rank
from selfsup.errors import ConfigurationError
from selfsup.losses.info_nce import LossAndHardness
from selfsup.models.hard_negative_mixing import unmixed_hardness_metrics

PolyViewObjective = Literal["geometric", "arithmetic", "multi_crop"]
OBJECTIVES: tuple[str, ...] = get_args(PolyViewObjective)


def polyview_problems(num_views: int, objective: str) -> list[str]:
    """What is wrong with a view count and an objective, one sentence each (the method's and the loss's check)."""
    problems = []
    if num_views < 2:
        problems.append(f"views must give at least 2 views of each image for a poly-view loss, got {num_views}")
    if objective not in OBJECTIVES:
        problems.append(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    return problems


def polyview_loss_and_hardness(
    views: list[Tensor], temperature: float, objective: PolyViewObjective = "geometric"
) -> LossAndHardness:
    """The poly-view loss of `views`, M projections (N, D) of the same N images on this rank in view order, with
    the negatives of every rank, and the mean similarity of each anchor's hardest negative (any view of another
    image). Under DDP the mean over ranks is the loss of one process on the whole batch, as for `InfoNCELoss`."""
    problems = polyview_problems(len(views), objective)
    if not temperature > 0:
        problems.append(f"temperature must be greater than 0, got {temperature}")
    if problems:
        raise ConfigurationError("; ".join(problems) + ".")
    z = F.normalize(torch.stack([view.float() for view in views], dim=1), dim=2)  # (N, M, D): image, view
    n, m = z.shape[:2]
    candidates = gather_with_grad(z.flatten(0, 1))  # (K M, D), K = N * world size: image-major, as z
    k = candidates.shape[0] // m
    similarity = (z.flatten(0, 1) @ candidates.T).view(n, m, k, m)  # (N, M, K, M): anchor i_a against j_c
    own = torch.arange(n, device=z.device) + rank() * n  # the global index of each local image
    own_image = torch.zeros(n, k, dtype=torch.bool, device=z.device)
    own_image[torch.arange(n, device=z.device), own] = True  # (N, K)
    logits = similarity / temperature
    positive = logits[torch.arange(n, device=z.device), :, own, :]  # (N, M, M): s(i_a, i_b)
    if objective == "multi_crop":
        anchor_itself = own_image[:, None, :, None] & torch.eye(m, dtype=torch.bool, device=z.device)[None, :, None]
        per_view = torch.logsumexp(logits.masked_fill(anchor_itself, float("-inf")), dim=2)  # (N, M, M): view c of all
        same_view = per_view.diagonal(dim1=1, dim2=2)  # (N, M): view a of every other image
        pair_loss = torch.logaddexp(same_view[:, :, None], per_view) - positive  # (N, M, M): -log q_ab
    else:
        negatives = logits.masked_fill(own_image[:, None, :, None], float("-inf")).flatten(2)  # (N, M, K M)
        pair_loss = F.softplus(torch.logsumexp(negatives, dim=2)[:, :, None] - positive)  # (N, M, M): -log p_ab
    # b == a is no pair: masked, not indexed out, which would make a data-dependent shape in a compiled step
    same_view_pair = torch.eye(m, dtype=torch.bool, device=z.device)
    if objective == "arithmetic":
        anchor_loss = math.log(m - 1) - torch.logsumexp((-pair_loss).masked_fill(same_view_pair, float("-inf")), dim=2)
    else:
        anchor_loss = pair_loss.masked_fill(same_view_pair, 0.0).sum(dim=2) / (m - 1)
    other_images = similarity.detach().masked_fill(own_image[:, None, :, None], float("-inf"))
    return LossAndHardness(anchor_loss.mean(), unmixed_hardness_metrics(other_images.flatten(2).flatten(0, 1)))


def polyview_loss(views: list[Tensor], temperature: float, objective: PolyViewObjective = "geometric") -> Tensor:
    """The loss () of `polyview_loss_and_hardness`."""
    return polyview_loss_and_hardness(views, temperature, objective).loss
