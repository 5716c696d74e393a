"""Files in and out: listing a folder's inputs, reading a file or stdin, and
writing outputs so a user's file is never half-written or clobbered.

Data goes to a hidden temporary file in the destination folder and is moved
into place only when complete. Without overwrite, the move is a hard link,
which fails atomically if the name was taken meanwhile. A symbolic link is
written through (the file it points to is replaced, the link stays), and a
character device or pipe that exists (/dev/null, a FIFO) is written into
directly: there is no file there to clobber or to leave half-written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import Interrupted

STDIO = "-"


# Set when the user interrupts a run: from then on no output is moved into place (write_atomic), so every
# file that lands is one the run gets to report, and work that has not started yet is skipped.
_stop = threading.Event()


def request_stop() -> None:
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def clear_stop() -> None:
    """For a new run in the same process (tests, a library user after catching KeyboardInterrupt)."""
    _stop.clear()


def folder_files(folder: str | Path, suffixes: set[str], recursive: bool = False) -> list[Path]:
    """The files in `folder` with one of `suffixes` (lower case), in name order; with `recursive`, then
    those of its subfolders, walked in name order without following links.

    Hidden files and folders (names starting with ".") are left out: `._IMG_0001.jpg`
    files are macOS resource forks, not photos.
    """
    files = []
    for top, subfolders, names in os.walk(folder, followlinks=False):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if recursive else []
        for name in sorted(names):
            path = Path(top) / name
            if not name.startswith(".") and path.suffix.lower() in suffixes and path.is_file():
                files.append(path)
    return files


def read_source(source: str) -> bytes:
    """The bytes of a file, or of stdin for "-"."""
    if source == STDIO:
        return sys.stdin.buffer.read()
    return Path(source).read_bytes()


def write_target(target: str, data: bytes, overwrite: bool) -> None:
    """Write to stdout for "-", else atomically to the file (write_atomic)."""
    if target == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(Path(target), data, overwrite=overwrite)


def check_target(target: str | Path, overwrite: bool) -> None:
    """OSError unless target (not stdout) can be written: its folder exists and is writable, and it does not
    exist or may be overwritten (or is a device or pipe, written into).

    Callers check before the work too, so an output that cannot be written costs no network pass.
    """
    if str(target) == STDIO:
        return
    path = _through_links(Path(target))
    kind = _existing_kind(path)
    if kind == "stream":
        return
    if kind == "folder":
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(target))
    if kind == "other":
        raise OSError(errno.EINVAL, "is not a regular file (a block device or socket?)", str(target))
    if not path.parent.is_dir():
        # Said before mkstemp fails with the name of a temporary file the user never asked for.
        raise FileNotFoundError(errno.ENOENT, "output folder does not exist", str(path.parent))
    if kind == "file" and not overwrite:
        raise FileExistsError(errno.EEXIST, "file exists (use -f to overwrite)", str(target))
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(errno.EACCES, "cannot write in the output folder", str(path.parent))


def _through_links(path: Path) -> Path:
    """The path a symbolic link leads to (so the link stays a link), else the path itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _existing_kind(path: Path) -> str | None:
    """None when nothing is there; else "file", "folder", "stream" (character device or FIFO) or "other"."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "stream" if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) else "other"


def write_atomic(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write bytes to `path` all at once; FileExistsError if it exists and overwrite is False."""
    check_target(path, overwrite)
    path = _through_links(Path(path))
    if _existing_kind(path) == "stream":
        with open(path, "wb") as stream:
            stream.write(data)
        return
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise _about(exc, path) from None
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; outputs get the usual umask-based mode, like open() would give.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if _stop.is_set():
            raise Interrupted(str(path))
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_without_overwrite(tmp, path)
    except OSError as exc:
        raise _about(exc, path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _about(exc: OSError, path: Path) -> OSError:
    """The error naming the output the user asked for, not the hidden temporary file beside it."""
    if exc.filename is not None and Path(exc.filename).name.endswith(".part"):
        return type(exc)(exc.errno, exc.strerror, str(path))
    return exc


def _move_without_overwrite(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "file exists (use -f to overwrite)", str(path)) from None
    except OSError:
        # Filesystems without hard links: a check-then-rename is the best left.
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists (use -f to overwrite)", str(path)) from None
        os.replace(tmp, path)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
