"""Barlow Twins: the cross-correlation matrix of two views' standardised projections, over the global batch, is
driven to the identity ("Barlow Twins: Self-Supervised Learning via Redundancy Reduction", Zbontar et al., ICML
2021). No negatives, no momentum encoder, no predictor."""

from torch import Tensor

from selfsup.augment import ViewRecipe, byol_views
from selfsup.errors import at_least, check_options, positive
from selfsup.losses import barlow_twins_terms
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.runs import Metric


class BarlowTwins(Method):
    """Barlow Twins: invariance on the diagonal of the two views' cross-correlation matrix, redundancy reduction off
    it ("Barlow Twins: Self-Supervised Learning via Redundancy Reduction", Zbontar et al., ICML 2021, eq. 1).

    Expects exactly two views per image (BYOL's asymmetric pair by default, as in the paper). The statistics and
    the cross-correlation are over the global batch (`selfsup.losses.barlow_twins`). Logs `train/on_diagonal` and
    `train/off_diagonal` (the latter before lambda); `train/loss` is eq. 1 times `loss_scale`."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 2048,
        projector_num_layers: int = 3,
        off_diagonal_weight: float = 0.0051,
        loss_scale: float = 0.024,
        views: tuple[ViewRecipe, ...] = byol_views(),
        base_lr: float = 0.3,
        weight_decay: float = 1e-4,
        **kwargs,
    ) -> None:
        """
        Args:
            projector_hidden_dim: hidden width of the projector. The paper's 8192 (3 layers on ResNet-50's 2048
                features) would make a projector of about 140M parameters, 12x a ResNet-18, for 32 px images;
                2048 (solo-learn's CIFAR setting) keeps it about the backbone's size. The paper finds accuracy
                grows with the width, so try more when compute allows.
            projector_output_dim: D, the dimension of the cross-correlation matrix (D x D), 2048 for the same reason.
            projector_num_layers: linear layers of the projector, BN and ReLU between them (paper: 3).
            off_diagonal_weight: lambda, the weight of the redundancy term (the official code's 0.0051; paper: 5e-3).
            loss_scale: the factor eq. (1) is trained with. LARS makes the weights' steps blind to it, but biases and
                normalisation parameters skip LARS and step by lr x gradient, and eq. (1) sums D^2 terms: unscaled,
                their gradients start hundreds of times larger than BYOL's. The official code gives them 0.0048 /
                0.2 = 0.024 of the weights' rate (its first version scaled the loss by 0.024 instead); `Method` has
                one rate for both, so the loss is scaled.
            views: the augmentation recipe (BYOL's, as in the paper).
            base_lr: learning rate per 256 images: solo-learn's CIFAR value for LARS with trust coefficient 0.02,
                as `selfsup.optim.LARS` has (paper: 0.2, with the official code's 0.001).
            weight_decay: solo-learn's CIFAR value (paper: 1.5e-6 on ImageNet for 1000 epochs).
        """
        check_options(
            at_least(0, off_diagonal_weight=off_diagonal_weight)
            + positive(loss_scale=loss_scale)
            + at_least(1, projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
            + at_least(1, projector_num_layers=projector_num_layers),
            "--model.init_args",
        )
        super().__init__(views=views, base_lr=base_lr, weight_decay=weight_decay, **kwargs)
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, num_layers=projector_num_layers
        )

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z_a, z_b = (self.projector(feature) for feature in features)  # (N, D) each, each view its own BN (paper)
        terms = barlow_twins_terms(z_a, z_b)
        metrics = {Metric.ON_DIAGONAL: terms.on_diagonal.detach(), Metric.OFF_DIAGONAL: terms.off_diagonal.detach()}
        return self.hparams.loss_scale * terms.loss(self.hparams.off_diagonal_weight), metrics
