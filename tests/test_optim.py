import math

import pytest
import torch

from selfsup.optim import LARS, warmup_cosine


def test_warmup_cosine_endpoints() -> None:
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_lars_step_follows_trust_ratio_formula_and_excluded_groups_use_sgd() -> None:
    w, b = torch.tensor([3.0, 4.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    w.grad, b.grad = torch.tensor([0.6, 0.8]), torch.tensor([0.5])
    optimizer = LARS(
        [{"params": [w]}, {"params": [b], "weight_decay": 0.0, "lars_exclude": True}],
        lr=0.1,
        weight_decay=0.1,
        trust_coefficient=0.02,
    )
    optimizer.step()
    update = torch.tensor([0.6, 0.8]) + 0.1 * torch.tensor([3.0, 4.0])  # g + wd * w, norm 1.5
    trust = 0.02 * 5.0 / 1.5
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * trust * update)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.05]))
    assert math.isfinite(w.sum().item())
