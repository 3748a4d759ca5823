"""SwAV: Sinkhorn-Knopp's marginals, its agreement across ranks, its robustness, and the swapped prediction loss
against plain loop references."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from selfsup.losses import sinkhorn_knopp, swapped_prediction_loss
from tests.conftest import RANKS, free_port, start_ranks


def scores(batch: int = 48, prototypes: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(batch, 8, generator=generator), dim=1)
    return embeddings @ F.normalize(torch.randn(prototypes, 8, generator=generator), dim=1).T


def reference_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Algorithm 1 of the SwAV paper's appendix, one process, float64, written out without shortcuts."""
    q = torch.exp(scores.double() / epsilon).T  # (K, B)
    num_prototypes, num_samples = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        for k in range(num_prototypes):
            q[k] = q[k] / q[k].sum() / num_prototypes
        for b in range(num_samples):
            q[:, b] = q[:, b] / q[:, b].sum() / num_samples
    return (q * num_samples).T


def test_matches_the_papers_algorithm() -> None:
    x = scores()
    torch.testing.assert_close(sinkhorn_knopp(x, 0.05, 3), reference_sinkhorn(x, 0.05, 3).float())


def test_codes_meet_both_marginals() -> None:
    x = scores(batch=48, prototypes=12)
    codes = sinkhorn_knopp(x, epsilon=0.05, iterations=3)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(48))  # each sample: one unit of mass
    # each prototype: B/K = 4 samples; three iterations move the plain softmax towards it, more converge
    softmax_error = (torch.softmax(x / 0.05, dim=1).sum(dim=0) / 4 - 1).abs().max()
    assert (codes.sum(dim=0) / 4 - 1).abs().max() < 0.6 * softmax_error
    converged = sinkhorn_knopp(x, epsilon=0.05, iterations=200, dtype=torch.float64)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((12,), 4.0, dtype=torch.float64), atol=1e-4, rtol=0)


def test_collapsed_and_bfloat16_inputs_stay_finite() -> None:
    collapsed = sinkhorn_knopp(torch.ones(16, 10))
    torch.testing.assert_close(collapsed, torch.full((16, 10), 0.1))  # equipartition: uniform codes
    extreme = sinkhorn_knopp(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 1), epsilon=0.001)
    assert torch.isfinite(extreme).all()
    codes = sinkhorn_knopp(scores().bfloat16())
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(48))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(sinkhorn_knopp(scores()), sinkhorn_knopp(scores()))
        assert sinkhorn_knopp(scores()).dtype == torch.float32


def _ddp_worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results.put((rank, sinkhorn_knopp(scores()[24 * rank : 24 * (rank + 1)]).tolist()))
    dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_concatenated_batch() -> None:
    results = RANKS.SimpleQueue()
    workers = start_ranks(_ddp_worker, (free_port(), results), join=False)
    parts = [codes for _, codes in sorted(results.get() for _ in range(2))]
    workers.join()
    torch.testing.assert_close(torch.tensor(parts[0] + parts[1]), sinkhorn_knopp(scores()))
    # per-rank equipartition (only the total reduced) would differ: the rows must be reduced across ranks
    assert not torch.allclose(torch.tensor(parts[0]), sinkhorn_knopp(scores()[:24]), atol=1e-3)


def reference_swapped_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float) -> float:
    total = 0.0
    for i, code in enumerate(codes):
        crop_terms = []
        for v, crop_scores in enumerate(scores):
            if v == i:
                continue
            per_sample = []
            for b in range(code.shape[0]):
                logits = crop_scores[b] / temperature
                log_p = logits - math.log(sum(math.exp(x) for x in logits.tolist()))
                per_sample.append(-(code[b] * log_p).sum().item())
            crop_terms.append(sum(per_sample) / len(per_sample))
        total += sum(crop_terms) / len(crop_terms)
    return total / len(codes)


def test_swapped_prediction_matches_reference_and_gives_scores_gradient() -> None:
    crops = [scores(batch=6, prototypes=5, seed=s).requires_grad_() for s in range(4)]  # 2 global + 2 local
    codes = [sinkhorn_knopp(c) for c in crops[:2]]
    loss = swapped_prediction_loss(crops, codes, temperature=0.1)
    assert loss.item() == pytest.approx(reference_swapped_loss(crops, codes, 0.1), rel=1e-5)
    loss.backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in crops)


def test_predicting_the_own_code_is_never_rewarded() -> None:
    """Crop 0 must predict crop 1's code and not its own: swapping which crop holds the matching scores matters."""
    code = torch.eye(4)
    confident, uniform = 50 * torch.eye(4), torch.zeros(4, 4)
    own = swapped_prediction_loss([confident, uniform], [code], temperature=1.0)
    swapped = swapped_prediction_loss([uniform, confident], [code], temperature=1.0)
    assert own.item() == pytest.approx(math.log(4), rel=1e-5) and swapped.item() < 1e-6
