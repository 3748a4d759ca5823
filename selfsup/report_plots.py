"""The comparison report's figures (`selfsup.report`): the kNN monitor against epoch and time, the loss and
learning-rate curves, the offline scores with their seed spread, and the representation diagnostics. Each says its
axes, units and what was trained, and each is written whole or not at all."""

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from selfsup.atomic import replacing  # noqa: E402
from selfsup.runs import Metric  # noqa: E402

if TYPE_CHECKING:
    from selfsup.report import Run

KNN_PLOT, SCORES_PLOT, CURVES_PLOT, DIAGNOSTICS_PLOT = "knn.png", "scores.png", "curves.png", "diagnostics.png"
PLOTS = (KNN_PLOT, CURVES_PLOT, SCORES_PLOT, DIAGNOSTICS_PLOT)


def save_figure(figure: plt.Figure, path: Path) -> None:
    """`figure` as a PNG replacing `path` whole or not at all, then closed."""
    try:
        with replacing(path) as file:
            figure.savefig(file, format="png", dpi=120)
    finally:
        plt.close(figure)


def legend(axes: plt.Axes, fontsize: float = 8) -> None:
    """The axes' legend, if anything on them is labelled."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=fontsize)


def plot_knn(runs: list["Run"], out: Path) -> list[str]:
    """The online kNN monitor (k=200, T=0.1, on the data the run validated on) of every run, against epoch and
    against the wall-clock time spent fitting."""
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        epochs = [epoch + 1 for epoch, _, _ in run.history]
        accuracy = [100 * knn for _, knn, _ in run.history]
        by_epoch.plot(epochs, accuracy, marker="o", label=run.describe())
        timed = [(elapsed / 60, 100 * knn) for _, knn, elapsed in run.history if elapsed is not None]
        if timed:
            by_time.plot(*zip(*timed, strict=True), marker="o", label=run.describe())
    by_epoch.set(xlabel="epochs trained", ylabel="kNN top-1 (%)", title="kNN monitor vs epoch")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set(xlabel="wall-clock time fitting (minutes)", ylabel="kNN top-1 (%)", title="kNN monitor vs time")
    for axes in (by_epoch, by_time):
        axes.grid(alpha=0.3)
        legend(axes)
    figure.suptitle(f"Online kNN monitor ({Metric.KNN_TOP1}: k=200, T=0.1, frozen features at each validation)")
    figure.tight_layout()
    save_figure(figure, out / KNN_PLOT)
    return [KNN_PLOT]


def plot_curves(runs: list["Run"], out: Path) -> list[str]:
    """Per method, the training loss and the learning rates of each of its runs against the optimizer step: one
    row of two panels a method, as losses of different methods are on different scales."""
    logged = [run for run in runs if run.series(Metric.TRAIN_LOSS)[0]]
    if not logged:
        return []
    methods = list(dict.fromkeys(run.method for run in logged))
    figure, grid = plt.subplots(len(methods), 2, figsize=(12, 3.2 * len(methods)), squeeze=False)
    for (loss_axes, rate_axes), method in zip(grid, methods, strict=True):
        for index, run in enumerate(run for run in logged if run.method == method):
            loss_axes.plot(*run.series(Metric.TRAIN_LOSS), ".-", color=f"C{index}", label=run.describe())
            rates = [column for column in run.metrics[0] if column.startswith(f"{Metric.LEARNING_RATE}/")]
            for style, column in zip(itertools.cycle(("-", "--", ":", "-.")), rates):
                steps, values = run.series(column)
                rate_axes.plot(steps, values, style, marker=".", color=f"C{index}", label=f"{run.name} {column}")
        loss_axes.set(xlabel="optimizer step", ylabel=f"{Metric.TRAIN_LOSS} (the method's own objective)",
                      title=f"{method}: training loss")  # fmt: skip
        rate_axes.set(xlabel="optimizer step", ylabel="learning rate", title=f"{method}: learning rate per group")
        for axes in (loss_axes, rate_axes):
            axes.grid(alpha=0.3)
            legend(axes, fontsize=7)
    figure.tight_layout()
    save_figure(figure, out / CURVES_PLOT)
    return [CURVES_PLOT]


def plot_scores(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Bars of each row's offline kNN and linear top-1 (`selfsup eval` on the test set), the seed spread as error
    bars; none without an offline evaluation."""
    scored = [row for row in rows if row["knn_top1"] is not None]
    if not scored:
        return []
    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(scored) + 2), 4))
    positions = range(len(scored))
    knn = f"kNN ({'; '.join(sorted({row['knn_setting'] for row in scored}))})"
    for offset, key, label in ((-0.2, "knn_top1", knn), (0.2, "linear_top1", "linear probe")):
        heights = [100 * row[key] if row[key] is not None else math.nan for row in scored]  # nan: no bar, not 0
        spreads = [100 * row[f"{key}_std"] if row.get(f"{key}_std") is not None else math.nan for row in scored]
        bars = axes.bar([p + offset for p in positions], heights, width=0.4, yerr=spreads, capsize=4, label=label)
        for bar, row in zip(bars, scored, strict=True):
            if row.get("baseline"):
                bar.set(hatch="//", alpha=0.5)  # not a learned representation
    labels = [
        row["method"] + (f"\nseeds {', '.join(map(str, row['seeds']))}" if row["seeds"] else "") for row in scored
    ]
    axes.set_xticks(list(positions), labels, fontsize=8)
    epochs = sorted({row["epochs"] for row in scored if not row.get("baseline")})
    trained = (
        f" after {', '.join(map(str, epochs))} epoch{'' if epochs == [1] else 's'} of pretraining" if epochs else ""
    )
    title = f"Offline evaluation (selfsup eval){trained}\nmean over seeds ± their standard deviation"
    axes.set(ylabel="top-1 on the test set (%)", title=title)
    axes.grid(alpha=0.3, axis="y")
    legend(axes)
    figure.tight_layout()
    save_figure(figure, out / SCORES_PLOT)
    return [SCORES_PLOT]


# the diagnostics of `selfsup eval` and which way is better (alignment and uniformity: Wang & Isola, ICML 2020,
# eqs. 4-5; tolerance, the mean cosine of same-class pairs: Wang & Liu, CVPR 2021; effective rank: Garrido et al.,
# "RankMe", ICML 2023); similarities are cosines of view pairs
DIAGNOSTICS = (
    ("alignment", "lower is better"),
    ("uniformity", "lower is better"),
    ("tolerance", "higher: classes closer"),
    ("effective_rank", "higher is better"),
    ("positive_similarity", "higher is better"),
    ("negative_similarity", "lower is better"),
)


def has_diagnostics(run: "Run") -> bool:
    return bool(run.results and "diagnostics" in run.results)


def plot_diagnostics(runs: list["Run"], out: Path) -> list[str]:
    """One bar panel per diagnostic (each bar labelled with its value, the title saying which way is better) and
    the histograms of pair similarities, for the runs `selfsup eval` has measured."""
    evaluated = [run for run in runs if has_diagnostics(run)]
    if not evaluated:
        return []
    figure, grid = plt.subplots(2, 4, figsize=(17, 7.5))
    axes = grid.flatten()
    for axis, (name, better) in zip(axes, DIAGNOSTICS, strict=False):
        # results of an earlier version may lack a diagnostic (tolerance): those runs have no bar in its panel
        measured = [(index, run) for index, run in enumerate(evaluated) if name in run.results["diagnostics"]]
        labels = [run.name for _, run in measured]
        values = [run.results["diagnostics"][name] for _, run in measured]
        bars = axis.bar(labels, values, color=[f"C{index}" for index, _ in measured])
        axis.bar_label(bars, fmt="%.3g", fontsize=8)
        axis.margins(y=0.15)  # room for the labels
        axis.set_title(f"{name.replace('_', ' ')} ({better})")
        axis.tick_params(axis="x", rotation=45, labelsize=8)
    histogram = axes[len(DIAGNOSTICS)]
    for unused in axes[len(DIAGNOSTICS) + 1 :]:
        unused.set_axis_off()
    for index, run in enumerate(evaluated):
        diagnostics = run.results["diagnostics"]
        bins = len(diagnostics["positive_histogram"])
        centres = [-1 + (2 * i + 1) / bins for i in range(bins)]
        for kind, style in (("positive", "-"), ("negative", "--")):
            counts = diagnostics[f"{kind}_histogram"]
            total = sum(counts) or 1
            histogram.plot(centres, [c / total for c in counts], style, color=f"C{index}", label=f"{run.name} {kind}")
    histogram.set(title="cosine similarity of view pairs", xlabel="cosine similarity", ylabel="fraction of pairs")
    legend(histogram, fontsize=6)
    epochs = sorted({run.summary()["epochs"] for run in evaluated})
    figure.suptitle(f"Representation diagnostics of each run's last checkpoint ({', '.join(map(str, epochs))} epochs "
                    "of pretraining; selfsup eval, two augmented views of test images)")  # fmt: skip
    figure.tight_layout()
    save_figure(figure, out / DIAGNOSTICS_PLOT)
    return [DIAGNOSTICS_PLOT]
