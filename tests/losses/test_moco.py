"""MoCo's queue InfoNCE against a float64 loop over eq. (1) of the paper: the temperature divides every logit, the
queued keys' as well as the positive's, and MoCHi's synthetic negatives enter the denominator as constants."""

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import queue_info_nce
from selfsup.models.hard_negative_mixing import HardNegativeMixing, mix_hard_negatives


def reference_moco(
    queries: torch.Tensor,
    keys: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    decoupled: bool = False,
    synthetic: torch.Tensor | None = None,
) -> torch.Tensor:
    """He et al. eq. (1) in float64, one query at a time: -log(exp(q.k+/T) / (exp(q.k+/T) + sum_k- exp(q.k-/T))),
    the sum over the queued keys (and, with MoCHi, the query's synthetic negatives (B, S, D)); DCL leaves exp(q.k+/T)
    out of the denominator."""
    losses = []
    for b, query in enumerate(queries.double()):
        positive = torch.exp(query @ keys[b].double() / temperature)
        negatives = torch.exp(queue.double() @ query / temperature).sum()
        if synthetic is not None:
            negatives = negatives + torch.exp(synthetic[b].double() @ query / temperature).sum()
        losses.append(-torch.log(positive / (negatives + (0 if decoupled else positive))))
    return torch.stack(losses).mean()


def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_value_and_gradient_match_the_papers_equation(temperature: float, decoupled: bool) -> None:
    raw = torch.randn(6, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    keys, queue = unit_rows(6, 16, 1), unit_rows(32, 16, 2)
    loss = queue_info_nce(F.normalize(raw, dim=1), keys, queue, temperature, decoupled)
    expected = reference_moco(F.normalize(raw.double(), dim=1), keys, queue, temperature, decoupled)
    torch.testing.assert_close(loss, expected.float())
    gradient, expected_gradient = (torch.autograd.grad(value, raw)[0] for value in (loss, expected))
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-4, atol=1e-6)


def test_synthetic_negatives_are_constants_of_the_loss() -> None:
    """MoCHi's mixtures (Kalantidis et al., Sec. 4) are made without gradient: the loss's gradient is that of eq. (1)
    with the same synthetic negatives held fixed; none flows through the mixing of the query into h'."""
    raw = torch.randn(6, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    keys, queue = unit_rows(6, 16, 1), unit_rows(32, 16, 2)
    queries = F.normalize(raw, dim=1)
    torch.manual_seed(3)
    loss = queue_info_nce(queries, keys, queue, 0.2, mixing=HardNegativeMixing(8, 6, 4))
    torch.manual_seed(3)  # the same draws
    synthetic = mix_hard_negatives(queries.detach(), queue, 8, 6, 4).negatives
    expected = reference_moco(F.normalize(raw.double(), dim=1), keys, queue, 0.2, synthetic=synthetic)
    torch.testing.assert_close(loss, expected.float())
    gradient, expected_gradient = (torch.autograd.grad(value, raw)[0] for value in (loss, expected))
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-4, atol=1e-6)


def test_keys_and_queue_get_no_gradient_whatever_the_caller_passes() -> None:
    """The key encoder is updated only by momentum (He et al., Sec. 3.2): the loss itself stops the gradient at the
    keys and the queue, also when a caller hands them over with a graph."""
    queries = unit_rows(6, 16, 0).requires_grad_()
    keys, queue = unit_rows(6, 16, 1).requires_grad_(), unit_rows(32, 16, 2).requires_grad_()
    loss = queue_info_nce(queries, keys, queue, 0.2)
    loss.backward()
    assert queries.grad is not None and keys.grad is None and queue.grad is None
