"""The tuning stage's choice: configs/fashion_mnist/<method>.yaml from the results of `bench/table.py`'s tune stage.

Each tuning run changed one setting of a method's grayscale recipe (bench/table.py: VIEW_VARIANTS and
OPTION_VARIANTS) and was scored by the online kNN monitor (k=200, T=0.1) on 10,000 held-out training images after
TUNE_EPOCHS epochs; the recipe itself ran with seeds 0 and 1. The variants form families (crop scale, learning
rate, temperature, ...). From each family the best variant is kept if it beats the recipe's mean score by at
least the larger of MIN_GAIN and the recipe's seed spread (with one seed per variant, a smaller gain is as
likely noise); the kept changes of different families are combined. Each value written says in a comment what it
was chosen against, and the header names the families that kept the recipe's value.

    python bench/tuned.py              # writes the configs of the methods whose tuning runs are all done
    python bench/tuned.py --dry-run    # prints them instead
"""

import argparse
import re
import statistics
import sys
import textwrap
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import (  # noqa: E402
    BASE,
    BASE_REPEAT,
    HOLDOUT,
    LABELS,
    OPTION_VARIANTS,
    REPO,
    RESULTS,
    TUNE_EPOCHS,
    TUNED_CONFIG,
    VIEW_VARIANTS,
    grayscale,
    method_views,
    result_of,
    tuning_chunks,
)

# half a point: about one binomial standard error of a variant's score minus the recipe's two-seed mean near 85%
# on 10,000 images; the seed spread, where larger, stands for the training noise
MIN_GAIN = 0.005
OPTION_PREFIX = "--model.init_args."


def family(label: str) -> str:
    """The setting a variant changes: 'lr0.8' -> 'lr', 'crop0.2' -> 'crop', 'blur32px' -> 'blur'."""
    return re.match(r"[a-z]+", label).group()


def tuning_scores(method: str, results: Path) -> dict[str, float] | None:
    """Held-out kNN top-1 of each of the method's tuning runs by variant label ('gray', 'lr0.8'), or None while
    a run is missing or stale."""
    scores = {}
    for chunk in tuning_chunks():
        if chunk.method == method:
            result = result_of(chunk, results)
            if result is None:
                return None
            scores[chunk.name.removeprefix(f"{method}-")] = result["online_knn_top1"]
    return scores


def choose(scores: dict[str, float]) -> tuple[dict[str, str], dict[str, dict[str, float]], float]:
    """(family -> kept variant, family -> every variant's score, the gain a variant needed)."""
    base = [scores[BASE], scores[BASE_REPEAT]]
    needed = max(MIN_GAIN, abs(base[0] - base[1]))
    families: dict[str, dict[str, float]] = {}
    for label, score in scores.items():
        if label not in (BASE, BASE_REPEAT):
            families.setdefault(family(label), {})[label] = score
    kept = {}
    for name, variants in families.items():
        best = max(variants, key=variants.get)
        if variants[best] - statistics.fmean(base) >= needed:
            kept[name] = best
    return kept, families, needed


def scores_text(variants: dict[str, float], excluding: str | None = None) -> str:
    """'lr0.2 84.00%, lr0.8 85.90%': the variants' scores, for the config's comments."""
    return ", ".join(f"{label} {score:.2%}" for label, score in variants.items() if label != excluding)


def config_text(method: str, scores: dict[str, float]) -> str:
    """The YAML of the method's tuned settings, each with what it was chosen against."""
    kept, families, needed = choose(scores)
    views = tuple(grayscale(v) for v in method_views(method))
    settings: list[tuple[str, str, str]] = []  # (option, value, comment)
    view_changes = []
    for name, label in kept.items():
        rivals = scores_text(families[name], excluding=label)
        comment = f"{label}: {scores[label]:.2%}" + (f" (not {rivals})" if rivals else "")
        if label in VIEW_VARIANTS:
            views = VIEW_VARIANTS[label](views)
            view_changes.append(comment)
            continue
        options = OPTION_VARIANTS[method][label]
        for option, value in zip(options[::2], options[1::2], strict=True):
            settings.append((option.removeprefix(OPTION_PREFIX), value, comment))
    header = (
        f"Fashion-MNIST settings of {LABELS[method]}, written by `python bench/tuned.py` from {TUNE_EPOCHS}-epoch "
        f"tuning runs scored by the online kNN top-1 on {HOLDOUT:,} held-out training images (--data.holdout), never "
        f"the test set. The grayscale recipe scored {scores[BASE]:.2%} (seed 0) and {scores[BASE_REPEAT]:.2%} "
        f"(seed 1); a change was kept where it beat their mean by at least {100 * needed:.2f} points (one seed "
        "each)."
    )
    unchanged = [f"{name} ({scores_text(variants)})" for name, variants in families.items() if name not in kept]
    if unchanged:
        header += " Kept at the recipe's value: " + "; ".join(unchanged) + "."
    lines = [f"# {line}" for line in textwrap.wrap(header, 110)]
    lines += ["model:", "  init_args:"]
    lines += [f"    {option}: {value}  # {comment}" for option, value, comment in settings]
    lines += ["    # views: the recipe without saturation, hue and grayscale (they leave a gray image unchanged)"]
    lines += [f"    # {change}" for change in view_changes]
    lines += ["    views:"]
    view_values = yaml.safe_dump([v.to_dict() for v in views], sort_keys=False, default_flow_style=None)
    lines += [f"    {line}" for line in view_values.splitlines()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the configs instead of writing them")
    args = parser.parse_args()
    for method in OPTION_VARIANTS:
        scores = tuning_scores(method, args.results)
        if scores is None:
            print(f"{method}: tuning not complete (python bench/table.py status --stages tune --only '{method}-*')")
            continue
        text = config_text(method, scores)
        path = REPO / TUNED_CONFIG.format(method=method)
        if args.dry_run:
            print(f"--- {path.relative_to(REPO)}\n{text}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"{path.relative_to(REPO)}: written")


if __name__ == "__main__":
    main()
