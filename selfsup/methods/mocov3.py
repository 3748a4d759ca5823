"""MoCo v3: queries from a predictor contrasted with the momentum keys of the whole global batch, no queue ("An
Empirical Study of Training Self-Supervised Vision Transformers", Chen, Xie and He, ICCV 2021).

The defaults are the paper's ResNet setting (LARS, temperature 1.0, a 2-layer projector as in the official code);
`selfsup/configs/mocov3_vit.yaml` is its ViT setting (AdamW, temperature 0.2, a 3-layer projector, the random
fixed patch projection of Sec. 4.2) for a ViT-S/4 on 32 px images.
"""

from typing import Any, Literal

import torch
from torch import Tensor, nn

from selfsup.augment import ViewRecipe, byol_views
from selfsup.errors import at_least, check_options, positive
from selfsup.losses import mocov3_info_nce
from selfsup.methods.base import MomentumMethod
from selfsup.models import projection_mlp
from selfsup.models.backbones import freeze_patch_embedding
from selfsup.models.neighbours import NearestNeighbours


class MoCoV3(MomentumMethod):
    """MoCo v3: ctr(q1, k2) + ctr(q2, k1), each query against the keys of every rank ("An Empirical Study of
    Training Self-Supervised Vision Transformers", Chen, Xie and He, ICCV 2021, Algorithm 1).

    backbone -> projector (batch norm on every layer, the last without affine) -> predictor gives the queries;
    an EMA copy of backbone and projector gives the keys, with momentum from `tau_base` to `tau_final` on a cosine
    schedule (logs `train/tau`). Expects exactly two views per image (BYOL's recipe, as the paper).
    `random_patch_projection` freezes a ViT's patch embedding at its random initialisation (Sec. 4.2); `neighbours`
    contrasts each query with nearest neighbours of the keys (logs `train/nn_accuracy`)."""

    VIEWS_PER_IMAGE = (2, 2)
    ENCODERS = {"online": "backbone", "momentum": "momentum_backbone"}

    def __init__(
        self,
        temperature: float = 1.0,
        projector_num_layers: int = 2,
        projector_hidden_dim: int = 4096,
        projector_output_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        random_patch_projection: bool = False,
        neighbours: NearestNeighbours = NearestNeighbours(),
        views: tuple[ViewRecipe, ...] = byol_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "lars",
        base_lr: float = 0.3,
        weight_decay: float = 1.5e-6,
        tau_base: float = 0.99,
        tau_final: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            temperature: softmax temperature of the contrastive logits (ResNet: 1.0; ViT: 0.2).
            projector_num_layers: linear layers of the projection MLP (official code: 2 for a ResNet, 3 for a ViT).
            projector_hidden_dim: hidden width of the projection MLP.
            projector_output_dim: dimension of queries and keys.
            predictor_hidden_dim: hidden width of the 2-layer predictor.
            random_patch_projection: keep a ViT's patch embedding at its random initialisation (Sec. 4.2); an
                error for a backbone without one.
            neighbours: replace each key by its nearest neighbours among earlier keys, the candidates of every
                query too (as NNCLR does for SimCLR).
            views: the augmentation recipe (BYOL's asymmetric pair, as the paper).
            optimizer: LARS for a ResNet (AdamW for a ViT).
            base_lr: learning rate per 256 images: the official ResNet-50 setting for 300 and 1000 epochs, LARS at
                batch 4096 (0.6 for 100 epochs; ViT with AdamW: 1.5e-4).
            weight_decay: the official 1000-epoch ResNet-50 setting (ViT with AdamW: 0.1).
            tau_base: key-encoder momentum at the start (the paper's 0.99).
            tau_final: key-encoder momentum at the end (1.0: the cosine schedule of the official code).
        """
        dims = dict(projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
        sizes = at_least(
            1, projector_num_layers=projector_num_layers, predictor_hidden_dim=predictor_hidden_dim, **dims
        )
        check_options(positive(temperature=temperature) + sizes, "--model.init_args")
        neighbours = NearestNeighbours.from_dict(neighbours)
        super().__init__(
            views=views, optimizer=optimizer, base_lr=base_lr, weight_decay=weight_decay, tau_base=tau_base,
            tau_final=tau_final, **kwargs,
        )  # fmt: skip
        self.projector = projection_mlp(
            self.feature_dim, projector_hidden_dim, projector_output_dim, projector_num_layers, batch_norm_last=True
        )
        self.predictor = projection_mlp(projector_output_dim, predictor_hidden_dim, projector_output_dim)
        self.momentum_backbone = self.momentum_copy(self.backbone)
        self.momentum_projector = self.momentum_copy(self.projector)
        self.support_set = neighbours.support_set(projector_output_dim)

    def _build_backbone(self) -> nn.Module:
        """The backbone, with its patch embedding frozen under `random_patch_projection` (also when `setup`
        rebuilds it for the data's image size)."""
        backbone = super()._build_backbone()
        if self.hparams.random_patch_projection:
            freeze_patch_embedding(backbone, self.hparams.backbone)
        return backbone

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        q1, q2 = self.predictor(self.projector(torch.cat(features))).chunk(2)  # (N, D) each
        with torch.no_grad():
            k1, k2 = self.momentum_projector(self.momentum_backbone(torch.cat(views))).chunk(2)
        metrics = {}
        if self.support_set is not None:  # each key replaced by its neighbours among earlier keys
            (k2, k1), metrics = self.support_set.swap([k2, k1], labels if self.labelled else None)
        temperature = self.hparams.temperature
        # Algorithm 1: each view's queries against the other view's keys of the global batch
        return mocov3_info_nce(q1, k2, temperature) + mocov3_info_nce(q2, k1, temperature), metrics
