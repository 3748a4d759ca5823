import math

import pytest
import torch
from torch import nn

from selfsup.losses import normalized_mse
from selfsup.methods import BYOL
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


def test_target_network_gets_no_gradient() -> None:
    method = BYOL(
        backbone="test_resnet",
        small_image_stem=False,
        views=[{"num_views": 2}],
        image_size=16,
        projector_hidden_dim=32,
        predictor_hidden_dim=32,
        num_classes=3,
    )
    views = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    method.ssl_loss(method.embed(views), views, torch.zeros(4, dtype=torch.long))[0].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.target_backbone.parameters())
    assert all(p.grad is not None for p in method.predictor.parameters())


def test_normalized_mse_values() -> None:
    x = torch.randn(5, 8)
    assert normalized_mse(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_mse(torch.eye(2), torch.eye(2).flip(0)).item() == pytest.approx(2.0)
