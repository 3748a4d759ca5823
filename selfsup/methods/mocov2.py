"""MoCo v2 and MoCHi: contrast each query with its momentum-encoded key and a queue of earlier keys.

"Improved Baselines with Momentum Contrastive Learning" (Chen et al., 2020): MoCo ("Momentum Contrast for
Unsupervised Visual Representation Learning", He et al., CVPR 2020) with an MLP head, blur and a cosine
schedule. MoCHi ("Hard Negative Mixing for Contrastive Learning", Kalantidis et al., NeurIPS 2020) adds
synthetic hard negatives to each query's logits (`selfsup.models.hard_negative_mixing`).

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
from selfsup.losses import info_nce
from selfsup.methods.base import MomentumMethod
from selfsup.models import projection_mlp
from selfsup.models.hard_negative_mixing import mix_hard_negatives
from selfsup.models.queue import EmbeddingQueue


class MoCoV2(MomentumMethod):
    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 16384,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 128,
        symmetric: bool = True,
        decoupled: bool = False,
        num_hard: int = 0,
        num_mixed: int = 0,
        num_query_mixed: int = 0,
        mixing_start_epoch: int = 0,
        views: tuple[ViewRecipe, ...] = mocov2_views(32),
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
            num_hard: MoCHi's N, the hardest queue negatives per query that mixing draws from (0: no mixing).
            num_mixed: MoCHi's s, synthetic negatives mixed from pairs of hard negatives.
            num_query_mixed: MoCHi's s', synthetic negatives mixed from the query and a hard negative.
            mixing_start_epoch: first epoch with mixing.
            views: the augmentation recipe (MoCo v2's by default).
            optimizer: SGD, as MoCo v2.
            base_lr: learning rate per 256 images (solo-learn's CIFAR setting for MoCo v2+).
            weight_decay: MoCo v2's 1e-4.
            tau_base: key-encoder momentum at the start (MoCo: 0.99 or 0.999).
            tau_final: key-encoder momentum at the end (equal to tau_base: constant, as MoCo).
        """
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

    def _keys(self, view: Tensor) -> Tensor:
        with torch.no_grad():
            return F.normalize(self.key_projector(self.key_backbone(view)).float(), dim=1)

    def _contrast(self, queries: Tensor, keys: Tensor, negatives: Tensor) -> Tensor:
        """InfoNCE of queries (B, D) over [own key, queue negatives (K, D), synthetic negatives if mixing]."""
        hp = self.hparams
        logits = [(queries * keys).sum(dim=1, keepdim=True), queries @ negatives.T]  # (B, 1), (B, K)
        if hp.num_hard > 0 and self.current_epoch >= hp.mixing_start_epoch:
            mixed = mix_hard_negatives(queries, negatives, hp.num_hard, hp.num_mixed, hp.num_query_mixed)
            logits.append(torch.einsum("bd,bsd->bs", queries, mixed.negatives))  # (B, s + s')
            self.log("train/hard_negative_sim", mixed.hardest_similarity, batch_size=queries.shape[0])
            self.log("train/synthetic_negative_sim", mixed.synthetic_similarity, batch_size=queries.shape[0])
            self.log("train/synthetic_harder_fraction", mixed.harder_fraction, batch_size=queries.shape[0])
        logits = torch.cat(logits, dim=1) / hp.temperature
        positive = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
        return info_nce(logits, positive, hp.decoupled)

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> Tensor:
        pairs = range(2 if self.hparams.symmetric else 1)
        queries = [F.normalize(self.projector(features[i]).float(), dim=1) for i in pairs]
        keys = [self._keys(views[1 - i]) for i in pairs]  # each query's positive: the key of the other view
        negatives = self.queue.keys.clone()  # autograd keeps it for backward, and enqueue writes in place
        loss = torch.stack([self._contrast(q, k, negatives) for q, k in zip(queries, keys, strict=True)]).mean()
        self.queue.enqueue(torch.cat(keys), labels.repeat(len(keys)))  # after the loss: never its own negative
        return loss
