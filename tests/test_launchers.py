"""The launchers users scale out with, simulated on this machine with gloo CPU processes: two torchrun agents as
two nodes, two SLURM tasks (preempted by SIGUSR1, requeued and resumed), and `train.py eval` under torchrun."""

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from selfsup.evaluation.evaluate import main as evaluate
from tests.conftest import free_port
from tests.data.test_datasets import fake_fashion_mnist
from tests.test_train_cli import REPO

# MoCHi (MoCo v2's queue shared by all ranks, and hard negatives mixed from it) for 2 epochs of 64 images, batch 8
# per rank: 4 steps an epoch on 2 ranks
FIT = [
    "fit", "--config", "configs/mochi.yaml", "--data.batch_size", "8", "--data.image_size", "16",
    "--model.init_args.backbone", "test_resnet", "--model.init_args.queue_size", "64",
    "--model.init_args.mixing", "{num_hard: 32, num_mixed: 16, num_query_mixed: 8}",
    "--model.init_args.warmup_epochs", "0.5", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
    "--trainer.devices", "1", "--trainer.num_nodes", "2", "--trainer.precision", "32-true",
    "--trainer.sync_batchnorm", "false", "--trainer.enable_progress_bar", "false", "--wandb", "false",
    f"--trainer.callbacks+={__name__}.SaveRankState",
]  # fmt: skip


class SaveRankState(pl.Callback):
    """Each rank writes its final weights and buffers (the queue among them) to $RANK_STATE/rank<r>.pt."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(pl_module.state_dict(), Path(os.environ["RANK_STATE"]) / f"rank{trainer.global_rank}.pt")


class PreemptAfterStep3(pl.Callback):
    """SLURM's warning before the time limit (`#SBATCH --signal=SIGUSR1@90`), sent to every task after step 3."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == 3 and not os.environ.get("RESUMED"):
            os.kill(os.getpid(), signal.SIGUSR1)


def run_ranks(commands: list[list[str]], envs: list[dict[str, str]], logs: Path) -> None:
    """Start one process per rank and wait for all; a failure shows every failed rank's log."""
    outputs = [logs / f"rank{rank}.log" for rank in range(len(commands))]
    processes = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=output.open("w"), stderr=subprocess.STDOUT)
        for command, env, output in zip(commands, envs, outputs, strict=True)
    ]
    codes = [process.wait(timeout=300) for process in processes]
    failed = [
        f"rank {rank} (exit {code}):\n{outputs[rank].read_text()[-2500:]}" for rank, code in enumerate(codes) if code
    ]
    assert not failed, "\n".join(failed)


def rank_states(folder: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def assert_same_state(state: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert state.keys() == other.keys()
    for key, value in state.items():
        assert torch.equal(value, other[key]), key


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("launchers") / "fmnist"
    fake_fashion_mnist(root, train=64, test=20)
    return root


def test_two_torchrun_nodes_train_identical_ranks_and_evaluate_sharded_like_one_process(
    data: Path, tmp_path: Path
) -> None:
    port, runs = str(free_port()), tmp_path / "runs"
    env = {**os.environ, "RANK_STATE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    agents = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank",
         str(node), "--master_addr", "127.0.0.1", "--master_port", port, "train.py", *FIT, "--data.root", str(data),
         "--trainer.default_root_dir", str(runs)]
        for node in range(2)
    ]  # fmt: skip
    run_ranks(agents, [env, env], tmp_path)
    states = rank_states(tmp_path)
    assert_same_state(*states)
    assert states[0]["queue.pointer"].item() == 8 * 8 * 2 * 2 % 64  # 8 steps x 8 images x 2 keys x 2 ranks

    checkpoint = runs / "mochi" / "version_0" / "checkpoints" / "last.ckpt"
    options = ["--ckpt_path", str(checkpoint), "--wandb", "false", "--linear.epochs", "5", "--data.batch_size", "8"]
    single = evaluate([*options, "--output", str(tmp_path / "single.json")])
    sharded = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "train.py", "eval", *options, "--output", str(tmp_path / "sharded.json")]  # fmt: skip
    run_ranks([sharded], [env], tmp_path)
    result = json.loads((tmp_path / "sharded.json").read_text())
    assert result["devices"] == 2 and result["num_train"] == single["num_train"] == 64
    without_time = [{k: v for k, v in r[key].items() if k != "seconds"} for r in (result, single) for key in ("knn",)]
    assert without_time[0] == without_time[1]  # the same neighbours, the same votes
    for key in ("top1", "top5", "learning_rate", "weight_decay"):  # the probe saw the same features in the same order
        assert result["linear"][key] == pytest.approx(single["linear"][key]), key
    for key in ("alignment", "uniformity", "tolerance", "effective_rank", "positive_similarity", "negative_similarity"):
        assert result["diagnostics"][key] == pytest.approx(single["diagnostics"][key], rel=1e-5), key
    assert result["map"]["points"] == single["map"]["points"] > 0  # rank 0 drew every rank's test features
    assert (tmp_path / "sharded_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_slurm_tasks_preempted_requeue_and_resume_to_the_uninterrupted_weights(data: Path, tmp_path: Path) -> None:
    """configs/trainer/slurm.yaml at test size: SIGUSR1 after step 3 saves hpc_ckpt_1.ckpt and calls `scontrol
    requeue <job id>`; the requeued job (the same command) resumes from it, mid-epoch, and ends with the weights of
    the run that went on uninterrupted after saving."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    scontrol = fake_bin / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "requeued"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    runs, port = tmp_path / "runs", str(free_port())
    command = [sys.executable, "train.py", *FIT, "--config", "configs/trainer/slurm.yaml", "--data.root", str(data),
               "--trainer.default_root_dir", str(runs), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
               "--trainer.precision", "32-true", f"--trainer.callbacks+={__name__}.PreemptAfterStep3"]  # fmt: skip
    base = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "LOCAL_RANK", "RANK"))}
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "127.0.0.1", "SLURM_JOB_ID": "4242",
             "SLURM_JOB_NAME": "selfsup", "MASTER_PORT": port, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1",
             "PATH": f"{fake_bin}:{os.environ['PATH']}"}  # fmt: skip

    def task_env(rank: int, state: Path, **extra: str) -> dict[str, str]:
        state.mkdir(exist_ok=True)
        ids = {"SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank)}
        return {**base, **slurm, **ids, "RANK_STATE": str(state), **extra}

    run_ranks([command] * 2, [task_env(rank, tmp_path / "first") for rank in range(2)], tmp_path / "first")
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert (runs / "hpc_ckpt_1.ckpt").is_file()
    uninterrupted = rank_states(tmp_path / "first")
    assert_same_state(*uninterrupted)

    slurm["MASTER_PORT"] = str(free_port())
    requeued = [task_env(rank, tmp_path / "requeued_job", RESUMED="1") for rank in range(2)]
    run_ranks([command] * 2, requeued, tmp_path / "requeued_job")
    config = yaml.safe_load((runs / "mochi" / "version_1" / "config.yaml").read_text())
    assert config["ckpt_path"] == str(runs / "hpc_ckpt_1.ckpt")  # resumed through selfsup.resume, not restarted
    for state in rank_states(tmp_path / "requeued_job"):
        assert_same_state(state, uninterrupted[0])
