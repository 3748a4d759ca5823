"""Nothing of the user's is lost: a checkpoint write that fails keeps the last good checkpoint, an export never
replaces a file it did not write unless asked, an evaluation checks where its results go before it starts and
prints them if they still cannot be written, and the report replaces its files whole or not at all."""

import json
import os
from pathlib import Path

import pytest

from selfsup import atomic
from selfsup.cli import main
from selfsup.errors import ConfigurationError
from selfsup.report import write_report
from selfsup.runs import last_checkpoint, read_checkpoint
from tests.conftest import make_image_folder
from tests.test_train_cli import REPO, tiny_folder_args
from tests.test_user_errors import one_line_error

TINY = ["--model.init_args.backbone", "test_resnet", "--wandb", "false", "--trainer.enable_progress_bar", "false"]


def fit_args(root: Path, folder: Path) -> list[str]:
    return [
        "fit", "--config", str(REPO / "configs" / "simclr.yaml"), "--trainer.default_root_dir", str(root),
        *tiny_folder_args(folder), *TINY,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch SimCLR run with its backbone exported: runs/simclr/version_0."""
    root = tmp_path_factory.mktemp("runs")
    main([*fit_args(root, folder), "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"])
    return root / "simclr" / "version_0"


def fill_disk_for(monkeypatch: pytest.MonkeyPatch, name: str, from_write: int = 1) -> None:
    """From the `from_write`-th write of a file named `name` through `selfsup.atomic` on, its bytes go to
    /dev/full, which fails every write as a full disk does (ENOSPC)."""
    real = atomic._new_temporary
    writes = []

    def opened(path: Path) -> tuple[int, Path]:
        descriptor, temporary = real(path)
        if path.name == name:
            writes.append(path)
            if len(writes) >= from_write:
                os.dup2(os.open("/dev/full", os.O_WRONLY), descriptor)
        return descriptor, temporary

    monkeypatch.setattr(atomic, "_new_temporary", opened)


def test_a_checkpoint_write_failing_mid_fit_keeps_the_last_good_checkpoint(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fill_disk_for(monkeypatch, "last.ckpt", from_write=2)  # epoch 1's checkpoint is written, epoch 2's is not
    one_batch = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0"]
    message = one_line_error([*fit_args(tmp_path, folder), *one_batch], capsys)
    checkpoints = last_checkpoint(tmp_path / "simclr" / "version_0").parent
    assert str(checkpoints) in message and "previous file is unchanged" in message and "free" in message
    assert read_checkpoint(checkpoints / "last.ckpt")["epoch"] == 0, "the first epoch's checkpoint stays loadable"
    assert [path.name for path in checkpoints.iterdir()] == ["last.ckpt"], "no partial file is left behind"


def test_a_disk_without_room_for_a_checkpoint_stops_before_the_first_step(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    usage = atomic.shutil.disk_usage
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: usage(path)._replace(free=1000))
    message = one_line_error([*fit_args(tmp_path / "runs", folder), "--trainer.max_epochs", "1"], capsys)
    assert "last.ckpt needs about" in message and "1000 bytes free" in message
    assert not (tmp_path / "runs").exists(), "a run stopped before its first step leaves no folder"


def test_export_never_replaces_a_file_it_did_not_write_unless_asked(run: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = last_checkpoint(run)
    exported = checkpoint.with_name("backbone.safetensors")
    written = exported.read_bytes()
    main(["export", "--ckpt_path", str(checkpoint)])  # the fit's own export, again: the same files, kept
    assert exported.read_bytes() == written

    mine = run / "mine.safetensors"
    mine.write_bytes(b"the user's own weights")
    mine.with_suffix(".json").write_text("the user's own card")
    message = one_line_error(["export", "--ckpt_path", str(checkpoint), "--out", str(mine)], capsys)
    assert str(mine) in message and "--overwrite true" in message
    assert mine.read_bytes() == b"the user's own weights"
    assert mine.with_suffix(".json").read_text() == "the user's own card"

    main(["export", "--ckpt_path", str(checkpoint), "--out", str(mine), "--overwrite", "true"])
    assert mine.read_bytes() == written and json.loads(mine.with_suffix(".json").read_text())["weights"] == mine.name


def test_export_to_a_place_that_cannot_be_written_is_one_line(run: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["export", "--ckpt_path", str(last_checkpoint(run)), "--out", "/proc/selfsup/backbone.safetensors"]
    assert "--out /proc/selfsup/backbone.safetensors cannot be written" in one_line_error(args, capsys)


QUICK_EVAL = ["--linear_probe", "false", "--diagnostics", "false", "--map_points", "0", "--wandb", "false"]


def test_eval_checks_its_output_before_any_work_and_never_replaces_a_users_file(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate = ["eval", "--ckpt_path", str(last_checkpoint(run)), *QUICK_EVAL]
    monkeypatch.setattr("selfsup.evaluation.evaluate.load", lambda *args: pytest.fail("work began"))
    assert "cannot be written" in one_line_error([*evaluate, "--output", "/proc/selfsup/r.json"], capsys)
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    assert "is not the results of `selfsup eval`" in one_line_error([*evaluate, "--output", str(notes)], capsys)
    assert notes.read_text() == '{"my": "notes"}'


def test_eval_writes_into_a_new_folder_and_prints_the_results_if_the_write_fails(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate = ["eval", "--ckpt_path", str(last_checkpoint(run)), *QUICK_EVAL]
    results = tmp_path / "not" / "yet" / "r.json"
    main([*evaluate, "--output", str(results)])
    written = json.loads(results.read_text())
    capsys.readouterr()

    fill_disk_for(monkeypatch, "r.json")
    with pytest.raises(SystemExit) as exit_info:
        main([*evaluate, "--output", str(results)])
    assert "previous file is unchanged" in str(exit_info.value.code) and json.loads(results.read_text()) == written
    printed = capsys.readouterr().out
    assert "results (not written)" in printed and f'"top1": {written["knn"]["top1"]}' in printed


def test_a_report_that_cannot_be_written_leaves_the_old_one(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = write_report([run], tmp_path / "report")
    before = {path.name: path.read_bytes() for path in report.parent.iterdir()}
    fill_disk_for(monkeypatch, "report.md")
    with pytest.raises(atomic.WriteError, match="previous file is unchanged"):
        write_report([run], tmp_path / "report")
    assert report.read_bytes() == before["report.md"]
    assert sorted(path.name for path in report.parent.iterdir()) == sorted(before)


def test_eval_writes_its_results_when_the_map_cannot_be_written_and_never_replaces_a_users_picture(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate = ["eval", "--ckpt_path", str(last_checkpoint(run)), *QUICK_EVAL, "--map_points", "16"]
    mine = tmp_path / "mine_map.png"
    mine.write_bytes(b"the user's picture")
    assert "is not replaced" in one_line_error([*evaluate, "--output", str(tmp_path / "mine.json")], capsys)
    assert mine.read_bytes() == b"the user's picture"

    fill_disk_for(monkeypatch, "r_map.png")
    with pytest.raises(SystemExit) as exit_info:
        main([*evaluate, "--output", str(tmp_path / "r.json")])
    assert "r_map.png" in str(exit_info.value.code)
    results = json.loads((tmp_path / "r.json").read_text())
    assert "knn" in results and "map" not in results


def test_the_report_never_replaces_files_of_the_users_that_share_its_names(run: Path, tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text("my notes")
    with pytest.raises(ConfigurationError, match="holds report.md but no earlier report, so they are not replaced"):
        write_report([run], tmp_path)
    assert (tmp_path / "report.md").read_text() == "my notes"
