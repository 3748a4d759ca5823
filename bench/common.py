"""What every benchmark shares: the timing loop, the description of the run, and JSON output."""

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def environment(device: torch.device) -> dict[str, str]:
    """Device, versions, date and command line, so every figure says where it came from."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
    }


def emit(result: dict, out: Path | None) -> None:
    """Print the result as JSON and, if asked, also write it to `out`."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
