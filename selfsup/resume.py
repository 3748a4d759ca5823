"""Resuming a run from its checkpoint: what trains is what the checkpoint trained.

Left alone, LightningCLI replaces the model's configuration by the checkpoint's hyperparameters: an option
given on the command line is dropped without a word, and the checkpoint of another method silently trains
that method. Here the rule is explicit, and every departure from it stops the run with one line:

- the method is the checkpoint's; another method's config names both;
- an option the user set (on the command line or in a config file) must equal the checkpoint's value, or the
  run stops listing every difference. Options that do not change what is trained (`CHANGEABLE_ON_RESUME`:
  where the data lives, how many workers read it, compilation) are honoured instead;
- an option the user did not set comes from the checkpoint, for the data as for the model, and so does the
  seed, so that the resumed run draws the views and shuffles an uninterrupted run would have drawn.

A checkpoint written within an epoch resumes that epoch where its data loader stopped (`align_resumed_epoch`),
also on another number of ranks. The views come from generators of their own; what else in a step draws random
numbers (MoCHi's mixing, dropout, drop path) draws from torch's global generators, whose state each rank saves
(`global_random_state`) and a resumed run on as many ranks restores, so that it draws what the uninterrupted run
drew.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from selfsup.errors import ConfigurationError
from selfsup.runs import RunRecord, plain

CHANGEABLE_ON_RESUME = frozenset(
    {
        "data.root",
        "data.num_workers",
        "data.placement",
        "data.model_memory_gib",
        "model.compile_backbone",
        "model.compile_augment",
    }
)
_INTERNAL_HPARAMS = ("_class_path", "_instantiator")  # LightningCLI's additions to saved hyperparameters: unused


@dataclass(frozen=True)
class ResumedSettings:
    """The configuration a resumed run trains with; the method's class is the one the user's config names, which
    must be the checkpoint's method (nothing named in a checkpoint is ever imported)."""

    model: dict[str, Any]  # the method's options (init args), without those the data sets
    data: dict[str, Any]  # the data module's options
    seed: int


def resumed_settings(
    path: Path, checkpoint: dict[str, Any], explicit: dict[str, Any], data_set_options: set[str]
) -> ResumedSettings:
    """The settings to resume `checkpoint` (read from `path`) with, given what the user set explicitly.

    Args:
        explicit: the options the user set, as plain data: {"model": {"class_path", "init_args"}, "data": {...},
            "seed_everything": ...}, each part present only if set.
        data_set_options: the method's options that the data module sets (batch_size, image_size, ...); they
            are compared and restored through the data's own options.
    """
    record = RunRecord.read(checkpoint)
    saved_data = checkpoint.get("datamodule_hyper_parameters")
    if record is None or not saved_data:
        raise ConfigurationError(
            f"{path} does not record its method and data (it was not written by `selfsup fit`), so a run from it "
            "could not train what it trained. Pass a checkpoint written by `selfsup fit`."
        )
    model_config = explicit.get("model", {})
    asked = model_config.get("class_path", "").rpartition(".")[2]
    if asked.lower() != record.method:
        raise ConfigurationError(
            f"{path} was written by {record.method}, but the config asks for {asked or 'no method'}. Use it with "
            f"--config {record.method}, or drop --ckpt_path to start a new {asked} run."
        )
    differences: list[str] = []
    model = _options(checkpoint["hyper_parameters"], exclude=data_set_options)
    model = _merge("model", model, model_config.get("init_args", {}), differences)
    data = _merge("data", _options(saved_data), explicit.get("data", {}), differences)
    seed = explicit.get("seed_everything", record.seed)
    if isinstance(seed, bool) or seed != record.seed:  # true (a random seed) or false (none) differ too
        differences.append(f"--seed_everything {seed} (checkpoint: {record.seed})")
    if differences:
        raise ConfigurationError(
            f"{path} was trained with other settings than these: {', '.join(differences)}. A run from a checkpoint "
            "trains what the checkpoint trained: drop these options (or give the checkpoint's values), or start a "
            "new run without --ckpt_path."
        )
    return ResumedSettings(model, data, record.seed)


def _options(hparams: dict[str, Any], exclude: set[str] = frozenset()) -> dict[str, Any]:
    """The options among saved hyperparameters, as plain data, leaving out `exclude` and LightningCLI's keys."""
    return {key: plain(value) for key, value in hparams.items() if key not in exclude and key not in _INTERNAL_HPARAMS}


def _merge(group: str, saved: dict[str, Any], explicit: dict[str, Any], differences: list[str]) -> dict[str, Any]:
    """`saved` with the explicit options that may change on resume; every other explicit option that differs
    from `saved` is added to `differences` as its flag and both values."""
    merged, flat_saved = dict(saved), _flatten(saved)
    for key, value in _flatten(plain(explicit)).items():
        if f"{group}.{key}" in CHANGEABLE_ON_RESUME:  # top-level options only: never a dotted key
            merged[key] = value
        else:
            saved_value = flat_saved.get(key, "not set")
            if saved_value != value:
                flag = f"--{group}.init_args.{key}" if group == "model" else f"--{group}.{key}"
                differences.append(f"{flag} {value} (checkpoint: {saved_value})")
    return merged


def _flatten(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested option groups as dotted keys ({"mixing": {"num_hard": 8}} -> {"mixing.num_hard": 8}); lists are
    values, so a list of view recipes compares as a whole."""
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def align_resumed_epoch(trainer: pl.Trainer, batches_served: int) -> bool:
    """Make Lightning count the batches of a resumed epoch as the data loader serves them; True if that changed its
    count.

    Lightning restores the batches an epoch had done in the checkpoint's batches and ends the epoch when its count
    reaches the loader's length. The loader skips what was trained counted in this run's batches (per rank), which
    differ on another number of ranks: resumed 1 -> 2 ranks, Lightning counted a batch that the loader serves again
    and stopped one batch early, silently leaving the rest of the epoch untrained. Call it once the loops are
    restored and before the epoch loop runs (`on_train_start`); a checkpoint written after a training batch has
    that batch counted once more by Lightning as it restarts.
    """
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    if progress.ready == batches_served:
        return False
    progress.ready = progress.started = progress.processed = batches_served
    progress.completed = batches_served - int(trainer.fit_loop.epoch_loop.restarted_on_train_batch_end)
    return True


def global_random_state(device: torch.device) -> Tensor:
    """torch's global random state in this process: the CPU generator's, then, on a GPU, `device`'s default
    generator's, as one uint8 tensor (equal in size on every rank of a run, so the ranks' states can be gathered)."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return torch.cat(states)


def restore_global_random_state(state: Tensor, device: torch.device) -> None:
    """Set torch's global generators to `state` from `global_random_state`, unless it was saved on another kind of
    device (a CPU state holds no GPU generator): then the seeded generators serve, as for the views."""
    if state.numel() != global_random_state(device).numel():
        return
    cpu_bytes = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu_bytes].clone())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[cpu_bytes:].clone(), device)


def restart_epoch_iterator(trainer: pl.Trainer) -> None:
    """Make the training loader's iterator again when the run resumes at an epoch boundary, for the new epoch and
    from the restored global random state. Lightning makes that epoch's iterator before `on_train_start`, where the
    state is restored, and before it tells the samplers their epoch; but a torch DataLoader's iterator draws from the
    global generator as it is made (its workers' base seed; a shuffling sampler, its order), and one with workers
    takes the sampler's first indices at once. In the uninterrupted run both followed the checkpoint's state and the
    new epoch. A checkpoint written within an epoch already holds the state after that epoch's iterator was made, so
    its iterator stays; one written after an epoch's last batch resumes at the next epoch's start, as at a boundary."""
    fit_loop = trainer.fit_loop
    if fit_loop.restarted_mid_epoch and not fit_loop.epoch_loop.batch_progress.is_last_batch:
        return
    for loader in fit_loop._combined_loader.flattened:
        for sampler in (
            getattr(loader, "sampler", None),
            getattr(getattr(loader, "batch_sampler", None), "sampler", None),
        ):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(fit_loop.epoch_progress.current.processed)  # as Lightning does at each epoch's start
    iter(fit_loop._data_fetcher)  # what Lightning's epoch loop does at the start of every epoch
