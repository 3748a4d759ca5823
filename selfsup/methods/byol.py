"""BYOL: an online network with a predictor regresses the target network's projection of another view;
the target is a momentum copy of the online backbone and projector ("Bootstrap Your Own Latent",
Grill et al., NeurIPS 2020).

With `neighbours` on, each target is replaced by its nearest neighbours among earlier targets: NNBYOL
(`selfsup.methods.nnbyol`) and Mean Shift (`selfsup.methods.msf`)."""

import torch
from torch import Tensor

from selfsup.augment import ViewRecipe, byol_views
from selfsup.errors import at_least, check_options
from selfsup.losses.byol import normalized_mse
from selfsup.methods.base import MomentumMethod
from selfsup.models import projection_mlp
from selfsup.models.neighbours import NearestNeighbours


class BYOL(MomentumMethod):
    """BYOL: an online network with a predictor regresses a momentum target's projection of the other view
    ("Bootstrap Your Own Latent", Grill et al., NeurIPS 2020, eq. 2, symmetrised).

    Expects at least two views per image (BYOL's asymmetric recipe by default); no negatives. The target is an
    EMA copy of backbone and projector whose momentum goes from `tau_base` to `tau_final` on a cosine schedule;
    logs `train/tau`. `neighbours` regresses the nearest neighbours of each target in a support set of earlier
    targets instead (NNBYOL, Mean Shift) and logs `train/nn_accuracy`."""

    VIEWS_PER_IMAGE = (2, None)  # the first two views regress each other
    ENCODERS = {"online": "backbone", "momentum": "target_backbone"}

    def __init__(
        self,
        projector_hidden_dim: int = 4096,
        projector_output_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        symmetric: bool = True,
        neighbours: NearestNeighbours = NearestNeighbours(),
        views: tuple[ViewRecipe, ...] = byol_views(),
        base_lr: float = 1.0,
        tau_base: float = 0.99,
        tau_final: float = 1.0,
        **kwargs,
    ) -> None:
        """
        Args:
            projector_hidden_dim: hidden width of the projection MLP.
            projector_output_dim: dimension of projections and predictions.
            predictor_hidden_dim: hidden width of the predictor MLP.
            symmetric: also regress the second view's prediction on the first view's target (BYOL's loss is the
                sum of both directions); False: the first view predicts the second view's target only (Mean Shift).
            neighbours: regress the target's nearest neighbours among earlier targets (NNBYOL, Mean Shift).
            views: the augmentation recipe (BYOL's asymmetric pair by default).
            base_lr: learning rate per 256 images (solo-learn's CIFAR setting for BYOL with LARS).
            tau_base: target momentum at the start (BYOL: 0.99 at batch 4096, 0.996 in its paper's table).
            tau_final: target momentum at the end (1.0: the cosine schedule of the paper).
        """
        dims = dict(projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        check_options(at_least(1, **dims, predictor_hidden_dim=predictor_hidden_dim), "--model.init_args")
        neighbours = NearestNeighbours.from_dict(neighbours)
        super().__init__(views=views, base_lr=base_lr, tau_base=tau_base, tau_final=tau_final, **kwargs)
        self.projector = projection_mlp(self.feature_dim, projector_hidden_dim, projector_output_dim)
        self.predictor = projection_mlp(projector_output_dim, predictor_hidden_dim, projector_output_dim)
        self.target_backbone = self.momentum_copy(self.backbone)
        self.target_projector = self.momentum_copy(self.projector)
        self.support_set = neighbours.support_set(projector_output_dim)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # (view predicting, view whose target it regresses): eq. 2 and its mirror, or eq. 2 alone
        pairs = ((0, 1), (1, 0)) if self.hparams.symmetric else ((0, 1),)
        predicting = sorted({view for view, _ in pairs})  # the heads (and their batch norm) see only these views
        projected = self.projector(torch.cat([features[view] for view in predicting]))
        predictions = dict(zip(predicting, self.predictor(projected).chunk(len(predicting)), strict=True))
        with torch.no_grad():
            target_views = torch.cat([views[target] for _, target in pairs])
            targets = list(self.target_projector(self.target_backbone(target_views)).chunk(len(pairs)))
        metrics = {}
        if self.support_set is not None:
            targets, metrics = self.support_set.swap(targets, labels if self.labelled else None)
        loss = sum(normalized_mse(predictions[p], target) for (p, _), target in zip(pairs, targets, strict=True))
        return loss, metrics
