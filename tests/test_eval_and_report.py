"""`train.py eval` on checkpoints written by a short `train.py fit`, its bad-input errors, and the comparison report."""

import json
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from selfsup import report_plots
from selfsup.augment import CleanView
from selfsup.cli import main
from selfsup.data.datasets import read_idx
from selfsup.errors import ConfigurationError
from selfsup.evaluation.checkpoint import at_random_init, load_pretrained
from selfsup.evaluation.evaluate import accumulated, check_destination
from selfsup.report import Run, baseline_rows, markdown_table, seed_rows, within_spread, write_report
from selfsup.report import main as report_command
from selfsup.report_plots import DIAGNOSTICS, plot_scores
from selfsup.runs import Metric, results_path
from tests.conftest import needs_fashion_mnist
from tests.data.test_datasets import fake_fashion_mnist
from tests.evaluation.test_knn import brute_force_knn
from tests.test_train_cli import read_metrics, read_offline_wandb_run, run_train_py, train

TINY_MODEL = [
    "--model.init_args.backbone", "test_resnet", "--model.init_args.small_image_stem", "false",
    "--model.init_args.warmup_epochs", "0.5", "--trainer.log_every_n_steps", "1",
]  # fmt: skip


def evaluate(*args: str) -> dict:
    """`train.py eval` in this process; it returns the results it wrote."""
    return main(["eval", *args])


def evaluate_in_a_process(*args: str) -> subprocess.CompletedProcess:
    """`python train.py eval` as its own process, for its printed table and its offline wandb run."""
    return run_train_py("eval", *args)


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SimCLR (with the online diagnostics callback) and NNCLR, seeds 0 and 1 each, 2 epochs each on fake data:
    runs/<method>/version_<seed>."""
    root = tmp_path_factory.mktemp("runs")
    fake_fashion_mnist(root / "fmnist", train=96, test=40)
    data = ["--data.root", str(root / "fmnist"), "--data.batch_size", "16", "--trainer.max_epochs", "2"]
    callback = ["--trainer.callbacks+=selfsup.evaluation.DiagnosticsCallback", "--trainer.callbacks.every_n_steps=2"]
    for seed in ("0", "1"):
        seeded = [*data, *TINY_MODEL, "--seed_everything", seed, "--wandb", "false"]
        train(*seeded, *callback, root=root / "runs", method="simclr")
        train(*seeded, root=root / "runs", method="nnclr")
    return root / "runs"


def test_online_diagnostics_callback_logs_during_training(method_runs: Path) -> None:
    rows = read_metrics(method_runs / "simclr" / "version_0")
    for name in (
        "diag/alignment",
        "diag/uniformity",
        "diag/tolerance",
        "diag/effective_rank",
        "diag/positive_similarity",
    ):
        assert any(row[name] for row in rows), f"{name} never logged"
    assert any(row["time/elapsed_s"] for row in rows)


def test_eval_prints_table_writes_results_and_logs_an_offline_wandb_eval_run(method_runs: Path) -> None:
    checkpoint = method_runs / "simclr" / "version_0" / "checkpoints" / "last.ckpt"
    result = evaluate_in_a_process(
        "--config", "configs/eval/linear.yaml", "--ckpt_path", str(checkpoint), "--linear.epochs", "3"
    )
    assert "k=200" in result.stdout and "headline: kNN top-1" in result.stdout and "linear probe" in result.stdout
    assert result.stdout.startswith("simclr-v0 (simclr, test_resnet, 2 epochs) on fashion_mnist")  # as the map says
    results = json.loads((checkpoint.parent / "results.json").read_text())
    assert (
        results["method"] == "simclr" and results["run_name"] == "simclr-v0" and results["dataset"] == "fashion_mnist"
    )
    assert len(results["knn"]["sweep"]) == 12 and (results["knn"]["k"], results["knn"]["temperature"]) == (200, 0.1)
    assert 0 <= results["linear"]["top1"] <= results["linear"]["top5"] <= 1
    assert results["num_test"] == 40 and results["diagnostics"]["effective_rank"] >= 1
    assert -1 <= results["diagnostics"]["tolerance"] <= 1 and "tolerance" in result.stdout
    assert results["map"]["points"] == 40 and "map: embedding_map.png (t-SNE of 40 test images" in result.stdout
    assert (checkpoint.parent / "embedding_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_folder = checkpoint.parent.parent  # beside the pretraining run: one `wandb sync` command takes both
    wandb_run = read_offline_wandb_run(run_folder)
    assert wandb_run["name"] == "simclr-v0" and wandb_run["config"]["method"] == "simclr"
    assert wandb_run["summary"]["eval/knn_top1"] == pytest.approx(results["knn"]["top1"])
    assert wandb_run["summary"]["eval/linear_top1"] == pytest.approx(results["linear"]["top1"])
    assert list(run_folder.glob("wandb/offline-run-*/files/media/images/eval/embedding_map*.png"))


@pytest.mark.parametrize(
    "make_checkpoint, extra, message",
    [
        (lambda d, run: run, ["--backbone", "resnet50"], "holds a 'test_resnet' backbone, not 'resnet50'"),
        (lambda d, run: d / "missing.ckpt", [], "does not exist"),
        (lambda d, run: _save(d / "other.ckpt", {"state_dict": {}}), [], "not a selfsup pretraining checkpoint"),
        (lambda d, run: _save(d / "pickled.ckpt", {"hook": print}), [], "cannot be loaded as a weights-only"),
    ],
)
def test_bad_checkpoints_get_one_clear_error(
    make_checkpoint, extra: list[str], message: str, method_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = make_checkpoint(tmp_path, method_runs / "nnclr" / "version_0" / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--ckpt_path", str(checkpoint), "--wandb", "false", *extra])
    assert message in str(exit_info.value.code) + capsys.readouterr().err


def _save(path: Path, content: dict) -> Path:
    torch.save(content, path)
    return path


def test_two_methods_two_seeds_each_and_a_baseline_make_one_report_with_means_spreads_and_plots(
    method_runs: Path, tmp_path: Path
) -> None:
    """What a researcher does to compare methods: pretrain two methods with two seeds each, evaluate every run and
    one run's backbone at random initialisation, and report."""
    checkpoints = {(method, seed): method_runs / method / f"version_{seed}" / "checkpoints" / "last.ckpt"
                   for method in ("simclr", "nnclr") for seed in (0, 1)}  # fmt: skip
    quick = ["--wandb", "false", "--map_points", "0", "--linear.epochs", "2"]
    for (method, _), checkpoint in checkpoints.items():
        evaluate("--ckpt_path", str(checkpoint), *quick, *(["--diagnostics", "false"] if method == "nnclr" else []))
    evaluate("--ckpt_path", str(checkpoints["simclr", 0]), "--random_init", "true", *quick)
    report_command([str(method_runs), "--out", str(tmp_path)])

    rows = json.loads((tmp_path / "report.json").read_text())
    assert [(row["method"], row["seeds"]) for row in rows] == [
        ("nnclr", [0, 1]), ("simclr", [0, 1]), ("random init", []), ("raw pixels", []),
    ]  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    header = "| method | run | seeds | backbone | epochs | global batch | images/s | kNN top-1 | linear top-1 | "
    assert header + "online kNN top-1 | online probe top-1 | device hours | hardest negative cos |" in report
    for row in rows[:2]:
        method = row["method"]
        results = [json.loads(results_path(checkpoints[method, seed]).read_text()) for seed in (0, 1)]
        online = [[r for r in read_metrics(method_runs / method / f"version_{seed}") if r["val/knn_top1"]][-1]
                  for seed in (0, 1)]  # fmt: skip
        for key, values in (
            ("knn_top1", [r["knn"]["top1"] for r in results]),
            ("linear_top1", [r["linear"]["top1"] for r in results]),
            ("online_knn_top1", [float(r["val/knn_top1"]) for r in online]),
        ):
            assert row[key] == pytest.approx(statistics.mean(values)), (method, key)
            assert row[f"{key}_std"] == pytest.approx(statistics.stdev(values)), (method, key)
        assert (row["backbone"], row["epochs"], row["global_batch"]) == ("test_resnet", 2, 16) and row["img_per_s"] > 0
        line = f"| {method} | {method}-v0, {method}-v1 | 0, 1 | test_resnet | 2 | 16 |"
        assert line in report and f"{row['knn_top1']:.2%} ± {row['knn_top1_std']:.2%}" in report
    nnclr, simclr = rows[0], rows[1]
    assert simclr["hard_negative_sim"] is not None and nnclr["hard_negative_sim"] is None  # NNCLR logs none
    within = abs(simclr["knn_top1"] - nnclr["knn_top1"]) <= simclr["knn_top1_std"] + nnclr["knn_top1_std"]
    assert ("nnclr and simclr: kNN top-1 differs by" in report) == within

    baseline = json.loads((checkpoints["simclr", 0].parent / "random_init.json").read_text())
    assert baseline["epochs_trained"] == 0 and baseline["random_init_seed"] == 0
    assert rows[2]["knn_top1"] == baseline["knn"]["top1"] and rows[2]["linear_top1"] == baseline["linear"]["top1"]
    trained = json.loads(results_path(checkpoints["simclr", 0]).read_text())
    assert baseline["knn"]["sweep"] != trained["knn"]["sweep"]  # another network's features
    assert rows[2]["run"] == "simclr-v0's backbone, init seed 0"
    assert rows[3]["knn_top1"] == baseline["raw_pixels"]["knn"]["top1"] == raw_pixel_knn(method_runs.parent / "fmnist")
    assert "random init and raw pixels: the baseline" in report
    assert "Not in the diagnostics: nnclr-v0, nnclr-v1" in report  # evaluated with --diagnostics false

    for folder in method_runs.glob("*/version_*"):  # every run has its curves
        assert Run.load(folder).series(Metric.TRAIN_LOSS)[0] and Run.load(folder).series("lr/weights")[0]
    for image in ("knn.png", "curves.png", "scores.png", "diagnostics.png"):
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{image}]({image})" in report
    page = (tmp_path / "report.html").read_text()
    assert page.count('<tr class="run">') == 2 and page.count('<tr class="baseline">') == 2
    assert page.count('src="data:image/png;base64,') == 4 and "href=" not in page  # nothing outside the file


def test_the_random_init_baseline_is_the_architecture_untrained_drawn_from_its_seed(method_runs: Path) -> None:
    pretrained = load_pretrained(method_runs / "simclr" / "version_0" / "checkpoints" / "last.ckpt")
    state = torch.random.get_rng_state()
    first, again, other = at_random_init(pretrained), at_random_init(pretrained), at_random_init(pretrained, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left as it was
    weights = [next(model.backbone.parameters()) for model in (first, again, other, pretrained)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert not torch.equal(weights[0], weights[3])  # not the trained weights
    assert (first.epochs_trained, first.random_init_seed, pretrained.random_init_seed) == (0, 0, None)


def raw_pixel_knn(fashion_mnist: Path) -> float:
    """kNN top-1 (k=200, T=0.1) of the raw pixels of the fake Fashion-MNIST, from the plain float64 reference: the
    images as the clean evaluation view gives them (32 px, normalised)."""
    images = {split: torch.from_numpy(read_idx(fashion_mnist / f"{split}-images-idx3-ubyte.gz"))[:, None]
              for split in ("train", "t10k")}  # fmt: skip
    labels = {split: torch.from_numpy(read_idx(fashion_mnist / f"{split}-labels-idx1-ubyte")).long()
              for split in ("train", "t10k")}  # fmt: skip
    view = CleanView(32, (0.2860,) * 3, (0.3530,) * 3)
    pixels = {split: view(batch).flatten(1).double() for split, batch in images.items()}
    predicted = brute_force_knn(pixels["t10k"], pixels["train"], labels["train"], 10, 200, 0.1)
    return (predicted == labels["t10k"]).double().mean().item()


def test_runs_of_one_name_from_two_roots_are_told_apart_and_a_run_named_twice_is_one(tmp_path: Path) -> None:
    for root in ("here", "there"):
        folder = tmp_path / root / "simclr" / "version_0"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text("epoch,val/knn_top1\n0,0.5\n")
    here = tmp_path / "here"
    write_report([here, here / "simclr" / "version_0", tmp_path / "there"], tmp_path / "report")
    names = [row["run"] for row in json.loads((tmp_path / "report" / "report.json").read_text())]
    assert names == [f"simclr-v0 ({here})", f"simclr-v0 ({tmp_path / 'there'})"]  # as given


@needs_fashion_mnist
def test_linear_probe_of_a_briefly_pretrained_network_beats_chance_on_fashion_mnist(tmp_path: Path) -> None:
    data = ["--data.max_samples", "2048", "--data.batch_size", "128", "--trainer.max_epochs", "2"]
    train(*data, *TINY_MODEL, "--wandb", "false", root=tmp_path, method="simclr")
    checkpoint = tmp_path / "simclr" / "version_0" / "checkpoints" / "last.ckpt"
    evaluate("--ckpt_path", str(checkpoint), "--wandb", "false", "--diagnostics", "false", "--linear.epochs", "20",
             "--map_points", "0")  # fmt: skip
    results = json.loads((checkpoint.parent / "results.json").read_text())
    assert results["linear"]["top1"] > 0.5 and results["knn"]["top1"] > 0.4  # 10 classes: chance is 0.1


def test_the_diagnostics_plot_takes_results_written_before_tolerance_was_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results of an earlier version have no tolerance: their run has no bar in that panel, the other panels have both
    runs' bars. The figure is looked at, not saved (saving it takes seconds)."""
    drawn = []
    monkeypatch.setattr(
        report_plots, "save_figure", lambda figure, path: drawn.append(report_plots.plt.close(figure) or figure)
    )
    histograms = {"positive_histogram": [1, 3], "negative_histogram": [3, 1]}
    measured = {name: 0.5 for name, _ in DIAGNOSTICS} | histograms
    earlier = {name: value for name, value in measured.items() if name != "tolerance"}
    runs = [Run(name, "simclr", [], {}, {"diagnostics": d}) for name, d in (("new-v0", measured), ("old-v0", earlier))]
    assert report_plots.plot_diagnostics(runs, tmp_path) == [report_plots.DIAGNOSTICS_PLOT]
    panels = {axis.get_title().split(" (")[0]: axis for axis in drawn[0].axes}
    assert [label.get_text() for label in panels["tolerance"].get_xticklabels()] == ["new-v0"]
    assert len(panels["uniformity"].patches) == 2


def test_results_accumulate_a_rerun_replaces_only_what_it_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`selfsup eval --linear_probe false` after a full evaluation replaced results.json and lost the probe's
    figures; now the parts it did not measure stay, and it says so. Another state of the checkpoint starts afresh."""
    destination = tmp_path / "results.json"
    earlier = {"checkpoint": "/runs/simclr/version_0/checkpoints/last.ckpt", "global_step": 40,
               "knn": {"top1": 0.5}, "linear": {"top1": 0.6}, "diagnostics": {"uniformity": -3.0}}  # fmt: skip
    destination.write_text(json.dumps(earlier))
    rerun = {"checkpoint": earlier["checkpoint"], "global_step": 40, "knn": {"top1": 0.55}}
    merged = accumulated(rerun, destination)
    assert merged == {**rerun, "linear": {"top1": 0.6}, "diagnostics": {"uniformity": -3.0}}
    assert f"kept from the earlier evaluation in {destination}: linear, diagnostics" in capsys.readouterr().out
    trained_on = {**rerun, "global_step": 80}
    assert accumulated(trained_on, destination) == trained_on
    assert accumulated(rerun, tmp_path / "missing.json") == rerun
    baseline = {**rerun, "random_init_seed": 0}  # the same checkpoint's backbone untrained: nothing of it is kept
    assert accumulated(baseline, destination) == baseline


def test_trained_and_random_init_results_never_replace_each_other(tmp_path: Path) -> None:
    """`--random_init true --output results.json` mixed the untrained backbone's kNN with the trained probe."""
    trained, untrained = tmp_path / "results.json", tmp_path / "random_init.json"
    trained.write_text(json.dumps({"checkpoint": "/c.ckpt", "global_step": 4, "knn": {"top1": 0.5}}))
    untrained.write_text(json.dumps({"checkpoint": "/c.ckpt", "global_step": 4, "knn": {"top1": 0.2},
                                     "random_init_seed": 0}))  # fmt: skip
    with pytest.raises(ConfigurationError, match="holds the results of trained weights, which random-init results"):
        check_destination(trained, False, random_init=True)
    with pytest.raises(ConfigurationError, match="holds the results of the random-init baseline weights, which trai"):
        check_destination(untrained, False, random_init=False)
    check_destination(trained, False, random_init=False)  # an earlier evaluation of the same kind: replaced
    check_destination(untrained, False, random_init=True)


def baseline_run(name: str, backbone: str = "resnet18", stem: bool = True) -> Run:
    """A run with only the results of `selfsup eval --random_init true` on its checkpoint."""
    knn = {"top1": 0.5, "k": 200, "temperature": 0.1}
    pixels = {"knn": {**knn, "top1": 0.7}, "dimensions": 3072}
    baseline = {"backbone": backbone, "small_image_stem": stem, "backbone_kwargs": {}, "image_size": 32,
                "dataset": "fashion_mnist", "num_train": 100, "num_test": 50, "scored_on": "test",
                "random_init_seed": 0, "knn": knn, "raw_pixels": pixels}  # fmt: skip
    run = Run.from_rows(name, "simclr", [], {}, None)
    run.baseline = baseline
    return run


def test_baselines_are_one_row_per_architecture_and_raw_pixels_one_per_evaluation_data() -> None:
    rows = baseline_rows([baseline_run("a-v0"), baseline_run("a-v1"), baseline_run("b-v0", stem=False),
                          baseline_run("c-v0", backbone="resnet50")])  # fmt: skip
    assert [(row["method"], row["run"]) for row in rows] == [
        ("random init", "a-v0's backbone, init seed 0"), ("raw pixels", "32 px, 3,072 values"),
        ("random init", "b-v0's backbone, init seed 0"),  # another stem: another architecture
        ("random init", "c-v0's backbone, init seed 0"),
    ]  # fmt: skip


def seeded_run(method: str, seed: int, knn: float, group: str = "g") -> Run:
    """A run as `Run.load` reads it, with one epoch's online kNN and an offline kNN result."""
    metrics = [{"epoch": "0", "step": "9", Metric.KNN_TOP1: str(knn - 0.01), Metric.IMAGES_PER_SECOND: "100"}]
    results = {"knn": {"top1": knn, "k": 200, "temperature": 0.1}}
    run = Run.from_rows(f"{method}-v{seed}", method, metrics, {"backbone": "resnet18", "batch_size": 64}, results)
    run.seed, run.seed_group = seed, f"{method}-{group}"
    return run


def test_runs_that_differ_only_by_seed_are_one_row_with_mean_spread_seeds_and_a_note_when_within_it(
    tmp_path: Path,
) -> None:
    runs = [seeded_run("simclr", 0, 0.70), seeded_run("simclr", 1, 0.72), seeded_run("mocov2", 0, 0.705),
            seeded_run("mocov2", 1, 0.715), seeded_run("byol", 0, 0.50),
            seeded_run("simclr", 2, 0.60, "other")]  # fmt: skip
    rows = seed_rows(runs)
    assert [(row["method"], row["seeds"]) for row in rows] == [("simclr", [0, 1]), ("mocov2", [0, 1]),
                                                               ("byol", [0]), ("simclr", [2])]  # fmt: skip
    simclr = rows[0]
    assert simclr["run"] == "simclr-v0, simclr-v1" and simclr["knn_top1"] == pytest.approx(0.71)
    assert simclr["knn_top1_std"] == pytest.approx(statistics.stdev([0.70, 0.72]))
    table = markdown_table(rows)
    assert "| simclr | simclr-v0, simclr-v1 | 0, 1 | resnet18 |" in table and "71.00% ± 1.41%" in table
    assert "| byol | byol-v0 | 0 | resnet18 |" in table and "50.00% |" in table  # one seed: no spread
    assert plot_scores(rows, tmp_path) == ["scores.png"] and (tmp_path / "scores.png").stat().st_size > 0
    assert within_spread(rows) == [
        "simclr and mocov2: kNN top-1 differs by 0.00 points, within their seed spread (1.41 and 0.71 points): "
        "not a ranking."
    ]
