"""MoCo's contrastive loss: each query against its own key and a queue of earlier keys.

"Momentum Contrast for Unsupervised Visual Representation Learning" (He et al., CVPR 2020), eq. (1):

    L_q = -log( exp(q . k+ / T) / (exp(q . k+ / T) + sum_{k-} exp(q . k- / T)) ),

where k+ is the momentum encoder's key of another view of the query's image and the k- are the queued keys
of earlier batches. MoCHi ("Hard Negative Mixing for Contrastive Learning", Kalantidis et al., NeurIPS 2020)
adds synthetic negatives mixed from each query's hardest queued keys to its denominator.

`queue_info_nce` returns the loss; `queue_info_nce_and_hardness` returns it with the hardness metrics the methods
log, from the same computation (see `selfsup.losses.info_nce`).
"""

import torch
from torch import Tensor

from selfsup.errors import check_options
from selfsup.losses.cacr import AttractionRepulsion
from selfsup.losses.debiased import DebiasedNegatives
from selfsup.losses.info_nce import LossAndHardness, contrastive_loss, full_precision, negatives_conflicts
from selfsup.models.feature_transformation import FeatureTransformation, transformation_conflicts
from selfsup.models.hard_negative_mixing import HardNegativeMixing, unmixed_hardness_metrics


def queue_info_nce(
    queries: Tensor,
    keys: Tensor,
    queue: Tensor,
    temperature: float,
    decoupled: bool = False,
    mixing: HardNegativeMixing | None = None,
    negatives: DebiasedNegatives = DebiasedNegatives(),
    cacr: AttractionRepulsion = AttractionRepulsion(),
    transformation: FeatureTransformation | None = None,
) -> Tensor:
    """Mean InfoNCE (MoCo, eq. 1) of the queries (B, D) over [own key (B, D), queued keys (K, D), synthetic negatives].

    All inputs are unit-norm. Keys and queue are constants of the loss (the momentum encoder is never trained by
    it), detached here so that no caller has to. `decoupled` leaves the positive out of the denominator (DCL);
    `negatives` debiases the negative term (and samples hard negatives), `cacr` trains CACR instead, on the queued
    keys as on SimCLR's in-batch negatives (`selfsup.losses.info_nce.contrastive_loss`).
    """
    return queue_info_nce_and_hardness(
        queries, keys, queue, temperature, decoupled, mixing, negatives, cacr, transformation
    ).loss


def queue_info_nce_and_hardness(
    queries: Tensor,
    keys: Tensor,
    queue: Tensor,
    temperature: float,
    decoupled: bool = False,
    mixing: HardNegativeMixing | None = None,
    negatives: DebiasedNegatives = DebiasedNegatives(),
    cacr: AttractionRepulsion = AttractionRepulsion(),
    transformation: FeatureTransformation | None = None,
) -> LossAndHardness:
    """The loss of `queue_info_nce` and the step's hardness metrics (`selfsup.runs.Metric`): the hardest queued
    key's similarity, and with `mixing` the synthetic negatives'; with `negatives` or `cacr`, also their own. With
    `transformation` (FT), the query and its key are extrapolated apart and the queue is replaced by interpolations
    of its keys (`selfsup.models.feature_transformation`)."""
    conflicts = negatives_conflicts(
        negatives, cacr, decoupled, mixing is not None, transformation=transformation is not None
    )
    if transformation is not None:
        conflicts += transformation_conflicts(transformation, mixing or HardNegativeMixing())
    check_options(conflicts, "--model.init_args")
    keys, queue = keys.detach(), queue.detach()
    with full_precision(negatives, cacr, queries.device):
        logits = [(queries * keys).sum(dim=1, keepdim=True), queries @ queue.T]  # (B, 1), (B, K)
    if transformation is not None:
        transformed = transformation.against_queue(queries, keys, queue)
        logits, hardness = [transformed.positive[:, None], transformed.negatives], transformed.hardness
    elif mixing is not None:
        mixed = mixing(queries, queue)
        logits.append(torch.einsum("bd,bsd->bs", queries, mixed.negatives))  # (B, s + s')
        hardness = mixed.metrics()
    else:
        hardness = unmixed_hardness_metrics(logits[1])
    positive = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)  # column 0: own key
    logits = torch.cat(logits, dim=1) / temperature  # every column but the own key's is a negative
    loss, metrics = contrastive_loss(logits, positive, None, temperature, decoupled, negatives, cacr)
    return LossAndHardness(loss, hardness | metrics)
