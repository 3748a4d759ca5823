"""Offline linear probe speed on cached features the size of a ResNet-18's on Fashion-MNIST (60,000 x 512 train,
10,000 test, 10 classes; synthetic Gaussian classes, so the run needs no checkpoint).

Measures the whole probe (`train_linear_probe`: grid search on a held-out split, refit, test) and, side by side,
its grid search with the 9 configurations stacked into one batched head against the same 9 trained one after
another (the baseline), on the same features and epochs.

    python bench/linear_probe.py --out bench/results/linear_probe.json

On a CPU-only machine it runs a small setting (10 epochs).
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, environment, synchronize  # noqa: E402

from selfsup.evaluation.linear_probe import LinearProbeConfig, _fit, train_linear_probe  # noqa: E402


def features(num: int, centres: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(num, device=centres.device) % centres.shape[0]
    noise = torch.randn(num, centres.shape[1], device=centres.device, generator=generator)
    return centres[labels] + 3 * noise, labels


def timed(run, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - start, result


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100 if cuda else 10)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    generator = torch.Generator(device=device).manual_seed(0)
    centres = torch.randn(10, 512, device=device, generator=generator)
    (train, train_labels), (test, test_labels) = (
        features(60_000, centres, generator),
        features(10_000, centres, generator),
    )
    config = LinearProbeConfig(epochs=args.epochs)
    train_linear_probe(train, train_labels, test, test_labels, 10, dataclasses.replace(config, epochs=1))  # warm-up
    probe_s, result = timed(lambda: train_linear_probe(train, train_labels, test, test_labels, 10, config), device)

    grid = [(lr, wd) for lr in config.learning_rates for wd in config.weight_decays]
    index = torch.arange(train.shape[0], device=device)
    stacked_s, _ = timed(lambda: _fit(train, train_labels, index, grid, 10, config, None), device)
    sequential_s, _ = timed(lambda: [_fit(train, train_labels, index, [g], 10, config, None) for g in grid], device)
    emit(
        {
            "benchmark": "linear_probe",
            "features": "60000 x 512 train, 10000 test, 10 classes",
            "grid": len(grid),
            "epochs": args.epochs,
            "batch_size": config.batch_size,
            "probe_s": round(probe_s, 2),
            "probe_top1": result.top1,
            "grid_stacked_s": round(stacked_s, 2),
            "grid_one_at_a_time_s": round(sequential_s, 2),
            "grid_speedup": round(sequential_s / stacked_s, 2),
            **environment(device),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
