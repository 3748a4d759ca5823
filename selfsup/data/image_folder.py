"""Image folders (ImageNet layout: one subfolder per class) read by CPU workers, augmented on the GPU.

Workers only read, decode, resize the shorter side and centre-crop to one fixed square size, so batches
are uint8 tensors of one shape; every random transform then runs on the GPU. The folder is scanned once
when the data module is built, so a missing path, an empty folder or a stray non-image file is reported
before any training starts.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, RandomSampler

from selfsup.data.device_loader import epoch_permutation
from selfsup.errors import ConfigurationError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageFolderError(ConfigurationError):
    pass


def scan_image_folder(directory: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """Return [(path, label)] and the class names. Images directly in `directory` are unlabelled (-1).

    With `classes` (the training folder's), labels are indices into that list, so a validation folder that
    lacks some classes keeps the training labels; a class folder not in the list is an error.
    """
    if not directory.is_dir():
        raise ImageFolderError(f"Image folder {directory} does not exist or is not a directory. Fix --data.root.")
    found = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ImageFolderError(
            f"{directory} has class folder(s) {unknown} that the training folder does not have; its classes are "
            f"{classes}. Rename or remove those folders so that both use the same class names."
        )
    samples: list[tuple[Path, int]] = []
    others: list[Path] = []

    def collect(files: list[Path], label: int) -> None:
        for path in files:
            if path.name.startswith("."):
                continue
            (samples if path.suffix.lower() in IMAGE_EXTENSIONS else others).append((path, label))

    collect(sorted(p for p in directory.iterdir() if p.is_file()), -1)
    for name in found:
        collect(sorted(p for p in (directory / name).rglob("*") if p.is_file()), classes.index(name))
    if others:
        shown = ", ".join(str(path) for path, _ in others[:5])
        raise ImageFolderError(
            f"{len(others)} non-image file(s) in {directory}, for example {shown}. Image folders may hold only "
            f"images ({', '.join(sorted(IMAGE_EXTENSIONS))}); move the other files out."
        )
    if not samples:
        raise ImageFolderError(
            f"No images in {directory}. Expected {directory}/<class>/<image> (or images directly in it); "
            "fix --data.root."
        )
    return samples, classes


def load_square(path: Path, size: int) -> Tensor:
    """Decode an image to RGB, resize its shorter side to `size` and centre-crop: (3, size, size) uint8."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            scale = size / min(width, height)
            image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
            left, top = (image.width - size) // 2, (image.height - size) // 2
            image = image.crop((left, top, left + size, top + size))
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise ImageFolderError(f"Cannot decode image {path} ({error}); remove or replace the file.") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class EpochShuffle(RandomSampler):
    """DataLoader's shuffle, drawn from (seed, epoch) instead of the global random state, so a resumed run reads
    the batches an uninterrupted one would. Lightning calls `set_epoch`; under DDP it replaces this sampler (a
    RandomSampler) by a DistributedSampler, which is seeded per epoch the same way."""

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        yield from epoch_permutation(len(self.data_source), self.seed, self.epoch).tolist()


class EvaluationShard(DistributedSampler):
    """One rank's share of an evaluation set, dealt like `ShardedBatchSampler` deals device-resident data: every
    world_size-th index from the rank on, padded with -1 (a blank image labelled -1: never a kNN neighbour, never
    scored) so that ranks run equal batches and nothing is counted twice. A DistributedSampler, so that
    Lightning keeps it rather than substituting one that repeats samples."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        padded = list(range(len(self.dataset))) + [-1] * (self.total_size - len(self.dataset))
        yield from padded[self.rank : self.total_size : self.num_replicas]


class ImageFolderDataset(Dataset):
    """(uint8 image (3, size, size), label) pairs from a scanned folder; index -1 is padding (blank, label -1)."""

    def __init__(self, samples: list[tuple[Path, int]], size: int) -> None:
        self.samples = samples
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if index < 0:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), -1
        path, label = self.samples[index]
        return load_square(path, self.size), label
