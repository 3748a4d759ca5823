"""InfoNCE / NT-Xent, SimCLR's contrastive loss, with the negatives of every rank.

"A Simple Framework for Contrastive Learning of Visual Representations" (Chen et al., ICML 2020), eq. (1):
for the 2N augmented samples of a batch, anchor i with positive j,

    l(i, j) = -log( exp(sim(z_i, z_j) / T) / sum_{k != i} exp(sim(z_i, z_k) / T) ),

averaged over all 2N anchors, sim being cosine similarity. With `decoupled=True` the positive is left out
of the denominator, which removes the negative-positive coupling that makes InfoNCE need large batches:
"Decoupled Contrastive Learning" (Yeh et al., ECCV 2022), eq. (6). `negatives` swaps the negative term for the
debiased (and hard negative) estimator of `selfsup.losses.debiased`, `cacr` the whole loss for `selfsup.losses.cacr`:
`contrastive_loss` is the one place where SimCLR's in-batch and MoCo's queue negatives meet them.

Calling a loss returns the loss tensor, as lightly's and PyTorch's losses do. The methods also log how hard the
negatives were, and get both from one computation, `InfoNCELoss.loss_and_hardness`: the metrics are returned, not
stashed on the module during `forward`, which would split a compiled step and is not safe across threads.
"""

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.distributed import gather_with_grad, rank
from selfsup.errors import ConfigurationError, check_options
from selfsup.losses.cacr import AttractionRepulsion, attraction_repulsion
from selfsup.losses.debiased import DebiasedNegatives, debiased_info_nce
from selfsup.models.feature_transformation import FeatureTransformation, transformation_conflicts
from selfsup.models.hard_negative_mixing import HardNegativeMixing, unmixed_hardness_metrics


class LossAndHardness(NamedTuple):
    """A contrastive loss and how hard its negatives were, under the metric names of `selfsup.runs.Metric`."""

    loss: Tensor  # () the mean loss over the anchors, with gradient
    hardness: dict[str, Tensor]  # () each, detached: the hardest real (and with mixing, synthetic) negatives


def info_nce(logits: Tensor, positive_index: Tensor, decoupled: bool = False) -> Tensor:
    """Mean InfoNCE over the rows of `logits`.

    Args:
        logits: (A, C) similarities of A anchors to C candidates, already divided by the temperature.
            Entries that are not candidates (an anchor compared with itself) must be -inf.
        positive_index: (A,) the column of each anchor's positive.
        decoupled: leave the positive out of the denominator (DCL, Yeh et al. 2022, eq. 6).
    """
    if not decoupled:
        return F.cross_entropy(logits, positive_index)
    positive = logits.gather(1, positive_index[:, None]).squeeze(1)
    negatives = logits.scatter(1, positive_index[:, None], float("-inf"))
    return (torch.logsumexp(negatives, dim=1) - positive).mean()


def contrastive_loss(
    logits: Tensor,
    positive_index: Tensor,
    negative_mask: Tensor | None,
    temperature: float,
    decoupled: bool = False,
    negatives: DebiasedNegatives | None = None,
    cacr: AttractionRepulsion | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of SimCLR's in-batch and MoCo's queue negatives alike, and the metrics of its variant.

    InfoNCE (or DCL) by default; with `negatives` active, the debiased (hard negative) estimator of the negative term
    (`selfsup.losses.debiased`); with `cacr` enabled, contrastive attraction and repulsion (`selfsup.losses.cacr`).
    `logits` (A, C) are similarities divided by `temperature`, -inf where a candidate is not one (the anchor itself);
    `negative_mask` (A, C) marks each anchor's negatives, None meaning every column but the positive (a queue).
    """
    if cacr is not None and cacr.enabled:
        similarity = logits * temperature
        t_plus, t_minus = cacr.attraction_temperature, cacr.repulsion_temperature
        return attraction_repulsion(similarity, positive_index[:, None], negative_mask, t_plus, t_minus)
    if negatives is not None and negatives.active:
        return debiased_info_nce(logits, positive_index, negative_mask, temperature, negatives.tau_plus, negatives.beta)
    return info_nce(logits, positive_index, decoupled), {}


def full_precision(
    negatives: DebiasedNegatives, cacr: AttractionRepulsion, device: torch.device
) -> contextlib.AbstractContextManager:
    """Autocast off while the similarities of the debiased, hard-negative and CACR losses are computed: their
    estimators subtract and reweight exponentials of them, which bf16 similarities (3 digits) shift by percents."""
    precise = negatives.active or cacr.enabled
    return torch.autocast(device.type, enabled=False) if precise else contextlib.nullcontext()


def negatives_conflicts(
    negatives: DebiasedNegatives,
    cacr: AttractionRepulsion,
    decoupled: bool,
    mixing: bool,
    neighbours: bool = False,
    transformation: bool = False,
) -> list[str]:
    """The option combinations the contrastive variants refuse, one line each naming both options and the fix.

    Debiasing and hard negative sampling re-estimate InfoNCE's negative term from real negatives drawn from the data:
    neither paper defines them without the positive in the denominator (`decoupled`), with MoCHi's synthetic
    negatives (not drawn from the data, so the class prior does not hold for them), with feature transformation's
    interpolated ones (the same) or with NNCLR's neighbours as positives. CACR replaces InfoNCE altogether and is
    refused with them too; its authors' code has a debiased variant of its repulsion, which is not implemented here.
    """
    variants = []
    if negatives.active:
        variants.append(("negatives (debiasing, hard negative sampling)", "negatives.tau_plus 0 and negatives.beta 0"))
    if cacr.enabled:
        variants.append(("cacr", "cacr.enabled false"))
    transformation_off = "transformation.positive_alpha 0 and transformation.negative_alpha 0"
    others = [("decoupled", decoupled, "decoupled false"), ("mixing", mixing, "mixing.num_hard 0"),
              ("neighbours", neighbours, "neighbours.support_size 0"),
              ("transformation", transformation, transformation_off)]  # fmt: skip
    problems = [
        f"{name} and {other} do not combine: switch one off ({fix} or {other_fix})"
        for name, fix in variants
        for other, on, other_fix in others
        if on
    ]
    if len(variants) == 2:
        problems.append("cacr and negatives do not combine here (CACR's debiased repulsion is not implemented): "
                        "switch one off (cacr.enabled false or negatives.tau_plus 0 and negatives.beta 0)")  # fmt: skip
    return problems


class InfoNCELoss(nn.Module):
    """NT-Xent over two views, contrasting each local sample with the samples of all ranks.

    Under DDP every rank must hold the same number of samples. The result on each rank is the mean over its
    own 2N anchors, so the mean over ranks equals the single-process loss on the concatenated batch, and
    DDP's averaged gradients equal the single-process gradients.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        decoupled: bool = False,
        negatives: DebiasedNegatives = DebiasedNegatives(),
        cacr: AttractionRepulsion = AttractionRepulsion(),
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigurationError(f"the InfoNCE temperature must be greater than 0, got {temperature}")
        self.temperature = temperature
        self.decoupled = decoupled
        check_options(negatives_conflicts(negatives, cacr, decoupled, mixing=False), "--model.init_args")
        self.negatives, self.cacr = negatives, cacr

    def forward(
        self,
        z_a: Tensor,
        z_b: Tensor,
        mixing: HardNegativeMixing | None = None,
        transformation: FeatureTransformation | None = None,
    ) -> Tensor:
        """The loss () of z_a, z_b: (N, D) projections of two views of the same N images on this rank. With
        `mixing`, each anchor also gets synthetic negatives mixed from its hardest in-batch negatives (MoCHi); with
        `transformation`, positive pairs are extrapolated and negatives interpolated (FT)."""
        return self.loss_and_hardness(z_a, z_b, mixing, transformation).loss

    def loss_and_hardness(
        self,
        z_a: Tensor,
        z_b: Tensor,
        mixing: HardNegativeMixing | None = None,
        transformation: FeatureTransformation | None = None,
    ) -> LossAndHardness:
        """The loss of `forward` and the step's hardness metrics: the mean similarity of each anchor's hardest
        real negative, and with `mixing`, how hard the synthetic negatives were (`MixedNegatives.metrics`); with
        `transformation`, how hard the interpolated negatives and the extrapolated positives were; with
        `negatives` or `cacr`, also their own (`contrastive_loss`)."""
        z_a = F.normalize(z_a.float(), dim=1)
        z_b = F.normalize(z_b.float(), dim=1)
        all_a, all_b = gather_with_grad(z_a), gather_with_grad(z_b)  # (M, D) each, M = N * world size
        n, m = z_a.shape[0], all_a.shape[0]
        anchors = torch.cat([z_a, z_b])  # (2N, D)
        candidates = torch.cat([all_a, all_b])  # (2M, D): view a of all ranks, then view b
        with full_precision(self.negatives, self.cacr, anchors.device):
            similarity = anchors @ candidates.T  # (2N, 2M)

        local = torch.arange(n, device=z_a.device) + rank() * n  # global index of each local sample
        self_column = torch.cat([local, local + m])
        positive_column = torch.cat([local + m, local])
        logits = similarity.scatter(1, self_column[:, None], float("-inf")) / self.temperature
        not_negative = torch.cat([self_column[:, None], positive_column[:, None]], dim=1)
        negative_mask = torch.ones_like(logits, dtype=torch.bool).scatter(1, not_negative, False)
        if mixing is not None or transformation is not None:
            conflicts = negatives_conflicts(
                self.negatives, self.cacr, self.decoupled, mixing is not None, transformation=transformation is not None
            )
            if transformation is not None:
                conflicts += transformation_conflicts(transformation, mixing or HardNegativeMixing())
            check_options(conflicts, "--model.init_args")
        if transformation is not None:  # FT: the anchors' logits against their transformed pairs and negatives
            transformed = transformation.in_batch(anchors, candidates, positive_column, negative_mask)
            logits = transformed.negatives.scatter(1, positive_column[:, None], transformed.positive[:, None])
            logits, hardness = logits / self.temperature, transformed.hardness
        elif mixing is not None:
            mixed = mixing(anchors, candidates, negative_mask, negatives_per_query=candidates.shape[0] - 2)
            synthetic = torch.einsum("bd,bsd->bs", anchors, mixed.negatives) / self.temperature  # (2N, s + s')
            logits = torch.cat([logits, synthetic], dim=1)
            hardness = mixed.metrics()
        else:
            hardness = unmixed_hardness_metrics(similarity.detach().masked_fill(~negative_mask, float("-inf")))
        loss, metrics = contrastive_loss(
            logits, positive_column, negative_mask, self.temperature, self.decoupled, self.negatives, self.cacr
        )
        return LossAndHardness(loss, hardness | metrics)


def cross_view_info_nce(anchors: Tensor, candidates: Tensor, temperature: float, decoupled: bool = False) -> Tensor:
    """InfoNCE of each local anchor (N, D) against the candidates (N, D) of every rank: the positive of anchor i
    is candidate i (the other view of the same image), the negatives are the candidates of every other image.

    NNCLR's loss ("With a Little Help from My Friends", Dwibedi et al., ICCV 2021, eq. 2), where the anchors are
    nearest neighbours from the support set (no gradient) and the candidates are predictions; the candidates
    are gathered with gradient, so the mean over ranks equals the loss of one process on the whole batch.
    Anchors (N, k, D), k neighbours per image, give the mean of the loss over the k (`selfsup.models.neighbours`).
    """
    anchors = F.normalize(anchors.float(), dim=-1)
    candidates = gather_with_grad(F.normalize(candidates.float(), dim=1))  # (M, D), M = N * world size
    positive = torch.arange(anchors.shape[0], device=anchors.device) + rank() * anchors.shape[0]
    logits = anchors @ candidates.T / temperature  # (N, M), or (N, k, M) with k anchors per image
    if anchors.ndim == 3:
        logits, positive = logits.flatten(0, 1), positive.repeat_interleave(anchors.shape[1])
    return info_nce(logits, positive, decoupled)
