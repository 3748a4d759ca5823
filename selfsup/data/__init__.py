"""Datasets, the device-resident loader for in-memory datasets, and the LightningDataModule."""

from selfsup.data.datamodule import SelfSupDataModule
from selfsup.data.datasets import DATASETS, Split

__all__ = ["DATASETS", "SelfSupDataModule", "Split"]
