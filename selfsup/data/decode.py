"""Decoding one image file to a fixed-size uint8 square: what DataLoader workers do for image folders, and what
the packer does once per image for packed datasets, so both train on the same pixels.

The shorter side is resized to the square's side and the centre is cropped (as torchvision's Resize +
CenterCrop do). A JPEG at least twice the target
size is first decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (Pillow's `Image.draft`): the decoder
skips the high frequencies the downscale would remove anyway, which is much cheaper than decoding every pixel
and averaging them away afterwards. The result differs from a full decode by a few grey levels.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from selfsup.errors import ConfigurationError


class UnreadableImageError(ConfigurationError):
    pass


def decode_square(path: Path, size: int, draft: bool = True) -> np.ndarray:
    """The image at `path` as RGB, its shorter side resized to `size` and centre-cropped: (size, size, 3) uint8.

    Only the centre square is resampled (Pillow's resize of a source box), which equals resizing the whole image
    and cropping it up to rounding, with a third fewer pixels to compute for a 4:3 image. `draft=False` decodes
    every pixel first: the slower reference the draft decode is checked against.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            scale = size / min(width, height)
            resized = (max(size, round(width * scale)), max(size, round(height * scale)))
            left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
            if draft:
                image.draft("RGB", resized)  # JPEG only (a no-op otherwise); never smaller than `resized`
            if image.mode != "RGB":
                image = image.convert("RGB")
            x_scale, y_scale = image.width / resized[0], image.height / resized[1]  # source px per resized px
            box = (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)
            return np.array(image.resize((size, size), Image.BILINEAR, box=box), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"Cannot decode image {path} ({error}); remove or replace the file.") from error
