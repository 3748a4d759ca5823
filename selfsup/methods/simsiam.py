"""SimSiam: a predictor on one view regresses the stop-gradient projection of the other, with no negatives and
no momentum encoder ("Exploring Simple Siamese Representation Learning", Chen and He, CVPR 2021)."""

from typing import Literal

import torch
from torch import Tensor

from selfsup.augment import ViewRecipe, mocov2_views
from selfsup.errors import at_least, check_options
from selfsup.losses import negative_cosine_similarity, normalized_output_std
from selfsup.methods.base import Method
from selfsup.models import projection_mlp
from selfsup.models.neighbours import NearestNeighbours
from selfsup.runs import Metric


class SimSiam(Method):
    """SimSiam: the predictor's output for each view against the other view's projection, taken as a constant
    ("Exploring Simple Siamese Representation Learning", Chen and He, CVPR 2021, Algorithm 1, eq. 4).

    Encoder f = backbone + projection MLP (batch norm on every layer, the output's without affine), predictor
    h = a 512-wide bottleneck MLP. The defaults are the paper's CIFAR-10 setting (its appendix: a 2-layer
    projector, SGD at 0.03 per 256 images, weight decay 5e-4); its ImageNet setting is `projector_num_layers=3`,
    `base_lr=0.05`, `weight_decay=1e-4`. The predictor keeps its peak learning rate throughout (Sec. 4.2, Table 1).
    Logs `train/output_std`, the collapse monitor of Fig. 2 (about 1/sqrt(projector_output_dim) when healthy, 0
    collapsed). `neighbours` regresses the nearest neighbours of the other view's projection instead (NNSiam) and
    logs `train/nn_accuracy`."""

    VIEWS_PER_IMAGE = (2, 2)

    def __init__(
        self,
        projector_num_layers: int = 2,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 2048,
        predictor_hidden_dim: int = 512,
        fixed_predictor_lr: bool = True,
        neighbours: NearestNeighbours = NearestNeighbours(),
        views: tuple[ViewRecipe, ...] = mocov2_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "sgd",
        base_lr: float = 0.03,
        weight_decay: float = 5e-4,
        warmup_epochs: float = 0.0,
        **kwargs,
    ) -> None:
        """
        Args:
            projector_num_layers: linear layers of the projection MLP (CIFAR: 2; ImageNet: 3).
            projector_hidden_dim: hidden width of the projection MLP.
            projector_output_dim: dimension of projections and predictions.
            predictor_hidden_dim: the predictor's bottleneck width (Sec. 3: 512, a quarter of 2048).
            fixed_predictor_lr: keep the predictor at the peak learning rate, neither warmed up nor decayed (Sec.
                4.2, Table 1: slightly better than decaying it with the rest).
            neighbours: regress the nearest neighbours of the other view's projection among earlier projections
                (NNSiam, `selfsup.methods.nnsiam`).
            views: the augmentation recipe (MoCo v2's, which the paper uses).
            optimizer: SGD, as the paper (Sec. 4.3: no large-batch optimizer is needed).
            base_lr: learning rate per 256 images (the CIFAR-10 appendix; ImageNet: 0.05).
            weight_decay: the CIFAR-10 appendix's 5e-4 (ImageNet: 1e-4).
            warmup_epochs: none, as the paper: SGD at batch 512 with a plain cosine decay; warmup is for large
                batches (Goyal et al. 2017), and the default batch is 512.
        """
        dims = dict(projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        sizes = at_least(
            1, projector_num_layers=projector_num_layers, predictor_hidden_dim=predictor_hidden_dim, **dims
        )
        check_options(sizes, "--model.init_args")
        neighbours = NearestNeighbours.from_dict(neighbours)
        super().__init__(
            views=views, optimizer=optimizer, base_lr=base_lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
            **kwargs,
        )  # fmt: skip
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, projector_num_layers, batch_norm_last=True
        )
        self.predictor = projection_mlp(projector_output_dim, predictor_hidden_dim, projector_output_dim)
        self.support_set = neighbours.support_set(projector_output_dim)

    def constant_lr_modules(self) -> tuple[str, ...]:
        return ("predictor",) if self.hparams.fixed_predictor_lr else ()

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        projections = self.projector(torch.cat(features))  # (2N, D): one batch norm over both views
        z1, z2 = projections.chunk(2)
        p1, p2 = self.predictor(projections).chunk(2)
        metrics = {Metric.OUTPUT_STD: normalized_output_std(projections)}
        if self.support_set is not None:  # each projection replaced by its neighbours among earlier ones
            (z1, z2), found = self.support_set.swap([z1, z2], labels if self.labelled else None)
            metrics |= found
        # eq. (4): each view's prediction against the other view's projection, a constant
        loss = negative_cosine_similarity(p1, z2) / 2 + negative_cosine_similarity(p2, z1) / 2
        return loss, metrics
