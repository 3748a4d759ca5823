"""Gradient accumulation: what happens once per optimizer step (the EMA of momentum encoders, the diagnostics)
happens once per step, not once per accumulated batch."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pytorch_lightning.callbacks import ModelCheckpoint

import selfsup.evaluation.diagnostics as diagnostics
import selfsup.methods.base as base
from selfsup.cli import main
from selfsup.loggers import LastCheckpoint
from tests.test_train_cli import REPO, tiny_folder_args

EMA_UPDATE, REPRESENTATION_DIAGNOSTICS = base.ema_update, diagnostics.representation_diagnostics


def fit_byol(root: Path, batch_size: int, accumulate: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """The taus of every EMA update of BYOL's two momentum copies (target backbone and projector) and the
    diagnostics computed, in one epoch on the 48 images of `root`."""
    calls: dict[str, list] = {"taus": [], "diagnostics": []}

    def counting_ema(target, online, tau):
        calls["taus"].append(tau)
        EMA_UPDATE(target, online, tau)

    def counting_diagnostics(*args, **kwargs):
        calls["diagnostics"].append(1)
        return REPRESENTATION_DIAGNOSTICS(*args, **kwargs)

    monkeypatch.setattr(base, "ema_update", counting_ema)
    monkeypatch.setattr(diagnostics, "representation_diagnostics", counting_diagnostics)
    callbacks = [{"class_path": "selfsup.evaluation.DiagnosticsCallback", "init_args": {"every_n_steps": 1}}]
    args = [*tiny_folder_args(root), "--data.batch_size", str(batch_size), "--model.init_args.backbone", "test_resnet"]
    main(["fit", "--config", str(REPO / "configs" / "byol.yaml"), "--wandb", "false", "--trainer.max_epochs", "1",
          "--trainer.accumulate_grad_batches", str(accumulate), "--trainer.callbacks", json.dumps(callbacks),
          "--trainer.default_root_dir", str(root.parent / f"runs{accumulate}"), "--trainer.limit_val_batches", "0",
          *args])  # fmt: skip
    return calls


def test_two_accumulated_batches_update_the_target_like_one_doubled_batch(
    image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accumulated = fit_byol(image_folder, batch_size=8, accumulate=2, monkeypatch=monkeypatch)
    doubled = fit_byol(image_folder, batch_size=16, accumulate=1, monkeypatch=monkeypatch)
    assert len(doubled["taus"]) == 2 * 3  # 2 momentum copies x (48 images / 16 = 3 optimizer steps)
    assert accumulated["taus"] == pytest.approx(doubled["taus"])  # once per step (6 times on main), same schedule
    assert len(accumulated["diagnostics"]) == len(doubled["diagnostics"]) == 3


def test_time_based_checkpoints_are_written_only_after_an_optimizer_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint between accumulated batches would record a loader position whose gradients it lacks."""
    considered = []
    monkeypatch.setattr(ModelCheckpoint, "on_train_batch_end", lambda self, *args: considered.append(args[-1]))
    trainer = SimpleNamespace(accumulate_grad_batches=2, num_training_batches=5)
    checkpoint = LastCheckpoint(every_minutes=1.0)
    for batch_idx in range(5):
        checkpoint.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert considered == [1, 3, 4]  # the ends of the two full groups, and the epoch's last (partial) group
