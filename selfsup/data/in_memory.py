"""Sources whose images are one uint8 array (built-in datasets, packed sets), placed by `--data.placement`.

A subclass only says how to read its two splits into host memory (`read`); where they then live, how batches
are drawn and how evaluation is dealt to ranks is shared here. See `selfsup.data.placement` for the choices.
"""

from abc import abstractmethod
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from selfsup.data.datasets import Split
from selfsup.data.device_loader import DeviceBatchLoader, LocalShardSampler, ShardedBatchSampler
from selfsup.data.placement import GIB, choose_placement
from selfsup.data.source import DataOptions, DataSource, Placement, Shard, holdout_rows

COPY_CHUNK_BYTES = 256 * 2**20  # host -> device copies of a placed set go in chunks of this size


def split_bytes(split: Split | None) -> int:
    return 0 if split is None else split.images.numel() * split.images.element_size()


def place(split: Split, device: torch.device, rows: Tensor | None = None) -> Split:
    """`split[rows]` (all of it for None) copied to `device` in chunks, gathered chunk by chunk (a host array much
    larger than a chunk never needs a second host copy), keeping the images' stored (N, H, W, C) layout as
    channels-last (N, C, H, W) strides."""
    stored = split.images.permute(0, 2, 3, 1)
    count = len(split) if rows is None else len(rows)
    images = torch.empty((count, *stored.shape[1:]), dtype=stored.dtype, device=device)
    chunk = max(1, COPY_CHUNK_BYTES // max(1, stored[0].numel()))
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        images[part].copy_(stored[part] if rows is None else stored[rows[part]])
    labels = split.labels if rows is None else split.labels[rows]
    return Split(images.permute(0, 3, 1, 2), labels.to(device))


class InMemorySource(DataSource):
    """Reads its splits once; places them for each shard it is set up for."""

    def __init__(self, options: DataOptions) -> None:
        self.options = options
        self.placement: Placement | None = None  # what `auto` became, once set up
        self.placed: tuple[Split, Split | None] | None = None  # (training, test) where `placement` put them
        self._host: tuple[Split, Split | None] | None = None  # (training, test) in host memory
        self._rows: tuple[Tensor, Tensor] | None = None  # (training rows, held-out rows) of --data.holdout
        self._shard: Shard | None = None
        self._loader: DeviceBatchLoader | None = None

    @abstractmethod
    def read(self) -> tuple[Split, Split | None]:
        """(training split, test split or None) in host memory, images (N, C, H, W) uint8."""

    def host_splits(self) -> tuple[Split, Split | None]:
        """The splits in host memory, cut to their first max_samples images (views: nothing is copied)."""
        if self._host is None:
            rows = slice(self.options.max_samples)
            train, test = self.read()
            train = Split(train.images[rows], train.labels[rows])
            self._host = train, None if test is None else Split(test.images[rows], test.labels[rows])
            if self.options.holdout:
                self._rows = holdout_rows(train.labels, self.options.holdout)
        return self._host

    def training_rows(self) -> Tensor | None:
        """The rows of the training split that train: None for all, else all but the held-out ones."""
        self.host_splits()
        return None if self._rows is None else self._rows[0]

    def evaluated_split(self) -> tuple[Split | None, Tensor | None]:
        """(split, rows) that evaluation scores: the test split, or the held-out rows of the training split."""
        train, test = self.host_splits()
        return (test, None) if self._rows is None else (train, self._rows[1])

    def num_train(self) -> int:
        rows = self.training_rows()
        return len(self.host_splits()[0]) if rows is None else len(rows)

    def setup(self, shard: Shard) -> None:
        if shard == self._shard:
            return
        train, test = self.host_splits()
        if self._rows is not None:
            test = None  # evaluation scores held-out rows of `train`: the test split is not placed
        dataset_bytes = split_bytes(train) + split_bytes(test)
        shard_bytes = -(-split_bytes(train) // shard.world_size)
        self.placement = choose_placement(
            self.options.placement, dataset_bytes, shard_bytes, shard.device, self.options.model_memory_gib
        )
        if self.placement == "gpu":
            self.placed = place(train, shard.device), None if test is None else place(test, shard.device)
        elif self.placement == "gpu_shard":
            rows = self.training_rows()
            rows = torch.arange(len(train)) if rows is None else rows
            self.placed = place(train, shard.device, rows[shard.rank :: shard.world_size]), None
        else:
            self.placed = None
        self._shard = shard
        if shard.device.type == "cuda":
            rank_zero_info(
                f"{self.options.dataset}: {dataset_bytes / GIB:.1f} GiB of images, placement {self.placement} "
                f"(--data.placement {self.options.placement})"
            )

    def _order(self, world_size: int) -> str:
        """How an epoch's samples are dealt: a mid-epoch position resumes exactly only into the same order."""
        return f"{world_size} shards" if self.placement == "gpu_shard" and world_size > 1 else "one shuffle"

    def train_loader(self, batch_size: int, shard: Shard, resume: dict[str, Any] | None) -> DeviceBatchLoader:
        train, rows = self.host_splits()[0], self.training_rows()
        if self.placement == "gpu_shard":  # the shard holds training rows only
            sampler = LocalShardSampler(self.num_train(), batch_size, shard.seed, shard.rank, shard.world_size)
            loader = DeviceBatchLoader(self.placed[0], sampler)
        else:
            sampler = ShardedBatchSampler(
                self.num_train(), batch_size, shuffle=True, drop_last=True, seed=shard.seed, rank=shard.rank,
                world_size=shard.world_size,
            )  # fmt: skip
            resident = self.placement == "gpu"
            split = self.placed[0] if resident else train
            loader = DeviceBatchLoader(split, sampler, self._transfer(resident), subset=rows)
        if resume is not None:
            saved, now = resume.get("order", "one shuffle"), self._order(shard.world_size)
            if saved != now:
                rank_zero_warn(
                    f"Resuming mid-epoch with the data dealt as {now} where the checkpoint dealt {saved} "
                    "(--data.placement gpu_shard and the number of processes decide it): the rest of this epoch "
                    "comes from another order, so some images repeat and others wait for the next epoch."
                )
            loader.resume_from(resume)
        self._loader = loader
        return loader

    def resumed_batches(self) -> int | None:
        return self._loader.resumed_batches if self._loader is not None else None

    def train_position(self) -> dict[str, Any] | None:
        if self._loader is None:
            return None
        return {**self._loader.position(), "order": self._order(self._loader.sampler.world_size)}

    def evaluation_loaders(self, batch_size: int, rank: int, world_size: int) -> list:
        host_train = self.host_splits()[0]
        host_evaluated, evaluated_rows = self.evaluated_split()
        if self.num_classes < 2 or host_evaluated is None:
            return []
        resident = self.placement == "gpu"  # a shard holds only every world_size-th image: evaluate from the host
        train = self.placed[0] if resident else host_train
        evaluated = (train if self._rows is not None else self.placed[1]) if resident else host_evaluated
        training_rows = self.training_rows()
        candidates = torch.arange(len(host_train)) if training_rows is None else training_rows
        labelled = candidates[host_train.labels[candidates] >= 0]  # host indices, like the sampler's
        bank_rows: Tensor | None = None if len(labelled) == len(train) else labelled
        size = len(evaluated) if evaluated_rows is None else len(evaluated_rows)

        def loader(split: Split, count: int, rows: Tensor | None) -> DeviceBatchLoader:
            sampler = ShardedBatchSampler(
                count, batch_size, shuffle=False, drop_last=False, rank=rank, world_size=world_size
            )
            return DeviceBatchLoader(split, sampler, self._transfer(resident), subset=rows)

        return [loader(train, len(labelled), bank_rows), loader(evaluated, size, evaluated_rows)]

    def _transfer(self, resident: bool) -> torch.device | None:
        """None for batches indexed on the device they live on; else the device to copy host batches to."""
        return None if resident else (self._shard.device if self._shard is not None else torch.device("cpu"))
