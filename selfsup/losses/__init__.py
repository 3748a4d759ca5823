"""Losses as plain modules and functions on tensors: no Lightning, testable on their own."""

from selfsup.losses.byol import normalized_mse
from selfsup.losses.info_nce import InfoNCELoss, info_nce

__all__ = ["InfoNCELoss", "info_nce", "normalized_mse"]
