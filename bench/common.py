"""What every benchmark shares: the timing loop, the description of the run, JSON output, and work in processes
with a time limit."""

import json
import multiprocessing
import platform
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
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


# Processes started from one forkserver that has imported torch, Lightning and selfsup once: each costs a fork, not
# the seconds of importing them again (the checks of bench/gpu_evidence.py and the table's runs start many).
PROCESSES = multiprocessing.get_context("forkserver")
PROCESSES.set_forkserver_preload(["torch", "pytorch_lightning", "selfsup.cli"])


def free_port() -> int:
    """A TCP port nothing listens on, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessesFailed(Exception):
    """A process of `in_processes` raised, died or ran past its time; the message says which and why."""


def in_processes(target: Callable[..., object], args: tuple, nprocs: int, timeout_s: float) -> list:
    """[target(rank, nprocs, *args) for each rank], each in its own process, in rank order. Processes still
    running after `timeout_s` are ended, and so are the others when one fails: a hung collective never holds the
    caller past its budget."""
    receivers, processes = [], []
    for rank in range(nprocs):
        receiver, sender = PROCESSES.Pipe(duplex=False)
        process = PROCESSES.Process(target=_report, args=(sender, target, rank, nprocs, *args), daemon=False)
        process.start()
        sender.close()
        receivers.append(receiver)
        processes.append(process)
    deadline = time.monotonic() + timeout_s
    outcomes: list = [None] * nprocs
    try:
        for rank, receiver in enumerate(receivers):
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                raise ProcessesFailed(f"rank {rank} of {nprocs} gave no result within {timeout_s:.0f} s")
            try:
                ok, outcome = receiver.recv()
            except EOFError:
                raise ProcessesFailed(f"rank {rank} of {nprocs} died (exit code {processes[rank].exitcode})") from None
            if not ok:
                raise ProcessesFailed(f"rank {rank} of {nprocs} failed: {outcome}")
            outcomes[rank] = outcome
    finally:
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()) if all(o is not None for o in outcomes) else 0)
            if process.is_alive():
                process.kill()
                process.join()
    return outcomes


def _report(sender: Connection, target: Callable[..., object], rank: int, *args: object) -> None:
    """Send (True, result) or (False, the error's last line) back to `in_processes`."""
    try:
        sender.send((True, target(rank, *args)))
    except BaseException as error:  # noqa: BLE001 - whatever went wrong, the parent gets one line
        sender.send((False, f"{type(error).__name__}: {error}".splitlines()[0]))
