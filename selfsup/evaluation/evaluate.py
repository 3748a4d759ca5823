"""`python train.py eval`: the numbers to quote for a pretraining checkpoint, computed the same way for every
method.

    python train.py eval --config configs/eval/linear.yaml --ckpt_path runs/simclr/version_0/checkpoints/last.ckpt

Loads the checkpoint's backbone (weights only), extracts clean features of the labelled training set and the
test set of the data it was trained on, then runs the kNN sweep, the linear probe and the diagnostics. It
prints a table, writes `results.json` next to the checkpoint (replacing an earlier evaluation of that folder),
and logs to wandb under the pretraining run's name with job type `eval` (offline unless wandb is configured).
"""

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jsonargparse import CLI

from selfsup.augment import CleanView, MultiView, ViewRecipe
from selfsup.data import SelfSupDataModule
from selfsup.errors import ConfigurationError
from selfsup.evaluation.checkpoint import Pretrained, load_pretrained
from selfsup.evaluation.diagnostics import representation_diagnostics
from selfsup.evaluation.features import extract_features
from selfsup.evaluation.knn import KNN_KS, KNN_TEMPERATURES, knn_sweep
from selfsup.evaluation.linear_probe import LinearProbeConfig, train_linear_probe
from selfsup.loggers import wandb_configured_online
from selfsup.runs import Metric, results_path


@dataclass(frozen=True)
class EvalData:
    """Which data to evaluate on; unset fields come from the checkpoint's own data settings."""

    dataset: str | None = None
    root: str | None = None
    max_samples: int | None = None
    batch_size: int = 512
    num_workers: int = 4


@dataclass(frozen=True)
class KnnConfig:
    ks: tuple[int, ...] = KNN_KS
    temperatures: tuple[float, ...] = KNN_TEMPERATURES
    headline_k: int = 200  # the headline result: InstDisc's k and T, also the online monitor's
    headline_temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.headline_k not in self.ks or self.headline_temperature not in self.temperatures:
            raise ConfigurationError(
                "knn.headline_k and knn.headline_temperature must be among knn.ks / knn.temperatures"
            )


def evaluate(
    ckpt_path: str,
    backbone: str | None = None,
    data: EvalData = EvalData(),
    knn: KnnConfig = KnnConfig(),
    linear: LinearProbeConfig = LinearProbeConfig(),
    linear_probe: bool = True,
    diagnostics: bool = True,
    diagnostics_samples: int = 2048,
    wandb: bool = True,
    wandb_project: str = "selfsup",
    output: str | None = None,
) -> dict[str, Any]:
    """Evaluate the backbone of a pretraining checkpoint.

    Args:
        ckpt_path: a checkpoint written by `train.py fit` (any method).
        backbone: if set, the backbone the checkpoint must hold (guards against evaluating the wrong file).
        data: the evaluation data; by default the dataset and root the checkpoint was trained on.
        knn: the kNN sweep over k and temperature.
        linear: the offline linear probe's settings.
        linear_probe: run the linear probe.
        diagnostics: alignment, uniformity, effective rank and pair similarities on the test set, from two
            augmented views drawn with the checkpoint's own view recipe.
        diagnostics_samples: test images the diagnostics use.
        wandb: log to Weights & Biases (offline unless configured online), under the pretraining run's name.
        wandb_project: the project, the same as pretraining's.
        output: where to write the results (default: results.json next to the checkpoint).
    """
    pretrained = load_pretrained(ckpt_path, backbone)
    datamodule, (bank_loader, test_loader) = _datamodule(pretrained, data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = pretrained.backbone.to(device, memory_format=torch.channels_last)
    recipes = [ViewRecipe.from_dict(v) for v in pretrained.hparams["views"]]
    clean = CleanView(pretrained.image_size, datamodule.mean, datamodule.std).to(device)

    start = time.perf_counter()
    train_features, train_labels = extract_features(network, bank_loader, clean, device)
    test_features, test_labels = extract_features(network, test_loader, clean, device)
    results: dict[str, Any] = {
        "checkpoint": str(Path(ckpt_path).resolve()),
        "method": pretrained.method,
        "run_name": pretrained.run_name,
        "backbone": pretrained.hparams["backbone"],
        "dataset": datamodule.dataset,
        "epoch": pretrained.epoch,
        "global_step": pretrained.global_step,
        "num_train": int((train_labels >= 0).sum()),
        "num_test": int((test_labels >= 0).sum()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "feature_seconds": round(time.perf_counter() - start, 2),
    }

    start = time.perf_counter()
    sweep = knn_sweep(
        test_features, test_labels, train_features, train_labels, datamodule.num_classes, knn.ks, knn.temperatures
    )
    headline = next(r for r in sweep if (r["k"], r["temperature"]) == (knn.headline_k, knn.headline_temperature))
    results["knn"] = {**headline, "sweep": sweep, "seconds": round(time.perf_counter() - start, 2)}

    if linear_probe:
        start = time.perf_counter()
        augmented = _augmented_features(network, bank_loader, pretrained.image_size, datamodule, device, linear.seed)
        probe = train_linear_probe(
            train_features, train_labels, test_features, test_labels, datamodule.num_classes, linear, augmented
        )
        results["linear"] = {**dataclasses.asdict(probe), "seconds": round(time.perf_counter() - start, 2)}
        results["linear"]["config"] = dataclasses.asdict(linear)

    if diagnostics:
        views = _diagnostic_views(
            network, test_loader, recipes, pretrained.image_size, datamodule, device, diagnostics_samples
        )
        results["diagnostics"] = representation_diagnostics(*views, histograms=True)

    destination = Path(output) if output else results_path(Path(ckpt_path).expanduser())
    destination.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results))
    print(f"results written to {destination}")
    if wandb:
        _log_to_wandb(results, wandb_project, destination.parent)
    return results


def _datamodule(pretrained: Pretrained, data: EvalData) -> tuple[SelfSupDataModule, list]:
    """The data module, set up, and its [labelled training set, test set] loaders."""
    dataset = data.dataset or pretrained.data.get("dataset")
    if dataset is None:
        raise ConfigurationError("The checkpoint does not name its dataset: set --data.dataset (and --data.root).")
    same_data = dataset == pretrained.data.get("dataset")
    datamodule = SelfSupDataModule(
        dataset=dataset,
        root=data.root or (pretrained.data.get("root") if same_data else None),
        batch_size=data.batch_size,
        max_samples=data.max_samples if data.max_samples is not None else pretrained.data.get("max_samples"),
        image_size=pretrained.image_size,
        folder_image_size=pretrained.data.get("folder_image_size"),
        num_workers=data.num_workers,
    )
    datamodule.prepare_data()
    datamodule.setup("validate")
    loaders = datamodule.val_dataloader()
    if not loaders:
        raise ConfigurationError(f"{dataset} has no labelled training and test images to evaluate on.")
    return datamodule, loaders


def _augmentation(recipe: ViewRecipe, image_size: int, datamodule: SelfSupDataModule, device: torch.device, seed: int):
    """uint8 images -> one augmented view per image, drawn from a generator seeded with `seed`."""
    single = [dataclasses.replace(recipe, num_views=1)]
    augment = MultiView(single, image_size, datamodule.mean, datamodule.std).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    return lambda images: augment(images, generator)[0]


def _augmented_features(network, loader, image_size: int, datamodule: SelfSupDataModule, device, seed: int):
    """epoch -> features of randomly resized-cropped (scale 0.08-1) and flipped training images: the standard
    augmented linear-probe protocol."""
    recipe = ViewRecipe(crop_scale=(0.08, 1.0), jitter_prob=0.0, grayscale_prob=0.0)
    return lambda epoch: extract_features(
        network, loader, _augmentation(recipe, image_size, datamodule, device, seed * 100_003 + epoch), device
    )[0]


def _diagnostic_views(network, loader, recipes, image_size, datamodule, device, samples: int) -> list[torch.Tensor]:
    """Features of two augmented views (the method's first two) of the first `samples` test images."""
    view_recipes = [r for r in recipes for _ in range(r.num_views)][:2]
    view_recipes += view_recipes[:1] * (2 - len(view_recipes))  # a one-view recipe: two draws of it
    batches = list(itertools.islice(loader, -(-samples // datamodule.batch_size)))
    views = []
    for seed, recipe in enumerate(view_recipes):
        augment = _augmentation(recipe, image_size, datamodule, device, seed)
        features, labels = extract_features(network, batches, augment, device)
        views.append(features[labels >= 0][:samples])
    return views


def format_results(results: dict[str, Any]) -> str:
    """The printed summary: the kNN sweep as a k x T table, then the probe and the diagnostics."""
    knn = results["knn"]
    temperatures = sorted({r["temperature"] for r in knn["sweep"]})
    lines = [
        f"{results['run_name']} ({results['method']}, {results['backbone']}, epoch {results['epoch']}) "
        f"on {results['dataset']}: {results['num_train']} train / {results['num_test']} test images",
        "",
        "kNN top-1  " + "".join(f"{'T=' + str(t):>9}" for t in temperatures),
    ]
    for k in sorted({r["k"] for r in knn["sweep"]}):
        row = {r["temperature"]: r["top1"] for r in knn["sweep"] if r["k"] == k}
        lines.append(f"k={k:<8} " + "".join(f"{100 * row[t]:>8.2f}%" for t in temperatures))
    lines.append(f"headline: kNN top-1 {100 * knn['top1']:.2f}% (k={knn['k']}, T={knn['temperature']})")
    if "linear" in results:
        linear = results["linear"]
        lines.append(
            f"linear probe: top-1 {100 * linear['top1']:.2f}%, top-5 {100 * linear['top5']:.2f}% "
            f"(lr {linear['learning_rate']}, weight decay {linear['weight_decay']}, {linear['seconds']} s)"
        )
    if "diagnostics" in results:
        d = results["diagnostics"]
        lines.append(
            f"diagnostics: alignment {d['alignment']:.3f}, uniformity {d['uniformity']:.3f}, effective rank "
            f"{d['effective_rank']:.1f}, cosine positive {d['positive_similarity']:.3f} / negative "
            f"{d['negative_similarity']:.3f}"
        )
    return "\n".join(lines)


def _log_to_wandb(results: dict[str, Any], project: str, directory: Path) -> None:
    import wandb  # imported here: only runs that log to wandb need it installed

    config = {key: results[key] for key in ("method", "dataset", "backbone", "checkpoint", "epoch")}
    run = wandb.init(
        project=project,
        name=results["run_name"],
        group=results["dataset"],
        job_type="eval",
        dir=str(directory),
        mode="online" if wandb_configured_online() else "offline",
        config=config,
    )
    metrics = {Metric.EVAL_KNN_TOP1: results["knn"]["top1"]}
    if "linear" in results:
        metrics |= {
            Metric.EVAL_LINEAR_TOP1: results["linear"]["top1"],
            Metric.EVAL_LINEAR_TOP5: results["linear"]["top5"],
        }
    for name, value in results.get("diagnostics", {}).items():
        if not isinstance(value, list):
            metrics[f"eval/{name}"] = value
    sweep = wandb.Table(columns=["k", "temperature", "top1"], data=[list(r.values()) for r in results["knn"]["sweep"]])
    run.log({**metrics, "eval/knn_sweep": sweep})
    run.summary.update(metrics)
    run.finish()


def main(args: list[str] | None = None) -> dict[str, Any]:
    """`train.py eval ...`: parse errors are raised (not printed with the usage), for `selfsup.cli` to report."""
    return CLI(evaluate, args=args, as_positional=False, exit_on_error=False)
