"""What every benchmark shares: the timing loop, the description of the run, JSON output, and work in processes
with a time limit."""

import inspect
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
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
PRELOAD = ["torch", "pytorch_lightning", "selfsup.cli"]


def free_port() -> int:
    """A TCP port nothing listens on, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessesFailed(Exception):
    """A process of `in_processes` raised, died or ran past its time; the message says which and why, and
    `partial` holds the last partial result it had sent (None if none)."""

    def __init__(self, message: str, partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial


def start_forkserver() -> None:
    """Start the forkserver with PRELOAD now, before anything starts it without (selfsup's packer starts it with
    its workers' imports only): every process then starts with torch, Lightning and selfsup imported."""
    PROCESSES.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()


def start(target: Callable[..., object], args: tuple) -> tuple[Connection, multiprocessing.Process]:
    """target(*args) in a new process: (the end its (ok, result or error) arrives at, the process)."""
    PROCESSES.set_forkserver_preload(PRELOAD)  # read when the server starts: by the first process
    receiver, sender = PROCESSES.Pipe(duplex=False)
    process = PROCESSES.Process(target=_report, args=(sender, target, *args))
    process.start()
    sender.close()
    return receiver, process


def in_processes(target: Callable[..., object], args: tuple, nprocs: int, timeout_s: float) -> list:
    """[target(rank, nprocs, *args) for each rank], each in its own process. Processes still running after
    `timeout_s` are ended, and so are the others as soon as one fails, which the error names: a hung collective never
    holds the caller past its budget. A target that is a generator sends each value it yields as its partial result
    so far (the last is its result), so that one ended at its time limit still gives what it measured (rank 0's, in
    the error's `partial`)."""
    started = [start(target, (rank, nprocs, *args)) for rank in range(nprocs)]
    deadline = time.monotonic() + timeout_s
    pending = {receiver: rank for rank, (receiver, _) in enumerate(started)}
    results: dict[int, object] = {}
    partials: dict[int, object] = {}
    try:
        while pending:
            ready = multiprocessing.connection.wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = ", ".join(str(rank) for rank in sorted(pending.values()))
                raise ProcessesFailed(
                    f"rank {late} of {nprocs} ended at the limit of {timeout_s:.0f} s", partials.get(0)
                )
            for receiver in ready:
                rank, process = pending[receiver], started[pending[receiver]][1]
                try:
                    ok, outcome = receiver.recv()
                except EOFError:
                    process.join()
                    raise ProcessesFailed(
                        f"rank {rank} of {nprocs} died (exit {process.exitcode})", partials.get(0)
                    ) from None
                if ok is None:
                    partials[rank] = outcome
                elif not ok:
                    raise ProcessesFailed(f"rank {rank} of {nprocs} failed: {outcome}", partials.get(0))
                else:
                    results[rank] = outcome
                    del pending[receiver]
    finally:
        for _, process in started:
            process.join(max(0.0, deadline - time.monotonic()) if len(results) == nprocs else 0)
            if process.is_alive():
                process.kill()
                process.join()
    return [results[rank] for rank in range(nprocs)]


def in_process(target: Callable[..., object], args: tuple, timeout_s: float) -> object:
    """target(*args) in its own process, ended after `timeout_s` (ProcessesFailed then, or when it raises)."""
    return in_processes(_without_rank, (target, *args), 1, timeout_s)[0]


def _without_rank(rank: int, nprocs: int, target: Callable[..., object], *args: object) -> object:
    return target(*args)


def _report(sender: Connection, target: Callable[..., object], *args: object) -> None:
    """Send (True, target(*args)) or (False, the error's first line) to the parent; of a generator, each value it
    yields as (None, value) first, and the last as its result."""
    try:
        outcome = target(*args)
        if inspect.isgenerator(outcome):
            partials, outcome = outcome, None
            for outcome in partials:  # the last value yielded is the result
                sender.send((None, outcome))
        sender.send((True, outcome))
    except BaseException as error:  # noqa: BLE001 - whatever went wrong, the parent gets one line
        sender.send((False, f"{type(error).__name__}: {error}".splitlines()[0]))


def side_by_side(
    target: Callable[..., object],
    tasks: list[tuple],
    concurrent: int,
    deadline: float,
    finished: Callable[[int, bool, object], None],
) -> None:
    """target(*task) for each of `tasks` in order, each in its own process, `concurrent` at a time; as each ends,
    finished(index, True, result) or finished(index, False, the error's line). A process still running at
    `deadline` (time.monotonic) is ended and reported as failed; a task not started by then is not reported."""
    waiting = list(enumerate(tasks))
    running: dict[Connection, tuple[int, multiprocessing.Process]] = {}
    while waiting or running:
        while waiting and len(running) < concurrent and time.monotonic() < deadline:
            index, task = waiting.pop(0)
            receiver, process = start(target, task)
            running[receiver] = index, process
        if not running:
            return
        ready = multiprocessing.connection.wait(list(running), timeout=max(0.0, deadline - time.monotonic()))
        if not ready:  # the deadline: end what still runs
            for index, process in running.values():
                process.kill()
                process.join()
                finished(index, False, "ended at the deadline")
            return
        for receiver in ready:
            index, process = running.pop(receiver)
            try:
                ok, outcome = receiver.recv()
            except EOFError:
                ok, outcome = False, "the process died"
            process.join()
            finished(index, ok, outcome if ok or process.exitcode == 0 else f"{outcome} (exit code {process.exitcode})")
