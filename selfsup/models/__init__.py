"""Reusable network pieces: backbones by name, projection heads, SwAV's prototypes."""

from selfsup.models.backbones import build_backbone
from selfsup.models.heads import projection_mlp
from selfsup.models.prototypes import Prototypes

__all__ = ["Prototypes", "build_backbone", "projection_mlp"]
