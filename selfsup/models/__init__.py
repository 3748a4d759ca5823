"""Reusable network pieces: backbones by name, projection heads (DINO's too), SwAV's prototypes.

`build_backbone` is loaded on first use (PEP 562): the backbones need torchvision (and timm, for timm names),
seconds of start-up that the losses, queues and heads importing this package never use.
"""

from typing import TYPE_CHECKING, Any

from selfsup.models.heads import DINOHead, projection_mlp
from selfsup.models.prototypes import Prototypes

if TYPE_CHECKING:
    from selfsup.models.backbones import build_backbone

__all__ = ["DINOHead", "Prototypes", "build_backbone", "projection_mlp"]


def __getattr__(name: str) -> Any:
    if name == "build_backbone":
        from selfsup.models.backbones import build_backbone

        return build_backbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
