"""Decoding to squares: the DCT-domain reduced decode stays within a few grey levels of the full decode, and is
used only where the source is at least twice the target."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.data.decode import decode_square


def photo_like(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    """A JPEG with the statistics that matter here: smooth colour regions, edges and pixel noise."""
    rng = np.random.default_rng(0)
    field = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).convert(mode).save(path, quality=90)
    return path


@pytest.mark.parametrize(("mode", "size"), [("RGB", 64), ("RGB", 160), ("L", 96)])
def test_draft_decode_is_within_a_few_grey_levels_of_the_full_decode(tmp_path: Path, mode: str, size: int) -> None:
    path = photo_like(tmp_path / "photo.jpg", 500, 375, mode)
    full = decode_square(path, size, draft=False).astype(np.float64)
    draft = decode_square(path, size).astype(np.float64)
    assert draft.shape == full.shape == (size, size, 3)
    error = np.abs(draft - full)
    psnr = 10 * np.log10(255**2 / np.mean(error**2))
    assert not np.array_equal(draft, full), "a source twice the target must take the reduced decode"
    assert error.mean() < 3 and psnr > 35, (error.mean(), psnr)


def test_sources_smaller_than_twice_the_target_take_the_full_decode(tmp_path: Path) -> None:
    path = photo_like(tmp_path / "photo.jpg", 500, 375)
    assert np.array_equal(decode_square(path, 224), decode_square(path, 224, draft=False))  # 375 < 2 x 224
