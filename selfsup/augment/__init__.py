"""GPU augmentation: view recipes as data, batched ops, and the multi-view pipeline every method shares."""

from selfsup.augment.multiview import CleanView, MultiView
from selfsup.augment.recipe import ViewRecipe

__all__ = ["CleanView", "MultiView", "ViewRecipe"]
