"""What a run is called and what it leaves on disk: the one owner of run names, run folders, result paths,
metric names and the record selfsup writes into checkpoints. Training, evaluation, the report and the
benchmarks import these instead of rebuilding strings, so they cannot drift apart.

    runs/<method>/version_N/                       a run folder: metrics.csv, hparams.yaml, config.yaml, wandb/
    runs/<method>/version_N/checkpoints/last.ckpt  the checkpoint to resume or evaluate
    runs/<method>/version_N/checkpoints/results.json   what `selfsup eval` measured on it
    runs/<method>/version_N/checkpoints/random_init.json   the same measured at random initialisation (the baseline)
    runs/<method>/version_N/checkpoints/embedding_map.png   its t-SNE map of the test features
    runs/<method>/version_N/checkpoints/backbone.safetensors (+ .json)   the exported backbone and its card
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from selfsup.errors import ConfigurationError

RUNS_ROOT = "runs"
METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
CONFIG_FILE = "config.yaml"  # the run's whole resolved command-line config, as LightningCLI saves it
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last"  # the file is last.ckpt
RESULTS_FILE = "results.json"
BASELINE_FILE = "random_init.json"  # `selfsup eval --random_init`: the run's backbone untrained, and raw pixels
EMBEDDING_MAP_FILE = "embedding_map.png"


class Metric:
    """Metric names shared by training, evaluation, the report and the benchmarks. They are stable, so wandb
    dashboards compare methods and runs of different versions."""

    TRAIN_LOSS = "train/loss"
    PROBE_LOSS = "train/online_linear_loss"
    TAU = "train/tau"
    HARD_NEGATIVE_SIM = "train/hard_negative_sim"  # the hardest real negative's similarity (SimCLR, MoCo v2, MoCHi)
    SYNTHETIC_NEGATIVE_SIM = "train/synthetic_negative_sim"  # the synthetic negatives' mean similarity
    SYNTHETIC_HARDER_FRACTION = "train/synthetic_harder_fraction"  # synthetic negatives harder than the hardest real
    POSITIVE_SIM_DROP = "train/positive_sim_drop"  # feature transformation: mean cos(q, k+) lost by extrapolation
    # Hard negative sampling and CACR: the weight of each anchor's hardest negative relative to uniform (1: all alike)
    HARDEST_NEGATIVE_WEIGHT = "train/hardest_negative_weight"
    DEBIASED_CLAMPED_FRACTION = "train/debiased_clamped_fraction"  # anchors whose debiased estimator sat on its floor
    NN_ACCURACY = "train/nn_accuracy"  # nearest-neighbour methods: fraction of the k neighbours of the sample's class
    PROTOTYPE_USAGE = "train/prototype_usage"  # SwAV: fraction of prototypes that some sample's argmax is
    ASSIGNMENT_ENTROPY = "train/assignment_entropy"  # SwAV: entropy of the hard assignments (nats)
    TEACHER_ENTROPY = "train/teacher_entropy"  # DINO: mean entropy of the teacher's centred, sharpened output (nats)
    TEACHER_STUDENT_KL = "train/teacher_student_kl"  # DINO: KL(teacher || student) over the crop pairs (nats)
    ON_DIAGONAL = "train/on_diagonal"  # Barlow Twins: sum_i (1 - C_ii)^2 of the cross-correlation C, invariance
    OFF_DIAGONAL = "train/off_diagonal"  # Barlow Twins: sum_{i != j} C_ij^2, redundancy, not weighted by lambda
    INVARIANCE = "train/invariance"  # VICReg: s, mean squared error between the views' embeddings, not weighted
    VARIANCE = "train/variance"  # VICReg: v(Z_a) + v(Z_b), hinge on each dimension's std, not weighted
    COVARIANCE = "train/covariance"  # VICReg: c(Z_a) + c(Z_b), squared off-diagonal covariances / D, not weighted
    OUTPUT_STD = "train/output_std"  # SimSiam: per-channel std of the unit-norm projections; 0 means collapse
    WHITENING_ERROR = "train/whitening_error"  # W-MSE: max |Cov(whitened) - I| in float32; rises near collapse
    ALIGNMENT = "train/alignment"  # AlignUniform: L_align of the positive pairs (Wang and Isola), not weighted
    UNIFORMITY = "train/uniformity"  # AlignUniform: the views' mean L_uniform over the global batch, not weighted
    # LearningRateMonitor's prefix: lr/weights, lr/no_weight_decay, lr/probe, lr/<module> for constant-rate modules
    LEARNING_RATE = "lr"
    KNN_TOP1 = "val/knn_top1"
    PROBE_TOP1 = "val/online_linear_top1"
    IMAGES_PER_SECOND = "perf/img_per_s"
    ELAPSED_SECONDS = "time/elapsed_s"
    DEVICE_HOURS = "time/device_hours"
    EVAL_KNN_TOP1 = "eval/knn_top1"
    EVAL_LINEAR_TOP1 = "eval/linear_top1"
    EVAL_LINEAR_TOP5 = "eval/linear_top5"
    EVAL_RAW_PIXELS_KNN_TOP1 = "eval/raw_pixels_knn_top1"  # the baseline's kNN on the pixels themselves
    EVAL_EMBEDDING_MAP = "eval/embedding_map"  # an image


def plain(value: Any) -> Any:
    """`value` as plain data, the form checkpoints and config files hold: dataclasses become dicts, tuples
    lists, recursively. Checkpoints of plain data load with weights_only=True and compare with configs."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def run_seed() -> int:
    """The seed a run's views and shuffles are drawn from: Lightning's global seed, which `seed_everything` sets
    (`selfsup fit` always calls it: 0 unless --seed_everything says otherwise); 0 where nothing seeded the process."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def method_name(method_class: type) -> str:
    """The registry name of a method class (`SimCLR` -> `simclr`): its configs/<name>.yaml and run folder."""
    return method_class.__name__.lower()


# Options of a run's config that do not change what it trains: where it reads and writes, how it reports, when it
# checkpoints or stops. With the seed, they are left out of `seed_group`.
NOT_TRAINING = (
    ("seed_everything",), ("ckpt_path",), ("weights_only",), ("wandb",), ("wandb_project",),
    ("checkpoint_every_minutes",), ("stop_after_minutes",), ("export_backbone",), ("data", "root"),
    ("data", "num_workers"), ("data", "placement"), ("data", "model_memory_gib"), ("trainer", "default_root_dir"),
    ("trainer", "enable_progress_bar"), ("trainer", "enable_model_summary"), ("trainer", "logger"),
    ("trainer", "callbacks"), ("trainer", "log_every_n_steps"), ("trainer", "plugins"),
)  # fmt: skip


def seed_group(config: dict[str, Any]) -> str:
    """A short key shared by runs whose configs differ only by their seed (and by where they read, write and
    report, `NOT_TRAINING`): a dashboard or the report averages over seeds by grouping on it. `config` is the run's
    config as the CLI parsed it, which its CONFIG_FILE holds."""
    trained = json.loads(json.dumps(plain(config), default=str))
    for path in NOT_TRAINING:
        section = trained
        for key in path[:-1]:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(path[-1], None)
    return hashlib.sha256(json.dumps(_without_unset(trained), sort_keys=True).encode()).hexdigest()[:12]


def _without_unset(value: Any) -> Any:
    """`value` without the None entries of its dicts, at any depth: an option left unset and one absent are the same
    (the values the method takes from the data are None where the CLI parsed them and absent from config.yaml)."""
    if isinstance(value, dict):
        return {key: _without_unset(item) for key, item in value.items() if item is not None}
    return value


def run_name(method: str, version: int | str) -> str:
    """`simclr-v3`: the name of run folder runs/simclr/version_3, in wandb and in evaluation results."""
    return f"{method}-v{version}"


def run_name_of_logger(logger: Any) -> str | None:
    """The run name of the run a Lightning logger logs to: `<name>-v<version>` (selfsup's CSV logger: the method
    and its run folder's version), else from its folder (a plain `pl.Trainer`'s `CSVLogger("logs", name="")` writes
    logs/version_0: `logs-v0`), else None: never a name without its parts."""
    if logger is None:
        return None
    if logger.name and logger.version not in (None, ""):
        return run_name(logger.name, logger.version)
    folder = Path(logger.log_dir) if getattr(logger, "log_dir", None) else None
    return run_name_of_folder(folder) if folder is not None and folder.name.startswith("version_") else None


def run_name_of_folder(run_dir: Path) -> str:
    """The run name of a run folder runs/<method>/version_N."""
    return run_name(run_dir.parent.name, run_dir.name.removeprefix("version_"))


def last_checkpoint(run_dir: Path) -> Path:
    """runs/<method>/version_N/checkpoints/last.ckpt of a run folder."""
    return run_dir / CHECKPOINT_DIR / f"{LAST_CHECKPOINT}.ckpt"


def run_folder_of_checkpoint(checkpoint: Path) -> Path:
    """runs/<method>/version_N of runs/<method>/version_N/checkpoints/<file>."""
    return checkpoint.parent.parent


def eval_wandb_folder(checkpoint: Path, results: Path) -> Path:
    """Where `selfsup eval` keeps its wandb run: in the run folder of a checkpoint that has one, beside the
    pretraining run (one `wandb sync runs/<method>/version_N/wandb/offline-run-*` syncs both), else beside the
    results."""
    in_a_run = checkpoint.parent.name == CHECKPOINT_DIR
    return run_folder_of_checkpoint(checkpoint) if in_a_run else results.parent


def embedding_map_path(results: Path) -> Path:
    """Where `selfsup eval` draws its map, beside its results: embedding_map.png beside results.json, and
    <name>_map.png beside results written to another <name>.json."""
    return results.with_name(EMBEDDING_MAP_FILE if results.name == RESULTS_FILE else f"{results.stem}_map.png")


def backbone_path(checkpoint: Path, encoder: str = "online") -> Path:
    """Where `selfsup export` writes the backbone of `checkpoint` by default, beside it: backbone.safetensors
    for last.ckpt (also written at the end of every fit), momentum_backbone.safetensors for the momentum encoder,
    and backbone-<name>.safetensors for a checkpoint of another name."""
    encoder_prefix = "" if encoder == "online" else f"{encoder}_"
    suffix = "" if checkpoint.stem == LAST_CHECKPOINT else f"-{checkpoint.stem}"
    return checkpoint.parent / f"{encoder_prefix}backbone{suffix}.safetensors"


def results_path(checkpoint: Path) -> Path:
    """Where `selfsup eval` writes what it measured on `checkpoint`: results.json beside it."""
    return checkpoint.parent / RESULTS_FILE


def baseline_path(checkpoint: Path) -> Path:
    """Where `selfsup eval --random_init` writes what it measured on `checkpoint`'s backbone untrained, and on raw
    pixels: random_init.json beside it."""
    return checkpoint.parent / BASELINE_FILE


@dataclass(frozen=True)
class RunRecord:
    """What selfsup adds to every checkpoint: the method and run that wrote it, and the seed its views and
    shuffles were drawn from. `selfsup eval` labels its results with it; a resumed run checks the method and
    reuses the seed, so it draws the views an uninterrupted run would have drawn."""

    method: str
    run_name: str | None
    seed: int
    wandb_id: str | None = None  # the wandb run a resumed run continues

    KEY: ClassVar[str] = "selfsup"

    def write(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = asdict(self)

    @classmethod
    def read(cls, checkpoint: dict[str, Any]) -> "RunRecord | None":
        record = checkpoint.get(cls.KEY)
        if not isinstance(record, dict) or "method" not in record:
            return None
        return cls(record["method"], record.get("run_name"), int(record.get("seed", 0)), record.get("wandb_id"))


def _where_runs_keep_checkpoints() -> Path:
    """runs/<method>/version_N/checkpoints/last.ckpt: the path to name when a user passed no checkpoint."""
    return last_checkpoint(Path(RUNS_ROOT, "<method>", "version_N"))


def _checkpoint_in(folder: Path) -> str:
    """What to pass instead of a folder: the newest last.ckpt where a run keeps it, seen from the folder as the
    checkpoints folder, a run folder, a method's folder or the runs root (no deeper: the folder may be ~)."""
    in_a_run = last_checkpoint(Path())  # checkpoints/last.ckpt
    found = [file for runs in ("", "*", "*/*") for file in folder.glob(str(Path(runs) / in_a_run))]
    found += [folder / in_a_run.name] if (folder / in_a_run.name).is_file() else []
    if not found:
        return f"It holds no {in_a_run}; pass --ckpt_path {_where_runs_keep_checkpoints()}"
    return f"Pass --ckpt_path {max(found, key=lambda file: file.stat().st_mtime)}"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `selfsup fit`, loaded with `weights_only=True`: nothing in the file is executed.

    A missing, truncated or foreign file, or one that could only be loaded unsafely, is a `ConfigurationError`
    naming the file (never PyTorch's hint to load it unsafely).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder, not a checkpoint. {_checkpoint_in(path)}")
    if not path.is_file():
        raise ConfigurationError(f"Checkpoint {path} does not exist. Pass --ckpt_path {_where_runs_keep_checkpoints()}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or objects that weights-only loading refuses
        raise ConfigurationError(
            f"{path} cannot be loaded as a weights-only checkpoint ({type(error).__name__}); pass a checkpoint "
            "written by `selfsup fit`."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ConfigurationError(
            f"{path} is not a selfsup pretraining checkpoint (no model state and hyperparameters); pass a checkpoint "
            "written by `selfsup fit`."
        )
    return checkpoint
