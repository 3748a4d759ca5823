"""Feature transformation: harder positives by extrapolation, more diverse negatives by interpolation (FT).

"Improving Contrastive Learning by Visualizing Feature Transformation" (Zhu, Zhao, Liu, Sun and Chen, ICCV 2021),
Sec. 4. Positive extrapolation (Sec. 4.1) moves a query z_q and its positive key z_k+ away from each other,

    z^_q = lambda_ex z_q + (1 - lambda_ex) z_k+,    z^_k+ = lambda_ex z_k+ + (1 - lambda_ex) z_q,

with lambda_ex = 1 + Beta(alpha_ex, alpha_ex) >= 1, so the positive pair gets harder. Negative interpolation
(Sec. 4.2) replaces the negatives by mixtures of random pairs of them, Z^_neg = lambda_in Z_neg + (1 - lambda_in)
Z_perm, where Z_perm is Z_neg randomly permuted and lambda_in ~ Beta(alpha_in, alpha_in) (alpha_in = 1: U(0, 1)).
The paper's best ImageNet setting, as the authors' command line gives it, is alpha_ex = 2, alpha_in = 1.6.

What it makes is unit-normalised, as MoCHi's mixing is (for unit vectors and lambda_ex >= 1 the normalised pair's
cosine is at most the original's, so extrapolation never makes a positive easier); the authors' released command
does not renormalise. One coefficient is drawn per positive pair and per negative (the released code draws one
per step, or one per feature dimension). Gradients flow as in the authors' code (`memory/mem_moco.py`,
`RGBMoCo_dropmix_norm`): through the transformed query, and through the query's share (1 - lambda_ex) of the
transformed key; a key, a queue and what is interpolated from them stay constants where they were constants, and
in-batch negatives (SimCLR) keep their gradient. The interpolated negatives replace the real ones in the loss, as
in the paper.

Under DDP the coefficients are drawn for the global batch on every rank, each rank using its own slice: ranks whose
generators are in the same state draw exactly what one process on the whole batch would (the default generator is
torch's global one, which `seed_everything` seeds alike on every rank); ranks in other states draw other, equally
distributed coefficients, which changes nothing in expectation.

`FeatureTransformation` holds the settings once; SimCLR (in-batch negatives) and MoCo v2 (queue negatives) take it
as their `transformation` option and log the hardness metrics MoCHi's mixing logs, plus how much harder the
extrapolated positives are.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.distributed import rank, world_size
from selfsup.errors import at_least, check_options
from selfsup.models.hard_negative_mixing import HardNegativeMixing
from selfsup.runs import Metric


class TransformationDraw(NamedTuple):
    """The random coefficients of one transformation: None where that half of it is off."""

    extrapolation: Tensor | None  # (P,) lambda_ex in [1, 2], one per positive pair
    interpolation: Tensor | None  # (K,) lambda_in in [0, 1], one per negative
    partner: Tensor | None  # (K,) a permutation: negative k is interpolated with negative partner[k]


class TransformedLogits(NamedTuple):
    """What the transformation gives the loss: similarities (not yet divided by the temperature) and hardness."""

    positive: Tensor  # (B,) cos(z^_q, z^_k+) of each query's extrapolated positive pair, with gradient
    negatives: Tensor  # (B, K) cos(z^_q, z^_neg) of each query with each (interpolated) negative, -inf if none
    hardness: dict[str, Tensor]  # () each, detached, under `selfsup.runs.Metric`'s names


@dataclass(frozen=True)
class FeatureTransformation:
    """FT's settings: the Beta concentrations of the two transformations; the defaults transform nothing.

    Attributes:
        positive_alpha: alpha_ex, positive extrapolation with lambda_ex = 1 + Beta(alpha_ex, alpha_ex) (0: off).
            The authors' ImageNet setting is 2.0.
        negative_alpha: alpha_in, negative interpolation with lambda_in ~ Beta(alpha_in, alpha_in) (0: off; 1.0:
            U(0, 1)). The authors' ImageNet setting is 1.6.
        start_epoch: first epoch with the transformation (0: from the start).
    """

    positive_alpha: float = 0.0
    negative_alpha: float = 0.0
    start_epoch: int = 0

    def __post_init__(self) -> None:
        concentrations = dict(positive_alpha=self.positive_alpha, negative_alpha=self.negative_alpha)
        check_options(at_least(0, **concentrations, start_epoch=self.start_epoch), "--model.init_args.transformation")

    @classmethod
    def from_dict(cls, values: "FeatureTransformation | dict[str, float]") -> "FeatureTransformation":
        """The settings from config values (as checkpoints store them), or `values` itself."""
        return values if isinstance(values, cls) else cls(**values)

    @property
    def enabled(self) -> bool:
        """Whether either transformation is on in some epoch."""
        return self.positive_alpha > 0 or self.negative_alpha > 0

    def at_epoch(self, epoch: int) -> "FeatureTransformation | None":
        """These settings if the transformation is on in `epoch`, else None."""
        return self if self.enabled and epoch >= self.start_epoch else None

    def draw(
        self, num_pairs: int, num_negatives: int, device: torch.device, generator: torch.Generator | None = None
    ) -> TransformationDraw:
        """lambda_ex for `num_pairs` positive pairs, then lambda_in and a partner for `num_negatives` negatives, in
        this order from `generator` (torch's global one if None)."""
        extrapolation = interpolation = partner = None
        if self.positive_alpha > 0:
            extrapolation = 1 + sample_beta(self.positive_alpha, num_pairs, device, generator)
        if self.negative_alpha > 0:
            interpolation = sample_beta(self.negative_alpha, num_negatives, device, generator)
            partner = torch.randperm(num_negatives, generator=generator, device=device)
        return TransformationDraw(extrapolation, interpolation, partner)

    def in_batch(
        self, anchors: Tensor, candidates: Tensor, positive_column: Tensor, negative_mask: Tensor
    ) -> TransformedLogits:
        """SimCLR's transformed similarities. anchors (B, D) are this rank's unit-norm embeddings of both views,
        candidates (2M, D) those of every rank (view a of the M images, then view b), positive_column (B,) each
        anchor's positive among them, negative_mask (B, 2M) its negatives. Both views of image i share one
        lambda_ex, drawn for the global batch; a candidate is interpolated with a random other, and the mixture is a
        negative of an anchor only if both of its parts are."""
        num_images = candidates.shape[0] // 2
        draw = self.draw(num_images, candidates.shape[0], anchors.device)
        extrapolation = None if draw.extrapolation is None else draw.extrapolation[positive_column % num_images]
        transformed_mask = negative_mask if draw.partner is None else negative_mask & negative_mask[:, draw.partner]
        return transform_logits(
            anchors,
            candidates[positive_column],
            candidates,
            draw._replace(extrapolation=extrapolation),
            negative_mask,
            transformed_mask,
        )

    def against_queue(self, queries: Tensor, keys: Tensor, queue: Tensor) -> TransformedLogits:
        """MoCo's transformed similarities: this rank's unit-norm queries (B, D) with gradient, their keys (B, D) and
        the queue (K, D), both constants. lambda_ex is drawn for the queries of every rank (the queue is the same
        on all of them), each rank taking its own."""
        batch = queries.shape[0]
        draw = self.draw(batch * world_size(), queue.shape[0], queries.device)
        if draw.extrapolation is not None:
            draw = draw._replace(extrapolation=draw.extrapolation[rank() * batch : (rank() + 1) * batch])
        return transform_logits(queries, keys, queue, draw)


def transformation_conflicts(
    transformation: FeatureTransformation, mixing: HardNegativeMixing, support_size: int = 0
) -> list[str]:
    """The options a transformation does not combine with, one line each: MoCHi's mixing draws its synthetic
    negatives from the real ones, which the interpolation replaces (neither paper says which should come first),
    and NNCLR's neighbours replace the positives that extrapolation moves."""
    if not transformation.enabled:
        return []
    off = "transformation.positive_alpha and transformation.negative_alpha 0"
    problems = []
    if mixing.num_hard:
        problems.append(f"transformation and mixing do not combine (both synthesise negatives): switch one off "
                        f"({off}, or mixing.num_hard 0)")  # fmt: skip
    if support_size:
        problems.append(f"transformation and neighbours do not combine (neighbours replace the positives it "
                        f"extrapolates): switch one off ({off}, or neighbours.support_size 0)")  # fmt: skip
    return problems


def sample_beta(alpha: float, count: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """`count` draws of Beta(alpha, alpha), as X / (X + Y) of two Gamma(alpha, 1) draws (no host sync, and a
    `generator` can be passed, which `torch.distributions.Beta` does not allow)."""
    gamma = torch._standard_gamma(torch.full((2, count), float(alpha), device=device), generator=generator)
    return gamma[0] / gamma.sum(dim=0)


def extrapolate_positive_pairs(queries: Tensor, keys: Tensor, coefficient: Tensor) -> tuple[Tensor, Tensor]:
    """Sec. 4.1: each pair (z_q, z_k+) of unit vectors moved apart, z^_q = l z_q + (1 - l) z_k+ and
    z^_k+ = l z_k+ + (1 - l) z_q with l = coefficient (B,) >= 1, then unit-normalised."""
    share = coefficient[:, None].to(queries.dtype)
    return F.normalize(share * queries + (1 - share) * keys, dim=1), F.normalize(
        share * keys + (1 - share) * queries, dim=1
    )


def interpolate_negatives(negatives: Tensor, coefficient: Tensor, partner: Tensor) -> Tensor:
    """Sec. 4.2: each negative (K, D) mixed with another, z^_k = l_k z_k + (1 - l_k) z_partner[k] with
    l = coefficient (K,) in [0, 1], then unit-normalised."""
    share = coefficient[:, None].to(negatives.dtype)
    return F.normalize(share * negatives + (1 - share) * negatives[partner], dim=1)


def transform_logits(
    queries: Tensor,
    keys: Tensor,
    negatives: Tensor,
    draw: TransformationDraw,
    negative_mask: Tensor | None = None,
    transformed_mask: Tensor | None = None,
) -> TransformedLogits:
    """Queries (B, D), their positive keys (B, D) and the negatives (K, D), all unit-norm, transformed as `draw`
    says (`draw.extrapolation` holds one lambda_ex per query). `negative_mask` (B, K) marks each query's real
    negatives (None: all) and `transformed_mask` which transformed ones are negatives (None: the same).

    The hardness metrics compare the untransformed query with the real negatives (`train/hard_negative_sim`,
    as every variant logs it) and with the interpolated ones (`train/synthetic_negative_sim`, and the fraction
    harder than its hardest real one, as MoCHi's synthetic negatives are measured), and say how much extrapolation
    lowered the positives' cosine (`train/positive_sim_drop`)."""
    transformed_queries, transformed_keys, transformed_negatives = queries, keys, negatives
    if draw.extrapolation is not None:
        transformed_queries, transformed_keys = extrapolate_positive_pairs(queries, keys, draw.extrapolation)
    if draw.interpolation is not None:
        transformed_negatives = interpolate_negatives(negatives, draw.interpolation, draw.partner)
    positive = (transformed_queries * transformed_keys).sum(dim=1)  # (B,)
    similarity = transformed_queries @ transformed_negatives.T  # (B, K)
    if transformed_mask is None:
        transformed_mask = negative_mask
    if transformed_mask is not None:
        similarity = similarity.masked_fill(~transformed_mask, float("-inf"))
    with torch.no_grad():
        real = queries.detach() @ negatives.detach().T  # (B, K) the untransformed query's real negatives
        if negative_mask is not None:
            real = real.masked_fill(~negative_mask, float("-inf"))
        hardest = real.amax(dim=1, keepdim=True)  # (B, 1)
        hardness = {Metric.HARD_NEGATIVE_SIM: hardest.mean()}
        if draw.interpolation is not None:
            synthetic = queries.detach() @ transformed_negatives.detach().T  # (B, K)
            valid = torch.ones_like(synthetic, dtype=torch.bool) if transformed_mask is None else transformed_mask
            count = valid.sum()
            hardness[Metric.SYNTHETIC_NEGATIVE_SIM] = (synthetic * valid).sum() / count
            hardness[Metric.SYNTHETIC_HARDER_FRACTION] = ((synthetic > hardest) & valid).sum() / count
        if draw.extrapolation is not None:
            hardness[Metric.POSITIVE_SIM_DROP] = ((queries * keys).sum(dim=1) - positive).mean()
    return TransformedLogits(positive, similarity, hardness)
