"""Where a training run reports: the CSV and wandb loggers, the progress bar, and last.ckpt.

The CSV logger's folder is the run folder (`runs/<method>/version_N`, named as `selfsup.runs` says); wandb runs
offline inside it unless the user has set wandb up online, under the same run name. The progress bar shows
that version and the run keeps one checkpoint, last.ckpt, rewritten every epoch, every checkpoint replacing the
old file whole or not at all (`AtomicCheckpointIO`). `TrainingClock` logs the
throughput and the wall-clock cost the comparison report shows; `StopBeforeTimeLimit` ends a process in time
for its job slot.
"""

import json
import os
import shutil
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from selfsup.atomic import lacking_space, replacing
from selfsup.errors import ConfigurationError
from selfsup.optim import ended_optimizer_step
from selfsup.runs import LAST_CHECKPOINT, Metric, plain, run_name


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
    root: str,
    method: str,
    dataset: str,
    wandb_project: str | None,
    config: dict[str, Any],
    wandb_id: str | None = None,
) -> list[Logger]:
    """CSV always, first (its folder is the run folder); wandb too unless `wandb_project` is None, named like
    the run, grouped by dataset, with the resolved config and flat method/dataset/backbone keys to filter on.
    `wandb_id` continues that wandb run (a resumed training run: one curve on the dashboard)."""
    csv = CSVLogger(root, name=method)
    if wandb_project is None:
        return [csv]
    wandb = WandbLogger(
        project=wandb_project,
        name=run_name(method, csv.version),  # `selfsup eval` logs under the same name
        group=dataset,
        job_type="pretrain",
        save_dir=csv.log_dir,
        offline=not wandb_configured_online(),
        config=json.loads(json.dumps(plain(config), default=str)),  # view recipes as their fields, not a repr
        id=wandb_id,
        resume="allow" if wandb_id else None,
    )
    # Lightning always passes anonymous=None, which wandb (>= 0.19) reports as a deprecated setting on every run.
    init_options = getattr(wandb, "_wandb_init", None)  # Lightning's own; if it moves, the warning just stays
    if isinstance(init_options, dict):
        init_options.pop("anonymous", None)
    return [csv, wandb]


class ResolvedWandbConfig(pl.Callback):
    """Writes the method's options as it trains with them into the wandb run's nested config
    (`model.init_args.*`). The CLI hands wandb the parsed config as the run starts, where the values a method takes
    from the data (batch size, image size and normalisation, class count) are still unset; a dashboard filtering on
    them would contradict the flat keys Lightning logs."""

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trained = {key: value for key, value in plain(dict(pl_module.hparams)).items() if not key.startswith("_")}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                model = dict(logger.experiment.config.get("model") or {})
                logger.experiment.config.update({"model": {**model, "init_args": trained}}, allow_val_change=True)


def finish_wandb(loggers: list[Logger]) -> None:
    """End the wandb run of a finished fit (its summary, a clean log), which Lightning leaves to the exit hook."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb  # present: a WandbLogger is in use

        wandb.finish()


def discard_run(loggers: list[Logger], run_folder: Path, kept_folder: Path) -> None:
    """Finish the loggers' runs without a word and remove the run folder, and the folders above it that the
    run made (those below `kept_folder`) if left empty: a run that failed before its first step leaves
    nothing behind, and the error stays the last line."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb  # present: a WandbLogger is in use

        with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):
            wandb.finish(exit_code=1)  # else its exit handler writes into the folder and prints a sync hint
    shutil.rmtree(run_folder, ignore_errors=True)
    folder = run_folder.absolute().parent
    while kept_folder in folder.parents and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


class RunProgressBar(TQDMProgressBar):
    """The progress bar, showing the run's version (runs/<method>/version_N) rather than Lightning's
    concatenation of every logger's version, which ends in wandb's random run id."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        if trainer.logger is not None:
            metrics["v_num"] = trainer.logger.version
        return metrics


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but each checkpoint replaces the old file whole or not at all
    (`selfsup.atomic.replacing`): a full disk or a kill while last.ckpt is rewritten leaves the previous epoch's
    last.ckpt intact, and the run stops with one line naming the folder and its free space. Lightning's own
    writer copies a temporary file from elsewhere over the old one, which is not atomic across file systems.
    Remote paths (s3://, gs://) keep Lightning's writer: object stores replace objects whole by themselves."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with replacing(path) as file:
            torch.save(checkpoint, file)


class LastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt of the run folder (Lightning's default folder: the first logger's, i.e. the CSV
    run folder), rewritten at the end of every epoch, or with `every_minutes` also within epochs once that much
    training time has passed (for preemptible jobs): the one checkpoint a run keeps unless the user adds a
    ModelCheckpoint of their own. It holds no state of its own, so resuming into a new run folder has nothing
    stale to restore."""

    def __init__(self, every_minutes: float | None = None) -> None:
        interval = timedelta(minutes=every_minutes) if every_minutes else None
        super().__init__(
            filename=LAST_CHECKPOINT,
            save_top_k=1,
            enable_version_counter=False,
            train_time_interval=interval,
            save_on_train_epoch_end=True,  # Lightning's default waits for validation, every n epochs with n > 1
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Also stop a fit, before its first step, whose checkpoint folder cannot hold a checkpoint (decided on
        rank 0, which writes it, and raised on every rank)."""
        super().setup(trainer, pl_module, stage)
        problem = None
        if stage == "fit" and trainer.is_global_zero and _is_local_file_protocol(self.dirpath):
            checkpoint = Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"
            try:  # room for the old checkpoint and the new one beside it while it replaces the old
                problem = lacking_space(self.dirpath, 2 * checkpoint_size_estimate(pl_module), str(checkpoint))
            except OSError as error:  # still reach the broadcast, which every other rank waits in
                problem = f"Cannot check the free space for {checkpoint}: {error.strerror or error}."
        problem = trainer.strategy.broadcast(problem)
        if problem:
            raise ConfigurationError(problem)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Within an epoch, only after an optimizer step: a checkpoint between accumulated batches would hold a
        loader position whose gradients it lacks."""
        if ended_optimizer_step(trainer, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def checkpoint_size_estimate(module: pl.LightningModule) -> int:
    """Bytes a checkpoint of `module` takes at most: its state (weights, buffers, queues) and up to two optimizer
    moments per weight (AdamW's; SGD and LARS keep one)."""
    state = sum(tensor.numel() * tensor.element_size() for tensor in module.state_dict().values())
    weights = sum(param.numel() * param.element_size() for param in module.parameters() if param.requires_grad)
    return state + 2 * weights


def logged_beyond_cadence(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether training batch `batch_idx` is logged although Lightning's cadence (every `log_every_n_steps` optimizer
    steps) skips it: it ends its epoch or the run with an optimizer step, so a run shorter than the cadence still
    logs its loss, throughput and learning rates. The same answer from `on_train_batch_start` to
    `on_train_batch_end`: it reads Lightning's count of finished steps, as Lightning's own cadence does.

    Where Lightning's Timer (`--trainer.max_time`) stops the run on such a step, Lightning logs it too, after this
    step's metrics were logged: that step appears twice."""
    if trainer.log_every_n_steps == 0 or trainer._logger_connector.should_update_logs:
        return False
    step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1  # this batch's optimizer step, counted from 1
    ends_run = 0 < trainer.max_steps <= step
    return ended_optimizer_step(trainer, batch_idx) and (trainer.is_last_batch or ends_run)


class TrainingClock(pl.Callback):
    """Training throughput (`perf/img_per_s`, images of all ranks per second since the previous logged step,
    validation excluded) and, at every validation, the time spent fitting (`time/elapsed_s`) and its cost in
    device-hours (`time/device_hours`), for accuracy against wall-clock time. Both carry over into a resumed run
    through its checkpoint, each process's share counted on the devices it ran on (the time between the last
    checkpoint and an interruption is not counted: its work is redone).

    It also logs the steps `logged_beyond_cadence` adds (each epoch's last, the run's last) with the metrics
    Lightning would have logged there: a run shorter than `log_every_n_steps` still has a loss and a throughput
    (except in epochs of one batch: the first batch of each epoch starts the clock, so that loader start-up is not
    counted as training)."""

    def __init__(self) -> None:
        self._window: tuple[float, int] | None = None  # (start, images since) of the current window
        self._fit_start: float | None = None
        self._world_size = 1
        self._before = (0.0, 0.0)  # (seconds, device-hours) of the processes this run resumed from

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start, self._world_size = time.perf_counter(), trainer.world_size

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._window = None  # the first batch of an epoch starts the clock: loader start-up is not throughput

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now, images = time.perf_counter(), batch[1].shape[0] * trainer.world_size
        start, seen = self._window if self._window is not None else (now, -images)  # the first batch starts it
        self._window = (start, seen + images)
        beyond_cadence = logged_beyond_cadence(trainer, batch_idx)
        # Lightning logs this step's metrics after this hook where its cadence says so
        logged = beyond_cadence or trainer._logger_connector.should_update_logs
        if seen + images and logged and ended_optimizer_step(trainer, batch_idx):
            pl_module.log(Metric.IMAGES_PER_SECOND, (seen + images) / (now - start), batch_size=images)
            self._window = (now, 0)
        if beyond_cadence:
            trainer._logger_connector.log_metrics(trainer._logger_connector.metrics["log"])

    def elapsed(self) -> tuple[float, float]:
        """(seconds, device-hours) of fitting so far, over this process and those the run resumed from."""
        now = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return self._before[0] + now, self._before[1] + now * self._world_size / 3600

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_start is None or trainer.sanity_checking:
            return
        seconds, device_hours = self.elapsed()
        pl_module.log(Metric.ELAPSED_SECONDS, seconds, sync_dist=True)  # the mean over ranks
        pl_module.log(Metric.DEVICE_HOURS, device_hours, sync_dist=True)

    def state_dict(self) -> dict[str, Any]:
        seconds, device_hours = self.elapsed()
        return {"elapsed_s": seconds, "device_hours": device_hours}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._before = (state_dict["elapsed_s"], state_dict["device_hours"])


class StepLearningRateMonitor(LearningRateMonitor):
    """Lightning's LearningRateMonitor at every logged step (`lr/<parameter group>`), also at those
    `logged_beyond_cadence` adds: a short run has learning-rate curves too, and a wrong schedule shows on the
    dashboard."""

    def __init__(self) -> None:
        super().__init__(logging_interval="step")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if logged_beyond_cadence(trainer, batch_idx):  # the rates this step uses, at its step, as the parent does
            rates = self._extract_stats(trainer, "any")
            for logger in trainer.loggers:
                logger.log_metrics(rates, step=trainer.fit_loop.epoch_loop._batches_that_stepped)


class StopBeforeTimeLimit(pl.Callback):
    """Ends the fit at the end of the first epoch after which one more epoch would not fit in `minutes` of this
    process's fitting (judged by the last epoch's duration, validation included), once last.ckpt holds that
    epoch: for job slots of a fixed length. Resuming from last.ckpt continues the same run, with the plan
    (`max_epochs`, the schedules) unchanged; at an epoch boundary that equals an uninterrupted run. At least one
    epoch always trains."""

    def __init__(self, minutes: float) -> None:
        self.seconds = 60 * minutes
        self._fit_start = self._epoch_end = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = self._epoch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.perf_counter()
        last_epoch, self._epoch_end = now - self._epoch_end, now
        if now - self._fit_start + last_epoch > self.seconds:
            trainer.should_stop = True  # checkpoint callbacks run after this one and still save the epoch
