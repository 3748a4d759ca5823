"""SwAV: online clustering with swapped prediction over multi-crop views ("Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", Caron et al., NeurIPS 2020).

Every crop is projected, normalized and scored against the prototypes; codes for the global crops come from
Sinkhorn-Knopp over the global batch (and, optionally, a queue of earlier embeddings); each crop predicts the
codes of the other global crops (`selfsup.losses.swav`). The prototypes are renormalized before each step and
get no gradient during the first epoch (or the first `freeze_prototypes_steps` steps), as in the paper.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.augment import ViewRecipe, multicrop_views
from selfsup.distributed import gather, rank, world_size
from selfsup.errors import at_least, check_options, positive
from selfsup.losses import sinkhorn_knopp, swapped_prediction_loss
from selfsup.methods.base import Method
from selfsup.models import Prototypes, projection_mlp
from selfsup.models.queue import EmbeddingQueue
from selfsup.runs import Metric


class SwAV(Method):
    """SwAV: online clustering by swapped prediction over multi-crop views ("Unsupervised Learning of Visual
    Features by Contrasting Cluster Assignments", Caron et al., NeurIPS 2020, eq. 1 and 3, Sec. 3.2).

    Expects at least two views per image; the first view recipe's views are the global crops that get
    Sinkhorn-Knopp codes over the global batch (and an optional queue), every crop predicts the codes of the
    other global crops. Logs `train/prototype_usage` and `train/assignment_entropy`."""

    VIEWS_PER_IMAGE = (2, None)  # each crop predicts the code of another global crop

    def __init__(
        self,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        sinkhorn_float64: bool = False,
        freeze_prototypes_steps: int | None = None,
        queue_size: int = 0,
        queue_start_epoch: int = 0,
        projector_hidden_dim: int = 2048,
        projector_output_dim: int = 128,
        views: tuple[ViewRecipe, ...] = multicrop_views(),
        base_lr: float = 0.6,
        weight_decay: float = 1e-6,
        **kwargs,
    ) -> None:
        """
        Args:
            num_prototypes: K, the number of clusters (3000 on ImageNet; a few hundred suit 10-class data).
            temperature: softmax temperature of the predictions (paper: 0.1).
            sinkhorn_epsilon: entropic regularisation of the codes (paper: 0.05).
            sinkhorn_iterations: Sinkhorn-Knopp iterations (paper: 3).
            sinkhorn_float64: run Sinkhorn in float64 rather than float32.
            freeze_prototypes_steps: optimizer steps during which the prototypes get no gradient; None freezes
                them for the first epoch (the official code: 313 iterations, about one ImageNet epoch at 4096).
            queue_size: embeddings of earlier batches per global crop that join the codes' Sinkhorn problem,
                so that small batches still spread over K prototypes (paper: 3840 at batch 256; 0: no queue).
            queue_start_epoch: first epoch that fills the queue; it joins Sinkhorn once full.
            projector_hidden_dim: hidden width of the projection MLP.
            projector_output_dim: dimension of the embeddings and prototypes.
            views: the crops; the first recipe's views are the global crops that get codes (multi-crop by
                default: 2 global crops + 4 local ones at half their size; ImageNet: multicrop_views(6, 96 / 224)).
            base_lr: learning rate per 256 images (solo-learn's CIFAR setting for SwAV with LARS).
            weight_decay: SwAV's 1e-6.
        """
        check_options(
            positive(temperature=temperature, sinkhorn_epsilon=sinkhorn_epsilon)
            + at_least(2, num_prototypes=num_prototypes)
            + at_least(1, sinkhorn_iterations=sinkhorn_iterations)
            + at_least(1, projector_hidden_dim=projector_hidden_dim, projector_output_dim=projector_output_dim)
            + at_least(0, queue_size=queue_size, queue_start_epoch=queue_start_epoch)
            + at_least(0, freeze_prototypes_steps=freeze_prototypes_steps or 0),  # None: the first epoch
            "--model.init_args",
        )
        super().__init__(views=views, base_lr=base_lr, weight_decay=weight_decay, **kwargs)
        self.num_global_crops = self.multiview.recipes[0].num_views
        self.projector = projection_mlp(self.feature_dim, projector_hidden_dim, projector_output_dim)
        self.prototypes = Prototypes(projector_output_dim, num_prototypes)
        self.queues = nn.ModuleList(
            EmbeddingQueue(queue_size, projector_output_dim) for _ in range(self.num_global_crops if queue_size else 0)
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.prototypes.normalize_()

    def on_after_backward(self) -> None:
        steps = self.hparams.freeze_prototypes_steps
        if (self.current_epoch == 0) if steps is None else (self.global_step < steps):
            self.prototypes.weight.grad = None  # the optimizer skips it: no update, no weight decay

    def ssl_loss(self, features: list[Tensor], views: list[Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        batch = features[0].shape[0]
        embeddings = F.normalize(self.projector(torch.cat(features)), dim=1)  # one BN over all crops
        scores = self.prototypes(embeddings).split(batch)
        crop_embeddings = embeddings.detach().split(batch)
        codes = [self._codes(scores[i], crop_embeddings[i], queue_index=i) for i in range(self.num_global_crops)]
        return swapped_prediction_loss(list(scores), codes, self.hparams.temperature), assignment_metrics(codes)

    @torch.no_grad()
    def _codes(self, scores: Tensor, embeddings: Tensor, queue_index: int) -> Tensor:
        """Sinkhorn codes of this batch; a full queue adds its embeddings to the problem (each rank takes its own
        stride of the shared queue, so that the global problem holds every queued embedding exactly once)."""
        hp = self.hparams
        batch = scores.shape[0]
        if self.queues and self.current_epoch >= hp.queue_start_epoch:
            queue = self.queues[queue_index]
            if queue.is_full:
                scores = torch.cat([self.prototypes(queue.keys[rank() :: world_size()]), scores])
            queue.enqueue(embeddings)
        dtype = torch.float64 if hp.sinkhorn_float64 else torch.float32
        return sinkhorn_knopp(scores, hp.sinkhorn_epsilon, hp.sinkhorn_iterations, dtype)[-batch:]


@torch.no_grad()
def assignment_metrics(codes: list[Tensor]) -> dict[str, Tensor]:
    """Prototype usage (fraction of prototypes that are some sample's argmax in the global batch) and the
    entropy of those hard assignments in nats (log K when spread evenly, 0 when collapsed). Shapes stay fixed
    (one-hot counts, entr(0) = 0), so a compiled step keeps one graph."""
    assignments = torch.cat(codes)
    counts = F.one_hot(gather(assignments.argmax(dim=1)), assignments.shape[1]).sum(dim=0).float()
    return {
        Metric.PROTOTYPE_USAGE: (counts > 0).float().mean(),
        Metric.ASSIGNMENT_ENTROPY: torch.special.entr(counts / counts.sum()).sum(),
    }
