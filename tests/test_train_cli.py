"""train.py end to end: fit on tiny data, checkpoint, resume, offline wandb, and the bad-input messages."""

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from selfsup import loggers
from selfsup.cli import SelfSupCLI, main
from selfsup.loggers import RunProgressBar, TrainingClock
from selfsup.runs import Metric, seed_group
from tests.conftest import needs_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
METRICS = ("train/loss", "train/hard_negative_sim", "val/knn_top1", "val/online_linear_top1", "perf/img_per_s")


def fit_command(*args: str, root: Path, method: str = "simclr") -> list[str]:
    """`train.py fit` with the method's config on the CPU into `root`, without a progress bar."""
    return [
        "fit", "--config", str(REPO / "configs" / f"{method}.yaml"), "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *args,
    ]  # fmt: skip


def train(*args: str, root: Path, method: str = "simclr") -> SelfSupCLI:
    """`train.py fit` in this process: what the command does, without paying a Python start and the imports."""
    return main(fit_command(*args, root=root, method=method))


def train_in_a_process(*args: str, root: Path, method: str = "simclr") -> subprocess.CompletedProcess:
    """`python train.py fit` as its own process: for what only a process shows (its stderr from the first line on,
    DDP's launched ranks, a kill)."""
    return run_train_py(*fit_command(*args, root=root, method=method))


def run_train_py(*args: str) -> subprocess.CompletedProcess:
    """`python train.py <args>` in the checkout, with offline wandb; it must succeed."""
    command = [sys.executable, "train.py", *args]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_offline_wandb_run(folder: Path) -> dict:
    """The one offline wandb run under `folder` (folder/wandb/offline-run-*), read back by wandb's own reader
    (`wandb leet inspect --summary --json`): its name, config and summary, as a dashboard would get them after a
    sync. A wandb release that writes runs differently fails here."""
    (run,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    command = [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--summary", "--json", str(run)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def tiny_folder_args(folder: Path) -> list[str]:
    return [
        "--data.dataset",
        "image_folder",
        "--data.root",
        str(folder),
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--data.image_size",
        "16",
        "--model.init_args.warmup_epochs",
        "0.5",
        "--trainer.log_every_n_steps",
        "2",
    ]


# What a newcomer must not read before the first step: warnings the project itself causes.
PROJECT_NOISE = (
    "args parameter",
    "will be deleted",
    "covers the whole run",
    "git root",
    "No seed found",
    "Tip:",
    "anonymous setting",
    "LeafSpec",
)


def test_a_run_shorter_than_the_logging_cadence_logs_loss_and_throughput_each_epoch_and_at_its_last_step(
    tmp_path: Path, image_folder: Path
) -> None:
    """Before, a run of fewer steps than `log_every_n_steps` logged no loss, images/s or learning rate (the report said
    "-" and drew no curves)."""
    limits = ["--trainer.max_epochs", "3", "--trainer.max_steps", "8", "--trainer.log_every_n_steps", "50"]
    train(*tiny_folder_args(image_folder), *limits, "--wandb", "false", root=tmp_path)  # 6 steps an epoch
    rows = read_metrics(tmp_path / "simclr" / "version_0")
    for metric in (Metric.TRAIN_LOSS, Metric.IMAGES_PER_SECOND):
        logged = [(int(row["epoch"]), int(row["step"])) for row in rows if row[metric]]
        assert logged == [(0, 5), (1, 7)], metric  # epoch 0's last step, and the run's last (max_steps)
    assert [int(row["step"]) for row in rows if row[f"{Metric.LEARNING_RATE}/weights"]] == [5, 7]  # the same steps
    assert all(float(row[Metric.IMAGES_PER_SECOND]) > 0 for row in rows if row[Metric.IMAGES_PER_SECOND])


def test_fit_on_synthetic_folder_checkpoints_resumes_and_logs_offline_wandb(tmp_path: Path, image_folder: Path) -> None:
    runs = tmp_path / "runs"
    result = train_in_a_process(*tiny_folder_args(image_folder), "--trainer.max_epochs", "1", root=runs)
    assert not [noise for noise in PROJECT_NOISE if noise in result.stderr], result.stderr[-3000:]
    first = runs / "simclr" / "version_0"
    written = sorted(path.name for path in (first / "checkpoints").iterdir())
    assert written == ["backbone.json", "backbone.safetensors", "last.ckpt"]  # one checkpoint, and the backbone
    assert yaml.safe_load((first / "config.yaml").read_text())["seed_everything"] == 0  # a fixed default seed
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["selfsup"]["seed"] == 0
    rows = read_metrics(first)
    logged = {key for row in rows for key, value in row.items() if value}
    assert set(METRICS) <= logged
    assert 0.0 <= float(next(r["val/knn_top1"] for r in rows if r["val/knn_top1"])) <= 1.0
    checkpoint = first / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    wandb_run = read_offline_wandb_run(first)  # one wandb run next to the CSV log
    assert wandb_run["name"] == "simclr-v0" and wandb_run["state"] == "finished"
    assert set(METRICS) <= set(wandb_run["summary"])
    config, trained = wandb_run["config"], torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert (config["method"], config["dataset"], config["devices"], config["global_batch"]) == (
        "simclr", "image_folder", 1, 8,
    )  # fmt: skip
    # runs that differ only by seed share it (tests/test_runs.py); the report computes the same from config.yaml
    assert config["seed_group"] == seed_group(yaml.safe_load((first / "config.yaml").read_text()))
    # the nested options are those trained with, also those taken from the data, and the views are their fields
    for name in ("batch_size", "image_size", "image_mean", "num_classes", "views"):
        assert config["model"]["init_args"][name] == json.loads(json.dumps(trained[name])), name

    train(*tiny_folder_args(image_folder), "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoint), root=runs)
    resumed = read_metrics(runs / "simclr" / "version_1")
    assert {row["epoch"] for row in resumed} - {""} == {"1"}, "resuming must continue at epoch 1, not restart"
    assert min(int(row["step"]) for row in resumed) >= 6  # epoch 0 ran 48 / 8 = 6 steps
    # one wandb run for both parts (one curve on the dashboard), each part finished cleanly with its summary
    wandb_runs = [
        next((runs / "simclr" / version / "wandb").glob("offline-run-*")) for version in ("version_0", "version_1")
    ]
    assert len({run.name.rsplit("-", 1)[1] for run in wandb_runs}) == 1, wandb_runs
    for run in wandb_runs:
        log = (run / "logs" / "debug.log").read_text()
        assert "HandleAbandonedError" not in log and "finishing run" in log, log[-2000:]


@needs_fashion_mnist
def test_fit_on_real_fashion_mnist_subset(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    options = "--data.max_samples 128 --data.batch_size 32 --trainer.max_epochs 1 --trainer.limit_val_batches 2"
    options += " --trainer.log_every_n_steps 2 --model.init_args.small_image_stem false --wandb false"
    train(*options.split(), root=runs)
    run = runs / "simclr" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert any(row["val/knn_top1"] for row in read_metrics(run))
    assert not (run / "wandb").exists()


def test_print_config_shows_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs" / "simclr.yaml"), "--print_config",
              "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0.5"])  # fmt: skip
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    for option in (
        "limit_train_batches: 1\n",  # one batch, as asked: Lightning reads 1.0 as the whole epoch
        "limit_val_batches: 0.5\n",
        "class_path: selfsup.methods.SimCLR",
        "temperature: 0.2",
        "crop_scale:",
        "dataset: fashion_mnist",
        "max_epochs: 100",
        "wandb: true",
        "small_image_stem: auto",  # chosen from the backbone and the data's image size, and shown as such
        "backbone_kwargs: null",
    ):
        assert option in printed


@pytest.mark.parametrize("method", ["swav", "nnclr"])
def test_clustering_and_neighbour_methods_fit_and_resume_with_queues_and_prototypes_intact(
    method: str, tmp_path: Path, image_folder: Path
) -> None:
    runs = tmp_path / "runs"
    options = [*tiny_folder_args(image_folder), "--wandb", "false"]
    if method == "swav":  # multi-crop, and a queue that fills within the first epoch
        options += [
            "--model.init_args.views",
            '[{"num_views": 2}, {"num_views": 2, "relative_size": 0.5}]',
            "--model.init_args.queue_size",
            "32",
            "--model.init_args.num_prototypes",
            "10",
        ]
    queue = "queues.0" if method == "swav" else "support_set"
    train(*options, "--trainer.max_epochs", "1", root=runs, method=method)
    checkpoint = runs / method / "version_0" / "checkpoints" / "last.ckpt"
    diagnostics = ["train/prototype_usage", "train/assignment_entropy"] if method == "swav" else ["train/nn_accuracy"]
    assert all(any(row[name] for row in read_metrics(runs / method / "version_0")) for name in diagnostics)
    first = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert first[f"{queue}.filled"].item() == (32 if method == "swav" else 6 * 8)  # 6 steps x batch 8
    train(*options, "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoint), root=runs, method=method)
    assert {row["epoch"] for row in read_metrics(runs / method / "version_1")} - {""} == {"1"}
    final = torch.load(runs / method / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert final[f"{queue}.pointer"].item() == 12 * 8 % final[f"{queue}.keys"].shape[0]  # continued, not restarted
    if method == "swav":  # frozen in epoch 0, trained in epoch 1, on the unit sphere in both
        assert not torch.equal(first["prototypes.weight"], final["prototypes.weight"])
        torch.testing.assert_close(first["prototypes.weight"].norm(dim=1), torch.ones(10))
    else:
        assert (final["support_set.labels"][:96] >= 0).all()  # labels kept for the neighbour accuracy


@pytest.mark.parametrize("layout", ["one class", "no classes"])
def test_folder_without_two_classes_trains_without_monitors_and_says_so(
    layout: str, tmp_path: Path, image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "images"
    shutil.copytree(image_folder / "train" / "red", root / "red" if layout == "one class" else root)
    args = [*tiny_folder_args(root), "--model.init_args.backbone", "test_resnet", "--trainer.max_epochs", "1"]
    with caplog.at_level(logging.INFO):
        cli = main(["fit", "--config", str(REPO / "configs" / "simclr.yaml"), "--wandb", "false",
                    "--trainer.default_root_dir", str(tmp_path / "runs"), *args])  # fmt: skip
    assert cli.trainer.global_step == 3 and not cli.model.labelled  # 24 images / batch 8
    assert "val/knn_top1" not in cli.trainer.callback_metrics and not hasattr(cli.model, "probe")
    assert (tmp_path / "runs" / "simclr" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert "training without the kNN monitor and the online probe" in caplog.text


def test_progress_bar_shows_the_run_version_not_wandbs_run_id(tmp_path: Path) -> None:
    csv, wandb_like = CSVLogger(tmp_path, name="simclr"), SimpleNamespace(version="xk2f9a")
    trainer = SimpleNamespace(loggers=[csv, wandb_like], logger=csv, progress_bar_metrics={"train/loss": 1.0})
    assert RunProgressBar().get_metrics(trainer, None) == {"v_num": 0, "train/loss": 1.0}


def test_checkpointing_can_be_switched_off() -> None:
    args = ["--config", str(REPO / "configs" / "simclr.yaml"), "--trainer.enable_checkpointing", "false"]
    cli = SelfSupCLI(args=[*args, "--wandb", "false"], run=False)
    assert not [callback for callback in cli.trainer.callbacks if isinstance(callback, ModelCheckpoint)]


def test_the_cpu_job_warms_up_within_its_run(image_folder: Path) -> None:
    """`make train` without a GPU (configs/trainer/cpu.yaml) must not warm up longer than it trains."""
    configs = [str(REPO / "configs" / name) for name in ("simclr.yaml", "trainer/cpu.yaml")]
    cli = SelfSupCLI(args=[f"--config={config}" for config in configs] + ["--wandb", "false"], run=False)
    assert cli.model.hparams.warmup_epochs < cli.trainer.max_epochs


@pytest.mark.parametrize(
    "backbone, kwargs",
    [("vit_tiny_patch16_224", "{img_size: 32, patch_size: 4, drop_path_rate: 0.1}"), ("convnext_atto", None)],
)
def test_timm_backbones_train_on_32_px_images_with_the_knn_monitor_and_log_the_learning_rate(
    backbone: str, kwargs: str | None, tmp_path: Path, image_folder: Path
) -> None:
    args = [*tiny_folder_args(image_folder), "--data.image_size", "32", "--model.init_args.backbone", backbone]
    args += ["--model.init_args.backbone_kwargs", kwargs] if kwargs else []
    cli = main(["fit", "--config", str(REPO / "configs" / "simclr.yaml"), "--wandb", "false", "--trainer.max_epochs",
                "1", "--trainer.default_root_dir", str(tmp_path / "runs"), *args])  # fmt: skip
    assert cli.trainer.global_step == 6 and cli.model.hparams.small_image_stem == "auto"
    rows = read_metrics(tmp_path / "runs" / "simclr" / "version_0")
    assert 0 <= float(next(row["val/knn_top1"] for row in rows if row["val/knn_top1"])) <= 1
    learning_rates = [float(row["lr/weights"]) for row in rows if row.get("lr/weights")]
    assert len(learning_rates) >= 3 and learning_rates[0] < max(learning_rates)  # warming up, logged every 2 steps
    assert all(row.get("lr/probe") for row in rows if row.get("lr/weights"))


def test_the_training_clock_carries_time_and_device_hours_over_a_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(loggers.time, "perf_counter", lambda: now[0])
    first = TrainingClock()
    first.on_fit_start(SimpleNamespace(world_size=2), None)
    now[0] = 160.0  # 60 s on 2 devices, then a checkpoint
    resumed = TrainingClock()
    resumed.load_state_dict(first.state_dict())
    resumed.on_fit_start(SimpleNamespace(world_size=1), None)
    now[0] = 190.0  # 30 s more on 1 device
    assert resumed.elapsed() == pytest.approx((90.0, (60 * 2 + 30) / 3600))
