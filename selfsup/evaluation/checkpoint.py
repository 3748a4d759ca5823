"""Load the backbone of any method's pretraining checkpoint, safely and with errors that name the fix."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.errors import ConfigurationError
from selfsup.models import build_backbone


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


def load_pretrained(path: str | Path, expected_backbone: str | None = None) -> Pretrained:
    """The frozen backbone of a checkpoint written by `train.py fit`, in eval mode on the CPU.

    Loads with `weights_only=True`: nothing in the file is executed. `expected_backbone`, when given, must be
    the backbone the checkpoint was trained with.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"Checkpoint {path} does not exist. Pass --ckpt_path runs/<method>/version_N/checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigurationError(
            f"{path} cannot be loaded as a weights-only checkpoint ({type(error).__name__}); pass a checkpoint "
            "written by `train.py fit`."
        ) from error
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "state_dict" not in checkpoint or "backbone" not in hparams:
        raise ConfigurationError(
            f"{path} is not a selfsup pretraining checkpoint (no backbone in its hyperparameters)."
        )
    if expected_backbone is not None and expected_backbone != hparams["backbone"]:
        raise ConfigurationError(
            f"{path} holds a {hparams['backbone']!r} backbone, not {expected_backbone!r}. Pass a checkpoint of "
            f"{expected_backbone!r}, or drop --backbone to evaluate the checkpoint's own."
        )
    backbone, feature_dim = build_backbone(hparams["backbone"], hparams.get("small_image_stem", True))
    weights = {k.removeprefix("backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
    try:
        backbone.load_state_dict(weights)
    except RuntimeError as error:
        raise ConfigurationError(
            f"The backbone weights in {path} do not fit {hparams['backbone']!r}: {str(error).splitlines()[0]}"
        ) from error
    info = checkpoint.get("selfsup", {})
    run_dir = path.parent.parent  # runs/<method>/version_N/checkpoints/<file>
    method = info.get("method") or run_dir.parent.name
    return Pretrained(
        backbone=backbone.eval().requires_grad_(False),
        feature_dim=feature_dim,
        hparams=dict(hparams),
        data=dict(checkpoint.get("datamodule_hyper_parameters", {})),
        method=method,
        run_name=info.get("run_name") or f"{method}-v{run_dir.name.removeprefix('version_')}",
        epoch=int(checkpoint.get("epoch", -1)),
        global_step=int(checkpoint.get("global_step", -1)),
    )
