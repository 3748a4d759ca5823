"""Reusable network pieces: backbones by name, projection heads."""

from selfsup.models.backbones import build_backbone
from selfsup.models.heads import projection_mlp

__all__ = ["build_backbone", "projection_mlp"]
