"""NNBYOL: BYOL whose targets are their nearest neighbours among earlier targets.

The nearest-neighbour idea of NNCLR ("With a Little Help from My Friends", Dwibedi et al., ICCV 2021) applied to
BYOL's regression ("Bootstrap Your Own Latent", Grill et al., NeurIPS 2020), as solo-learn's NNBYOL: each view's
prediction regresses the nearest neighbour of the other view's momentum target in a support set of earlier targets.
"""

from selfsup.methods.byol import BYOL
from selfsup.models.neighbours import NearestNeighbours


class NNBYOL(BYOL):
    """NNBYOL: BYOL regressing the nearest neighbour of each momentum target in a support set of 16,384 earlier
    targets (NNCLR's lookup, Dwibedi et al., ICCV 2021, eq. 1, on BYOL, Grill et al., NeurIPS 2020, eq. 2).

    Takes every `BYOL` option; logs `train/nn_accuracy` besides BYOL's metrics."""

    def __init__(self, neighbours: NearestNeighbours = NearestNeighbours(support_size=16384), **kwargs) -> None:
        """
        Args:
            neighbours: the support set (16,384 suits 60k images; solo-learn: 65,536 on ImageNet) and its k.
        """
        super().__init__(neighbours=neighbours, **kwargs)
