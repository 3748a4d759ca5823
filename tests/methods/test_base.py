"""The shared machinery of `selfsup.methods.base`, at the level of its hooks (a stand-in for the Trainer gives the
rank, epoch and training progress): the online probe learns from detached features of the global crops, momentum
copies are frozen and follow the optimizer step with the scheduled tau, views are drawn per rank and epoch, and
validation sees clean images."""

import gc
import math
import weakref
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from selfsup.augment import view_seed
from selfsup.methods import BYOL, METHODS, MoCoV2, SimCLR, SwAV
from selfsup.methods.base import Method, MomentumMethod
from tests.methods.test_method_losses import MULTI_CROP, TWO_VIEWS, build, drift_momentum_copies

IMAGES = torch.randint(0, 256, (6, 1, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
MOMENTUM_METHODS = sorted(name for name, method in METHODS.items() if issubclass(method, MomentumMethod))


def test_online_probe_learns_from_detached_global_crop_features_only() -> None:
    """The probe's label gradient must never reach the backbone (the method would silently become supervised), and
    it trains on the first recipe's views (the global crops, the size it is scored at): the mean cross-entropy over
    those views' labelled samples."""
    method = build(SwAV, views=MULTI_CROP, projector_output_dim=8, num_prototypes=5)
    labels = torch.tensor([0, 1, 2, -1, 1, 0])  # -1: unlabelled, not scored
    views = method.multiview(IMAGES, torch.Generator().manual_seed(1))
    _, probe_loss, _ = method.compute_losses(views, labels)
    probe_loss.backward()
    assert [name for name, parameter in method.backbone.named_parameters() if parameter.grad is not None] == []
    assert method.probe.weight.grad is not None

    with torch.no_grad():
        logits = method.probe(torch.cat(method.embed(views)[:2])).double()
    targets = labels.repeat(2)
    known = targets >= 0
    expected = -(logits - logits.logsumexp(dim=1, keepdim=True))[known, targets[known]].mean()
    torch.testing.assert_close(probe_loss, expected.float())


@pytest.mark.parametrize("name", MOMENTUM_METHODS)
def test_momentum_copies_are_frozen_and_computed_without_gradient(name: str) -> None:
    """MoCo's key encoder, BYOL's target network and DINO's teacher change only by the EMA: their parameters require
    no gradient, and the method computes their outputs without a graph, so even unfrozen copies would get none."""
    queue = dict(queue_size=16) if issubclass(METHODS[name], MoCoV2) else {}  # MoCo v2 and MoCHi: a small queue
    method = build(METHODS[name], views=TWO_VIEWS, **queue)
    copies = {
        f"copy{index}.{parameter_name}": parameter
        for index, (_, copy) in enumerate(method._momentum_pairs)
        for parameter_name, parameter in copy.named_parameters()
    }
    assert copies and [key for key, parameter in copies.items() if parameter.requires_grad] == []
    views = method.multiview(IMAGES, torch.Generator().manual_seed(1))
    for parameter in copies.values():
        parameter.requires_grad_(True)
    loss, probe_loss, _ = method.compute_losses(views, torch.arange(6) % 3)
    (loss + probe_loss).backward()
    assert [key for key, parameter in copies.items() if parameter.grad is not None] == []
    assert all(parameter.grad is not None for parameter in method.backbone.parameters())


def trainer_stand_in(method: Method, **state) -> None:
    """Attach the Trainer state a hook reads (rank, epoch, whether it trains, the schedule's progress)."""
    method.trainer = SimpleNamespace(**state)


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([parameter.reshape(-1) for parameter in module.parameters()])  # channels_last convolutions too


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_ema_follows_the_optimizer_step_with_the_scheduled_momentum(progress: float) -> None:
    """After the optimizer step, each copy moves to tau * copy + (1 - tau) * (the online weights just updated), tau
    following BYOL's schedule (Sec. 3.2) over the training progress: tau_base at the start, tau_final at the end."""
    method = build(BYOL, views=TWO_VIEWS, projector_output_dim=8, predictor_hidden_dim=32, tau_base=0.9)
    drift_momentum_copies(method)
    schedule = SimpleNamespace(progress=progress)
    trainer_stand_in(method, lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)])
    method.log = lambda *args, **kwargs: None  # nothing to log to
    trained = [parameter for parameter in method.parameters() if parameter.requires_grad]
    for parameter in trained:
        parameter.grad = torch.ones_like(parameter)
    before = [flat(copy) for _, copy in method._momentum_pairs]
    method.optimizer_step(0, 0, torch.optim.SGD(trained, lr=0.5))

    tau = 1 - (1 - 0.9) * (math.cos(math.pi * progress) + 1) / 2  # tau_final = 1
    for (online, copy), old in zip(method._momentum_pairs, before, strict=True):
        updated = flat(online)
        torch.testing.assert_close(flat(copy), tau * old + (1 - tau) * updated)


def test_views_are_drawn_from_the_seed_of_the_run_rank_and_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank draws its own views (one seed for all would give every rank the same crops of its images), anew
    each epoch, continuing within it."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    for rank, epochs in ((0, (0,)), (1, (0, 2))):
        method = build(SimCLR, views=TWO_VIEWS)
        for epoch in epochs:
            trainer_stand_in(method, training=True, global_rank=rank, current_epoch=epoch, world_size=2)
            generator = torch.Generator().manual_seed(view_seed(7, rank, epoch))
            for _ in range(2):  # two batches of the epoch
                views, _ = method.on_after_batch_transfer((IMAGES, torch.zeros(6, dtype=torch.long)), 0)
                for view, expected in zip(views, method.multiview(IMAGES, generator), strict=True):
                    assert torch.equal(view, expected)


def test_validation_embeds_clean_images() -> None:
    """The kNN monitor's bank and queries and the probe's score come from the clean view (resize and normalise
    only), never from training augmentations."""
    method = build(SimCLR, views=TWO_VIEWS)
    trainer_stand_in(method, training=False, global_rank=0, current_epoch=0, world_size=1)
    images, _ = method.on_after_batch_transfer((IMAGES, torch.zeros(6, dtype=torch.long)), 0)
    assert isinstance(images, torch.Tensor) and torch.equal(images, method.clean_view(IMAGES))  # one batch, not views


def test_validation_banks_the_training_loader_and_scores_the_test_loader() -> None:
    """Loader 0 (labelled training images) fills the kNN bank, loader 1 (test images) is scored against it: with
    k = 1 each test image finds itself in the bank, so the monitor is exact; the other way round, the two test images
    would be the bank and images of class 2 could not be right."""
    method = build(SimCLR, views=TWO_VIEWS, knn_k=1).eval()  # as Lightning validates: batch norm's running statistics
    labels = torch.arange(6) % 3
    with torch.no_grad():
        method.validation_step((method.clean_view(IMAGES), labels), 0, dataloader_idx=0)
        method.validation_step((method.clean_view(IMAGES[:2]), labels[:2]), 0, dataloader_idx=1)
    assert method.knn_monitor.compute() == 1.0


def test_building_a_method_keeps_none_of_its_callers_locals() -> None:
    """Lightning's `save_hyperparameters` kept the frames above it in a reference cycle, and with them whatever their
    locals held (batches, loaders) until a garbage collection."""

    class Held:
        pass

    def build_beside(held: Held) -> None:
        SimCLR(backbone="test_resnet")

    build_beside(Held())  # the first build imports timm, whose import keeps its frames until a collection
    gc.collect()
    gc.disable()
    try:
        held = Held()
        freed = weakref.ref(held)
        build_beside(held)
        del held
        assert freed() is None
    finally:
        gc.enable()
