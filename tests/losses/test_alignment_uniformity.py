"""Wang and Isola's alignment and uniformity (ICML 2020, Sec. 4.1.2) and their combined objective (the appendix's
code), against the definitions written as loops in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses import align_uniform_loss, align_uniform_terms, alignment, global_uniformity, uniformity


def reference_alignment(z_a: Tensor, z_b: Tensor, alpha: float) -> Tensor:
    """L_align = E ||f(x) - f(y)||^alpha over the positive pairs."""
    z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    return torch.stack([torch.linalg.vector_norm(z_a[i] - z_b[i]) ** alpha for i in range(len(z_a))]).mean()


def reference_uniformity(z: Tensor, t: float) -> Tensor:
    """L_uniform = log E exp(-t ||f(x) - f(y)||^2) over the distinct pairs."""
    z = F.normalize(z, dim=1)
    pairs = [(i, j) for i in range(len(z)) for j in range(i + 1, len(z))]
    return torch.log(torch.stack([torch.exp(-t * ((z[i] - z[j]) ** 2).sum()) for i, j in pairs]).mean())


def reference_objective(z_a: Tensor, z_b: Tensor, alpha: float, t: float, weight: float) -> Tensor:
    """The appendix's `lalign(x, y) + lam * (lunif(x) + lunif(y)) / 2`."""
    uniform = (reference_uniformity(z_a, t) + reference_uniformity(z_b, t)) / 2
    return reference_alignment(z_a, z_b, alpha) + weight * uniform


def pair(n: int = 7, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, 5, generator=generator)
    return z_a.requires_grad_(), (z_a + 0.7 * torch.randn(n, 5, generator=generator)).requires_grad_()


@pytest.mark.parametrize(("alpha", "t", "weight"), [(2.0, 2.0, 1.0), (1.0, 5.0, 0.5), (3.0, 0.5, 2.0)])
def test_value_and_gradients_match_the_definitions(alpha: float, t: float, weight: float) -> None:
    z_a, z_b = pair()
    loss = align_uniform_loss(z_a, z_b, alpha, t, weight)
    expected = reference_objective(z_a.double(), z_b.double(), alpha, t, weight)
    torch.testing.assert_close(loss.double(), expected)
    for grad, expected_grad in zip(
        torch.autograd.grad(loss, [z_a, z_b]), torch.autograd.grad(expected, [z_a, z_b]), strict=True
    ):
        torch.testing.assert_close(grad, expected_grad.float(), rtol=1e-4, atol=1e-6)


def test_terms_are_the_unweighted_definitions() -> None:
    z_a, z_b = pair()
    terms = align_uniform_terms(z_a, z_b)
    torch.testing.assert_close(terms.alignment, alignment(z_a, z_b))
    torch.testing.assert_close(terms.uniformity, (uniformity(z_a) + uniformity(z_b)) / 2)
    torch.testing.assert_close(terms.loss(0.3), terms.alignment + 0.3 * terms.uniformity)


def test_global_uniformity_in_one_process_is_the_batch_uniformity_with_its_gradient() -> None:
    z, _ = pair()
    torch.testing.assert_close(global_uniformity(z, 2.0), uniformity(z, 2.0))
    torch.testing.assert_close(
        torch.autograd.grad(global_uniformity(z, 2.0), z)[0], torch.autograd.grad(uniformity(z, 2.0), z)[0]
    )


def test_large_t_does_not_underflow() -> None:
    """Antipodal points at t = 50: exp(-200) is 0 in float32; the log-sum-exp keeps the exact -200."""
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert global_uniformity(z, 50.0).item() == pytest.approx(-200.0)


def test_identical_views_have_zero_alignment_and_a_finite_gradient() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    loss = align_uniform_loss(z, z.detach().clone().requires_grad_())
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert align_uniform_terms(z, z).alignment.item() == pytest.approx(0.0, abs=1e-6)


def test_hardest_negative_is_the_most_similar_view_of_another_image() -> None:
    z_a, z_b = pair()
    z = F.normalize(torch.cat([z_a, z_b]), dim=1).detach()
    hardest = [max(z[i] @ z[k] for k in range(14) if k % 7 != i % 7) for i in range(14)]
    hardness = align_uniform_terms(z_a, z_b).hardness
    torch.testing.assert_close(hardness, {"train/hard_negative_sim": torch.stack(hardest).mean()})


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_an_identical_pair_has_a_finite_gradient(alpha: float) -> None:
    """||a - b||^alpha has an infinite derivative at 0 for alpha < 1, and the norm's is 0 there: a NaN, on views that
    an identity-like recipe or blank images make identical."""
    z = torch.randn(4, 8, requires_grad=True)
    (gradient,) = torch.autograd.grad(alignment(z, z.detach().clone(), alpha), z)
    assert torch.isfinite(gradient).all()
