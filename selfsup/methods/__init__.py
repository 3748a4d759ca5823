"""LightningModules: the shared `Method` base and one short file per method, registered by name."""

from selfsup.methods.base import Method
from selfsup.methods.simclr import SimCLR

METHODS: dict[str, type[Method]] = {"simclr": SimCLR}

__all__ = ["METHODS", "Method", "SimCLR"]
