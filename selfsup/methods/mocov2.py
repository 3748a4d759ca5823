"""MoCo v2: contrast each query with its momentum-encoded key and a queue of earlier keys.

"Improved Baselines with Momentum Contrastive Learning" (Chen et al., 2020): MoCo ("Momentum Contrast for
Unsupervised Visual Representation Learning", He et al., CVPR 2020) with an MLP head, blur and a cosine
schedule. The loss is `selfsup.losses.queue_info_nce`; with `mixing`, each query also gets synthetic hard
negatives (MoCHi, `selfsup.methods.mochi`).

Batch norm under DDP: MoCo's shuffle-BN exists so that the key encoder cannot use the statistics of its own
small per-GPU batch as a shortcut. We use SyncBatchNorm instead (`trainer.sync_batchnorm: true` in the
configs): statistics over the global batch leak as little, need no extra all-to-all of the images, and work
unchanged on one device, where there is nothing to shuffle across.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.augment import ViewRecipe, mocov2_views
from selfsup.errors import at_least, check_options, positive
from selfsup.losses import queue_info_nce_and_hardness
from selfsup.losses.cacr import AttractionRepulsion
from selfsup.losses.debiased import DebiasedNegatives
from selfsup.losses.info_nce import negatives_conflicts
from selfsup.methods.base import MomentumMethod
from selfsup.models import projection_mlp
from selfsup.models.feature_transformation import FeatureTransformation, transformation_conflicts
from selfsup.models.hard_negative_mixing import HardNegativeMixing
from selfsup.models.queue import EmbeddingQueue


class MoCoV2(MomentumMethod):
    """MoCo v2: each query is contrasted with its momentum-encoded key and a queue of earlier keys ("Improved
    Baselines with Momentum Contrastive Learning", Chen et al., 2020; MoCo: He et al., CVPR 2020, eq. 1).

    Expects at least two views per image (the first two make the query-key pairs). The key encoder is an EMA
    copy of backbone and projector (`tau_base`, `tau_final`); the queue holds `queue_size` keys, shared by all
    ranks. `mixing` turns it into MoCHi; `negatives` (debiased, hard negatives) and `cacr` act on the queue as
    SimCLR's options on its in-batch negatives; `transformation` extrapolates query-key pairs and interpolates the
    queue's keys (FT, Zhu et al., ICCV 2021). Logs `train/hard_negative_sim` and `train/tau`. Under DDP the configs
    use SyncBatchNorm in place of shuffle-BN (see the module docstring)."""

    VIEWS_PER_IMAGE = (2, None)  # the first two views make the query-key pairs
    ENCODERS = {"online": "backbone", "momentum": "key_backbone"}

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 16384,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 128,
        symmetric: bool = True,
        decoupled: bool = False,
        mixing: HardNegativeMixing = HardNegativeMixing(),
        negatives: DebiasedNegatives = DebiasedNegatives(),
        cacr: AttractionRepulsion = AttractionRepulsion(),
        transformation: FeatureTransformation = FeatureTransformation(),
        views: tuple[ViewRecipe, ...] = mocov2_views(),
        optimizer: Literal["lars", "sgd", "adamw"] = "sgd",
        base_lr: float = 0.3,
        weight_decay: float = 1e-4,
        tau_base: float = 0.99,
        tau_final: float = 0.99,
        **kwargs,
    ) -> None:
        """
        Args:
            temperature: softmax temperature of the InfoNCE logits (MoCo v2: 0.2).
            queue_size: number of negative keys kept (65,536 on ImageNet).
            projector_hidden_dim: hidden width of the MLP head.
            projector_output_dim: dimension of queries and keys.
            symmetric: also contrast the second view's query with the first view's key, and average.
            decoupled: leave the positive out of the denominator (DCL).
            mixing: hard negative mixing over the queue (off for MoCo v2, on for MoCHi).
            negatives: the debiased estimator of the negative term over the queue (tau_plus, Chuang et al. 2020) and
                hard negative sampling on top of it (beta, Robinson et al. 2021); off by default.
            cacr: contrastive attraction and repulsion in place of InfoNCE (Zheng et al. 2021); off by default.
            transformation: positive extrapolation and interpolation of the queue's keys (FT; off by default).
            views: the augmentation recipe (MoCo v2's by default).
            optimizer: SGD, as MoCo v2.
            base_lr: learning rate per 256 images (solo-learn's CIFAR setting for MoCo v2+).
            weight_decay: MoCo v2's 1e-4.
            tau_base: key-encoder momentum at the start (MoCo: 0.99 or 0.999).
            tau_final: key-encoder momentum at the end (equal to tau_base: constant, as MoCo).
        """
        sizes = at_least(
            1,
            queue_size=queue_size,
            projector_hidden_dim=projector_hidden_dim,
            projector_output_dim=projector_output_dim,
        )
        mixing, transformation = HardNegativeMixing.from_dict(mixing), FeatureTransformation.from_dict(transformation)
        negatives, cacr = DebiasedNegatives.from_dict(negatives), AttractionRepulsion.from_dict(cacr)
        conflicts = transformation_conflicts(transformation, mixing)
        conflicts += negatives_conflicts(
            negatives, cacr, decoupled, mixing.num_hard > 0, transformation=transformation.enabled
        )
        check_options(positive(temperature=temperature) + sizes + conflicts, "--model.init_args")
        super().__init__(
            views=views,
            optimizer=optimizer,
            base_lr=base_lr,
            weight_decay=weight_decay,
            tau_base=tau_base,
            tau_final=tau_final,
            **kwargs,
        )
        self.projector = projection_mlp(self.feature_dim, projector_hidden_dim, projector_output_dim)
        self.key_backbone = self.momentum_copy(self.backbone)
        self.key_projector = self.momentum_copy(self.projector)
        self.queue = EmbeddingQueue(queue_size, projector_output_dim)
        self.mixing, self.negatives, self.cacr = mixing, negatives, cacr
        self.transformation = transformation

    def _keys(self, view: Tensor) -> Tensor:
        with torch.no_grad():
            return F.normalize(self.key_projector(self.key_backbone(view)).float(), dim=1)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        pairs = range(2 if hp.symmetric else 1)
        queries = [F.normalize(self.projector(features[i]).float(), dim=1) for i in pairs]
        keys = [self._keys(views[1 - i]) for i in pairs]  # each query's positive: the key of the other view
        queued = self.queue.keys.clone()  # autograd keeps it for backward, and enqueue writes in place
        mixing = self.mixing.at_epoch(self.current_epoch)
        transformation = self.transformation.at_epoch(self.current_epoch)
        options = (hp.temperature, hp.decoupled, mixing, self.negatives, self.cacr, transformation)
        results = [queue_info_nce_and_hardness(q, k, queued, *options) for q, k in zip(queries, keys, strict=True)]
        self.queue.enqueue(torch.cat(keys), labels.repeat(len(keys)))  # after the loss: never its own negative
        loss = torch.stack([result.loss for result in results]).mean()
        return loss, results[0].hardness  # the first view's queries report the step's hardness
