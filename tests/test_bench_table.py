"""bench/table.py without training: what a session's time fits, how sessions' results come back, and the README's
table assembled from them (every registered method has a row, measured or not)."""

import importlib
import json
import sys
from pathlib import Path

import pytest

from selfsup.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # the bench scripts import each other by module name
table = importlib.import_module("table")

ALONE = {"simclr": 20_000.0, "mocov2": 10_000.0}  # img/s alone


def test_every_registered_method_is_in_the_table() -> None:
    assert set(table.TABLE_METHODS) == set(METHODS) and table.TABLE_METHODS[:2] == ("simclr", "mocov2")


def test_the_plan_keeps_the_first_methods_that_fit_at_the_fewest_epochs() -> None:
    # 2 runs side by side give 1.5 times one run's total (each at 0.75 of its speed alone), 4 only 1.2 (0.3 each);
    # unmeasured methods count as the slowest (10,000 img/s). 30 epochs of 60,000 images: SimCLR 90 s alone, the
    # others 180 s. Two at a time: one wave of SimCLR and MoCo v2, 180 / 0.75 + 10 = 250 s, with the margin 312 s; a
    # third method adds a wave of 190 s: 550 s.
    totals = {1: 100.0, 2: 150.0, 4: 120.0}
    plan = table.plan(ALONE, totals, seconds=400, overhead_s=10)
    assert plan.concurrent == 2 and plan.epochs == table.MIN_EPOCHS
    assert plan.methods == table.TABLE_METHODS[:2] and plan.left_out == table.TABLE_METHODS[2:]
    assert plan.estimate_s == round(table.PLAN_MARGIN * 250)
    assert table.plan({}, totals, 400, 10).methods == ()  # nothing measured: nothing to plan from


def test_the_plan_gives_fewer_runs_than_the_best_count_the_share_measured_at_or_above_theirs() -> None:
    """Six runs side by side total 3 times one run, but two runs were not measured: they are planned at the six's
    share (half their speed alone), which makes one at a time faster. The gain of six applied to two (as before)
    planned 90 s where 360 s were needed, and the runs stopped unfinished."""
    two = ("simclr", "mocov2")
    plan = table.plan(ALONE, {1: 100.0, 6: 300.0}, seconds=1000, overhead_s=0, methods=two, epochs=30)
    assert plan.concurrent == 1 and plan.estimate_s == round(table.PLAN_MARGIN * (90 + 180))


def test_when_every_method_fits_the_plan_raises_their_epochs_together() -> None:
    two = ("simclr", "mocov2")
    plan = table.plan(ALONE, {1: 100.0}, seconds=600, overhead_s=0, methods=two)
    assert plan.methods == two and plan.left_out == ()
    # 60,000 x (1/20,000 + 1/10,000) = 9 s an epoch, 11.25 s with the margin: 53 epochs in 596 s, 54 in 608
    assert plan.epochs == 53
    assert table.plan(ALONE, {1: 100.0}, seconds=10**6, overhead_s=0, methods=two).epochs == table.MAX_EPOCHS
    assert table.plan(ALONE, {1: 100.0}, seconds=600, overhead_s=0, methods=two, epochs=40).epochs == 40


def session(seed: int, runs: dict[str, dict], stamp: str = "20261204T100000Z", device: str = "H200") -> dict:
    return {"seed": seed, "session": stamp, "device": device, "torch": "2.11.0", "date": "2026-12-04",
            "speeds": {method: 15_000.0 for method in runs}, "runs": runs}  # fmt: skip


def run(knn: float, finished: bool = True) -> dict:
    return {"finished": finished, "epochs": 30, "knn_top1": knn, "linear_top1": knn + 0.01,
            "fit_command": f"python train.py fit --knn {knn}"}  # fmt: skip


def test_collect_adds_sessions_and_assemble_writes_a_row_for_every_method(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    brought, results, checks = tmp_path / "brought", tmp_path / "results", tmp_path / "checks"
    brought.mkdir()
    sessions = [
        session(0, {"simclr": run(0.80), "mocov2": run(0.70, finished=False)}),
        session(0, {"mocov2": run(0.75)}, stamp="20261205T100000Z"),  # a later session measures what was left
        session(1, {"simclr": run(0.84)}, stamp="20261206T100000Z", device="H100"),
    ]
    for content in sessions:
        (brought / table.TABLE_FILE).write_text(json.dumps(content))
        (brought / table.CHECKS_FILE).write_text("{}")
        table.collect(brought, results, checks)
    assert len(list(results.iterdir())) == len(list(checks.iterdir())) == 3
    with pytest.raises(SystemExit, match="collected already"):
        table.collect(brought, results, checks)
    cut_short = tmp_path / "cut_short"  # a session ended before its table: its checks still come back
    cut_short.mkdir()
    (cut_short / table.CHECKS_FILE).write_text(json.dumps({"seed": 1, "session": "20261207T100000Z", "checks": {}}))
    table.collect(cut_short, results, checks)
    assert (checks / "seed1_20261207T100000Z.json").is_file() and len(list(results.iterdir())) == 3

    readme, page = tmp_path / "README.md", tmp_path / "benchmarks.md"
    for path in (readme, page):
        path.write_text(f"before\n{table.TABLE_START}\nold\n{table.TABLE_END}\nafter\n")
    table.assemble(results, readme, page)
    rows = {line.split(" | ")[0][2:]: line for line in readme.read_text().splitlines() if line.startswith("| ")}
    assert "82.00% (80.00% / 84.00%)" in rows["SimCLR"] and "H100, torch 2.11.0, 2026-12-04; H200" in rows["SimCLR"]
    assert "75.00% (seed 0 only)" in rows["MoCo v2"]  # the later session's finished run, not the unfinished one
    assert {table.label(method) for method in METHODS} <= set(rows)
    assert rows["BYOL"].startswith(f"| BYOL | {table.NOT_MEASURED} | {table.NOT_MEASURED} |")
    text = page.read_text()
    assert text.startswith("before\n") and text.endswith(f"{table.TABLE_END}\nafter\n") and "old" not in text
    assert "- MoCo v2, seed 0: `python train.py fit --knn 0.75`" in text and "fit --knn 0.7`" not in text
    assert "python train.py fit" not in readme.read_text()  # the README has the table only
    capsys.readouterr()
