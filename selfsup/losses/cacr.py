"""Contrastive attraction and contrastive repulsion (CACR), for in-batch and queue negatives alike.

"Contrastive Attraction and Contrastive Repulsion for Representation Learning" (Zheng, Chen, Yao, Yang, Li, Zhang,
Zhang, Tsang, Zhou and Zhou, arXiv:2105.03746, 2021; TMLR 2023), Sec. 3. With the point-to-point cost
c(a, b) = ||a - b||^2 = 2 - 2 cos(a, b) between unit-norm embeddings, the loss is L_CA + L_CR:

    L_CA = E_x E_{x+ ~ pi+(.|x)} [ c(x, x+) ],   pi+(x+|x) ~ e^{+t+ c(x, x+)} p(x+|x)   (attract far positives more)
    L_CR = -E_x E_{x- ~ pi-(.|x)} [ c(x, x-) ],  pi-(x-|x) ~ e^{-t- c(x, x-)} p(x-)     (repel near negatives more)

where the conditional distributions are estimated on each anchor's sampled positives and negatives: a softmax over
them of +t+ c (positives) and -t- c (negatives). The gradient flows through the weights, as in the authors' CIFAR
code (`our_loss1`, `our_loss2`; their ImageNet code holds them fixed). There is no softmax over the positive and the
negatives together, so the InfoNCE temperature plays no part. With SimCLR's and MoCo's single positive the positive
weight is 1. An anchor's negatives are those of InfoNCE here: SimCLR's 2N - 2 other views of the global batch (the
authors' CIFAR code takes the other view's N - 1) or MoCo's queue.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from selfsup.errors import at_least, check_options
from selfsup.runs import Metric


@dataclass(frozen=True)
class AttractionRepulsion:
    """CACR's settings; off by default.

    Attributes:
        enabled: train with L_CA + L_CR in place of InfoNCE.
        attraction_temperature: t+, how much more the farther positives are pulled (0: all alike). The authors'
            CIFAR and STL-10 default: 1.
        repulsion_temperature: t-, how much more the nearer negatives are pushed (0: all alike). Their default: 1.
    """

    enabled: bool = False
    attraction_temperature: float = 1.0
    repulsion_temperature: float = 1.0

    def __post_init__(self) -> None:
        temperatures = dict(
            attraction_temperature=self.attraction_temperature, repulsion_temperature=self.repulsion_temperature
        )
        problems = at_least(0, **temperatures)
        if not self.enabled and (self.attraction_temperature, self.repulsion_temperature) != (1.0, 1.0):
            problems.append("attraction_temperature and repulsion_temperature act only with enabled true: set "
                            "--model.init_args.cacr.enabled true, or leave the temperatures out")  # fmt: skip
        check_options(problems, "--model.init_args.cacr")

    @classmethod
    def from_dict(cls, values: "AttractionRepulsion | dict[str, float | bool]") -> "AttractionRepulsion":
        """The settings from config values (as checkpoints store them), or `values` itself."""
        return values if isinstance(values, cls) else cls(**values)


class AttractionRepulsionLoss(NamedTuple):
    """CACR's loss and how it weighted the negatives."""

    loss: Tensor  # () mean over the anchors of L_CA + L_CR
    metrics: dict[str, Tensor]  # () each, detached, under `selfsup.runs.Metric` names


def attraction_repulsion(
    similarity: Tensor,
    positive_columns: Tensor,
    negative_mask: Tensor | None,
    attraction_temperature: float,
    repulsion_temperature: float,
) -> AttractionRepulsionLoss:
    """Mean over the rows of `similarity` of L_CA + L_CR.

    Args:
        similarity: (A, C) cosine similarities of A anchors to C candidates; entries that are neither a positive nor
            a negative of an anchor (itself) may hold anything, -inf included.
        positive_columns: (A, M) the columns of each anchor's M positives.
        negative_mask: (A, C) True where a candidate is a negative of that anchor; None: every column that is not a
            positive (a queue).
        attraction_temperature: t+.
        repulsion_temperature: t-.

    The metric `train/hardest_negative_weight` is pi- of each anchor's nearest negative times its number of
    negatives N (1: every negative repelled alike), averaged.
    """
    if negative_mask is None:
        negative_mask = torch.ones_like(similarity, dtype=torch.bool).scatter(1, positive_columns, False)
    positive_cost = 2 - 2 * similarity.gather(1, positive_columns)  # (A, M) c(x, x+)
    attraction_weight = torch.softmax(attraction_temperature * positive_cost, dim=1)  # pi+
    attraction = (attraction_weight * positive_cost).sum(dim=1)  # (A,)

    negative_cost = 2 - 2 * similarity.masked_fill(~negative_mask, 0.0)  # (A, C) c(x, x-), 2 off the negatives
    repulsion_logits = (-repulsion_temperature * negative_cost).masked_fill(~negative_mask, float("-inf"))
    repulsion_weight = torch.softmax(repulsion_logits, dim=1)  # pi-, 0 off the negatives
    repulsion = -(repulsion_weight * negative_cost).sum(dim=1)  # (A,)

    count = negative_mask.sum(dim=1)
    hardest_weight = (repulsion_weight.amax(dim=1) * count).detach().mean()
    return AttractionRepulsionLoss((attraction + repulsion).mean(), {Metric.HARDEST_NEGATIVE_WEIGHT: hardest_weight})
