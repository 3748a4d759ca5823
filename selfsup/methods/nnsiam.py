"""NNSiam: SimSiam whose targets are their nearest neighbours among earlier projections.

The nearest-neighbour idea of NNCLR ("With a Little Help from My Friends", Dwibedi et al., ICCV 2021) applied to
SimSiam's stop-gradient regression ("Exploring Simple Siamese Representation Learning", Chen and He, CVPR 2021), as
solo-learn's NNSiam: each view's prediction regresses the nearest neighbour of the other view's projection in a
support set of earlier projections.
"""

from selfsup.methods.simsiam import SimSiam
from selfsup.models.neighbours import NearestNeighbours


class NNSiam(SimSiam):
    """NNSiam: SimSiam regressing the nearest neighbour of each projection in a support set of 16,384 earlier
    projections (NNCLR's lookup, Dwibedi et al., ICCV 2021, eq. 1, on SimSiam, Chen and He, CVPR 2021, eq. 4).

    Takes every `SimSiam` option; logs `train/nn_accuracy` besides SimSiam's metrics."""

    def __init__(self, neighbours: NearestNeighbours = NearestNeighbours(support_size=16384), **kwargs) -> None:
        """
        Args:
            neighbours: the support set (16,384 suits 60k images; solo-learn: 65,536 on ImageNet) and its k.
        """
        super().__init__(neighbours=neighbours, **kwargs)
