"""NNCLR: contrastive learning whose positive is the nearest neighbour of the other view's embedding in a
support set of earlier embeddings ("With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations", Dwibedi et al., ICCV 2021).

The support set is the shared `EmbeddingQueue` (the same on every rank, saved in checkpoints); the lookup
carries no gradient, so the encoder learns through the predictions only (eq. 2, made symmetric as in the
paper's Sec. 3). Labels serve only the logged neighbour accuracy, `train/nn_accuracy`.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.augment import ViewRecipe, byol_views
from selfsup.errors import at_least, check_options, positive
from selfsup.losses import cross_view_info_nce
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.models.queue import EmbeddingQueue
from selfsup.runs import Metric


class NNCLR(Method):
    """NNCLR: InfoNCE whose positive is the nearest neighbour of the other view's embedding in a support set of
    earlier embeddings ("With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
    Representations", Dwibedi et al., ICCV 2021, eq. 2).

    Expects exactly two views per image (BYOL's recipe by default). The support set is an `EmbeddingQueue` of
    `queue_size` entries; labels are used only for the logged `train/nn_accuracy`."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        temperature: float = 0.1,
        queue_size: int = 16384,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        views: tuple[ViewRecipe, ...] = byol_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "lars",
        **kwargs,
    ) -> None:
        """
        Args:
            temperature: softmax temperature of the InfoNCE logits (paper: 0.1).
            queue_size: size of the support set (paper: 98,304 on ImageNet; 16,384 suits 60k images).
            projector_hidden_dim: hidden width of the 3-layer projection MLP.
            projector_output_dim: dimension of the embeddings, the support set and the predictions.
            predictor_hidden_dim: hidden width of the 2-layer predictor.
            views: the augmentation recipe (the paper uses BYOL's).
            optimizer: LARS, as the paper.
        """
        sizes = at_least(
            1,
            queue_size=queue_size,
            projector_hidden_dim=projector_hidden_dim,
            projector_output_dim=projector_output_dim,
            predictor_hidden_dim=predictor_hidden_dim,
        )
        check_options(positive(temperature=temperature) + sizes, "--model.init_args")
        super().__init__(views=views, optimizer=optimizer, **kwargs)
        self.projector = projection_mlp(self.feature_dim, projector_hidden_dim, projector_output_dim, num_layers=3)
        self.predictor = projection_mlp(projector_output_dim, predictor_hidden_dim, projector_output_dim)
        self.support_set = EmbeddingQueue(queue_size, projector_output_dim)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        embeddings = self.projector(torch.cat(features))
        predictions = self.predictor(embeddings).chunk(2)
        z_a, z_b = F.normalize(embeddings.float(), dim=1).chunk(2)
        (neighbour_a, label_a), (neighbour_b, _) = (self.support_set.nearest_neighbours(z) for z in (z_a, z_b))
        loss = (
            cross_view_info_nce(neighbour_a, predictions[1], self.hparams.temperature)
            + cross_view_info_nce(neighbour_b, predictions[0], self.hparams.temperature)
        ) / 2
        self.support_set.enqueue(z_a, labels)  # after the lookup: a sample is never its own neighbour
        return loss, {Metric.NN_ACCURACY: neighbour_accuracy(label_a, labels)} if self.labelled else {}


def neighbour_accuracy(neighbour_labels: Tensor, labels: Tensor) -> Tensor:
    """How often the support-set neighbour has the sample's class, over the pairs whose labels are both known;
    NaN while there are none (the first step's empty support set). Masked, not indexed: no host sync."""
    known = (neighbour_labels >= 0) & (labels >= 0)
    return ((neighbour_labels == labels) & known).sum() / known.sum()
