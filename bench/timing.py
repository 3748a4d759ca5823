"""The one timing loop the benchmarks share: warm up, synchronise the device, time, synchronise again."""

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(
    step: Callable[[], object], images_per_step: int, steps: int, warmup: int, device: torch.device
) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * images_per_step / (time.perf_counter() - start)
