"""Built-in datasets as uint8 tensors: Fashion-MNIST, CIFAR-10/100 and STL-10.

Each loader returns a pretraining split and a test split as `Split(images (N, C, H, W) uint8, labels (N,))`.
Unlabelled samples (STL-10's unlabeled part) carry label -1. Nothing is ever written to a user-given root:
a root must already hold the data; without a root, data comes from the Debian package (Fashion-MNIST) or
is downloaded once into the selfsup cache (`$SELFSUP_CACHE`, default ~/.cache/selfsup).
"""

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from selfsup.errors import ConfigurationError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Split:
    """One split of an in-memory dataset: uint8 images (N, C, H, W) and int64 labels (N,), -1 where unlabelled."""

    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64, -1 where unlabelled

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclass(frozen=True)
class DatasetSpec:
    """What selfsup knows of a built-in dataset: its classes, default view size, per-channel mean and std (of images
    scaled to [0, 1]), how to find or download it and how to read it."""

    num_classes: int
    image_size: int  # the default side of the views: the data's resolution, rounded up to 32 for Fashion-MNIST
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    locate: Callable[[Path | None, bool], Path]  # (root, download) -> directory holding the data
    read: Callable[[Path], tuple[Split, Split]]  # directory -> (pretraining split, test split)
    classes: tuple[str, ...] | None = None  # names by label, for the legend of eval's map


def cache_dir() -> Path:
    return Path(os.environ.get("SELFSUP_CACHE", Path.home() / ".cache" / "selfsup")) / "datasets"


class DatasetNotFoundError(ConfigurationError):
    """A built-in dataset is neither under the given root nor anywhere selfsup looks, and cannot be downloaded."""


# Fashion-MNIST ---------------------------------------------------------------------------------------------

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format, optionally gzipped) of unsigned bytes. A damaged file (not gzip
    despite its name, truncated, another format) is a `ConfigurationError` naming it."""
    replace = "; replace it with the original file"
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError; a cut-off stream an EOFError
        raise ConfigurationError(f"{path} cannot be decompressed ({error}){replace}") from None
    if len(data) < 4 or data[0] * 256 + data[1] != 0 or data[2] != 0x08:
        raise ConfigurationError(f"{path} is not an IDX file of unsigned bytes{replace}")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ConfigurationError(f"{path} is truncated: it ends inside its header{replace}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != offset + int(np.prod(shape)):
        raise ConfigurationError(
            f"{path} is truncated or damaged: its header describes an array of shape {shape}, but it holds "
            f"{max(0, len(data) - offset)} bytes of data{replace}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _idx_file(directory: Path, stem: str) -> Path | None:
    for folder in (directory, directory / "FashionMNIST" / "raw"):
        for name in (stem, f"{stem}.gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _has_fashion_mnist(directory: Path) -> bool:
    return all(_idx_file(directory, stem) for stem in FASHION_MNIST_FILES)


def locate_fashion_mnist(root: Path | None, download: bool) -> Path:
    if root is not None:
        if not _has_fashion_mnist(root):
            raise DatasetNotFoundError(
                f"No Fashion-MNIST in {root}: expected {', '.join(FASHION_MNIST_FILES)} (optionally .gz) there or "
                f"in {root}/FashionMNIST/raw. Point --data.root at that folder, or omit --data.root to use "
                f"{DEBIAN_FASHION_MNIST} (Debian package dataset-fashion-mnist) or a download."
            )
        return root
    if _has_fashion_mnist(DEBIAN_FASHION_MNIST):
        return DEBIAN_FASHION_MNIST
    target = cache_dir()
    if not _has_fashion_mnist(target) and download:
        try:
            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(target), train=train, download=True)
        except Exception as error:  # network failures surface as many different exception types
            raise DatasetNotFoundError(
                f"Fashion-MNIST is not installed and could not be downloaded into {target} ({error}). Install it "
                "with `apt-get install dataset-fashion-mnist` (as root), or pass --data.root to a folder holding "
                "the four IDX files."
            ) from error
    return target


def read_fashion_mnist(directory: Path) -> tuple[Split, Split]:
    arrays = [read_idx(_idx_file(directory, stem)) for stem in FASHION_MNIST_FILES]
    train_images, train_labels, test_images, test_labels = (torch.from_numpy(a.copy()) for a in arrays)
    return (
        Split(train_images[:, None], train_labels.long()),
        Split(test_images[:, None], test_labels.long()),
    )


# torchvision datasets (CIFAR-10/100, STL-10) ---------------------------------------------------------------


def _torchvision_locator(folder_name: str, make: Callable[[str, bool], object]) -> Callable[[Path | None, bool], Path]:
    """A locator for a torchvision dataset: a user root must hold `folder_name`; otherwise use the cache."""

    def locate(root: Path | None, download: bool) -> Path:
        if root is not None:
            if not (root / folder_name).is_dir():
                raise DatasetNotFoundError(
                    f"No {folder_name} folder in {root}. Point --data.root at the folder that contains "
                    f"{folder_name}/ (torchvision's layout), or omit --data.root to download into {cache_dir()}."
                )
            return root
        target = cache_dir()
        if download and not (target / folder_name).is_dir():
            try:
                make(str(target), True)
            except Exception as error:  # network failures surface as many different exception types
                raise DatasetNotFoundError(
                    f"Could not download {folder_name} into {target} ({error}). Download it elsewhere and pass "
                    "--data.root to the folder that contains it."
                ) from error
        return target

    return locate


def _cifar_spec(
    cls: type, folder_name: str, num_classes: int, mean: tuple, std: tuple, classes: tuple[str, ...] | None = None
) -> DatasetSpec:
    """CIFAR-10 and CIFAR-100 differ only in torchvision class, folder name, classes and statistics."""

    def read(directory: Path) -> tuple[Split, Split]:
        def split(train: bool) -> Split:
            data = cls(str(directory), train=train, download=False)
            images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
            return Split(images, torch.tensor(data.targets, dtype=torch.long))

        return split(True), split(False)

    locate = _torchvision_locator(folder_name, lambda root, download: cls(root, download=download))
    return DatasetSpec(num_classes, 32, mean, std, locate, read, classes)


def read_stl10(directory: Path) -> tuple[Split, Split]:
    def split(name: str) -> Split:
        data = torchvision.datasets.STL10(str(directory), split=name, download=False)
        return Split(torch.from_numpy(data.data), torch.from_numpy(data.labels.astype(np.int64)))

    return split("train+unlabeled"), split("test")


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        10, 32, (0.2860,) * 3, (0.3530,) * 3, locate_fashion_mnist, read_fashion_mnist, FASHION_MNIST_CLASSES
    ),
    "cifar10": _cifar_spec(
        torchvision.datasets.CIFAR10,
        "cifar-10-batches-py",
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        CIFAR10_CLASSES,
    ),
    "cifar100": _cifar_spec(
        torchvision.datasets.CIFAR100, "cifar-100-python", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "stl10": DatasetSpec(
        10,
        96,
        IMAGENET_MEAN,
        IMAGENET_STD,
        _torchvision_locator(
            "stl10_binary", lambda r, d: torchvision.datasets.STL10(r, split="train+unlabeled", download=d)
        ),
        read_stl10,
        STL10_CLASSES,
    ),
}
