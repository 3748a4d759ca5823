"""bench/table.py, the results table's runner, without training: its plan names real options, a changed config
makes a result stale, a device call starts what fits (tuning runs side by side, table runs alone), its results
come back through one file, and the README table is assembled from them."""

import argparse
import dataclasses
import importlib.util
import inspect
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from selfsup.methods import METHODS
from selfsup.models.hard_negative_mixing import HardNegativeMixing
from selfsup.models.neighbours import NearestNeighbours

REPO = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(REPO / "bench"))  # the bench scripts import each other by module name
table, tuned = importlib.import_module("table"), importlib.import_module("tuned")


def options_of(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in inspect.signature(klass.__init__).parameters}


def test_plan_covers_every_method_and_names_only_real_options() -> None:
    chunks = table.plan(list(table.STAGES))
    names = [(chunk.stage, chunk.name) for chunk in chunks]
    assert len(names) == len(set(names))
    table_runs = [chunk for chunk in chunks if chunk.stage == "table"]
    assert {(chunk.method, chunk.seed) for chunk in table_runs} == {
        (method, seed) for method in table.TABLE_METHODS for seed in table.SEEDS
    }
    assert all(chunk.epochs == 100 and chunk.evaluate for chunk in table_runs)
    tuning = [chunk for chunk in chunks if chunk.stage == "tune"]
    assert all("--data.holdout" in chunk.options for chunk in tuning)  # never the test set
    assert {chunk.name for chunk in tuning if chunk.seed == 1} == {f"{m}-gray-s1" for m in table.OPTION_VARIANTS}
    for chunk in chunks:  # a misspelt option would only fail on the device
        for option in chunk.options[::2]:
            path = option.removeprefix("--model.init_args.").split(".")
            if option.startswith("--data."):
                assert option == "--data.holdout"
            elif len(path) == 2:
                groups = {"mixing": HardNegativeMixing, "neighbours": NearestNeighbours}
                assert path[1] in {field.name for field in dataclasses.fields(groups[path[0]])}, (chunk.name, option)
            else:
                assert path[0] in options_of(METHODS[chunk.method]), (chunk.name, option)


def test_tuning_views_are_gray_and_change_one_thing() -> None:
    """Saturation, hue and grayscale conversion do nothing to a gray image: the tuning recipes drop them, and a
    crop variant changes the full-size crops only (SwAV's small crops keep theirs)."""
    swav = {chunk.name: chunk for chunk in table.tuning_chunks() if chunk.method == "swav"}
    base, crops = swav["swav-gray"].views, swav["swav-crop0.35"].views
    assert all(v.saturation == v.hue == v.grayscale_prob == 0 for v in base)
    assert [v.crop_scale[0] for v in crops] == [0.35 if v.relative_size == 1 else v.crop_scale[0] for v in base]
    assert [dataclasses.replace(v, crop_scale=b.crop_scale) for v, b in zip(crops, base, strict=True)] == list(base)


def test_smoke_run_resizes_what_the_toy_data_cannot_hold() -> None:
    chunk = next(chunk for chunk in table.ablation_chunks() if chunk.method == "mochi")
    options = table.train_options(chunk, Path("run"), smoke=True)
    assert options[options.index("--trainer.max_epochs") + 1] == str(table.SMOKE_EPOCHS)
    assert options[options.index("--model.init_args.mixing.start_epoch") + 1] == "1"
    full = table.train_options(chunk, Path("run"), smoke=False)
    assert full[full.index("--model.init_args.mixing.start_epoch") + 1] == str(table.MIXING_START_EPOCH)


def fake_result(chunk, knn: float = 0.5) -> dict:
    return {
        **dataclasses.asdict(chunk),
        "views": chunk.view_values(),
        "digest": table.digest(chunk),
        "fit_command": f"python train.py fit --seed_everything {chunk.seed}",
        "scored_on": "test",
        "knn_top1": knn,
        "linear_top1": knn + 0.01,
        "online_knn_top1": None,
        "img_per_s": 1000.0,
        "device_hours": 0.1,
        "wall_s": 60.0,
        "concurrent_runs": 1,
        "history": [[0, knn - 0.1, 30.0], [1, knn, 60.0]],
        "hardness": {"train/hard_negative_sim": [[0, 0.6], [1, 0.7]]},
        "device": "test device",
        "torch": "2.x",
        "date": "2026-11-23",
    }


def test_a_result_is_stale_once_its_config_changes(tmp_path: Path) -> None:
    config = tmp_path / "method.yaml"
    config.write_text("model:\n  init_args:\n    temperature: 0.2\n")
    chunk = table.Chunk("table", "simclr-s0", "simclr", 0, 100, (str(config),), evaluate=True)
    (tmp_path / "table").mkdir()
    (tmp_path / chunk.result_file).write_text(json.dumps(fake_result(chunk)))
    assert table.result_of(chunk, tmp_path)["knn_top1"] == 0.5
    config.write_text("model:\n  init_args:\n    temperature: 0.1\n")
    assert table.result_of(chunk, tmp_path) is None
    assert table.run_root_of(chunk, tmp_path).name.endswith(table.digest(chunk))  # never resumes the old run


def run_args(tmp_path: Path, **values) -> argparse.Namespace:
    defaults = dict(
        stages=["tune"], only=None, budget_minutes=9.0, parallel=1, data_root=None, smoke=False,
        results=tmp_path / "results", runs=tmp_path / "runs", out=tmp_path / "out",
    )  # fmt: skip
    return argparse.Namespace(**(defaults | values))


class FakeAdvance:
    """Stands in for training: records which chunks ran and how many at once."""

    def __init__(self, meet: int = 1, unfinished: tuple[str, ...] = ()) -> None:
        self.barrier = threading.Barrier(meet, timeout=10)  # the first `meet` runs must all be running at once
        self.unfinished = unfinished
        self.lock = threading.Lock()
        self.ran: list[str] = []
        self.active = self.most_active = 0

    def __call__(self, chunk, args, seconds_left, side_by_side=lambda: 1) -> dict | None:
        with self.lock:
            self.ran.append(chunk.name)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            first = len(self.ran) <= self.barrier.parties
        if first:
            self.barrier.wait()
        time.sleep(0.01)
        result = None if chunk.name in self.unfinished else fake_result(chunk) | {"concurrent_runs": side_by_side()}
        with self.lock:
            self.active -= 1
        return result


def test_tuning_runs_side_by_side_skip_what_is_done_and_come_back_in_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = run_args(tmp_path, only=["simclr-*"], parallel=2)
    chunks = table.plan(["tune"], ["simclr-*"])
    done = chunks[0]
    (args.results / "tune").mkdir(parents=True)
    (args.results / done.result_file).write_text(json.dumps(fake_result(done)))
    fake = FakeAdvance(meet=2)
    monkeypatch.setattr(table, "advance", fake)
    table.run(args)
    assert sorted(fake.ran) == sorted(chunk.name for chunk in chunks[1:]) and fake.most_active == 2
    brought = json.loads((args.out / table.OUT_FILE).read_text())
    assert sorted(result["name"] for result in brought) == sorted(fake.ran)
    assert max(result["concurrent_runs"] for result in brought) == 2  # said in the results: speed was shared

    elsewhere = tmp_path / "collected"
    table.collect(argparse.Namespace(folder=args.out, results=elsewhere))
    assert all(table.result_of(chunk, elsewhere) is not None for chunk in chunks[1:])


def test_table_runs_alone_and_a_call_starts_only_what_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pretend tuning is done: the table runs wait for the tuned configs
    monkeypatch.setattr(table, "tuned_configs", lambda method: (f"configs/{method}.yaml", "configs/simclr.yaml"))
    fake = FakeAdvance()
    monkeypatch.setattr(table, "advance", fake)
    table.run(run_args(tmp_path, stages=["table"], parallel=3, budget_minutes=600.0))
    assert fake.most_active == 1 and len(fake.ran) == 12

    fake = FakeAdvance(unfinished=("mocov2-s0",))
    monkeypatch.setattr(table, "advance", fake)
    table.run(run_args(tmp_path / "short", stages=["table"], budget_minutes=8.0))
    assert fake.ran == ["simclr-s0"]  # simclr-s1 (about 8.4 minutes with its evaluation) waits for the next call
    table.run(run_args(tmp_path / "short", stages=["table"], budget_minutes=3.0))
    assert fake.ran == ["simclr-s0", "simclr-s1"]  # the first run of a call starts however long it is
    table.run(run_args(tmp_path / "short", stages=["table"], budget_minutes=9.0))
    assert fake.ran[2:] == ["mocov2-s0"]  # it did not finish: the call ends, the next call resumes it


def test_assemble_writes_the_table_and_its_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme, page = tmp_path / "README.md", tmp_path / "benchmarks.md"
    for path in (readme, page):
        path.write_text(f"before\n{table.TABLE_START}\nold table\n{table.TABLE_END}\nafter\n")
    monkeypatch.setattr(table, "README", readme)
    monkeypatch.setattr(table, "BENCHMARKS_PAGE", page)
    results = tmp_path / "results"
    for chunk in table.plan(["table", "ablation"]):
        if chunk.name in ("simclr-s0", "simclr-s1", "mocov2-s0"):
            (results / chunk.stage).mkdir(parents=True, exist_ok=True)
            knn = {"simclr-s0": 0.90, "simclr-s1": 0.92, "mocov2-s0": 0.88}[chunk.name]
            (results / chunk.result_file).write_text(json.dumps(fake_result(chunk, knn)))
    table.assemble(argparse.Namespace(results=results))
    readme_text, text = readme.read_text(), page.read_text()
    for written in (readme_text, text):
        assert written.startswith("before\n") and written.endswith(f"{table.TABLE_END}\nafter\n")
        assert "old table" not in written
    rows: dict[str, str] = {}  # the first table's row of each label; the mixing table's in mixing_rows
    mixing_rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| "):
            (mixing_rows if line.split(" | ")[0] in rows else rows)[line.split(" | ")[0]] = line
    assert "91.00% (90.00% / 92.00%)" in rows["| SimCLR"] and "92.00% (91.00% / 93.00%)" in rows["| SimCLR"]
    assert "88.00% (88.00% / -)" in rows["| MoCo v2"]
    assert "not run yet" in rows["| BYOL"]
    assert mixing_rows["| MoCo v2"].endswith(" | 0.700 | - | - |")  # the last epoch's hardest negative
    assert "test device, torch 2.x, 2026-11-23" in rows["| SimCLR"]
    assert "- simclr-s1: `python train.py fit --seed_everything 1`" in text
    assert "(results/knn.png)" in readme_text and "(results/hardness.png)" in readme_text
    assert rows["| SimCLR"] in readme_text and "hard negative mixing" not in readme_text  # the README: one table
    assert (results / "knn.png").stat().st_size > 0 and (results / "hardness.png").stat().st_size > 0


def test_tuning_keeps_a_family_s_best_only_beyond_the_seed_spread() -> None:
    scores = {"gray": 0.850, "gray-s1": 0.858, "lr0.2": 0.870, "lr0.8": 0.875, "temp0.1": 0.861, "wd1e-4": 0.84}
    kept, families, needed = tuned.choose(scores)
    assert needed == pytest.approx(0.008)  # the recipe's seeds differ by more than MIN_GAIN
    assert kept == {"lr": "lr0.8"}  # temp0.1 beats the mean 0.854 by 0.007 only; wd1e-4 is worse
    assert families["lr"] == {"lr0.2": 0.870, "lr0.8": 0.875}
    assert tuned.choose(scores | {"gray-s1": 0.851})[0] == {"lr": "lr0.8", "temp": "temp0.1"}  # needs MIN_GAIN


def test_tuned_config_trains_what_was_chosen(tmp_path: Path, image_folder: Path) -> None:
    """The written YAML is a config train.py accepts: SwAV with the kept prototypes and crop scale, on gray views,
    whose small crops keep their recipe."""
    from selfsup.cli import SelfSupCLI

    labels = [chunk.name.removeprefix("swav-") for chunk in table.tuning_chunks() if chunk.method == "swav"]
    scores = {label: 0.85 for label in labels} | {"prototypes100": 0.87, "crop0.35": 0.866, "lr1.2": 0.852}
    config = tmp_path / "swav.yaml"
    config.write_text(tuned.config_text("swav", scores))
    text = config.read_text()
    assert "num_prototypes: 100  # prototypes100: 87.00% (not prototypes1000 85.00%)" in text
    assert "lr (lr0.3 85.00%, lr1.2 85.20%)" in " ".join(line.strip("# ") for line in text.splitlines())
    method = ["--config", str(REPO / "configs" / "swav.yaml"), "--config", str(config)]
    small = ["--model.init_args.backbone", "test_resnet", "--data.root", str(image_folder), "--wandb", "false"]
    cli = SelfSupCLI(args=method + small, run=False)
    assert cli.model.hparams.num_prototypes == 100
    recipes = cli.model.multiview.recipes
    expected = table.VIEW_VARIANTS["crop0.35"](tuple(table.grayscale(v) for v in table.method_views("swav")))
    assert recipes == expected and recipes != table.method_views("swav")


def test_a_failing_command_ends_the_call_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with pytest.raises(table.ChunkFailed) as failure:
        table.call([sys.executable, "-c", "print('bad option'); raise SystemExit(3)"], log)
    assert str(failure.value).splitlines() == [
        "bad option",
        f"-c print('bad option'); raise SystemExit(3) exited with 3; its log: {log}",
    ]


def test_the_table_says_when_tuning_changed_mochi_s_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "mocov2.yaml"
    monkeypatch.setattr(table, "tuned_config", lambda method: str(config))
    assert table.queue_note() == []  # not tuned yet
    config.write_text("model:\n  init_args:\n    queue_size: 4096\n")
    assert "queue of 4,096 keys" in table.queue_note()[1] and "N = 1024 is 25% of it" in table.queue_note()[1]
    config.write_text("model:\n  init_args:\n    base_lr: 0.6\n")
    assert table.queue_note() == []  # the recipe's queue
