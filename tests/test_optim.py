import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from timm.optim import param_groups_weight_decay

from selfsup.methods import SimCLR, SimSiam
from selfsup.optim import LARS, WarmupCosineSchedule, optimizer_steps_left, warmup_cosine


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
    method = SimCLR(
        backbone="test_resnet", small_image_stem=False, base_lr=0.4, warmup_epochs=2, batch_size=64, num_classes=10
    )
    # 4 devices x 2 accumulated batches of 64: a global batch of 512; 20 batches = 10 optimizer steps per epoch
    method.trainer = SimpleNamespace(
        estimated_stepping_batches=100,
        world_size=4,
        accumulate_grad_batches=2,
        train_dataloader=(),
        num_training_batches=20,
        max_epochs=10,
        max_steps=-1,
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
    method = SimCLR(
        backbone=backbone,
        backbone_kwargs=kwargs,
        image_size=32,
        weight_decay=0.0,
        warmup_epochs=0,
        num_classes=10,
        batch_size=256,
    )
    method.trainer = SimpleNamespace(
        estimated_stepping_batches=10,
        world_size=1,
        accumulate_grad_batches=1,
        train_dataloader=(),
        num_training_batches=5,
        max_epochs=2,
        max_steps=-1,
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


def restored_loops(epochs_trained: int, batches_done: int = 0, global_step: int = 0) -> dict[str, Any]:
    """The loop counters of a Trainer that restored a checkpoint of `epochs_trained` whole epochs and `batches_done`
    batches of the next, as Lightning holds them when it loads the schedule (after the loops): an epoch-end
    checkpoint's epoch counts as processed, a mid-epoch one's as started only."""
    epochs = SimpleNamespace(processed=epochs_trained, started=epochs_trained + (batches_done > 0))
    batches = SimpleNamespace(ready=batches_done)
    fit_loop = SimpleNamespace(epoch_progress=SimpleNamespace(current=epochs),
                               epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=batches)))  # fmt: skip
    return {"fit_loop": fit_loop, "global_step": global_step, "max_steps": -1}


def _schedule(
    world_size: int, restored: tuple[int, int] = (0, 0)
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, float]:
    """SimCLR's optimizer and schedule for 2 epochs of 64 images at batch 8 per device on `world_size` devices, in a
    trainer that restored (epochs, batches) of a checkpoint."""
    method = SimCLR(backbone="test_resnet", small_image_stem=False, base_lr=0.4, warmup_epochs=0.5, batch_size=8)
    steps_per_epoch = 64 // (8 * world_size)
    method.trainer = SimpleNamespace(
        estimated_stepping_batches=2 * steps_per_epoch,
        world_size=world_size,
        accumulate_grad_batches=1,
        train_dataloader=(),
        num_training_batches=steps_per_epoch,
        max_epochs=2,
        **restored_loops(*restored),
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
            optimizer, scheduler, peak = _schedule(world_size, restored=(1, 0))
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
    optimizer, scheduler, peak = _schedule(1, restored=(1, 4))  # 8 steps an epoch
    scheduler.load_state_dict({"last_epoch": 12, "base_lrs": [1.0], "_step_count": 13})
    assert scheduler.progress == 12 / 16
    assert optimizer.param_groups[0]["lr"] / peak == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 12)))


def test_a_checkpoint_of_the_samples_seen_schedule_resumes_at_its_progress() -> None:
    """Checkpoints written before the schedule kept its plan hold the samples seen: over this run's plan, 3/4."""
    optimizer, scheduler, peak = _schedule(1, restored=(1, 4))
    scheduler.load_state_dict({"samples_seen": 12 * 8})
    assert scheduler.progress == 12 / 16
    assert optimizer.param_groups[0]["lr"] / peak == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 12)))


def _drop_last_run(
    images: int,
    batch: int,
    epochs: int,
    warmup_epochs: float,
    world_sizes: tuple[int, int],
    resume_epoch: int | None,
    resumed_epochs: int | None = None,
) -> tuple[list[tuple[float, float]], float]:
    """([(progress, learning-rate factor) of every optimizer step], progress at the end) of a run of `epochs` whose
    first `resume_epoch` epochs ran on world_sizes[0] devices and the rest resumed from the epoch-end checkpoint
    on world_sizes[1], with max_epochs `resumed_epochs` (default: the same), or uninterrupted for None. With
    drop_last, each of w ranks trains images // w // batch batches an epoch, so the planned steps change with the
    number of devices. Restored in Lightning's order: loops, optimizer, schedule."""

    def planned(world_size: int, epochs: int) -> tuple[torch.optim.Optimizer, WarmupCosineSchedule, int]:
        steps_per_epoch = images // world_size // batch
        trainer = SimpleNamespace(train_dataloader=(), num_training_batches=steps_per_epoch, accumulate_grad_batches=1,
                                  max_epochs=epochs, estimated_stepping_batches=epochs * steps_per_epoch,
                                  **restored_loops(resume_epoch or 0))  # fmt: skip
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        schedule = WarmupCosineSchedule(optimizer, trainer, round(warmup_epochs * steps_per_epoch), batch * world_size)
        return optimizer, schedule, steps_per_epoch

    resumed_epochs = resumed_epochs or epochs
    steps, (optimizer, schedule, steps_per_epoch) = [], planned(world_sizes[0], epochs)
    for epoch in range(resumed_epochs):
        if epoch == resume_epoch:
            saved = optimizer.state_dict(), schedule.state_dict()
            optimizer, schedule, steps_per_epoch = planned(world_sizes[1], resumed_epochs)
            optimizer.load_state_dict(saved[0])
            schedule.load_state_dict(saved[1])
        for _ in range(steps_per_epoch):
            steps.append((schedule.progress, optimizer.param_groups[0]["lr"]))
            optimizer.step()
            schedule.step()
    return steps, schedule.progress


@pytest.mark.parametrize(
    "images, batch, epochs, warmup_epochs, world_sizes, resume_epoch",
    [
        (480, 64, 2, 0.5, (1, 2), 1),  # 7 steps an epoch, then 3 of twice the batch: progress jumped 0.500 -> 0.583
        (480, 64, 2, 0.5, (2, 1), 1),  # 3 steps, then 7: the curve ended a step short of its end
        (480, 64, 3, 1.5, (2, 1), 1),  # within warmup, which ends at the same progress
        (60_000, 512, 100, 10, (1, 8), 50),  # full Fashion-MNIST: the last 31 steps trained at a learning rate of 0
    ],
)
def test_a_resume_on_another_number_of_devices_continues_the_curve_and_ends_it_at_the_last_step(
    images: int, batch: int, epochs: int, warmup_epochs: float, world_sizes: tuple[int, int], resume_epoch: int
) -> None:
    """The resumed run re-plans: it starts where the checkpoint stopped, shares the progress left evenly among the
    steps it really takes (each at warmup_cosine of its progress), and its last step ends at progress 1: no step
    trains at rate 0."""
    steps, end = _drop_last_run(images, batch, epochs, warmup_epochs, world_sizes, resume_epoch)
    saved_per_epoch = images // world_sizes[0] // batch
    saved = resume_epoch * saved_per_epoch  # steps before the checkpoint
    warmup_end = round(warmup_epochs * saved_per_epoch) / (epochs * saved_per_epoch)
    resumed_step = (1 - resume_epoch / epochs) / (len(steps) - saved)
    assert steps[saved - 1][0] == pytest.approx(resume_epoch / epochs - 1 / (epochs * saved_per_epoch), abs=1e-12)
    for i, (progress, rate) in enumerate(steps[saved:]):
        assert progress == pytest.approx(resume_epoch / epochs + i * resumed_step, abs=1e-12)  # from where it stopped
        assert rate == pytest.approx(warmup_cosine(progress, warmup_end, 1.0, resumed_step), rel=1e-12)
    assert end == 1.0 and all(rate > 0 for _, rate in steps)
    uninterrupted = [rate for _, rate in _drop_last_run(images, batch, epochs, warmup_epochs, world_sizes, None)[0]]
    one_step = abs(uninterrupted[saved] - uninterrupted[saved - 1])
    assert abs(steps[saved][1] - uninterrupted[saved]) <= one_step  # the first resumed rate: on the saved curve


def test_a_resume_on_the_same_devices_continues_its_plan_bit_for_bit() -> None:
    uninterrupted, end = _drop_last_run(480, 64, 3, 1.5, (2, 2), resume_epoch=None)
    assert _drop_last_run(480, 64, 3, 1.5, (2, 2), resume_epoch=1) == (uninterrupted, end) and end == 1.0


def test_an_epoch_start_replans_a_resumed_epoch_that_took_fewer_steps_than_lightnings_counters_said() -> None:
    """A checkpoint 2 batches into an epoch of 8, resumed where the loader deals the rest of that epoch in 4 batches
    (as when more ranks had served it): the load-time plan (6 + 8 steps left, from Lightning's counters) is 2 steps
    too long. The next epoch's start re-plans from the trainer, so the run still ends at progress 1."""
    saved_optimizer, saved_schedule, _ = _schedule(1)  # 8 steps an epoch
    for _ in range(2):
        saved_optimizer.step()
        saved_schedule.step()
    method = SimCLR(backbone="test_resnet", small_image_stem=False, warmup_epochs=0.5, batch_size=8)
    method.trainer = SimpleNamespace(estimated_stepping_batches=16, world_size=1, accumulate_grad_batches=1,
                                     max_epochs=2, train_dataloader=(), num_training_batches=8,
                                     **restored_loops(0, 2))  # fmt: skip
    configured = method.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    method.trainer.lr_scheduler_configs = [SimpleNamespace(scheduler=schedule)]
    optimizer.load_state_dict(saved_optimizer.state_dict())
    schedule.load_state_dict(saved_schedule.state_dict())
    rates = []
    for batches in (4, 8):
        if batches == 8:
            method.trainer.__dict__.update(restored_loops(1))  # as epoch 1 starts: epoch 0 processed
            method.on_train_epoch_start()
        for _ in range(batches):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
    assert schedule.progress == 1.0 and all(rate > 0 for rate in rates)


@pytest.mark.parametrize(
    "restored, max_steps, expected",
    [
        ((0, 0), -1, 12),  # 3 epochs of 7 batches, 2 accumulated: steps after batches 2, 4, 6 and 7 of each
        ((1, 0), -1, 8),  # an epoch-end checkpoint of epoch 0
        ((1, 3), -1, 3 + 4),  # 3 batches into epoch 1: steps after batches 4, 6 and 7 left
        ((1, 7), -1, 4),  # all of epoch 1's batches trained (a checkpoint of its validation)
        ((1, 0), 10, 10 - 5),  # max_steps 10, 5 taken
    ],
)
def test_optimizer_steps_left_counts_what_lightning_runs_from_its_restored_loops(
    restored: tuple[int, int], max_steps: int, expected: int
) -> None:
    trainer = SimpleNamespace(train_dataloader=(), num_training_batches=7, accumulate_grad_batches=2, max_epochs=3,
                              **{**restored_loops(*restored, global_step=5), "max_steps": max_steps})  # fmt: skip
    assert optimizer_steps_left(trainer) == expected


def test_a_run_continued_for_more_epochs_resumes_at_the_epochs_it_trained() -> None:
    """A finished 2-epoch run continued to 4 epochs (--trainer.max_epochs 4) is halfway through the longer run: it
    resumes where a 4-epoch run is after 2 epochs, warmup included, and ends that curve at its last step (rather
    than training its 14 new steps at the end of its finished curve, at rate 0)."""
    steps, end = _drop_last_run(480, 64, 2, 0.5, (1, 1), resume_epoch=2, resumed_epochs=4)
    planned_for_4, _ = _drop_last_run(480, 64, 4, 0.5, (1, 1), resume_epoch=None)
    assert [value for step in steps[14:] for value in step] == pytest.approx(
        [value for step in planned_for_4[14:] for value in step], rel=1e-12
    )
    assert end == 1.0


def test_a_fit_of_no_training_batches_gets_a_schedule() -> None:
    """`--trainer.limit_train_batches 0` trains nothing: its schedule must still be built (it divided by 0)."""
    trainer = SimpleNamespace(estimated_stepping_batches=0, max_epochs=1, train_dataloader=(),
                              num_training_batches=0, accumulate_grad_batches=1, **restored_loops(0))  # fmt: skip
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    schedule = WarmupCosineSchedule(optimizer, trainer, warmup_steps=0, global_batch=8)
    assert schedule.progress == 0.0 and 0 < optimizer.param_groups[0]["lr"] <= 0.5


def _simsiam_schedule(
    restored_epochs: int = 0, **options: Any
) -> tuple[SimSiam, torch.optim.Optimizer, WarmupCosineSchedule]:
    """SimSiam's optimizer and schedule for 10 epochs of 10 steps of 2 x 64 images, 2 of them warmup, in a trainer
    that restored `restored_epochs` whole epochs of a checkpoint."""
    method = SimSiam(backbone="test_resnet", small_image_stem=False, base_lr=0.05, warmup_epochs=2, batch_size=64,
                     num_classes=10, **options)  # fmt: skip
    method.trainer = SimpleNamespace(estimated_stepping_batches=100, world_size=2, accumulate_grad_batches=1,
                                     train_dataloader=(), num_training_batches=10, max_epochs=10,
                                     **restored_loops(restored_epochs))  # fmt: skip
    configured = method.configure_optimizers()
    return method, configured["optimizer"], configured["lr_scheduler"]["scheduler"]


def test_simsiams_predictor_keeps_its_peak_rate_while_the_rest_warms_up_and_decays_also_after_a_resume() -> None:
    """SimSiam's "pred. fixed lr" (Chen and He, Sec. 4.2, Table 1): the predictor's groups, and only they, stay at
    the peak rate at every step; the other groups (the probe too) follow warmup and cosine. A run resumed from the
    checkpoint of epoch 5 continues every group's rate where the uninterrupted run had it."""
    method, optimizer, schedule = _simsiam_schedule()
    groups = {group["name"]: group for group in optimizer.param_groups}
    names = {id(parameter): name for name, parameter in method.named_parameters()}
    predictor = {names[id(p)] for name in ("predictor", "predictor_no_weight_decay") for p in groups[name]["params"]}
    assert predictor == {name for name in names.values() if name.startswith("predictor.")}
    assert not any(
        names[id(p)].startswith("predictor.") for name in ("weights", "probe") for p in groups[name]["params"]
    )

    def rates(optimizer: torch.optim.Optimizer, schedule: WarmupCosineSchedule, steps: int) -> list[dict[str, float]]:
        taken = []
        for _ in range(steps):
            taken.append({group["name"]: group["lr"] for group in optimizer.param_groups})
            optimizer.step()
            schedule.step()
        return taken

    peak = 0.05 * 128 / 256
    first_half = rates(optimizer, schedule, 50)
    saved = optimizer.state_dict(), schedule.state_dict()
    uninterrupted = first_half + rates(optimizer, schedule, 50)
    _, optimizer, schedule = _simsiam_schedule(restored_epochs=5)
    optimizer.load_state_dict(saved[0])
    schedule.load_state_dict(saved[1])
    assert first_half + rates(optimizer, schedule, 50) == uninterrupted
    for step, rate in enumerate(uninterrupted):
        assert rate["predictor"] == rate["predictor_no_weight_decay"] == peak
        factor = warmup_cosine(step, 20, 100)
        assert rate["weights"] == pytest.approx(peak * factor) and rate["probe"] == pytest.approx(0.1 * factor)
    assert uninterrupted[-1]["weights"] < 0.01 * peak

    _, optimizer, _ = _simsiam_schedule(fixed_predictor_lr=False)  # the predictor decays with the rest
    assert [group["name"] for group in optimizer.param_groups] == ["weights", "no_weight_decay", "probe"]
