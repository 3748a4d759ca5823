"""The supervised contrastive loss against eq. (2) of Khosla et al. (NeurIPS 2020), L^sup_out, written as a loop."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigurationError
from selfsup.losses import InfoNCELoss, supervised_contrastive_loss, supervised_contrastive_loss_and_hardness
from tests.losses.test_info_nce import reference_nt_xent


def classes_of_views(labels: Tensor, views: int) -> list[int]:
    """The class of each of the V N samples of the multiviewed batch; an unknown label (-1): a class per image."""
    n = labels.shape[0]
    return [int(labels[i % n]) if labels[i % n] >= 0 else -1 - i % n for i in range(views * n)]


def reference_supcon(views: list[Tensor], labels: Tensor, temperature: float) -> Tensor:
    """Eq. (2) as written: for anchor i, A(i) every other sample, P(i) those of its class; the mean over anchors."""
    z = F.normalize(torch.cat(views), dim=1)
    y = classes_of_views(labels, len(views))
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        denominator = torch.stack([torch.exp(z[i] @ z[a] / temperature) for a in others]).sum()
        log_terms = [torch.log(torch.exp(z[i] @ z[p] / temperature) / denominator) for p in positives]
        losses.append(-torch.stack(log_terms).sum() / len(positives))
    return torch.stack(losses).mean()


def embeddings(count: int, n: int = 6, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 8, generator=generator, requires_grad=True) for _ in range(count)]


@pytest.mark.parametrize(
    ("count", "labels", "temperature"),
    [
        (2, [0, 1, 0, 2, 1, 0], 0.1),  # class 2: one image, its other view its only positive
        (2, [0, 1, -1, 0, -1, 1], 0.5),  # unknown labels: a class of their own
        (3, [1, 1, 1, 0, 2, 0], 0.1),  # more views than the method's two
    ],
)
def test_value_and_gradients_match_eq_2(count: int, labels: list[int], temperature: float) -> None:
    views, y = embeddings(count), torch.tensor(labels)
    loss = supervised_contrastive_loss(views, y, temperature)
    expected = reference_supcon([v.double() for v in views], y, temperature)
    torch.testing.assert_close(loss.double(), expected)
    for grad, expected_grad in zip(torch.autograd.grad(loss, views), torch.autograd.grad(expected, views), strict=True):
        torch.testing.assert_close(grad, expected_grad.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("labels", [torch.arange(6), torch.full((6,), -1)], ids=["distinct", "unknown"])
def test_all_distinct_labels_give_simclr_nt_xent(labels: Tensor) -> None:
    """With no two images of one class, each anchor's only positive is its other view: eq. (2) is SimCLR's eq. (1)."""
    z_a, z_b = embeddings(2)
    loss = supervised_contrastive_loss([z_a, z_b], labels, 0.2)
    torch.testing.assert_close(loss, InfoNCELoss(0.2)(z_a, z_b))
    torch.testing.assert_close(loss.double(), reference_nt_xent(z_a.double(), z_b.double(), 0.2, False))


def test_one_class_of_identical_embeddings_gives_log_of_candidates() -> None:
    """One class and every embedding equal: each of the 2N - 1 other samples is a positive holding 1/(2N - 1) of the
    softmax, so the loss is log(2N - 1), as for NT-Xent's tie."""
    z = torch.ones(5, 4)
    loss = supervised_contrastive_loss([z, z], torch.zeros(5, dtype=torch.long))
    assert loss.item() == pytest.approx(math.log(9), rel=1e-5)


def test_hardest_negative_is_the_most_similar_view_of_another_class() -> None:
    views, labels = embeddings(2), torch.tensor([0, 1, 0, 2, 1, 0])
    _, hardness = supervised_contrastive_loss_and_hardness(views, labels)
    z = F.normalize(torch.cat(views), dim=1)
    y = classes_of_views(labels, 2)
    hardest = [max(z[i] @ z[k] for k in range(12) if y[k] != y[i]) for i in range(12)]
    torch.testing.assert_close(hardness, {"train/hard_negative_sim": torch.stack(hardest).mean()})


@pytest.mark.parametrize(
    ("views", "temperature", "message"),
    [(1, 0.1, "needs at least 2 views per image, got 1"), (2, 0.0, "temperature must be greater than 0, got 0.0")],
)
def test_mistakes_are_one_line(views: int, temperature: float, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        supervised_contrastive_loss(embeddings(views), torch.arange(6), temperature)
    assert "\n" not in str(error.value)
