"""Where an in-memory dataset lives while it trains: the memory arithmetic behind `--data.placement`.

- gpu: the whole training set (and the test set) as one uint8 tensor on every device. Batches are indexed on the
  device: no copy, no CPU work.
- gpu_shard: each rank holds every world_size-th training image (its shard, 1/world_size of the set) and
  reshuffles only its shard every epoch; the test set and the kNN bank are read from host memory.
- host: the set stays in host memory (for a packed set, the memory-mapped file in the page cache); each batch is
  gathered into pinned memory by a background thread and copied to the device asynchronously.

`auto` takes the first that fits in the device's free memory minus what is left for the model
(`--data.model_memory_gib`, but never more than half the free memory, so that small datasets still go on small
GPUs); on a CPU device there is no GPU memory to fill, and `auto` means host.
"""

import os

import torch

from selfsup import distributed
from selfsup.data.source import Placement
from selfsup.errors import ConfigurationError, format_bytes

GIB = 2**30


def free_device_memory(device: torch.device) -> int:
    """Bytes free on `device`, the smallest over all ranks, so that every rank makes the same choice."""
    free = torch.tensor([-torch.cuda.mem_get_info(device)[0]], device=device)
    return -int(distributed.all_reduce(free, "max").item())


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what) of the memory a run on `device` trains in: the GPU's, or on the CPU the machine's RAM."""
    if device.type == "cuda":
        gpu = torch.cuda.get_device_properties(device)
        return gpu.total_memory, f"{gpu.name} memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM"


def check_fits_in_memory(needed: int, what: str, fix: str, device: torch.device) -> None:
    """Stop before allocating `needed` bytes for `what` when the memory of `device` could not hold them."""
    memory, kind = device_memory(device)
    if needed > memory:
        raise ConfigurationError(
            f"{what} needs {format_bytes(needed)}, more than this machine's {format_bytes(memory)} of {kind}; {fix}."
        )


def choose_placement(
    requested: Placement,
    whole_bytes: int,
    shard_bytes: int,
    device: torch.device,
    model_memory_gib: float,
    free_bytes: int | None = None,
) -> Placement:
    """The placement to use: `requested`, or for `auto` the first of gpu (`whole_bytes`: training and test set),
    gpu_shard (`shard_bytes`: this rank's share of the training set) and host that leaves `model_memory_gib`
    (at most half the free memory) free. An explicit gpu or gpu_shard that cannot fit at all is an error naming
    the numbers. `free_bytes` defaults to the device's free memory (a CUDA device only)."""
    if device.type != "cuda":
        return "host" if requested == "auto" else requested
    free = free_device_memory(device) if free_bytes is None else free_bytes
    if requested == "auto":
        budget = free - min(model_memory_gib * GIB, free / 2)
        if whole_bytes <= budget:
            return "gpu"
        if shard_bytes <= budget:
            return "gpu_shard"
        return "host"
    needed = {"gpu": whole_bytes, "gpu_shard": shard_bytes}.get(requested, 0)
    if needed > free:
        alternative = "gpu_shard" if requested == "gpu" and shard_bytes < whole_bytes else "host"
        raise ConfigurationError(
            f"--data.placement {requested} needs {format_bytes(needed)} on each device, which has "
            f"{format_bytes(free)} free; use --data.placement {alternative} (or auto), more devices, or a smaller "
            "--size when packing."
        )
    return requested
