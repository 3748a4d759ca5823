"""LightningModules: the shared `Method` base and one short file per method, registered by name."""

from selfsup.methods.base import Method, MomentumMethod
from selfsup.methods.byol import BYOL
from selfsup.methods.mochi import MoCHi
from selfsup.methods.mocov2 import MoCoV2
from selfsup.methods.mocov3 import MoCoV3
from selfsup.methods.nnclr import NNCLR
from selfsup.methods.simclr import SimCLR
from selfsup.methods.simsiam import SimSiam
from selfsup.methods.swav import SwAV
from selfsup.runs import method_name

# name -> class; the name is also the method's configs/<name>.yaml and its run folder runs/<name>/
METHODS: dict[str, type[Method]] = {
    method_name(cls): cls for cls in (SimCLR, MoCoV2, MoCHi, BYOL, SwAV, NNCLR, SimSiam, MoCoV3)
}

__all__ = [
    "BYOL",
    "METHODS",
    "Method",
    "MoCHi",
    "MoCoV2",
    "MoCoV3",
    "MomentumMethod",
    "NNCLR",
    "SimCLR",
    "SimSiam",
    "SwAV",
]
