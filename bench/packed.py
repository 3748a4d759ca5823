"""End-to-end training throughput from a packed set against the same images read as an image folder.

On a generated folder of ImageNet-like JPEGs (500x375, quality 90; `bench/data.py`), in one process it measures
`Trainer.fit` of SimCLR (two views per image, bf16 on a GPU) in images per second, for each backbone asked:
  folder           `--data.dataset image_folder` with `--workers` DataLoader workers decoding every batch,
  packed_<where>   the same folder packed once at the same size, for each `--placements` (gpu, host, ...),
and the packing time. The views are rendered at the packed size, so every path trains on the same pixels.

    python bench/packed.py --out bench/results/packed_h100.json          # GPU defaults
    python bench/packed.py --images 64 --size 32 --backbones test_resnet  # a CPU smoke run
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, environment  # noqa: E402
from data import imagenet_like_jpeg  # noqa: E402
from throughput import build, end_to_end  # noqa: E402

from selfsup.data import SelfSupDataModule  # noqa: E402
from selfsup.data.pack import pack  # noqa: E402


def write_jpeg(task: tuple[Path, int]) -> None:
    path, seed = task
    imagenet_like_jpeg(path, np.random.default_rng(seed))


def make_folder(root: Path, count: int, classes: int = 100) -> None:
    """`count` JPEGs in `classes` class folders, written in parallel."""
    tasks = [(root / f"class_{i % classes:03d}" / f"{i}.jpg", i) for i in range(count)]
    for path, _ in tasks[:classes]:
        path.parent.mkdir(parents=True, exist_ok=True)
    with Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(write_jpeg, tasks, chunksize=64)


def measurements(args: argparse.Namespace, device: torch.device) -> Iterator[dict]:
    """Generate the folder, pack it, and time `Trainer.fit` from each source for each backbone (`args`: main's
    options), yielding what is measured so far after each, so that a run ended at a time limit keeps it; everything
    generated is removed afterwards."""
    torch.backends.cudnn.benchmark = True
    work = Path(tempfile.mkdtemp(prefix="bench_packed_"))
    result = {
        "benchmark": "packed",
        "method": "simclr (two views)",
        "images": f"{args.images} generated JPEGs, 500x375, quality 90, in 100 classes",
        "size": args.size,
        "batch_size": args.batch_size,
        "folder_workers": args.workers,
        "precision": "bf16-mixed" if device.type == "cuda" else "32-true",
    }
    try:
        make_folder(work / "folder" / "train", args.images)
        start = time.perf_counter()
        pack(work / "folder", args.size, work / "packed", workers=len(os.sched_getaffinity(0)))
        result["pack_seconds"] = round(time.perf_counter() - start, 1)
        yield result
        sources = {"folder": dict(dataset="image_folder", root=str(work / "folder"), num_workers=args.workers)}
        for placement in args.placements:
            sources[f"packed_{placement}"] = dict(dataset="packed", root=str(work / "packed"), placement=placement)
        for backbone in args.backbones:
            run = argparse.Namespace(**vars(args), backbone=backbone, compile=False, compile_augment=False)
            for name, options in sources.items():
                data = SelfSupDataModule(
                    batch_size=args.batch_size, image_size=args.size, folder_image_size=args.size, **options
                )
                rate = end_to_end(build(run, data), data, device, args.steps, args.warmup)
                result[f"{backbone}_{name}_img_per_s"] = round(rate, 1)
                yield result
    finally:
        shutil.rmtree(work)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192 if cuda else 64)
    parser.add_argument("--size", type=int, default=224 if cuda else 32, help="packed size = view size")
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "resnet18"] if cuda else ["test_resnet"])
    parser.add_argument("--batch-size", type=int, default=256 if cuda else 8)
    parser.add_argument("--steps", type=int, default=50 if cuda else 2, help="timed steps")
    parser.add_argument("--warmup", type=int, default=15 if cuda else 1, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=14 if cuda else 2, help="DataLoader workers of the folder")
    parser.add_argument("--placements", nargs="+", default=["gpu", "host"] if cuda else ["host"])
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    emit({**collections.deque(measurements(args, device), maxlen=1)[0], **environment(device)}, args.out)


if __name__ == "__main__":
    main()
