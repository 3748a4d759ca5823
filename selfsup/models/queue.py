"""A FIFO queue of embeddings shared by all ranks: MoCo's negatives, NNCLR's support set, SwAV's feature queue.

The keys live in registered buffers, so they are saved in and restored from checkpoints, and, being the
same on every rank, they load unchanged when training resumes on a different number of GPUs. `enqueue`
gathers the keys of every rank before writing, which keeps all ranks' queues identical. Writes wrap around,
so the queue size need not be a multiple of the global batch. `filled` counts the slots written so far:
MoCo uses the random initial keys as negatives from the start, while the support sets of nearest-neighbour methods
(`selfsup.models.neighbours`) and SwAV use written entries only.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.distributed import gather
from selfsup.errors import ConfigurationError


class EmbeddingQueue(nn.Module):
    """A FIFO queue of `size` unit-norm embeddings of width `dim`, identical on every rank: MoCo's negatives,
    NNCLR's support set, SwAV's feature queue ("Momentum Contrast for Unsupervised Visual Representation
    Learning", He et al., CVPR 2020, Sec. 3.2).

    `enqueue` gathers every rank's keys (and optional labels, for diagnostics) before writing; `keys` starts as
    random unit vectors, `filled` counts the slots written. Saved in checkpoints as buffers."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ConfigurationError(
                f"the queue size must be at least 1, got {size}; set queue_size to a positive number"
            )
        # Random unit vectors until real keys arrive, as MoCo does; a fixed seed keeps ranks identical.
        initial = F.normalize(torch.randn(size, dim, generator=torch.Generator().manual_seed(0)), dim=1)
        self.register_buffer("keys", initial)
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))  # diagnostics only
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # slots written, at most `size`

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Checkpoints written before `filled` existed come from MoCo runs, whose queues had wrapped around.
        state_dict.setdefault(prefix + "filled", torch.tensor(self.size))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def is_full(self) -> bool:
        return int(self.filled) == self.size

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Append the keys (N, D) of every rank, in rank order, overwriting the oldest entries."""
        if labels is None:
            labels = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
        keys, labels = gather(keys.detach().to(self.keys.dtype)), gather(labels)
        keys, labels = keys[-self.size :], labels[-self.size :]  # a batch larger than the queue keeps its newest
        slots = (self.pointer + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self.keys[slots] = keys
        self.labels[slots] = labels
        self.pointer.copy_((self.pointer + keys.shape[0]) % self.size)
        self.filled.clamp_(max=self.size - keys.shape[0]).add_(keys.shape[0])
