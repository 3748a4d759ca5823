"""Poly-view contrastive learning: M views of each image (SimCLR has 2), each contrasted with all the other views
of its image at once, with every view of every other image in the global batch a negative ("Poly-View Contrastive
Learning", Shidani et al., ICLR 2024)."""

from dataclasses import replace

import torch
from torch import Tensor

from selfsup.augment import ViewRecipe, simclr_views
from selfsup.errors import at_least, check_options, positive
from selfsup.losses.polyview import PolyViewObjective, polyview_loss_and_hardness, polyview_problems
from selfsup.methods.base import Method
from selfsup.models import projection_mlp


class PolyView(Method):
    """Poly-view contrastive learning: SimCLR's backbone and projector, M views of each image, and the paper's
    one-vs-rest objectives (Geometric or Arithmetic PVC) or its multi-crop baseline ("Poly-View Contrastive
    Learning", Shidani, Hjelm, Ramapuram, Webb, Dhekane and Busbridge, ICLR 2024; `selfsup.losses.polyview`).

    Takes any number of views from 2 (`views`; 4 of SimCLR's by default); with 2 every objective is SimCLR's NT-Xent.
    The paper's point: at a fixed compute budget, fewer images with more views each beat a larger batch of pairs.
    Logs `train/hard_negative_sim`, the similarity of each view's hardest negative (any view of another image).
    The other options (backbone, optimizer, data values) are `Method`'s."""

    VIEWS_PER_IMAGE = (2, None)

    def __init__(
        self,
        objective: PolyViewObjective = "geometric",
        temperature: float = 0.2,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 256,
        projector_num_layers: int = 2,
        views: tuple[ViewRecipe, ...] = (replace(simclr_views()[0], num_views=4),),
        **kwargs,
    ) -> None:
        """
        Args:
            objective: geometric (Geometric PVC, the paper's best), arithmetic (Arithmetic PVC) or multi_crop (the
                mean of SimCLR's loss over every pair of views, the paper's baseline).
            temperature: softmax temperature (SimCLR's 0.2 for small images).
            projector_hidden_dim: width of the projection MLP's hidden layer.
            projector_output_dim: dimension of the embeddings the loss compares.
            projector_num_layers: linear layers of the projection MLP (SimCLR: 2).
            views: the augmentation recipe: M = 4 views of SimCLR's (every group's views count; at least 2).
        """
        dims = dict(projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        problems = positive(temperature=temperature) + at_least(1, **dims, projector_num_layers=projector_num_layers)
        num_views = sum(ViewRecipe.from_dict(recipe).num_views for recipe in views)
        check_options(problems + polyview_problems(num_views, objective), "--model.init_args")
        super().__init__(views=views, **kwargs)
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, num_layers=projector_num_layers
        )

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        embeddings = self.projector(torch.cat(features)).chunk(len(features))  # one BN over all M views
        return polyview_loss_and_hardness(list(embeddings), self.hparams.temperature, self.hparams.objective)
