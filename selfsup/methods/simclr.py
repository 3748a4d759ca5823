"""SimCLR: two views of each image are pulled together and pushed away from every other view in the global
batch ("A Simple Framework for Contrastive Learning of Visual Representations", Chen et al., ICML 2020)."""

import torch
from torch import Tensor

from selfsup.errors import at_least, check_options, positive
from selfsup.losses import InfoNCELoss
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.models.hard_negative_mixing import HardNegativeMixing


class SimCLR(Method):
    """SimCLR: NT-Xent between two views of each image, with every other view of the global batch as a negative
    ("A Simple Framework for Contrastive Learning of Visual Representations", Chen et al., ICML 2020, eq. 1).

    Expects exactly two views per image (`views`); the projector is an MLP on the backbone's features.
    `decoupled=True` gives DCL (Yeh et al., ECCV 2022) and `mixing` adds MoCHi's synthetic negatives from the
    in-batch negatives. Logs `train/hard_negative_sim` (and the synthetic negatives' metrics with mixing on).
    The other options (backbone, optimizer, data values) are `Method`'s."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        temperature: float = 0.2,
        decoupled: bool = False,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 256,
        mixing: HardNegativeMixing = HardNegativeMixing(),
        **kwargs,
    ) -> None:
        """
        Args:
            temperature: softmax temperature of NT-Xent (0.2 suits small images, as in solo-learn's CIFAR setup).
            decoupled: use the decoupled contrastive loss (DCL, Yeh et al. 2022): no positive in the denominator.
            projector_hidden_dim: width of the projection MLP's hidden layer.
            projector_output_dim: dimension of the embeddings the loss compares.
            mixing: hard negative mixing over the in-batch negatives (MoCHi; off by default).
        """
        dims = at_least(1, projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        check_options(positive(temperature=temperature) + dims, "--model.init_args")
        super().__init__(**kwargs)
        self.projector = projection_mlp(self.feature_dim, projector_hidden_dim, projector_output_dim)
        self.criterion = InfoNCELoss(temperature, decoupled)
        self.mixing = HardNegativeMixing.from_dict(mixing)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z_a, z_b = self.projector(torch.cat(features)).chunk(2)  # (N, D) each; one BN over both views
        return self.criterion.loss_and_hardness(z_a, z_b, self.mixing.at_epoch(self.current_epoch))
