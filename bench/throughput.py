"""Training throughput of SimCLR on Fashion-MNIST: the model-only ceiling against the real training loop.

In one process it measures, in images per second (each image = two views):
  model_only    forward + backward + optimizer step on synthetic views already on the device (the ceiling);
  end_to_end    `Trainer.fit` on the device-resident dataset: batch draw + GPU augmentation + the same step,
                Lightning's loop and logging included (what a user gets);
  augment_only  the two-view augmentation of a batch alone.
and prints them with end_to_end / model_only as JSON, with the model's FLOPs per step and, on a GPU whose bf16
peak is known, the FLOP utilisation of the model-only step. On a CPU-only machine it runs a small setting.

To find out what compilation does to the step, `--compile-step` compiles the whole per-step computation of
the model-only loop (backbone, projector, loss, probe: `Method.compute_losses`) with `--compile-mode`, and the
JSON counts the graphs dynamo built and the graph breaks it met (a recompilation or a break explains a compiled
step slower than eager).

    python bench/throughput.py                      # defaults: GPU if present, batch 512
    python bench/throughput.py --compile --out bench/results/throughput.json
    python bench/throughput.py --compile-step --compile-mode max-autotune-no-cudagraphs
"""

import argparse
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.data import SelfSupDataModule  # noqa: E402
from selfsup.methods import Method, SimCLR  # noqa: E402
from selfsup.optim import LARS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, environment, images_per_second, synchronize  # noqa: E402


def build(args: argparse.Namespace, data: SelfSupDataModule) -> SimCLR:
    return SimCLR(
        backbone=args.backbone,
        compile_backbone=args.compile,
        compile_augment=args.compile_augment,
        image_size=data.image_size,
        num_classes=data.num_classes,
        image_mean=data.mean,
        image_std=data.std,
        batch_size=args.batch_size,
    )


BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM)


def model_only(
    method: Method, images: torch.Tensor, steps: int, warmup: int, compiled: dict | None = None
) -> tuple[float, float]:
    """(images/s, model FLOPs per step) of forward + backward + optimizer step of `method` (on the device of
    `images`, a uint8 batch) on fixed views of `images`. `compiled`: None runs the step eagerly, else it is
    torch.compile's arguments (mode, backend) for the whole per-step computation (`Method.compute_losses`)."""
    device = images.device
    optimizer = LARS(method.parameters(), lr=0.1, weight_decay=1e-5)
    views = [v.clone() for v in method.multiview(images)]  # fixed views: no augmentation in the timed loop
    labels = torch.randint(0, max(2, method.hparams.num_classes or 2), (len(images),), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    compute = method.compute_losses if compiled is None else torch.compile(method.compute_losses, **compiled)

    def step(compute_losses=compute) -> None:
        with autocast:
            loss, probe_loss, _ = compute_losses(views, labels)
        optimizer.zero_grad(set_to_none=True)
        (loss + probe_loss).backward()
        optimizer.step()

    with FlopCounterMode(display=False) as flops:  # eager, once: what the model computes, however it is run
        step(method.compute_losses)
    return images_per_second(step, len(images), steps, warmup, device), flops.get_total_flops()


def flop_utilisation(device: torch.device, flops_per_s: float) -> float | None:
    """Model FLOPs per second over the GPU's dense bf16 peak, where the GPU is one of BF16_PEAK_TFLOPS."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((tflops for gpu, tflops in BF16_PEAK_TFLOPS.items() if gpu in name), None)
    return None if peak is None else round(flops_per_s / (peak * 1e12), 4)


def augment_only(args: argparse.Namespace, data: SelfSupDataModule, device: torch.device) -> float:
    method = build(args, data).to(device)
    images = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    return images_per_second(
        lambda: method.multiview(images, generator), args.batch_size, args.steps, args.warmup, device
    )


class _StepTimer(pl.Callback):
    """Wall time of the training steps after `warmup`, with the device synchronised at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0
        self.timed_steps = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            synchronize(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.warmup:
            self.timed_steps += 1
        if trainer.global_step == trainer.max_steps:
            synchronize(module.device)
            self.end = time.perf_counter()


def end_to_end(method: Method, data: SelfSupDataModule, device: torch.device, steps: int, warmup: int) -> float:
    """Images/s of `Trainer.fit` of `method` on `data` (batch draw, augmentation, step, Lightning's loop), timed
    over `steps` steps after `warmup`."""
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed" if device.type == "cuda" else "32-true",
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(method, datamodule=data)
    return timer.timed_steps * data.batch_size / (timer.end - timer.start)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512 if cuda else 32)
    parser.add_argument("--steps", type=int, default=100 if cuda else 3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=20 if cuda else 1, help="untimed steps first")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--compile-augment", action="store_true", help="torch.compile the view rendering")
    parser.add_argument(
        "--compile-step",
        action="store_true",
        help="torch.compile the model-only loop's whole forward (and so its backward); not the end-to-end run",
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile mode of --compile-step",
    )
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the usual search)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    data = SelfSupDataModule(
        "fashion_mnist", root=args.data_root, batch_size=args.batch_size, max_samples=None if cuda else 1024
    )
    images = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8, device=device)
    step_compile = {"mode": args.compile_mode} if args.compile_step else None
    ceiling, step_flops = model_only(build(args, data).to(device), images, args.steps, args.warmup, step_compile)
    real = end_to_end(build(args, data), data, device, args.steps, args.warmup)
    result = {
        "benchmark": "throughput",
        "method": "simclr",
        "backbone": args.backbone + " (small-image stem)",
        "dataset": "fashion_mnist 28px -> two 32px views",
        "batch_size": args.batch_size,
        "precision": "bf16-mixed" if cuda else "32-true",
        "compile": args.compile,
        "compile_augment": args.compile_augment,
        "compile_step": args.compile_step,  # the model-only loop only: end_to_end runs the Method as configured
        "compile_mode": args.compile_mode,
        "dynamo_graphs": counters["stats"]["unique_graphs"],
        "dynamo_graph_breaks": sum(counters["graph_break"].values()),
        "model_gflops_per_step": round(step_flops / 1e9, 1),
        "model_tflops_per_s": round(step_flops * ceiling / args.batch_size / 1e12, 2),
        "bf16_peak_utilisation": flop_utilisation(device, step_flops * ceiling / args.batch_size),
        "model_only_img_per_s": round(ceiling, 1),
        "end_to_end_img_per_s": round(real, 1),
        "end_to_end_over_model_only": round(real / ceiling, 3),
        "augment_only_img_per_s": round(augment_only(args, data, device), 1),
        "pytorch_lightning": pl.__version__,
        **environment(device),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
