"""The results table (README.md, docs/benchmarks.md), as chunks that each fit in one device call, resumable and
skipped once done.

Three stages, each a list of runs of `train.py fit` on full Fashion-MNIST (ResNet-18, small-image stem, batch 512):

    tune      TUNE_EPOCHS-epoch runs scored on 10,000 held-out training images (--data.holdout), never on the
              test set: each method's recipe on grayscale views (seeds 0 and 1), then one setting changed at a
              time (seed 0). bench/tuned.py writes the best of each setting into
              configs/fashion_mnist/<method>.yaml, with what it was chosen against.
    table     every method, TABLE_EPOCHS epochs, seeds 0 and 1, from configs/fashion_mnist/<method>.yaml; the
              offline kNN (k=200, T=0.1) and linear probe of `train.py eval` on the test set.
    ablation  hard negative mixing: MoCHi with (N, s, s') = (512, 1024, 512), and SimCLR with in-batch mixing,
              seeds 0 and 1 (MoCo v2 and MoCHi (1024, 1024, 128) are table runs).

    python bench/table.py status                            # what is done, stale or left, and its device time
    python bench/table.py run --out $OUT --data-root .data/FashionMNIST/raw   # GPU: the next chunks that fit
    python bench/table.py run --stages tune --parallel 3 ...  # GPU: three tuning runs side by side
    python bench/table.py collect <files_at>                # here: the results a device call brought back
    python bench/table.py assemble                          # the tables (README, docs/benchmarks.md), the plots
    python bench/table.py run --smoke                       # CPU: every chunk at toy size (commands only)

A result (bench/results/table/<stage>/<name>.json) records the command and a digest of it and of the config
files it read: a result whose command or configs changed since is stale and runs again. A run longer than one
call stops at an epoch end (--stop_after_minutes) and the next call continues it from last.ckpt, which stays in
bench/runs/ on the device machine while it is held (else the run starts over). Tuning runs may share the
device (--parallel): their accuracy is what counts, and their results say how many ran side by side; table and
ablation runs run alone, as their img/s and wall time go into the README.
"""

import argparse
import csv
import dataclasses
import fnmatch
import functools
import hashlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment  # noqa: E402

from selfsup.augment import ViewRecipe  # noqa: E402
from selfsup.methods import METHODS  # noqa: E402
from selfsup.report import Run  # noqa: E402
from selfsup.report_plots import plot_knn  # noqa: E402
from selfsup.runs import CHECKPOINT_DIR, METRICS_FILE, Metric, results_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "table"
RUNS = REPO / "bench" / "runs"  # run folders and checkpoints (git-ignored), kept on the device between calls
README = REPO / "README.md"  # the methods table and the plots
BENCHMARKS_PAGE = REPO / "docs" / "benchmarks.md"  # both tables and every run's command
TABLE_START, TABLE_END = "<!-- results-table:start -->", "<!-- results-table:end -->"
OUT_FILE = "table_results.json"  # a device call's results, in the folder given as --out

TUNE_EPOCHS, TABLE_EPOCHS, SEEDS = 20, 100, (0, 1)
HOLDOUT = 10_000  # a sixth of the 60,000 training images
TABLE_METHODS = ("simclr", "mocov2", "mochi", "byol", "swav", "nnclr")
TUNED_CONFIG = "configs/fashion_mnist/{method}.yaml"  # init_args only: MoCHi uses MoCo v2's
TUNED_AS = {"mochi": "mocov2"}
MIXING_START_EPOCH = 10  # the queue first fills with keys of a partly trained encoder (our choice, not the paper's)
# SimCLR's 1,022 in-batch negatives at batch 512, mixed in MoCHi's proportions (1024, 1024, 128) of a 16k queue:
# N = K / 16, s = N, s' = N / 8
IN_BATCH_MIXING = (64, 64, 8)

# H100 img/s at batch 512 (bench/results/methods_h100_10ep.json); SwAV and NNCLR unmeasured: the slowest measured
THROUGHPUT = {"simclr": 16_180, "mocov2": 11_230, "mochi": 11_628, "byol": 11_587, "swav": 11_000, "nnclr": 11_000}
START_S, EVAL_S = 45, 90  # a process's start-up and data loading; `train.py eval` with the linear probe
TRAIN_IMAGES = 60_000
HARDNESS = (Metric.HARD_NEGATIVE_SIM, Metric.SYNTHETIC_NEGATIVE_SIM, Metric.SYNTHETIC_HARDER_FRACTION)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One run of `train.py fit` (and `train.py eval` where `evaluate`), done in one or more device calls."""

    stage: str
    name: str
    method: str
    seed: int
    epochs: int
    configs: tuple[str, ...]  # repo-relative config files, in order
    options: tuple[str, ...] = ()  # further `train.py fit` options
    views: tuple[ViewRecipe, ...] | None = None  # written to a config file of the run when set
    evaluate: bool = False

    @property
    def result_file(self) -> Path:
        return Path(self.stage) / f"{self.name}.json"

    def view_values(self) -> list[dict] | None:
        """The view recipes as config values (None: the configs' own)."""
        return None if self.views is None else [recipe.to_dict() for recipe in self.views]

    @property
    def tuned(self) -> bool:
        """Tuning runs are their own recipe; the others need the tuned configs/fashion_mnist/ file."""
        return self.stage == "tune" or len(self.configs) > 1

    def estimate_s(self) -> float:
        """Device seconds: the training images at the method's measured throughput, start-up and evaluation."""
        images = (TRAIN_IMAGES - (HOLDOUT if self.stage == "tune" else 0)) * self.epochs
        return images / THROUGHPUT[self.method] + START_S + (EVAL_S if self.evaluate else 0)


# the tuning stage ----------------------------------------------------------------------------------------------


def method_default(method: str, option: str) -> object:
    """The default of a method option: that of its class, or of the nearest base that has the option."""
    for cls in METHODS[method].__mro__:
        parameter = inspect.signature(cls.__init__).parameters.get(option)
        if parameter is not None:
            return parameter.default
    raise KeyError(f"{method} has no {option} option")


def method_views(method: str) -> tuple[ViewRecipe, ...]:
    """The method's own view recipe."""
    return tuple(method_default(method, "views"))


def grayscale(recipe: ViewRecipe) -> ViewRecipe:
    """The recipe without the colour operations that leave a gray image unchanged (saturation, hue, grayscale):
    the same distribution of views of Fashion-MNIST, with less work."""
    return dataclasses.replace(recipe, saturation=0.0, hue=0.0, grayscale_prob=0.0)


def with_global(change: Callable[[ViewRecipe], ViewRecipe]) -> Callable[[tuple[ViewRecipe, ...]], tuple]:
    """Apply `change` to the full-size views only (multi-crop's small crops keep their recipe)."""
    return lambda views: tuple(change(v) if v.relative_size == 1.0 else v for v in views)


VIEW_VARIANTS: dict[str, Callable[[tuple[ViewRecipe, ...]], tuple[ViewRecipe, ...]]] = {
    **{
        f"crop{low}": with_global(lambda v, low=low: dataclasses.replace(v, crop_scale=(low, v.crop_scale[1])))
        for low in (0.08, 0.2, 0.35)
    },
    "blur32px": lambda views: tuple(dataclasses.replace(v, blur_min_size=0) for v in views),  # where only from 96 px
    "jitter0.8": lambda views: tuple(dataclasses.replace(v, brightness=0.8, contrast=0.8) for v in views),
}


def model_options(prefix: str = "--model.init_args", **settings: object) -> tuple[str, ...]:
    """`train.py fit` options that set these model options: model_options(base_lr=0.2) gives
    ("--model.init_args.base_lr", "0.2")."""
    return tuple(item for name, value in settings.items() for item in (f"{prefix}.{name}", str(value)))


# per method: name -> options changed from its recipe (learning rate, weight decay, warmup, temperature or tau,
# and its own size: prototypes, queue, support set)
OPTION_VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "simclr": {
        "lr0.2": model_options(base_lr=0.2), "lr0.8": model_options(base_lr=0.8),
        "temp0.1": model_options(temperature=0.1), "temp0.5": model_options(temperature=0.5),
        "wd1e-4": model_options(weight_decay=1e-4), "warmup2": model_options(warmup_epochs=2),
    },
    "mocov2": {
        "lr0.15": model_options(base_lr=0.15), "lr0.6": model_options(base_lr=0.6),
        "temp0.1": model_options(temperature=0.1), "temp0.5": model_options(temperature=0.5),
        "wd5e-4": model_options(weight_decay=5e-4), "warmup2": model_options(warmup_epochs=2),
        "queue4096": model_options(queue_size=4096), "queue32768": model_options(queue_size=32768),
        "tau0.996": model_options(tau_base=0.996, tau_final=0.996),
    },
    "byol": {
        "lr0.5": model_options(base_lr=0.5), "lr2.0": model_options(base_lr=2.0),
        "wd1e-4": model_options(weight_decay=1e-4), "warmup2": model_options(warmup_epochs=2),
        "tau0.996": model_options(tau_base=0.996), "tau0.98": model_options(tau_base=0.98),
    },
    "swav": {
        "lr0.3": model_options(base_lr=0.3), "lr1.2": model_options(base_lr=1.2),
        "temp0.2": model_options(temperature=0.2), "wd1e-5": model_options(weight_decay=1e-5),
        "warmup2": model_options(warmup_epochs=2),
        "prototypes100": model_options(num_prototypes=100), "prototypes1000": model_options(num_prototypes=1000),
    },
    "nnclr": {
        "lr0.2": model_options(base_lr=0.2), "lr0.8": model_options(base_lr=0.8),
        "temp0.2": model_options(temperature=0.2), "wd1e-4": model_options(weight_decay=1e-4),
        "warmup2": model_options(warmup_epochs=2),
        "support8192": model_options("--model.init_args.neighbours", support_size=8192),
        "support32768": model_options("--model.init_args.neighbours", support_size=32768),
    },
}  # fmt: skip


BASE, BASE_REPEAT = "gray", "gray-s1"  # the grayscale recipe, and the same with seed 1 (the seed spread)


def tuning_chunks() -> list[Chunk]:
    """Per method: its grayscale recipe with seeds 0 and 1, then each variant with seed 0."""
    chunks = []
    holdout = ("--data.holdout", str(HOLDOUT))
    for method, option_variants in OPTION_VARIANTS.items():
        base = tuple(grayscale(v) for v in method_views(method))
        common = dict(stage="tune", method=method, epochs=TUNE_EPOCHS, configs=(f"configs/{method}.yaml",))
        chunks.append(Chunk(name=f"{method}-{BASE}", seed=0, views=base, options=holdout, **common))
        chunks.append(Chunk(name=f"{method}-{BASE_REPEAT}", seed=1, views=base, options=holdout, **common))
        common["seed"] = 0
        for label, change in VIEW_VARIANTS.items():
            views = change(base)
            if views != base:
                chunks.append(Chunk(name=f"{method}-{label}", views=views, options=holdout, **common))
        for label, options in option_variants.items():
            chunks.append(Chunk(name=f"{method}-{label}", views=base, options=holdout + options, **common))
    return chunks


# the table and the ablation ------------------------------------------------------------------------------------


def tuned_config(method: str) -> str:
    """The file holding the method's tuned Fashion-MNIST settings (MoCHi: MoCo v2's)."""
    return TUNED_CONFIG.format(method=TUNED_AS.get(method, method))


def tuned_configs(method: str) -> tuple[str, ...]:
    tuned = tuned_config(method)
    return (f"configs/{method}.yaml", tuned) if (REPO / tuned).is_file() else (f"configs/{method}.yaml",)


def table_chunks() -> list[Chunk]:
    mixing_start = model_options("--model.init_args.mixing", start_epoch=MIXING_START_EPOCH)
    return [
        Chunk(
            "table", f"{method}-s{seed}", method, seed, TABLE_EPOCHS, tuned_configs(method),
            mixing_start if method == "mochi" else (), evaluate=True,
        )
        for method in TABLE_METHODS
        for seed in SEEDS
    ]  # fmt: skip


def mixing_options(num_hard: int, num_mixed: int, num_query_mixed: int) -> tuple[str, ...]:
    return model_options(
        "--model.init_args.mixing",
        num_hard=num_hard,
        num_mixed=num_mixed,
        num_query_mixed=num_query_mixed,
        start_epoch=MIXING_START_EPOCH,
    )


MOCHI_512 = "mochi-512-1024-512"
SIMCLR_MIXING = "simclr-mix-" + "-".join(map(str, IN_BATCH_MIXING))


def ablation_chunks() -> list[Chunk]:
    variants = (
        (MOCHI_512, "mochi", mixing_options(512, 1024, 512)),
        (SIMCLR_MIXING, "simclr", mixing_options(*IN_BATCH_MIXING)),
    )
    return [
        Chunk("ablation", f"{name}-s{seed}", method, seed, TABLE_EPOCHS, tuned_configs(method), options, evaluate=True)
        for name, method, options in variants
        for seed in SEEDS
    ]


STAGES = {"tune": tuning_chunks, "table": table_chunks, "ablation": ablation_chunks}


def plan(stages: list[str], only: list[str] | None = None) -> list[Chunk]:
    """The stages' chunks in order; with `only`, those whose name matches one of its patterns ('simclr-*')."""
    chunks = [chunk for stage in stages for chunk in STAGES[stage]()]
    return [chunk for chunk in chunks if not only or any(fnmatch.fnmatchcase(chunk.name, rule) for rule in only)]


# running -------------------------------------------------------------------------------------------------------

SMOKE = (  # toy size on a CPU: checks that every chunk's commands run, measures nothing
    "--data.max_samples", "512", "--data.batch_size", "64", "--model.init_args.backbone", "test_resnet",
    "--model.init_args.small_image_stem", "false", "--trainer.accelerator", "cpu", "--trainer.log_every_n_steps", "2",
)  # fmt: skip
SMOKE_EPOCHS = 2
SMOKE_VALUES = {"--data.holdout": "128", "--model.init_args.mixing.start_epoch": "1"}  # sized to the toy run


def train_options(chunk: Chunk, run_root: Path, smoke: bool) -> list[str]:
    """What the chunk trains, as `train.py fit` options: the command a user would type to repeat it."""
    epochs = SMOKE_EPOCHS if smoke else chunk.epochs
    configs = [item for config in chunk.configs for item in ("--config", config)]
    if chunk.views is not None:
        configs += ["--config", str(run_root / "views.yaml")]
    options = list(chunk.options)
    for option, value in SMOKE_VALUES.items() if smoke else ():
        if option in options:
            options[options.index(option) + 1] = value
    return [*configs, "--seed_everything", str(chunk.seed), "--trainer.max_epochs", str(epochs), *options]


def fit_command(chunk: Chunk, run_root: Path, data_root: str | None, smoke: bool) -> list[str]:
    """`train.py fit` for the chunk in its run root (without the device call's time limit and --ckpt_path)."""
    epochs = SMOKE_EPOCHS if smoke else chunk.epochs
    command = [
        sys.executable, "train.py", "fit", *train_options(chunk, run_root, smoke), "--wandb", "false",
        "--trainer.check_val_every_n_epoch", str(max(1, epochs // 10)), "--trainer.default_root_dir", str(run_root),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    if data_root:
        command += ["--data.root", data_root]
    return command + list(SMOKE if smoke else ())


def digest(chunk: Chunk) -> str:
    """What decides a chunk's result: its plan entry and the text of the config files it reads."""
    configs = {config: (REPO / config).read_text() for config in chunk.configs}
    text = json.dumps(
        [dataclasses.asdict(chunk) | {"views": chunk.view_values()}, configs], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def result_of(chunk: Chunk, results: Path) -> dict | None:
    """The chunk's saved result if it is current (same digest), else None."""
    path = results / chunk.result_file
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("digest") == digest(chunk) else None


def run_folders(run_root: Path) -> list[Path]:
    """The chunk's run folders (one per process that trained it), oldest first."""
    folders = [path.parent for path in run_root.glob(f"*/version_*/{METRICS_FILE}")]
    return sorted(folders, key=lambda folder: int(folder.name.removeprefix("version_")))


def last_checkpoint(run_root: Path) -> Path | None:
    checkpoints = [folder / CHECKPOINT_DIR / "last.ckpt" for folder in run_folders(run_root)]
    existing = [path for path in checkpoints if path.is_file()]
    return existing[-1] if existing else None


def trained_epochs(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1


def run_root_of(chunk: Chunk, runs: Path) -> Path:
    """Where the chunk trains: named by its digest too, so that a changed plan never resumes an old checkpoint."""
    return runs / chunk.stage / f"{chunk.name}-{digest(chunk)}"


class ChunkFailed(Exception):
    """A command of a chunk exited with an error; its log holds the details."""


def call(command: list[str], log: Path) -> None:
    """Run `command` in the repo with its output appended to `log` (runs side by side would interleave theirs);
    on failure, show the log's end and raise ChunkFailed."""
    with open(log, "a") as output:
        returncode = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        raise ChunkFailed("\n".join([*tail, f"{' '.join(command[1:3])} exited with {returncode}; its log: {log}"]))


def advance(
    chunk: Chunk, args: argparse.Namespace, seconds_left: float, side_by_side: Callable[[], int] = lambda: 1
) -> dict | None:
    """Train the chunk for at most `seconds_left` (resuming its last checkpoint), evaluate it once trained, and
    return its result; None while it still has epochs to train. `side_by_side()`: the most runs that shared the
    device with it (itself included)."""
    run_root = run_root_of(chunk, args.runs)
    run_root.mkdir(parents=True, exist_ok=True)
    if chunk.views is not None:
        (run_root / "views.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"views": chunk.view_values()}}}))
    progress_file = run_root / "progress.json"
    progress = json.loads(progress_file.read_text()) if progress_file.is_file() else {"wall_s": 0.0, "calls": 0}
    epochs = SMOKE_EPOCHS if args.smoke else chunk.epochs
    command = fit_command(chunk, run_root, args.data_root, args.smoke)
    checkpoint = last_checkpoint(run_root)
    if trained_epochs(checkpoint) < epochs:
        reserve = START_S + (EVAL_S if chunk.evaluate else 0)
        limit = ["--stop_after_minutes", f"{max(seconds_left - reserve, 60) / 60:.2f}"]
        resume = ["--ckpt_path", str(checkpoint)] if checkpoint is not None else []
        start = time.perf_counter()
        call(command + limit + resume, run_root / "train.log")
        progress = {
            "wall_s": progress["wall_s"] + time.perf_counter() - start,
            "calls": progress["calls"] + 1,
            "concurrent_runs": max(progress.get("concurrent_runs", 1), side_by_side()),
        }
        progress_file.write_text(json.dumps(progress))
        checkpoint = last_checkpoint(run_root)
        if trained_epochs(checkpoint) < epochs:
            return None
    evaluation = None
    if chunk.evaluate:
        if not results_path(checkpoint).is_file():
            start = time.perf_counter()
            probe = ["--linear.epochs", "2"] if args.smoke else []
            call(
                [sys.executable, "train.py", "eval", "--config", "configs/eval/linear.yaml", "--ckpt_path",
                 str(checkpoint), "--wandb", "false", "--map_points", "0", *probe],
                run_root / "train.log",
            )  # fmt: skip
            progress["wall_s"] += time.perf_counter() - start
            progress_file.write_text(json.dumps(progress))
        evaluation = json.loads(results_path(checkpoint).read_text())
    return summarize(chunk, run_root, train_options(chunk, run_root, args.smoke), progress, evaluation)


def epoch_means(points: Iterable[tuple[int, float]]) -> list[list]:
    """[[epoch, the mean of its values], ...] in epoch order, from (epoch, value) points."""
    by_epoch: dict[int, list[float]] = {}
    for epoch, value in points:
        by_epoch.setdefault(epoch, []).append(value)
    return [[epoch, statistics.fmean(values)] for epoch, values in sorted(by_epoch.items())]


def summarize(chunk: Chunk, run_root: Path, options: list[str], progress: dict, evaluation: dict | None) -> dict:
    """The chunk's result: offline and online accuracies, speed and cost, and the curves the plots need."""
    rows = []
    for folder in run_folders(run_root):
        with open(folder / METRICS_FILE) as f:
            rows += list(csv.DictReader(f))
    trained = Run.from_rows(chunk.name, chunk.method, rows, {}, evaluation)
    run, history = trained.summary(), trained.history
    hardness = {}
    for metric in HARDNESS:
        means = epoch_means((int(row["epoch"]), float(row[metric])) for row in rows if row.get(metric))
        if means:
            hardness[metric] = means
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        **dataclasses.asdict(chunk),
        "views": chunk.view_values(),
        "digest": digest(chunk),
        "fit_command": "python train.py fit " + " ".join(options),
        "scored_on": "holdout" if "--data.holdout" in chunk.options else "test",
        **{key: run[key] for key in ("knn_top1", "linear_top1", "online_knn_top1", "online_linear_top1")},
        "img_per_s": round(run["img_per_s"], 1) if run["img_per_s"] else None,
        "device_hours": run["device_hours"],
        "wall_s": round(progress["wall_s"], 1),
        "device_calls": progress["calls"],
        "concurrent_runs": progress.get("concurrent_runs", 1),  # > 1: img/s and wall time shared the device
        "history": history,
        "hardness": hardness,
        **environment(device),
    }


class Schedule:
    """Which chunks a device call starts: in plan order, skipping those done, while its time lasts. Worker threads
    take chunks from it, so that tuning runs share the device side by side."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = time.monotonic() + 60 * args.budget_minutes
        self.started = 0
        self.out_of_time = False
        self.done: list[dict] = []
        self.running: dict[Path, int] = {}  # result file of each running chunk -> the most runs seen at once
        self.lock = threading.Lock()

    def take(self, pending: list[Chunk], concurrent: int) -> tuple[Chunk, float] | None:
        """The next chunk to advance and the seconds it may use, or None when this call starts no more."""
        args = self.args
        with self.lock:
            while pending and not self.out_of_time:
                chunk = pending.pop(0)
                if result_of(chunk, args.results) is not None:
                    continue
                if not (chunk.tuned or args.smoke):
                    print(f"{chunk.stage}/{chunk.name}: skipped until {tuned_config(chunk.method)} exists")
                    continue
                seconds_left = self.deadline - time.monotonic()
                partial = last_checkpoint(run_root_of(chunk, args.runs)) is not None
                # side by side, each run may take up to `concurrent` times as long as alone
                fits = chunk.estimate_s() * concurrent <= seconds_left
                if not args.smoke and (seconds_left < START_S + 120 or (self.started and not (partial or fits))):
                    self.out_of_time = True  # for a useful part of it: the next call starts it, and no worker
                    return None  # starts a later chunk before it
                self.started += 1
                self.running[chunk.result_file] = 0
                for running in self.running:
                    self.running[running] = max(self.running[running], len(self.running))
                return chunk, seconds_left
            return None

    def side_by_side(self, chunk: Chunk) -> int:
        """The most runs that have shared the device at once since the chunk started, itself included."""
        with self.lock:
            return self.running[chunk.result_file]

    def finish(self, chunk: Chunk) -> None:
        with self.lock:
            del self.running[chunk.result_file]

    def record(self, chunk: Chunk, result: dict) -> None:
        """Save the chunk's result, and rewrite OUT_FILE with every result of this call (a device call brings
        back few files, and what is under $OUT when a call runs out of time)."""
        path = self.args.results / chunk.result_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        with self.lock:
            self.done.append(result)
            if self.args.out is not None:
                self.args.out.mkdir(parents=True, exist_ok=True)
                partial = self.args.out / (OUT_FILE + ".partial")
                partial.write_text(json.dumps(self.done, indent=1) + "\n")
                partial.replace(self.args.out / OUT_FILE)


def work(schedule: Schedule, pending: list[Chunk], concurrent: int) -> None:
    """One worker: advance chunks until the schedule has none left or a run continues in the next call."""
    args = schedule.args
    while (taken := schedule.take(pending, concurrent)) is not None:
        chunk, seconds_left = taken
        try:
            result = advance(chunk, args, seconds_left, functools.partial(schedule.side_by_side, chunk))
        finally:
            schedule.finish(chunk)
        if result is None:
            print(f"{chunk.stage}/{chunk.name}: continues in the next call (its checkpoint is in {args.runs})")
            return
        schedule.record(chunk, result)
        print(f"{chunk.stage}/{chunk.name}: done, {describe(result)}")


def run(args: argparse.Namespace) -> None:
    """Advance the chunks of the chosen stages in plan order; tuning runs `--parallel` at a time (their speed is
    not reported), the table and ablation runs one at a time (their img/s and wall time are)."""
    schedule = Schedule(args)
    for stage in args.stages:
        pending = plan([stage], args.only)
        concurrent = args.parallel if stage == "tune" else 1
        with ThreadPoolExecutor(concurrent) as pool:
            workers = [pool.submit(work, schedule, pending, concurrent) for _ in range(concurrent)]
        try:
            for worker in workers:
                worker.result()
        except ChunkFailed as error:
            sys.exit(str(error))


def describe(result: dict) -> str:
    scores = [
        f"{label} {result[key]:.2%}"
        for label, key in (("kNN", "knn_top1"), ("linear", "linear_top1"), ("online kNN", "online_knn_top1"))
        if result.get(key) is not None
    ]
    shared = f", {result['concurrent_runs']} runs side by side" if result.get("concurrent_runs", 1) > 1 else ""
    return f"{', '.join(scores)} on {result['scored_on']}, {result['wall_s']:.0f} s{shared}"


# collecting, status, assembling --------------------------------------------------------------------------------


def collect(args: argparse.Namespace) -> None:
    """Save the results a device call brought back (its OUT_FILE) in the results folder."""
    brought = args.folder / OUT_FILE
    if not brought.is_file():
        sys.exit(f"{brought} does not exist: pass the folder a device call's files came back in (files_at)")
    for result in json.loads(brought.read_text()):
        destination = args.results / result["stage"] / f"{result['name']}.json"
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{destination}: {describe(result)}")


def status(args: argparse.Namespace) -> None:
    left = 0.0
    for chunk in plan(args.stages, args.only):
        result = result_of(chunk, args.results)
        stale = result is None and (args.results / chunk.result_file).is_file()
        if result is None:
            left += chunk.estimate_s()
        state = describe(result) if result else ("stale: its command or configs changed" if stale else "to run")
        if result is None and not chunk.tuned:
            state += f" (after tuning: {tuned_config(chunk.method)})"
        print(f"{chunk.stage:9} {chunk.name:28} {state}")
    print(f"left: about {left / 60:.0f} device minutes ({left / 60 / 25:.1f} sessions of 25 usable minutes)")


LABELS = {"simclr": "SimCLR", "mocov2": "MoCo v2", "mochi": "MoCHi (1024, 1024, 128)", "byol": "BYOL",
          "swav": "SwAV", "nnclr": "NNCLR"}  # fmt: skip


def percent(values: list[float | None]) -> str:
    """'mean (seed 0 / seed 1)', or what is missing."""
    measured = [value for value in values if value is not None]
    if not measured:
        return "not run yet"
    seeds = " / ".join("-" if value is None else f"{value:.2%}" for value in values)
    return f"{statistics.fmean(measured):.2%} ({seeds})" if len(values) > 1 else seeds


def row_cells(results: list[dict | None]) -> list[str]:
    done = [result for result in results if result is not None]
    speed = [result["img_per_s"] for result in done if result.get("img_per_s")]
    return [
        percent([result and result["knn_top1"] for result in results]),
        percent([result and result["linear_top1"] for result in results]),
        f"{statistics.fmean(speed):,.0f}" if speed else "",
        f"{statistics.fmean(result['wall_s'] for result in done) / 60:.1f} min" if done else "",
        f"{sum(result['device_hours'] or 0 for result in done):.2f}" if done else "",
        ", ".join(sorted({f"{result['device']}, torch {result['torch']}, {result['date']}" for result in done})),
    ]


def last_hardness(results: list[dict | None], metric: str) -> str:
    values = [result["hardness"][metric][-1][1] for result in results if result and metric in result["hardness"]]
    return f"{statistics.fmean(values):.3f}" if values else "-"


HARDNESS_LABELS = {
    Metric.HARD_NEGATIVE_SIM: "hardest real negative: similarity",
    Metric.SYNTHETIC_NEGATIVE_SIM: "synthetic negatives: mean similarity",
    Metric.SYNTHETIC_HARDER_FRACTION: "synthetic harder than the hardest real",
}


def plot_hardness(rows: list[tuple[str, list[dict | None]]], out: Path) -> None:
    """hardness.png: each hardness metric against the epoch, one line per row (the mean of its seeds' epoch
    means); rows without mixing have only the hardest real negative."""
    figure, panels = plt.subplots(1, len(HARDNESS), figsize=(5 * len(HARDNESS), 4))
    mixing = any(result and Metric.SYNTHETIC_NEGATIVE_SIM in result["hardness"] for _, runs in rows for result in runs)
    for metric, axes in zip(HARDNESS, panels, strict=True):
        for label, results in rows:
            means = epoch_means(point for result in results if result for point in result["hardness"].get(metric, []))
            if means:
                axes.plot([epoch + 1 for epoch, _ in means], [mean for _, mean in means], label=label)
        axes.set(xlabel="epoch", title=HARDNESS_LABELS[metric])
        axes.grid(alpha=0.3)
        if axes.lines:
            if mixing:
                axes.axvline(MIXING_START_EPOCH + 1, color="gray", linestyle=":", label="mixing starts")
            axes.legend(fontsize=8)
        else:
            axes.text(0.5, 0.5, "no run has logged it yet", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    figure.savefig(out / "hardness.png", dpi=120)
    plt.close(figure)


def queue_note() -> list[str]:
    """A line under the mixing table where tuning changed MoCo v2's queue, which MoCHi shares: MoCHi's default
    (N, s, s') was the paper's choice for its default queue (Table 2)."""
    path = REPO / tuned_config("mocov2")
    queue = yaml.safe_load(path.read_text())["model"]["init_args"].get("queue_size") if path.is_file() else None
    recipe_queue, num_hard = method_default("mochi", "queue_size"), method_default("mochi", "mixing").num_hard
    if queue is None or queue == recipe_queue:
        return []
    return [
        "",
        f"MoCo v2 and MoCHi ran with their tuned queue of {queue:,} keys, not MoCHi's {recipe_queue:,}: "
        f"N = {num_hard} is {num_hard / queue:.0%} of it (a {num_hard / recipe_queue:.0%} share in the paper).",
    ]


def assemble(args: argparse.Namespace) -> None:
    """The methods table and the plots in the README, every table and run command in docs/benchmarks.md (each
    between its markers), and beside the results knn.png (the report's plot of the kNN monitor) and hardness.png
    (the mixing ablation's hardness metrics over training)."""
    results = {chunk.name: result_of(chunk, args.results) for chunk in plan(["table", "ablation"])}
    lines = [
        "| method | kNN top-1, mean (seed 0 / 1) | linear top-1, mean (seed 0 / 1) | img/s | wall time per run "
        "| GPU-hours, both seeds | measured on |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for method in TABLE_METHODS:
        cells = row_cells([results[f"{method}-s{seed}"] for seed in SEEDS])
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| hard negative mixing | kNN top-1, mean (seed 0 / 1) | linear top-1, mean (seed 0 / 1) "
        "| hardest negative sim | synthetic negative sim | synthetic harder than hardest |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ablation = (
        ("MoCo v2", "mocov2"),
        ("MoCHi (1024, 1024, 128)", "mochi"),
        ("MoCHi (512, 1024, 512)", MOCHI_512),
        ("SimCLR", "simclr"),
        (f"SimCLR + in-batch mixing {IN_BATCH_MIXING}", SIMCLR_MIXING),
    )
    ablation_runs = [(label, [results[f"{name}-s{seed}"] for seed in SEEDS]) for label, name in ablation]
    for label, runs in ablation_runs:
        cells = row_cells(runs)[:2] + [last_hardness(runs, metric) for metric in HARDNESS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += queue_note()
    commands = [f"- {name}: `{result['fit_command']}`" for name, result in results.items() if result]
    lines += ["", "Each run: `python train.py fit <options below> --data.root <fashion-mnist>`, then"]
    lines += ["`python train.py eval --config configs/eval/linear.yaml --ckpt_path <run>/checkpoints/last.ckpt`.", ""]
    lines += commands or ["- no run yet"]
    done = [
        Run(name, result["method"], [], {}, None, [tuple(point) for point in result["history"]])
        for name, result in results.items()
        if result is not None
    ]
    readme_lines = lines[: 2 + len(TABLE_METHODS)]
    if done:
        plot_knn(done, args.results)
        plot_hardness(ablation_runs, args.results)
        figures = os.path.relpath(args.results, README.parent)  # links from the README
        readme_lines += ["", f"![kNN top-1 during training]({figures}/knn.png)"]
        readme_lines += ["", f"![Hardness of the negatives during training]({figures}/hardness.png)"]
    replace_section(README, readme_lines)
    replace_section(BENCHMARKS_PAGE, lines)
    print("\n".join(lines))


def replace_section(path: Path, lines: list[str]) -> None:
    """Replace what lies between the results-table markers of `path` with `lines`."""
    text = path.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    path.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])


def at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "run"):
        sub = commands.add_parser(name)
        sub.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
        sub.add_argument("--only", nargs="+", metavar="PATTERN", help="chunks whose name matches ('simclr-*')")
    run_parser = commands.choices["run"]
    run_parser.add_argument("--budget-minutes", type=float, default=9.0, help="device time this call may use")
    run_parser.add_argument(
        "--parallel", type=at_least_one, default=1, help="tuning runs side by side (table runs: one at a time)"
    )
    run_parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the usual search)")
    run_parser.add_argument("--out", type=Path, default=None, help=f"also write this call's results to OUT/{OUT_FILE}")
    run_parser.add_argument("--smoke", action="store_true", help="toy size on the CPU, results to a temporary folder")
    commands.add_parser("collect").add_argument("folder", type=Path, help="the files a device call brought back")
    commands.add_parser("assemble")
    args = parser.parse_args()
    args.runs = RUNS
    if getattr(args, "only", None) and not plan(args.stages, args.only):
        sys.exit(f"no chunk of the stages {args.stages} matches {args.only}: python bench/table.py status lists them")
    if args.command == "run" and args.smoke:
        with tempfile.TemporaryDirectory() as scratch:
            args.results, args.runs = Path(scratch) / "results", Path(scratch) / "runs"
            run(args)
        return
    {"status": status, "run": run, "collect": collect, "assemble": assemble}[args.command](args)


if __name__ == "__main__":
    main()
