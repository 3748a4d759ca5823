"""`selfsup eval`: the numbers to quote for a pretraining checkpoint, computed the same way for every
method.

    selfsup eval --config eval/linear --ckpt_path runs/simclr/version_0/checkpoints/last.ckpt

Loads the checkpoint's backbone (weights only), extracts clean features of the labelled training set and the
test set of the data it was trained on, then runs the kNN sweep, the linear probe and the diagnostics. It
prints a table, writes `results.json` next to the checkpoint (replacing an earlier evaluation of that folder,
whole or not at all; any other existing file is never replaced) and a t-SNE map of the test features beside
it (`embedding_map.png`), and logs both to wandb under the pretraining run's name with job type `eval` (offline
unless wandb is configured). Where they go is checked before any work starts.

    selfsup eval --ckpt_path runs/simclr/version_0/checkpoints/last.ckpt --random_init true

measures the baseline the same way: the checkpoint's backbone at random initialisation, and the kNN of the raw
pixels, into `random_init.json` beside the checkpoint (wandb job type `baseline`).

On several devices (`torchrun --nproc_per_node N -m selfsup eval ...`) it runs the same steps sharded: each rank
extracts the features of its share of the data, the kNN search merges the ranks' candidates without gathering
the bank, the linear probe trains on the features gathered in dataset order, and rank 0 computes the
diagnostics and writes the results; the numbers equal one process's.
"""

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jsonargparse import CLI
from torch import nn

from selfsup.atomic import WriteError, check_writable, write_text
from selfsup.augment import CleanView, MultiView, ViewRecipe
from selfsup.data import SelfSupDataModule
from selfsup.distributed import all_reduce, barrier, gather_interleaved, init_from_environment, rank, world_size
from selfsup.errors import ConfigurationError
from selfsup.evaluation.checkpoint import Pretrained, at_random_init, load_pretrained
from selfsup.evaluation.diagnostics import representation_diagnostics
from selfsup.evaluation.embedding_map import embedding_map
from selfsup.evaluation.features import extract_features
from selfsup.evaluation.knn import KNN_KS, KNN_TEMPERATURES, knn_sweep
from selfsup.evaluation.linear_probe import LinearProbeConfig, train_linear_probe
from selfsup.loggers import wandb_configured_online
from selfsup.runs import Metric, baseline_path, embedding_map_path, eval_wandb_folder, results_path


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
    """The kNN sweep of `selfsup eval`: every k in `ks` with every vote temperature in `temperatures`; the
    headline pair (k=200, T=0.1, InstDisc's: "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", Wu et al., CVPR 2018, Sec. 3.4) must be one of them."""

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
    random_init: bool = False,
    backbone: str | None = None,
    data: EvalData = EvalData(),
    knn: KnnConfig = KnnConfig(),
    linear: LinearProbeConfig = LinearProbeConfig(),
    linear_probe: bool = True,
    diagnostics: bool = True,
    diagnostics_samples: int = 2048,
    map_points: int = 2000,
    wandb: bool = True,
    wandb_project: str = "selfsup",
    output: str | None = None,
) -> dict[str, Any]:
    """Evaluate the backbone of a pretraining checkpoint, in one process or under `torchrun --nproc_per_node N`.

    Args:
        ckpt_path: a checkpoint written by `selfsup fit` (any method).
        random_init: evaluate the checkpoint's backbone at random initialisation (seed 0) instead of its weights,
            with the same data and protocol, and the kNN of the raw pixels: the baseline its results are read
            against. Written to random_init.json beside the checkpoint, which the report shows as baseline rows.
        backbone: if set, the backbone the checkpoint must hold (guards against evaluating the wrong file).
        data: the evaluation data; by default the dataset and root the checkpoint was trained on.
        knn: the kNN sweep over k and temperature.
        linear: the offline linear probe's settings.
        linear_probe: run the linear probe.
        diagnostics: alignment, uniformity, tolerance, effective rank and pair similarities on the test set, from
            two augmented views drawn with the checkpoint's own view recipe.
        diagnostics_samples: test images the diagnostics use.
        map_points: test images drawn on the t-SNE map of the features, beside the results (at most 10,000,
            about 20 s on 2 CPU cores; 2,000 take a few seconds); 0: no map.
        wandb: log to Weights & Biases (offline unless configured online), under the pretraining run's name.
        wandb_project: the project, the same as pretraining's.
        output: where to write the results (default: results.json next to the checkpoint, random_init.json
            with --random_init).
    """
    if map_points < 0:
        raise ConfigurationError(f"--map_points must be at least 0 (0: no map), got {map_points}")
    default_destination = baseline_path if random_init else results_path
    destination = Path(output).expanduser() if output else default_destination(Path(ckpt_path).expanduser())
    check_destination(destination, map_points > 0, random_init)
    device = init_from_environment()
    setup = load(ckpt_path, backbone, data, device, random_init)
    features = extract(setup, setup.network)
    results = describe(setup, features)
    results["knn"] = knn_results(features, setup.datamodule.num_classes, knn)
    if random_init:
        results["raw_pixels"] = raw_pixel_results(setup, knn)
    if linear_probe:
        results["linear"] = linear_results(setup, features, linear)
    if diagnostics and rank() == 0:
        results["diagnostics"] = diagnostic_results(setup, diagnostics_samples)
    drawn, map_failure = None, None
    if map_points:
        try:
            drawn = map_results(setup, features, results, map_points, embedding_map_path(destination))
        except WriteError as error:  # the numbers are written (or printed) first: they are what the run was for
            map_failure = error
    if drawn:
        results["map"] = drawn
    if rank() == 0:
        results = accumulated(results, destination)
        write(results, destination, wandb_project if wandb else None)
    if map_failure is not None:
        raise map_failure
    return results


@dataclass
class Setup:
    """What every step needs: the checkpoint's frozen backbone on this process's device, the data, and this
    rank's share of the labelled training set and of the test set."""

    ckpt_path: str
    pretrained: Pretrained
    datamodule: SelfSupDataModule
    bank_loader: Iterable
    test_loader: Iterable
    device: torch.device

    @property
    def network(self) -> torch.nn.Module:
        return self.pretrained.backbone


@dataclass
class Features:
    """Clean features and labels of this rank's share of the training and test sets (labels -1: padding)."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    seconds: float


def load(ckpt_path: str, backbone: str | None, data: EvalData, device: torch.device, random_init: bool) -> Setup:
    """The checkpoint's backbone (weights only; untrained with `random_init`) and the data module with this rank's
    evaluation loaders."""
    pretrained = load_pretrained(ckpt_path, backbone)
    if random_init:
        pretrained = at_random_init(pretrained)
    pretrained.backbone.to(device, memory_format=torch.channels_last)
    datamodule = _datamodule(pretrained, data)
    loaders = datamodule.evaluation_loaders(rank(), world_size())
    if not loaders:
        raise ConfigurationError(f"{datamodule.dataset} has no labelled training and test images to evaluate on.")
    return Setup(ckpt_path, pretrained, datamodule, *loaders, device)


def extract(setup: Setup, network: nn.Module) -> Features:
    """`network`'s features of the clean views of this rank's training and test images."""
    start = time.perf_counter()
    clean = CleanView(setup.pretrained.image_size, setup.datamodule.mean, setup.datamodule.std).to(setup.device)
    train, train_labels = extract_features(network, setup.bank_loader, clean, setup.device)
    test, test_labels = extract_features(network, setup.test_loader, clean, setup.device)
    return Features(train, train_labels, test, test_labels, round(time.perf_counter() - start, 2))


def describe(setup: Setup, features: Features) -> dict[str, Any]:
    """What was evaluated, on what, and how long the features took (the slowest rank's time)."""
    counts = all_reduce(torch.stack([(features.train_labels >= 0).sum(), (features.test_labels >= 0).sum()]))
    seconds = all_reduce(torch.tensor(features.seconds, device=features.train.device), "max").item()
    pretrained, device = setup.pretrained, setup.device
    return {
        "checkpoint": str(Path(setup.ckpt_path).resolve()),
        "method": pretrained.method,
        "run_name": pretrained.run_name,
        "backbone": pretrained.hparams["backbone"],
        "small_image_stem": pretrained.hparams.get("small_image_stem"),
        "backbone_kwargs": pretrained.hparams.get("backbone_kwargs") or {},
        "dataset": setup.datamodule.dataset,
        "epoch": pretrained.epoch,
        "epochs_trained": pretrained.epochs_trained,
        "global_step": pretrained.global_step,
        **({} if pretrained.random_init_seed is None else {"random_init_seed": pretrained.random_init_seed}),
        "image_size": pretrained.image_size,
        "num_train": int(counts[0]),
        "num_test": int(counts[1]),
        "scored_on": "holdout" if setup.datamodule.holdout else "test",  # the run's --data.holdout, if it had one
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "devices": world_size(),
        "feature_seconds": round(seconds, 2),
    }


def knn_results(features: Features, num_classes: int, config: KnnConfig) -> dict[str, Any]:
    """The sweep over every rank's queries, each rank searching only its own bank shard."""
    start = time.perf_counter()
    sweep = knn_sweep(
        features.test, features.test_labels, features.train, features.train_labels, num_classes,
        config.ks, config.temperatures, sharded=True,
    )  # fmt: skip
    headline = next(r for r in sweep if (r["k"], r["temperature"]) == (config.headline_k, config.headline_temperature))
    return {**headline, "sweep": sweep, "seconds": round(time.perf_counter() - start, 2)}


RAW_PIXELS_MAX_SIZE = 64  # 3 x 64 x 64 values an image: a bank of 60,000 images takes 2.9 GB


def raw_pixel_results(setup: Setup, config: KnnConfig) -> dict[str, Any]:
    """The kNN sweep on the clean views' normalised pixels themselves: the floor below even an untrained network
    (at most RAW_PIXELS_MAX_SIZE px; above it, said and skipped)."""
    size = setup.pretrained.image_size
    if size > RAW_PIXELS_MAX_SIZE:
        reason = f"not measured at {size} px: raw pixels are compared at up to {RAW_PIXELS_MAX_SIZE} px"
        if rank() == 0:
            print(f"raw pixels: {reason}")
        return {"skipped": reason}
    pixels = extract(setup, nn.Flatten())
    return {"knn": knn_results(pixels, setup.datamodule.num_classes, config), "dimensions": pixels.train.shape[1]}


def linear_results(setup: Setup, features: Features, config: LinearProbeConfig) -> dict[str, Any]:
    """The probe on features gathered in dataset order, so every rank trains what one process would (with
    `config.augment`, each rank draws the crops of its own share)."""
    start = time.perf_counter()
    augmented = _augmented_features(setup, config.seed)
    probe = train_linear_probe(
        gather_interleaved(features.train), gather_interleaved(features.train_labels),
        gather_interleaved(features.test), gather_interleaved(features.test_labels),
        setup.datamodule.num_classes, config, lambda epoch: gather_interleaved(augmented(epoch)),
    )  # fmt: skip
    seconds = round(time.perf_counter() - start, 2)
    return {**dataclasses.asdict(probe), "seconds": seconds, "config": dataclasses.asdict(config)}


def diagnostic_results(setup: Setup, samples: int) -> dict[str, Any]:
    """Diagnostics of the first `samples` test images, all read by this process (rank 0)."""
    test_loader = setup.datamodule.evaluation_loaders()[1]
    recipes = [ViewRecipe.from_dict(v) for v in setup.pretrained.hparams["views"]]
    views, labels = _diagnostic_views(setup, test_loader, recipes, samples)
    return representation_diagnostics(*views, labels=labels, histograms=True)


def map_results(
    setup: Setup, features: Features, results: dict[str, Any], points: int, path: Path
) -> dict[str, Any] | None:
    """The t-SNE map of the test features (gathered in dataset order, drawn by rank 0; None on other ranks)."""
    test, test_labels = gather_interleaved(features.test), gather_interleaved(features.test_labels)
    if rank() != 0:
        return None
    title = _what_was_evaluated(results)
    class_names = getattr(setup.datamodule, "classes", None)
    return embedding_map(test, test_labels, points, f"{title}: test features, t-SNE", path, class_names)


def check_destination(destination: Path, draws_map: bool, random_init: bool) -> None:
    """Before any work: the results (and the map beside them) can be written, and an existing file there is an
    earlier evaluation's results of the same kind (trained weights, or the random-init baseline), never a file of
    the user's, nor the other kind of results, that would be replaced."""
    check_writable(destination, "--output")
    earlier = _earlier_results(destination)
    earlier_evaluation = earlier is not None
    if destination.is_file() and not earlier_evaluation:
        raise ConfigurationError(
            f"--output {destination} exists and is not the results of `selfsup eval`, so it is not replaced; "
            "choose a new file name."
        )
    if earlier_evaluation and _is_baseline(earlier) != random_init:
        held, written = ("the random-init baseline", "trained") if not random_init else ("trained", "random-init")
        raise ConfigurationError(
            f"--output {destination} holds the results of {held} weights, which {written} results do not replace; "
            "choose a new file name."
        )
    if draws_map:
        drawing = embedding_map_path(destination)
        check_writable(drawing, "--output (the map beside it)")
        if drawing.exists() and not earlier_evaluation:
            raise ConfigurationError(
                f"{drawing} exists beside --output {destination}, which holds no earlier evaluation, so it is not "
                "replaced; choose a new file name (or --map_points 0)."
            )


MEASURED_PARTS = ("knn", "linear", "diagnostics", "map")  # what an evaluation measures, each optional but kNN


def accumulated(results: dict[str, Any], destination: Path) -> dict[str, Any]:
    """`results` with the parts an earlier evaluation of the same checkpoint (its path and step, and its weights:
    trained, or the same random initialisation) wrote to `destination` and this one did not measure again:
    `--linear_probe false` re-measures the rest and keeps the probe's figures. It says what it kept; results of
    another checkpoint, or of this one before it trained on, are replaced whole."""
    earlier = _earlier_results(destination)
    if earlier is None:
        return results
    identity = ("checkpoint", "global_step", "random_init_seed")
    if any(earlier.get(key) != results.get(key) for key in identity):
        return results
    kept = [part for part in MEASURED_PARTS if part in earlier and part not in results]
    if kept:
        print(f"kept from the earlier evaluation in {destination}: {', '.join(kept)} (not measured again)")
    return results | {part: earlier[part] for part in kept}


def _is_baseline(results: dict[str, Any]) -> bool:
    """Whether `results` are those of `--random_init true`: the checkpoint's backbone untrained."""
    return "random_init_seed" in results


def _earlier_results(path: Path) -> dict[str, Any] | None:
    """The results of `selfsup eval` that `path` holds, or None: no file, or not such results."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and "knn" in results and "checkpoint" in results else None


def write(results: dict[str, Any], destination: Path, wandb_project: str | None) -> None:
    """results.json (replacing the old file whole or not at all), the printed summary, and the wandb run (None:
    no wandb). If the file cannot be written, the whole results are printed before the error: nothing measured
    is lost."""
    print(format_results(results))
    try:
        write_text(destination, json.dumps(results, indent=2) + "\n")
    except WriteError:
        print(f"results (not written):\n{json.dumps(results, indent=2)}")
        raise
    print(f"results written to {destination}")
    if wandb_project is not None:
        _log_to_wandb(
            results, wandb_project, destination.parent, eval_wandb_folder(Path(results["checkpoint"]), destination)
        )


def _datamodule(pretrained: Pretrained, data: EvalData) -> SelfSupDataModule:
    """The data module of the checkpoint's data (or of `data`), set up for evaluation."""
    dataset = data.dataset or pretrained.data.get("dataset")
    if dataset is None:
        raise ConfigurationError("The checkpoint does not name its dataset: set --data.dataset (and --data.root).")
    same_data = dataset == pretrained.data.get("dataset")
    datamodule = SelfSupDataModule(
        dataset=dataset,
        root=data.root or (pretrained.data.get("root") if same_data else None),
        batch_size=data.batch_size,
        max_samples=data.max_samples if data.max_samples is not None else pretrained.data.get("max_samples"),
        holdout=pretrained.data.get("holdout", 0) if same_data else 0,  # a tuning run is never scored on the test set
        image_size=pretrained.image_size,
        folder_image_size=pretrained.data.get("folder_image_size") if same_data else None,
        num_workers=data.num_workers,
    )
    if os.environ.get("LOCAL_RANK", "0") == "0":
        datamodule.prepare_data()  # a download, once per machine
    barrier()
    datamodule.setup("validate")
    return datamodule


def _augmentation(recipe: ViewRecipe, setup: Setup, seed: int):
    """uint8 images -> one augmented view per image, drawn from a generator seeded with `seed`."""
    single = [dataclasses.replace(recipe, num_views=1)]
    augment = MultiView(single, setup.pretrained.image_size, setup.datamodule.mean, setup.datamodule.std)
    augment = augment.to(setup.device)
    generator = torch.Generator(device=setup.device).manual_seed(seed)
    return lambda images: augment(images, generator)[0]


def _augmented_features(setup: Setup, seed: int):
    """epoch -> features of this rank's randomly resized-cropped (scale 0.08-1) and flipped training images: the
    standard augmented linear-probe protocol."""
    recipe = ViewRecipe(crop_scale=(0.08, 1.0), jitter_prob=0.0, grayscale_prob=0.0)
    return lambda epoch: extract_features(
        setup.network, setup.bank_loader, _augmentation(recipe, setup, seed * 100_003 + epoch + 1_000_003 * rank()),
        setup.device,
    )[0]  # fmt: skip


def _diagnostic_views(
    setup: Setup, loader: Iterable, recipes: list[ViewRecipe], samples: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Features of two augmented views (the method's first two) of the first `samples` labelled test images, and
    their labels."""
    view_recipes = [r for r in recipes for _ in range(r.num_views)][:2]
    view_recipes += view_recipes[:1] * (2 - len(view_recipes))  # a one-view recipe: two draws of it
    batches = list(itertools.islice(loader, -(-samples // setup.datamodule.batch_size)))
    views = []
    for seed, recipe in enumerate(view_recipes):
        features, labels = extract_features(setup.network, batches, _augmentation(recipe, setup, seed), setup.device)
        views.append(features[labels >= 0][:samples])
    return views, labels[labels >= 0][:samples]


def _what_was_evaluated(results: dict[str, Any]) -> str:
    """`simclr-v0 (simclr, resnet18, 2 epochs)`: the run, its method and backbone, and the epochs it trained, said
    alike in the printed summary and the map's title; for a baseline, `simclr-v0's resnet18 at random
    initialisation (seed 0)`."""
    if _is_baseline(results):
        seed = results["random_init_seed"]
        return f"{results['run_name']}'s {results['backbone']} at random initialisation (seed {seed})"
    epochs = f"{results['epochs_trained']} epoch" + ("" if results["epochs_trained"] == 1 else "s")
    return f"{results['run_name']} ({results['method']}, {results['backbone']}, {epochs})"


def format_results(results: dict[str, Any]) -> str:
    """The printed summary: the kNN sweep as a k x T table, then the probe and the diagnostics."""
    knn = results["knn"]
    temperatures = sorted({r["temperature"] for r in knn["sweep"]})
    lines = [
        f"{_what_was_evaluated(results)} on {results['dataset']}: {results['num_train']} train / {results['num_test']} "
        + ("held-out training images" if results.get("scored_on") == "holdout" else "test images"),
        "",
        "kNN top-1  " + "".join(f"{'T=' + str(t):>9}" for t in temperatures),
    ]
    for k in sorted({r["k"] for r in knn["sweep"]}):
        row = {r["temperature"]: r["top1"] for r in knn["sweep"] if r["k"] == k}
        lines.append(f"k={k:<8} " + "".join(f"{100 * row[t]:>8.2f}%" for t in temperatures))
    lines.append(f"headline: kNN top-1 {100 * knn['top1']:.2f}% (k={knn['k']}, T={knn['temperature']})")
    if "knn" in results.get("raw_pixels", {}):
        lines.append(f"raw pixels: kNN top-1 {100 * results['raw_pixels']['knn']['top1']:.2f}% (the same k and T)")
    if "linear" in results:
        linear = results["linear"]
        lines.append(
            f"linear probe: top-1 {100 * linear['top1']:.2f}%, top-5 {100 * linear['top5']:.2f}% "
            f"(lr {linear['learning_rate']}, weight decay {linear['weight_decay']}, {linear['seconds']} s)"
        )
    if "diagnostics" in results:
        d = results["diagnostics"]
        lines.append(
            f"diagnostics: alignment {d['alignment']:.3f}, uniformity {d['uniformity']:.3f}, tolerance "
            f"{d['tolerance']:.3f}, effective rank "
            f"{d['effective_rank']:.1f}, cosine positive {d['positive_similarity']:.3f} / negative "
            f"{d['negative_similarity']:.3f}"
        )
    if "map" in results:
        drawn = results["map"]
        lines.append(f"map: {drawn['file']} ({drawn['method']} of {drawn['points']} test images, {drawn['seconds']} s)")
    return "\n".join(lines)


def _log_to_wandb(results: dict[str, Any], project: str, results_folder: Path, wandb_folder: Path) -> None:
    import wandb  # imported here: only runs that log to wandb need it installed

    config = {key: results[key] for key in ("method", "dataset", "backbone", "checkpoint", "epochs_trained")}
    baseline = _is_baseline(results)
    if baseline:
        config["random_init_seed"] = results["random_init_seed"]
    run = wandb.init(
        project=project,
        name=results["run_name"],
        group=results["dataset"],
        job_type="baseline" if baseline else "eval",
        dir=str(wandb_folder),
        mode="online" if wandb_configured_online() else "offline",
        config=config,
    )
    metrics = {Metric.EVAL_KNN_TOP1: results["knn"]["top1"]}
    if "knn" in results.get("raw_pixels", {}):
        metrics[Metric.EVAL_RAW_PIXELS_KNN_TOP1] = results["raw_pixels"]["knn"]["top1"]
    if "linear" in results:
        metrics |= {
            Metric.EVAL_LINEAR_TOP1: results["linear"]["top1"],
            Metric.EVAL_LINEAR_TOP5: results["linear"]["top5"],
        }
    for name, value in results.get("diagnostics", {}).items():
        if not isinstance(value, list):
            metrics[f"eval/{name}"] = value
    sweep = wandb.Table(columns=["k", "temperature", "top1"], data=[list(r.values()) for r in results["knn"]["sweep"]])
    images = (
        {Metric.EVAL_EMBEDDING_MAP: wandb.Image(str(results_folder / results["map"]["file"]))}
        if "map" in results
        else {}
    )
    run.log({**metrics, "eval/knn_sweep": sweep, **images})
    run.summary.update(metrics)
    run.finish()


def main(args: list[str] | None = None) -> dict[str, Any]:
    """`selfsup eval ...`: parse errors are raised (not printed with the usage), for `selfsup.cli` to report."""
    return CLI(evaluate, args=args, as_positional=False, exit_on_error=False)
