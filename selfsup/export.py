"""The pretrained backbone, out of the suite: its weights in the key format of the library its architecture
comes from, so a stock timm or torchvision model loads them, and a card saying how to build and feed it.

    selfsup export --ckpt_path runs/simclr/version_0/checkpoints/last.ckpt [--encoder momentum] [--pth]

writes `backbone.safetensors` (tensors only: loading it executes nothing) and `backbone.json` next to the
checkpoint; every `selfsup fit` writes the same two files at the end of training (`BackboneExport`). Each file
replaces an older one whole or not at all, and an existing file that holds something else is replaced only with
`--overwrite true`. Keys are
the backbone's own (`conv1.weight`, `layer1.0.bn1.bias`, ... for torchvision; timm's for timm models), without
the classifier, which downstream code trains: `torchvision.models.resnet50().load_state_dict(weights,
strict=False)` misses only `fc.*`, and timm loads the file with `pretrained_cfg_overlay=dict(file=...)`.

A ResNet with the small-image stem (3x3 stride-1 `conv1`, no max-pool; see `selfsup.models.backbones`) has a
`conv1.weight` of another shape than the stock model's: the card says so, and `load_backbone` builds it.

Every backbone takes RGB images (`in_channels` 3), also one trained on gray images: training repeats a gray image's
channel (`selfsup.augment.multiview.to_rgb`), and the card's mean and std have one value per RGB channel. The card's
`preprocess` line does the same to a downstream dataset's images, so a gray one such as torchvision's
Fashion-MNIST works as it is (normalising its 1-channel tensors with the 3-value mean was a broadcast error).
"""

import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from jsonargparse import CLI
from pytorch_lightning.utilities import rank_zero_info
from safetensors.torch import load_file, save
from torch import Tensor, nn

from selfsup.atomic import check_writable, write_files
from selfsup.errors import ConfigurationError
from selfsup.evaluation.checkpoint import load_pretrained
from selfsup.loggers import LastCheckpoint
from selfsup.models.backbones import build_backbone, has_small_image_stem, library_of
from selfsup.runs import CHECKPOINT_DIR, LAST_CHECKPOINT, backbone_path, method_name, run_name_of_logger

CARD_VERSION = 2  # 2: in_channels and preprocess
DERIVED = ("loads_into_stock_model", "load", "preprocess")  # what to_json adds to a card's fields


@dataclass(frozen=True)
class BackboneCard:
    """What a downstream user needs besides the weights: the architecture (and how to build it), the input it
    was trained on (channels, image size, normalisation), and where it came from. Written as JSON beside the
    weights, with a line of Python that loads them and one that preprocesses images for them."""

    library: Literal["timm", "torchvision"]  # whose model class and key names the weights have
    backbone: str  # the model name in that library
    backbone_kwargs: dict[str, Any]  # constructor arguments it was built with (a ViT's img_size, patch_size)
    small_image_stem: bool  # a ResNet's 3x3 stride-1 stem without max-pool: then not a stock model
    num_features: int  # the feature dimension the classifier of a downstream model takes
    in_channels: int  # channels of the images it takes: 3, RGB, also when it was trained on gray images
    image_size: int  # side of the square images it was trained on
    mean: list[float]  # per-channel normalisation of images in [0, 1], as it was trained with
    std: list[float]
    weights: str  # the weights file's name, beside this card
    method: str
    encoder: str  # online, or momentum (MoCo's key encoder, BYOL's target)
    run_name: str | None
    dataset: str | None
    epochs: int  # epochs completed
    global_step: int
    version: int = CARD_VERSION

    @classmethod
    def of(cls, backbone: nn.Module, hparams: Mapping[str, Any], weights: str, **provenance: Any) -> "BackboneCard":
        """The card of `backbone`, built by a method with hyperparameters `hparams`; `provenance` gives the
        method, encoder, run name, dataset, epochs and global step."""
        return cls(
            library=library_of(hparams["backbone"]),
            backbone=hparams["backbone"],
            backbone_kwargs=dict(hparams.get("backbone_kwargs") or {}),
            small_image_stem=has_small_image_stem(backbone),
            num_features=backbone.num_features,
            in_channels=input_channels(backbone),
            image_size=int(hparams["image_size"]),
            mean=[float(value) for value in hparams["image_mean"]],
            std=[float(value) for value in hparams["image_std"]],
            weights=weights,
            **provenance,
        )

    @property
    def load(self) -> str:
        """One line of Python, imports included, that builds the backbone and loads the weights (for a classifier
        of NUM_CLASSES outputs where the library's constructor makes one)."""
        kwargs = "".join(f", {key}={value!r}" for key, value in self.backbone_kwargs.items())
        if self.small_image_stem:
            return (
                f"from selfsup.export import load_backbone; model = load_backbone({self.weights!r})  "
                "# the small-image stem: not a stock model"
            )
        if self.library == "torchvision":
            return (
                f"import safetensors.torch, torchvision; "
                f"model = torchvision.models.{self.backbone}(num_classes=NUM_CLASSES{kwargs}); "
                f"model.load_state_dict(safetensors.torch.load_file({self.weights!r}), strict=False)  # fc.* missing"
            )
        return (
            f"import timm; model = timm.create_model({self.backbone!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={self.weights!r}), num_classes=NUM_CLASSES{kwargs})"
        )

    @property
    def preprocess(self) -> str:
        """One line of Python, imports included, that defines `preprocess`: a PIL image, numpy array or uint8
        tensor in, the backbone's input out, as selfsup's evaluation feeds it (`selfsup.augment.CleanView`): RGB (a
        gray image's one channel repeated, as in training; the card's mean and std have one value per RGB
        channel), the centre square at `image_size` px, normalised."""
        size = self.image_size
        return (
            "import torch; from torchvision.transforms import v2; "
            f"preprocess = v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize({size}), v2.CenterCrop({size}), "
            f"v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean={self.mean}, std={self.std})])"
        )

    def to_json(self) -> str:
        card = {
            **asdict(self),
            "loads_into_stock_model": not self.small_image_stem,
            "load": self.load,
            "preprocess": self.preprocess,
        }
        return json.dumps(card, indent=2) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> "BackboneCard":
        path = Path(path).expanduser()
        try:
            card = json.loads(path.read_text())
            card.setdefault("in_channels", 3)  # a version 1 card: every backbone took RGB then too
            return cls(**{key: value for key, value in card.items() if key not in DERIVED})
        except (OSError, ValueError, TypeError) as error:
            raise ConfigurationError(
                f"{path} is not a backbone card written by `selfsup export` ({type(error).__name__}); export the "
                "checkpoint again."
            ) from None


def input_channels(backbone: nn.Module) -> int:
    """The channels of the images `backbone` takes: those of its first convolution (a ResNet's stem, a ViT's patch
    embedding)."""
    return next(module.in_channels for module in backbone.modules() if isinstance(module, nn.Conv2d))


def backbone_weights(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's state dict as contiguous CPU tensors (safetensors stores no strides: channels_last
    weights are written in the standard layout, which is what a fresh model holds)."""
    return {key: value.detach().cpu().contiguous() for key, value in backbone.state_dict().items()}


def write_backbone(
    backbone: nn.Module, card: BackboneCard, out: Path, pth: bool = False, overwrite: bool = False
) -> list[Path]:
    """`out` (.safetensors), its card (`out` with .json) and, with `pth`, the same weights as a .pth state dict,
    replacing older files together, whole or not at all (`selfsup.atomic.write_files`). An existing file with other
    content is replaced only with `overwrite`; one with the same content (the fit's own export, exported again) is
    left untouched."""
    weights = backbone_weights(backbone)
    # timm reads "pt" safetensors files as torch state dicts; written by selfsup.atomic, the file gets the user's
    # umask (safetensors' save_file makes it readable by its owner only, which a cluster's colleagues cannot read)
    contents = {out: save(weights, metadata={"format": "pt"}), out.with_suffix(".json"): card.to_json().encode()}
    if pth:
        buffer = io.BytesIO()
        torch.save(weights, buffer)
        contents[out.with_suffix(".pth")] = buffer.getvalue()
    different = {path: content for path, content in contents.items() if not _holds(path, content)}
    existing = [str(path) for path in different if path.exists()]
    if existing and not overwrite:
        raise ConfigurationError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} with other content; "
            "pass --overwrite true to replace, or --out another file name."
        )
    write_files(different)
    return list(contents)


def _holds(path: Path, content: bytes) -> bool:
    return path.is_file() and path.stat().st_size == len(content) and path.read_bytes() == content


def load_backbone(path: str | Path) -> nn.Module:
    """The backbone exported to `path` (.safetensors, its card beside it), built as selfsup built it: the one
    way to load a small-image-stem ResNet, and a way for every other backbone too."""
    path = Path(path).expanduser()
    card = BackboneCard.read(path.with_suffix(".json"))
    model = build_backbone(card.backbone, card.small_image_stem, card.image_size, **card.backbone_kwargs)
    model.load_state_dict(load_file(path))
    return model.eval()


def export(
    ckpt_path: str,
    out: str | None = None,
    encoder: Literal["online", "momentum"] = "online",
    pth: bool = False,
    overwrite: bool = False,
) -> tuple[BackboneCard, list[Path]]:
    """Write the backbone of a pretraining checkpoint in its library's key format, with a JSON card.

    Args:
        ckpt_path: a checkpoint written by `selfsup fit` (any method).
        out: the .safetensors file to write (default: backbone.safetensors beside the checkpoint, or
            momentum_backbone.safetensors for --encoder momentum); the card goes beside it as .json.
        encoder: online (the trained network), or momentum (MoCo's key encoder, BYOL's target network).
        pth: also write the weights as a torch state dict (.pth), for code that reads only those.
        overwrite: replace existing files of those names that hold something else (without it, the export stops
            and names them; files that already hold this export are left as they are).
    """
    checkpoint = Path(ckpt_path).expanduser()
    destination = Path(out).expanduser() if out else backbone_path(checkpoint, encoder)
    if destination.suffix != ".safetensors":
        raise ConfigurationError(f"--out {out} must end in .safetensors (the .json card and .pth go beside it)")
    if destination.resolve() == checkpoint.resolve():
        raise ConfigurationError("--out must not be the checkpoint itself: pass another file name")
    for path in (destination, destination.with_suffix(".json"), *([destination.with_suffix(".pth")] if pth else [])):
        check_writable(path, "--out")
    pretrained = load_pretrained(checkpoint, encoder=encoder)
    card = BackboneCard.of(
        pretrained.backbone, pretrained.hparams, destination.name,
        method=pretrained.method, encoder=encoder, run_name=pretrained.run_name,
        dataset=pretrained.data.get("dataset"), epochs=pretrained.epochs_trained, global_step=pretrained.global_step,
    )  # fmt: skip
    return card, write_backbone(pretrained.backbone, card, destination, pth, overwrite)


def describe(card: BackboneCard, written: list[Path]) -> str:
    """What was written and how to load it, for the user who ran the export."""
    files = ", ".join(str(path) for path in written)
    run = f" of {card.run_name}" if card.run_name else ""
    lines = [f"exported the {card.encoder} {card.backbone} backbone ({card.library} keys){run}: {files}"]
    if card.small_image_stem:
        lines.append(
            f"note: it has the small-image stem (3x3 stride-1 conv1, no max-pool), so it does not load into a stock "
            f"{card.library} {card.backbone}; build it with selfsup.models.build_backbone({card.backbone!r}, "
            "small_image_stem=True) and load the weights, or in one line:"
        )
    lines.append(f"load it: {card.load}")
    lines.append(
        f"input: {card.in_channels}-channel (RGB) images of {card.image_size} px (a gray image's channel repeated, as "
        f"in training), normalised with mean {card.mean} and std {card.std}; for PIL images or numpy arrays: "
        f"{card.preprocess}"
    )
    return "\n".join(lines)


class BackboneExport(pl.Callback):
    """At the end of a fit, the trained backbone (online encoder) beside last.ckpt, as `selfsup export` would
    write it from that checkpoint (`--export_backbone false` turns it off). The run folder is the fit's own, so
    this replaces the run's own earlier export (a resumed run's folder is new)."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        last = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
        folder = Path(last.dirpath) if last else Path(trainer.log_dir) / CHECKPOINT_DIR
        destination = backbone_path(folder / f"{LAST_CHECKPOINT}.ckpt")
        card = BackboneCard.of(
            pl_module.backbone, pl_module.hparams, destination.name,
            method=method_name(type(pl_module)), encoder="online",
            run_name=run_name_of_logger(trainer.logger),
            dataset=trainer.datamodule.hparams.get("dataset") if trainer.datamodule else None,
            epochs=trainer.fit_loop.epoch_progress.current.processed, global_step=trainer.global_step,
        )  # fmt: skip
        rank_zero_info(describe(card, write_backbone(pl_module.backbone, card, destination, overwrite=True)))


def main(args: list[str] | None = None) -> tuple[BackboneCard, list[Path]]:
    """`selfsup export ...`: parse errors are raised (not printed with the usage), for `selfsup.cli` to report."""
    card, written = CLI(export, args=args, as_positional=False, exit_on_error=False)
    print(describe(card, written))
    return card, written
