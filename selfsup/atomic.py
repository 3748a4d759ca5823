"""Files a user depends on are replaced whole or not at all, and never written where they cannot be.

Checkpoints, exported backbones and their cards, evaluation results, the report and a pack's metadata are each
written to a temporary file in the destination's own folder, flushed to the disk, then renamed over the old
file (`replacing`). A rename within one file system is atomic (POSIX `rename`), so a reader, or a run resumed
after a crash, finds the old file or the new one, never a part of either. If the write fails (a full disk, a
quota, an interruption) the temporary file is removed, the old file is left byte for byte as it was, and the
error names the folder and its free space. `check_writable` is the same question asked before any work starts,
so a long run does not end in a path it could never have written.
"""

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from selfsup.errors import ConfigurationError

PARTIAL_SUFFIX = ".partial"  # a temporary file being written: .<name>.<random>.partial beside <name>


class WriteError(ConfigurationError):
    """A file the suite writes could not be written: the message names it, the reason, and the folder's free space."""


def existing_folder(path: str | Path) -> Path:
    """The nearest existing folder at or above `path`: where writing `path` starts adding to the disk."""
    path = Path(path).expanduser().absolute()
    return next(folder for folder in (path, *path.parents) if folder.is_dir())


def format_bytes(count: float) -> str:
    """A size for messages, in the largest unit that keeps it at least 1: '2.5 TiB', '12.3 GiB', '512.0 KiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


def free_space(folder: Path) -> str:
    """`folder`'s free space, for messages: '12.3 GiB free'."""
    try:
        return f"{format_bytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        return "unknown free space"


def lacking_space(folder: str | Path, needed: int, what: str) -> str | None:
    """The one-line problem if the disk of `folder` (or of its nearest existing parent) has fewer than `needed`
    bytes free for `what`; None if it has room."""
    existing = existing_folder(folder)
    free = shutil.disk_usage(existing).free
    if free >= needed:
        return None
    return (
        f"{what} needs about {format_bytes(needed)} and {existing} has {format_bytes(free)} free; free some space "
        "or choose a location on a larger disk."
    )


def write_error(path: Path, error: OSError) -> WriteError:
    """The one-line error of a failed write of `path`."""
    folder = existing_folder(path.parent)
    kept = " (the previous file is unchanged)" if path.is_file() else ""
    return WriteError(
        f"Could not write {path}{kept}: {error.strerror or error}. {folder} has {free_space(folder)}; free some "
        "space or make it writable, or choose another location."
    )


def _oserror_in(error: BaseException) -> OSError | None:
    """The OSError behind `error`, if any: torch and numpy re-raise a failed write as their own exception types."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _new_temporary(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, opened for writing, with the mode any new file gets (0666 less the umask)."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (some file systems cannot open a folder for that: then the rename is
    still atomic, only not yet on disk)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextmanager
def replacing(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file whose content becomes `path` when the block ends without an error, and is discarded when it
    raises: `path` is then exactly as before. A failed write raises `WriteError`; other errors pass unchanged."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = _new_temporary(path)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        cause = _oserror_in(error)
        if cause is not None and not isinstance(error, ConfigurationError):
            raise write_error(path, cause) from None
        raise
    _sync_folder(path.parent)


def write_bytes(path: str | Path, content: bytes) -> None:
    """`path` replaced by `content`, whole or not at all."""
    with replacing(path) as file:
        file.write(content)


def write_text(path: str | Path, text: str) -> None:
    """`path` replaced by `text` (UTF-8), whole or not at all."""
    write_bytes(path, text.encode())


def check_writable(path: str | Path, option: str, folder: bool = False) -> None:
    """Stop with one line naming `option` unless `path` can be written: a file (or with `folder`, a folder to
    write files into) whose nearest existing folder accepts a new file, and which, if it exists, is not
    read-only. Nothing is left behind: the probe file is removed."""
    path = Path(path).expanduser()
    if path.exists() and not folder and path.is_dir():
        raise ConfigurationError(f"{option} {path} is a folder; give a file name.")
    if path.exists() and folder and not path.is_dir():
        raise ConfigurationError(f"{option} {path} is a file; give a folder.")
    if not folder and path.is_file() and not os.access(path, os.W_OK):
        raise ConfigurationError(f"{option} {path} is read-only; choose another file, or make it writable.")
    start = path.absolute() if folder else path.absolute().parent
    nearest = next(ancestor for ancestor in (start, *start.parents) if ancestor.exists())
    if not nearest.is_dir():
        raise ConfigurationError(f"{option} {path} cannot be written: {nearest} is a file, not a folder.")
    try:
        descriptor, probe = _new_temporary(nearest / "write-test")
    except OSError as error:
        raise ConfigurationError(
            f"{option} {path} cannot be written: {nearest} does not accept new files ({error.strerror or error}); "
            "choose a writable location."
        ) from None
    os.close(descriptor)
    probe.unlink()
    if shutil.disk_usage(nearest).free == 0:
        raise ConfigurationError(f"{option} {path} cannot be written: the disk of {nearest} is full.")
