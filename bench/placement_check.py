"""Do the placements serve the same batches on this machine's device? Host memory (gathered into pinned memory by a
background thread, copied on a side stream), the whole set on the device (`gpu`) and one rank's shard of it
(`gpu_shard`, one rank: the whole shuffle) must hand the training loop identical batches, epoch after epoch, and
evaluation the same images. tests/data/test_packed.py checks the same on a CPU, where no pinned copy or side
stream exists; this is the check on CUDA, with how fast each placement serves.

    python bench/placement_check.py --data-root .data/FashionMNIST/raw     # Fashion-MNIST, on the GPU
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, environment, synchronize  # noqa: E402

from selfsup.data import SelfSupDataModule  # noqa: E402
from selfsup.data.device_loader import PinnedTransfer  # noqa: E402
from selfsup.data.source import Shard  # noqa: E402

PLACEMENTS = ("gpu", "host", "gpu_shard")


def served(data: SelfSupDataModule, shard: Shard, epoch: int, batches: int) -> tuple[list, float, bool]:
    """(the first `batches` training batches of `epoch`, images/s served, whether they came through a pinned copy
    on a side stream)."""
    loader = data.source.train_loader(data.batch_size, shard, None)
    loader.sampler.set_epoch(epoch)
    start = time.perf_counter()
    taken = list(itertools.islice(loader, batches))
    synchronize(shard.device)
    rate = len(taken) * data.batch_size / (time.perf_counter() - start)
    pinned = isinstance(loader.fetch, PinnedTransfer) and loader.fetch.stream is not None
    return taken, rate, pinned


def measure(data_options: dict, batch_size: int, batches: int, epochs: int = 2) -> dict:
    """Compare the placements' batches of `data_options` (SelfSupDataModule's arguments) on this machine's device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shard = Shard(0, 1, device, 0)
    modules = {}
    for placement in PLACEMENTS:
        modules[placement] = SelfSupDataModule(**data_options, batch_size=batch_size, placement=placement)
        modules[placement].prepare_data()
        modules[placement].source.setup(shard)
    identical, rates, pinned, compared = True, {}, False, 0
    for epoch in range(epochs):
        reference, rates["gpu"], _ = served(modules["gpu"], shard, epoch, batches)
        for placement in PLACEMENTS[1:]:
            other, rates[placement], through_pinned = served(modules[placement], shard, epoch, batches)
            pinned |= through_pinned
            for (images, labels), (other_images, other_labels) in zip(reference, other, strict=True):
                identical &= other_images.device == images.device == device
                identical &= torch.equal(images, other_images) and torch.equal(labels, other_labels)
                compared += 1
    counts = {
        placement: [sum(len(labels) for _, labels in loader) for loader in data.source.evaluation_loaders(512, 0, 1)]
        for placement, data in modules.items()
    }
    return {
        "check": "placements",
        "dataset": data_options.get("dataset"),
        "device": str(device),
        "batch_size": batch_size,
        "batches_compared": compared,
        "identical_batches": bool(identical),
        "host_through_pinned_side_stream": pinned,
        "evaluation_images": counts,  # [kNN bank, test set] per placement
        "img_per_s_served": {placement: round(rate, 1) for placement, rate in rates.items()},
        "passed": bool(identical)
        and len({tuple(c) for c in counts.values()}) == 1
        and pinned == (device.type == "cuda"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the usual search)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=20, help="batches compared per epoch and placement")
    args = parser.parse_args()
    result = measure({"dataset": "fashion_mnist", "root": args.data_root}, args.batch_size, args.batches)
    emit({**result, **environment(torch.device(result["device"]))}, None)


if __name__ == "__main__":
    main()
