"""Losses as plain modules and functions on tensors: no Lightning, testable on their own.

Calling a loss returns the loss tensor (`loss = InfoNCELoss(0.2)(z_a, z_b); loss.backward()`). The contrastive
losses have a second entry point, `InfoNCELoss.loss_and_hardness` and `queue_info_nce_and_hardness`, that also
returns how hard the negatives were, for the methods to log.
"""

from selfsup.losses.byol import normalized_mse
from selfsup.losses.info_nce import InfoNCELoss, LossAndHardness, cross_view_info_nce, info_nce
from selfsup.losses.moco import queue_info_nce, queue_info_nce_and_hardness
from selfsup.losses.mocov3 import mocov3_info_nce
from selfsup.losses.simsiam import negative_cosine_similarity, normalized_output_std
from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction_loss

__all__ = [
    "InfoNCELoss",
    "LossAndHardness",
    "cross_view_info_nce",
    "info_nce",
    "mocov3_info_nce",
    "negative_cosine_similarity",
    "normalized_mse",
    "normalized_output_std",
    "queue_info_nce",
    "queue_info_nce_and_hardness",
    "sinkhorn_knopp",
    "swapped_prediction_loss",
]
