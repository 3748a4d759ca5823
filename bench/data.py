"""Data throughput on the CPU: decoding an image folder (today's full decode, and with Pillow's draft mode), packing
it, and reading the packed set from host memory.

On a generated folder of ImageNet-like JPEGs (500x375, quality 90, about 80 KB; smooth colour fields with noise)
it measures, per CPU core:
  (a) `previous_decode`: what DataLoader workers did for every image of every epoch before this benchmark's
      change (and `decode_square(draft=False)`: the same pixels, resampling only the centre square),
  (b) `decode_square()`: with the DCT-domain reduced decode for sources at least twice the target,
  (c) the packed set's host placement: training batches gathered from the memory-mapped array,
and the packer's images/s over all cores. Targets (issue 13): (b) >= 1.7 x (a) at 160 px, (c) >= 20 x (a) at 224 px.

    python bench/data.py --out bench/results/data_cpu.json
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, environment  # noqa: E402

from selfsup.data.decode import decode_square  # noqa: E402
from selfsup.data.device_loader import DeviceBatchLoader, ShardedBatchSampler  # noqa: E402
from selfsup.data.pack import pack  # noqa: E402
from selfsup.data.packed import TRAIN, Manifest, open_split  # noqa: E402

SIZES = (160, 224, 256)


def imagenet_like_jpeg(path: Path, rng: np.random.Generator, width: int = 500, height: int = 375) -> None:
    """A photo-like JPEG: a smooth random colour field (bicubic from 20x15) with pixel noise, quality 90."""
    field = Image.fromarray(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_folder(root: Path, count: int, classes: int = 10) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        folder = root / "train" / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"{i}.jpg")
        imagenet_like_jpeg(paths[-1], rng)
    return paths


def previous_decode(path: Path, size: int) -> np.ndarray:
    """The baseline: how image folders were decoded before `selfsup.data.decode` (the whole image converted and
    resized, then cropped), kept here verbatim so that every run of this benchmark measures both."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        scale = size / min(width, height)
        image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


DECODERS = {
    "previous": previous_decode,
    "full": lambda path, size: decode_square(path, size, draft=False),
    "draft": decode_square,
}


def decode_rates(paths: list[Path], rounds: int = 3) -> dict[str, dict[int, float]]:
    """Images/s of one process decoding `paths` with each decoder at each size: the best of `rounds` passes,
    interleaved, so that a moment of contention on a shared machine does not count as a decoder's speed."""
    best: dict[str, dict[int, float]] = {name: dict.fromkeys(SIZES, float("inf")) for name in DECODERS}
    for _ in range(rounds):
        for size in SIZES:
            for name, decode in DECODERS.items():
                start = time.perf_counter()
                for path in paths:
                    decode(path, size)
                best[name][size] = min(best[name][size], time.perf_counter() - start)
    return {name: {size: len(paths) / seconds for size, seconds in times.items()} for name, times in best.items()}


def packed_host_rate(directory: Path, batch_size: int, epochs: int) -> float:
    """Images/s of shuffled training batches from the packed set's host placement, with one intra-op thread."""
    split = open_split(directory, Manifest.read(directory), TRAIN)
    sampler = ShardedBatchSampler(len(split), batch_size, shuffle=True, drop_last=True)
    loader = DeviceBatchLoader(split, sampler, transfer_to=torch.device("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start, images = time.perf_counter(), 0
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            images += sum(len(labels) for _, labels in loader)
        return images / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs in the generated folder")
    parser.add_argument("--decode_images", type=int, default=300, help="JPEGs timed per decoder and size")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        paths = make_folder(work / "folder", args.images)
        timed = paths[: args.decode_images]
        decode_square(timed[0], 224)  # warm the file cache and the decoder
        rates = decode_rates(timed)
        previous, draft = rates["previous"], rates["draft"]
        start = time.perf_counter()
        pack(work / "folder", 224, work / "packed", workers=cores)
        pack_rate = args.images / (time.perf_counter() - start)
        host = packed_host_rate(work / "packed", args.batch_size, epochs=3)
        result = {
            "benchmark": "data",
            "folder": f"{args.images} generated JPEGs, 500x375, quality 90, "
            f"{np.mean([p.stat().st_size for p in paths]) / 1000:.0f} KB on average",
            "cpu_cores": cores,
            **{f"decode_{name}_img_per_s_per_core": {s: round(r, 1) for s, r in rates[name].items()} for name in rates},
            "draft_speedup_over_previous": {size: round(draft[size] / previous[size], 2) for size in SIZES},
            "pack_224_img_per_s": round(pack_rate, 1),
            "pack_224_img_per_s_per_core": round(pack_rate / cores, 1),
            "packed_host_224_img_per_s_per_core": round(host, 1),
            "packed_host_speedup_over_previous_224": round(host / previous[224], 1),
            "targets": {
                "draft_speedup_160 >= 1.7": draft[160] / previous[160] >= 1.7,
                "packed_host_speedup_224 >= 20": host / previous[224] >= 20,
            },
            **environment(torch.device("cpu")),
        }
    finally:
        shutil.rmtree(work)
    emit(result, args.out)


if __name__ == "__main__":
    main()
