"""Supervised contrastive learning: SimCLR's two views, with every view of the same class in the global batch a
positive ("Supervised Contrastive Learning", Khosla et al., NeurIPS 2020). USES LABELS: the labelled upper reference
of the contrastive methods, not a self-supervised method."""

import torch
from torch import Tensor

from selfsup.errors import ConfigurationError, at_least, check_options, positive
from selfsup.losses import supervised_contrastive_loss_and_hardness
from selfsup.losses.supcon import TEMPERATURE
from selfsup.methods.base import Method
from selfsup.models import projection_mlp


class SupCon(Method):
    """Supervised contrastive learning: L^sup_out of eq. 2 ("Supervised Contrastive Learning", Khosla et al., NeurIPS
    2020), each view's positives being every other view of its class in the global batch (its own other view
    included), its negatives every view of another class. USES THE LABELS of the training data: the labelled upper
    reference the self-supervised methods are compared with. Data without labels (num_classes below 2) is refused;
    in partly labelled data (STL-10's train+unlabeled) an unlabelled image (-1) is a class of its own, so its only
    positive is its other view, as in SimCLR (`selfsup.losses.supcon`).

    Expects exactly two views per image (SimCLR's, as in the paper); the projector is SimCLR's MLP with the paper's
    128-dimensional output. Logs `train/hard_negative_sim`, the mean similarity of each view's most similar view of
    another class. The other options (backbone, optimizer, data values) are `Method`'s."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        temperature: float = TEMPERATURE,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 128,
        projector_num_layers: int = 2,
        **kwargs,
    ) -> None:
        """
        Args:
            temperature: T of eq. 2 (the paper's 0.1; its official code defaults to 0.07).
            projector_hidden_dim: width of the projection MLP's hidden layer (paper: 2048).
            projector_output_dim: dimension of the embeddings the loss compares (paper: 128).
            projector_num_layers: linear layers of the projection MLP (paper: 2).
        """
        dims = dict(projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        problems = positive(temperature=temperature) + at_least(1, **dims, projector_num_layers=projector_num_layers)
        check_options(problems, "--model.init_args")
        super().__init__(**kwargs)
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, num_layers=projector_num_layers
        )

    def setup(self, stage: str) -> None:
        """The values from the data first (`Method.setup`): only then is it known whether the data has classes."""
        super().setup(stage)
        if stage == "fit" and not self.labelled:
            raise ConfigurationError(
                f"SupCon trains on labels, but the data has none (num_classes={self.hparams.num_classes}): train it on "
                "labelled data (--data.dataset), or use a self-supervised method such as simclr."
            )

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        embeddings = self.projector(torch.cat(features))  # (2N, D); one BN over both views, as SimCLR
        return supervised_contrastive_loss_and_hardness(embeddings.chunk(2), labels, self.hparams.temperature)
