import math
from types import SimpleNamespace

import pytest
import torch

from selfsup.methods import SimCLR
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


def test_method_learning_rate_scales_with_the_global_batch_and_warms_up() -> None:
    """lr = base_lr x global batch / 256, with global batch = per-device batch x devices x accumulation; linear
    warmup over warmup_epochs of optimizer steps, then cosine decay to 0 at the last step."""
    method = SimCLR(backbone="test_resnet", small_image_stem=False, base_lr=0.4, warmup_epochs=2, batch_size=64)
    # 4 devices x 2 accumulated batches of 64: a global batch of 512; 20 batches = 10 optimizer steps per epoch
    method.trainer = SimpleNamespace(
        estimated_stepping_batches=100, world_size=4, accumulate_grad_batches=2, num_training_batches=20
    )
    schedule = method.configure_optimizers()
    optimizer, scheduler = schedule["optimizer"], schedule["lr_scheduler"]["scheduler"]
    peak = 0.4 * 512 / 256
    learning_rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(100):
        optimizer.step()
        scheduler.step()
        learning_rates.append(optimizer.param_groups[0]["lr"])
    assert learning_rates[0] == pytest.approx(peak / 20)  # the first of 20 warmup steps
    assert learning_rates[19] == pytest.approx(peak) and learning_rates[20] == pytest.approx(peak)  # warmup ends
    assert learning_rates[60] == pytest.approx(peak / 2)  # halfway through the cosine
    assert learning_rates[100] == pytest.approx(0.0, abs=1e-12)
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the probe follows the schedule
