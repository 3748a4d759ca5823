"""Image folders (ImageNet layout: one subfolder per class) read by CPU workers, augmented on the GPU.

Workers only read and decode to one fixed square size (`selfsup.data.decode`), so batches are uint8 tensors
of one shape; every random transform then runs on the GPU. The folder is scanned once when the data module is
built, so a missing path, an empty folder or a stray non-image file is reported before any training starts.
"""

from collections.abc import Iterator
from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from selfsup.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from selfsup.data.decode import decode_square
from selfsup.data.device_loader import epoch_permutation
from selfsup.data.source import DataOptions, DataSource, Shard, holdout_rows
from selfsup.errors import ConfigurationError

FOLDER_IMAGE_SIZE = 224  # the default view size of image folders (ImageNet's)
FOLDER_DECODE_RATIO = 256 / 224  # folders decode to 256 px squares for 224 px views, as ImageNet pipelines do

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageFolderError(ConfigurationError):
    """An image folder that cannot train: missing, empty, or with class folders the training folder lacks."""


def scan_image_folder(
    directory: Path, classes: list[str] | None = None, fix: str = "fix --data.root"
) -> tuple[list[tuple[Path, int]], list[str]]:
    """Return [(path, label)] and the class names. Images directly in `directory` are unlabelled (-1).

    With `classes` (the training folder's), labels are indices into that list, so a validation folder that
    lacks some classes keeps the training labels; a class folder not in the list is an error. `fix` ends the
    message of a missing or empty folder.
    """
    if not directory.is_dir():
        raise ImageFolderError(f"Image folder {directory} does not exist or is not a directory; {fix}.")
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
            f"No images in {directory}. Expected {directory}/<class>/<image> (or images directly in it); {fix}."
        )
    return samples, classes


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
        return torch.from_numpy(decode_square(path, self.size)).permute(2, 0, 1), label


def train_and_val_folders(root: Path) -> tuple[Path, Path | None]:
    """ROOT/train and ROOT/val when ROOT has a train/ folder; else ROOT itself and no validation folder."""
    if (root / "train").is_dir():
        return root / "train", (root / "val" if (root / "val").is_dir() else None)
    return root, None


class ImageFolderSource(DataSource):
    """Training samples and classes from ROOT/train (or ROOT), validation samples from ROOT/val labelled by the
    training classes. With fewer than 2 classes there is nothing to score: no kNN monitor, no probe."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, options: DataOptions) -> None:
        if options.root is None:
            raise ConfigurationError("--data.dataset image_folder needs --data.root pointing at the image folder.")
        if options.placement != "auto":
            raise ConfigurationError(
                f"--data.placement {options.placement} places packed and built-in datasets; image folders are read "
                "by DataLoader workers. Pack the folder first (selfsup pack), or omit the option."
            )
        self.options = options
        train_dir, val_dir = train_and_val_folders(options.root)
        train, self.classes = scan_image_folder(train_dir)
        self.train_samples = train[: options.max_samples]
        if options.holdout:  # the held-out training images replace val/ in evaluation
            labels = torch.tensor([label for _, label in self.train_samples], dtype=torch.long)
            kept, held = holdout_rows(labels, options.holdout)
            self.val_samples = [self.train_samples[row] for row in held.tolist()]
            self.train_samples = [self.train_samples[row] for row in kept.tolist()]
        else:
            val = scan_image_folder(val_dir, self.classes)[0] if val_dir is not None else []
            self.val_samples = val[: options.max_samples]
        self.num_classes = len(self.classes)
        if self.num_classes < 2:
            rank_zero_info(
                f"Note: {train_dir} has {self.num_classes} class folder(s); training without the kNN monitor and "
                "the online probe, which need labels of at least 2 classes."
            )

    @classmethod
    def resolve_sizes(
        cls, dataset: str, root: Path | None, image_size: int | None, folder_image_size: int | None
    ) -> tuple[int, int]:
        """224 px views decoded from 256 px squares by default (the ImageNet convention), in that proportion."""
        image_size = FOLDER_IMAGE_SIZE if image_size is None else image_size
        return image_size, round(image_size * FOLDER_DECODE_RATIO) if folder_image_size is None else folder_image_size

    def setup(self, shard: Shard) -> None:
        """Nothing to read ahead: workers decode each batch (the folder was scanned when the source was built)."""

    def num_train(self) -> int:
        return len(self.train_samples)

    def train_loader(self, batch_size: int, shard: Shard, resume: dict[str, int] | None) -> DataLoader:
        """The whole folder, shuffled (Lightning shards it under DDP); a mid-epoch checkpoint restarts its epoch."""
        dataset = ImageFolderDataset(self.train_samples, self.options.folder_image_size)
        return self._loader(dataset, batch_size, EpochShuffle(dataset, shard.seed), train=True)

    def evaluation_loaders(self, batch_size: int, rank: int, world_size: int) -> list:
        labelled = [sample for sample in self.train_samples if sample[1] >= 0]
        if self.num_classes < 2 or not labelled or not self.val_samples:
            return []
        datasets = [
            ImageFolderDataset(samples, self.options.folder_image_size) for samples in (labelled, self.val_samples)
        ]
        return [
            self._loader(data, batch_size, EvaluationShard(data, rank, world_size), train=False) for data in datasets
        ]

    def _loader(
        self, dataset: Dataset, batch_size: int, sampler: RandomSampler | DistributedSampler, train: bool
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.options.num_workers,
            pin_memory=torch.cuda.is_available(),
            # the training loader keeps its workers from epoch to epoch; a validation or evaluation pass stops its own
            # at its end (workers left running with a loader that is garbage collected cost 5 s each to stop)
            persistent_workers=train and self.options.num_workers > 0,
        )
