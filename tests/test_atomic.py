"""Files a user depends on are replaced whole or not at all: a write that fails half-way (a full disk, a kill)
leaves the previous file byte for byte, no temporary file behind, and one line naming the folder's free space."""

import errno
import os
from pathlib import Path

import pytest
import torch

from selfsup import atomic
from selfsup.atomic import PARTIAL_SUFFIX, WriteError, check_writable, replacing, write_bytes
from selfsup.errors import ConfigurationError
from selfsup.loggers import AtomicCheckpointIO
from selfsup.runs import read_checkpoint


class FullDisk:
    """A file object that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self) -> "FullDisk":
        return self

    def __exit__(self, *error) -> None:
        self.file.close()


@pytest.fixture
def full_disk_after(monkeypatch: pytest.MonkeyPatch):
    """Make the files `replacing` opens take at most `room` bytes before the disk is full."""
    real_fdopen = os.fdopen

    def install(room: int) -> None:
        monkeypatch.setattr(atomic.os, "fdopen", lambda *args, **kwargs: FullDisk(real_fdopen(*args, **kwargs), room))

    return install


def test_a_write_that_fails_half_way_leaves_the_old_file_byte_identical(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_bytes(b"old results\n")
    with pytest.raises(WriteError) as error, replacing(target) as file:
        FullDisk(file, room=4).write(b"new results that do not fit\n")  # the disk fills during the write
    assert target.read_bytes() == b"old results\n"
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"], "no temporary file is left behind"
    message = str(error.value)
    assert str(target) in message and "previous file is unchanged" in message and "free" in message
    assert str(tmp_path) in message and "\n" not in message


def test_an_error_inside_the_block_discards_the_new_content(tmp_path: Path) -> None:
    target = tmp_path / "card.json"
    target.write_bytes(b"old")
    with pytest.raises(KeyError), replacing(target) as file:
        file.write(b"half")
        raise KeyError("not an I/O error: it passes unchanged")
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_a_finished_write_replaces_the_file_with_the_mode_of_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "backbone.safetensors"
    write_bytes(target, b"weights")
    assert target.read_bytes() == b"weights"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(target.parent.glob(f"*{PARTIAL_SUFFIX}"))


def test_a_checkpoint_write_that_fails_keeps_the_previous_checkpoint_loadable(tmp_path: Path, full_disk_after) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}, "epoch": 0}, path)
    before = path.read_bytes()
    full_disk_after(room=3000)
    with pytest.raises(WriteError, match="previous file is unchanged"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "hyper_parameters": {}, "epoch": 1}, path)
    assert path.read_bytes() == before
    assert read_checkpoint(path)["epoch"] == 0
    assert [file.name for file in path.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize(
    ("make_path", "folder", "message"),
    [
        (lambda d: Path("/proc/selfsup-test/results.json"), False, "does not accept new files"),
        (lambda d: Path("/proc/selfsup-runs"), True, "does not accept new files"),
        (lambda d: d, False, "is a folder; give a file name"),
        (lambda d: _file(d / "file.txt") / "out.json", False, "is a file, not a folder"),
    ],
)
def test_an_unwritable_destination_is_refused_before_any_work(
    make_path, folder: bool, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        check_writable(make_path(tmp_path), "--output", folder=folder)
    assert str(error.value).startswith("--output ")
    assert [path.name for path in tmp_path.iterdir()] in ([], ["file.txt"]), "the probe leaves nothing behind"


def test_a_new_path_in_a_writable_folder_passes_and_creates_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path / "not" / "yet" / "results.json", "--output")
    check_writable(tmp_path / "runs", "--trainer.default_root_dir", folder=True)
    assert not any(tmp_path.iterdir())


def test_a_full_disk_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: _Usage(free=0))
    with pytest.raises(ConfigurationError, match="is full"):
        check_writable(tmp_path / "results.json", "--output")


def _file(path: Path) -> Path:
    path.write_text("x")
    return path


class _Usage:
    def __init__(self, free: int) -> None:
        self.total, self.used, self.free = free, 0, free


def test_a_replaced_file_keeps_its_permissions_and_a_link_is_written_through(tmp_path: Path) -> None:
    private = tmp_path / "last.ckpt"
    private.write_bytes(b"old")
    private.chmod(0o600)
    write_bytes(private, b"new")
    assert private.read_bytes() == b"new" and private.stat().st_mode & 0o777 == 0o600

    link = tmp_path / "results.json"
    link.symlink_to(private)
    write_bytes(link, b"through the link")
    assert link.is_symlink() and private.read_bytes() == b"through the link"


def test_a_device_or_pipe_is_never_replaced(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(ConfigurationError, match="is not a regular file, so it is not replaced"):
        check_writable(pipe, "--output")
    with pytest.raises(ConfigurationError, match="is not a regular file"):
        write_bytes(pipe, b"x")
    assert pipe.is_fifo() and sorted(tmp_path.iterdir()) == [pipe]
    with pytest.raises(ConfigurationError, match="--output /dev/null is not a regular file"):
        check_writable("/dev/null", "--output")
