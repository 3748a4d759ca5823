"""Losses as plain modules and functions on tensors: no Lightning, testable on their own.

Calling a loss returns the loss tensor (`loss = InfoNCELoss(0.2)(z_a, z_b); loss.backward()`). The contrastive
losses have a second entry point, `InfoNCELoss.loss_and_hardness`, `queue_info_nce_and_hardness` and
`polyview_loss_and_hardness`, that also returns how hard the negatives were, for the methods to log. Barlow Twins and
VICReg return their unweighted terms from `barlow_twins_terms` and `vicreg_terms`, whose `loss` method weights them
as the losses do.
"""

from selfsup.losses.barlow_twins import BarlowTwinsTerms, barlow_twins_loss, barlow_twins_terms
from selfsup.losses.byol import normalized_mse
from selfsup.losses.dino import DinoLossTerms, dino_center_update, dino_loss, dino_loss_terms
from selfsup.losses.info_nce import InfoNCELoss, LossAndHardness, cross_view_info_nce, info_nce
from selfsup.losses.moco import queue_info_nce, queue_info_nce_and_hardness
from selfsup.losses.mocov3 import mocov3_info_nce
from selfsup.losses.polyview import polyview_loss, polyview_loss_and_hardness
from selfsup.losses.simsiam import negative_cosine_similarity, normalized_output_std
from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from selfsup.losses.vicreg import VICRegTerms, vicreg_loss, vicreg_terms

__all__ = [
    "BarlowTwinsTerms",
    "DinoLossTerms",
    "InfoNCELoss",
    "LossAndHardness",
    "VICRegTerms",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "cross_view_info_nce",
    "dino_center_update",
    "dino_loss",
    "dino_loss_terms",
    "info_nce",
    "mocov3_info_nce",
    "negative_cosine_similarity",
    "normalized_mse",
    "normalized_output_std",
    "polyview_loss",
    "polyview_loss_and_hardness",
    "queue_info_nce",
    "queue_info_nce_and_hardness",
    "sinkhorn_knopp",
    "swapped_prediction_loss",
    "vicreg_loss",
    "vicreg_terms",
]
