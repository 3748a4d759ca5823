"""How fast each method's step runs alone on this device, and what compiling it gives: the table's per-method speed
and the eager-against-compiled check, each method built from its config exactly as `train.py fit` builds it.

  method_speeds        every method alone, end to end (`Trainer.fit`: batch draw, views, step), eager as the table
                       trains it, over a short timed window;
  compile_comparison   SimCLR and MoCo v2: the model-only step eager and under torch.compile (its whole
                       computation, `Method.compute_losses`), and end to end eager and with the backbone and the
                       view rendering compiled, with the model FLOPs and their share of the GPU's bf16 peak;
                       TARGET_SPEEDUP is reported against, not asserted.

Both stop measuring at `stop_at` (time.time()) and say which methods they did not reach. Both are generators that
yield everything measured so far after each measurement (the last is the whole result), so that a process ended at
its time limit still brings back what it measured (`common.in_process`).

    python bench/step_speed.py --data-root .data/FashionMNIST/raw    # on the GPU: both, printed as JSON
"""

import argparse
import collections
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, environment  # noqa: E402
from throughput import end_to_end, flop_utilisation, model_only  # noqa: E402

from selfsup.cli import SelfSupCLI, config_files  # noqa: E402
from selfsup.data import SelfSupDataModule  # noqa: E402
from selfsup.methods import METHODS, Method  # noqa: E402

TARGET_SPEEDUP = 1.3  # compiled over eager, model-only at 32 px, batch 512 (issue 28)
COMPILED = ("--model.init_args.compile_backbone", "true", "--model.init_args.compile_augment", "true")


def configured(method: str, options: Sequence[str]) -> tuple[Method, SelfSupDataModule]:
    """The method and data `train.py fit --config <method> --config data/fashion_mnist <options>` would train."""
    arguments = ["--config", method, "--config", "data/fashion_mnist", *options, "--wandb", "false",
                 "--trainer.logger", "false"]  # fmt: skip
    with warnings.catch_warnings():  # Lightning warns that this process's own command line is not the one parsed
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")
        cli = SelfSupCLI(args=config_files(arguments), run=False)
    return cli.model, cli.datamodule


def first_batch(data: SelfSupDataModule, device: torch.device) -> torch.Tensor:
    """The images of the data's first training batch, on `device`: what the model-only step renders views of."""
    data.prepare_data()
    data.setup("fit")
    images, _ = next(iter(data.train_dataloader()))
    return images.to(device)


def method_speeds(
    methods: Sequence[str], options: Sequence[str], steps: int, warmup: int, stop_at: float
) -> Iterator[dict]:
    """{"img_per_s": {method: end-to-end img/s alone}, "not_reached": [...], "errors": {method: line}}, so far."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict = {"img_per_s": {}, "not_reached": list(methods), "errors": {}}
    for method in methods:
        if time.time() >= stop_at:
            break
        try:
            model, data = configured(method, options)
            result["img_per_s"][method] = round(end_to_end(model, data, device, steps, warmup), 1)
        except Exception as error:  # noqa: BLE001 - one method's failure is its row's, not the check's
            result["errors"][method] = f"{type(error).__name__}: {error}".splitlines()[0]
        result["not_reached"].remove(method)
        yield result


def compile_comparison(
    methods: Sequence[str], options: Sequence[str], steps: int, warmup: int, stop_at: float, backend: str = "inductor"
) -> Iterator[dict]:
    """Per method: model-only and end-to-end img/s, eager and compiled, the speedups and the FLOP utilisation, so
    far. Another `backend` than inductor (the smoke's "eager": dynamo's tracing without code generation, seconds
    where inductor takes minutes on a CPU) compiles the model-only step only: the method's own compile options use
    inductor."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # the model-only pairs of every method first (the target's measure), then the end-to-end ones
    measurements = [(method, kind, mode) for kind in ("model_only", "end_to_end") for method in methods
                    for mode in ("eager", "compiled") if kind == "model_only" or backend == "inductor"]  # fmt: skip
    result: dict = {"target_speedup": TARGET_SPEEDUP, "backend": backend, "results": {},
                    "not_reached": [" ".join(measurement) for measurement in measurements]}  # fmt: skip
    for method, kind, mode in measurements:
        if time.time() >= stop_at:
            break
        measured = result["results"].setdefault(method, {})
        if kind == "model_only":
            model, data = configured(method, options)
            images = first_batch(data, device)
            compiled = {"backend": backend} if mode == "compiled" else None
            rate, flops = model_only(model.to(device), images, steps, warmup, compiled)
            measured["model_gflops_per_step"] = round(flops / 1e9, 2)
            measured[f"model_only_{mode}_bf16_peak_utilisation"] = flop_utilisation(device, flops * rate / len(images))
        else:
            model, data = configured(method, [*options, *(COMPILED if mode == "compiled" else ())])
            rate = end_to_end(model, data, device, steps, warmup)
        measured[f"{kind}_{mode}_img_per_s"] = round(rate, 1)
        result["not_reached"].remove(f"{method} {kind} {mode}")
        eager, compiled_rate = measured.get(f"{kind}_eager_img_per_s"), measured.get(f"{kind}_compiled_img_per_s")
        if eager and compiled_rate:
            measured[f"{kind}_speedup"] = round(compiled_rate / eager, 3)
            if kind == "model_only":
                measured["meets_target"] = compiled_rate / eager >= TARGET_SPEEDUP
        yield result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the usual search)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    args = parser.parse_args()
    options = ["--data.root", args.data_root] if args.data_root else []
    forever = time.time() + 3600
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    speeds = method_speeds(list(METHODS), options, args.steps, args.warmup, forever)
    compiled = compile_comparison(["simclr", "mocov2"], options, args.steps, args.warmup, forever)
    emit({"speeds": collections.deque(speeds, 1)[0], "compile": collections.deque(compiled, 1)[0],
          **environment(device)}, None)  # fmt: skip


if __name__ == "__main__":
    main()
