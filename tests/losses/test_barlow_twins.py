"""Barlow Twins' loss (Zbontar et al., eq. 1) against Algorithm 1 of the paper in float64, and its exact values where
C is known: decorrelated identical views give the identity, opposite views its negative."""

import pytest
import torch
from torch import Tensor

from selfsup.losses import barlow_twins_loss, barlow_twins_terms


def reference_barlow_twins(z_a: Tensor, z_b: Tensor, lambd: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, on-diagonal sum, off-diagonal sum before lambda) as Algorithm 1 computes them, in float64, with the
    official code's standardisation (BatchNorm1d(affine=False): biased std, eps 1e-5) for the pseudo-code's std."""
    z_a, z_b = z_a.double(), z_b.double()
    n, d = z_a.shape
    z_a_norm = (z_a - z_a.mean(0)) / torch.sqrt(z_a.var(0, unbiased=False) + 1e-5)  # NxD
    z_b_norm = (z_b - z_b.mean(0)) / torch.sqrt(z_b.var(0, unbiased=False) + 1e-5)
    c = z_a_norm.T @ z_b_norm / n  # DxD
    c_diff = (c - torch.eye(d, dtype=torch.float64)).pow(2)
    on_diagonal = sum(c_diff[i, i] for i in range(d))
    off_diagonal = sum(c_diff[i, j] for i in range(d) for j in range(d) if i != j)
    return on_diagonal + lambd * off_diagonal, on_diagonal, off_diagonal


def decorrelated(scale: float = 1.0) -> Tensor:
    """(4, 3) columns of a Hadamard matrix: each of mean 0 and biased std `scale`, orthogonal to each other."""
    return scale * torch.tensor([[1.0, 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]])


@pytest.mark.parametrize("lambd", [0.0051, 0.5])
def test_value_terms_and_gradients_match_the_papers_algorithm(lambd: float) -> None:
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(8, 5, generator=generator, requires_grad=True)
    z_b = (z_a.detach() + 0.5 * torch.randn(8, 5, generator=generator)).requires_grad_()
    terms = barlow_twins_terms(z_a, z_b)
    loss = barlow_twins_loss(z_a, z_b, lambd)
    expected, on_diagonal, off_diagonal = reference_barlow_twins(z_a, z_b, lambd)
    torch.testing.assert_close(loss, expected.float())
    torch.testing.assert_close(terms.loss(lambd), loss)
    torch.testing.assert_close(terms.on_diagonal, on_diagonal.float())
    torch.testing.assert_close(terms.off_diagonal, off_diagonal.float())
    gradients = torch.autograd.grad(loss, [z_a, z_b])
    for gradient, expected_gradient in zip(gradients, torch.autograd.grad(expected, [z_a, z_b]), strict=True):
        torch.testing.assert_close(gradient, expected_gradient.float(), rtol=1e-4, atol=1e-6)


def test_identity_and_its_negative_give_the_known_values() -> None:
    """Identical decorrelated views: C = I, loss 0, whatever each dimension's scale and shift (the standardisation
    removes them). Opposite views: C = -I, each dimension (1 - (-1))^2 = 4 on the diagonal, nothing off it."""
    z = decorrelated()
    torch.testing.assert_close(barlow_twins_loss(z, 3 * z + 2), torch.tensor(0.0), atol=1e-6, rtol=0)
    terms = barlow_twins_terms(z, -z)
    torch.testing.assert_close(terms.on_diagonal, torch.tensor(12.0), rtol=1e-4, atol=0)
    torch.testing.assert_close(terms.off_diagonal, torch.tensor(0.0), atol=1e-6, rtol=0)


def test_constant_dimensions_and_bfloat16_inputs_stay_finite_in_float32() -> None:
    collapsed = barlow_twins_terms(torch.ones(8, 4), torch.ones(8, 4))  # std 0: C = 0, each C_ii misses 1
    torch.testing.assert_close(collapsed.on_diagonal, torch.tensor(4.0))
    loss = barlow_twins_loss(torch.randn(8, 4).bfloat16(), torch.randn(8, 4).bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
