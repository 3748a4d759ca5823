"""Nearest-neighbour targets: a method's target embedding is replaced by its nearest neighbours in a support set of
earlier targets, so that the positive of an image is another image the network already finds similar.

- NNCLR ("With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual Representations",
  Dwibedi et al., ICCV 2021, eq. 2): SimCLR's positive replaced by its single nearest neighbour; the support set
  is filled after the lookup, so a sample is never its own neighbour.
- NNBYOL and NNSiam (as solo-learn names them): the same swap for BYOL's and SimSiam's regression targets.
- Mean Shift ("Mean Shift for Self-Supervised Learning", Koohpayegani, Tejankar and Pirsiavash, ICCV 2021, Sec. 3):
  the target's k nearest neighbours (k = 5), the target itself among them, since the batch joins the support set
  before the lookup; the loss is the mean over the k neighbours.

`NearestNeighbours` holds these settings once, as `HardNegativeMixing` does for mixing, and any method with a
projection takes it as its `neighbours` option. The support set is an `EmbeddingQueue`: identical on every rank
(each write gathers every rank's targets), saved in checkpoints, and searched exhaustively, so the neighbours are
exact and the same whatever the number of GPUs.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import at_least, check_options
from selfsup.models.queue import EmbeddingQueue
from selfsup.runs import Metric


@dataclass(frozen=True)
class NearestNeighbours:
    """Where a method's targets come from: themselves (the default, `support_size` 0), or their nearest neighbours in
    a support set of earlier targets (NNCLR, NNBYOL, NNSiam, Mean Shift).

    Attributes:
        support_size: targets kept in the support set (0: off). NNCLR: 98,304 on ImageNet; 16,384 suits 60k images.
        num_neighbours: k, the neighbours each target is replaced by; the loss is the mean over them (Mean Shift: 5).
        include_batch: write the batch's targets into the support set before the lookup, so that each target is
            among its own neighbours (Mean Shift); otherwise after it, so that it never is (NNCLR).
    """

    support_size: int = 0
    num_neighbours: int = 1
    include_batch: bool = False

    def __post_init__(self) -> None:
        problems = at_least(0, support_size=self.support_size) + at_least(1, num_neighbours=self.num_neighbours)
        if self.support_size and self.num_neighbours > self.support_size:
            too_many = f"num_neighbours ({self.num_neighbours}) must not exceed support_size ({self.support_size})"
            problems.append(too_many)
        check_options(problems, "--model.init_args.neighbours")

    @classmethod
    def from_dict(cls, values: "NearestNeighbours | dict") -> "NearestNeighbours":
        """The settings from config values (as checkpoints store them), or `values` itself."""
        return values if isinstance(values, cls) else cls(**values)

    def support_set(self, dim: int) -> "SupportSet | None":
        """The support set for targets of width `dim`; None when the targets are their own."""
        if not self.support_size:
            return None
        return SupportSet(self.support_size, dim, self.num_neighbours, self.include_batch)


class Neighbours(NamedTuple):
    """The nearest neighbours of a batch of targets, and their labels (for the logged neighbour accuracy)."""

    embeddings: Tensor  # (B, k, D) unit-norm, no gradient
    labels: Tensor  # (B, k), -1 where unknown


class SupportSet(EmbeddingQueue):
    """An `EmbeddingQueue` of earlier targets searched for each target's `num_neighbours` nearest neighbours by cosine
    similarity (NNCLR, Dwibedi et al., ICCV 2021, eq. 1; Mean Shift, Koohpayegani et al., ICCV 2021, Sec. 3).

    Its state dict is the queue's, so NNCLR checkpoints written before this class existed load unchanged."""

    def __init__(self, size: int, dim: int, num_neighbours: int = 1, include_batch: bool = False) -> None:
        super().__init__(size, dim)
        self.num_neighbours = num_neighbours
        self.include_batch = include_batch

    @torch.no_grad()
    def nearest(self, targets: Tensor) -> Neighbours:
        """The `num_neighbours` written entries nearest to each target (B, D), nearest first. Where fewer are written,
        the target stands in for the missing ones (with nothing written yet, each target is its own neighbour).
        Unwritten slots are masked rather than sliced off: shapes never depend on the fill, and a compiled step
        needs no host sync. The similarities are float32 also under bf16 autocast, whose 8 bits of mantissa would
        tell apart similarities near 1 only to about 0.004 and change which entries are nearest."""
        targets = F.normalize(targets.detach().to(self.keys.dtype), dim=1)
        written = torch.arange(self.size, device=self.keys.device) < self.filled  # slots fill in order
        with torch.autocast(self.keys.device.type, enabled=False):
            similarity = (targets @ self.keys.T).masked_fill(~written, float("-inf"))  # (B, size)
        nearest_similarity, index = similarity.topk(self.num_neighbours, dim=1)  # (B, k)
        found = (nearest_similarity > float("-inf"))[..., None]
        embeddings = torch.where(found, self.keys[index], targets[:, None])  # (B, k, D)
        return Neighbours(embeddings, torch.where(found[..., 0], self.labels[index], -1))

    def swap(self, targets: list[Tensor], labels: Tensor | None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Each entry of `targets` (B, D) replaced by its neighbours (B, k, D), and the first entry, unit-norm, written
        into the support set (before the lookup with `include_batch`, after it otherwise): the caller orders the list
        so that the targets it wants remembered come first. With labels, the first entry's neighbour accuracy is
        returned as a metric (with `include_batch`, each target counts among its own neighbours, as Mean Shift's
        purity does)."""
        targets = [F.normalize(view_targets.detach().float(), dim=1) for view_targets in targets]
        labels_or_unknown = labels if labels is not None else torch.full_like(targets[0][:, 0], -1, dtype=torch.long)
        if self.include_batch:
            self.enqueue(targets[0], labels_or_unknown)
        found = [self.nearest(view_targets) for view_targets in targets]
        if not self.include_batch:
            self.enqueue(targets[0], labels_or_unknown)
        metrics = {Metric.NN_ACCURACY: neighbour_accuracy(found[0].labels, labels)} if labels is not None else {}
        return [neighbours.embeddings for neighbours in found], metrics


def neighbour_accuracy(neighbour_labels: Tensor, labels: Tensor) -> Tensor:
    """How often a neighbour (B, k) has its sample's class (B,), over the pairs whose labels are both known (Mean
    Shift's "purity" for k > 1); NaN while there are none (the first step's empty support set). Masked, not indexed:
    no host sync."""
    labels = labels[:, None].expand_as(neighbour_labels)
    known = (neighbour_labels >= 0) & (labels >= 0)
    return ((neighbour_labels == labels) & known).sum() / known.sum()
