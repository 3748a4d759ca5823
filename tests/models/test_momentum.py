import math

import pytest
import torch
from torch import nn

from selfsup.models.momentum import cosine_momentum, ema_update, momentum_copy


def test_ema_update_follows_the_formula_and_copies_buffers() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    target = momentum_copy(online)
    with torch.no_grad():
        for param in online.parameters():
            param.add_(1.0)
    online(torch.randn(8, 3))  # moves BN running statistics
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, tau=0.9)
    for old, new, current in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * current)
    torch.testing.assert_close(target[1].running_mean, online[1].running_mean)


def test_cosine_schedule_endpoints_and_constant_case() -> None:
    assert cosine_momentum(0.0, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_momentum(0.5, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_momentum(0.25, 0.99, 1.0) == pytest.approx(1.0 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_momentum(1.0, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.37, 0.999, 0.999) == pytest.approx(0.999)
