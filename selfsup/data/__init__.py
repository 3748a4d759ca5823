"""Datasets, the device-resident loader for in-memory datasets, the LightningDataModule, and the helpers that turn
PIL images and numpy arrays into the uint8 batches the methods take."""

from selfsup.data.convert import collate_images, to_uint8_tensor
from selfsup.data.datamodule import SelfSupDataModule
from selfsup.data.datasets import DATASETS, Split

__all__ = ["DATASETS", "SelfSupDataModule", "Split", "collate_images", "to_uint8_tensor"]
