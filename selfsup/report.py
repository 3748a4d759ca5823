"""Compare pretraining runs side by side from their local logs, no wandb account needed.

    python -m selfsup.report runs/simclr/version_0 runs/mocov2/version_0 --out report
    python -m selfsup.report runs --out report        # every run found under runs/

Reads each run's CSV metrics and hyperparameters (written by `train.py fit`) and, where `train.py eval` has
run, the `results.json` next to its checkpoints. Writes `report.md` (one row per run: method, epochs, global
batch, images/s, kNN top-1, linear top-1, device hours) and PNG plots: kNN accuracy against epoch and
against wall-clock time, and the representation diagnostics.
"""

import argparse
import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from selfsup.errors import ConfigurationError  # noqa: E402
from selfsup.runs import HPARAMS_FILE, METRICS_FILE, Metric, last_checkpoint, results_path, run_name_of_folder  # noqa: E402


class _HparamsLoader(yaml.SafeLoader):
    """Safe YAML plus the tuples Lightning writes into hparams.yaml (as lists); no other Python tags."""


_HparamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", _HparamsLoader.construct_sequence)


@dataclass
class Run:
    name: str
    method: str
    metrics: list[dict[str, str]]
    hparams: dict[str, Any]
    results: dict[str, Any] | None
    history: list[tuple[int, float, float | None]] = field(default_factory=list)  # (epoch, kNN, elapsed s)

    @classmethod
    def load(cls, directory: Path) -> "Run":
        with open(directory / METRICS_FILE) as f:
            metrics = list(csv.DictReader(f))
        hparams_file = directory / HPARAMS_FILE
        hparams = yaml.load(hparams_file.read_text(), _HparamsLoader) if hparams_file.is_file() else {}
        results_file = results_path(last_checkpoint(directory))
        results = json.loads(results_file.read_text()) if results_file.is_file() else None
        method = results["method"] if results else directory.parent.name
        run = cls(run_name_of_folder(directory), method, metrics, hparams or {}, results)
        run.history = [
            (int(row["epoch"]), float(row[Metric.KNN_TOP1]), _number(row.get(Metric.ELAPSED_SECONDS)))
            for row in metrics
            if row.get(Metric.KNN_TOP1)
        ]
        return run

    def last(self, column: str) -> float | None:
        values = [float(row[column]) for row in self.metrics if row.get(column)]
        return values[-1] if values else None

    def summary(self) -> dict[str, Any]:
        throughput = [float(row[Metric.IMAGES_PER_SECOND]) for row in self.metrics if row.get(Metric.IMAGES_PER_SECOND)]
        epochs = max((int(row["epoch"]) for row in self.metrics if row.get("epoch")), default=-1) + 1
        knn, knn_source = self.last(Metric.KNN_TOP1), "online"
        linear, linear_source = self.last(Metric.PROBE_TOP1), "online"
        if self.results:
            knn, knn_source = self.results["knn"]["top1"], "offline"
            if "linear" in self.results:
                linear, linear_source = self.results["linear"]["top1"], "offline"
        return {
            "run": self.name,
            "method": self.method,
            "epochs": epochs,
            "global_batch": self.hparams.get("global_batch", self.hparams.get("batch_size")),
            "img_per_s": statistics.median(throughput) if throughput else None,
            "knn_top1": knn,
            "knn_source": knn_source,
            "linear_top1": linear,
            "linear_source": linear_source,
            "device_hours": self.last(Metric.DEVICE_HOURS),
        }


def _number(text: str | None) -> float | None:
    return float(text) if text else None


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (those holding metrics.csv) given as themselves or anywhere below the paths."""
    runs = []
    for path in paths:
        if not path.exists():
            raise ConfigurationError(f"{path} does not exist: pass run folders such as runs/simclr/version_0, or runs")
        found = [path] if (path / METRICS_FILE).is_file() else sorted(p.parent for p in path.rglob(METRICS_FILE))
        if not found:
            raise ConfigurationError(f"No run under {path}: a run folder holds the metrics.csv of `train.py fit`")
        runs += found
    return runs


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    def percent(value: float | None, source: str) -> str:
        return "-" if value is None else f"{100 * value:.2f}%" + (" (online)" if source == "online" else "")

    lines = [
        "| method | run | epochs | global batch | images/s | kNN top-1 | linear top-1 | device hours |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        throughput = "-" if s["img_per_s"] is None else f"{s['img_per_s']:,.0f}"
        hours = "-" if s["device_hours"] is None else f"{s['device_hours']:.3f}"
        lines.append(
            f"| {s['method']} | {s['run']} | {s['epochs']} | {s['global_batch'] or '-'} | {throughput} | "
            f"{percent(s['knn_top1'], s['knn_source'])} | {percent(s['linear_top1'], s['linear_source'])} | {hours} |"
        )
    return "\n".join(lines)


def plot_knn(runs: list[Run], out: Path) -> list[str]:
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        epochs = [epoch + 1 for epoch, _, _ in run.history]
        accuracy = [100 * knn for _, knn, _ in run.history]
        by_epoch.plot(epochs, accuracy, marker="o", label=run.name)
        timed = [(elapsed / 60, 100 * knn) for _, knn, elapsed in run.history if elapsed is not None]
        if timed:
            by_time.plot(*zip(*timed, strict=True), marker="o", label=run.name)
    by_epoch.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN monitor vs epoch")
    by_time.set(xlabel="wall-clock (minutes)", ylabel="kNN top-1 (%)", title="kNN monitor vs time")
    for axes in (by_epoch, by_time):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "knn.png", dpi=120)
    plt.close(figure)
    return ["knn.png"]


def plot_diagnostics(runs: list[Run], out: Path) -> list[str]:
    evaluated = [run for run in runs if run.results and "diagnostics" in run.results]
    if not evaluated:
        return []
    names = ["alignment", "uniformity", "effective_rank", "positive_similarity", "negative_similarity"]
    figure, grid = plt.subplots(2, 3, figsize=(13, 7))
    axes = grid.flatten()
    labels = [run.name for run in evaluated]
    for axis, name in zip(axes, names, strict=False):
        axis.bar(labels, [run.results["diagnostics"][name] for run in evaluated], color="C0")
        axis.set_title(name.replace("_", " "))
        axis.tick_params(axis="x", rotation=45, labelsize=8)
    histogram = axes[-1]
    for index, run in enumerate(evaluated):
        diagnostics = run.results["diagnostics"]
        bins = len(diagnostics["positive_histogram"])
        centres = [-1 + (2 * i + 1) / bins for i in range(bins)]
        for kind, style in (("positive", "-"), ("negative", "--")):
            counts = diagnostics[f"{kind}_histogram"]
            total = sum(counts) or 1
            histogram.plot(centres, [c / total for c in counts], style, color=f"C{index}", label=f"{run.name} {kind}")
    histogram.set(title="cosine similarity of pairs", xlabel="cosine similarity", ylabel="fraction")
    histogram.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(out / "diagnostics.png", dpi=120)
    plt.close(figure)
    return ["diagnostics.png"]


def write_report(run_dirs: list[Path], out: Path) -> Path:
    runs = [Run.load(directory) for directory in find_runs(run_dirs)]
    out.mkdir(parents=True, exist_ok=True)
    summaries = [run.summary() for run in runs]
    images = plot_knn(runs, out) + plot_diagnostics(runs, out)
    text = [
        "# Method comparison",
        "",
        "kNN top-1 and linear top-1 are the offline evaluation (`train.py eval`, k=200, T=0.1, linear probe on",
        "frozen features) where a run has one; otherwise the last online monitor value, marked (online).",
        "",
        markdown_table(summaries),
        "",
        *[f"![{image}]({image})" for image in images],
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(text))
    (out / "report.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return report


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<method>/version_N) or folders above")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md and the PNGs")
    options = parser.parse_args(args)
    try:
        report = write_report(options.runs, options.out)
    except ConfigurationError as error:
        raise SystemExit(f"error: {error}") from None
    print(report.read_text())
    print(f"report written to {report}")


if __name__ == "__main__":
    main()
