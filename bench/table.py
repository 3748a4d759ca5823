"""The results table: every registered method trained on full Fashion-MNIST at one number of epochs, side by side
on one device, each scored by `train.py eval` (kNN k=200, T=0.1, and the linear probe, on the test set); and the
README's and docs/benchmarks.md's tables assembled from what a GPU session brought back.

bench/gpu_evidence.py runs it as its last stage, sized to the time its checks left: `plan` picks the epochs (at
least MIN_EPOCHS, the same for every method) and which methods fit, in TABLE_METHODS order; the rest are recorded
as not run. Each run is `train.py fit --config <method> --config data/fashion_mnist` (the method's recipe as its
config says, ResNet-18 with the small-image stem, batch 512) then `train.py eval --config eval/linear`, in its own
process: a user repeats it with the command its result records.

    python bench/table.py collect <files_at>   # here: a GPU session's table.json and checks.json, into bench/results
    python bench/table.py assemble             # the tables of README.md and docs/benchmarks.md from bench/results/table
"""

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import side_by_side  # noqa: E402

from selfsup.atomic import write_text  # noqa: E402
from selfsup.cli import main as selfsup  # noqa: E402
from selfsup.methods import METHODS  # noqa: E402
from selfsup.report import Run  # noqa: E402
from selfsup.runs import METRICS_FILE, Metric, last_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "table"  # seed<N>.json: the table.json of a session, per seed
CHECKS = REPO / "bench" / "results" / "checks"  # seed<N>.json: the checks.json of that session
README = REPO / "README.md"
BENCHMARKS_PAGE = REPO / "docs" / "benchmarks.md"
TABLE_START, TABLE_END = "<!-- results-table:start -->", "<!-- results-table:end -->"
TABLE_FILE, CHECKS_FILE = "table.json", "checks.json"  # what a session writes to its --out folder

TABLE_METHODS = tuple(METHODS)  # the order runs start in, and are left out from the end of when time is short
LABELS = {"mocov2": "MoCo v2", "mocov3": "MoCo v3", "mochi": "MoCHi (1024, 1024, 128)", "barlowtwins": "Barlow Twins",
          "wmse": "W-MSE", "alignuniform": "Alignment + uniformity"}  # fmt: skip
SEEDS = (0, 1)  # the table's columns: seed 0 the first sessions, seed 1 the next
MIN_EPOCHS, MAX_EPOCHS = 30, 100  # every method at the same number, at least 30; 100 is the recipes' default
TRAIN_IMAGES = 60_000  # Fashion-MNIST's training set
MIN_GAIN = 1.05  # more runs side by side are tried while the total img/s grows by at least 5%
FIT_START_UP_S = 15  # a run's start-up before Lightning's fit starts (several runs starting at once)
PLAN_MARGIN = 1.25  # the plan's estimate times this must fit: staggered starts, speeds that vary, evaluation
NOT_MEASURED = "not measured yet"


def label(method: str) -> str:
    return LABELS.get(method, METHODS[method].__name__)


@dataclasses.dataclass(frozen=True)
class TableRun:
    """One method's run: `train.py fit` for `epochs` with `seed`, under `root`."""

    method: str
    seed: int
    epochs: int
    root: Path

    def fit_options(self) -> list[str]:
        """What it trains, as `train.py fit` options (without those of where and how it runs)."""
        return ["--config", self.method, "--config", "data/fashion_mnist", "--seed_everything", str(self.seed),
                "--trainer.max_epochs", str(self.epochs)]  # fmt: skip

    def fit_command(self, options: Sequence[str]) -> list[str]:
        """`train.py fit`'s arguments: validated once, at the end; no progress bar, no wandb (none on the GPU)."""
        return ["fit", *self.fit_options(), "--wandb", "false", "--trainer.default_root_dir", str(self.root),
                "--trainer.check_val_every_n_epoch", str(self.epochs), "--trainer.enable_progress_bar", "false",
                *options]  # fmt: skip

    def run_folder(self) -> Path:
        """The run folder `train.py fit` made (the first under its own root)."""
        return next((self.root / self.method).glob("version_*"))


class RunFailed(Exception):
    """`train.py` exited with an error; the message ends with its log's last lines."""


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr (file descriptors included: Lightning's and the workers') appended to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def call(arguments: list[str], log: Path) -> None:
    """`train.py <arguments>` in this process, its output to `log`; a failure raises RunFailed with the log's end."""
    try:
        with output_to(log):
            selfsup(arguments)
    except SystemExit as error:
        if error.code not in (None, 0):
            tail = " | ".join(log.read_text().strip().splitlines()[-3:])
            raise RunFailed(f"train.py {arguments[0]} exited ({error.code}): {tail}") from None


def trained_epochs(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1


def train_and_score(run: TableRun, options: Sequence[str], eval_options: Sequence[str], stop_at: float) -> dict:
    """Train `run`, stopping at an epoch end before `stop_at` (time.time()), then score it with `train.py eval`:
    its result. A run stopped early is recorded as such, unscored."""
    run.root.mkdir(parents=True, exist_ok=True)
    log = run.root / "train.log"
    start = time.perf_counter()
    # --stop_after_minutes counts from the fit's start, after its start-up (arguments, model, data on the device)
    minutes = max(stop_at - time.time() - FIT_START_UP_S, 1.0) / 60
    call([*run.fit_command(options), "--stop_after_minutes", f"{minutes:.3f}"], log)
    fit_s = time.perf_counter() - start
    checkpoint = last_checkpoint(run.run_folder())
    epochs = trained_epochs(checkpoint)
    command = "python train.py fit " + " ".join(run.fit_options())
    result = {"method": run.method, "seed": run.seed, "epochs": run.epochs, "epochs_trained": epochs,
              "fit_command": command, "fit_s": round(fit_s, 1)}  # fmt: skip
    if epochs < run.epochs:
        return result | {"finished": False}
    evaluation = ["eval", "--config", "eval/linear", "--ckpt_path", str(checkpoint), "--wandb", "false"]
    start = time.perf_counter()
    call([*evaluation, "--map_points", "0", *eval_options], log)
    summary = Run.load(run.run_folder()).summary()
    return result | {
        "finished": True,
        "eval_command": "python train.py eval --config eval/linear --ckpt_path <run>/checkpoints/last.ckpt",
        "eval_s": round(time.perf_counter() - start, 1),
        "knn_top1": summary["knn_top1"],
        "linear_top1": summary["linear_top1"],
        "online_knn_top1": summary["online_knn_top1"],
        "shared_img_per_s": summary["img_per_s"],  # while other runs shared the device: not the method's speed
    }


# how many runs side by side -----------------------------------------------------------------------------------


def fit_throughput(run: TableRun, options: Sequence[str]) -> float:
    """The median logged img/s of a short `train.py fit` of `run` (`options` end it after a few steps)."""
    run.root.mkdir(parents=True, exist_ok=True)
    call(run.fit_command(options), run.root / "train.log")
    with open(run.run_folder() / METRICS_FILE) as f:
        rates = [float(row[Metric.IMAGES_PER_SECOND]) for row in csv.DictReader(f) if row.get(Metric.IMAGES_PER_SECOND)]
    return statistics.median(rates[1:] or rates)  # the first interval holds the warm-up


def probe_concurrency(
    counts: Sequence[int], root: Path, options: Sequence[str], steps: int, deadline: float
) -> dict[int, float]:
    """{runs side by side: their total img/s} of SimCLR runs of `steps` steps, for `counts` in order until one
    gains less than MIN_GAIN over the best so far or would end after `deadline`."""
    probe = [*options, "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
             "--trainer.log_every_n_steps", str(max(1, steps // 5)), "--trainer.enable_checkpointing", "false",
             "--export_backbone", "false"]  # fmt: skip
    totals: dict[int, float] = {}
    for count in counts:
        rates: list[float] = []
        tasks = [(TableRun("simclr", 0, 1, root / f"x{count}" / str(i)), probe) for i in range(count)]
        side_by_side(fit_throughput, tasks, count, deadline, lambda _, ok, rate, kept=rates: ok and kept.append(rate))
        if len(rates) < count:
            break
        totals[count] = round(sum(rates), 1)
        if len(totals) > 1 and totals[count] < MIN_GAIN * max(totals[c] for c in totals if c != count):
            break
    return totals


# what fits ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """The table a session's time allows: `methods` at `epochs`, `concurrent` at a time; `left_out` not run."""

    epochs: int
    concurrent: int
    methods: tuple[str, ...]
    left_out: tuple[str, ...]
    estimate_s: float


def plan(
    speeds: dict[str, float], totals: dict[int, float], seconds: float, overhead_s: float,
    min_epochs: int = MIN_EPOCHS, max_epochs: int = MAX_EPOCHS, methods: tuple[str, ...] = TABLE_METHODS,
    epochs: int | None = None, images: int = TRAIN_IMAGES,
) -> Plan:  # fmt: skip
    """The most of `methods` (from the first) that train `min_epochs` each in `seconds`, then the most epochs (up to
    `max_epochs`) that all of them fit, or `epochs` if given; at the number of runs side by side that fits the most.
    `speeds`: each method's img/s alone (a method not measured counts as the slowest measured); `totals`: total
    img/s of runs side by side, by count; `overhead_s`: a run's start-up and evaluation. The runs go in waves of
    `concurrent`, each run at its speed alone times its measured share with its wave's size of runs beside it (at
    the nearest count measured at or above it), and the estimate carries a margin of PLAN_MARGIN."""
    if epochs is not None:
        min_epochs = max_epochs = epochs
    slowest = min(speeds.values()) if speeds else None
    if slowest is None:
        return Plan(min_epochs, 1, (), methods, 0.0)

    def share(wave: int) -> float:
        """One run's fraction of its speed alone with `wave` runs side by side."""
        if 1 not in totals:
            return 1.0
        count = min((c for c in totals if c >= wave), default=max(totals))
        return totals[count] / (count * totals[1])

    def need(chosen: Sequence[str], epochs: int, concurrent: int) -> float:
        waves = [chosen[i : i + concurrent] for i in range(0, len(chosen), concurrent)]
        return PLAN_MARGIN * sum(
            max(images * epochs / (speeds.get(m, slowest) * share(len(wave))) for m in wave) + overhead_s
            for wave in waves
        )

    def fitting(concurrent: int) -> int:
        return next((n for n in range(len(methods), 0, -1) if need(methods[:n], min_epochs, concurrent) <= seconds), 0)

    counts = sorted(totals) if 1 in totals else [1]
    concurrent = max(counts, key=lambda c: (fitting(c), -need(methods[: fitting(c)], min_epochs, c)))
    count = fitting(concurrent)
    chosen, epochs = methods[:count], min_epochs
    while count == len(methods) and epochs < max_epochs and need(chosen, epochs + 1, concurrent) <= seconds:
        epochs += 1
    return Plan(
        epochs, min(concurrent, max(1, count)), chosen, methods[count:], round(need(chosen, epochs, concurrent))
    )


def run_table(
    chosen: Plan, seed: int, root: Path, options: Sequence[str], eval_options: Sequence[str], deadline: float,
    eval_reserve_s: float, save: Callable[[dict[str, dict]], None],
) -> dict[str, dict]:  # fmt: skip
    """Every planned run side by side; `save(results so far)` after each. A run that cannot finish by `deadline`
    (time.monotonic) less `eval_reserve_s` for its evaluation stops at an epoch end and is recorded unfinished."""
    results: dict[str, dict] = {}
    stop_at = time.time() + deadline - time.monotonic() - eval_reserve_s  # the same moment, for the runs' processes

    def finished(index: int, ok: bool, outcome: object) -> None:
        method = chosen.methods[index]
        results[method] = outcome if ok else {"method": method, "seed": seed, "finished": False, "error": outcome}
        save(results)

    tasks = [(TableRun(m, seed, chosen.epochs, root / m), options, eval_options, stop_at) for m in chosen.methods]
    side_by_side(train_and_score, tasks, chosen.concurrent, deadline, finished)
    return results


# bringing results back, and the tables ---------------------------------------------------------------------------


def collect(folder: Path, results: Path = RESULTS, checks: Path = CHECKS) -> None:
    """Copy a session's table.json and checks.json (the files of its --out folder) into bench/results, named by
    seed and session: sessions add up, none replaces another. A session cut short before its table brings back its
    checks alone."""
    files = [(folder / TABLE_FILE, results), (folder / CHECKS_FILE, checks)]
    present = [(source, into) for source, into in files if source.is_file()]
    if not present:
        sys.exit(f"error: {folder} holds neither {TABLE_FILE} nor {CHECKS_FILE}: pass the folder a GPU session's "
                 "files came back in")  # fmt: skip
    described = json.loads(present[0][0].read_text())
    name = f"seed{described['seed']}_{described['session']}.json"
    for source, into in present:
        destination = into / name
        if destination.exists():
            sys.exit(f"error: {destination} exists: this session was collected already")
        destination.parent.mkdir(parents=True, exist_ok=True)
        write_text(destination, source.read_text())
        print(f"{source} -> {destination}")


def finished_runs(tables: list[dict]) -> dict[int, dict[str, tuple[dict, dict]]]:
    """seed -> method -> (its finished run, the session's table): of several sessions, the latest's."""
    runs: dict[int, dict[str, tuple[dict, dict]]] = {}
    for table in sorted(tables, key=lambda table: table["session"]):
        for method, run in table.get("runs", {}).items():
            if run.get("finished"):
                runs.setdefault(table["seed"], {})[method] = run, table
    return runs


def percent(values: list[float | None], seeds: list[int]) -> str:
    """'mean (seed 0 / seed 1)' over the seeds measured, the value of the one seed measured, or what is missing."""
    measured = [(value, seed) for value, seed in zip(values, seeds, strict=True) if value is not None]
    if not measured:
        return NOT_MEASURED
    if len(measured) == 1:
        return f"{measured[0][0]:.2%} (seed {measured[0][1]} only)"
    each = " / ".join("-" if value is None else f"{value:.2%}" for value in values)
    return f"{statistics.fmean(value for value, _ in measured):.2%} ({each})"


def environment(table: dict) -> str:
    """Where and when a session measured: 'NVIDIA H200, torch 2.11.0, 2026-12-04'."""
    return f"{table['device']}, torch {table['torch']}, {table['date']}"


def table_lines(tables: list[dict]) -> list[str]:
    """The methods table: a row for every registered method, from the sessions' table.json files."""
    runs = finished_runs(tables)
    seeds = sorted(set(runs) | set(SEEDS))
    header = " / ".join(str(seed) for seed in seeds)
    lines = [
        f"| method | kNN top-1 (seed {header}) | linear top-1 (seed {header}) | epochs | img/s alone | measured on |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for method in TABLE_METHODS:
        done = [runs.get(seed, {}).get(method) for seed in seeds]
        measured = [pair for pair in done if pair]
        speeds = [table["speeds"][method] for _, table in measured if table.get("speeds", {}).get(method)]
        cells = [
            percent([pair and pair[0]["knn_top1"] for pair in done], seeds),
            percent([pair and pair[0]["linear_top1"] for pair in done], seeds),
            ", ".join(sorted({str(run["epochs"]) for run, _ in measured})),
            f"{statistics.fmean(speeds):,.0f}" if speeds else "",
            "; ".join(sorted({environment(table) for _, table in measured})),
        ]
        lines.append(f"| {label(method)} | " + " | ".join(cells) + " |")
    return lines


def assemble(results: Path = RESULTS, readme: Path = README, page: Path = BENCHMARKS_PAGE) -> None:
    """Rewrite the methods table between the markers of README.md and docs/benchmarks.md (which also lists every
    measured run's command) from the sessions' results."""
    tables = [json.loads(path.read_text()) for path in sorted(results.glob("seed*.json"))]
    lines = table_lines(tables)
    commands = [
        f"- {label(method)}, seed {seed}: `{run['fit_command']}`"
        for seed, by_method in sorted(finished_runs(tables).items())
        for method, (run, _) in by_method.items()
    ]
    page_lines = [*lines, "", "Each run: `python train.py fit <options below> --data.root <fashion-mnist>`, then",
                  "`python train.py eval --config eval/linear --ckpt_path <run>/checkpoints/last.ckpt`.", "",
                  *(commands or ["- no run yet"])]  # fmt: skip
    replace_section(readme, lines)
    replace_section(page, page_lines)
    print("\n".join(page_lines))


def replace_section(path: Path, lines: list[str]) -> None:
    """Replace what lies between the results-table markers of `path` with `lines` (atomically)."""
    text = path.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    write_text(path, text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("collect").add_argument("folder", type=Path, help="the files a GPU session brought back")
    commands.add_parser("assemble")
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.folder)
    else:
        assemble()


if __name__ == "__main__":
    main()
