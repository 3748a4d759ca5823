"""LightningModules: the shared `Method` base and one short file per method, registered by name."""

from selfsup.methods.alignuniform import AlignUniform
from selfsup.methods.barlowtwins import BarlowTwins
from selfsup.methods.base import Method, MomentumMethod
from selfsup.methods.byol import BYOL
from selfsup.methods.dino import DINO
from selfsup.methods.mochi import MoCHi
from selfsup.methods.mocov2 import MoCoV2
from selfsup.methods.mocov3 import MoCoV3
from selfsup.methods.msf import MSF
from selfsup.methods.nnbyol import NNBYOL
from selfsup.methods.nnclr import NNCLR
from selfsup.methods.nnsiam import NNSiam
from selfsup.methods.polyview import PolyView
from selfsup.methods.simclr import SimCLR
from selfsup.methods.simsiam import SimSiam
from selfsup.methods.supcon import SupCon
from selfsup.methods.swav import SwAV
from selfsup.methods.vicreg import VICReg
from selfsup.methods.wmse import WMSE
from selfsup.runs import method_name

# name -> class; the name is also the method's configs/<name>.yaml and its run folder runs/<name>/
METHODS: dict[str, type[Method]] = {
    method_name(cls): cls
    for cls in (
        *(SimCLR, MoCoV2, MoCHi, BYOL, SwAV, NNCLR),
        *(NNBYOL, MSF, DINO, BarlowTwins, VICReg, WMSE, SimSiam, NNSiam, MoCoV3),
        *(SupCon, AlignUniform, PolyView),
    )
}

__all__ = [
    "AlignUniform",
    "BYOL",
    "DINO",
    "METHODS",
    "MSF",
    "BarlowTwins",
    "Method",
    "MoCHi",
    "MoCoV2",
    "MoCoV3",
    "MomentumMethod",
    "NNBYOL",
    "NNCLR",
    "NNSiam",
    "PolyView",
    "SimCLR",
    "SimSiam",
    "SupCon",
    "SwAV",
    "VICReg",
    "WMSE",
]
