"""The negatives lab on the CPU: each way of choosing, weighting, correcting or synthesising SimCLR's and MoCo v2's
negatives trained the same short run, with its kNN gain over random init and how hard its negatives were at the end.

    python bench/negatives.py --steps 200 --out bench/results/negatives_cpu.json

A smoke of the commands, not a verdict: every variant trains timm's tiny `test_resnet` on 4,096 Fashion-MNIST images
as `bench/learning.py` does (its docstring says how), with the method's recipe and one option group changed. The GPU
comparison belongs to the results table (`bench/gpu_evidence.py`).
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, environment  # noqa: E402
from learning import add_run_arguments, learn  # noqa: E402

# (name, method, options): the variants of docs/negatives.md, each on in-batch (SimCLR) and queue (MoCo v2) negatives
VARIANTS = [
    (f"{method}{suffix}", method, {**base, **options})
    for method, base in (("simclr", {}), ("mocov2", {"queue_size": 4096}))
    for suffix, options in (
        ("", {}),
        ("+dcl", {"decoupled": True}),
        ("+debiased", {"negatives": {"tau_plus": 0.1}}),
        ("+hard", {"negatives": {"tau_plus": 0.1, "beta": 1.0}}),
        ("+mixing", {"mixing": {"num_hard": 64, "num_mixed": 64, "num_query_mixed": 8}}),
        ("+transformation", {"transformation": {"positive_alpha": 2.0, "negative_alpha": 1.6}}),
        ("+cacr", {"cacr": {"enabled": True}}),
    )
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [name for name, _, _ in VARIANTS]
    parser.add_argument("--variants", nargs="+", choices=names, default=names)
    add_run_arguments(parser, steps=200)
    args = parser.parse_args()
    results = [
        {"variant": name, "options": options, **learn(method, args, options)}
        for name, method, options in VARIANTS
        if name in args.variants
    ]
    settings = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "margin_points": args.margin}
    emit({"benchmark": "negatives", "dataset": "fashion_mnist", "backbone": "test_resnet", **settings,
          "results": results, **environment(torch.device("cpu"))}, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
