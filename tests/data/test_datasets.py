import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.data import SelfSupDataModule
from selfsup.data.datasets import DATASETS, locate_fashion_mnist, read_fashion_mnist, read_idx
from selfsup.errors import ConfigurationError
from tests.conftest import FASHION_MNIST, needs_fashion_mnist


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def fake_fashion_mnist(folder: Path, train: int = 12, test: int = 6) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_read_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "b.idx.gz"):
        write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_fashion_mnist_from_user_root_in_torchvision_layout(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    before = sorted(p for p in tmp_path.rglob("*"))
    train, test = read_fashion_mnist(locate_fashion_mnist(tmp_path, download=True))
    assert train.images.shape == (12, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written into the user's folder


def test_user_root_without_fashion_mnist_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No Fashion-MNIST in .*omit --data.root"):
        locate_fashion_mnist(tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_cifar_root_without_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cifar-10-batches-py"):
        DATASETS["cifar10"].locate(tmp_path, True)


@needs_fashion_mnist
def test_fashion_mnist_found_in_debian_package_when_no_root() -> None:
    assert locate_fashion_mnist(None, download=False) == FASHION_MNIST
    train, test = read_fashion_mnist(FASHION_MNIST)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert sorted(train.labels.unique().tolist()) == list(range(10))


def test_data_module_rejects_bad_input_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Unknown dataset 'imagenet'.*one of"):
        SelfSupDataModule("imagenet")
    with pytest.raises(ConfigurationError, match="does not exist"):
        SelfSupDataModule(root=str(tmp_path / "missing"))
    fake_fashion_mnist(tmp_path)
    data = SelfSupDataModule(root=str(tmp_path), batch_size=64)
    with pytest.raises(ConfigurationError, match="batch_size 64 is larger than the 12 training images"):
        data.setup("fit")


def test_data_module_serves_train_batches_and_two_eval_loaders(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path)
    data = SelfSupDataModule(root=str(tmp_path), batch_size=4)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4,)
    bank, test = data.val_dataloader()
    assert sum(len(b[1]) for b in bank) == 12 and sum(len(b[1]) for b in test) == 6


def test_image_folder_errors_name_the_problem(tmp_path: Path, image_folder: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigurationError, match="No images in"):
        SelfSupDataModule("image_folder", root=str(empty))
    (image_folder / "train" / "red" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigurationError, match="non-image file.*notes.txt.*move the other files out"):
        SelfSupDataModule("image_folder", root=str(image_folder))
    with pytest.raises(ConfigurationError, match="needs --data.root"):
        SelfSupDataModule("image_folder")


def test_corrupt_image_is_reported_with_its_path(image_folder: Path) -> None:
    broken = image_folder / "train" / "red" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=4, num_workers=0, folder_image_size=16)
    data.setup("fit")
    index = [i for i, (p, _) in enumerate(data._train_samples) if p == broken][0]
    with pytest.raises(ConfigurationError, match="Cannot decode image .*broken.png"):
        data.train_dataloader().dataset[index]


def test_image_folder_batches_are_fixed_size_uint8(image_folder: Path) -> None:
    data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=4, num_workers=0, folder_image_size=16)
    data.setup("fit")
    assert data.num_classes == 2 and data.classes == ["blue", "red"]
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert len(data.val_dataloader()) == 2
