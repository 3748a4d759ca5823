"""Batched augmentation ops: each draws its per-sample parameters as tensors, then applies one kernel.

Images are float tensors in [0, 1], shape (B, C, H, W). A sample that is not selected by its probability gets
the identity parameter, so the whole batch runs in one call and no op ever loops over samples. Colour
operations follow torchvision's definitions (`torchvision.transforms.v2.functional`) and are fused into one
affine map per sample (`jitter_colours`); blur is kornia's per-sample-sigma Gaussian kernel.
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


# ITU-R BT.601 luma weights (torchvision's and kornia's grayscale) and the RGB -> YIQ transform whose first row
# they are: hue rotation turns the (I, Q) chroma plane and leaves luma, hence gray, untouched.
GRAY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def colour_matrix(saturation: Tensor, hue: Tensor, grayscale: Tensor) -> Tensor:
    """(B, 3, 3) per-sample linear colour map: saturation, then hue rotation, then optional grayscale.

    Saturation blends each pixel with its luma (torchvision's `adjust_saturation`). Hue rotates the chroma
    plane of YIQ by `hue` turns, a linear stand-in for torchvision's HSV hue shift (mean absolute difference
    about 0.03 at 0.05 turn and 0.06 at 0.1 turn on mid-range colours). Grayscale replaces RGB by luma.
    """
    n, device = saturation.shape[0], saturation.device
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    to_luma = torch.ones(3, 1, device=device) @ GRAY_WEIGHTS.to(device)[None]  # (3, 3): every channel <- luma
    saturate = saturation.view(-1, 1, 1) * eye + (1 - saturation.view(-1, 1, 1)) * to_luma
    angle = -2 * math.pi * hue  # this direction matches torchvision's hue (red -> yellow for a positive shift)
    cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    rotation = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], dim=1).view(n, 3, 3)
    rotate_hue = _YIQ_TO_RGB.to(device) @ rotation @ _RGB_TO_YIQ.to(device)
    to_gray = torch.where(grayscale.view(-1, 1, 1), to_luma.expand(n, 3, 3), eye)
    return to_gray @ rotate_hue @ saturate


def jitter_colours(
    images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor, grayscale: Tensor
) -> Tensor:
    """Brightness, contrast, saturation, hue and grayscale, in that order, as one affine map per sample.

    Brightness scales (x -> b x) and contrast blends with the image's mean luma m (x -> c x + (1 - c) m), so
    with the linear map M of `colour_matrix`, which keeps gray fixed, the whole chain is
    y = clamp(b c M x + (1 - c) b m), one batched matrix product instead of five passes over the images.
    Unlike torchvision, values are clamped once at the end rather than after every operation.
    """
    mean_luma = torch.einsum("c,bchw->b", GRAY_WEIGHTS.to(images.device), images) / images[0, 0].numel()
    matrix = (brightness * contrast).view(-1, 1, 1) * colour_matrix(saturation, hue, grayscale)
    offset = ((1 - contrast) * brightness * mean_luma).view(-1, 1, 1, 1)
    return (torch.einsum("bij,bjhw->bihw", matrix, images) + offset).clamp_(0, 1)


def blur_kernel_size(image_size: int) -> int:
    """An odd kernel of about 10% of the image side, as in SimCLR (Appendix A) and BYOL (23 px at 224)."""
    size = max(3, int(0.1 * image_size))
    return size + 1 - size % 2


def gaussian_blur(images: Tensor, sigma: Tensor, apply: Tensor) -> Tensor:
    """Gaussian blur with a per-sample sigma (kornia's kernel, reflect padding) where `apply` is set."""
    kernel = blur_kernel_size(images.shape[-1])
    blurred = kornia.filters.gaussian_blur2d(images, (kernel, kernel), sigma[:, None].expand(-1, 2))
    return torch.where(apply.view(-1, 1, 1, 1), blurred, images)


def solarize(images: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert pixels at or above `threshold` where `apply` is set (torchvision's `solarize`)."""
    return torch.where(apply.view(-1, 1, 1, 1) & (images >= threshold), 1 - images, images)
