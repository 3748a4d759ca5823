"""The command line: LightningCLI over any `Method` and the `SelfSupDataModule`, and the `eval` subcommand.

`selfsup fit --config simclr [--trainer.max_epochs 5 ...]`. Besides LightningCLI's own
options it adds `--wandb` / `--wandb_project`, and links the dataset's image size, class count, normalisation
and batch size into the model, so they are set once, by the data. Every run keeps last.ckpt (more checkpoints
with `--trainer.callbacks+=ModelCheckpoint`) and, at its end, the backbone beside it (`selfsup.export`); the seed
defaults to 0, so runs repeat.

What the CLI adds to LightningCLI's behaviour: a resumed run trains what its checkpoint trained
(`selfsup.resume`); a run's length, its config files and its output folder are checked before anything is
built; every checkpoint replaces the old file whole or not at all (`AtomicCheckpointIO`); a run that fails
before its first step leaves no run folder behind; and every mistake a user can make ends in one line, not a
traceback or a page of usage (`user_error`).
"""

import difflib
import errno
import logging
import re
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from jsonargparse.typing import register_type
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins.io import CheckpointIO
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from selfsup.atomic import check_writable, nearest_existing
from selfsup.augment import ViewRecipe
from selfsup.config_names import shipped_configs
from selfsup.data import SelfSupDataModule
from selfsup.data.datamodule import resolved_sizes
from selfsup.data.values import DATA_TO_MODEL
from selfsup.errors import ConfigurationError, OptionsError
from selfsup.evaluation.evaluate import main as evaluate
from selfsup.export import BackboneExport
from selfsup.export import main as export
from selfsup.loggers import (
    AtomicCheckpointIO,
    LastCheckpoint,
    ResolvedWandbConfig,
    RunProgressBar,
    StepLearningRateMonitor,
    StopBeforeTimeLimit,
    TrainingClock,
    discard_run,
    finish_wandb,
    run_loggers,
)
from selfsup.methods import METHODS, Method
from selfsup.resume import resumed_settings
from selfsup.runs import RUNS_ROOT, RunRecord, method_name, plain, read_checkpoint, seed_group

# The seed is recorded in config.yaml and in every checkpoint; a line about it before every run (or error) is noise.
logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)


class _NoCloudTips(logging.Filter):
    """Drops Lightning's tips to install its cloud services (litlogger, litmodels), printed before every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoCloudTips())
# Lightning 2.6 flattens trees with a LeafSpec check that torch 2.14 deprecates: a warning for Lightning, not users.
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
# Every run logs each epoch's last step (`TrainingClock`): Lightning's advice for short epochs is moot.
warnings.filterwarnings("ignore", "The number of training batches .* is smaller than the logging interval")

# View recipes appear in configs as plain mappings, with every field shown by --print_config.
register_type(ViewRecipe, serializer=ViewRecipe.to_dict, deserializer=ViewRecipe.from_dict)

CONFIG_NAME = re.compile(r"[\w.-]+(/[\w.-]+)*")  # a --config value that names a file: no ':', braces or spaces
MAX_SEED = 2**32 - 1  # seed_everything's bound (a uint32)
DESCRIPTION = (
    "selfsup: self-supervised pretraining. Subcommands: fit (pretrain a method: selfsup fit --config simclr), "
    "validate (the kNN monitor and online probe of a config or --ckpt_path), eval (the offline kNN sweep, linear "
    "probe and diagnostics of a checkpoint: selfsup eval --help), export (the backbone of a checkpoint for timm / "
    "torchvision: selfsup export --help), pack and report (selfsup --help)."
)


def default_precision() -> str:
    """bf16 autocast where the GPU supports it; full precision on CPU, where bf16 autocast is slower."""
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


class CountOrFractionTrainer(Trainer):
    """Customize every aspect of training via flags.

    Args:
        limit_train_batches: Training batches per epoch and device: a count (1, 100) or a fraction (0.25).
        limit_val_batches: Validation batches per device: a count (1, 10) or a fraction (0.25); 0: no validation.
    """

    # Lightning annotates these two `Optional[Union[int, float]]`, but typing hands out a cached
    # `Optional[Union[float, int]]` made earlier, so the CLI parsed `--trainer.limit_train_batches 1` as 1.0, the
    # whole epoch, where the user asked for one batch. `int | float | None` is its own type: "1" is a count.
    def __init__(
        self, *, limit_train_batches: int | float | None = None, limit_val_batches: int | float | None = None, **kwargs
    ) -> None:
        super().__init__(limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches, **kwargs)


class SelfSupCLI(LightningCLI):
    """The command line of `selfsup` (and a checkout's `train.py`): LightningCLI over every `Method` and
    `SelfSupDataModule`, with the subcommands fit, validate, eval and export.

    Links the data's image size, classes and normalisation into the method, names the run folder
    (`selfsup.runs`), checks a resumed run against its checkpoint (`selfsup.resume`) and turns every
    `ConfigurationError` into one line that names the fix. `args` is the command line without the program name
    (default: `sys.argv`)."""

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        self._argv = sys.argv[1:] if args is None else list(args)
        self._run_folder: Path | None = None
        self._kept_folder: Path | None = None  # the deepest folder on the run folder's path before the run
        self._start_step = 0  # the global step a resumed run starts from
        self._wandb_id: str | None = None  # the wandb run a resumed run continues
        super().__init__(
            Method,
            SelfSupDataModule,
            trainer_class=CountOrFractionTrainer,
            subclass_mode_model=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            parser_kwargs={"exit_on_error": False, "description": DESCRIPTION},
            args=args,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit and validate: a method has no test or predict step."""
        return {
            subcommand: skip
            for subcommand, skip in LightningCLI.subcommands().items()
            if subcommand in ("fit", "validate")
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--wandb",
            type=bool,
            default=True,
            help="Also log to Weights & Biases (offline unless "
            "wandb is configured online: WANDB_MODE=online, WANDB_API_KEY or `wandb login`).",
        )
        parser.add_argument("--wandb_project", type=str, default="selfsup", help="Weights & Biases project.")
        parser.add_argument(
            "--checkpoint_every_minutes",
            type=float | None,
            default=None,
            help="Also rewrite last.ckpt within epochs every this many minutes of training (preemptible jobs; a "
            "mid-epoch checkpoint of a built-in dataset resumes exactly, an image folder's restarts the epoch's "
            "batches). Default: only at the end of every epoch.",
        )
        parser.add_argument(
            "--stop_after_minutes",
            type=float | None,
            default=None,
            help="End this process at the end of the first epoch after which another epoch would not fit in this "
            "many minutes of fitting, with last.ckpt holding it; --ckpt_path <that last.ckpt> continues the same "
            "run (job slots of a fixed length). The run's length and schedules do not change. Default: no limit.",
        )
        parser.add_argument(
            "--export_backbone",
            type=bool,
            default=True,
            help="At the end of training, write the backbone in its library's key format (timm / torchvision) "
            "beside last.ckpt: backbone.safetensors and backbone.json (what it is, how to load and preprocess).",
        )
        parser.set_defaults(
            {
                "trainer.precision": default_precision(),
                "trainer.default_root_dir": RUNS_ROOT,
                "trainer.max_epochs": 100,
                "trainer.log_every_n_steps": 10,
            }
        )
        for data_option, model_option in DATA_TO_MODEL.items():
            parser.link_arguments(f"data.{data_option}", f"model.init_args.{model_option}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check the seed before LightningCLI seeds with it (an out-of-range seed is a traceback there)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        seed = (self.config[subcommand] if subcommand else self.config).seed_everything
        if not isinstance(seed, bool) and not 0 <= seed <= MAX_SEED:
            raise ConfigurationError(f"--seed_everything must lie in [0, {MAX_SEED}], got {seed}")

    def _parse_ckpt_path(self) -> None:
        """With --ckpt_path, the run trains the checkpoint's method, options and seed (`selfsup.resume`), where
        LightningCLI would silently replace the model's options by the checkpoint's. A requeued SLURM job resumes
        from the checkpoint its preemption wrote (which Lightning would load by itself) the same way, so that it
        also continues its wandb run."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path and subcommand == "fit":
            ckpt_path = self.config[subcommand].ckpt_path = requeued_checkpoint(
                self.config.fit.trainer.default_root_dir
            )
        if not ckpt_path:
            return
        checkpoint = read_checkpoint(ckpt_path)
        self._start_step = int(checkpoint.get("global_step", 0))
        record = RunRecord.read(checkpoint)
        self._wandb_id = record.wandb_id if record and subcommand == "fit" else None
        explicit = plain(self.parser.parse_args(self._argv, defaults=False)[subcommand].as_dict())
        settings = resumed_settings(Path(ckpt_path), checkpoint, explicit, set(DATA_TO_MODEL.values()))
        model = {"class_path": explicit["model"]["class_path"], "init_args": settings.model}
        resumed = {"model": model, "data": settings.data, "seed_everything": settings.seed}
        try:
            self.config = self.parser.parse_object({subcommand: resumed}, self.config)
        except ArgumentError as error:
            raise ConfigurationError(
                f"{ckpt_path} holds options this version of selfsup does not know ({user_error(error)}); resume it "
                "with the version that wrote it."
            ) from None

    def before_instantiate_classes(self) -> None:
        """Write the data's image sizes into the config (config.yaml and the logged hparams show what trains), and
        check the run's length before anything is built: the schedule needs a finite number of steps."""
        config = self._subcommand_config()
        data = config.data
        data.image_size, data.folder_image_size = resolved_sizes(
            data.dataset, data.root, data.image_size, data.folder_image_size
        )
        trainer = config.trainer
        epochs, steps = trainer.max_epochs, trainer.max_steps  # Lightning: epochs None with no steps is 1000
        finite = (steps is not None and steps >= 1) or epochs is None or epochs >= 1
        minutes = config.checkpoint_every_minutes
        if minutes is not None and not minutes > 0:
            raise ConfigurationError(
                f"--checkpoint_every_minutes must be positive, got {minutes}; omit it to checkpoint at epoch ends only."
            )
        limit = config.stop_after_minutes
        if limit is not None and not limit > 0:
            raise ConfigurationError(f"--stop_after_minutes must be positive, got {limit}; omit it for no limit.")
        if trainer.default_root_dir is None:
            raise ConfigurationError(f"--trainer.default_root_dir must name a folder; omit it for {RUNS_ROOT}/.")
        check_writable(trainer.default_root_dir, "--trainer.default_root_dir", folder=True)
        if self.subcommand == "fit" and not finite:
            raise ConfigurationError(
                f"--trainer.max_epochs must be at least 1, got {trainer.max_epochs}: the learning-rate schedule "
                "needs a run of known length (or set --trainer.max_steps)."
            )

    def _subcommand_config(self, config: Namespace | None = None) -> Namespace:
        config = self.config if config is None else config
        return config[self.subcommand] if self.subcommand else config

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self._subcommand_config()
        if config.trainer.logger in (None, True):  # the user did not choose loggers: ours
            kwargs["logger"] = self._default_loggers(config)
        callbacks = list(self._subcommand_config(self.config_init).trainer.callbacks or [])
        callbacks += [TrainingClock(), ResolvedWandbConfig()]
        if config.trainer.logger is not False and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(StepLearningRateMonitor())
        if config.trainer.enable_checkpointing is not False:
            callbacks.append(LastCheckpoint())
            if config.checkpoint_every_minutes:
                callbacks.append(LastCheckpoint(every_minutes=config.checkpoint_every_minutes))
        if config.stop_after_minutes:
            callbacks.append(StopBeforeTimeLimit(config.stop_after_minutes))
        if self.subcommand == "fit" and config.export_backbone:
            callbacks.append(BackboneExport())
        if config.trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RunProgressBar())
        plugins = self._subcommand_config(self.config_init).trainer.plugins or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]  # every checkpoint replaces the old one atomically
        if self.datamodule.num_classes < 2:  # no labels to score: no validation at all (rather than an empty one)
            kwargs["limit_val_batches"] = 0
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def _default_loggers(self, config: Namespace) -> list:
        method = method_name(type(self.model))
        resolved = {key: value for key, value in config.as_dict().items() if key != "config"}  # as config.yaml holds
        group = seed_group(resolved)  # runs that differ only by seed share it; the report computes it from config.yaml
        # flat keys to group and filter by in the wandb workspace, the same in pretraining and eval runs
        resolved.update(method=method, dataset=config.data.dataset, backbone=config.model.init_args.backbone)
        resolved["seed_group"] = group
        self._kept_folder = nearest_existing(Path(config.trainer.default_root_dir) / method)
        loggers = run_loggers(
            config.trainer.default_root_dir,
            method,
            config.data.dataset,
            config.wandb_project if config.wandb else None,
            resolved,
            self._wandb_id,
        )
        self._run_folder = Path(loggers[0].log_dir)
        return loggers

    def fit(self, model: Method, **kwargs: Any) -> None:
        """Trainer.fit; a run that fails before its first optimizer step leaves no run folder behind, and one that
        finishes ends its wandb run."""
        if self.trainer.logger is not None and self._run_folder is not None:
            _ = self.trainer.logger.experiment  # the CSV folder first, so that wandb's files do not look stale to it
        try:
            self.trainer.fit(model, **kwargs)
        except BaseException:
            if self.trainer.global_step in (0, self._start_step) and self._run_folder is not None:
                rank_zero_only(discard_run)(self.trainer.loggers, self._run_folder, self._kept_folder)
            raise
        rank_zero_only(finish_wandb)(self.trainer.loggers)


def requeued_checkpoint(root: str) -> str | None:
    """The newest checkpoint Lightning wrote on a SLURM requeue signal (`<root>/hpc_ckpt_<n>.ckpt`), in a SLURM
    job; None elsewhere or if there is none."""
    if not SLURMEnvironment.detect():
        return None
    numbered = {int(match.group(1)): path for path in Path(root).glob("hpc_ckpt_*.ckpt")
                if (match := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", path.name))}  # fmt: skip
    return str(numbered[max(numbered)]) if numbered else None


def config_files(argv: list[str]) -> list[str]:
    """`argv` with each `--config` (`-c`) value that names a shipped config, and is not a file, replaced by that
    config's file, so `--config simclr` works from any directory (and `--config configs/simclr.yaml`, the path in
    a checkout, outside one too). Every config file is checked (`check_config_file`); a value that names neither a
    file nor a shipped config is an error listing the shipped ones. A value that is no name (`{trainer: ...}`) is
    left to jsonargparse, which reads it as inline YAML."""
    resolved = list(argv)
    for index, arg in enumerate(argv):
        if arg.startswith(("--config=", "-c=")):
            flag, value = arg.split("=", 1)
            resolved[index] = f"{flag}={config_file(value)}"
        elif index > 0 and argv[index - 1] in ("--config", "-c"):
            resolved[index] = config_file(arg)
    return resolved


def config_file(value: str) -> str:
    """The file that a `--config` value names (see `config_files`), checked."""
    path = Path(value).expanduser()
    try:
        exists = path.exists()
    except OSError as error:  # a value too long to be a file name is inline YAML
        if error.errno == errno.ENAMETOOLONG:
            return value
        raise ConfigurationError(f"--config {value} cannot be read ({error.strerror or error}).") from None
    if exists:
        check_config_file(path)
        return value
    if not CONFIG_NAME.fullmatch(value):
        return value
    shipped = shipped_configs()
    name = re.sub(r"\.ya?ml$", "", value.removeprefix("configs/"))
    if name in shipped:
        return str(shipped[name])
    close = difflib.get_close_matches(name, shipped, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigurationError(
        f"--config {value} is neither a file nor a config shipped with selfsup{hint}; pass a YAML file of options "
        f"or one of: {', '.join(shipped)}."
    )


def check_config_file(path: Path) -> None:
    """A `--config` file must be a YAML mapping of options. jsonargparse names neither the file nor the problem
    for a binary, empty or non-mapping file (a traceback, "Unexpected config:" or a bare line number), so the
    file is read here first, safely (no YAML tag constructs anything)."""
    fix = "pass a YAML file of options, such as configs/simclr.yaml"
    try:
        content = path.read_bytes()
    except OSError as error:  # a folder, or an unreadable file
        raise ConfigurationError(f"--config {path} cannot be read ({error.strerror or error}); {fix}.") from None
    try:
        text = content.decode()
    except UnicodeDecodeError as error:
        raise ConfigurationError(
            f"--config {path} is not a text file (byte {error.start} is not UTF-8); {fix}."
        ) from None
    if "\0" in text:
        raise ConfigurationError(f"--config {path} is not a text file (it holds NUL bytes); {fix}.")
    try:
        options = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigurationError(f"--config {path} is not valid YAML{where}: {problem}; {fix}.") from None
    if options is None:
        raise ConfigurationError(f"--config {path} is empty; {fix}.")
    if not isinstance(options, dict):
        raise ConfigurationError(
            f"--config {path} holds a {type(options).__name__}, not options (key: value lines); {fix}."
        )


def main(args: list[str] | None = None) -> SelfSupCLI | dict | tuple:
    """Run the CLI (`eval` goes to the offline evaluators, `export` to `selfsup.export`). A user's mistake ends it
    with one line naming the fix and exit status 1; anything else keeps its traceback."""
    try:
        argv = config_files(sys.argv[1:] if args is None else args)
        if argv[:1] == ["eval"]:
            return evaluate(argv[1:])
        if argv[:1] == ["export"]:
            return export(argv[1:])
        if args is None:  # LightningCLI reads the command line itself (given `args` too, it warns)
            sys.argv[1:] = argv
            return SelfSupCLI()
        return SelfSupCLI(args=argv)
    except Exception as error:
        message = user_error(error)
        if message is None:
            raise
        sys.exit(f"error: {message}" if rank_zero_only.rank == 0 else 1)  # under DDP, one line, not one per rank


def user_error(error: BaseException) -> str | None:
    """One line for the user's mistake behind `error`, or None if it is not one (a bug keeps its traceback).

    A `ConfigurationError` anywhere in the chain of causes is the mistake, and so is Lightning's
    MisconfigurationException (a trainer option this machine cannot honour, such as a GPU config without a GPU). A
    parse error from jsonargparse becomes its innermost message with the option it concerns; an unknown or
    missing method lists the registered ones.
    """
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for cause in chain:
        if isinstance(cause, OptionsError):
            return cause.with_flags()
        if isinstance(cause, ConfigurationError):
            return str(cause)
        if isinstance(cause, MisconfigurationException):
            return f"{str(cause).strip().splitlines()[0].rstrip('.')}: fix the --trainer options for this machine"
    if not isinstance(chain[0], ArgumentError):
        return None
    messages = [str(cause).strip() for cause in chain]
    keys = [match.group(1) for m in messages if (match := re.match(r'Parser key "([^"]+)"', m))]
    keys = list(dict.fromkeys(keys))  # the same key is repeated by each layer that re-raises
    innermost = messages[-1].splitlines()[-1].strip()
    unknown_class = any(isinstance(c, ImportError | AttributeError) or "import path" in str(c).lower() for c in chain)
    if keys == ["model"] and unknown_class or re.search(r"required: \S*model\b", messages[0]):
        given = re.search(r"(?:class_path '|import path string: |Import path (?!does ))([\w.]+)", "\n".join(messages))
        what = f"Unknown method {given.group(1)!r}" if given else "No method given"
        registered = ", ".join(f"{name} ({cls.__name__})" for name, cls in METHODS.items())
        return f"{what}. Registered methods: {registered}; pass --config <method> or --model <Class>."
    innermost = _number_message(innermost)
    if not keys:
        return innermost
    option = ".".join([keys[0], "init_args", *keys[1:]] if keys[0] == "model" else keys)
    return f"--{option}: {innermost}"


_NUMBER_TYPES = {"float": "a number, such as 0.5", "int": "a whole number, such as 8"}


def _number_message(message: str) -> str:
    """jsonargparse's "Expected a <class 'float'>. Got value: nan" in words: NaN and infinity are no valid values,
    anything else is not a number."""
    match = re.fullmatch(r"Expected a <class '(float|int)'>\. Got value: (.*)", message)
    if match is None:
        return message
    wanted, given = _NUMBER_TYPES[match.group(1)], match.group(2)
    if given.strip().lstrip(".+-").lower() == "nan":
        return f"NaN is not a valid value; give {wanted}."
    if given.strip().lstrip(".+-").lower() in ("inf", "infinity"):
        return f"infinity is not a valid value; give {wanted}."
    return f"expected {wanted}, got {given!r}."
