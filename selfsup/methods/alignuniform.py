"""Alignment and uniformity as the objective: two views of each image pulled together, every embedding of the global
batch spread over the hypersphere ("Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere", Wang and Isola, ICML 2020). The two properties `selfsup eval` measures, trained."""

import torch
from torch import Tensor

from selfsup.errors import at_least, check_options, positive
from selfsup.losses import align_uniform_terms
from selfsup.losses.alignment_uniformity import ALPHA, UNIFORMITY_WEIGHT, T
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.runs import Metric


class AlignUniform(Method):
    """Wang and Isola's objective L_align(alpha) + lambda * (L_uniform(t) of view a + L_uniform(t) of view b) / 2 (ICML
    2020, Sec. 4.1.2's two losses, combined as in Sec. 6 and their appendix's code), with uniformity over the global
    batch (`selfsup.losses.alignment_uniformity`).

    Expects exactly two views per image (SimCLR's); the projector is SimCLR's MLP with the paper's 128-dimensional
    output, normalised onto the sphere by the loss. Logs `train/alignment` and `train/uniformity` (unweighted) and
    `train/hard_negative_sim`, the mean similarity of each view's most similar view of another image, as SimCLR does.
    The other options (backbone, optimizer, data values) are `Method`'s."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        alpha: float = ALPHA,
        t: float = T,
        uniformity_weight: float = UNIFORMITY_WEIGHT,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 128,
        projector_num_layers: int = 2,
        **kwargs,
    ) -> None:
        """
        Args:
            alpha: the exponent of the positive pairs' distance in L_align (paper: 2).
            t: the scale of the Gaussian potential in L_uniform (paper: 2).
            uniformity_weight: lambda, the weight of the uniformity term against alignment (the official code's 1).
                Alignment alone is minimised by mapping every image to one point: it must be above 0.
            projector_hidden_dim: width of the projection MLP's hidden layer.
            projector_output_dim: dimension of the embeddings on the sphere (paper: 128).
            projector_num_layers: linear layers of the projection MLP.
        """
        dims = dict(projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        problems = positive(alpha=alpha, t=t, uniformity_weight=uniformity_weight)
        problems += at_least(1, **dims, projector_num_layers=projector_num_layers)
        check_options(problems, "--model.init_args")
        super().__init__(**kwargs)
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, num_layers=projector_num_layers
        )

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z_a, z_b = self.projector(torch.cat(features)).chunk(2)  # (N, D) each; one BN over both views, as SimCLR
        hp = self.hparams
        terms = align_uniform_terms(z_a, z_b, hp.alpha, hp.t)
        metrics = {Metric.ALIGNMENT: terms.alignment.detach(), Metric.UNIFORMITY: terms.uniformity.detach()}
        return terms.loss(hp.uniformity_weight), metrics | terms.hardness
