"""Batches drawn from a dataset that lives on the GPU as one uint8 tensor: no workers, no per-sample CPU work.

Lightning accepts any iterable as a dataloader and calls `set_epoch` on its `sampler` before every epoch,
which is how the shuffle stays identical across ranks and reproducible when training resumes. The loader also
knows its position in the epoch (checkpointed by the data module), so a checkpoint written in the middle of an
epoch resumes with exactly the batches the interrupted epoch had left.
"""

import itertools
from collections.abc import Iterator

import torch
from torch import Tensor

from selfsup.data.datasets import Split


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


class DeviceBatchLoader:
    """Yields (images, labels) batches indexed straight out of device-resident tensors."""

    def __init__(self, split: Split, sampler: ShardedBatchSampler) -> None:
        self.split = split
        self.sampler = sampler
        self.batch_sampler = None  # Lightning inspects it; the sampler already yields whole batches
        self.batch_size = sampler.batch_size
        self._served = 0  # batches of the current epoch handed out
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches it had served) of a loaded checkpoint

    def __len__(self) -> int:
        return len(self.sampler)

    def position(self) -> dict[str, int]:
        """The position in the epoch, counted in samples of all ranks: ranks deal the epoch's permutation in turn,
        so what was trained on is a prefix of it, whatever the number of ranks that resume it.
        """
        served = self._served * self.batch_size * self.sampler.world_size
        return {"epoch": self.sampler.epoch, "samples_served": served}

    def resume_from(self, state: dict[str, int]) -> None:
        """Resume the saved epoch after the samples it had served (whenever the loader is iterated in that epoch)."""
        self._resume_at = (state["epoch"], state["samples_served"] // (self.batch_size * self.sampler.world_size))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = self.split.images.device
        if self._resume_at is not None and self._resume_at[0] != self.sampler.epoch:
            self._resume_at = None  # a later epoch: the resumed one is over
        # kept for the whole resumed epoch: Lightning may start iterating before it sets the epoch, then restart
        skip = self._resume_at[1] if self._resume_at is not None else 0
        self._served = skip
        for indices in itertools.islice(self.sampler, skip, None):
            self._served += 1
            indices = indices.to(device, non_blocking=True)
            valid = indices >= 0
            safe = indices.clamp(min=0)
            labels = torch.where(valid, self.split.labels[safe], torch.full_like(safe, -1))
            yield self.split.images[safe], labels
