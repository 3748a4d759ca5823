"""`selfsup pack FOLDER --size S --out DIR`: decode an image folder once into a packed dataset.

Every image is decoded the way image-folder training decodes it (`selfsup.data.decode`: the shorter side
resized to S, the centre cropped), so a packed run trains on the pixels a folder run decodes with
`--data.folder_image_size S`, without decoding them again every epoch. Files are read in directory order, in
chunks, by a pool of processes that write straight into the memory-mapped output, each image at its row of a
fixed shuffle. Finished chunks are recorded in DIR/pack_progress.json, so an interrupted pack resumes where it
stopped (Ctrl-C stops it that way too: the workers ignore it, the packer saves its progress and stops them).
Nothing is ever written into FOLDER, a finished pack is never overwritten, and the metadata files are replaced
whole or not at all (`selfsup.atomic`).
"""

import argparse
import hashlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from selfsup.atomic import check_writable, lacking_space, replacing, write_error, write_text
from selfsup.data.decode import UnreadableImageError, decode_square
from selfsup.data.image_folder import scan_image_folder, train_and_val_folders
from selfsup.data.packed import (
    IMAGES,
    LABELS,
    MANIFEST,
    PROGRESS,
    TRAIN,
    VAL,
    VERSION,
    Manifest,
    load_array,
    write_json,
)
from selfsup.errors import ConfigurationError, format_bytes

CHUNK = 128  # images per task, and per progress record
ORDER_SEED = 0  # the fixed shuffle of the rows
PARTIAL = "images.partial.npy"  # a split's array while it is being filled
BAD_IMAGES = "bad_images.txt"
SAVE_EVERY_S = 2.0
# What the workers run, imported once by the server they are forked from. Not this module by its name: run as
# `python -m selfsup.data.pack`, it is also each worker's __main__, which multiprocessing runs again in the worker,
# and runpy warns when it finds that module imported already.
WORKER_IMPORTS = ["selfsup.data.decode", "selfsup.data.image_folder", "selfsup.data.packed"]
REDECODE = "delete it and pack again"  # the fix for a damaged array of an unfinished pack
RESUME_FIX = "free some space or make it writable, and rerun the same command to resume (or choose another --out)"


class PackError(ConfigurationError):
    """A folder that cannot be packed, or an output the packer must not write; one line naming the fix."""


@dataclass(frozen=True)
class SplitPlan:
    """One split's files in reading order, their labels, and the output row of each."""

    name: str
    paths: list[Path]
    labels: np.ndarray  # (N,) int64
    rows: np.ndarray  # (N,) a permutation of 0..N-1

    def chunk(self, index: int) -> list[tuple[int, str, int]]:
        """(sample index, path, output row) of the files in chunk `index`."""
        span = range(index * CHUNK, min(len(self.paths), (index + 1) * CHUNK))
        return [(i, str(self.paths[i]), int(self.rows[i])) for i in span]

    def num_chunks(self) -> int:
        return -(-len(self.paths) // CHUNK)


def plan_splits(source: Path) -> tuple[list[str], list[SplitPlan]]:
    """The class names and the splits of an image folder (train/ and val/, or the folder itself)."""
    train_dir, val_dir = train_and_val_folders(source)
    train, classes = scan_image_folder(train_dir, fix="fix the FOLDER argument")
    val = {VAL: scan_image_folder(val_dir, classes, "fix the FOLDER argument")[0]} if val_dir is not None else {}
    splits = {TRAIN: train, **val}
    plans = []
    for name, samples in splits.items():
        rows = np.random.default_rng(ORDER_SEED).permutation(len(samples))
        labels = np.array([label for _, label in samples], dtype=np.int64)
        plans.append(SplitPlan(name, [path for path, _ in samples], labels, rows))
    return classes, plans


def fingerprint(source: Path, size: int, plans: list[SplitPlan]) -> str:
    """Identifies what is being packed: an interrupted pack resumes only the same files at the same size."""
    digest = hashlib.sha256(f"{VERSION}\n{size}\n".encode())
    for plan in plans:
        for path, label in zip(plan.paths, plan.labels.tolist(), strict=True):
            digest.update(f"{plan.name}\t{path.relative_to(source)}\t{label}\n".encode())
    return digest.hexdigest()


class Progress:
    """The chunks decoded so far, each with the images in it that could not be decoded ([index, message])."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.done: dict[str, dict[str, list]] = {}
        self._saved_at = 0.0
        self._recorded = False  # whether this run recorded a chunk yet
        if path.is_file():
            state = json.loads(path.read_text())
            if state.get("fingerprint") != key:
                raise PackError(
                    f"{path.parent} holds an unfinished pack of other files or another size; delete it, or pack "
                    "into another --out."
                )
            self.done = state["done"]

    def pending(self, plan: SplitPlan) -> list[int]:
        """Chunks still to decode: those never decoded, and those with bad images (the files may have been fixed)."""
        done = self.done.get(plan.name, {})
        return [c for c in range(plan.num_chunks()) if done.get(str(c)) != []]

    def record(self, split: str, chunk: int, bad: list) -> None:
        """Record a decoded chunk; saved every SAVE_EVERY_S, and at once for the first chunk of a run, so that even
        a pack stopped early resumes."""
        first = not self._recorded
        self._recorded = True
        self.done.setdefault(split, {})[str(chunk)] = bad
        if first or time.monotonic() - self._saved_at > SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        write_json(self.path, {"fingerprint": self.key, "done": self.done})
        self._saved_at = time.monotonic()

    def bad_images(self, plan: SplitPlan) -> dict[int, str]:
        return {index: message for bad in self.done.get(plan.name, {}).values() for index, message in bad}


def create_reserved_array(path: Path, shape: tuple[int, ...]) -> None:
    """A new uint8 .npy array of `shape` at `path` whose every block is allocated on the disk now. A sparse file
    would take its blocks as the workers write rows into its memory map, and on a full disk a worker's write then
    kills it (SIGBUS) while the pool waits for it forever; reserved, a full disk is an error here, in one line."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, path.stat().st_size)
    finally:
        os.close(descriptor)


_OPEN_ARRAYS: dict[str, np.ndarray] = {}  # a worker's memory maps, opened once per output file


def decode_chunk(task: tuple[str, int, str, int, list[tuple[int, str, int]]]) -> tuple[str, int, int, list]:
    """Decode one chunk's files into their rows of the output (in a worker process): (split, chunk, files, bad)."""
    split, chunk, output, size, items = task
    if output not in _OPEN_ARRAYS:
        _OPEN_ARRAYS[output] = load_array(Path(output), REDECODE, mmap_mode="r+")
    images, bad = _OPEN_ARRAYS[output], []
    for index, path, row in items:
        try:
            images[row] = decode_square(Path(path), size)
        except UnreadableImageError as error:
            bad.append([index, str(error)])
    images.flush()  # on disk before the chunk is recorded as done
    return split, chunk, len(items), bad


def check_destination(source: Path, out: Path) -> None:
    """The source must be a folder we only read; `out` a new or empty directory, or an unfinished pack to
    resume."""
    if not source.is_dir():
        raise PackError(f"Image folder {source} does not exist or is not a directory; fix the FOLDER argument.")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise PackError(
            f"--out {out} is inside the image folder {source}, which is never written to; choose a --out outside it."
        )
    if (out / MANIFEST).exists():
        raise PackError(f"{out} already holds a packed dataset; choose another --out, or delete it to pack again.")
    if out.exists() and not out.is_dir():
        raise PackError(f"--out {out} is a file; choose a new or empty directory.")
    if out.is_dir() and not (out / PROGRESS).exists() and any(out.iterdir()):
        raise PackError(f"{out} is not empty; choose a new or empty --out directory.")


def check_free_space(out: Path, needed: int) -> None:
    """Fail now rather than with a worker killed half-way when the sparse output file meets a full disk."""
    problem = lacking_space(out, needed, f"Packing into --out {out}")
    if problem is not None:
        raise PackError(f"{problem} A smaller --size needs less.")


def start_workers(workers: int) -> Pool:
    """`workers` decoding processes that ignore Ctrl-C: it reaches every process of the terminal's foreground group,
    and only the packer acts on it (it saves the progress and stops the workers), so no worker prints a traceback.

    A server started here has its forks ignore it from their start (the initializer covers a server started
    before). Ctrl-C while the workers start is acted on once they have: a packer gone in the middle of starting
    them leaves each reading the state of a process that no longer exists."""
    context = multiprocessing.get_context("forkserver")
    # forkserver, not fork: a fork copies whatever the caller's other threads hold at that moment (a lock, half an
    # import) into every worker, which broke a worker's numpy header parsing once
    context.set_forkserver_preload(WORKER_IMPORTS)
    interrupts: list[int] = []
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()  # a program exec'd with a signal ignored keeps it ignored
        signal.signal(signal.SIGINT, lambda number, frame: interrupts.append(number))
        pool = context.Pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
    finally:
        signal.signal(signal.SIGINT, handler)
    if interrupts:
        pool.terminate()
        raise KeyboardInterrupt
    return pool


def decode_all(plans: list[SplitPlan], out: Path, size: int, progress: Progress, workers: int) -> int:
    """Decode every pending chunk with `workers` processes; returns the number of images decoded."""
    tasks = []
    for plan in plans:
        output = out / plan.name / PARTIAL
        if not output.exists():
            if (out / plan.name / IMAGES).exists():
                continue  # finished by a run interrupted while writing the manifest
            progress.done.pop(plan.name, None)  # decoded rows live in the partial file: without it, start over
            output.parent.mkdir(parents=True, exist_ok=True)
            create_reserved_array(output, (len(plan.paths), size, size, 3))
        tasks += [(plan.name, c, str(output), size, plan.chunk(c)) for c in progress.pending(plan)]
    total = sum(len(task[-1]) for task in tasks)
    with start_workers(workers) as pool, tqdm(total=total, unit="img", desc="decoding", file=sys.stderr) as bar:
        try:
            for split, chunk, count, bad in pool.imap_unordered(decode_chunk, tasks):
                progress.record(split, chunk, bad)
                bar.update(count)
        finally:
            progress.save()  # also when interrupted: the next run resumes from here
    return total


def write_split(directory: Path, plan: SplitPlan, bad: dict[int, str]) -> int:
    """images.npy and labels.npy of one split, without the rows of bad images (which takes a second copy of the
    split on disk for a while); returns the images kept. Without a partial file, images.npy is already written."""
    good = np.ones(len(plan.paths), dtype=bool)
    good[list(bad)] = False
    keep = np.sort(plan.rows[good])  # output rows kept, in row order
    labels = np.empty(len(plan.paths), dtype=np.int64)
    labels[plan.rows] = plan.labels
    partial, final = directory / PARTIAL, directory / IMAGES
    if partial.exists():
        if len(keep) == len(plan.paths):
            partial.replace(final)
        else:
            source = load_array(partial, REDECODE, mmap_mode="r")
            images = np.lib.format.open_memmap(final, mode="w+", dtype=np.uint8, shape=(len(keep), *source.shape[1:]))
            for start in range(0, len(keep), CHUNK):
                images[start : start + CHUNK] = source[keep[start : start + CHUNK]]
            images.flush()
            partial.unlink()
    with replacing(directory / LABELS) as file:
        np.save(file, labels[keep])
    return len(keep)


def pack(source: Path, size: int, out: Path, workers: int, skip_bad: bool = False) -> tuple[Manifest, int]:
    """Pack `source` into `out` (resuming an interrupted pack there); see the module docstring. Returns the
    manifest and how many images this call decoded."""
    check_destination(source, out)
    check_writable(out, "--out", folder=True)
    classes, plans = plan_splits(source)
    if not (out / PROGRESS).exists():
        check_free_space(out, sum(len(plan.paths) for plan in plans) * size * size * 3)
    try:
        return write_pack(source, size, out, workers, skip_bad, classes, plans)
    except OSError as error:  # a full disk, a folder made read-only meanwhile, the arrays' own writes
        written = Path(error.filename) if error.filename else out
        raise write_error(written, error, RESUME_FIX) from None


def write_pack(
    source: Path, size: int, out: Path, workers: int, skip_bad: bool, classes: list[str], plans: list[SplitPlan]
) -> tuple[Manifest, int]:
    """The writing part of `pack`, once the destination is checked."""
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(out / PROGRESS, fingerprint(source, size, plans))
    progress.save()  # before anything else is written: from now on `out` is an unfinished pack that a rerun resumes
    decoded = decode_all(plans, out, size, progress, workers)
    bad = {plan.name: progress.bad_images(plan) for plan in plans}
    listed = [f"{plan.paths[i]}\t{message}" for plan in plans for i, message in sorted(bad[plan.name].items())]
    if listed:
        write_text(out / BAD_IMAGES, "\n".join(listed) + "\n")
        if not skip_bad:
            raise PackError(
                f"{len(listed)} image(s) cannot be decoded, listed in {out / BAD_IMAGES} (first: {listed[0]}). "
                "Replace them and rerun to resume, or rerun with --skip_bad to pack without them."
            )
    counts = {plan.name: write_split(out / plan.name, plan, bad[plan.name]) for plan in plans}
    manifest = Manifest(size=size, classes=classes, counts=counts, source=str(source.resolve()))
    manifest.write(out)
    (out / PROGRESS).unlink()
    return manifest, decoded


class OneLineParser(argparse.ArgumentParser):
    """The packer's argument parser: a usage error is one line pointing at `--help`, not the whole usage text."""

    def error(self, message: str) -> None:
        raise SystemExit(f"error: {message} (see {self.prog} --help)")


def main(argv: list[str] | None = None, prog: str = "python -m selfsup.data.pack") -> None:
    """The packer's command line; `prog` is the command that runs it (`selfsup pack` from the `selfsup` command)."""
    parser = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0].strip("`"))
    parser.add_argument(
        "folder", type=Path, help="image folder: FOLDER/train/<class>/* (+ FOLDER/val), or FOLDER/<class>/*"
    )
    parser.add_argument("--size", type=int, required=True, help="side of the packed squares, e.g. 160, 224 or 256")
    parser.add_argument("--out", type=Path, required=True, help="new directory for the packed dataset")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="decoding processes")
    parser.add_argument(
        "--skip_bad",
        action="store_true",
        help="pack without the images that cannot be decoded (rewrites each affected split: twice its size on disk)",
    )
    args = parser.parse_args(argv)
    if args.size < 8 or args.workers < 1:
        parser.error(f"--size must be at least 8 and --workers at least 1, got {args.size} and {args.workers}")
    started = time.perf_counter()
    try:
        manifest, decoded = pack(args.folder, args.size, args.out, args.workers, args.skip_bad)
    except ConfigurationError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        print(f"Packing into {args.out} interrupted; rerun the same command to resume.", file=sys.stderr)
        raise SystemExit(130) from None  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
    except OSError as error:  # reading the image folder
        raise SystemExit(f"error: cannot read {error.filename or args.folder}: {error.strerror or error}.") from None
    seconds = time.perf_counter() - started
    images = sum(manifest.counts.values())
    size = format_bytes(images * args.size**2 * 3)
    print(
        f"packed {images} images ({', '.join(f'{n} {s}' for s, n in manifest.counts.items())}) at {args.size} px "
        f"into {args.out}: {size}; decoded {decoded} images in {seconds:.1f} s ({decoded / seconds:.0f} "
        f"images/s with {args.workers} processes)"
    )


if __name__ == "__main__":
    main()
