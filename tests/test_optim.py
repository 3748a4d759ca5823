import math
from types import SimpleNamespace

import pytest
import torch
from timm.optim import param_groups_weight_decay

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


@pytest.mark.parametrize(
    "backbone, kwargs", [("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}), ("resnet18", {})]
)
def test_backbone_weight_decay_exempts_what_timm_exempts(backbone: str, kwargs: dict) -> None:
    """The reference is timm's own grouping of the backbone; the heads follow the same rule and the probe keeps
    its own group, without decay."""
    method = SimCLR(backbone=backbone, backbone_kwargs=kwargs, image_size=32, weight_decay=0.0, warmup_epochs=0)
    method.trainer = SimpleNamespace(
        estimated_stepping_batches=10, world_size=1, accumulate_grad_batches=1, num_training_batches=5
    )
    groups = {group["name"]: group for group in method.configure_optimizers()["optimizer"].param_groups}
    names = {id(param): name for name, param in method.named_parameters()}
    exempt = {names[id(p)] for p in groups["no_weight_decay"]["params"]}
    decayed = {names[id(p)] for p in groups["weights"]["params"]}

    no_weight_decay = getattr(method.backbone, "no_weight_decay", set)()
    timm_groups = param_groups_weight_decay(method.backbone, 0.1, no_weight_decay_list=no_weight_decay)
    backbone_names = {id(param): f"backbone.{name}" for name, param in method.backbone.named_parameters()}
    timm_exempt = {backbone_names[id(p)] for g in timm_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {name for name in exempt if name.startswith("backbone.")} == timm_exempt
    assert {name for name in decayed if name.startswith("backbone.")} == set(backbone_names.values()) - timm_exempt
    assert "projector.0.weight" in decayed and {"projector.1.weight", "projector.3.bias"} <= exempt  # BN, bias
    assert groups["no_weight_decay"]["lars_exclude"] and groups["weights"]["params"]  # with decay 0 too: LARS scales
    assert {names[id(p)] for p in groups["probe"]["params"]} == {"probe.weight", "probe.bias"}
    if backbone.startswith("vit"):
        assert {"backbone.pos_embed", "backbone.cls_token"} <= exempt


def _schedule(world_size: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, float]:
    """SimCLR's optimizer and schedule for 2 epochs of 64 images at batch 8 per device on `world_size` devices."""
    method = SimCLR(backbone="test_resnet", small_image_stem=False, base_lr=0.4, warmup_epochs=0.5, batch_size=8)
    steps_per_epoch = 64 // (8 * world_size)
    method.trainer = SimpleNamespace(
        estimated_stepping_batches=2 * steps_per_epoch,
        world_size=world_size,
        accumulate_grad_batches=1,
        num_training_batches=steps_per_epoch,
    )
    schedule = method.configure_optimizers()
    return schedule["optimizer"], schedule["lr_scheduler"]["scheduler"], 0.4 * 8 * world_size / 256


def _curve(world_sizes: tuple[int, int]) -> dict[int, float]:
    """{samples seen: learning rate / peak rate} of a run whose first epoch ran on world_sizes[0] devices and whose
    second epoch resumed from its checkpoint on world_sizes[1], restored in Lightning's order (optimizer, then
    schedule)."""
    curve, seen = {}, 0
    optimizer, scheduler, peak = _schedule(world_sizes[0])
    for epoch, world_size in enumerate(world_sizes):
        if epoch == 1:
            saved = optimizer.state_dict(), scheduler.state_dict()
            optimizer, scheduler, peak = _schedule(world_size)
            optimizer.load_state_dict(saved[0])
            scheduler.load_state_dict(saved[1])
        for _ in range(64 // (8 * world_size)):
            curve[seen] = optimizer.param_groups[0]["lr"] / peak
            optimizer.step()
            scheduler.step()
            seen += 8 * world_size
    return curve


def test_learning_rate_against_progress_survives_a_resume_on_another_number_of_devices() -> None:
    """1 -> 2 and 2 -> 1 devices at the epoch boundary give the uninterrupted run's curve against samples seen (the
    peak scales with the global batch); on main, 1 -> 2 gave LR 0 for 3 of 4 resumed steps and 2 -> 1 rewarmed."""
    uninterrupted = _curve((1, 1))
    assert uninterrupted[0] == pytest.approx(1 / 4) and uninterrupted[24] == pytest.approx(1.0)  # 4 warmup steps
    assert uninterrupted[120] == pytest.approx(0.5 * (1 + math.cos(math.pi * 88 / 96)))
    for world_sizes in ((1, 2), (2, 1)):
        resumed = _curve(world_sizes)
        for seen in range(64, 128, 16):  # where both runs take a step in the second epoch
            assert resumed[seen] == pytest.approx(uninterrupted[seen]), (world_sizes, seen)
    assert _curve((2, 1))[120] == pytest.approx(uninterrupted[120])  # ends near 0, not back in warmup


def test_a_checkpoint_of_the_step_count_schedule_resumes_at_its_step() -> None:
    """Checkpoints written before the schedule counted samples hold LambdaLR's state: its steps taken."""
    optimizer, scheduler, peak = _schedule(1)
    scheduler.load_state_dict({"last_epoch": 12, "base_lrs": [1.0], "_step_count": 13})
    assert scheduler.samples_seen == 12 * 8
    assert optimizer.param_groups[0]["lr"] / peak == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 12)))
