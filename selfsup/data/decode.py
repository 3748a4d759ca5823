"""Decoding one image file to a fixed-size uint8 square: what DataLoader workers do for image folders, and what
the packer does once per image for packed datasets, so both train on the same pixels.

Every image mode Pillow has becomes the 8-bit RGB an image viewer shows for it (`viewer_rgb`), never a clipped
or reinterpreted one (Pillow's own `convert("RGB")` clips 16-bit samples to 255, so 16-bit PNGs come out almost
white, and reads L*a*b* bytes as if they were RGB). The pixels are taken as stored: EXIF orientation and embedded
ICC profiles are not applied, as in torchvision's ImageFolder.

- samples wider than 8 bits are scaled from their range: 16-bit (I;16 and its byte orders) by 255/65535. Pillow
  opens 16-bit PGM/PPM and 16-bit signed TIFFs as 32-bit `I`, so an `I` image whose values all lie in
  0..65535 is read as 16-bit too; one with larger values is scaled from 0..2**31-1, the positive range of its
  type. Negative values (signed samples) are black;
- floating-point `F` samples are intensities in [0, 1] (clipped; NaN is black), as float TIFFs store them;
- transparent pixels are shown over white, as browsers and document viewers show them: transparency mostly
  comes with logos, icons, line art and product cut-outs drawn for a white page, whose dark strokes would
  vanish over black. Pillow's premultiplied modes (La, RGBa) are unpremultiplied first;
- palettes through their palette, bilevel, CMYK, YCbCr and HSV by Pillow's conversions; CIE L*a*b* (D50, as
  in ICC profiles and Photoshop's Lab) to sRGB by Pillow's colour management (LittleCMS), unoptimized: its
  default 8-bit lookup table is off by up to 40 grey levels next to the gamut's edge.

The shorter side is then resized to the square's side and the centre is cropped (as torchvision's Resize +
CenterCrop do). A JPEG at least twice the target size is first decoded at 1/2, 1/4 or 1/8 of its size in the
DCT domain (Pillow's `Image.draft`): the decoder skips the high frequencies the downscale would remove anyway,
which is much cheaper than decoding every pixel and averaging them away afterwards. The result differs from a
full decode by a few grey levels.
"""

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from selfsup.errors import ConfigurationError

BACKGROUND = (255, 255, 255)  # what transparent pixels are shown over (see the module docstring)
WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_TOP = 2**16 - 1
INT32_TOP = 2**31 - 1
UNPREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}  # Pillow converts La only into LA


class UnreadableImageError(ConfigurationError):
    """An image file that does not decode; the message names the file."""


def _to_8bit(values: np.ndarray, top: float) -> np.ndarray:
    """Samples in 0..`top` to the nearest of the levels 0..255; below 0 and NaN are black, above `top` white."""
    scaled = np.nan_to_num(values.astype(np.float32), nan=0.0).clip(0, top) * np.float32(255 / top)
    return np.rint(scaled).astype(np.uint8)


def _wide_grey(image: Image.Image) -> Image.Image:
    """A grey image of samples wider than 8 bits (I, I;16..., F) as L, or as LA where the file names a transparent
    value (a 16-bit PNG's tRNS chunk), which Pillow's conversions of these modes ignore."""
    values = np.asarray(image)
    if image.mode == "F":
        top = 1.0
    elif values.min() >= 0 and values.max() <= SIXTEEN_BIT_TOP:
        top = SIXTEEN_BIT_TOP
    else:
        top = INT32_TOP
    grey = Image.fromarray(_to_8bit(values, top))
    key = image.info.get("transparency")
    if key is None:
        return grey
    return Image.merge("LA", [grey, Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8))])


@cache
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")  # LAB: D50 white
    return ImageCms.buildTransform(lab, srgb, "LAB", "RGB", flags=ImageCms.Flags.NOOPTIMIZE)


def viewer_rgb(image: Image.Image) -> Image.Image:
    """`image`, of any mode, as the 8-bit RGB image an image viewer shows (see the module docstring)."""
    if image.mode in WIDE_INTEGER_MODES or image.mode == "F":
        image = _wide_grey(image)
    elif image.mode == "LAB":
        return ImageCms.applyTransform(image, _lab_to_srgb())
    image = image.convert(UNPREMULTIPLIED[image.mode]) if image.mode in UNPREMULTIPLIED else image
    if not image.has_transparency_data:
        return image if image.mode == "RGB" else image.convert("RGB")
    background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


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
            image = viewer_rgb(image)
            x_scale, y_scale = image.width / resized[0], image.height / resized[1]  # source px per resized px
            box = (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)
            return np.array(image.resize((size, size), Image.BILINEAR, box=box), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"Cannot decode image {path} ({error}); remove or replace the file.") from error
