"""Diagnostics against their formulas on hand-made features."""

import math

import pytest
import torch

from selfsup.evaluation import diagnostics
from selfsup.evaluation.diagnostics import effective_rank, pair_similarities, representation_diagnostics, tolerance
from selfsup.losses import alignment, uniformity


def test_alignment_and_uniformity_have_one_definition_the_training_loss_s() -> None:
    assert (diagnostics.alignment, diagnostics.uniformity) == (alignment, uniformity)


def test_alignment_is_the_mean_squared_distance_of_normalized_pairs() -> None:
    z_a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_b = torch.tensor([[3.0, 0.0], [2.0, 0.0]])  # same direction; orthogonal: squared distance 2
    assert alignment(z_a, z_b).item() == pytest.approx(1.0)
    assert alignment(z_a, z_b, alpha=1).item() == pytest.approx(math.sqrt(2) / 2)


def test_uniformity_of_antipodal_and_identical_points() -> None:
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == pytest.approx(-8.0)  # log exp(-2 * 4)
    assert uniformity(torch.ones(5, 3)).item() == pytest.approx(0.0, abs=1e-6)  # collapsed: the worst value
    three = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # squared distances 2, 4, 2
    expected = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert uniformity(three).item() == pytest.approx(expected, rel=1e-5)


def test_effective_rank_counts_equally_used_directions() -> None:
    torch.manual_seed(0)
    line = torch.randn(100, 1) * torch.tensor([[1.0, 2.0, -1.0, 0.5]])  # collapsed onto one direction
    assert effective_rank(line).item() == pytest.approx(1.0, abs=1e-6)
    signs = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [1.0, -1.0, -1.0]])
    balanced = torch.cat([signs, -signs])  # equal variance along 3 axes, uncorrelated
    assert effective_rank(balanced).item() == pytest.approx(3.0, rel=1e-6)
    assert effective_rank(torch.ones(10, 4)).item() == 0.0  # no variance at all
    uneven = torch.cat([torch.randn(1000, 1) * 10, torch.randn(1000, 1)], dim=1)
    assert 1.0 < effective_rank(uneven).item() < 1.2  # one dominant direction


def test_pair_similarities_and_summary() -> None:
    z = torch.eye(3)
    positive, negative = pair_similarities(z, z)
    assert positive.tolist() == [1.0, 1.0, 1.0] and negative.tolist() == [0.0] * 6
    summary = representation_diagnostics(z, z, histograms=True)
    assert summary["positive_similarity"] == 1.0 and summary["negative_similarity"] == 0.0
    assert sum(summary["positive_histogram"]) == 3 and sum(summary["negative_histogram"]) == 6


def reference_tolerance(z: torch.Tensor, labels: list[int]) -> float:
    """Wang and Liu's tolerance as a loop: the mean cosine similarity over pairs of distinct same-class samples."""
    similarities = [
        (z[i] @ z[j] / (z[i].norm() * z[j].norm())).item()
        for i in range(len(z))
        for j in range(len(z))
        if i != j and labels[i] == labels[j] >= 0
    ]
    return sum(similarities) / len(similarities)


def test_tolerance_is_the_mean_similarity_of_same_class_pairs() -> None:
    z = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    labels = [0, 1, 0, 2, 1, 0, -1, -1, 2]  # unknown labels (-1) are in no pair, not a class of their own
    assert tolerance(z, torch.tensor(labels)).item() == pytest.approx(reference_tolerance(z, labels), rel=1e-5)
    assert tolerance(torch.eye(3), torch.zeros(3, dtype=torch.long)).item() == 0.0  # orthogonal: no tolerance
    assert tolerance(torch.ones(4, 2), torch.zeros(4, dtype=torch.long)).item() == pytest.approx(1.0)  # one point
    assert math.isnan(tolerance(torch.eye(3), torch.arange(3)).item())  # no two samples of one class


def test_tolerance_is_in_the_summary_with_labels_over_the_first_view() -> None:
    z_a, z_b = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), torch.eye(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert "tolerance" not in representation_diagnostics(z_a, z_b)
    summary = representation_diagnostics(z_a, z_b, labels)
    assert summary["tolerance"] == pytest.approx(reference_tolerance(z_a, labels.tolist()), rel=1e-5)
