"""Losses as plain modules and functions on tensors: no Lightning, testable on their own.

Calling a loss returns the loss tensor (`loss = InfoNCELoss(0.2)(z_a, z_b); loss.backward()`). The contrastive
losses have a second entry point, `InfoNCELoss.loss_and_hardness`, `queue_info_nce_and_hardness` and
`polyview_loss_and_hardness`, that also returns how hard the negatives were, for the methods to log (the supervised
contrastive loss: `supervised_contrastive_loss_and_hardness`). Barlow Twins, VICReg and alignment-uniformity return
their unweighted terms from `barlow_twins_terms`, `vicreg_terms` and `align_uniform_terms`, whose `loss` method
weights them as the losses do; W-MSE's `wmse_terms` returns its loss with the whitening's round-off, on the
sub-batches the caller drew.
"""

from selfsup.losses.alignment_uniformity import (
    AlignUniformTerms,
    align_uniform_loss,
    align_uniform_terms,
    alignment,
    global_uniformity,
    uniformity,
)
from selfsup.losses.barlow_twins import BarlowTwinsTerms, barlow_twins_loss, barlow_twins_terms
from selfsup.losses.byol import normalized_mse
from selfsup.losses.cacr import AttractionRepulsion, attraction_repulsion
from selfsup.losses.debiased import DebiasedNegatives, debiased_info_nce
from selfsup.losses.dino import DinoLossTerms, dino_center_update, dino_loss, dino_loss_terms
from selfsup.losses.info_nce import InfoNCELoss, LossAndHardness, cross_view_info_nce, info_nce
from selfsup.losses.moco import queue_info_nce, queue_info_nce_and_hardness
from selfsup.losses.mocov3 import mocov3_info_nce
from selfsup.losses.polyview import polyview_loss, polyview_loss_and_hardness
from selfsup.losses.simsiam import negative_cosine_similarity, normalized_output_std
from selfsup.losses.supcon import supervised_contrastive_loss, supervised_contrastive_loss_and_hardness
from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from selfsup.losses.vicreg import VICRegTerms, vicreg_loss, vicreg_terms
from selfsup.losses.wmse import WMSETerms, whiten, wmse_loss, wmse_terms

__all__ = [
    "AlignUniformTerms",
    "AttractionRepulsion",
    "BarlowTwinsTerms",
    "DebiasedNegatives",
    "DinoLossTerms",
    "InfoNCELoss",
    "LossAndHardness",
    "VICRegTerms",
    "WMSETerms",
    "align_uniform_loss",
    "align_uniform_terms",
    "alignment",
    "attraction_repulsion",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "cross_view_info_nce",
    "debiased_info_nce",
    "dino_center_update",
    "dino_loss",
    "dino_loss_terms",
    "global_uniformity",
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
    "supervised_contrastive_loss",
    "supervised_contrastive_loss_and_hardness",
    "swapped_prediction_loss",
    "uniformity",
    "vicreg_loss",
    "vicreg_terms",
    "whiten",
    "wmse_loss",
    "wmse_terms",
]
