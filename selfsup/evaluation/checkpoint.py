"""Load the backbone of any method's pretraining checkpoint, safely and with errors that name the fix."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from selfsup.errors import ConfigurationError
from selfsup.models import build_backbone
from selfsup.runs import RunRecord, read_checkpoint, run_folder_of_checkpoint, run_name_of_folder


@dataclass
class Pretrained:
    backbone: nn.Module
    feature_dim: int
    hparams: dict[str, Any]  # the method's hyperparameters (backbone, views, ...)
    data: dict[str, Any]  # the data module's hyperparameters (dataset, root, ...); empty if not saved
    method: str
    run_name: str
    epoch: int
    global_step: int

    @property
    def image_size(self) -> int:
        """The side of the images the backbone was trained on (and is evaluated at)."""
        return int(self.hparams["image_size"])


def load_pretrained(path: str | Path, expected_backbone: str | None = None) -> Pretrained:
    """The frozen backbone of a checkpoint written by `train.py fit`, in eval mode on the CPU.

    Loads with `weights_only=True` (`selfsup.runs.read_checkpoint`): nothing in the file is executed.
    `expected_backbone`, when given, must be the backbone the checkpoint was trained with.
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
    backbone = build_backbone(
        hparams["backbone"], hparams.get("small_image_stem"), hparams["image_size"],
        **(hparams.get("backbone_kwargs") or {}),
    )  # fmt: skip
    weights = {k.removeprefix("backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
    try:
        backbone.load_state_dict(weights)
    except RuntimeError as error:
        raise ConfigurationError(
            f"The backbone weights in {path} do not fit {hparams['backbone']!r}: {str(error).splitlines()[0]}"
        ) from error
    record = RunRecord.read(checkpoint)
    run_folder = run_folder_of_checkpoint(path)
    return Pretrained(
        backbone=backbone.eval().requires_grad_(False),
        feature_dim=backbone.num_features,
        hparams=dict(hparams),
        data=dict(checkpoint.get("datamodule_hyper_parameters", {})),
        method=record.method if record else run_folder.parent.name,
        run_name=(record and record.run_name) or run_name_of_folder(run_folder),
        epoch=int(checkpoint.get("epoch", -1)),
        global_step=int(checkpoint.get("global_step", -1)),
    )
