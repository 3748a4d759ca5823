import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from selfsup.errors import ConfigurationError
from selfsup.losses import InfoNCELoss
from selfsup.models.hard_negative_mixing import HardNegativeMixing, mix_hard_negatives
from tests.conftest import RANKS, free_port, start_ranks


def reference_nt_xent(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float,
    decoupled: bool,
    synthetic: torch.Tensor | None = None,
) -> torch.Tensor:
    """SimCLR eq. (1) written as a plain loop over the 2N anchors (DCL: positive left out of the denominator); with
    MoCHi, anchor i's synthetic negatives synthetic[i] (2N, S, D) join its denominator as constants."""
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    n = z_a.shape[0]
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        positive = torch.exp(z[i] @ z[j] / temperature)
        others = [torch.exp(z[i] @ z[k] / temperature) for k in range(2 * n) if k != i and (k != j or not decoupled)]
        if synthetic is not None:
            others += list(torch.exp(synthetic[i].to(z.dtype) @ z[i] / temperature))
        losses.append(-torch.log(positive / torch.stack(others).sum()))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_value_and_gradients_match_reference(decoupled: bool, temperature: float) -> None:
    torch.manual_seed(0)
    z_a, z_b = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    loss = InfoNCELoss(temperature, decoupled)(z_a, z_b)
    grads = torch.autograd.grad(loss, [z_a, z_b])
    expected = reference_nt_xent(z_a.double(), z_b.double(), temperature, decoupled)
    expected_grads = torch.autograd.grad(expected, [z_a, z_b])
    torch.testing.assert_close(loss.double(), expected)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad.double(), expected_grad.double(), rtol=1e-4, atol=1e-6)


def test_identical_embeddings_give_log_of_candidates() -> None:
    """All 2N embeddings equal: every logit ties, so the loss is log(2N - 1) (log(2N - 2) without the positive)."""
    n = 5
    z = torch.ones(n, 4)
    assert InfoNCELoss(0.1)(z, z).item() == pytest.approx(math.log(2 * n - 1), rel=1e-5)
    assert InfoNCELoss(0.1, decoupled=True)(z, z).item() == pytest.approx(math.log(2 * n - 2), rel=1e-5)


def test_aligned_views_score_lower_than_random_pairs() -> None:
    torch.manual_seed(0)
    z = torch.randn(16, 32)
    criterion = InfoNCELoss(0.1)
    assert criterion(z, z + 0.01 * torch.randn_like(z)) < criterion(z, torch.randn_like(z)) - 1.0


def test_rejects_non_positive_temperature() -> None:
    with pytest.raises(ConfigurationError, match="temperature"):
        InfoNCELoss(0.0)


def _ddp_worker(rank: int, world_size: int, port: int, decoupled: bool, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)  # the global batch; each rank takes its half
    local = slice(rank * 4, (rank + 1) * 4)
    mine_a, mine_b = z_a[local].clone().requires_grad_(), z_b[local].clone().requires_grad_()
    loss = InfoNCELoss(0.2, decoupled)(mine_a, mine_b)
    # DDP averages gradients over ranks, so the gradient DDP applies is that of loss / world_size summed over ranks.
    (loss / world_size).backward()
    queue.put((rank, loss.item(), mine_a.grad.tolist(), mine_b.grad.tolist()))  # plain data outlives the process
    dist.destroy_process_group()


@pytest.mark.parametrize("decoupled", [False, True])
def test_two_process_ddp_equals_single_process(decoupled: bool) -> None:
    torch.manual_seed(0)
    z_a, z_b = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    loss = InfoNCELoss(0.2, decoupled)(z_a, z_b)
    loss.backward()

    queue = RANKS.SimpleQueue()
    start_ranks(_ddp_worker, (2, free_port(), decoupled, queue), join=True)
    results = sorted(queue.get() for _ in range(2))
    assert sum(r[1] for r in results) / 2 == pytest.approx(loss.item(), rel=1e-5)
    torch.testing.assert_close(torch.tensor([row for r in results for row in r[2]]), z_a.grad)
    torch.testing.assert_close(torch.tensor([row for r in results for row in r[3]]), z_b.grad)


def test_hard_negative_mixing_over_in_batch_negatives() -> None:
    """SimCLR + MoCHi: with s = s' = 0 the loss is plain NT-Xent; with synthetic hard negatives it is higher.
    The hardest negative's similarity is reported with and without mixing: anchor i's negatives are every
    other sample but its positive (i + n mod 2n)."""
    torch.manual_seed(0)
    z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
    criterion = InfoNCELoss(0.2)
    plain, hardness = criterion.loss_and_hardness(z_a, z_b)
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    hardest = [max(z[i] @ z[k] for k in range(16) if k not in (i, (i + 8) % 16)) for i in range(16)]
    torch.testing.assert_close(hardness, {"train/hard_negative_sim": torch.stack(hardest).mean()})
    torch.testing.assert_close(criterion(z_a, z_b, HardNegativeMixing(num_hard=4)), plain)
    torch.manual_seed(1)
    mixed_loss, mixed = criterion.loss_and_hardness(
        z_a, z_b, HardNegativeMixing(num_hard=4, num_mixed=8, num_query_mixed=4)
    )
    assert mixed_loss > plain
    torch.manual_seed(1)  # the same draws, mixing the same hard negatives: never an anchor itself or its positive
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[torch.arange(16), torch.arange(16)] = mask[torch.arange(16), (torch.arange(16) + 8) % 16] = False
    expected = mix_hard_negatives(z, z, 4, 8, 4, mask)
    assert expected.negatives.shape == (16, 12, 16)
    torch.testing.assert_close(mixed, expected.metrics())
    torch.testing.assert_close(mixed["train/hard_negative_sim"], hardness["train/hard_negative_sim"])


def test_synthetic_in_batch_negatives_are_constants_of_the_loss() -> None:
    """SimCLR + MoCHi: the gradient is that of eq. (1) with the synthetic negatives held fixed (Kalantidis et al.,
    Sec. 4: mixing is made without gradient), none flowing through the anchors mixed into them."""
    z_a = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    z_b = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    torch.manual_seed(2)
    loss = InfoNCELoss(0.2)(z_a, z_b, HardNegativeMixing(num_hard=4, num_mixed=6, num_query_mixed=4))
    z = F.normalize(torch.cat([z_a, z_b]), dim=1).detach()
    mask = torch.ones(10, 10, dtype=torch.bool)
    mask[torch.arange(10), torch.arange(10)] = mask[torch.arange(10), (torch.arange(10) + 5) % 10] = False
    torch.manual_seed(2)  # the same draws
    synthetic = mix_hard_negatives(z, z, 4, 6, 4, mask).negatives
    expected = reference_nt_xent(z_a.double(), z_b.double(), 0.2, False, synthetic)
    torch.testing.assert_close(loss, expected.float())
    for gradient, expected_gradient in zip(
        torch.autograd.grad(loss, [z_a, z_b]), torch.autograd.grad(expected, [z_a, z_b]), strict=True
    ):
        torch.testing.assert_close(gradient, expected_gradient, rtol=1e-4, atol=1e-6)
