"""bench/gpu_evidence.py --smoke: the GPU session's command end to end at toy size on the CPU, every stage, with what
each stage wrote checked: the files a session brings back are complete and say what they measured."""

import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
METHODS = ("simclr",)  # one run: the concurrency probe has run two side by side
sys.path.insert(0, str(REPO / "bench"))  # the bench scripts import each other by module name
gpu_evidence, common = importlib.import_module("gpu_evidence"), importlib.import_module("common")


def test_the_smoke_runs_every_stage_and_writes_each_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "bench/gpu_evidence.py", "--smoke", "--out", str(out), "--seed", "1",
               "--methods", *METHODS]  # fmt: skip
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == ["checks.json", "log.txt", "table.json"]
    assert "done in" in (out / "log.txt").read_text().splitlines()[-1]

    checks = json.loads((out / "checks.json").read_text())["checks"]
    assert not [name for name, result in checks.items() if "error" in result]
    assert set(checks) == {"ddp", "speeds", "placements", "compile", "packed"}
    ddp = checks["ddp"]
    assert ddp["passed"] and set(ddp["results"]) == {"simclr fp32", "mocov2 fp32", "swav fp32"}  # a CPU's runs
    for result in ddp["results"].values():  # the ranks end identical, and as one process on the whole batches
        assert result["ranks_largest_difference"] == 0.0
        assert result["update_vs_one_process"] < ddp["update_tolerance"]["fp32"]
        assert len(result["rank_losses"]) == 2 and len(result["one_process_losses"]) == ddp["steps"]
    assert set(checks["speeds"]["img_per_s"]) == set(METHODS) and min(checks["speeds"]["img_per_s"].values()) > 0
    assert checks["placements"]["passed"] and checks["placements"]["batches_compared"] > 0
    simclr = checks["compile"]["results"]["simclr"]
    assert simclr["model_only_eager_img_per_s"] > 0 and simclr["model_only_speedup"] > 0
    assert checks["compile"]["not_reached"] == [] and checks["speeds"]["not_reached"] == []  # the smoke's budgets fit
    packed = checks["packed"]
    assert packed["test_resnet_folder_img_per_s"] > 0 and packed["test_resnet_packed_host_img_per_s"] > 0

    result = json.loads((out / "table.json").read_text())
    assert result["seed"] == 1 and result["epochs"] == 1 and result["not_run"] == {}
    assert set(result["concurrency_img_per_s"]) == {"1", "2"}
    assert result["plan"]["methods"] == list(METHODS) and set(result["runs"]) == set(METHODS)
    for method, run in result["runs"].items():
        assert run["finished"] and run["epochs_trained"] == run["epochs"] == 1, (method, run)
        assert 0 <= run["knn_top1"] <= 1 and 0 <= run["linear_top1"] <= 1
        assert run["fit_command"].startswith(f"python train.py fit --config {method} --config data/fashion_mnist")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "no CUDA device here: run this on the GPU machine, or pass --smoke"),
        (["--methods", "byol"], "pass its --epochs too"),
        (["--minutes", "0"], "--minutes must be positive"),
    ],
)
def test_a_session_started_wrongly_stops_in_one_line_before_any_work(
    arguments: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CUDA the GPU sizes would train a ResNet-50 on the CPU for the whole session; `--methods` alone
    continues a table at another number of epochs than the first session's."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: "no CUDA" not in message)
    monkeypatch.setattr(sys, "argv", ["gpu_evidence.py", "--out", str(tmp_path / "out"), *arguments])
    with pytest.raises(SystemExit, match=message):
        gpu_evidence.main()
    assert not (tmp_path / "out").exists()


def _rank_1_fails(rank: int, nprocs: int) -> str:
    if rank == 1:
        raise ValueError("rank 1's own error")
    time.sleep(60)  # rank 0 waits in a collective that rank 1 never joins
    return "never"


def test_a_failing_rank_is_named_at_once_not_reported_as_the_others_time_limit() -> None:
    """The ranks were read in order: rank 1's error waited for rank 0's limit and was reported as rank 0's timeout."""
    start = time.monotonic()
    with pytest.raises(common.ProcessesFailed, match="rank 1 of 2 failed: ValueError: rank 1's own error"):
        common.in_processes(_rank_1_fails, (), 2, timeout_s=45)
    assert time.monotonic() - start < 30  # rank 0 was ended with the failure, not at its limit


def _measures_then_hangs() -> object:
    yield {"measured": 1}
    yield {"measured": 2}
    time.sleep(60)  # a check past its budget


def test_a_check_ended_at_its_budget_keeps_what_it_had_measured() -> None:
    with pytest.raises(common.ProcessesFailed, match="rank 0 of 1 ended at the limit of 8 s") as failed:
        common.in_process(_measures_then_hangs, (), timeout_s=8)
    assert failed.value.partial == {"measured": 2}
