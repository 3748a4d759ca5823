"""The monitors a pretraining run reports during validation: the kNN accuracy of the backbone's features and an
online linear probe trained beside the method on detached features (as in SimCLR's and solo-learn's runs).

Neither gathers features across ranks: each rank keeps the feature bank of its own share of the training images
and its own test queries, and the kNN search merges candidates (`selfsup.evaluation.knn.top_neighbours`), so the
memory per device is  (N_train / world_size + N_test / world_size) x D x 4 bytes  plus a bounded search chunk,
for any number of devices.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from selfsup.evaluation.knn import accuracy, top_neighbours, weighted_vote


class KnnMonitor:
    """Weighted kNN top-1 (InstDisc's vote, see `selfsup.evaluation.knn`) of the test features against a bank of
    labelled training features, each sharded over the ranks as the validation loaders deliver them."""

    def __init__(self, num_classes: int, k: int, temperature: float, max_elements: int = 2**27) -> None:
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature
        self.max_elements = max_elements
        self.reset()

    def reset(self) -> None:
        self._bank: list[tuple[Tensor, Tensor]] = []
        self._queries: list[tuple[Tensor, Tensor]] = []

    def add_bank(self, features: Tensor, labels: Tensor) -> None:
        """Features of labelled training images (labels -1: padding, never a neighbour)."""
        self._bank.append((features.detach().float(), labels))

    def add_queries(self, features: Tensor, labels: Tensor) -> None:
        """Features of test images (labels -1: padding, not scored)."""
        self._queries.append((features.detach().float(), labels))

    @property
    def ready(self) -> bool:
        """Both a bank and queries were added (the same on every rank: the loaders give each rank equal batches)."""
        return bool(self._bank and self._queries)

    @property
    def held_rows(self) -> int:
        """Feature rows this rank holds: its shard of the bank and of the queries."""
        return sum(features.shape[0] for features, _ in self._bank + self._queries)

    def compute(self) -> float:
        """Top-1 accuracy over every rank's queries (all ranks call it together and get the same value)."""
        bank, bank_labels = (torch.cat(parts) for parts in zip(*self._bank, strict=True))
        queries, query_labels = (torch.cat(parts) for parts in zip(*self._queries, strict=True))
        similarities, labels = top_neighbours(
            queries, bank, bank_labels, self.k, sharded=True, max_elements=self.max_elements
        )
        predictions = weighted_vote(similarities, labels, self.num_classes, self.k, self.temperature)
        scored = query_labels >= 0
        return accuracy(predictions[scored], query_labels[scored], sharded=True)


class OnlineProbe(nn.Linear):
    """A linear classifier on detached backbone features, trained by the method's optimizer alongside the
    self-supervised loss (its gradient never reaches the backbone), scored on the test set during validation."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__(feature_dim, num_classes)
        self.accuracy = MulticlassAccuracy(num_classes, average="micro", ignore_index=-1)

    def loss(self, features: list[Tensor], labels: Tensor) -> Tensor:
        """Mean cross-entropy over the views' detached features; unlabelled (-1) samples skipped."""
        logits = self(torch.cat(features).detach().float())
        targets = labels.repeat(len(features))
        return F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum") / (targets >= 0).sum().clamp(min=1)

    @torch.no_grad()
    def score(self, features: Tensor, labels: Tensor) -> None:
        self.accuracy.update(self(features.float()).argmax(dim=1), labels)
