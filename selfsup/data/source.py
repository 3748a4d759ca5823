"""The interface between the data module and one kind of data: built-in datasets, image folders, packed arrays.

The data module owns what every kind shares (the batch size, the seed, the rank, checkpointing the loader's
position); a source owns where its images come from, how they reach the device and how they are labelled. A
new kind of data is a new `DataSource` subclass in its own file, registered in `selfsup.data.datamodule`.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from selfsup.errors import ConfigurationError

Placement = Literal["auto", "gpu", "gpu_shard", "host"]
HOLDOUT_SEED = 0  # the held-out draw is the same for every run seed: tuning runs of all seeds score the same images


@dataclass(frozen=True)
class DataOptions:
    """The `--data.*` options a source reads (image sizes already resolved by the source's `resolve_sizes`)."""

    dataset: str
    root: Path | None
    max_samples: int | None
    folder_image_size: int | None
    num_workers: int
    placement: Placement
    model_memory_gib: float
    holdout: int = 0


@dataclass(frozen=True)
class Shard:
    """Who loads: this process's rank among `world_size`, its training device, and the run's seed."""

    rank: int
    world_size: int
    device: torch.device
    seed: int


def holdout_rows(labels: Tensor, holdout: int) -> tuple[Tensor, Tensor]:
    """(training rows, held-out rows) of a training split with these labels: `holdout` of its labelled rows, drawn
    by a generator of fixed seed, are held out, and the rest trains. Both in dataset order.

    Hyperparameters are chosen on the held-out rows so that the test set scores only the final, chosen runs.
    """
    labelled = torch.nonzero(labels >= 0).squeeze(1)
    if holdout >= len(labelled):
        raise ConfigurationError(
            f"--data.holdout {holdout} would hold out every one of the {len(labelled)} labelled training images; "
            "lower it (a tenth of the training set is usual)."
        )
    draw = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    held = labelled[draw[:holdout]].sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held] = False
    return torch.nonzero(keep).squeeze(1), held


class DataSource(ABC):
    """One kind of data: its classes and normalisation, its training batches and its two evaluation loaders.

    Training batches are (uint8 images (B, C, H, W), int64 labels (B,), -1 where unlabelled). Evaluation loaders
    are [labelled training images (the kNN bank), test images], each dealt to ranks like `ShardedBatchSampler`
    deals them (rank r gets samples r, r + world_size, ..., padded with label -1), or [] without labels to score.
    """

    classes: list[str] | None  # class names where the data has them
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    @abstractmethod
    def resolve_sizes(
        cls, dataset: str, root: Path | None, image_size: int | None, folder_image_size: int | None
    ) -> tuple[int, int | None]:
        """(view size, decoded square size) with this kind's defaults for those not set; the second is None where
        images are not decoded from files (built-in datasets)."""

    def prepare(self) -> None:
        """Download what is missing; called once per machine before `setup`."""
        return

    @abstractmethod
    def num_train(self) -> int:
        """How many training images there are, over all ranks (asked before `setup` places anything)."""

    @abstractmethod
    def setup(self, shard: Shard) -> None:
        """Read (or place) the data for `shard`; called on every rank, possibly more than once."""

    @abstractmethod
    def train_loader(self, batch_size: int, shard: Shard, resume: dict[str, int] | None) -> Iterable:
        """This rank's training batches, reshuffled every epoch (Lightning calls the sampler's `set_epoch`);
        `resume` is a mid-epoch checkpoint's `train_position`, where the source can resume from one."""

    def train_position(self) -> dict[str, Any] | None:
        """Where the last training loader is within its epoch, for a checkpoint; None where a source cannot resume
        mid-epoch (the epoch then restarts)."""
        return None

    def resumed_batches(self) -> int | None:
        """Batches of a resumed epoch the training loader skips as trained, counted in this run's batches; None
        where it did not resume from a position."""
        return None

    @abstractmethod
    def evaluation_loaders(self, batch_size: int, rank: int, world_size: int) -> list:
        """[labelled training images, test images] of rank `rank` out of `world_size`, or []."""
