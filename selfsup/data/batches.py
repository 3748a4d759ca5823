"""The batch contract: what a method takes from any data loader, and its check at the first batch of each loader.

A batch is images alone, `(images, labels)`, or a mapping with an image key ("image" or "images") and optionally a
label key ("label", "labels", "target" or "targets"), as Hugging Face datasets and dictionary collates deal them.
Images are channels first, (batch, 1 or 3, height, width): uint8 in [0, 255], or floating point in [0, 1]. Labels
are integers, one per image, each in [0, num_classes) or -1 where unknown; images alone have unknown labels. Every
batch is brought into the `(images, labels)` form (`images_and_labels`, a few Python operations); its values are
checked once per loader (`check_batch`), because that reads the whole batch and, on a GPU, waits for it.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from selfsup.errors import ConfigurationError

IMAGE_KEYS = ("image", "images")
LABEL_KEYS = ("label", "labels", "target", "targets")
UNKNOWN_LABEL = -1
ACCEPTED_FORMS = (
    "images alone, (images, labels), or a mapping with an 'image' or 'images' key and optionally a 'label', "
    "'labels', 'target' or 'targets' key"
)
CHANNELS_FIRST = "channels first, (batch, 1 or 3, height, width)"
CONVERT_HINT = (
    "selfsup.data.to_uint8_tensor as the dataset's transform (or selfsup.data.collate_images as the collate_fn)"
)


def images_and_labels(batch: Any, loader: str) -> tuple[Tensor, Tensor]:
    """`batch` in the `(images, labels)` form, labels -1 where the batch has none; `loader` names the loader in
    errors ("the training loader")."""
    if isinstance(batch, Mapping):
        return _from_mapping(batch, loader)
    if isinstance(batch, list | tuple):
        if len(batch) == 1:
            return _images(batch[0], loader), _unknown_labels(batch[0])
        if len(batch) == 2:
            return _images(batch[0], loader), batch[1]
        raise ConfigurationError(
            f"A batch of {loader} is a {type(batch).__name__} of {len(batch)} items; expected {ACCEPTED_FORMS}. "
            "Make the dataset return (image, label) or the image alone."
        )
    return _images(batch, loader), _unknown_labels(batch)


def _from_mapping(batch: Mapping, loader: str) -> tuple[Tensor, Tensor]:
    image_key = next((key for key in IMAGE_KEYS if key in batch), None)
    if image_key is None:
        raise ConfigurationError(
            f"A batch of {loader} is a mapping with keys {sorted(map(str, batch))}; expected {ACCEPTED_FORMS}. "
            "Rename its image key to 'image'."
        )
    images = _images(batch[image_key], loader)
    label_key = next((key for key in LABEL_KEYS if key in batch), None)
    return images, batch[label_key] if label_key is not None else _unknown_labels(images)


def _images(images: Any, loader: str) -> Tensor:
    if not isinstance(images, Tensor):
        raise ConfigurationError(
            f"The images of {loader} are a {type(images).__name__}, not a tensor; expected {ACCEPTED_FORMS}, with "
            f"images as one tensor. Use {CONVERT_HINT}."
        )
    return images


def _unknown_labels(images: Any) -> Tensor:
    count = images.shape[0] if isinstance(images, Tensor) and images.ndim else 0
    device = images.device if isinstance(images, Tensor) else None
    return torch.full((count,), UNKNOWN_LABEL, dtype=torch.long, device=device)


def check_batch(images: Tensor, labels: Any, num_classes: int | None, loader: str) -> None:
    """Raise a `ConfigurationError` that says what was expected where `images` or `labels` break the contract;
    labels are checked against `num_classes` when it is given (None: the classes are not known yet)."""
    check_images(images, loader)
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        kind = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ConfigurationError(
            f"The labels of {loader} are {kind}; expected a tensor of integer class indices, one per image (-1 where "
            "unknown)."
        )
    if labels.shape != images.shape[:1]:
        raise ConfigurationError(
            f"The labels of {loader} have shape {tuple(labels.shape)}; expected one class index per image, shape "
            f"({images.shape[0]},). One-hot labels become indices with labels.argmax(dim=1)."
        )
    if num_classes is None or num_classes < 2 or labels.numel() == 0:  # no classes: labels serve no monitor
        return
    low, high = int(labels.min()), int(labels.max())
    if low < UNKNOWN_LABEL or high >= num_classes:
        wrong = low if low < UNKNOWN_LABEL else high
        raise ConfigurationError(
            f"The labels of {loader} include {wrong}, but labels must lie in [0, num_classes) = [0, {num_classes}) "
            f"or be -1 (unknown). Set num_classes to the number of classes (at least {max(high + 1, 2)}), or mark "
            "unlabelled images with -1."
        )


def check_images(images: Tensor, loader: str) -> None:
    """The image half of `check_batch`: layout, channels, type and range."""
    shape = tuple(images.shape)
    if images.ndim != 4:
        hint = " Add the channel axis with images.unsqueeze(1)." if images.ndim == 3 else ""
        raise ConfigurationError(f"The images of {loader} have shape {shape}; expected {CHANNELS_FIRST}.{hint}")
    if shape[1] not in (1, 3):
        if shape[3] in (1, 3):
            raise ConfigurationError(
                f"The images of {loader} have shape {shape}, channels last; expected {CHANNELS_FIRST}. Permute them "
                f"with images.permute(0, 3, 1, 2), or use {CONVERT_HINT}."
            )
        raise ConfigurationError(
            f"The images of {loader} have shape {shape}, {shape[1]} channels; expected {CHANNELS_FIRST}. Convert "
            f"them to grey or RGB, e.g. with {CONVERT_HINT}."
        )
    if images.dtype == torch.uint8:
        return
    if not images.dtype.is_floating_point:
        raise ConfigurationError(
            f"The images of {loader} are {images.dtype}; expected uint8 images in [0, 255] or float images in [0, 1]. "
            "Convert them with images.to(torch.uint8) if they hold 0..255."
        )
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):  # NaN fails too
        low, high = float(images.min()), float(images.max())
        hint = (
            "Divide them by 255, or pass uint8 images" if high > 1 else "Pass them unnormalised (the method normalises)"
        )
        raise ConfigurationError(
            f"The images of {loader} are {images.dtype} with values in [{low:g}, {high:g}]; expected uint8 images "
            f"in [0, 255] or float images in [0, 1]. {hint}."
        )
