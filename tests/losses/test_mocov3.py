"""MoCo v3's ctr(q, k) (Chen, Xie and He, Algorithm 1) against a float64 loop over its queries, value and gradient,
and on 2 gloo ranks (`check_two_ranks`, run by tests/methods/test_momentum_ddp.py): the keys of both ranks are
gathered in rank order without gradient, the mean of the two ranks' losses is the loss of one process on the whole
batch, and so are the parameter gradients DDP averages."""

import math

import pytest
import torch
import torch.distributed as dist

from selfsup.distributed import gather
from selfsup.losses import mocov3_info_nce

TEMPERATURE = 0.2


def reference_ctr(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Algorithm 1 in float64, one query at a time: -log(exp(q_i.k_i / T) / sum_j exp(q_i.k_j / T)) averaged over
    the queries and scaled by 2T, q and k unit-norm, k a constant."""
    q = queries.double() / queries.double().norm(dim=1, keepdim=True)
    k = keys.detach().double() / keys.detach().double().norm(dim=1, keepdim=True)
    losses = [-torch.log(torch.exp(q[i] @ k[i] / temperature) / torch.exp(k @ q[i] / temperature).sum())
              for i in range(q.shape[0])]  # fmt: skip
    return torch.stack(losses).mean() * 2 * temperature


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_value_and_gradient_match_algorithm_1(temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(6, 16, generator=generator, requires_grad=True)
    keys = torch.randn(6, 16, generator=generator, requires_grad=True)  # keys computed with a graph get no gradient
    loss = mocov3_info_nce(queries, keys, temperature)
    expected = reference_ctr(queries, keys, temperature)
    torch.testing.assert_close(loss, expected.float())
    loss.backward()
    assert keys.grad is None
    (expected_gradient,) = torch.autograd.grad(expected, queries)
    torch.testing.assert_close(queries.grad, expected_gradient.float(), rtol=1e-4, atol=1e-6)


def test_identical_keys_give_2t_log_n() -> None:
    """Every logit ties: the cross-entropy is log N, times Algorithm 1's 2T."""
    queries, keys = torch.randn(5, 8), torch.ones(5, 8)
    assert mocov3_info_nce(queries, keys, 0.5).item() == pytest.approx(2 * 0.5 * math.log(5), rel=1e-5)


def global_batch() -> tuple[torch.Tensor, ...]:
    """Inputs of two views (8, 12) each, their keys (8, 16) each, and the weight (12, 16) of a shared linear map that
    makes the queries: a parameter that DDP would average."""
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*shape, generator=generator) for shape in ((8, 12), (8, 12), (8, 16), (8, 16), (12, 16)))


def symmetric_loss_and_weight_gradient(inputs_1, inputs_2, keys_1, keys_2, weight) -> tuple[torch.Tensor, torch.Tensor]:
    """L = ctr(q1, k2) + ctr(q2, k1) with q = inputs @ weight, and dL/dweight."""
    weight = weight.clone().requires_grad_()
    loss = mocov3_info_nce(inputs_1 @ weight, keys_2, TEMPERATURE) + mocov3_info_nce(
        inputs_2 @ weight, keys_1, TEMPERATURE
    )
    loss.backward()
    return loss.detach(), weight.grad


def share_of_this_rank() -> tuple[float, list, list]:
    """On a rank of a process group of 2: (its loss, its weight gradient, the second view's keys gathered from both
    ranks) on its half of `global_batch`, as plain data. tests/methods/test_momentum_ddp.py runs it on its 2 ranks
    (one start of 2 processes for both tests) and checks the results with `check_two_ranks`."""
    inputs_1, inputs_2, keys_1, keys_2, weight = global_batch()
    mine = slice(4 * dist.get_rank(), 4 * dist.get_rank() + 4)
    loss, gradient = symmetric_loss_and_weight_gradient(
        inputs_1[mine], inputs_2[mine], keys_1[mine], keys_2[mine], weight
    )
    return loss.item(), gradient.tolist(), gather(keys_2[mine]).tolist()


def check_two_ranks(shares: list[tuple[float, list, list]]) -> None:
    """The two ranks' `share_of_this_rank` against one process on the whole batch: the mean of their losses is its
    loss, the mean of their gradients (what DDP applies) is its gradient, and each holds every rank's keys in rank
    order."""
    expected_loss, expected_gradient = symmetric_loss_and_weight_gradient(*global_batch())
    assert sum(share[0] for share in shares) / 2 == pytest.approx(expected_loss.item(), rel=1e-5)
    mean_gradient = sum(torch.tensor(share[1]) for share in shares) / 2
    torch.testing.assert_close(mean_gradient, expected_gradient, rtol=1e-4, atol=1e-6)
    for share in shares:
        torch.testing.assert_close(torch.tensor(share[2]), global_batch()[3])
