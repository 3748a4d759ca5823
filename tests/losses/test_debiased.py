"""The debiased contrastive loss (Chuang et al., NeurIPS 2020) and hard negative sampling on top of it (Robinson et al.,
ICLR 2021), against plain float64 loops written from the papers' estimator, on SimCLR's in-batch negatives and on
MoCo's queue; and the option combinations the variants refuse."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigurationError
from selfsup.losses import (
    AttractionRepulsion,
    DebiasedNegatives,
    InfoNCELoss,
    debiased_info_nce,
    queue_info_nce,
    queue_info_nce_and_hardness,
)
from selfsup.losses.info_nce import negatives_conflicts
from selfsup.runs import Metric
from tests.conftest import RANKS, free_port, start_ranks
from tests.losses.checks import assert_close_with_gradients, unit


def reference_anchor_loss(positive: Tensor, negatives: Tensor, t: float, tau_plus: float, beta: float) -> Tensor:
    """-log( e^{l+} / (e^{l+} + N g) ) for one anchor, from its positive's and N negatives' cosine similarities: g is
    Chuang et al.'s estimator max{ (mean_i w_i e^{l_i} - tau+ e^{l+}) / (1 - tau+), e^{-1/t} } (M = 1, v = x+), with
    Robinson et al.'s importance weights w_i = e^{beta l_i} / mean_j e^{beta l_j} (all 1 when beta = 0)."""
    n = negatives.shape[0]
    weights = torch.exp(beta * negatives / t) / torch.exp(beta * negatives / t).mean()
    estimate = ((weights * torch.exp(negatives / t)).mean() - tau_plus * torch.exp(positive / t)) / (1 - tau_plus)
    g = torch.maximum(estimate, torch.tensor(math.exp(-1 / t), dtype=torch.float64))
    return -torch.log(torch.exp(positive / t) / (torch.exp(positive / t) + n * g))


def reference_in_batch(z_a: Tensor, z_b: Tensor, t: float, tau_plus: float, beta: float) -> Tensor:
    """Over SimCLR's 2N anchors: anchor i's positive is the other view of its image, its negatives the 2N - 2 others."""
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    n = z_a.shape[0]
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        negatives = torch.stack([z[i] @ z[k] for k in range(2 * n) if k not in (i, j)])
        losses.append(reference_anchor_loss(z[i] @ z[j], negatives, t, tau_plus, beta))
    return torch.stack(losses).mean()


def reference_queue(queries: Tensor, keys: Tensor, queue: Tensor, t: float, tau_plus: float, beta: float) -> Tensor:
    """Over MoCo's queries: each query's positive is its own key, its negatives every queued key."""
    queries, keys, queue = queries.double(), keys.double(), queue.double()
    losses = [reference_anchor_loss(q @ k, queue @ q, t, tau_plus, beta) for q, k in zip(queries, keys, strict=True)]
    return torch.stack(losses).mean()


@pytest.mark.parametrize(("tau_plus", "beta"), [(0.1, 0.0), (0.1, 1.0), (0.0, 0.5), (0.3, 2.0)])
@pytest.mark.parametrize("temperature", [0.2, 0.5])
def test_in_batch_value_and_gradients_match_the_papers_estimator(tau_plus: float, beta: float, temperature: float):
    z_a = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    z_b = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = InfoNCELoss(temperature, negatives=DebiasedNegatives(tau_plus, beta))(z_a, z_b)
    expected = reference_in_batch(z_a, z_b, temperature, tau_plus, beta)
    assert_close_with_gradients(loss, expected, [z_a, z_b])


@pytest.mark.parametrize(("tau_plus", "beta"), [(0.1, 0.0), (0.1, 1.0), (0.0, 0.5)])
def test_queue_value_and_gradients_match_the_papers_estimator(tau_plus: float, beta: float) -> None:
    queries = unit(4, 0).requires_grad_()
    keys, queue = unit(4, 1), unit(16, 2)
    loss = queue_info_nce(queries, keys, queue, 0.2, negatives=DebiasedNegatives(tau_plus, beta))
    assert_close_with_gradients(loss, reference_queue(queries, keys, queue, 0.2, tau_plus, beta), [queries])


def test_no_prior_and_no_concentration_is_infonce() -> None:
    """tau+ = 0 and beta = 0: the estimator is the plain sum of the negatives (Chuang et al.'s own edge case). The
    options at their defaults train exactly InfoNCE; the estimator itself gives it up to rounding."""
    z_a, z_b = unit(6, 0), unit(6, 1)
    torch.testing.assert_close(InfoNCELoss(0.2, negatives=DebiasedNegatives())(z_a, z_b), InfoNCELoss(0.2)(z_a, z_b))
    logits = unit(4, 2) @ unit(10, 3).T / 0.2
    positive = torch.tensor([0, 3, 5, 9])
    torch.testing.assert_close(
        debiased_info_nce(logits, positive, None, 0.2, 0.0).loss, F.cross_entropy(logits, positive)
    )
    assert torch.equal(
        queue_info_nce(unit(4, 0), unit(4, 1), unit(16, 2), 0.2, negatives=DebiasedNegatives()),
        queue_info_nce(unit(4, 0), unit(4, 1), unit(16, 2), 0.2),
    )


def test_no_concentration_is_the_debiased_loss() -> None:
    """beta = 0 gives Chuang et al.'s debiased loss (Robinson et al.'s edge case), and the hard estimator's weights
    tend to 1 as beta does."""
    z_a, z_b = unit(6, 0).double(), unit(6, 1).double()
    hard_at_zero = reference_in_batch(z_a, z_b, 0.2, 0.1, 0.0)
    debiased = InfoNCELoss(0.2, negatives=DebiasedNegatives(0.1, 0.0))(z_a.float(), z_b.float())
    tiny_beta = InfoNCELoss(0.2, negatives=DebiasedNegatives(0.1, 1e-7))(z_a.float(), z_b.float())
    torch.testing.assert_close(tiny_beta, debiased)
    torch.testing.assert_close(debiased.double(), hard_at_zero)


def test_the_estimator_is_clamped_at_its_theoretical_minimum() -> None:
    """Two images whose views coincide and point opposite ways: each anchor's positive has similarity 1 and its two
    negatives -1, so (e^{-1/t} - tau+ e^{1/t}) / tau- < 0 and g sits on e^{-1/t}: the loss is log(1 + 2 e^{-2/t}), every
    anchor is counted as clamped, and the negatives get no gradient."""
    t = 0.5
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss, metrics = InfoNCELoss(t, negatives=DebiasedNegatives(tau_plus=0.5)).loss_and_hardness(z, z.detach().clone())
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2 / t)), rel=1e-6)
    assert metrics[Metric.DEBIASED_CLAMPED_FRACTION].item() == 1.0
    (gradient,) = torch.autograd.grad(loss, z)
    expected = reference_in_batch(z.double(), z.detach().double(), t, 0.5, 0.0)
    (expected_gradient,) = torch.autograd.grad(expected, z)
    torch.testing.assert_close(gradient, expected_gradient)


def test_small_temperatures_keep_the_value_and_gradient() -> None:
    """e^{2/t} between the terms of g overflows float32 below t = 0.02; the estimator shifts them in float64 and
    still equals the float64 reference (which holds e^{400})."""
    z_a = unit(6, 0).requires_grad_()
    loss = InfoNCELoss(0.005, negatives=DebiasedNegatives(0.1, 1.0))(z_a, unit(6, 1))
    (gradient,) = torch.autograd.grad(loss, z_a)
    z_a64 = z_a.detach().double().requires_grad_()
    expected = reference_in_batch(z_a64, unit(6, 1).double(), 0.005, 0.1, 1.0)
    (expected_gradient,) = torch.autograd.grad(expected, z_a64)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gradient.double(), expected_gradient, rtol=1e-3, atol=1e-4)


def test_metrics_of_each_variant() -> None:
    """The hardest negative's similarity is logged for every variant; the hard estimator adds its hardest negative's
    importance weight: N e^{beta l_max} / sum_j e^{beta l_j}, 1 when every negative weighs alike."""
    z_a, z_b = unit(6, 0), unit(6, 1)
    plain = InfoNCELoss(0.2).loss_and_hardness(z_a, z_b).hardness
    debiased = InfoNCELoss(0.2, negatives=DebiasedNegatives(0.1)).loss_and_hardness(z_a, z_b).hardness
    hard = InfoNCELoss(0.2, negatives=DebiasedNegatives(0.1, 1.0)).loss_and_hardness(z_a, z_b).hardness
    assert set(debiased) == {Metric.HARD_NEGATIVE_SIM, Metric.DEBIASED_CLAMPED_FRACTION}
    assert set(hard) == set(debiased) | {Metric.HARDEST_NEGATIVE_WEIGHT}
    torch.testing.assert_close(hard[Metric.HARD_NEGATIVE_SIM], plain[Metric.HARD_NEGATIVE_SIM])
    z = torch.cat([z_a, z_b])
    weights = []
    for i in range(12):
        logits = torch.stack([z[i] @ z[k] for k in range(12) if k not in (i, (i + 6) % 12)]) / 0.2
        weights.append(10 * torch.exp(logits.max()) / torch.exp(logits).sum())
    torch.testing.assert_close(hard[Metric.HARDEST_NEGATIVE_WEIGHT], torch.stack(weights).mean())
    queued = queue_info_nce_and_hardness(z_a, z_b, unit(16, 2), 0.2, negatives=DebiasedNegatives(0.1, 1.0)).hardness
    assert set(queued) == set(hard)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="negatives.tau_plus must be below 1, got 1.0"):
        DebiasedNegatives(tau_plus=1.0)
    with pytest.raises(ConfigurationError, match="negatives.beta must be at least 0, got -1"):
        DebiasedNegatives(beta=-1)
    with pytest.raises(ConfigurationError, match="cacr.repulsion_temperature must be at least 0"):
        AttractionRepulsion(repulsion_temperature=-1.0)


@pytest.mark.parametrize(
    ("negatives", "cacr", "others", "message"),
    [
        ((0.1, 0.0), False, dict(decoupled=True), "negatives (debiasing, hard negative sampling) and decoupled do not"),
        ((0.0, 1.0), False, dict(mixing=True), "negatives (debiasing, hard negative sampling) and mixing do not"),
        ((0.1, 0.0), False, dict(neighbours=True), "and neighbours do not combine: switch one off (negatives.tau_plus"),
        ((0.0, 0.0), True, dict(decoupled=True), "cacr and decoupled do not combine: switch one off (cacr.enabled"),
        ((0.0, 0.0), True, dict(mixing=True), "cacr and mixing do not combine"),
        ((0.0, 0.0), True, dict(neighbours=True), "cacr and neighbours do not combine"),
        ((0.1, 1.0), True, {}, "cacr and negatives do not combine"),
    ],
)
def test_combinations_that_make_no_sense_are_refused_in_one_line(negatives, cacr, others, message) -> None:
    options = dict(decoupled=False, mixing=False) | others
    problems = negatives_conflicts(DebiasedNegatives(*negatives), AttractionRepulsion(cacr), **options)
    assert len(problems) == 1 and message in problems[0] and "\n" not in problems[0]
    assert negatives_conflicts(DebiasedNegatives(), AttractionRepulsion(), True, True, True) == []


def test_the_losses_refuse_mixing_with_a_variant() -> None:
    """Called from Python, the losses refuse what the methods refuse: MoCHi's synthetic negatives are not samples
    of the data, so the class prior of the debiased estimator does not hold for them."""
    from selfsup.models.hard_negative_mixing import HardNegativeMixing

    mixing = HardNegativeMixing(num_hard=4, num_mixed=2)
    with pytest.raises(ConfigurationError, match="negatives .* and mixing do not combine"):
        InfoNCELoss(0.2, negatives=DebiasedNegatives(0.1))(unit(6, 0), unit(6, 1), mixing)
    with pytest.raises(ConfigurationError, match="cacr and mixing do not combine"):
        queue_info_nce(unit(4, 0), unit(4, 1), unit(16, 2), 0.2, mixing=mixing, cacr=AttractionRepulsion(True))
    with pytest.raises(ConfigurationError, match="negatives .* and decoupled do not combine"):
        InfoNCELoss(0.2, decoupled=True, negatives=DebiasedNegatives(0.1))


VARIANTS = {
    "debiased_hard": dict(negatives=DebiasedNegatives(0.1, 1.0)),
    "cacr": dict(cacr=AttractionRepulsion(True, 1.0, 2.0)),
}


def _ddp_worker(rank: int, world_size: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    for name, options in VARIANTS.items():
        torch.manual_seed(0)
        z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)  # the global batch; each rank takes its half
        local = slice(rank * 4, (rank + 1) * 4)
        mine_a, mine_b = z_a[local].clone().requires_grad_(), z_b[local].clone().requires_grad_()
        loss = InfoNCELoss(0.2, **options)(mine_a, mine_b)
        (loss / world_size).backward()  # DDP averages the ranks' gradients
        queue.put((name, rank, loss.item(), mine_a.grad.tolist(), mine_b.grad.tolist()))
    dist.destroy_process_group()


def test_two_process_ddp_equals_single_process() -> None:
    """SimCLR's in-batch path with debiasing + hard negatives and with CACR: the mean loss over 2 gloo ranks and the
    gradients DDP applies equal one process on the whole batch (one process pair for both variants)."""
    queue = RANKS.SimpleQueue()
    start_ranks(_ddp_worker, (2, free_port(), queue), join=True)
    results = sorted(queue.get() for _ in range(2 * len(VARIANTS)))
    for name, options in VARIANTS.items():
        torch.manual_seed(0)
        z_a, z_b = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
        loss = InfoNCELoss(0.2, **options)(z_a, z_b)
        loss.backward()
        ranks = [result for result in results if result[0] == name]
        assert sum(r[2] for r in ranks) / 2 == pytest.approx(loss.item(), rel=1e-5), name
        torch.testing.assert_close(torch.tensor([row for r in ranks for row in r[3]]), z_a.grad)
        torch.testing.assert_close(torch.tensor([row for r in ranks for row in r[4]]), z_b.grad)
