"""Load the backbone of any method's pretraining checkpoint, safely and with errors that name the fix."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.errors import ConfigurationError
from selfsup.methods import METHODS, Method
from selfsup.models import build_backbone
from selfsup.runs import RunRecord, read_checkpoint, run_folder_of_checkpoint, run_name_of_folder


@dataclass
class Pretrained:
    """The frozen backbone of a `selfsup fit` checkpoint and what the checkpoint says about its training: the
    method's and data's hyperparameters, the method name, run name, epochs and step. Made by `load_pretrained`."""

    backbone: nn.Module
    feature_dim: int
    hparams: dict[str, Any]  # the method's hyperparameters (backbone, views, ...)
    data: dict[str, Any]  # the data module's hyperparameters (dataset, root, ...); empty if not saved
    method: str
    run_name: str
    epoch: int  # Lightning's epoch index at saving
    epochs_trained: int  # epochs completed
    global_step: int
    random_init_seed: int | None = None  # set by `at_random_init`: the backbone is untrained, drawn with this seed

    @property
    def image_size(self) -> int:
        """The side of the images the backbone was trained on (and is evaluated at)."""
        return int(self.hparams["image_size"])


def load_pretrained(path: str | Path, expected_backbone: str | None = None, encoder: str = "online") -> Pretrained:
    """The frozen backbone of a checkpoint written by `selfsup fit`, in eval mode on the CPU.

    Loads with `weights_only=True` (`selfsup.runs.read_checkpoint`): nothing in the file is executed.
    `expected_backbone`, when given, must be the backbone the checkpoint was trained with. `encoder` chooses
    the online backbone or a momentum method's EMA copy of it ("momentum": MoCo's key encoder, BYOL's target).
    """
    path = Path(path).expanduser()
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    if "backbone" not in hparams:
        raise ConfigurationError(f"{path} is not a selfsup pretraining checkpoint (no backbone in its hyperparameters)")
    if "image_size" not in hparams:
        raise ConfigurationError(
            f"{path} was written by an older selfsup, before the data set the image size; evaluate it with that version"
        )
    if expected_backbone is not None and expected_backbone != hparams["backbone"]:
        raise ConfigurationError(
            f"{path} holds a {hparams['backbone']!r} backbone, not {expected_backbone!r}. Pass a checkpoint of "
            f"{expected_backbone!r}, or drop --backbone to evaluate the checkpoint's own."
        )
    backbone = _untrained_backbone(hparams)
    record = RunRecord.read(checkpoint)
    run_folder = run_folder_of_checkpoint(path)
    method = record.method if record else run_folder.parent.name
    prefix = f"{_encoder_attribute(path, method, encoder)}."
    weights = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    try:
        backbone.load_state_dict(weights)
    except RuntimeError as error:
        raise ConfigurationError(
            f"The backbone weights in {path} do not fit {hparams['backbone']!r}: {str(error).splitlines()[0]}"
        ) from error
    return Pretrained(
        backbone=backbone.eval().requires_grad_(False),
        feature_dim=backbone.num_features,
        hparams=dict(hparams),
        data=dict(checkpoint.get("datamodule_hyper_parameters", {})),
        method=method,
        run_name=(record and record.run_name) or run_name_of_folder(run_folder),
        epoch=int(checkpoint.get("epoch", -1)),
        epochs_trained=_epochs_trained(checkpoint),
        global_step=int(checkpoint.get("global_step", -1)),
    )


def at_random_init(pretrained: Pretrained, seed: int = 0) -> Pretrained:
    """`pretrained` with its backbone as it was before training: the same architecture freshly initialised from
    `seed` (the global random state is left as it was). Evaluated the same way, it is the baseline a pretrained
    number is read against: what learning added over the architecture's inductive bias."""
    with torch.random.fork_rng(devices=[]):  # the backbone is built on the CPU, from the CPU generator alone
        torch.random.default_generator.manual_seed(seed)
        backbone = _untrained_backbone(pretrained.hparams)
    return dataclasses.replace(
        pretrained, backbone=backbone.eval().requires_grad_(False), epochs_trained=0, random_init_seed=seed
    )


def _untrained_backbone(hparams: dict[str, Any]) -> nn.Module:
    """The backbone of a checkpoint's hyperparameters, as its constructor initialises it."""
    return build_backbone(
        hparams["backbone"], hparams.get("small_image_stem"), hparams["image_size"],
        **(hparams.get("backbone_kwargs") or {}),
    )  # fmt: skip


def _encoder_attribute(path: Path, method: str, encoder: str) -> str:
    """The attribute of `method` that holds `encoder`'s backbone (`Method.ENCODERS`)."""
    encoders = METHODS[method].ENCODERS if method in METHODS else Method.ENCODERS
    if encoder not in encoders:
        raise ConfigurationError(
            f"{path} was written by {method}, which has no {encoder} encoder (it has: {', '.join(encoders)}); "
            "pass --encoder online."
        )
    return encoders[encoder]


def _epochs_trained(checkpoint: dict[str, Any]) -> int:
    """Epochs completed when the checkpoint was written: Lightning's count of processed epochs (its `epoch` is
    the index of the epoch under way, so a checkpoint written after 2 epochs says 1)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", -1)) + 1
