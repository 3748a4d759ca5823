"""SimCLR: two views of each image are pulled together and pushed away from every other view in the global
batch ("A Simple Framework for Contrastive Learning of Visual Representations", Chen et al., ICML 2020)."""

import torch
from torch import Tensor

from selfsup.errors import ConfigurationError
from selfsup.losses import InfoNCELoss
from selfsup.methods.base import Method
from selfsup.models import projection_mlp


class SimCLR(Method):
    def __init__(
        self,
        temperature: float = 0.2,
        decoupled: bool = False,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 256,
        num_hard: int = 0,
        num_mixed: int = 0,
        num_query_mixed: int = 0,
        mixing_start_epoch: int = 0,
        **kwargs,
    ) -> None:
        """
        Args:
            temperature: softmax temperature of NT-Xent (0.2 suits small images, as in solo-learn's CIFAR setup).
            decoupled: use the decoupled contrastive loss (DCL, Yeh et al. 2022): no positive in the denominator.
            projector_hidden_dim: width of the projection MLP's hidden layer.
            projector_output_dim: dimension of the embeddings the loss compares.
            num_hard: MoCHi's N over in-batch negatives: the hardest negatives per anchor that mixing draws
                from (0: no mixing). See "Hard Negative Mixing for Contrastive Learning" (Kalantidis et al. 2020).
            num_mixed: MoCHi's s, synthetic negatives mixed from pairs of hard negatives.
            num_query_mixed: MoCHi's s', synthetic negatives mixed from the anchor and a hard negative.
            mixing_start_epoch: first epoch with mixing.
        """
        super().__init__(**kwargs)
        if self.multiview.num_views != 2:
            raise ConfigurationError(
                f"SimCLR contrasts exactly 2 views per image, but the view recipes give {self.multiview.num_views}. "
                "Set one recipe with num_views: 2."
            )
        self.projector = projection_mlp(self.feature_dim, projector_hidden_dim, projector_output_dim)
        self.criterion = InfoNCELoss(temperature, decoupled, num_hard, num_mixed, num_query_mixed)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = self.projector(torch.cat(features)).chunk(2)  # (N, D) each; one BN over both views
        return self.criterion(z_a, z_b, mix=self.current_epoch >= self.hparams.mixing_start_epoch)
