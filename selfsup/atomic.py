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
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

from selfsup.errors import ConfigurationError, format_bytes

PARTIAL_SUFFIX = ".partial"  # a temporary file being written: .<name>.<random>.partial beside <name>


class WriteError(ConfigurationError):
    """A file the suite writes could not be written: the message names it, the reason, and the folder's free space."""


def nearest_existing(path: str | Path) -> Path:
    """`path` if it exists, else its nearest existing parent: where writing `path` starts adding to the disk."""
    path = Path(path).expanduser().absolute()
    return next(ancestor for ancestor in (path, *path.parents) if ancestor.exists())


def free_space(folder: Path) -> str:
    """`folder`'s free space, for messages: '12.3 GiB free'."""
    try:
        return f"{format_bytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        return "unknown free space"


def lacking_space(folder: str | Path, needed: int, what: str) -> str | None:
    """The one-line problem if the disk of `folder` (or of its nearest existing parent) has fewer than `needed`
    bytes free for `what`; None if it has room."""
    existing = nearest_existing(folder)
    free = shutil.disk_usage(existing).free
    if free >= needed:
        return None
    return (
        f"{what} needs about {format_bytes(needed)} and {existing} has {format_bytes(free)} free; free some space "
        "or choose a location on a larger disk."
    )


WRITE_FIX = "free some space or make it writable, or choose another location"


def write_error(path: Path, error: OSError, fix: str = WRITE_FIX) -> WriteError:
    """The one-line error of a failed write of `path`: the reason, the folder's free space and `fix`."""
    folder = nearest_existing(path.parent)
    kept = " (the previous file is unchanged)" if path.is_file() else ""
    return WriteError(
        f"Could not write {path}{kept}: {error.strerror or error}. {folder} has {free_space(folder)}; {fix}."
    )


def _regular_target(path: str | Path) -> Path:
    """The file a write of `path` replaces: through symbolic links to their target (the link stays), and never
    anything but a regular file (a device such as /dev/null, a pipe or a folder is refused, not replaced)."""
    target = Path(os.path.realpath(Path(path).expanduser()))
    if target.exists() and not target.is_file():
        raise ConfigurationError(f"{path} is not a regular file, so it is not replaced; give a file name.")
    return target


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
    raises: `path` is then exactly as before. The new file keeps the old one's permissions (a new one gets the
    umask's); a symbolic link is written through. A failed write raises `WriteError`; other errors pass unchanged."""
    path = _regular_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = _new_temporary(path)
        if path.exists():  # the replaced file's permissions (a checkpoint the user made private stays private)
            os.fchmod(descriptor, stat.S_IMODE(path.stat().st_mode))
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


def write_files(contents: dict[Path, bytes]) -> None:
    """Several files replaced together: every new file is written and flushed before the first rename, so a failed
    write leaves all the old files (only a failure between two renames, which write no data, could leave a part)."""
    with ExitStack() as stack:
        for path, content in contents.items():
            stack.enter_context(replacing(path)).write(content)


def write_text(path: str | Path, text: str) -> None:
    """`path` replaced by `text` (UTF-8), whole or not at all."""
    write_bytes(path, text.encode())


def check_writable(path: str | Path, option: str, folder: bool = False) -> None:
    """Stop with one line naming `option` unless `path` can be written: a regular file (or with `folder`, a folder
    to write files into) whose nearest existing folder accepts a new file, on a disk that is not full, and which,
    if it exists, is not read-only. Nothing is left behind: the probe file is removed."""
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise ConfigurationError(f"{option} {path} is a file; give a folder.")
    if not folder:
        if path.is_dir():
            raise ConfigurationError(f"{option} {path} is a folder; give a file name.")
        try:
            path = _regular_target(path)
        except ConfigurationError:
            raise ConfigurationError(
                f"{option} {path} is not a regular file, so it is not replaced; give a file name."
            ) from None
        if path.is_file() and not os.access(path, os.W_OK):
            raise ConfigurationError(f"{option} {path} is read-only; choose another file, or make it writable.")
    nearest = nearest_existing(path if folder else path.parent)
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
