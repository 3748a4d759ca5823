"""Does each method learn? A short run on real Fashion-MNIST on the CPU, scored by the kNN monitor against the same
network at random initialisation: the CPU learning check of every method, kept out of the test suite's budget.

    python bench/learning.py --out bench/results/learning_cpu.json          # every registered method
    python bench/learning.py --methods barlowtwins vicreg --steps 100

Every method trains the same tiny backbone (timm's `test_resnet`) with its own recipe (views, heads, loss, optimizer)
on the first 4,096 training images in batches of 128, seeded alike; the kNN monitor (k = 200, T = 0.1) scores the
10,000 test images against the 4,096 as its bank. A method passes when it gains at least `--margin` points.
"""

import argparse
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, environment  # noqa: E402

from selfsup.data import SelfSupDataModule  # noqa: E402
from selfsup.methods import METHODS, Method  # noqa: E402
from selfsup.runs import Metric  # noqa: E402

TRAINER_OPTIONS = dict(
    accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
)


def knn_top1(method: Method, data: SelfSupDataModule) -> float:
    return pl.Trainer(**TRAINER_OPTIONS).validate(method, datamodule=data, verbose=False)[0][Metric.KNN_TOP1]


def learn(name: str, args: argparse.Namespace, options: dict | None = None) -> dict:
    """kNN top-1 at random initialisation and after `args.steps` steps of `name`'s recipe (with `options` set), and
    the last logged value of each training metric."""
    pl.seed_everything(args.seed, verbose=False)
    data = SelfSupDataModule("fashion_mnist", root=args.data_root, batch_size=args.batch_size, max_samples=4096)
    method = METHODS[name](
        backbone="test_resnet", small_image_stem=False, warmup_epochs=0.5, num_classes=data.num_classes,
        image_mean=data.mean, image_std=data.std, batch_size=args.batch_size, **(options or {}),
    )  # fmt: skip
    random_init = knn_top1(method, data)
    start = time.perf_counter()
    trainer = pl.Trainer(max_steps=args.steps, limit_val_batches=0, num_sanity_val_steps=0, **TRAINER_OPTIONS)
    trainer.fit(method, datamodule=data)
    seconds = time.perf_counter() - start
    metrics = trainer.callback_metrics
    trained = {key: round(float(value), 4) for key, value in metrics.items() if key.startswith("train/")}
    learned = knn_top1(method, data)
    gain = learned - random_init
    return {
        "method": name,
        "knn_top1_random_init": round(random_init, 4),
        "knn_top1_learned": round(learned, 4),
        "gain_points": round(100 * gain, 1),
        "passes": bool(gain >= args.margin / 100),
        "train_s": round(seconds, 1),
        "last_train_metrics": trained,
    }


def add_run_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """The options of a learning run that `learn` reads, and where to write the JSON."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=5.0, help="kNN points over random init that pass")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the usual search)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    add_run_arguments(parser, steps=100)
    args = parser.parse_args()
    results = [learn(name, args) for name in args.methods]
    settings = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "margin_points": args.margin}
    emit({"benchmark": "learning", "dataset": "fashion_mnist", "backbone": "test_resnet", **settings,
          "results": results, **environment(torch.device("cpu"))}, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
