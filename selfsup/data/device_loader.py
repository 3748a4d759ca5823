"""Batches for the training device out of in-memory datasets (built-in or packed): no workers, no per-sample
CPU work.

The images live either on the training device (indexed there) or in host memory (gathered into pinned memory
by a background thread and copied to the device on a side stream, so the copy overlaps the model's step).
Lightning accepts any iterable as a dataloader and calls `set_epoch` on its `sampler` before every epoch,
which is how the shuffle stays identical across ranks and reproducible when training resumes. The loader also
knows its position in the epoch (checkpointed by the data module), so a checkpoint written in the middle of an
epoch resumes with exactly the batches the interrupted epoch had left.
"""

import itertools
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from selfsup.data.datasets import Split

SHARD_SEED_STRIDE = 1_000_003  # rank r of a sharded set shuffles with seed + r x this


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> Tensor:
    """The shuffle of one epoch: a pure function of (seed, epoch), so that a run resumed at an epoch boundary
    draws the batches an uninterrupted run would have drawn."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed + epoch))


class ShardedBatchSampler:
    """Index batches for one rank of `world_size`.

    Training (`shuffle`, `drop_last`): every epoch all ranks draw the same permutation (seeded by seed and
    epoch) and rank r takes every world_size-th index from r on, so ranks see disjoint samples, each the same
    number. Evaluation (no shuffle, no drop_last): the index range is padded with -1 up to a multiple of
    world_size, so every rank runs the same number of batches; -1 marks padding, which the loader labels -1.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        else:
            order = torch.arange(self.num_samples)
        total = self._per_rank() * self.world_size
        if total > self.num_samples:
            order = torch.cat([order, torch.full((total - self.num_samples,), -1, dtype=order.dtype)])
        mine = order[self.rank : total : self.world_size]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield mine[start : start + self.batch_size]


class LocalShardSampler(ShardedBatchSampler):
    """Training batches of a rank that holds only its shard: samples rank, rank + world_size, ... of the dataset,
    stored locally as 0, 1, 2, ... Every epoch the rank reshuffles its own shard (seeded by seed, epoch and rank)
    and takes the same number of samples as every other rank, so samples never cross shards. With one rank this
    is `ShardedBatchSampler`'s shuffle exactly."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int, world_size: int) -> None:
        super().__init__(
            num_samples, batch_size, shuffle=True, drop_last=True, seed=seed, rank=rank, world_size=world_size
        )

    def __iter__(self) -> Iterator[Tensor]:
        shard_size = len(range(self.rank, self.num_samples, self.world_size))
        order = epoch_permutation(shard_size, self.seed + SHARD_SEED_STRIDE * self.rank, self.epoch)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]


def padded_lookup(table: Tensor, indices: Tensor) -> Tensor:
    """`table[indices]`, and -1 where an index is -1 (evaluation padding): labels of a batch, rows of a subset."""
    return torch.where(indices >= 0, table[indices.clamp(min=0)], torch.full_like(indices, -1))


class ResidentBatches:
    """Batches indexed straight out of tensors on the training device, in the layout `PinnedTransfer` gives."""

    def __init__(self, split: Split) -> None:
        self.images = split.images.permute(0, 2, 3, 1)  # indexed as stored: (N, H, W, C) for placed sets
        self.labels = split.labels

    def __call__(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        indices = indices.to(self.images.device, non_blocking=True)
        safe = indices.clamp(min=0)
        return self.images[safe].permute(0, 3, 1, 2), padded_lookup(self.labels, indices)


class PinnedTransfer:
    """Batches gathered from host memory into pinned memory and copied to `device` on a side stream.

    `stage` (run on a background thread) gathers the rows in their stored (H, W, C) order, one contiguous copy,
    and starts the copy; `finish` (on the training thread) makes the training stream wait for that copy. The
    images reach the model as (B, C, H, W) with channels-last strides, the layout it computes in.
    """

    def __init__(self, split: Split, device: torch.device) -> None:
        self.images = split.images.permute(0, 2, 3, 1)  # (N, H, W, C): contiguous for packed sets
        self.labels = split.labels
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def bind_thread(self) -> None:
        """Make the staging thread's current device the training device (a new thread's is device 0: pinning
        memory there would create a CUDA context on GPU 0 for every rank)."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def stage(self, indices: Tensor) -> tuple[Tensor, Tensor, torch.cuda.Event | None]:
        pinned = self.stream is not None
        images = torch.empty((len(indices), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=pinned)
        torch.index_select(self.images, 0, indices.clamp(min=0), out=images)
        labels = padded_lookup(self.labels, indices)
        if not pinned:
            return images.permute(0, 3, 1, 2), labels, None
        with torch.cuda.stream(self.stream):  # pinned memory keeps its block until this copy has finished
            images = images.to(self.device, non_blocking=True)
            labels = labels.pin_memory().to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.stream)
        return images.permute(0, 3, 1, 2), labels, copied

    def finish(self, staged: tuple[Tensor, Tensor, torch.cuda.Event | None]) -> tuple[Tensor, Tensor]:
        images, labels, copied = staged
        if copied is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(copied)
            images.record_stream(stream)  # memory made on the side stream, used on this one
            labels.record_stream(stream)
        return images, labels


class DeviceBatchLoader:
    """Yields (images, labels) batches of `split` for the indices `sampler` draws.

    `transfer_to`: None when the split already lives on the training device; else the device to copy host
    batches to (`PinnedTransfer`, `prefetch` batches ahead). `subset`: the sampler indexes these rows of the split
    (the labelled images of a partly unlabelled set) instead of all of them.
    """

    def __init__(
        self,
        split: Split,
        sampler: ShardedBatchSampler,
        transfer_to: torch.device | None = None,
        subset: Tensor | None = None,
        prefetch: int = 2,
    ) -> None:
        self.sampler = sampler
        self.batch_sampler = None  # Lightning inspects it; the sampler already yields whole batches
        self.batch_size = sampler.batch_size
        self.subset = subset
        self.fetch = ResidentBatches(split) if transfer_to is None else PinnedTransfer(split, transfer_to)
        self.prefetch = prefetch
        self._served = 0  # batches of the current epoch handed out
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches it had served) of a loaded checkpoint

    def __len__(self) -> int:
        return len(self.sampler)

    def position(self) -> dict[str, int]:
        """The position in the epoch, counted in samples of all ranks. With one shuffle for all ranks, which they
        deal in turn, what was trained on is a prefix of it, whatever the number of ranks that resume it; with
        shards (`LocalShardSampler`) only the same number of ranks continues exactly.
        """
        served = self._served * self.batch_size * self.sampler.world_size
        return {"epoch": self.sampler.epoch, "samples_served": served}

    @property
    def resumed_batches(self) -> int | None:
        """Batches of the resumed epoch this loader skips as already trained (this run's batches, per rank); None
        when it did not resume mid-epoch."""
        return self._resume_at[1] if self._resume_at is not None else None

    def resume_from(self, state: dict[str, int]) -> None:
        """Resume the saved epoch after the samples it had served (whenever the loader is iterated in that epoch)."""
        self._resume_at = (state["epoch"], state["samples_served"] // (self.batch_size * self.sampler.world_size))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self._resume_at is not None and self._resume_at[0] != self.sampler.epoch:
            self._resume_at = None  # a later epoch: the resumed one is over
        # kept for the whole resumed epoch: Lightning may start iterating before it sets the epoch, then restart
        skip = self._resume_at[1] if self._resume_at is not None else 0
        self._served = skip
        for batch in self._batches(self._rows(indices) for indices in itertools.islice(self.sampler, skip, None)):
            self._served += 1
            yield batch

    def _rows(self, indices: Tensor) -> Tensor:
        return indices if self.subset is None else padded_lookup(self.subset, indices)

    def _batches(self, index_batches: Iterator[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        if isinstance(self.fetch, ResidentBatches):
            yield from map(self.fetch, index_batches)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="host-batches", initializer=self.fetch.bind_thread) as stager:
            staged: deque = deque()
            for indices in index_batches:
                staged.append(stager.submit(self.fetch.stage, indices))
                if len(staged) > self.prefetch:
                    yield self.fetch.finish(staged.popleft().result())
            while staged:
                yield self.fetch.finish(staged.popleft().result())
