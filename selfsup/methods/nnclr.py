"""NNCLR: contrastive learning whose positive is the nearest neighbour of the other view's embedding in a support
set of earlier embeddings ("With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations", Dwibedi et al., ICCV 2021).

SimCLR with its `neighbours` option on, a 3-layer projector and a predictor: the support set and its lookup are
`selfsup.models.neighbours` (the same on every rank, saved in checkpoints); the lookup carries no gradient, so the
encoder learns through the predictions only (eq. 2, made symmetric as in the paper's Sec. 3). Labels serve only
the logged neighbour accuracy, `train/nn_accuracy`.
"""

from typing import Literal

from selfsup.augment import ViewRecipe, byol_views
from selfsup.methods.simclr import SimCLR
from selfsup.models.neighbours import NearestNeighbours


class NNCLR(SimCLR):
    """NNCLR: InfoNCE whose positive is the nearest neighbour of the other view's embedding in a support set of
    earlier embeddings ("With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
    Representations", Dwibedi et al., ICCV 2021, eq. 2).

    SimCLR with a support set of 16,384 embeddings (`neighbours`), a 3-layer projector and a 4096-wide predictor,
    BYOL's views and LARS; it takes every `SimCLR` option. Labels are used only for the logged `train/nn_accuracy`."""

    def __init__(
        self,
        temperature: float = 0.1,
        neighbours: NearestNeighbours = NearestNeighbours(support_size=16384),
        projector_num_layers: int = 3,
        predictor_hidden_dim: int = 4096,
        views: tuple[ViewRecipe, ...] = byol_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "lars",
        **kwargs,
    ) -> None:
        """
        Args:
            temperature: softmax temperature of the InfoNCE logits (paper: 0.1).
            neighbours: the support set (paper: 98,304 on ImageNet; 16,384 suits 60k images) and its one neighbour.
            projector_num_layers: the paper's 3-layer projector.
            predictor_hidden_dim: hidden width of the 2-layer predictor.
            views: the augmentation recipe (the paper uses BYOL's).
            optimizer: LARS, as the paper.
        """
        super().__init__(
            temperature=temperature,
            neighbours=neighbours,
            projector_num_layers=projector_num_layers,
            predictor_hidden_dim=predictor_hidden_dim,
            views=views,
            optimizer=optimizer,
            **kwargs,
        )
