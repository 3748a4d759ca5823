"""The multi-view pipeline: uint8 images in, a list of augmented, normalised views out, on the images' device.

A method asks for views and gets a list of tensors; it never knows how they were made. Randomness comes
from the `torch.Generator` passed in, so a method seeds it per rank and per epoch and the views are
reproducible and independent across DDP ranks.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.augment import ops
from selfsup.augment.recipe import ViewRecipe


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
        raise ValueError(f"expected images with 1 or 3 channels, got shape {tuple(images.shape)}")
    return images


class _Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need one value per RGB channel, got mean={mean}, std={std}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        normalized = (images - self.mean) / self.std
        return normalized.contiguous(memory_format=torch.channels_last)


class MultiView(nn.Module):
    """Augmented views of a batch, one group of views per recipe, in recipe order.

    Each view draws its own parameters for every sample: crop + flip (one `grid_sample`), colour jitter and
    grayscale (one affine colour map, in the fixed order brightness, contrast, saturation, hue, where
    torchvision draws a random order), then blur and solarization where the recipe asks for them.
    Output: float32 views, normalised with the dataset's mean and std, in channels_last layout.
    """

    def __init__(self, recipes: Sequence[ViewRecipe], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if not recipes:
            raise ValueError("MultiView needs at least one view recipe")
        self.recipes = tuple(recipes)
        self.normalize = _Normalize(mean, std)

    @property
    def num_views(self) -> int:
        return sum(recipe.num_views for recipe in self.recipes)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        source = to_unit_float(images)
        return [self.augment(source, recipe, generator) for recipe in self.recipes for _ in range(recipe.num_views)]

    def augment(self, images: Tensor, recipe: ViewRecipe, generator: torch.Generator | None) -> Tensor:
        n, _, height, width = images.shape
        device = images.device
        boxes = ops.sample_crop_boxes(n, height, width, recipe.crop_scale, recipe.crop_ratio, generator, device)
        flip = ops.bernoulli(recipe.flip_prob, n, generator, device)
        views = to_rgb(ops.crop_flip_resize(images, boxes, flip, recipe.size))

        jitter = ops.bernoulli(recipe.jitter_prob, n, generator, device)

        def factor(spread: float) -> Tensor:
            drawn = ops.uniform(1 - spread, 1 + spread, n, generator, device)
            return torch.where(jitter, drawn, torch.ones_like(drawn))

        brightness, contrast, saturation = factor(recipe.brightness), factor(recipe.contrast), factor(recipe.saturation)
        hue = torch.where(jitter, ops.uniform(-recipe.hue, recipe.hue, n, generator, device), 0.0)
        grayscale = ops.bernoulli(recipe.grayscale_prob, n, generator, device)
        views = ops.jitter_colours(views, brightness, contrast, saturation, hue, grayscale)
        if recipe.blur_prob > 0:
            sigma = ops.uniform(*recipe.blur_sigma, n, generator, device)
            views = ops.gaussian_blur(views, sigma, ops.bernoulli(recipe.blur_prob, n, generator, device))
        if recipe.solarize_prob > 0:
            views = ops.solarize(views, ops.bernoulli(recipe.solarize_prob, n, generator, device))
        return self.normalize(views)


class CleanView(nn.Module):
    """The evaluation transform: resize to `size` (antialiased) and normalise; no randomness."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.size = size
        self.normalize = _Normalize(mean, std)

    def forward(self, images: Tensor) -> Tensor:
        images = to_unit_float(images)
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.normalize(to_rgb(images))
