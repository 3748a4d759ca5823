"""The LightningDataModule: one place that turns `--data.*` options into training and evaluation batches.

Training batches are uint8 images (plus labels, used only by the online probe); the method augments them on
the device. Evaluation uses two loaders, in this order: the labelled training images (the kNN monitor's
feature bank) and the test images. Built-in datasets live on the training device as one tensor; image
folders are read by DataLoader workers.
"""

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader

from selfsup import distributed
from selfsup.data.datasets import DATASETS, IMAGENET_MEAN, IMAGENET_STD, Split
from selfsup.data.device_loader import DeviceBatchLoader, ShardedBatchSampler
from selfsup.data.image_folder import EpochShuffle, EvaluationShard, ImageFolderDataset, scan_image_folder
from selfsup.errors import ConfigurationError, at_least, check_options
from selfsup.runs import run_seed

IMAGE_FOLDER = "image_folder"
FOLDER_IMAGE_SIZE = 224  # the default view size of image folders (ImageNet's)
FOLDER_DECODE_RATIO = 256 / 224  # folders decode to 256 px squares for 224 px views, as ImageNet pipelines do


def resolved_sizes(dataset: str, image_size: int | None, folder_image_size: int | None) -> tuple[int, int]:
    """(image_size, folder_image_size) with the dataset's defaults for those not set; an unknown dataset is an
    error naming the known ones."""
    if dataset != IMAGE_FOLDER and dataset not in DATASETS:
        raise ConfigurationError(
            f"Unknown dataset {dataset!r}. Set --data.dataset to one of: {', '.join([*DATASETS, IMAGE_FOLDER])}."
        )
    if image_size is None:
        image_size = FOLDER_IMAGE_SIZE if dataset == IMAGE_FOLDER else DATASETS[dataset].image_size
    if folder_image_size is None:
        folder_image_size = round(image_size * FOLDER_DECODE_RATIO)
    return image_size, folder_image_size


class SelfSupDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str | None = None,
        batch_size: int = 512,
        max_samples: int | None = None,
        image_size: int | None = None,
        folder_image_size: int | None = None,
        num_workers: int = 8,
    ) -> None:
        """
        Args:
            dataset: fashion_mnist, cifar10, cifar100, stl10 or image_folder.
            root: where the data is. Fashion-MNIST: a folder with its IDX files (default: Debian's
                /usr/share/datasets/fashion-mnist, else a download into ~/.cache/selfsup). CIFAR/STL: the folder
                holding torchvision's extracted archive (default: a download into ~/.cache/selfsup).
                image_folder: a folder of class subfolders, or one with train/ and val/ inside.
            batch_size: images per device per step.
            max_samples: use only the first N training and N test images (quick runs and tests).
            image_size: side of the methods' views and of the clean evaluation images; view recipes scale it
                (multi-crop's local crops). Default: 32 for Fashion-MNIST and CIFAR, 96 for STL-10, 224 for
                image folders.
            folder_image_size: image folders are decoded to squares of this side, and random crops come from
                them. Default: image_size x 256 / 224 (256 for 224 px views).
            num_workers: DataLoader workers for image folders (built-in datasets need none).
        """
        super().__init__()
        sizes = {"max_samples": max_samples, "image_size": image_size, "folder_image_size": folder_image_size}
        check_options(
            at_least(1, batch_size=batch_size, **{name: value for name, value in sizes.items() if value is not None})
            + at_least(0, num_workers=num_workers),
            "--data",
        )
        image_size, folder_image_size = resolved_sizes(dataset, image_size, folder_image_size)
        self.save_hyperparameters()  # as trained, into checkpoints: `train.py eval` finds the data again
        self.dataset = dataset
        self.root = Path(root).expanduser() if root is not None else None
        if self.root is not None and not self.root.exists():
            raise ConfigurationError(f"Data root {self.root} does not exist. Fix --data.root, or omit it.")
        if self.root is not None and not os.access(self.root, os.R_OK | os.X_OK):
            raise ConfigurationError(f"Data root {self.root} is not readable. Fix its permissions or --data.root.")
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.image_size = image_size
        self.folder_image_size = folder_image_size
        self.num_workers = num_workers

        if dataset == IMAGE_FOLDER:
            self._scan_image_folder()
            self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        else:
            spec = DATASETS[dataset]
            self.num_classes, self.mean, self.std = spec.num_classes, spec.mean, spec.std
        self._train: Split | None = None
        self._test: Split | None = None
        self._train_loader: DeviceBatchLoader | None = None
        self._resume_position: dict[str, int] | None = None  # a mid-epoch checkpoint's loader position

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed by Lightning: the device loader's position within the epoch."""
        return {"train_position": self._train_loader.position()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restored by Lightning before it asks for the loaders, which then start where the checkpoint stopped."""
        self._resume_position = state_dict.get("train_position")

    def _scan_image_folder(self) -> None:
        """Training samples and classes from ROOT/train (or ROOT), validation samples from ROOT/val labelled by
        the training classes. With fewer than 2 classes there is nothing to score: no kNN monitor, no probe."""
        if self.root is None:
            raise ConfigurationError("--data.dataset image_folder needs --data.root pointing at the image folder.")
        train_dir = self.root / "train" if (self.root / "train").is_dir() else self.root
        self._train_samples, self.classes = scan_image_folder(train_dir)
        val_dir = self.root / "val"
        self._val_samples = scan_image_folder(val_dir, self.classes)[0] if val_dir.is_dir() else []
        self.num_classes = len(self.classes)
        if self.num_classes < 2:
            rank_zero_info(
                f"Note: {train_dir} has {self.num_classes} class folder(s); training without the kNN monitor and "
                "the online probe, which need labels of at least 2 classes."
            )

    # -- loading ------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.dataset != IMAGE_FOLDER:
            DATASETS[self.dataset].locate(self.root, True)

    def setup(self, stage: str | None = None) -> None:
        training = stage in (None, "fit")  # evaluation keeps every batch, however small the dataset
        if self.dataset == IMAGE_FOLDER:
            if training:
                self._check_batch_size(len(self._limit(self._train_samples)))
            return
        if self._train is not None:
            return
        spec = DATASETS[self.dataset]
        train, test = spec.read(spec.locate(self.root, False))
        if self.max_samples is not None:
            train, test = (s.subset(torch.arange(min(self.max_samples, len(s)))) for s in (train, test))
        if training:
            self._check_batch_size(len(train))
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self._train = Split(train.images.to(device), train.labels.to(device))
        self._test = Split(test.images.to(device), test.labels.to(device))

    def _limit(self, samples: list) -> list:
        return samples[: self.max_samples] if self.max_samples is not None else samples

    def _check_batch_size(self, num_train: int) -> None:
        per_device = num_train // self._world_size()
        if self.batch_size > per_device:
            raise ConfigurationError(
                f"--data.batch_size {self.batch_size} is larger than the {per_device} training images each of "
                f"{self._world_size()} device(s) gets from {self.dataset}. Lower --data.batch_size (or raise "
                "--data.max_samples)."
            )

    def _world_size(self) -> int:
        """The trainer's world size, or the process group's when used without one (`train.py eval`)."""
        return self.trainer.world_size if self.trainer is not None else distributed.world_size()

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else distributed.rank()

    def _device_loader(self, split: Split, train: bool, rank: int, world_size: int) -> DeviceBatchLoader:
        sampler = ShardedBatchSampler(
            len(split),
            self.batch_size,
            shuffle=train,
            drop_last=train,
            seed=run_seed(),
            rank=rank,
            world_size=world_size,
        )
        return DeviceBatchLoader(split, sampler)

    def _folder_loader(self, samples: list, train: bool, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Training: the whole folder, shuffled (Lightning shards it under DDP); evaluation: this rank's share."""
        dataset = ImageFolderDataset(self._limit(samples), self.folder_image_size)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffle(dataset, run_seed()) if train else EvaluationShard(dataset, rank, world_size),
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    # -- loaders ------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DeviceBatchLoader | DataLoader:
        if self.dataset == IMAGE_FOLDER:
            return self._folder_loader(self._train_samples, train=True)
        self._train_loader = self._device_loader(self._train, True, self._rank(), self._world_size())
        if self._resume_position is not None:
            self._train_loader.resume_from(self._resume_position)
        return self._train_loader

    def val_dataloader(self) -> list:
        """[labelled training images (kNN bank), test images], this rank's share of each; empty when there are no
        labels to score."""
        return self.evaluation_loaders(self._rank(), self._world_size())

    def evaluation_loaders(self, rank: int = 0, world_size: int = 1) -> list:
        """[labelled training images, test images], rank `rank`'s share of `world_size` (interleaved: rank r gets
        samples r, r + world_size, ..., padded with -1 labels to equal lengths); empty without labels to score."""
        if self.num_classes < 2:
            return []
        if self.dataset == IMAGE_FOLDER:
            labelled = [s for s in self._limit(self._train_samples) if s[1] >= 0]
            if not labelled or not self._val_samples:
                return []
            return [
                self._folder_loader(labelled, train=False, rank=rank, world_size=world_size),
                self._folder_loader(self._val_samples, train=False, rank=rank, world_size=world_size),
            ]
        bank = self._train.subset(torch.nonzero(self._train.labels >= 0).squeeze(1))
        return [self._device_loader(split, False, rank, world_size) for split in (bank, self._test)]
