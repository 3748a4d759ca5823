"""The multi-view pipeline: uint8 images in, a list of augmented, normalised views out, on the images' device.

A method asks for views and gets a list of tensors; it never knows how they were made. Randomness comes
from the `torch.Generator` passed in, so a method seeds it per rank and per epoch and the views are
reproducible and independent across DDP ranks.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.augment import ops
from selfsup.augment.recipe import ViewRecipe
from selfsup.errors import ConfigurationError


def view_seed(base_seed: int, rank: int, epoch: int) -> int:
    """The augmentation seed of one rank in one epoch: distinct across ranks (each sees other randomness) and
    epochs, and a pure function of its inputs, so a run resumed at an epoch boundary draws the same views."""
    state = np.random.SeedSequence([base_seed, rank, epoch]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))  # torch seeds are 63-bit


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def to_rgb(images: Tensor) -> Tensor:
    """Grayscale (B, 1, H, W) sources become three identical channels, so every backbone sees RGB."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ConfigurationError(f"expected images with 1 or 3 channels, got shape {tuple(images.shape)}")
    return images


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(images - mean) / std per channel, returned in channels_last layout for the backbone."""
    return ((images - mean) / std).contiguous(memory_format=torch.channels_last)


def _register_normalization(module: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Give `module` per-channel `mean` and `std` buffers, which follow it across devices."""
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise ConfigurationError(f"mean and std need one value per RGB channel, std > 0; got mean={mean}, std={std}")
    module.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
    module.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)


class ViewParams(NamedTuple):
    """Every random parameter of one view, one entry per sample; identity values where an op is not drawn."""

    boxes: Tensor  # (N, 4) crop box x0, y0, w, h in source pixels
    flip: Tensor  # (N,) bool
    brightness: Tensor  # (N,) factors, 1 = unchanged
    contrast: Tensor
    saturation: Tensor
    hue: Tensor  # (N,) shift in turns, 0 = unchanged
    grayscale: Tensor  # (N,) bool
    blur_sigma: Tensor  # (N,) pixels
    blur: Tensor  # (N,) bool
    solarize: Tensor  # (N,) bool


def sample_view_params(
    recipe: ViewRecipe, n: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
) -> ViewParams:
    """Draw one view's parameters for n samples from `recipe`, as tensors on `device`."""
    boxes = ops.sample_crop_boxes(n, height, width, recipe.crop_scale, recipe.crop_ratio, generator, device)
    flip = ops.bernoulli(recipe.flip_prob, n, generator, device)
    jitter = ops.bernoulli(recipe.jitter_prob, n, generator, device)

    def factor(spread: float) -> Tensor:
        return torch.where(jitter, ops.uniform(1 - spread, 1 + spread, n, generator, device), 1.0)

    brightness, contrast, saturation = factor(recipe.brightness), factor(recipe.contrast), factor(recipe.saturation)
    hue = torch.where(jitter, ops.uniform(-recipe.hue, recipe.hue, n, generator, device), 0.0)
    grayscale = ops.bernoulli(recipe.grayscale_prob, n, generator, device)
    blur_sigma = ops.uniform(*recipe.blur_sigma, n, generator, device)
    blur = ops.bernoulli(recipe.blur_prob, n, generator, device)
    solarize = ops.bernoulli(recipe.solarize_prob, n, generator, device)
    return ViewParams(boxes, flip, brightness, contrast, saturation, hue, grayscale, blur_sigma, blur, solarize)


def render_view(
    source: Tensor, params: ViewParams, size: int, blur: bool, solarize: bool, mean: Tensor, std: Tensor
) -> Tensor:
    """One view from a float source in [0, 1] and its drawn parameters: a pure function of tensors, so it can
    be compiled into a few fused kernels. `blur` / `solarize` say whether the recipe uses those ops at all."""
    views = to_rgb(ops.crop_flip_resize(source, params.boxes, params.flip, size))
    views = ops.jitter_colours(
        views, params.brightness, params.contrast, params.saturation, params.hue, params.grayscale
    )
    if blur:
        views = ops.gaussian_blur(views, params.blur_sigma, params.blur)
    if solarize:
        views = ops.solarize(views, params.solarize)
    return normalize(views, mean, std)


def batch_view_bytes(recipes: Sequence[ViewRecipe], image_size: int, batch_size: int) -> int:
    """Bytes of one batch of float32 views (3 channels each): the least that rendering them allocates, before
    any activation of the backbone."""
    return batch_size * sum(recipe.num_views * 3 * recipe.size(image_size) ** 2 * 4 for recipe in recipes)


class MultiView(nn.Module):
    """Augmented views of a batch, one group of views per recipe, in recipe order.

    Each view draws its own parameters for every sample (`sample_view_params`), then `render_view` applies
    them: crop + flip (one `grid_sample`), colour jitter and grayscale (one affine colour map, in the fixed
    order brightness, contrast, saturation, hue, where torchvision draws a random order), then blur and
    solarization where the recipe asks for them. A recipe's views are `recipe.size(image_size)` pixels wide.
    With `compile=True` rendering runs under torch.compile, which fuses it into a few kernels (worth it on a
    GPU; the first batch of each view size pays the compilation).
    Output: float32 views, normalised with the dataset's mean and std, in channels_last layout.
    """

    def __init__(
        self,
        recipes: Sequence[ViewRecipe],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not recipes:
            raise ConfigurationError("at least one view recipe is needed; set one in --model.init_args.views")
        if image_size < 1:
            raise ConfigurationError(f"the image size must be at least 1, got {image_size}; fix --data.image_size")
        self.recipes = tuple(recipes)
        self.sizes = tuple(recipe.size(image_size) for recipe in self.recipes)
        _register_normalization(self, mean, std)
        self._render = torch.compile(render_view, dynamic=False) if compile else render_view

    @property
    def num_views(self) -> int:
        return sum(recipe.num_views for recipe in self.recipes)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        source = to_unit_float(images)
        n, _, height, width = source.shape
        views = []
        for recipe, size in zip(self.recipes, self.sizes, strict=True):
            blur, solarize = recipe.blurs_at(size), recipe.solarize_prob > 0
            for _ in range(recipe.num_views):
                params = sample_view_params(recipe, n, height, width, generator, source.device)
                views.append(self._render(source, params, size, blur, solarize, self.mean, self.std))
        return views


class CleanView(nn.Module):
    """The evaluation transform: centre square crop, resize to `size` (antialiased), normalise; no randomness."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.size = size
        _register_normalization(self, mean, std)

    def forward(self, images: Tensor) -> Tensor:
        images = to_unit_float(images)
        height, width = images.shape[-2:]
        if height != width:  # centre square, so non-square sources are cropped rather than squashed
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            images = images[..., top : top + side, left : left + side]
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
        return normalize(to_rgb(images), self.mean, self.std)
