"""Every image mode Pillow has decodes to the RGB an image viewer shows, checked against each mode's definition
written out in float64 numpy, on images stored in a file format that holds the mode (in memory where none does).
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.data.decode import decode_square, viewer_rgb

SIDE = 8  # square samples decoded at their own size: the resize is the identity, the pixels are the conversion's
WHITE = 255.0  # transparent pixels are shown over white
KEY = 0  # the transparent value of the images that name one (PNG's tRNS chunk), present in their first row


def sample(mode: str, rng: np.random.Generator) -> Image.Image:
    """A SIDE x SIDE image of random samples over the mode's whole range (out of range for F; never premultiplied
    colour above its alpha)."""
    shape = (SIDE, SIDE)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        values = rng.integers(0, 2**16, shape, dtype=np.uint16)
        values.flat[:2] = 0, 2**16 - 1
        return Image.fromarray(values).convert(mode)
    if mode == "I":  # beyond 16 bits, and negative
        return Image.fromarray(rng.integers(-(2**20), 2**31 - 1, shape, dtype=np.int32))
    if mode == "F":
        values = rng.uniform(-0.2, 1.2, shape).astype(np.float32)
        values.flat[0] = np.nan
        return Image.fromarray(values)
    pixels = rng.integers(0, 256, (*shape, Image.getmodebands(mode)), dtype=np.uint8)
    if mode in ("La", "RGBa"):
        pixels[..., :-1] = pixels[..., :-1] * (pixels[..., -1:] / 255.0)  # premultiplied: colour <= alpha
    if mode == "P":
        pixels[0] = KEY
    image = Image.frombytes(mode, (SIDE, SIDE), pixels.tobytes())
    if mode in ("P", "PA"):
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return image


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight (unpremultiplied) colour composited over white: a C + (1 - a) W, a in [0, 1]."""
    a = alpha[..., None] / 255.0
    return a * colour + (1 - a) * WHITE


def grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None].astype(np.float64), 3, axis=-1)


def reference_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) float64 in [0, 255]: the viewer's RGB from the mode's definition, from the image's stored samples."""
    mode, values = image.mode, np.asarray(image).astype(np.float64)
    if mode == "1":
        return grey(values * 255)
    if mode in ("L", "RGB"):
        return grey(values) if mode == "L" else values
    if mode in ("LA", "RGBA"):
        colour = grey(values[..., 0]) if mode == "LA" else values[..., :3]
        return over_white(colour, values[..., -1])
    if mode in ("La", "RGBa"):  # premultiplied colour C' = a C: composited as C' + (1 - a) W
        colour = grey(values[..., 0]) if mode == "La" else values[..., :3]
        return colour + (1 - values[..., -1:] / 255.0) * WHITE
    if mode == "RGBX":
        return values[..., :3]
    if mode in ("P", "PA"):
        palette = np.array(image.getpalette(), dtype=np.float64).reshape(-1, 3)
        indices = (values if mode == "P" else values[..., 0]).astype(int)
        alpha = values[..., 1] if mode == "PA" else np.full(indices.shape, 255.0)
        if "transparency" in image.info:  # one transparent index, or an alpha per index (PNG tRNS)
            key, table = image.info["transparency"], np.full(256, 255.0)
            if isinstance(key, int):
                table[key] = 0
            else:
                table[: len(key)] = list(key)
            alpha = table[indices]
        return over_white(palette[indices], alpha)
    if mode == "CMYK":  # ink coverage: R = (1 - C)(1 - K), likewise G from M and B from Y
        return 255 * (1 - values[..., :3] / 255) * (1 - values[..., 3:] / 255)
    if mode == "YCbCr":  # ITU-R BT.601, full range (JFIF)
        y, cb, cr = values[..., 0], values[..., 1] - 128, values[..., 2] - 128
        rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
        return rgb.clip(0, 255)
    if mode == "HSV":
        return hsv_to_rgb(values / 255)
    if mode == "LAB":
        a, b = np.moveaxis(np.asarray(image)[..., 1:].view(np.int8), -1, 0)  # signed bytes, as TIFF's CIELAB has them
        return lab_d50_to_srgb(values[..., 0] / 255 * 100, a, b)
    if mode == "F":
        return grey(np.nan_to_num(values, nan=0.0).clip(0, 1) * 255)
    if mode.startswith("I"):  # 16-bit, unless an I image exceeds 16 bits: then int32's positive range; < 0 black
        top = 2**16 - 1 if values.min() >= 0 and values.max() < 2**16 else 2**31 - 1
        colour = grey(values.clip(0, None) / top * 255)  # 16-bit: 65535 -> 255, i.e. / 257
        key = image.info.get("transparency")
        return colour if key is None else over_white(colour, np.where(values == key, 0.0, 255.0))
    raise AssertionError(f"no reference for mode {mode}")


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The hexcone model (Smith, "Color gamut transform pairs", SIGGRAPH 1978), all in [0, 1], hue 1 = 360 degrees:
    six sectors of hue, in each of which one of R, G, B is V, another V(1 - S), and the third rises or falls."""
    hue, saturation, value = hsv[..., 0] * 6, hsv[..., 1], hsv[..., 2]
    sector, rising = np.floor(hue).astype(int) % 6, hue - np.floor(hue)
    levels = np.stack(
        [value, value * (1 - saturation * (1 - rising)), value * (1 - saturation), value * (1 - saturation * rising)],
        axis=-1,
    )  # V, rising, bottom, falling
    order = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])  # (R, G, B) per sector
    return 255 * np.take_along_axis(levels, order[sector], axis=-1)


def lab_d50_to_srgb(lightness: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE L*a*b* relative to D50 (CIE 15:2004) -> XYZ -> Bradford-adapted to D65 -> linear sRGB (IEC 61966-2-1
    primaries) -> clipped -> the sRGB transfer curve, in 0..255."""
    epsilon, kappa = 216 / 24389, 24389 / 27
    fy = (lightness + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def inverse(f: np.ndarray) -> np.ndarray:
        return np.where(f**3 > epsilon, f**3, (116 * f - 16) / kappa)

    d50 = np.array([0.9642, 1.0, 0.8249])  # the ICC profile connection space's white
    y = np.where(lightness > kappa * epsilon, fy**3, lightness / kappa)
    xyz = np.stack([inverse(fx), y, inverse(fz)], axis=-1) * d50

    def chromaticity(x: float, y: float) -> np.ndarray:
        return np.array([x / y, 1, (1 - x - y) / y])

    primaries = np.stack([chromaticity(0.64, 0.33), chromaticity(0.30, 0.60), chromaticity(0.15, 0.06)], axis=1)
    d65 = chromaticity(0.3127, 0.3290)
    rgb_to_xyz = primaries * np.linalg.solve(primaries, d65)
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    d65_to_d50 = np.linalg.inv(bradford) @ np.diag((bradford @ d50) / (bradford @ d65)) @ bradford
    linear = (xyz @ np.linalg.inv(d65_to_d50 @ rgb_to_xyz).T).clip(0, 1)
    return 255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


# (mode, file format that stores it, save options); None: no format stores the mode, so it is converted in memory
CASES = [
    ("1", "PNG", {}),
    ("L", "JPEG", {}),
    ("LA", "PNG", {}),
    ("La", None, {}),
    ("P", "GIF", {}),
    ("P", "PNG", {"transparency": KEY}),
    ("PA", "TIFF", {}),
    ("RGB", "PNG", {}),
    ("RGBA", "PNG", {}),
    ("RGBa", None, {}),
    ("RGBX", None, {}),
    ("CMYK", "JPEG", {}),
    ("CMYK", "TIFF", {}),
    ("YCbCr", "TIFF", {}),
    ("LAB", "TIFF", {}),
    ("HSV", None, {}),
    ("I;16", "PNG", {}),
    ("I;16", "PNG", {"transparency": KEY}),
    ("I;16B", "TIFF", {}),
    ("I;16L", None, {}),
    ("I;16N", None, {}),
    ("I", "TIFF", {}),
    ("I;16", "PPM", {}),  # Pillow opens 16-bit PGM as I
    ("F", "TIFF", {}),
]


def case_id(case: tuple) -> str:
    mode, file_format, options = case
    return f"{mode}-{file_format or 'memory'}{'-transparent' if options else ''}"


def test_the_cases_cover_every_mode_pillow_has() -> None:
    assert {mode for mode, _, _ in CASES} == set(Image.MODES)


@pytest.mark.parametrize(("mode", "file_format", "options"), CASES, ids=map(case_id, CASES))
def test_every_mode_decodes_to_the_rgb_a_viewer_shows(
    tmp_path: Path, mode: str, file_format: str | None, options: dict
) -> None:
    image = sample(mode, np.random.default_rng(0))
    if file_format is None:
        stored, decoded = image, np.asarray(viewer_rgb(image))
    else:
        path = tmp_path / f"image.{file_format.lower()}"
        image.save(path, file_format, **options)
        stored, decoded = Image.open(path), decode_square(path, SIDE)
    expected = reference_rgb(stored)
    assert decoded.shape == (SIDE, SIDE, 3) and decoded.dtype == np.uint8
    error = np.abs(decoded - expected).max()
    assert error < 1 + 1e-9, f"{stored.mode}: off by {error:.2f} grey levels"  # Pillow rounds each step
