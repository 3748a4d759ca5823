"""The LightningDataModule: one place that turns `--data.*` options into training and evaluation batches.

Training batches are uint8 images (plus labels, used only by the online probe); the method augments them on
the device. Evaluation uses two loaders, in this order: the labelled training images (the kNN monitor's
feature bank) and the test images. Where the images come from is the business of a `DataSource` (one per kind
of data, registered in `SOURCES`); the module adds what every kind shares: options, the batch-size check, the
rank and seed, and the loader's position in checkpoints.
"""

import inspect
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from selfsup import distributed
from selfsup.data.builtin import BuiltinSource
from selfsup.data.datasets import DATASETS
from selfsup.data.image_folder import ImageFolderSource
from selfsup.data.packed import PackedSource
from selfsup.data.source import DataOptions, DataSource, Placement, Shard
from selfsup.errors import ConfigurationError, at_least, check_options
from selfsup.runs import run_seed

SOURCES: dict[str, type[DataSource]] = {
    **dict.fromkeys(DATASETS, BuiltinSource),
    "image_folder": ImageFolderSource,
    "packed": PackedSource,
}


def source_kind(dataset: str) -> type[DataSource]:
    """The source class of `dataset`; an unknown dataset is an error naming the known ones."""
    if dataset not in SOURCES:
        raise ConfigurationError(f"Unknown dataset {dataset!r}. Set --data.dataset to one of: {', '.join(SOURCES)}.")
    return SOURCES[dataset]


def resolved_sizes(
    dataset: str, root: str | Path | None, image_size: int | None, folder_image_size: int | None
) -> tuple[int, int | None]:
    """(image_size, folder_image_size) with the dataset's defaults for those not set."""
    root = Path(root).expanduser() if root is not None else None
    return source_kind(dataset).resolve_sizes(dataset, root, image_size, folder_image_size)


class SelfSupDataModule(pl.LightningDataModule):
    """The data of a run: one LightningDataModule for built-in datasets, image folders and packed sets.

    Training batches are `(uint8 images (B, C, H, W), labels (B,))`, labels -1 where unknown; the method turns
    them into views on the device. Validation has two loaders, the labelled training images (the kNN bank) and
    the test set, which the kNN monitor and the online probe need. It also tells the method what it must know
    about the data: `image_size`, `num_classes`, `mean` and `std`. Saves the loader's position in checkpoints, so
    a run resumed within an epoch trains the batches that epoch had left."""

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str | None = None,
        batch_size: int = 512,
        max_samples: int | None = None,
        image_size: int | None = None,
        folder_image_size: int | None = None,
        num_workers: int = 8,
        placement: Placement = "auto",
        model_memory_gib: float = 24.0,
        holdout: int = 0,
    ) -> None:
        """
        Args:
            dataset: fashion_mnist, cifar10, cifar100, stl10, image_folder or packed.
            root: where the data is. Fashion-MNIST: a folder with its IDX files (default: Debian's
                /usr/share/datasets/fashion-mnist, else a download into ~/.cache/selfsup). CIFAR/STL: the folder
                holding torchvision's extracted archive (default: a download into ~/.cache/selfsup).
                image_folder: a folder of class subfolders, or one with train/ and val/ inside. packed: the
                directory `selfsup pack` wrote.
            batch_size: images per device per step.
            max_samples: use only the first N training and N test images (quick runs and tests).
            image_size: side of the methods' views and of the clean evaluation images; view recipes scale it
                (multi-crop's local crops). Default: 32 for Fashion-MNIST and CIFAR, 96 for STL-10, 224 for
                image folders, the packed size for packed sets.
            folder_image_size: image folders are decoded to squares of this side, and random crops come from
                them. Default: image_size x 256 / 224 (256 for 224 px views); a packed set's is its packed size.
            num_workers: DataLoader workers for image folders (other datasets need none).
            placement: where built-in and packed datasets live while training: gpu (the whole set on every
                device), gpu_shard (1/world_size of the training set on each device), host (host memory, batches
                copied asynchronously), or auto (the first that leaves model_memory_gib free; host on CPUs).
            model_memory_gib: GPU memory that placement auto leaves for the model, its activations and optimizer.
            holdout: hold out this many labelled training images (the same draw for every seed) and evaluate on them
                instead of the test set: the kNN monitor, the online probe and `selfsup eval` of the run then
                never see test images. For choosing hyperparameters; 0 evaluates on the test set.
        """
        super().__init__()
        sizes = {"max_samples": max_samples, "image_size": image_size, "folder_image_size": folder_image_size}
        check_options(
            at_least(1, batch_size=batch_size, **{name: value for name, value in sizes.items() if value is not None})
            + at_least(0, num_workers=num_workers, model_memory_gib=model_memory_gib, holdout=holdout),
            "--data",
        )
        kind = source_kind(dataset)
        path = Path(root).expanduser() if root is not None else None
        if path is not None and not path.exists():
            raise ConfigurationError(f"Data root {path} does not exist. Fix --data.root, or omit it.")
        if path is not None and not os.access(path, os.R_OK | os.X_OK):
            raise ConfigurationError(f"Data root {path} is not readable. Fix its permissions or --data.root.")
        image_size, folder_image_size = kind.resolve_sizes(dataset, path, image_size, folder_image_size)
        # as resolved, into checkpoints: `selfsup eval` finds the data again. Given this frame, Lightning keeps none in
        # a reference cycle, which held the caller's locals (its loaders and their workers) until garbage collection.
        self.save_hyperparameters(frame=inspect.currentframe())
        options = (max_samples, folder_image_size, num_workers, placement, model_memory_gib, holdout)
        self.source = kind(DataOptions(dataset, path, *options))
        self.holdout = holdout
        self.dataset, self.root, self.batch_size, self.image_size = dataset, path, batch_size, image_size
        self.folder_image_size = folder_image_size
        self.classes, self.num_classes = self.source.classes, self.source.num_classes
        self.mean, self.std = self.source.mean, self.source.std
        self._resume_position: dict[str, int] | None = None  # a mid-epoch checkpoint's loader position

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed by Lightning: the training loader's position within the epoch, where it has one."""
        position = self.source.train_position()
        return {"train_position": position} if position is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restored by Lightning before it asks for the loaders, which then start where the checkpoint stopped."""
        self._resume_position = state_dict.get("train_position")

    def resumed_batches(self) -> int | None:
        """Batches of the epoch a mid-epoch checkpoint was written in that the training loader skips as trained,
        in this run's batches per rank (another number of ranks deals them otherwise); None unless resuming so."""
        return self.source.resumed_batches()

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):  # evaluation keeps every batch, however small the dataset
            self._check_batch_size(self.source.num_train())  # before anything is copied to the GPU
        self.source.setup(self._shard())

    def _check_batch_size(self, num_train: int) -> None:
        world_size = self._shard().world_size
        per_device = num_train // world_size
        if self.batch_size > per_device:
            raise ConfigurationError(
                f"--data.batch_size {self.batch_size} is larger than the {per_device} training images each of "
                f"{world_size} device(s) gets from {self.dataset}. Lower --data.batch_size (or raise "
                "--data.max_samples)."
            )

    def _shard(self) -> Shard:
        """This process's place in the run: the trainer's, or the process group's without one (`selfsup eval`)."""
        if self.trainer is not None:
            trainer = self.trainer
            return Shard(trainer.global_rank, trainer.world_size, trainer.strategy.root_device, run_seed())
        return Shard(distributed.rank(), distributed.world_size(), torch.device("cpu"), run_seed())

    def train_dataloader(self) -> Iterable:
        return self.source.train_loader(self.batch_size, self._shard(), self._resume_position)

    def val_dataloader(self) -> list:
        """[labelled training images (kNN bank), test images (or the held-out ones)], this rank's share of each;
        empty when there are no labels to score."""
        shard = self._shard()
        return self.evaluation_loaders(shard.rank, shard.world_size)

    def evaluation_loaders(self, rank: int = 0, world_size: int = 1) -> list:
        """[labelled training images, test images], rank `rank`'s share of `world_size` (interleaved: rank r gets
        samples r, r + world_size, ..., padded with -1 labels to equal lengths); empty without labels to score."""
        return self.source.evaluation_loaders(self.batch_size, rank, world_size)
