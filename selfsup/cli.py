"""The command line: LightningCLI over any `Method` and the `SelfSupDataModule`, plus the logging defaults.

`python train.py fit --config configs/simclr.yaml [--trainer.max_epochs 5 ...]`. Besides LightningCLI's own
options it adds `--wandb` / `--wandb_project`, a `--checkpoint.*` group (ModelCheckpoint, keeping last.ckpt)
and links the dataset's class count, normalisation and batch size into the model, so they are set once.
"""

import json
import os
import sys
from pathlib import Path

import torch
from jsonargparse import Namespace
from jsonargparse.typing import register_type
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from selfsup.augment import ViewRecipe
from selfsup.data import SelfSupDataModule
from selfsup.errors import ConfigurationError
from selfsup.methods import Method

# View recipes appear in configs as plain mappings, with every field shown by --print_config.
register_type(ViewRecipe, serializer=ViewRecipe.to_dict, deserializer=ViewRecipe.from_dict)


def default_precision() -> str:
    """bf16 autocast where the GPU supports it; full precision on CPU, where bf16 autocast is slower."""
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def wandb_configured_online() -> bool:
    """True only if the user set wandb up to sync: WANDB_MODE=online, an API key, or `wandb login` (~/.netrc)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode == "online"
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class SelfSupCLI(LightningCLI):
    def __init__(self, **kwargs) -> None:
        super().__init__(
            Method,
            SelfSupDataModule,
            subclass_mode_model=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--wandb",
            type=bool,
            default=True,
            help="Also log to Weights & Biases (offline unless "
            "wandb is configured online: WANDB_MODE=online, WANDB_API_KEY or `wandb login`).",
        )
        parser.add_argument("--wandb_project", type=str, default="selfsup", help="Weights & Biases project.")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "trainer.precision": default_precision(),
                "trainer.default_root_dir": "runs",
                "trainer.log_every_n_steps": 10,
            }
        )
        parser.link_arguments("data.batch_size", "model.init_args.batch_size")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.mean", "model.init_args.image_mean", apply_on="instantiate")
        parser.link_arguments("data.std", "model.init_args.image_std", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.logger in (None, True):  # the user did not choose loggers: use ours
            kwargs["logger"] = self._default_loggers(config)
        return super().instantiate_trainer(**kwargs)

    def _default_loggers(self, config: Namespace) -> list[Logger]:
        """CSV always; wandb (offline unless configured online) named by method and grouped by dataset."""
        method = type(self.model).__name__.lower()
        csv = CSVLogger(config.trainer.default_root_dir, name=method)
        loggers: list[Logger] = [csv]
        if config.wandb:
            resolved = {key: value for key, value in config.as_dict().items() if key != "config"}
            # flat keys to group and filter by in the wandb workspace, the same in pretraining and eval runs
            resolved.update(method=method, dataset=config.data.dataset, backbone=config.model.init_args.backbone)
            loggers.append(
                WandbLogger(
                    project=config.wandb_project,
                    name=f"{method}-v{csv.version}",  # `train.py eval` logs under the same name
                    group=config.data.dataset,
                    job_type="pretrain",
                    save_dir=csv.log_dir,
                    offline=not wandb_configured_online(),
                    config=json.loads(json.dumps(resolved, default=str)),
                )
            )
        return loggers


def main(args: list[str] | None = None) -> SelfSupCLI | dict:
    """Run the CLI (`eval` goes to the offline evaluators); a `ConfigurationError` ends it with one line naming
    the fix, exit status 1."""
    args = sys.argv[1:] if args is None else args
    try:
        if args[:1] == ["eval"]:
            from selfsup.evaluation.evaluate import main as evaluate  # it builds on this module

            return evaluate(args[1:])
        return SelfSupCLI(args=args)
    except Exception as error:
        cause = _configuration_error(error)
        if cause is None:
            raise
        sys.exit(f"error: {cause}")


def _configuration_error(error: BaseException | None) -> ConfigurationError | None:
    """The user's mistake behind `error`, also when jsonargparse wrapped it while instantiating a class."""
    while error is not None:
        if isinstance(error, ConfigurationError):
            return error
        error = error.__cause__ or error.__context__
    return None
