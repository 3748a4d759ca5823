"""LightningModules: the shared `Method` base and one short file per method, registered by name."""

from selfsup.methods.base import Method, MomentumMethod
from selfsup.methods.byol import BYOL
from selfsup.methods.mochi import MoCHi
from selfsup.methods.mocov2 import MoCoV2
from selfsup.methods.nnclr import NNCLR
from selfsup.methods.simclr import SimCLR
from selfsup.methods.swav import SwAV

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "mocov2": MoCoV2,
    "mochi": MoCHi,
    "byol": BYOL,
    "swav": SwAV,
    "nnclr": NNCLR,
}

__all__ = ["BYOL", "METHODS", "Method", "MoCHi", "MoCoV2", "MomentumMethod", "NNCLR", "SimCLR", "SwAV"]
