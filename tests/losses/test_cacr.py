"""Contrastive attraction and repulsion (Zheng et al., arXiv:2105.03746) against a plain float64 loop written from the
paper's L_CA + L_CR, with several positives per anchor, on SimCLR's in-batch negatives and on MoCo's queue."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigurationError
from selfsup.losses import AttractionRepulsion, InfoNCELoss, attraction_repulsion, queue_info_nce_and_hardness
from selfsup.runs import Metric
from tests.losses.checks import assert_close_with_gradients, unit


def reference_anchor_loss(anchor: Tensor, positives: Tensor, negatives: Tensor, t_plus: float, t_minus: float):
    """L_CA + L_CR of one anchor with its positives (M, D) and negatives (N, D), the cost c(a, b) = ||a - b||^2:
    sum_m pi+_m c(x, x+_m) - sum_i pi-_i c(x, x-_i), pi+ ~ e^{t+ c}, pi- ~ e^{-t- c}, normalised over the samples."""
    positive_cost = ((anchor - positives) ** 2).sum(dim=1)
    negative_cost = ((anchor - negatives) ** 2).sum(dim=1)
    attraction = (torch.exp(t_plus * positive_cost) / torch.exp(t_plus * positive_cost).sum() * positive_cost).sum()
    repulsion = (torch.exp(-t_minus * negative_cost) / torch.exp(-t_minus * negative_cost).sum() * negative_cost).sum()
    return attraction - repulsion


@pytest.mark.parametrize(("t_plus", "t_minus"), [(1.0, 1.0), (0.0, 2.0), (3.0, 0.0)])
def test_several_positives_match_the_papers_loss(t_plus: float, t_minus: float) -> None:
    """Each anchor has 3 positives among 10 candidates (the attraction weights differ from 1) and its negatives are
    the other candidates but one it is not compared with (as SimCLR's anchor is not compared with itself)."""
    anchors = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    candidates = torch.randn(10, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    positives = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]])
    negative_mask = torch.ones(4, 10, dtype=torch.bool).scatter(1, positives, False)
    negative_mask[:, 9] &= torch.tensor([False, True, True, False])  # an excluded candidate in two rows
    similarity = F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T
    similarity = similarity.index_put((torch.tensor([0]), torch.tensor([9])), torch.tensor(-torch.inf))
    loss, _ = attraction_repulsion(similarity, positives, negative_mask, t_plus, t_minus)
    a, c = F.normalize(anchors.double(), dim=1), F.normalize(candidates.double(), dim=1)
    expected = torch.stack(
        [reference_anchor_loss(a[i], c[positives[i]], c[negative_mask[i]], t_plus, t_minus) for i in range(4)]
    ).mean()
    assert_close_with_gradients(loss, expected, [anchors, candidates])


def test_in_batch_negatives_match_the_papers_loss() -> None:
    z_a = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    z_b = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = InfoNCELoss(0.2, cacr=AttractionRepulsion(True, 1.0, 2.0))(z_a, z_b)
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    losses = []
    for i in range(10):
        j = (i + 5) % 10
        negatives = z[[k for k in range(10) if k not in (i, j)]]
        losses.append(reference_anchor_loss(z[i], z[j : j + 1], negatives, 1.0, 2.0))
    assert_close_with_gradients(loss, torch.stack(losses).mean(), [z_a, z_b])


def test_queue_negatives_match_the_papers_loss() -> None:
    queries, keys, queue = unit(4, 0).requires_grad_(), unit(4, 1), unit(16, 2)
    cacr = AttractionRepulsion(True, 0.5, 1.5)
    loss, hardness = queue_info_nce_and_hardness(queries, keys, queue, 0.2, cacr=cacr)
    q = queries.double()
    expected = torch.stack(
        [reference_anchor_loss(q[i], keys[i : i + 1].double(), queue.double(), 0.5, 1.5) for i in range(4)]
    ).mean()
    assert_close_with_gradients(loss, expected, [queries])
    assert set(hardness) == {Metric.HARD_NEGATIVE_SIM, Metric.HARDEST_NEGATIVE_WEIGHT}
    nearest = [16 * torch.softmax(-1.5 * (2 - 2 * queue @ queries[i].detach()), 0).max() for i in range(4)]
    torch.testing.assert_close(hardness[Metric.HARDEST_NEGATIVE_WEIGHT], torch.stack(nearest).mean())


def test_zero_temperatures_weigh_every_sample_alike() -> None:
    """t+ = t- = 0: the mean positive cost minus the mean negative cost, and a hardest negative weight of 1."""
    queries, keys, queue = unit(4, 0), unit(4, 1), unit(16, 2)
    loss, hardness = queue_info_nce_and_hardness(queries, keys, queue, 0.2, cacr=AttractionRepulsion(True, 0.0, 0.0))
    expected = (2 - 2 * (queries * keys).sum(1)).mean() - (2 - 2 * queries @ queue.T).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(hardness[Metric.HARDEST_NEGATIVE_WEIGHT], torch.tensor(1.0))


def test_temperatures_without_cacr_are_refused() -> None:
    """They trained plain InfoNCE without a word: the other variants switch on with their own values."""
    with pytest.raises(ConfigurationError, match="act only with enabled true"):
        AttractionRepulsion(repulsion_temperature=2.0)
    assert AttractionRepulsion(enabled=True, repulsion_temperature=2.0).repulsion_temperature == 2.0
