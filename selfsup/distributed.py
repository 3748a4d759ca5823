"""World-size helpers and the gathers that let losses and evaluators see every rank's samples.

Every function here is also correct in a single process (it returns its input), so losses and
evaluators are written once and tested on plain tensors.
"""

import os
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if world_size() > 1:
        dist.barrier()


def init_from_environment() -> torch.device:
    """Join the process group a launcher describes (torchrun and SLURM's srun via Lightning set WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and return this process's device: NCCL on GPUs, gloo on CPUs. A
    single process (no WORLD_SIZE, or 1) joins nothing."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` from every rank along dim 0 (in rank order) and keep the autograd graph.

    The backward pass sums, over ranks, the gradient each rank computed for the gathered tensor and hands
    every rank the slice of its own samples. So when rank r uses rank s's embeddings as negatives, that
    gradient reaches rank s's encoder, and DDP's gradient averaging yields the gradient of the global loss.
    All ranks must pass the same shape.
    """
    if world_size() == 1:
        return x
    return _ContiguousGradient.apply(torch.cat(dist_nn.all_gather(x), dim=0))


class _ContiguousGradient(torch.autograd.Function):
    """The identity, whose backward pass makes the gradient contiguous: the all-gather's backward reduces the
    gradient of each rank's slice, and gloo reduced a non-contiguous one (from a permuted view downstream) in the
    wrong element order."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> Tensor:
        return gradient.contiguous()


def sum_with_grad(x: Tensor) -> Tensor:
    """`x` summed over every rank, keeping the autograd graph: the backward pass sums every rank's gradient of the
    result, so a loss that is a function of a global sum (the log of a mean over the pairs of every rank) gets, after
    DDP's averaging, the gradient of that function of the whole batch. Every rank must pass the same shape."""
    if world_size() == 1:
        return x
    return dist_nn.all_reduce(x)


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate `x` from every rank along dim 0 without gradient (feature banks, labels, queues)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """`x` reduced over every rank ("sum" or "max"), as a new tensor; the input is left untouched."""
    x = x.clone()
    if world_size() > 1:
        dist.all_reduce(x, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return x


@torch.no_grad()
def gather_interleaved(x: Tensor) -> Tensor:
    """The rows of every rank in the order of the data they were dealt from: rank r holds rows r, r + world,
    r + 2 world, ... (as evaluation loaders deal them), so row i of the result is row i of the whole set."""
    parts = gather(x).unflatten(0, (world_size(), -1))  # (world, rows per rank, ...)
    return parts.transpose(0, 1).flatten(0, 1)
