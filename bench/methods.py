"""Compare methods on Fashion-MNIST: each trains through train.py at the same epochs, batch and seed, and the
final kNN top-1, online linear top-1, median images/s and wall time are printed as JSON.

    python bench/methods.py --epochs 15 --out bench/results/methods.json    # every registered method

Each method runs in its own process, exactly as a user would launch it. On a CPU-only machine it runs a small
setting (512 images, 1 epoch, batch 64).
"""

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, environment  # noqa: E402

from selfsup.methods import METHODS  # noqa: E402
from selfsup.runs import METRICS_FILE, Metric  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run(method: str, args: argparse.Namespace, root: Path, small: bool) -> dict:
    command = [
        sys.executable, "train.py", "fit", "--config", f"configs/{method}.yaml", "--wandb", "false",
        "--trainer.max_epochs", str(args.epochs), "--trainer.check_val_every_n_epoch", str(args.epochs),
        "--model.init_args.warmup_epochs", str(args.warmup_epochs), "--seed_everything", str(args.seed),
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    if args.data_root:
        command += ["--data.root", args.data_root]
    if small:
        command += ["--data.max_samples", "512", "--data.batch_size", "64", "--trainer.log_every_n_steps", "2"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    wall = time.perf_counter() - start
    (run_folder,) = (root / method).iterdir()  # the one run of this method under this root
    with open(run_folder / METRICS_FILE) as f:
        rows = list(csv.DictReader(f))
    final = [row for row in rows if row.get(Metric.KNN_TOP1)][-1]
    throughput = [float(row[Metric.IMAGES_PER_SECOND]) for row in rows if row.get(Metric.IMAGES_PER_SECOND)]
    return {
        "method": method,
        "knn_top1": round(float(final[Metric.KNN_TOP1]), 4),
        "online_linear_top1": round(float(final[Metric.PROBE_TOP1]), 4),
        "median_img_per_s": round(statistics.median(throughput), 1) if throughput else None,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--epochs", type=int, default=15 if cuda else 1)
    parser.add_argument("--warmup-epochs", type=float, default=2 if cuda else 0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the usual search)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        results = [run(method, args, Path(runs), small=not cuda) for method in args.methods]
    settings = {"epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "seed": args.seed}
    emit({"benchmark": "methods", "dataset": "fashion_mnist", **settings, "results": results,
          **environment(torch.device("cuda" if cuda else "cpu"))}, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
