"""The poly-view losses ("Poly-View Contrastive Learning", Shidani et al., ICLR 2024) against the paper's
definitions written as plain loops in float64, their M = 2 edge case (SimCLR's NT-Xent) and 2 gloo ranks."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigurationError
from selfsup.losses import InfoNCELoss, polyview_loss, polyview_loss_and_hardness
from selfsup.losses.polyview import OBJECTIVES
from tests.conftest import RANKS, free_port, start_ranks


def reference_polyview(views: list[Tensor], temperature: float, objective: str) -> Tensor:
    """The loss of anchor view a of image i, averaged over all N M anchors, with b running over i's other views:
    PVC's p_ab = e^s(i_a, i_b) / (e^s(i_a, i_b) + sum over every view c of every other image j of e^s(i_a, j_c));
    geometric: -mean_b log p_ab; arithmetic: -log mean_b p_ab; multi-crop: -mean_b log q_ab, q_ab being SimCLR's
    probability on the views (a, b) alone: e^s(i_a, i_b) / (sum_{j != i} e^s(i_a, j_a) + sum_j e^s(i_a, j_b))."""
    z = torch.stack([F.normalize(view, dim=1) for view in views])  # (M, N, D)
    m, n = z.shape[:2]
    e = torch.exp(torch.einsum("aid,cjd->aicj", z, z) / temperature)  # e[a, i, c, j] = exp(s(i_a, j_c))
    anchor_losses = []
    for i in range(n):
        other_images = [j for j in range(n) if j != i]
        for a in range(m):
            probabilities = []
            for b in range(m):
                if b == a:
                    continue
                if objective == "multi_crop":
                    denominator = e[a, i, a, other_images].sum() + e[a, i, b, :].sum()
                else:
                    denominator = e[a, i, b, i] + e[a, i, :, other_images].sum()
                probabilities.append(e[a, i, b, i] / denominator)
            p = torch.stack(probabilities)
            anchor_losses.append(-torch.log(p.mean()) if objective == "arithmetic" else -torch.log(p).mean())
    return torch.stack(anchor_losses).mean()


def embeddings(m: int, n: int = 5, d: int = 8, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=generator, requires_grad=True) for _ in range(m)]


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("m", [3, 4])
def test_value_and_gradient_match_the_paper(objective: str, m: int) -> None:
    views = embeddings(m)
    loss = polyview_loss(views, 0.3, objective)
    expected = reference_polyview([view.double() for view in views], 0.3, objective)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    for grad, expected_grad in zip(torch.autograd.grad(loss, views), torch.autograd.grad(expected, views), strict=True):
        torch.testing.assert_close(grad, expected_grad.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_views_give_simclr_nt_xent(objective: str) -> None:
    """With M = 2 each anchor has one other view: every objective is NT-Xent, value and gradient."""
    views = embeddings(2, n=6)
    loss = polyview_loss(views, 0.2, objective)
    expected = InfoNCELoss(0.2)(*views)
    torch.testing.assert_close(loss, expected)
    for grad, expected_grad in zip(torch.autograd.grad(loss, views), torch.autograd.grad(expected, views), strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_identical_embeddings_and_the_order_of_the_means() -> None:
    """All embeddings equal: every p_ab is 1 / (1 + M (N - 1)), so both PVC losses are log(1 + M (N - 1)), and
    multi-crop's q_ab is 1 / (2N - 1). On random embeddings the arithmetic mean bounds the geometric one (AM-GM)."""
    m, n = 4, 5
    same = [torch.ones(n, 3)] * m
    for objective in ("geometric", "arithmetic"):
        assert polyview_loss(same, 0.1, objective).item() == pytest.approx(math.log(1 + m * (n - 1)), rel=1e-5)
    assert polyview_loss(same, 0.1, "multi_crop").item() == pytest.approx(math.log(2 * n - 1), rel=1e-5)
    views = embeddings(m)
    assert polyview_loss(views, 0.2, "arithmetic") < polyview_loss(views, 0.2, "geometric")


def test_the_hardest_negative_is_any_view_of_another_image() -> None:
    views = embeddings(3, n=4)
    _, hardness = polyview_loss_and_hardness(views, 0.2)
    z = [F.normalize(view, dim=1) for view in views]
    hardest = [max(z[a][i] @ z[c][j] for j in range(4) if j != i for c in range(3)) for i in range(4) for a in range(3)]
    torch.testing.assert_close(hardness, {"train/hard_negative_sim": torch.stack(hardest).mean()})


@pytest.mark.parametrize(
    ("num_views", "objective", "temperature", "message"),
    [
        (1, "geometric", 0.2, "views must give at least 2 views of each image for a poly-view loss, got 1"),
        (3, "harmonic", 0.2, "objective must be one of geometric, arithmetic, multi_crop, got 'harmonic'"),
        (3, "geometric", 0.0, "temperature must be greater than 0, got 0.0"),
    ],
)
def test_one_line_errors(num_views: int, objective: str, temperature: float, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        polyview_loss(embeddings(num_views), temperature, objective)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)


def _ddp_worker(rank: int, world_size: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    local = slice(rank * 3, (rank + 1) * 3)  # each rank takes its half of the global batch of 6 images
    for objective in OBJECTIVES:
        mine = [view[local].detach().clone().requires_grad_() for view in embeddings(3, n=6)]
        loss, hardness = polyview_loss_and_hardness(mine, 0.2, objective)
        (loss / world_size).backward()  # DDP averages the gradients over ranks
        grads = [view.grad.tolist() for view in mine]
        queue.put((objective, rank, loss.item(), hardness["train/hard_negative_sim"].item(), grads))
    dist.destroy_process_group()


def test_two_process_ddp_equals_single_process() -> None:
    queue = RANKS.SimpleQueue()
    start_ranks(_ddp_worker, (2, free_port(), queue), join=True)
    results = sorted(queue.get() for _ in range(2 * len(OBJECTIVES)))
    for objective in OBJECTIVES:
        views = embeddings(3, n=6)
        loss, hardness = polyview_loss_and_hardness(views, 0.2, objective)
        loss.backward()
        ranks = [r for r in results if r[0] == objective]
        assert sum(r[2] for r in ranks) / 2 == pytest.approx(loss.item(), rel=1e-5), objective
        assert sum(r[3] for r in ranks) / 2 == pytest.approx(hardness["train/hard_negative_sim"].item(), rel=1e-5)
        for v, view in enumerate(views):
            torch.testing.assert_close(torch.tensor([row for r in ranks for row in r[4][v]]), view.grad)
