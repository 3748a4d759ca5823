"""Losses as plain modules and functions on tensors: no Lightning, testable on their own."""

from selfsup.losses.byol import normalized_mse
from selfsup.losses.info_nce import InfoNCELoss, cross_view_info_nce, info_nce
from selfsup.losses.moco import queue_info_nce
from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction_loss

__all__ = [
    "InfoNCELoss",
    "cross_view_info_nce",
    "info_nce",
    "normalized_mse",
    "queue_info_nce",
    "sinkhorn_knopp",
    "swapped_prediction_loss",
]
