"""Where a training run reports: the CSV and wandb loggers, the progress bar, and last.ckpt.

The CSV logger's folder is the run folder (`runs/<method>/version_N`, named as `selfsup.runs` says); wandb runs
offline inside it unless the user has set wandb up online, under the same run name. The progress bar shows
that version and the run keeps one checkpoint, last.ckpt, rewritten every epoch.
"""

import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from selfsup.runs import LAST_CHECKPOINT, run_name


def wandb_configured_online() -> bool:
    """True only if the user set wandb up to sync: WANDB_MODE=online, an API key, or `wandb login` (~/.netrc)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode == "online"
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def run_loggers(
    root: str, method: str, dataset: str, wandb_project: str | None, config: dict[str, Any]
) -> list[Logger]:
    """CSV always, first (its folder is the run folder); wandb too unless `wandb_project` is None, named like
    the run, grouped by dataset, with the resolved config and flat method/dataset/backbone keys to filter on."""
    csv = CSVLogger(root, name=method)
    if wandb_project is None:
        return [csv]
    wandb = WandbLogger(
        project=wandb_project,
        name=run_name(method, csv.version),  # `train.py eval` logs under the same name
        group=dataset,
        job_type="pretrain",
        save_dir=csv.log_dir,
        offline=not wandb_configured_online(),
        config=json.loads(json.dumps(config, default=str)),
    )
    return [csv, wandb]


def discard_run(loggers: list[Logger], run_folder: Path) -> None:
    """Finish the loggers' runs without a word and remove the run folder (and its method's folder, if left
    empty): a run that failed before its first step leaves nothing behind, and the error stays the last line."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb  # present: a WandbLogger is in use

        with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):
            wandb.finish(exit_code=1)  # else its exit handler writes into the folder and prints a sync hint
    shutil.rmtree(run_folder, ignore_errors=True)
    if run_folder.parent.is_dir() and not any(run_folder.parent.iterdir()):
        run_folder.parent.rmdir()


class RunProgressBar(TQDMProgressBar):
    """The progress bar, showing the run's version (runs/<method>/version_N) rather than Lightning's
    concatenation of every logger's version, which ends in wandb's random run id."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        if trainer.logger is not None:
            metrics["v_num"] = trainer.logger.version
        return metrics


class LastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt of the run folder (Lightning's default folder: the first logger's, i.e. the CSV
    run folder), rewritten at the end of every epoch: the one checkpoint a run keeps unless the user adds a
    ModelCheckpoint of their own. It holds no state of its own, so resuming into a new run folder has nothing
    stale to restore."""

    def __init__(self) -> None:
        super().__init__(filename=LAST_CHECKPOINT, save_top_k=1, enable_version_counter=False)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
