"""Packed datasets: an image folder decoded once into memory-mappable uint8 arrays, trained from memory.

`selfsup pack FOLDER --size S --out DIR` writes (see `selfsup.data.pack`):

    DIR/packed.json          format and version, the square size S, the class names, the images per split
    DIR/train/images.npy     (N, S, S, 3) uint8, in a fixed shuffled order, so every prefix and every
                             world_size-th shard mixes all classes
    DIR/train/labels.npy     (N,) int64, -1 for images that were not in a class folder
    DIR/val/...              the same for FOLDER/val, labelled by the training classes (when FOLDER has val/)

`--data.dataset packed --data.root DIR` then trains with no decoding at all; `selfsup.data.placement` decides
whether the arrays live on the GPU, sharded over the GPUs or in host memory.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from selfsup.atomic import write_text
from selfsup.data.datasets import IMAGENET_MEAN, IMAGENET_STD, Split
from selfsup.data.in_memory import InMemorySource
from selfsup.data.source import DataOptions
from selfsup.errors import ConfigurationError

FORMAT = "selfsup-packed"
VERSION = 1
MANIFEST = "packed.json"
PROGRESS = "pack_progress.json"  # present while a pack is under way or was interrupted
IMAGES, LABELS = "images.npy", "labels.npy"
TRAIN, VAL = "train", "val"


class PackedDataError(ConfigurationError):
    """A packed dataset that cannot be read: unfinished, truncated, of another format version or another size."""


def write_json(path: Path, content: object) -> None:
    """Write `path` whole or not at all (`selfsup.atomic`), so an interruption or a full disk never leaves half a
    file for the next run to misread, nor loses the previous one."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def load_array(path: Path, fix: str, mmap_mode: Literal["r", "r+", "c"] | None = None) -> np.ndarray:
    """The array of numbers in the .npy file `path` (memory-mapped with `mmap_mode`). Anything else there, a text
    file, pickled objects or a truncated array, is one line naming the file and `fix`: nothing is ever unpickled,
    and numpy's advice to allow it is not passed on."""
    try:
        with path.open("rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            dtype = read_header(file)[2]
    except OSError as error:
        raise PackedDataError(f"Cannot read {path} ({error.strerror or error}); {fix}.") from None
    except (ValueError, EOFError):
        raise PackedDataError(f"{path} is not a packed array (not a .npy file); {fix}.") from None
    if dtype.hasobject:
        raise PackedDataError(f"{path} is not a packed array (it holds Python objects); {fix}.")
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (OSError, ValueError, EOFError) as error:  # shorter than its header says
        raise PackedDataError(f"{path} is incomplete or truncated ({error}); {fix}.") from None


@dataclass(frozen=True)
class Manifest:
    """What a packed directory holds; written last by the packer, so its presence means the pack finished."""

    size: int
    classes: list[str]
    counts: dict[str, int]  # images per split ("train", and "val" if packed)
    source: str  # the folder it was packed from
    format: str = FORMAT
    version: int = VERSION

    def write(self, directory: Path) -> None:
        write_json(directory / MANIFEST, asdict(self))

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        """The manifest of a finished pack of this version; anything else is one line naming the fix."""
        repack = (
            "pack an image folder with `selfsup pack <image folder> --size <px> --out <new directory>` "
            "and point --data.root there"
        )
        if not directory.is_dir():
            raise PackedDataError(f"Packed dataset {directory} does not exist; {repack}, or fix --data.root.")
        path = directory / MANIFEST
        if not path.is_file():
            if (directory / PROGRESS).is_file():
                raise PackedDataError(
                    f"Packing into {directory} did not finish; rerun the same pack command to resume."
                )
            raise PackedDataError(f"{directory} is not a packed dataset (no {MANIFEST}); {repack}.")
        try:
            fields = json.loads(path.read_text())
            manifest = cls(**fields)
        except (ValueError, TypeError) as error:
            raise PackedDataError(f"{path} is damaged ({error}); {repack}.") from None
        if manifest.format != FORMAT or manifest.version != VERSION:
            raise PackedDataError(
                f"{directory} was packed in format {manifest.format} version {manifest.version}; this selfsup reads "
                f"{FORMAT} version {VERSION}. Repack the image folder with this version of selfsup."
            )
        return manifest


def open_split(directory: Path, manifest: Manifest, split: str) -> Split:
    """One split's arrays, memory-mapped (nothing is read yet) and checked against the manifest: a truncated or
    replaced file is an error here, not a crash in the middle of training."""
    count, size = manifest.counts[split], manifest.size
    repack = f"repack {manifest.source} into a new directory"
    images = load_array(directory / split / IMAGES, repack, mmap_mode="c")  # copy-on-write: torch never writes
    labels = load_array(directory / split / LABELS, repack)
    if images.shape != (count, size, size, 3) or images.dtype != np.uint8 or labels.shape != (count,):
        raise PackedDataError(
            f"{directory / split} holds images {images.shape} {images.dtype} and labels {labels.shape}, but "
            f"{MANIFEST} describes {count} images of {size} px; {repack}."
        )
    if count and not -1 <= labels.min() <= labels.max() < len(manifest.classes):
        raise PackedDataError(f"{directory / split / LABELS} holds labels outside its classes; {repack}.")
    return Split(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels.astype(np.int64)))


class PackedSource(InMemorySource):
    """A packed dataset (`selfsup pack`): memory-mapped uint8 arrays, placed on the GPU, sharded
    over GPUs or served from host memory (`selfsup.data.placement`). Its mean and std are ImageNet's, as for the
    image folders it was packed from."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD  # packed from image folders, which use ImageNet's statistics

    def __init__(self, options: DataOptions) -> None:
        super().__init__(options)
        root = self.require_root(options.root)
        self.manifest = Manifest.read(root)
        self.classes = self.manifest.classes
        self.num_classes = len(self.classes)
        self._splits = {split: open_split(root, self.manifest, split) for split in self.manifest.counts}

    @staticmethod
    def require_root(root: Path | None) -> Path:
        if root is None:
            raise PackedDataError("--data.dataset packed needs --data.root pointing at the packed directory.")
        return root

    @classmethod
    def resolve_sizes(
        cls, dataset: str, root: Path | None, image_size: int | None, folder_image_size: int | None
    ) -> tuple[int, int]:
        """Views at the packed size by default; the decoded size is the pack's, and asking for another is an error
        (a run resumed on a pack of another size would train on other pixels)."""
        root = cls.require_root(root)
        size = Manifest.read(root).size
        if folder_image_size is not None and folder_image_size != size:
            raise PackedDataError(
                f"{root} holds {size} px images, but the run asks for {folder_image_size} px "
                f"(--data.folder_image_size). Point --data.root at a {folder_image_size} px pack, or repack with "
                f"--size {folder_image_size}."
            )
        return size if image_size is None else image_size, size

    def read(self) -> tuple[Split, Split | None]:
        return self._splits[TRAIN], self._splits.get(VAL)
