"""Resuming with --ckpt_path trains what the checkpoint trained: its method, its options, its data and its seed.
Explicit options that differ stop the run with one line; options that do not change what is trained are
honoured; and the resumed run equals the uninterrupted one, bit for bit on the CPU."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from selfsup.cli import main
from selfsup.methods import SimCLR
from selfsup.optim import warmup_cosine
from tests.data.test_datasets import fake_fashion_mnist
from tests.test_train_cli import REPO, fit_command, read_metrics, train, train_in_a_process
from tests.test_user_errors import fit, one_line_error

TINY = [
    "--data.batch_size", "16", "--data.image_size", "16", "--model.init_args.backbone", "test_resnet",
    "--model.init_args.warmup_epochs", "0.5", "--trainer.log_every_n_steps", "1", "--wandb", "false",
]  # fmt: skip


# the run resumed in these tests: seed 3, 2 epochs of 4 steps, validated once at its end, with hard negatives mixed
# from torch's global generator (whose state a resumed run must continue, as it continues the views')
TWO_EPOCHS = [*TINY, "--seed_everything", "3", "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "2",
              "--model.init_args.mixing", "{num_hard: 16, num_mixed: 8, num_query_mixed: 4}"]  # fmt: skip

# a process limit no epoch fits in: the run ends after its first epoch without changing its plan (as if preempted)
STOP_AFTER_FIRST_EPOCH = ["--stop_after_minutes", "0.00001"]


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/simclr/version_0: a 2-epoch SimCLR run with seed 3 on 64 fake Fashion-MNIST images, validated every 2
    epochs, stopped after its first epoch by --stop_after_minutes (last.ckpt is written at every epoch's end)."""
    root = tmp_path_factory.mktemp("resume")
    fake_fashion_mnist(root / "fmnist", train=64, test=16)
    train("--data.root", str(root / "fmnist"), *TWO_EPOCHS, *STOP_AFTER_FIRST_EPOCH, root=root)
    return root / "simclr" / "version_0"


@pytest.fixture(scope="module")
def uninterrupted(first_epoch: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The checkpoint of `first_epoch`'s run trained through both epochs without a stop."""
    root = tmp_path_factory.mktemp("uninterrupted")
    train("--data.root", str(first_epoch.parents[1] / "fmnist"), *TWO_EPOCHS, root=root)
    return torch.load(root / "simclr" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def test_resume_reuses_the_seed_honours_a_moved_data_root_and_equals_the_uninterrupted_run(
    first_epoch: Path, uninterrupted: dict, tmp_path: Path
) -> None:
    moved = shutil.copytree(first_epoch.parents[1] / "fmnist", tmp_path / "moved")  # the data may move on resume
    checkpoint = first_epoch / "checkpoints" / "last.ckpt"
    options = [*TINY, "--trainer.check_val_every_n_epoch", "2", "--trainer.max_epochs", "2"]
    train("--data.root", str(moved), *options, "--ckpt_path", str(checkpoint), root=tmp_path)

    whole = uninterrupted
    resumed = torch.load(tmp_path / "simclr" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    config = yaml.safe_load((tmp_path / "simclr" / "version_0" / "config.yaml").read_text())
    assert config["seed_everything"] == 3 and resumed["selfsup"]["seed"] == 3  # no --seed_everything given
    assert config["data"]["root"] == str(moved) and resumed["datamodule_hyper_parameters"]["root"] == str(moved)
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 4  # stopped after its first epoch
    assert resumed["global_step"] == whole["global_step"] == 8
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), f"{key} differs from the uninterrupted run"


class KilledAfterStep5(pl.Callback):
    """Kills the process as the 6th step starts, after the time-based last.ckpt of step 5 (mid-epoch 1)."""

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == 5:
            os._exit(9)


def test_a_run_killed_mid_epoch_resumes_from_its_time_based_checkpoint_as_if_uninterrupted(
    first_epoch: Path, uninterrupted: dict, tmp_path: Path
) -> None:
    """The device loader continues with the batches and the views the epoch had left: bitwise the same weights."""
    data = first_epoch.parents[1] / "fmnist"
    every_step = ["--checkpoint_every_minutes", "1e-9", f"--trainer.callbacks+={__name__}.KilledAfterStep5"]
    killed = [
        sys.executable,
        "train.py",
        *fit_command("--data.root", str(data), *TWO_EPOCHS, *every_step, root=tmp_path),
    ]
    assert subprocess.run(killed, cwd=REPO, capture_output=True).returncode == 9
    checkpoint = tmp_path / "simclr" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 5  # 4 steps an epoch: within epoch 1
    train("--data.root", str(data), *TWO_EPOCHS, "--ckpt_path", str(checkpoint), root=tmp_path)
    resumed = torch.load(tmp_path / "simclr" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == uninterrupted["global_step"] == 8
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), f"{key} differs from the uninterrupted run"

    # on 2 ranks the epoch's 16 trained images are less than one global batch of 32: the loader deals the epoch's
    # shuffle from its start, 2 steps, and Lightning must run both (it counted 1 batch done and stopped after 1)
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.sync_batchnorm", "false"]
    train_in_a_process("--data.root", str(data), *TWO_EPOCHS, *ddp, "--ckpt_path", str(checkpoint), root=tmp_path)
    on_two_ranks = tmp_path / "simclr" / "version_2"
    assert torch.load(on_two_ranks / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5 + 2
    rows = read_metrics(on_two_ranks)
    rates = [float(row["lr/weights"]) for row in rows if row.get("lr/weights")]
    assert len(rates) == 2 and rates[0] > rates[1] > 0
    assert any(row["val/knn_top1"] for row in rows)  # the sharded kNN monitor on 2 ranks


def test_a_resume_that_takes_other_steps_continues_the_learning_rate_curve_and_ends_it_at_its_last_step(
    first_epoch: Path, tmp_path: Path
) -> None:
    """Resumed with 3 batches accumulated per step (a global batch of 48, as on 3 devices), the second epoch's 4
    batches are 2 steps (the last one partial) instead of 4: the schedule re-plans the half of the curve left
    onto them. Each logged rate over its peak (base_lr x global batch / 256) follows warmup_cosine of progress: 4
    warmup-then-cosine steps of 1/8 (warmup ends at 2/8), then 2 of 1/4, the last one ending at progress 1. On main,
    the samples-seen schedule planned 192 samples where the run trains 160: it resumed at 0.97 of the peak where
    the curve is at 0.75, and the run ended at progress 0.83."""
    data, checkpoint = first_epoch.parents[1] / "fmnist", first_epoch / "checkpoints" / "last.ckpt"
    cli = main([*fit("simclr", tmp_path, "--trainer.accelerator", "cpu", "--data.root", str(data), *TINY),
                "--trainer.max_epochs", "2", "--trainer.accumulate_grad_batches", "3", "--trainer.limit_val_batches",
                "0", "--ckpt_path", str(checkpoint)])  # fmt: skip
    base_lr = cli.model.hparams.base_lr

    def factors(run: Path, global_batch: int) -> list[float]:
        rates = {int(row["step"]): float(row["lr/weights"]) for row in read_metrics(run) if row.get("lr/weights")}
        return [rates[step] / (base_lr * global_batch / 256) for step in sorted(rates)]

    expected = [warmup_cosine(i / 8, 2 / 8, 1.0, 1 / 8) for i in range(4)]
    expected += [warmup_cosine(1 / 2 + i / 4, 2 / 8, 1.0, 1 / 4) for i in range(2)]
    assert factors(first_epoch, 16) + factors(tmp_path / "simclr" / "version_0", 48) == pytest.approx(expected)
    assert cli.trainer.global_step == 6 and cli.trainer.lr_scheduler_configs[0].scheduler.progress == 1.0


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ("mocov2", [], "was written by simclr, but the config asks for MoCoV2. Use it with --config simclr"),
        ("simclr", ["--model.init_args.temperature", "0.5"], "--model.init_args.temperature 0.5 (checkpoint: 0.2)"),
        ("simclr", ["--seed_everything", "4"], "--seed_everything 4 (checkpoint: 3)"),
        ("simclr", ["--seed_everything", "false"], "--seed_everything False (checkpoint: 3)"),
        ("simclr", ["--data.batch_size", "8"], "--data.batch_size 8 (checkpoint: 16)"),
        ("simclr", ["--model.init_args.mixing.num_hard", "8"], "--model.init_args.mixing.num_hard 8 (checkpoint: 16)"),
    ],
)
def test_resuming_with_another_method_or_changed_options_is_one_line(
    config: str, args: list[str], message: str, first_epoch: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = first_epoch / "checkpoints" / "last.ckpt"
    options = [*TINY, "--trainer.max_epochs", "2", *args, "--ckpt_path", str(checkpoint)]
    text = one_line_error(fit(config, tmp_path, *options), capsys)
    assert message in text and "--ckpt_path" in text  # the fix: the checkpoint's settings, or a new run
    assert not any(tmp_path.iterdir())


def test_a_checkpoint_that_does_not_record_its_data_is_refused(
    first_epoch: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Lightning checkpoints of a model fitted on plain dataloaders hold no data options: a run from one could not
    know what it trained on."""
    checkpoint = torch.load(first_epoch / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["datamodule_hyper_parameters"]
    torch.save(checkpoint, tmp_path / "no_data.ckpt")
    options = [*TINY, "--ckpt_path", str(tmp_path / "no_data.ckpt")]
    assert "does not record its method and data" in one_line_error(fit("simclr", tmp_path / "runs", *options), capsys)


def test_a_checkpoint_loads_into_its_method_without_a_trainer(first_epoch: Path) -> None:
    """Lightning's own loading path (`load_from_checkpoint`), as downstream code uses it."""
    method = SimCLR.load_from_checkpoint(first_epoch / "checkpoints" / "last.ckpt", weights_only=True)
    assert method.hparams.backbone == "test_resnet"


def test_validate_takes_the_checkpoints_data_and_options(first_epoch: Path, capsys: pytest.CaptureFixture) -> None:
    """`validate --ckpt_path` with nothing but the method config scores the checkpoint on its own data."""
    checkpoint = first_epoch / "checkpoints" / "last.ckpt"
    config = str(Path(__file__).resolve().parents[1] / "configs" / "simclr.yaml")
    cli = main(["validate", "--config", config, "--ckpt_path", str(checkpoint), "--wandb", "false",
                "--trainer.default_root_dir", str(first_epoch.parents[1] / "validate")])  # fmt: skip
    assert cli.datamodule.root == first_epoch.parents[1] / "fmnist" and cli.model.hparams.backbone == "test_resnet"
    assert 0 <= cli.trainer.callback_metrics["val/knn_top1"] <= 1
