"""Compare pretraining runs side by side from their local logs, no wandb account needed.

    selfsup report runs/simclr/version_0 runs/mocov2/version_0 --out report
    python -m selfsup.report runs --out report        # every run found under runs/

Reads each run's CSV metrics and hyperparameters (written by `selfsup fit`) and, where `selfsup eval` has
run, the `results.json` next to its checkpoints (and the baseline of `selfsup eval --random_init true`,
`random_init.json`). Writes `report.md` and the same as one self-contained `report.html`: one row per run, or
per group of runs that differ only by their seed, with the mean and standard deviation over the seeds (method,
run, seeds, backbone, epochs, global batch, images/s, the offline kNN and linear top-1, apart from them the
online monitors' last values, device hours, the hardest negative's similarity), the baseline rows (the backbone
at random initialisation, raw pixels), a note where two methods differ by less than their seed spread, and PNG
plots: kNN accuracy against epoch and against wall-clock time, the loss and learning-rate curves, the offline
scores with their seed spread, and the representation diagnostics.
"""

import argparse
import base64
import csv
import html
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfsup.atomic import check_writable, write_text
from selfsup.errors import ConfigurationError
from selfsup.report_plots import PLOTS, has_diagnostics, plot_curves, plot_diagnostics, plot_knn, plot_scores
from selfsup.runs import (
    CONFIG_FILE,
    HPARAMS_FILE,
    METRICS_FILE,
    Metric,
    baseline_path,
    last_checkpoint,
    results_path,
    run_name_of_folder,
    seed_group,
)

REPORT, HTML_REPORT, SUMMARIES = "report.md", "report.html", "report.json"
REPORT_FILES = (REPORT, HTML_REPORT, SUMMARIES, *PLOTS)


class _HparamsLoader(yaml.SafeLoader):
    """Safe YAML plus the tuples Lightning writes into hparams.yaml (as lists); no other Python tags."""


_HparamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", _HparamsLoader.construct_sequence)


@dataclass
class Run:
    """One run as the report sees it: its name, method, `metrics.csv` rows, hyperparameters, the results of
    `selfsup eval` (None before it ran), those of `selfsup eval --random_init` (its baseline, None before it ran)
    and its kNN history (epoch, top-1, elapsed seconds)."""

    name: str
    method: str
    metrics: list[dict[str, str]]
    hparams: dict[str, Any]
    results: dict[str, Any] | None
    history: list[tuple[int, float, float | None]] = field(default_factory=list)  # (epoch, kNN, elapsed s)
    seed: int | None = None  # from its config.yaml (None: a run without one)
    seed_group: str | None = None  # `selfsup.runs.seed_group` of its config: runs differing only by seed share it
    baseline: dict[str, Any] | None = None  # its random_init.json

    @classmethod
    def load(cls, directory: Path) -> "Run":
        with open(directory / METRICS_FILE) as f:
            metrics = list(csv.DictReader(f))
        hparams_file = directory / HPARAMS_FILE
        hparams = yaml.load(hparams_file.read_text(), _HparamsLoader) if hparams_file.is_file() else {}
        results = _read_json(results_path(last_checkpoint(directory)))
        method = results["method"] if results else directory.parent.name
        run = cls.from_rows(run_name_of_folder(directory), method, metrics, hparams or {}, results)
        run.baseline = _read_json(baseline_path(last_checkpoint(directory)))
        config_file = directory / CONFIG_FILE
        if config_file.is_file():
            config = yaml.safe_load(config_file.read_text()) or {}
            run.seed, run.seed_group = config.get("seed_everything"), seed_group(config)
        return run

    @classmethod
    def from_rows(
        cls, name: str, method: str, metrics: list[dict[str, str]], hparams: dict[str, Any], results: dict | None
    ) -> "Run":
        """A run from its metric rows (those of several run folders, for a run resumed in new ones)."""
        history = [
            (int(row["epoch"]), float(row[Metric.KNN_TOP1]), _number(row.get(Metric.ELAPSED_SECONDS)))
            for row in metrics
            if row.get(Metric.KNN_TOP1)
        ]
        return cls(name, method, metrics, hparams, results, history)

    def series(self, column: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a per-step column, in the order logged."""
        points = [(int(row["step"]), float(row[column])) for row in self.metrics if row.get(column) and row.get("step")]
        return ([step for step, _ in points], [value for _, value in points])

    def describe(self) -> str:
        """`simclr-v0 (seed 0, resnet18, 2 epochs, batch 64)`: the run and what it trained, for plot legends."""
        summary = self.summary()
        trained = [f"seed {self.seed}" if self.seed is not None else None, summary["backbone"],
                   f"{summary['epochs']} epoch{'' if summary['epochs'] == 1 else 's'}",
                   f"batch {summary['global_batch']}" if summary["global_batch"] else None]  # fmt: skip
        return f"{self.name} ({', '.join(part for part in trained if part)})"

    def last(self, column: str) -> float | None:
        values = [float(row[column]) for row in self.metrics if row.get(column)]
        return values[-1] if values else None

    def summary(self) -> dict[str, Any]:
        """One row of the table: the offline figures of `selfsup eval` (None where it has not run) and, apart,
        the online monitors' last values, which are measured differently (a probe trained alongside, a kNN
        bank of un-augmented training images at that epoch)."""
        throughput = [float(row[Metric.IMAGES_PER_SECOND]) for row in self.metrics if row.get(Metric.IMAGES_PER_SECOND)]
        epochs = max((int(row["epoch"]) for row in self.metrics if row.get("epoch")), default=-1) + 1
        results = self.results or {}
        return {
            "run": self.name,
            "method": self.method,
            "backbone": self.hparams.get("backbone"),
            "epochs": epochs,
            "global_batch": self.hparams.get("global_batch", self.hparams.get("batch_size")),
            "img_per_s": statistics.median(throughput) if throughput else None,
            "knn_top1": results["knn"]["top1"] if "knn" in results else None,
            "knn_setting": _knn_setting(results["knn"]) if "knn" in results else None,
            "linear_top1": results["linear"]["top1"] if "linear" in results else None,
            "online_knn_top1": self.last(Metric.KNN_TOP1),
            "online_linear_top1": self.last(Metric.PROBE_TOP1),
            "device_hours": self.last(Metric.DEVICE_HOURS),
            "hard_negative_sim": self.last(Metric.HARD_NEGATIVE_SIM),  # how hard the contrastive variant made them
        }


def _number(text: str | None) -> float | None:
    return float(text) if text else None


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (those holding metrics.csv) given as themselves or anywhere below the paths."""
    runs = []
    for path in paths:
        if not path.exists():
            raise ConfigurationError(f"{path} does not exist: pass run folders such as runs/simclr/version_0, or runs")
        found = [path] if (path / METRICS_FILE).is_file() else sorted(p.parent for p in path.rglob(METRICS_FILE))
        if not found:
            raise ConfigurationError(f"No run under {path}: a run folder holds the metrics.csv of `selfsup fit`")
        runs += found
    unique: dict[Path, Path] = {}
    for run in runs:  # a run reached twice (runs and runs/simclr) is one, named as it was first given
        unique.setdefault(run.resolve(), run)
    return list(unique.values())


def load_runs(folders: list[Path]) -> list[Run]:
    """The runs of `folders`, those of one name from different roots (runs/ here, a copy from another machine)
    named with their root too, so that their rows, bars and lines can be told apart."""
    runs = [Run.load(folder) for folder in folders]
    names = Counter(run.name for run in runs)
    for run, folder in zip(runs, folders, strict=True):
        if names[run.name] > 1:
            run.name = f"{run.name} ({folder.parent.parent})"
    return runs


# The measured columns a row of several seeds gives as mean +- standard deviation
MEASURED = ("img_per_s", "knn_top1", "linear_top1", "online_knn_top1", "online_linear_top1", "device_hours",
            "hard_negative_sim")  # fmt: skip


def seed_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per method and `seed_group`: a run alone keeps its summary; runs that differ only by their seed
    become one row with the mean of each measured column, its sample standard deviation under `<key>_std`, their
    names and their seeds."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.seed_group or run.name), []).append(run)
    rows = []
    for members in groups.values():
        summaries = [run.summary() for run in members]
        row = {**summaries[0], "seeds": sorted(run.seed for run in members if run.seed is not None)}
        if len(members) > 1:
            row["run"] = ", ".join(run.name for run in members)
            for key in MEASURED:
                values = [summary[key] for summary in summaries if summary[key] is not None]
                row[key] = statistics.mean(values) if values else None
                row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def within_spread(rows: list[dict[str, Any]], key: str = "knn_top1") -> list[str]:
    """Sentences for the pairs of methods whose `key` differs by no more than their seed spreads added: a
    difference a reader should not take for a ranking."""
    notes = []
    measured = [row for row in rows if row[key] is not None and row.get(f"{key}_std") is not None]
    for index, row in enumerate(measured):
        for other in measured[index + 1 :]:
            gap, spread = abs(row[key] - other[key]), row[f"{key}_std"] + other[f"{key}_std"]
            if row["method"] != other["method"] and gap <= spread:
                notes.append(
                    f"{row['method']} and {other['method']}: {HEADERS[key]} differs by {100 * gap:.2f} "
                    f"points, within their seed spread ({100 * row[f'{key}_std']:.2f} and "
                    f"{100 * other[f'{key}_std']:.2f} points): not a ranking."
                )
    return notes


ARCHITECTURE = ("backbone", "small_image_stem", "backbone_kwargs", "image_size")  # what random init draws from
EVALUATION_DATA = ("dataset", "image_size", "num_train", "num_test", "scored_on")  # what every baseline is scored on


def baseline_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """The rows every learned number is read against, from `selfsup eval --random_init true`: the backbone at random
    initialisation evaluated the same way (one row per architecture, evaluation data and protocol), and the kNN of
    the raw pixels (one row per evaluation data and k, T), whichever runs they were measured on."""
    rows, seen = [], set()
    for run in runs:
        baseline = run.baseline
        if baseline is None:
            continue
        data = [baseline.get(key) for key in EVALUATION_DATA]
        protocol = [_knn_setting(baseline["knn"]), baseline.get("linear", {}).get("config")]
        empty = {key: None for _, key, _ in COLUMNS} | {"seeds": [], "baseline": True}
        untrained = json.dumps([[baseline.get(key) for key in ARCHITECTURE], data, protocol], sort_keys=True)
        if untrained not in seen:
            seen.add(untrained)
            rows.append(empty | {
                "method": "random init", "run": f"{run.name}'s backbone, init seed {baseline['random_init_seed']}",
                "backbone": baseline["backbone"], "epochs": 0, "knn_top1": baseline["knn"]["top1"],
                "knn_setting": _knn_setting(baseline["knn"]),
                "linear_top1": baseline["linear"]["top1"] if "linear" in baseline else None,
            })  # fmt: skip
        pixels = baseline.get("raw_pixels", {})
        if "knn" in pixels and (raw := json.dumps([data, _knn_setting(pixels["knn"])])) not in seen:
            seen.add(raw)
            described = f"{baseline['image_size']} px, {pixels['dimensions']:,} values"
            rows.append(empty | {"method": "raw pixels", "run": described, "knn_top1": pixels["knn"]["top1"],
                                 "knn_setting": _knn_setting(pixels["knn"])})  # fmt: skip
    return rows


def _knn_setting(knn: dict[str, Any]) -> str:
    """`k=200, T=0.1`: the headline neighbours and temperature of a kNN result."""
    return f"k={knn['k']}, T={knn['temperature']}"


COLUMNS = (  # (header, summary key, format)
    ("method", "method", "{}"),
    ("run", "run", "{}"),
    ("seeds", "seeds", "{}"),
    ("backbone", "backbone", "{}"),
    ("epochs", "epochs", "{}"),
    ("global batch", "global_batch", "{}"),
    ("images/s", "img_per_s", "{:,.0f}"),
    ("kNN top-1", "knn_top1", "{:.2%}"),
    ("linear top-1", "linear_top1", "{:.2%}"),
    ("online kNN top-1", "online_knn_top1", "{:.2%}"),
    ("online probe top-1", "online_linear_top1", "{:.2%}"),
    ("device hours", "device_hours", "{:.3f}"),
    ("hardest negative cos", "hard_negative_sim", "{:.3f}"),
)


HEADERS = {key: header for header, key, _ in COLUMNS}
TEXT_COLUMNS = ("method", "run", "backbone")  # left-aligned; the others are numbers


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """One row per run; "-" where a figure was not measured (no `selfsup eval`, no labels, ...)."""
    lines = [
        "| " + " | ".join(header for header, _, _ in COLUMNS) + " |",
        "| " + " | ".join("---" if key in TEXT_COLUMNS else "---:" for _, key, _ in COLUMNS) + " |",
    ]
    for summary in summaries:
        lines.append("| " + " | ".join(_cell(summary, key, style) for _, key, style in COLUMNS) + " |")
    return "\n".join(lines)


def _cell(summary: dict[str, Any], key: str, style: str) -> str:
    """A value as `style` writes it, "mean ± std" over seeds, seeds as a list, or "-" where nothing was measured."""
    value, spread = summary[key], summary.get(f"{key}_std")
    if value is None or value == []:
        return "-"
    if key == "seeds":
        return ", ".join(str(seed) for seed in value)
    return style.format(value) + (f" ± {style.format(spread)}" if spread is not None else "")


def check_report_folder(out: Path) -> None:
    """Before any work: `out` can be written, and the files a report replaces there are an earlier report's (its
    report.json is a list of run summaries), never files of the user's that happen to have those names."""
    check_writable(out, "--out", folder=True)
    present = [out / name for name in REPORT_FILES if (out / name).exists()]
    if present and not _is_report_summary(out / SUMMARIES):
        raise ConfigurationError(
            f"--out {out} holds {', '.join(path.name for path in present)} but no earlier report, so they are not "
            "replaced; choose another --out."
        )


def _is_report_summary(path: Path) -> bool:
    try:
        summaries = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summaries, list) and all(isinstance(row, dict) and "run" in row for row in summaries)


INTRODUCTION = (
    "kNN top-1 (k=200, T=0.1 unless `selfsup eval` set others) and linear top-1: the offline evaluation of a run's "
    "last checkpoint (`selfsup eval`: frozen features, a linear probe trained on them). The online columns: the last "
    "values the monitors logged during training, a different measurement (the kNN monitor on the data the run "
    "validated on, the probe trained alongside the network on augmented views). -: not measured. Runs that differ "
    "only by their seed are one row: the mean ± the standard deviation over their seeds."
)
BASELINE_NOTE = (
    "random init and raw pixels: the baseline (`selfsup eval --random_init true` on a run's checkpoint), its "
    "backbone untrained and evaluated the same way, and the kNN of the images' pixels; what pretraining added is "
    "the distance to them."
)
NO_BASELINE_NOTE = (
    "No baseline yet: `selfsup eval --ckpt_path <run>/checkpoints/last.ckpt --random_init true` adds the rows of "
    "the backbone at random initialisation and of raw pixels."
)


def write_report(run_dirs: list[Path], out: Path) -> Path:
    """report.md, report.html (the same, one self-contained file), report.json and the plots, in `out`."""
    check_report_folder(out)
    runs = load_runs(find_runs(run_dirs))
    rows = seed_rows(runs) + baseline_rows(runs)
    images = plot_knn(runs, out) + plot_curves(runs, out) + plot_scores(rows, out) + plot_diagnostics(runs, out)
    missing = [run.name for run in runs if not has_diagnostics(run)]
    notes = within_spread(rows) + [BASELINE_NOTE if any(row.get("baseline") for row in rows) else NO_BASELINE_NOTE]
    if missing:
        notes.append(
            f"Not in the diagnostics: {', '.join(missing)} (no `selfsup eval` with diagnostics on the last "
            "checkpoint; run `selfsup eval --ckpt_path <run>/checkpoints/last.ckpt`)."
        )
    markdown = ["# Method comparison", "", INTRODUCTION, "", markdown_table(rows), ""]
    markdown += [f"{note}\n" for note in notes] + [f"![{image}]({image})\n" for image in images]
    report = out / REPORT
    write_text(report, "\n".join(markdown))
    write_text(out / HTML_REPORT, html_report(rows, notes, [out / image for image in images]))
    write_text(out / SUMMARIES, json.dumps(rows, indent=2) + "\n")
    return report


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline { background: #f4f4f4; font-style: italic; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def html_report(rows: list[dict[str, Any]], notes: list[str], images: list[Path]) -> str:
    """The report as one HTML file that needs nothing beside it: the table, the notes, the plots inlined."""
    header = "".join(f"<th>{html.escape(title)}</th>" for title, _, _ in COLUMNS)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"text" if key in TEXT_COLUMNS else "number"}">{html.escape(_cell(row, key, style))}</td>'
            for _, key, style in COLUMNS
        )
        body.append(f'<tr class="{"baseline" if row.get("baseline") else "run"}">{cells}</tr>')
    figures = [
        f'<figure><img alt="{path.name}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        f"<figcaption>{path.name}</figcaption></figure>"
        for path in images
    ]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>Method comparison</title>',
        f"<style>{HTML_STYLE}</style></head><body>", "<h1>Method comparison</h1>", f"<p>{_inline(INTRODUCTION)}</p>",
        f"<table><thead><tr>{header}</tr></thead><tbody>", *body, "</tbody></table>",
        *[f"<p>{_inline(note)}</p>" for note in notes], *figures, "</body></html>", "",
    ])  # fmt: skip


def _inline(text: str) -> str:
    """Markdown's `code` spans as HTML, the rest escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts))


def main(args: list[str] | None = None, prog: str = "python -m selfsup.report") -> None:
    """The report's command line; `prog` is the command that runs it (`selfsup report` from the `selfsup` command)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<method>/version_N) or folders above")
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="folder for report.md, report.html and the PNGs"
    )
    options = parser.parse_args(args)
    try:
        report = write_report(options.runs, options.out)
    except ConfigurationError as error:
        raise SystemExit(f"error: {error}") from None
    print(report.read_text())
    print(f"report written to {report}")


if __name__ == "__main__":
    main()
