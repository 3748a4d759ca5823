"""GPU augmentation: view recipes as data, batched ops, and the multi-view pipeline every method shares."""

from selfsup.augment.multiview import CleanView, MultiView, batch_view_bytes, view_seed
from selfsup.augment.recipe import (
    RECIPES,
    ViewRecipe,
    byol_views,
    mocov2_views,
    msf_views,
    multicrop_views,
    simclr_views,
)

__all__ = [
    "RECIPES",
    "CleanView",
    "MultiView",
    "ViewRecipe",
    "batch_view_bytes",
    "byol_views",
    "mocov2_views",
    "msf_views",
    "multicrop_views",
    "simclr_views",
    "view_seed",
]
