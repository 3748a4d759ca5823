"""The values a method takes from the data it trains on: the batch size its learning rate scales with, the image
size of its views, the class count of its monitors and the normalisation of its inputs.

A method's `batch_size`, `image_size`, `num_classes`, `image_mean` and `image_std` default to None, "from the
data", and `Method.setup` fills them in from what the data says (`DataValues`):

- an attached `SelfSupDataModule` says all five (`selfsup fit` links the same values into the method);
- any other loader (a DataLoader over a torchvision dataset, a TensorDataset, ...) says
  - batch size: the number of images in its first batch (per device, as the data module's);
  - image size: the shorter side of the first batch's images rounded up to a multiple of 8, since the small-image
    ResNet stem halves the resolution three times (Fashion-MNIST's 28 px give 32 px views, as the built-in
    Fashion-MNIST does; 32, 96 and 224 px stay as they are);
  - classes: the length of the dataset's `classes` (torchvision's datasets and ImageFolder), else its largest
    label + 1 (`targets`, `labels`, or a TensorDataset's second tensor); nothing otherwise;
  - mean and std per channel: over the whole dataset where it holds its images as one uint8 array (a
    TensorDataset; torchvision's MNIST, Fashion-MNIST, CIFAR, STL-10, SVHN), which gives the built-in datasets'
    statistics exactly; else over its first 1,024 or more images, within about 0.01 of the whole dataset's.

An explicit value must agree with what the data says for certain (`resolve` raises otherwise): the batch size
with the loader's, the class count with the dataset's `classes` (and at least its largest label + 1), and every
value with an attached data module's. An explicit image size or normalisation with any other loader is the
user's choice: views are resized from images of any size.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import Subset, TensorDataset

from selfsup.data.batches import check_images, images_and_labels
from selfsup.data.datamodule import SelfSupDataModule
from selfsup.errors import ConfigurationError

# data module attribute -> the method argument it sets; `selfsup fit` links them, `Method.setup` reads them
DATA_TO_MODEL = {
    "batch_size": "batch_size",
    "image_size": "image_size",
    "num_classes": "num_classes",
    "mean": "image_mean",
    "std": "image_std",
}
FROM_DATA = tuple(DATA_TO_MODEL.values())  # the method arguments that default to "from the data"
VIEW_SIZE_MULTIPLE = 8  # the small-image ResNet stem halves the resolution three times
STATISTICS_IMAGES = 1024  # images the normalisation is estimated from when the dataset is not one array
CHUNK = 4096  # images summed at a time (float64 sums of a whole dataset would take gigabytes)


@dataclass(frozen=True)
class DataValues:
    """What the data says about the values in `FROM_DATA` (None: nothing), and how certain it is.

    `binding` names the values an explicit argument must equal; the others are defaults only. `fewest_classes`
    is the largest label + 1 known without a dataset's `classes`: an explicit class count below it is an error.
    """

    source: str  # the data as errors name it: "the data module", "the training loader"
    batch_size: int | None = None
    image_size: int | None = None
    num_classes: int | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    binding: frozenset[str] = field(default_factory=frozenset)
    fewest_classes: int = 0

    @classmethod
    def of_datamodule(cls, datamodule: Any) -> "DataValues":
        """Every value of a `SelfSupDataModule`, all binding."""
        values = {argument: getattr(datamodule, attribute) for attribute, argument in DATA_TO_MODEL.items()}
        values["image_mean"], values["image_std"] = tuple(values["image_mean"]), tuple(values["image_std"])
        return cls("the data module", **values, binding=frozenset(FROM_DATA))

    @classmethod
    def of_loader(cls, loader: Iterable, source: str, statistics: bool = True) -> "DataValues":
        """What `loader` (any iterable of batches) says, from its first batches and its dataset; `statistics`:
        also the mean and std (which may read more batches). The global random state is left as it was, so a
        shuffled loader deals the run the same batches as without this look."""
        dataset = getattr(loader, "dataset", None)
        array = _dataset_images(dataset) if statistics else None
        wanted = STATISTICS_IMAGES if statistics and array is None else 1
        batches = _first_images(loader, wanted, source)
        if not batches:
            return cls(source)
        first = batches[0]
        num_classes, exact = _class_count(dataset)
        mean, std = _channel_statistics([array] if array is not None else batches) if statistics else (None, None)
        return cls(
            source,
            batch_size=first.shape[0],
            image_size=math.ceil(min(first.shape[-2:]) / VIEW_SIZE_MULTIPLE) * VIEW_SIZE_MULTIPLE,
            num_classes=num_classes,
            image_mean=mean,
            image_std=std,
            binding=frozenset({"batch_size", "num_classes"} if exact else {"batch_size"}),
            fewest_classes=0 if exact or num_classes is None else num_classes,
        )


def data_values(trainer: pl.Trainer, stage: str, statistics: bool) -> DataValues:
    """What the data of `trainer`'s stage says, asked in `setup`: the attached SelfSupDataModule's values, or those
    of the loader the stage runs on (Lightning's own, sharded under DDP; its batch size only where it trains).
    `statistics`: also estimate the mean and std."""
    if isinstance(trainer.datamodule, SelfSupDataModule):
        return DataValues.of_datamodule(trainer.datamodule)
    if stage == "fit":
        trainer.fit_loop.setup_data()  # what Lightning does itself before the first batch
        loader = trainer.train_dataloader
        if loader is None:
            return DataValues("the training loader")
        return DataValues.of_loader(loader, "the training loader", statistics)
    if stage == "validate":
        trainer.validate_loop.setup_data()
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) and loaders else loaders
        if loader is not None:
            found = DataValues.of_loader(loader, "validation loader 0", statistics)
            return replace(found, batch_size=None, binding=found.binding - {"batch_size"})
    return DataValues(f"the {stage} data")


def resolve(given: Mapping[str, Any], data: DataValues) -> dict[str, Any]:
    """The values of `FROM_DATA`: each explicit one in `given` (checked against `data`), the data's where `given`
    holds None. A value neither gives stays None. A class count below 2 turns the monitors off on purpose, which
    no data contradicts."""
    resolved = {}
    for name in FROM_DATA:
        explicit, found = given[name], getattr(data, name)
        deliberately_off = name == "num_classes" and explicit is not None and explicit < 2
        checked = explicit is not None and found is not None and name in data.binding and not deliberately_off
        if checked and not _same(explicit, found):
            raise ConfigurationError(_contradiction(name, explicit, found, data.source))
        resolved[name] = found if explicit is None else explicit
    count = given["num_classes"]
    if count is not None and 2 <= count < data.fewest_classes:
        raise ConfigurationError(
            f"num_classes={count} contradicts {data.source}, whose dataset has labels up to {data.fewest_classes - 1}."
            f" Leave num_classes unset (None) to take it from the data, or set at least {data.fewest_classes}."
        )
    return resolved


def _contradiction(name: str, explicit: Any, found: Any, source: str) -> str:
    fix = f"Leave {name} unset (None) to take it from the data, or make the two agree."
    if name == "batch_size":
        return (
            f"batch_size={explicit} contradicts {source}, which deals batches of {found} images; the learning rate "
            f"scales with the batch (base_lr x global batch / 256). {fix}"
        )
    return f"{name}={_shown(explicit)} contradicts {source}, which gives {_shown(found)}. {fix}"


def _shown(value: Any) -> str:
    return str(tuple(value)) if isinstance(value, Sequence) else str(value)


def _same(explicit: Any, found: Any) -> bool:
    if isinstance(found, Sequence):
        return len(explicit) == len(found) and all(
            math.isclose(a, b, abs_tol=1e-6) for a, b in zip(explicit, found, strict=True)
        )
    return explicit == found


def _first_images(loader: Iterable, wanted: int, source: str) -> list[Tensor]:
    """The images of the first batches of `loader`, on the host, until `wanted` images (or the loader's end)."""
    images: list[Tensor] = []
    with torch.random.fork_rng(devices=[]):
        iterator = iter(loader)
        for batch in iterator:
            batch_images, _ = images_and_labels(batch, source)
            check_images(batch_images, source)
            images.append(batch_images.cpu())
            if sum(len(batch_images) for batch_images in images) >= wanted:
                break
        del iterator  # a DataLoader's workers stop here, not at the next garbage collection
    return images


def _dataset_images(dataset: Any) -> Tensor | None:
    """The dataset's images as one uint8 (N, C, H, W) tensor (a view, no copy), where it holds them as one array."""
    array = dataset.tensors[0] if isinstance(dataset, TensorDataset) else getattr(dataset, "data", None)
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(array)
    if not isinstance(array, Tensor) or array.dtype != torch.uint8:
        return None
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return array
    if array.ndim == 4 and array.shape[3] in (1, 3):  # CIFAR's (N, H, W, C)
        return array.permute(0, 3, 1, 2)
    return None


def _class_count(dataset: Any) -> tuple[int | None, bool]:
    """(class count, whether it is the dataset's own `classes`) or (None, False) where the dataset says nothing."""
    if isinstance(dataset, Subset):  # random_split: the classes are the whole dataset's
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, Sequence) and not isinstance(classes, str) and len(classes):
        return len(classes), True
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1] if len(dataset.tensors) > 1 else None
    else:
        labels = next((getattr(dataset, name) for name in ("targets", "labels") if hasattr(dataset, name)), None)
    if labels is None:
        return None, False
    labels = torch.as_tensor(np.asarray(labels))
    if labels.ndim != 1 or labels.numel() == 0 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        return None, False
    return int(labels.max()) + 1, False


def _channel_statistics(arrays: list[Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (over all pixels) of images in [0, 1] units, rounded to 4 decimals
    as the built-in datasets' are; grey images give three equal channels, as the methods repeat them."""
    channels = max(array.shape[1] for array in arrays)  # a grey batch among colour ones counts as colour
    total = torch.zeros(channels, dtype=torch.float64)
    squares, count = torch.zeros_like(total), 0
    for array in arrays:
        scale = 255.0 if array.dtype == torch.uint8 else 1.0
        for chunk in array.split(CHUNK):
            values = chunk.to(torch.float64).expand(-1, channels, -1, -1) / scale
            total += values.sum(dim=(0, 2, 3))
            squares += values.square().sum(dim=(0, 2, 3))
            count += values[:, 0].numel()
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=0).sqrt()
    mean, std = (tuple(round(float(v), 4) for v in values.expand(3)) for values in (mean, std))
    return mean, std
