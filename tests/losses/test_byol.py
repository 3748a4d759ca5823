"""BYOL's normalized MSE (Grill et al., eq. 2) against its float64 form, and its stop-gradient: the loss itself
detaches the target, so a caller that computes its target with gradient (SimSiam's, or BYOL's own under any
refactoring) still trains only the prediction side."""

import pytest
import torch

from selfsup.losses import normalized_mse


def reference_normalized_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||p/|p| - z/|z|||^2, in float64, z a constant."""
    p, z = prediction.double(), target.detach().double()
    return (p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)).square().sum(dim=1).mean()


def test_normalized_mse_values() -> None:
    x = torch.randn(5, 8)
    assert normalized_mse(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_mse(torch.eye(2), torch.eye(2).flip(0)).item() == pytest.approx(2.0)


def test_gradient_reaches_the_prediction_and_never_the_target() -> None:
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(6, 8, generator=generator, requires_grad=True)
    target = torch.randn(6, 8, generator=generator, requires_grad=True)  # a target computed with a graph
    loss = normalized_mse(prediction, target)
    loss.backward()
    assert target.grad is None
    expected = reference_normalized_mse(prediction, target)
    torch.testing.assert_close(loss, expected.float())
    (expected_gradient,) = torch.autograd.grad(expected, prediction)
    torch.testing.assert_close(prediction.grad, expected_gradient, rtol=1e-4, atol=1e-6)
