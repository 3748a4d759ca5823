import gc
import gzip
import multiprocessing
import shutil
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


def test_damaged_idx_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])  # an IDX header for 3 labels, then the 3 labels
    cut = tmp_path / "labels.gz"
    cut.write_bytes(gzip.compress(labels)[:-6])
    with pytest.raises(ConfigurationError, match="labels.gz cannot be decompressed"):
        read_idx(cut)
    short = tmp_path / "short-labels"
    short.write_bytes(labels[:-1])
    with pytest.raises(ConfigurationError, match=r"short-labels is truncated or damaged.*\(3,\).*2 bytes"):
        read_idx(short)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ConfigurationError, match="not an IDX file"):
        read_idx(foreign)


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
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"  # named in eval's map


def test_built_in_class_names_are_one_per_class() -> None:
    for spec in DATASETS.values():
        assert spec.classes is None or len(set(spec.classes)) == spec.num_classes


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
    index = [i for i, (p, _) in enumerate(data.source.train_samples) if p == broken][0]
    with pytest.raises(ConfigurationError, match="Cannot decode image .*broken.png"):
        data.train_dataloader().dataset[index]


def test_corrupt_image_read_in_a_worker_keeps_its_one_line_message(image_folder: Path) -> None:
    """PyTorch re-raises a worker's exception with the worker's traceback as its message; ours keeps one line."""
    (image_folder / "train" / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=49, num_workers=1, image_size=16)
    data.setup("fit")
    with pytest.raises(ConfigurationError) as error:
        next(iter(data.train_dataloader()))
    message = str(error.value)
    # the traceback holds the loader's iterator in a reference cycle; freed by a later garbage collection along with
    # its queues, its worker would get no stop signal and PyTorch would wait 5 s for it in whichever test runs then
    error.value.__traceback__ = None
    del error
    assert message.startswith("Cannot decode image ") and "\n" not in message
    assert "broken.png" in message and "Traceback" not in message


def test_a_validation_pass_over_a_folder_stops_its_workers_and_the_training_loader_keeps_its_own(
    image_folder: Path,
) -> None:
    """Workers left running by a one-pass loader (validation, `selfsup eval`) made the garbage collection that
    freed it wait 5 s for each; the training loader keeps its workers for the next epoch."""
    data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=8, num_workers=2, image_size=16)
    data.setup("fit")
    before = set(multiprocessing.active_children())
    loaders = data.val_dataloader()
    assert [sum(len(labels) for _, labels in loader) for loader in loaders] == [48, 16]  # the kNN bank, the test set
    assert set(multiprocessing.active_children()) == before  # with the loaders still held
    training = data.train_dataloader()
    assert sum(len(labels) for _, labels in training) == 48
    assert len(set(multiprocessing.active_children()) - before) == 2


def test_a_training_loader_stops_its_workers_when_its_caller_returns(image_folder: Path) -> None:
    """Lightning's `save_hyperparameters` kept its caller's frames in a reference cycle: the locals of whoever built
    the data module (here its training loader) lived on until a garbage collection, whose arbitrary order then
    stopped the workers by 5 s timeouts each (10 s in the suite)."""

    def one_epoch() -> None:
        data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=8, num_workers=2, image_size=16)
        data.setup("fit")
        loader = data.train_dataloader()
        assert sum(len(labels) for _, labels in loader) == 48

    before = set(multiprocessing.active_children())
    gc.disable()
    try:
        one_epoch()
        assert set(multiprocessing.active_children()) == before
    finally:
        gc.enable()


def test_validation_labels_follow_the_training_classes_even_when_a_class_is_missing(image_folder: Path) -> None:
    shutil.rmtree(image_folder / "val" / "blue")  # val/ has only red, the second training class
    data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=4, num_workers=0, image_size=16)
    assert data.classes == ["blue", "red"] and {label for _, label in data.source.val_samples} == {1}
    data.setup("fit")
    _, test = data.val_dataloader()
    assert torch.cat([labels for _, labels in test]).unique().tolist() == [1]


def test_max_samples_limits_the_folders_training_and_validation_images(image_folder: Path) -> None:
    data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=2, num_workers=0, max_samples=5)
    data.setup("fit")
    bank, test = data.val_dataloader()
    assert data.source.num_train() == 5 and sum(len(labels) for _, labels in test) == 5


@pytest.mark.parametrize("layout", ["one class", "no classes"])
def test_folder_without_two_classes_has_nothing_to_score(layout: str, tmp_path: Path, image_folder: Path) -> None:
    root = tmp_path / "images"
    if layout == "one class":
        shutil.copytree(image_folder / "train" / "red", root / "red")
    else:
        shutil.copytree(image_folder / "train" / "red", root)
    data = SelfSupDataModule("image_folder", root=str(root), batch_size=4, num_workers=0, folder_image_size=16)
    data.setup("fit")
    assert data.num_classes == (1 if layout == "one class" else 0) and data.val_dataloader() == []
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and set(labels.tolist()) == ({0} if layout == "one class" else {-1})


def test_folder_shuffle_is_a_function_of_seed_and_epoch(image_folder: Path) -> None:
    """Not of the global random state: a run resumed at an epoch boundary reads the batches it would have read."""

    def order(epoch: int, global_seed: int) -> list[int]:
        torch.manual_seed(global_seed)
        data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=4, num_workers=0, image_size=8)
        data.setup("fit")
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return list(loader.sampler)

    first = order(epoch=1, global_seed=1)
    assert first == order(epoch=1, global_seed=2) and first != order(epoch=0, global_seed=1)
    assert sorted(first) == list(range(48))


def test_image_sizes_default_to_the_datas_resolution(image_folder: Path) -> None:
    """Views at the data's resolution (Fashion-MNIST's 28 px rounded up to 32); folders decode at 256 for 224 px
    views, the ImageNet convention, and in that proportion at other sizes."""
    sizes = {name: SelfSupDataModule(name).image_size for name in ("fashion_mnist", "cifar10", "cifar100", "stl10")}
    assert sizes == {"fashion_mnist": 32, "cifar10": 32, "cifar100": 32, "stl10": 96}
    folder = SelfSupDataModule("image_folder", root=str(image_folder))
    assert (folder.image_size, folder.folder_image_size) == (224, 256)
    small = SelfSupDataModule("image_folder", root=str(image_folder), image_size=112)
    assert (small.image_size, small.folder_image_size) == (112, 128)


def test_image_folder_batches_are_fixed_size_uint8(image_folder: Path) -> None:
    data = SelfSupDataModule("image_folder", root=str(image_folder), batch_size=4, num_workers=0, folder_image_size=16)
    data.setup("fit")
    assert data.num_classes == 2 and data.classes == ["blue", "red"]
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert len(data.val_dataloader()) == 2
