"""Shared test helpers: CPU only, small data, no network."""

import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from timm.models import register_model
from torch import nn

os.environ.setdefault("WANDB_MODE", "offline")  # tests never sync to wandb, whatever the machine's setup
os.environ.setdefault("WANDB_SILENT", "true")
# One thread per pytest-xdist worker (`make test` runs one per core), two without; the processes tests start (train.py,
# torchrun ranks) inherit the same count, so a run in a subprocess and one in this process compute alike.
THREADS = 1 if "PYTEST_XDIST_WORKER" in os.environ else 2
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST.is_dir(),
    reason="Debian package dataset-fashion-mnist not installed (make test installs it as root)",
)


class TinyBackbone(nn.Module):
    """A convolution, batch norm and pooling: the least a method's code relies on in a backbone (a feature width,
    batch statistics, gradients). The registry tests train, trace and resume every method on it, their subject being
    the method's own code (views, heads, losses, metrics); a timm ResNet costs them 3 to 4 times as much."""

    def __init__(self, in_chans: int = 3, **kwargs) -> None:
        super().__init__()
        self.num_features = 16
        self.conv = nn.Conv2d(in_chans, self.num_features, kernel_size=3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(self.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(images)).relu().mean(dim=(2, 3))


@register_model
def selfsup_test_tiny(pretrained: bool = False, num_classes: int = 0, **kwargs) -> TinyBackbone:
    """`TinyBackbone` by name, as selfsup builds timm backbones: `backbone="selfsup_test_tiny"`."""
    return TinyBackbone(**kwargs)


# The ranks of the 2-process tests fork from one server per pytest process, started once with torch, Lightning and
# selfsup imported: a spawned rank would import them again, about 8 s of the 2 cores for every rank of every test.
RANKS = mp.get_context("forkserver")
RANKS.set_forkserver_preload(["tests.conftest", "selfsup.methods", "selfsup.evaluation"])


def start_ranks(worker: Callable, args: tuple, nprocs: int = 2, join: bool = True) -> mp.ProcessContext | None:
    """`worker(rank, *args)` on `nprocs` processes of RANKS, as `torch.multiprocessing.spawn` would start them."""
    return mp.start_processes(worker, args=args, nprocs=nprocs, join=join, start_method="forkserver")


def outcomes_of_ranks(worker: Callable, nprocs: int = 2) -> list:
    """What `worker(rank, port, results)` puts in `results` as (rank, outcome) on each of `nprocs` ranks, in rank
    order; read before the ranks are joined (a full pipe would block them). Outcomes are plain data: a rank may
    have exited when they are read."""
    results = RANKS.SimpleQueue()
    workers = start_ranks(worker, (free_port(), results), nprocs=nprocs, join=False)
    outcomes = [outcome for _, outcome in sorted(results.get() for _ in range(nprocs))]
    workers.join()
    return outcomes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_image_folder(root: Path) -> Path:
    """A tiny labelled image folder in ImageNet layout: train/ and val/, 2 classes of distinct colours."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("val", 8)):
        for label, name in enumerate(("red", "blue")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (20, 24, 3), dtype=np.uint8)
                pixels[..., 0 if label == 0 else 2] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """`make_image_folder` in the test's own folder."""
    return make_image_folder(tmp_path)


PACKED_SIZE = 48


@pytest.fixture
def packed_folder(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`image_folder` packed at PACKED_SIZE px (python -m selfsup.data.pack), outside it."""
    from selfsup.data.pack import pack

    out = tmp_path_factory.mktemp("packed") / "packed"
    pack(image_folder, PACKED_SIZE, out, workers=1)
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests (tests/test_*.py: they train, start processes, build the wheel) run before the unit tests in
    the folders below. With one pytest-xdist worker per core, the long tests start early and the short ones fill
    the gaps, instead of one worker finishing a long test alone at the end."""
    items.sort(key=lambda item: item.path.parent != Path(__file__).parent)  # a stable sort: each group keeps its order
