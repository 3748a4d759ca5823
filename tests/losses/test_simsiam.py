"""SimSiam's D(p, stopgrad(z)) (Chen and He, eq. 1 and 3) against its float64 form, value and gradient, and the
collapse monitor of Fig. 2: about 1/sqrt(d) for outputs spread over the sphere, 0 for collapsed ones."""

import math

import pytest
import torch

from selfsup.losses import negative_cosine_similarity, normalized_output_std


def reference_negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -(p / |p|) . (z / |z|), in float64, z a constant."""
    p, z = prediction.double(), target.detach().double()
    return -(p / p.norm(dim=1, keepdim=True) * (z / z.norm(dim=1, keepdim=True))).sum(dim=1).mean()


def test_values_at_the_extremes() -> None:
    x = torch.randn(5, 8)
    assert negative_cosine_similarity(x, 3 * x).item() == pytest.approx(-1.0)
    assert negative_cosine_similarity(x, -x).item() == pytest.approx(1.0)
    assert negative_cosine_similarity(torch.eye(2), torch.eye(2).flip(0)).item() == pytest.approx(0.0)


def test_gradient_reaches_the_prediction_and_never_the_target() -> None:
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(6, 8, generator=generator, requires_grad=True)
    target = torch.randn(6, 8, generator=generator, requires_grad=True)  # a projection computed with a graph
    loss = negative_cosine_similarity(prediction, target)
    loss.backward()
    assert target.grad is None
    expected = reference_negative_cosine(prediction, target)
    torch.testing.assert_close(loss, expected.float())
    (expected_gradient,) = torch.autograd.grad(expected, prediction)
    torch.testing.assert_close(prediction.grad, expected_gradient.float(), rtol=1e-4, atol=1e-6)


def test_output_std_is_about_one_over_sqrt_d_when_spread_and_zero_when_collapsed() -> None:
    d = 256
    spread = torch.randn(4096, d, generator=torch.Generator().manual_seed(0))
    assert normalized_output_std(spread).item() == pytest.approx(1 / math.sqrt(d), rel=0.02)
    collapsed = torch.randn(1, d).expand(64, d) * (0.1 + torch.rand(64, 1))  # one direction, any length
    assert normalized_output_std(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(10, 4, dtype=torch.float64)
    expected = (z / z.norm(dim=1, keepdim=True)).std(dim=0).mean()
    torch.testing.assert_close(normalized_output_std(z).double(), expected)
