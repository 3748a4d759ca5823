"""DINO: the loss and its collapse metrics against float64 references written from the paper's Algorithm 1, the
center's moving average, and 2 gloo ranks equal to one process on the concatenated batch (loss, averaged
gradients, center). Light on purpose: the spawned ranks import only torch and selfsup.losses."""

import math

import pytest
import torch
import torch.distributed as dist

from selfsup.losses import dino_center_update, dino_loss, dino_loss_terms
from tests.conftest import RANKS, free_port, start_ranks

K = 7


def scores(crops: int, batch: int = 5, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, K, generator=generator) for _ in range(crops)]


def reference_h(t: torch.Tensor, s: torch.Tensor, center: torch.Tensor, tps: float, tpt: float) -> torch.Tensor:
    """H(t, s) of the paper's Algorithm 1, in float64, the softmaxes written out."""
    t = t.detach().double()
    s = torch.exp(s.double() / tps) / torch.exp(s.double() / tps).sum(dim=1, keepdim=True)
    centred = (t - center.double()) / tpt
    t = torch.exp(centred) / torch.exp(centred).sum(dim=1, keepdim=True)  # center + sharpen
    return -(t * torch.log(s)).sum(dim=1).mean()


def reference_dino(student: list, teacher: list, center: torch.Tensor, tps: float, tpt: float) -> torch.Tensor:
    """Algorithm 1 with multi-crop (eq. 3): the mean of H over the (teacher crop i, student crop v != i) pairs."""
    pairs = [(i, v) for i in range(len(teacher)) for v in range(len(student)) if v != i]
    return sum(reference_h(teacher[i], student[v], center, tps, tpt) for i, v in pairs) / len(pairs)


@pytest.mark.parametrize("num_crops", [2, 4])
def test_loss_and_gradient_match_algorithm_1(num_crops: int) -> None:
    """Two crops: Algorithm 1's H(t1, s2) / 2 + H(t2, s1) / 2; four (two of them local): each local crop matches
    both global ones, each global one the other crops. A tensor temperature (what the method passes) gives the
    same; the teacher gets no gradient."""
    student = [s.requires_grad_() for s in scores(num_crops, seed=1)]
    teacher = [t.requires_grad_() for t in scores(2, seed=2)]
    center = 0.3 * torch.randn(K, generator=torch.Generator().manual_seed(3))
    loss = dino_loss(student, teacher, center, 0.1, torch.tensor(0.04))
    expected = reference_dino(student, teacher, center, 0.1, 0.04)
    if num_crops == 2:
        algorithm_1 = (reference_h(teacher[0], student[1], center, 0.1, 0.04) + reference_h(teacher[1], student[0],
                       center, 0.1, 0.04)) / 2  # fmt: skip
        torch.testing.assert_close(expected, algorithm_1)
    torch.testing.assert_close(loss, expected.float())
    gradients = torch.autograd.grad(loss, student)
    for gradient, expected_gradient in zip(gradients, torch.autograd.grad(expected, student), strict=True):
        torch.testing.assert_close(gradient, expected_gradient.float(), rtol=1e-4, atol=1e-6)
    assert dino_loss(student, teacher, center, 0.1, 0.04).item() == pytest.approx(loss.item())
    assert all(t.grad is None for t in teacher)


def test_collapse_metrics_are_the_teachers_entropy_and_the_mean_kl_over_pairs() -> None:
    student, teacher, center = scores(3, seed=4), scores(2, seed=5), torch.zeros(K)
    terms = dino_loss_terms(student, teacher, center, 0.1, 0.07)
    p_t = [torch.softmax(t.double() / 0.07, dim=1) for t in teacher]
    log_p_s = [torch.log_softmax(s.double() / 0.1, dim=1) for s in student]
    entropy = sum(-(p * p.log()).sum(dim=1).mean() for p in p_t) / 2
    pairs = [(i, v) for i in range(2) for v in range(3) if v != i]
    kl = sum((p_t[i] * (p_t[i].log() - log_p_s[v])).sum(dim=1).mean() for i, v in pairs) / len(pairs)
    torch.testing.assert_close(terms.teacher_entropy, entropy.float())
    torch.testing.assert_close(terms.kl_divergence, kl.float())
    assert terms.loss.item() == pytest.approx(dino_loss(student, teacher, center, 0.1, 0.07).item())
    # a teacher that centring makes uniform has entropy log K; a uniform student then matches it: KL 0
    flat = [torch.ones(5, K), torch.ones(5, K)]
    uniform = dino_loss_terms(flat, flat, torch.ones(K), 0.1, 0.04)
    assert uniform.teacher_entropy.item() == pytest.approx(math.log(K))
    assert uniform.loss.item() == pytest.approx(math.log(K)) and abs(uniform.kl_divergence.item()) < 1e-6


def test_bfloat16_scores_give_a_float32_loss() -> None:
    student, teacher = [s.bfloat16() for s in scores(3)], [t.bfloat16() for t in scores(2, seed=1)]
    loss = dino_loss(student, teacher, torch.zeros(K), 0.1, 0.04)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_center_is_a_moving_average_of_the_teachers_mean_output() -> None:
    """C <- m C + (1 - m) cat([t1, t2]).mean(dim=0), the last line of Algorithm 1's loop."""
    teacher, center = scores(2, seed=6), torch.randn(K, generator=torch.Generator().manual_seed(7))
    expected = 0.9 * center.double() + 0.1 * torch.cat(teacher).double().mean(dim=0)
    torch.testing.assert_close(dino_center_update(center, teacher, 0.9), expected.float())


STUDENT_WEIGHT = torch.randn(4, K, generator=torch.Generator().manual_seed(8))  # a shared student layer
INPUTS = [torch.randn(8, 4, generator=torch.Generator().manual_seed(9 + crop)) for crop in range(3)]
TEACHER = scores(2, batch=8, seed=12)
CENTER = torch.randn(K, generator=torch.Generator().manual_seed(13))


def step(rows: slice) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Loss, gradient of the student layer and the next center, on the rows `rows` of the batch."""
    weight = STUDENT_WEIGHT.clone().requires_grad_()
    student = [x[rows] @ weight for x in INPUTS]
    teacher = [t[rows] for t in TEACHER]
    loss = dino_loss(student, teacher, CENTER, 0.1, 0.04)
    loss.backward()
    return loss.item(), weight.grad, dino_center_update(CENTER, teacher, 0.9)


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    loss, gradient, center = step(slice(4 * rank, 4 * rank + 4))
    uneven = dino_center_update(CENTER, [t[slice(0, 3) if rank == 0 else slice(3, 8)] for t in TEACHER], 0.9)
    results.put((rank, loss, gradient.tolist(), center.tolist(), uneven.tolist()))
    dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_concatenated_batch() -> None:
    """The loss: the mean over ranks; the student's gradients: their mean (DDP's averaging); the center: equal on
    every rank to the concatenated batch's, also when the ranks hold 3 and 5 rows."""
    results = RANKS.SimpleQueue()
    workers = start_ranks(_worker, (free_port(), results), join=False)
    ranks = sorted(results.get() for _ in range(2))
    workers.join()
    loss, gradient, center = step(slice(0, 8))
    assert (ranks[0][1] + ranks[1][1]) / 2 == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close((torch.tensor(ranks[0][2]) + torch.tensor(ranks[1][2])) / 2, gradient)
    for _, _, _, rank_center, uneven in ranks:
        torch.testing.assert_close(torch.tensor(rank_center), center)
        torch.testing.assert_close(torch.tensor(uneven), center)
    # without the all-reduce each rank would keep the mean of its own half
    assert not torch.allclose(dino_center_update(CENTER, [t[:4] for t in TEACHER], 0.9), center, atol=1e-3)
