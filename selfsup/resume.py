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
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfsup.errors import ConfigurationError
from selfsup.methods import METHODS
from selfsup.runs import RunRecord, plain

CHANGEABLE_ON_RESUME = frozenset({"data.root", "data.num_workers", "model.compile_backbone", "model.compile_augment"})
_INTERNAL_HPARAMS = ("_class_path", "_instantiator")  # what LightningCLI adds to the hyperparameters it saves


@dataclass(frozen=True)
class ResumedSettings:
    """The configuration a resumed run trains with."""

    method_class_path: str  # e.g. selfsup.methods.SimCLR
    model: dict[str, Any]  # the method's options (init args), without those the data sets
    data: dict[str, Any]  # the data module's options; empty if the checkpoint has none
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
    if record is None:
        raise ConfigurationError(f"{path} was not written by `train.py fit` (it names no method); it cannot resume.")
    model_config = explicit.get("model", {})
    asked = model_config.get("class_path", "").rpartition(".")[2]
    if asked and asked.lower() != record.method:
        raise ConfigurationError(
            f"{path} was written by {record.method}, but the config asks for {asked}. Resume it with "
            f"--config configs/{record.method}.yaml, or drop --ckpt_path to start a new {asked} run."
        )
    model = _options(checkpoint["hyper_parameters"], exclude=data_set_options)
    data = _options(checkpoint.get("datamodule_hyper_parameters", {}))
    differences: list[str] = []
    model = _merge("model", model, model_config.get("init_args", {}), differences)
    if data:
        data = _merge("data", data, explicit.get("data", {}), differences)
    seed = explicit.get("seed_everything", record.seed)
    if seed != record.seed:
        differences.append(f"--seed_everything {seed} (checkpoint: {record.seed})")
    if differences:
        raise ConfigurationError(
            f"Resuming {path} with other settings than it was trained with: {', '.join(differences)}. A resumed "
            "run trains what the checkpoint trained: drop these options (or give the checkpoint's values), or "
            "start a new run without --ckpt_path."
        )
    return ResumedSettings(_class_path(path, checkpoint, record.method), model, data, record.seed)


def _class_path(path: Path, checkpoint: dict[str, Any], method: str) -> str:
    """The method's class: as LightningCLI saved it, or the registered method of that name."""
    class_path = checkpoint["hyper_parameters"].get("_class_path")
    if class_path is None and method not in METHODS:
        raise ConfigurationError(f"{path} was written by {method!r}, a method this selfsup does not have.")
    return class_path or f"{METHODS[method].__module__}.{METHODS[method].__name__}"


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
