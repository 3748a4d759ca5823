"""VICReg: two views' embeddings are pulled together (invariance) while each view's embedding dimensions keep their
variance and stay decorrelated over the global batch ("VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", Bardes et al., ICLR 2022). No negatives, no momentum encoder, no predictor."""

from torch import Tensor

from selfsup.augment import ViewRecipe, byol_views
from selfsup.errors import at_least, check_options
from selfsup.losses import vicreg_terms
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.runs import Metric


class VICReg(Method):
    """VICReg: invariance between two views, a hinge on each dimension's std and a penalty on the covariances
    ("VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning", Bardes et al., ICLR 2022,
    eq. 6).

    Expects exactly two views per image (BYOL's asymmetric pair by default, as in the paper). The variance and
    covariance are over the global batch, the invariance over the local one (`selfsup.losses.vicreg`). Logs
    `train/invariance`, `train/variance` and `train/covariance`, unweighted."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 2048,
        projector_num_layers: int = 3,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        views: tuple[ViewRecipe, ...] = byol_views(),
        base_lr: float = 0.3,
        weight_decay: float = 1e-4,
        **kwargs,
    ) -> None:
        """
        Args:
            projector_hidden_dim: hidden width of the projector (the paper's expander). The paper's 8192 (3 layers
                on ResNet-50's 2048 features) would make an expander of about 140M parameters, 12x a ResNet-18, for
                32 px images; 2048 (solo-learn's CIFAR setting) keeps it about the backbone's size. The paper finds
                accuracy grows with the width, so try more when compute allows.
            projector_output_dim: D, the dimension of the embeddings the loss sees, 2048 for the same reason.
            projector_num_layers: linear layers of the expander, BN and ReLU between them (paper: 3).
            invariance_weight: lambda, the weight of the mean squared error between the views (paper: 25).
            variance_weight: mu, the weight of the std hinge, summed over both views (paper: 25).
            covariance_weight: nu, the weight of the covariance term, summed over both views (paper: 1).
            views: the augmentation recipe (BYOL's, as in the paper).
            base_lr: learning rate per 256 images: solo-learn's CIFAR value for LARS with trust coefficient 0.02,
                as `selfsup.optim.LARS` has (paper: 0.2, with the official code's 0.001).
            weight_decay: solo-learn's CIFAR value (paper: 1e-6 on ImageNet).
        """
        weights = dict(invariance_weight=invariance_weight, variance_weight=variance_weight)
        check_options(
            at_least(0, **weights, covariance_weight=covariance_weight)
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
        terms = vicreg_terms(z_a, z_b)
        hp = self.hparams
        metrics = {
            Metric.INVARIANCE: terms.invariance.detach(),
            Metric.VARIANCE: terms.variance.detach(),
            Metric.COVARIANCE: terms.covariance.detach(),
        }
        return terms.loss(hp.invariance_weight, hp.variance_weight, hp.covariance_weight), metrics
