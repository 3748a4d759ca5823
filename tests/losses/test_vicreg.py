"""VICReg's loss (Bardes et al., eq. 6) against Algorithm 1 of the paper in float64, and each term's exact value where
it is known: the variance hinge, the covariance of decorrelated dimensions, the invariance of equal views."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses import vicreg_loss, vicreg_terms
from tests.losses.test_barlow_twins import decorrelated


def reference_vicreg(
    z_a: Tensor, z_b: Tensor, lambd: float = 25.0, mu: float = 25.0, nu: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, invariance, variance, covariance) as Algorithm 1 computes them (the variance of both views summed, as
    there and in eq. 6), in float64."""
    z_a, z_b = z_a.double(), z_b.double()
    n, d = z_a.shape
    sim_loss = F.mse_loss(z_a, z_b)
    std_z_a = torch.sqrt(z_a.var(dim=0) + 1e-04)
    std_z_b = torch.sqrt(z_b.var(dim=0) + 1e-04)
    std_loss = torch.mean(F.relu(1 - std_z_a)) + torch.mean(F.relu(1 - std_z_b))
    z_a = z_a - z_a.mean(dim=0)
    z_b = z_b - z_b.mean(dim=0)
    cov_z_a = (z_a.T @ z_a) / (n - 1)
    cov_z_b = (z_b.T @ z_b) / (n - 1)
    off_diagonal = [(i, j) for i in range(d) for j in range(d) if i != j]
    cov_loss = (
        sum(cov_z_a[i, j] ** 2 for i, j in off_diagonal) / d + sum(cov_z_b[i, j] ** 2 for i, j in off_diagonal) / d
    )
    return lambd * sim_loss + mu * std_loss + nu * cov_loss, sim_loss, std_loss, cov_loss


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_value_terms_and_gradients_match_the_papers_algorithm(weights: tuple[float, float, float]) -> None:
    generator = torch.Generator().manual_seed(0)
    z_a = (0.7 * torch.randn(8, 5, generator=generator)).requires_grad_()  # std near gamma: some hinges active
    z_b = (z_a.detach() + 0.5 * torch.randn(8, 5, generator=generator)).requires_grad_()
    terms = vicreg_terms(z_a, z_b)
    loss = vicreg_loss(z_a, z_b, *weights)
    expected, invariance, variance, covariance = reference_vicreg(z_a, z_b, *weights)
    torch.testing.assert_close(loss, expected.float())
    torch.testing.assert_close(terms.loss(*weights), loss)
    torch.testing.assert_close(terms.invariance, invariance.float())
    torch.testing.assert_close(terms.variance, variance.float())
    torch.testing.assert_close(terms.covariance, covariance.float())
    assert 0 < terms.variance < 2, "the test needs dimensions on both sides of the hinge"
    gradients = torch.autograd.grad(loss, [z_a, z_b])
    for gradient, expected_gradient in zip(gradients, torch.autograd.grad(expected, [z_a, z_b]), strict=True):
        torch.testing.assert_close(gradient, expected_gradient.float(), rtol=1e-4, atol=1e-6)


def test_each_term_at_its_known_value() -> None:
    """Equal decorrelated views with std above gamma: every term 0. Collapsed views: each dimension's std is
    sqrt(eps) = 0.01, so each view's hinge is 1 - 0.01, and views 1 apart have a mean squared error of 1."""
    z = decorrelated(scale=2.0)
    torch.testing.assert_close(vicreg_loss(z, z.clone()), torch.tensor(0.0), atol=1e-6, rtol=0)
    collapsed = vicreg_terms(torch.zeros(8, 4), torch.ones(8, 4))
    torch.testing.assert_close(collapsed.invariance, torch.tensor(1.0))
    torch.testing.assert_close(collapsed.variance, torch.tensor(2 * 0.99))
    torch.testing.assert_close(collapsed.covariance, torch.tensor(0.0))
    loss = vicreg_loss(torch.randn(8, 4).bfloat16(), torch.randn(8, 4).bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
