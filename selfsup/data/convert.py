"""PIL images and numpy arrays to the uint8 batches the methods take, for torchvision-style datasets.

A torchvision dataset deals PIL images (or numpy arrays), which PyTorch's default collate cannot stack. Either give
the dataset `to_uint8_tensor` as its transform, or give the loader `collate_images` as its collate_fn::

    data = torchvision.datasets.FashionMNIST(root, transform=selfsup.data.to_uint8_tensor)
    loader = DataLoader(data, batch_size=256, shuffle=True, drop_last=True, num_workers=4)
    pl.Trainer(max_epochs=100).fit(selfsup.methods.SimCLR(), loader)

Grey images (PIL mode L, numpy (H, W) or (H, W, 1)) stay one channel, the methods repeat it; every other PIL
mode becomes the 8-bit RGB an image viewer shows (`selfsup.data.decode.viewer_rgb`: 16-bit and float samples
scaled, transparency over white, palettes resolved). Pixels are not resized: the images of one batch must share
a size (a `torchvision.transforms.Resize` or `RandomResizedCrop` before this transform gives them one). The
method's own augmentation does the rest on the device.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from selfsup.data.batches import UNKNOWN_LABEL
from selfsup.data.decode import viewer_rgb
from selfsup.errors import ConfigurationError


def to_uint8_tensor(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """One image as a uint8 (channels, height, width) tensor, 1 channel for grey images and 3 for all others.

    PIL images of any mode; numpy uint8 arrays (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (RGBA: shown over white),
    the layout PIL and OpenCV use (OpenCV's BGR order is not detected); tensors already uint8 (C, H, W) pass as
    they are.
    """
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ConfigurationError(
                f"to_uint8_tensor takes tensors that are uint8 (channels, height, width) already; got {image.dtype} "
                f"of shape {tuple(image.shape)}. Give it the PIL image or numpy array instead."
            )
        return image
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, Image.Image):
        if image.mode == "L":
            return torch.from_numpy(np.array(image, dtype=np.uint8))[None]
        return torch.from_numpy(np.array(viewer_rgb(image), dtype=np.uint8)).permute(2, 0, 1).contiguous()
    raise ConfigurationError(
        f"to_uint8_tensor takes a PIL image, a numpy array or a tensor; got {type(image).__name__}."
    )


def _from_array(array: np.ndarray) -> Tensor:
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ConfigurationError(
            f"to_uint8_tensor takes numpy images as uint8 (height, width) or (height, width, 1, 3 or 4 channels); "
            f"got {array.dtype} of shape {array.shape}. Scale float images in [0, 1] with "
            "(array * 255).round().astype(np.uint8); move a leading channel axis last with array.transpose(1, 2, 0)."
        )
    if array.ndim == 2:
        return torch.from_numpy(array.copy())[None]
    if array.shape[2] == 4:
        return to_uint8_tensor(Image.fromarray(array, "RGBA"))
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def collate_images(samples: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """A DataLoader collate_fn: samples of (image, label), or images alone, to (uint8 images (B, C, H, W), int64
    labels (B,)), each image converted by `to_uint8_tensor`; labels -1 where samples have none. A batch mixing grey
    and colour images has every image in colour."""
    pairs = [_image_and_label(sample) for sample in samples]
    images = [to_uint8_tensor(image) for image, _ in pairs]
    sizes = sorted({tuple(image.shape[1:]) for image in images})
    if len(sizes) > 1:
        raise ConfigurationError(
            f"The images of one batch have different sizes {sizes} (height, width); give them one, e.g. with "
            "torchvision.transforms.Resize((size, size)) or RandomResizedCrop(size) as the dataset's transform."
        )
    if len({image.shape[0] for image in images}) > 1:
        images = [image.expand(3, -1, -1) for image in images]
    labels = torch.as_tensor([int(label) for _, label in pairs], dtype=torch.long)
    return torch.stack(images), labels


def _image_and_label(sample: Any) -> tuple[Any, Any]:
    """(image, label) of a sample that is (image, label, ...), (image,) or an image; label -1 where there is none."""
    if isinstance(sample, tuple | list):
        label = sample[1] if len(sample) > 1 and sample[1] is not None else UNKNOWN_LABEL
        return sample[0], label
    return sample, UNKNOWN_LABEL
