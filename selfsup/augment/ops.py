"""Batched augmentation ops: each draws its per-sample parameters as tensors, then applies one kernel.

Images are float tensors in [0, 1], shape (B, C, H, W). Colour operations follow torchvision's definitions
(`torchvision.transforms.v2.functional`): brightness scales, contrast blends with the image's mean gray
level, saturation blends with the grayscale image, hue rotates in HSV space (kornia's kernel). A sample that
is not selected by its probability gets the identity parameter, so the whole batch runs in one call.
"""

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor


def uniform(low: float, high: float, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.empty(n, device=device).uniform_(low, high, generator=generator)


def bernoulli(prob: float, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=device) < prob


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
    attempts: int = 10,
) -> Tensor:
    """Crop boxes (n, 4) as (x0, y0, w, h) in pixels, drawn as torchvision's `RandomResizedCrop.get_params`.

    Each sample tries `attempts` (area, log-aspect-ratio) pairs at once and keeps the first that fits inside
    the image; a sample for which none fits falls back to the largest central crop within `ratio`.
    """
    area = height * width
    target_area = area * torch.empty(n, attempts, device=device).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, attempts, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first attempt that fits
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = round(height * ratio[1]), height
    else:
        fallback_w, fallback_h = width, height
    any_fits = fits.any(dim=1)
    w = torch.where(any_fits, w, torch.full_like(w, fallback_w))
    h = torch.where(any_fits, h, torch.full_like(h, fallback_h))

    # torchvision draws the corner uniformly among integer positions: randint(0, W - w + 1)
    x0 = torch.floor(torch.rand(n, generator=generator, device=device) * (width - w + 1))
    y0 = torch.floor(torch.rand(n, generator=generator, device=device) * (height - h + 1))
    x0 = torch.where(any_fits, x0, ((width - w) / 2).floor())
    y0 = torch.where(any_fits, y0, ((height - h) / 2).floor())
    return torch.stack([x0, y0, w, h], dim=1)


def crop_flip_resize(images: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Crop each image to its box, flip it horizontally where `flip` is set, and resize to `size`.

    One affine `grid_sample` does all three: the box maps onto the output's [-1, 1] square, a flip negates
    the x scale. Bilinear sampling, pixel edges aligned (align_corners=False), so a box covering the whole
    image at the image's own size reproduces it exactly.
    """
    b, c, height, width = images.shape
    x0, y0, w, h = boxes.to(images.dtype).unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = torch.where(flip, -w / width, w / width)
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * images + (1 - factor) * other, per sample, clamped to [0, 1] (torchvision's `_blend`)."""
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean_gray = kornia.color.rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean_gray, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, kornia.color.rgb_to_grayscale(images), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by `shift` (B,) fractions of a full turn, torchvision's convention; kornia takes radians."""
    return kornia.enhance.adjust_hue(images, shift * 2 * math.pi)


def to_grayscale(images: Tensor, apply: Tensor) -> Tensor:
    gray = kornia.color.rgb_to_grayscale(images).expand_as(images)
    return torch.where(apply.view(-1, 1, 1, 1), gray, images)
