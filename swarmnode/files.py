"""The node's files: atomic writes (a node killed at any instant never leaves a half-written file)
and the data directory's lock (two nodes never share one state)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file that replaces `path` only if the block finishes: temp + fsync + rename + dir fsync."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    fsync_file(directory)


def remove_stale_temp_files(directory: Path) -> int:
    """Delete leftovers of writes interrupted by a crash; returns how many were removed."""
    removed = 0
    for leftover in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed += 1
    return removed


class DataDirError(Exception):
    """The data directory cannot be made or written; the message names the path, the cause and the fix."""


def prepare_data_dir(directory: Path) -> Path | None:
    """Make `directory` and prove it writable before anything is written into it. Returns the topmost
    directory this call made (None if it existed), so a start that fails can leave the disk as it found it."""
    directory = Path(directory).absolute()
    made = next((path for path in [*reversed(directory.parents), directory] if not path.exists()), None)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        blocker = next((path for path in directory.parents if path.exists() and not path.is_dir()), None)
        if blocker is None and directory.exists() and not directory.is_dir():
            blocker = directory
        why = f"{blocker} is a file, not a directory" if blocker is not None else error.strerror or str(error)
        raise DataDirError(
            f"data dir {directory}: cannot use it ({why}); pass --data-dir with a writable directory "
            f"(or set SWARMNODE_HOME)"
        ) from None
    return made


class DataDirBusy(Exception):
    """Another process holds the data directory's lock."""


class DataDirLock:
    """An exclusive lock on a data directory (flock), so two nodes never share one state; the kernel
    releases it when the process dies, so a crash leaves no stale lock behind."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "node.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirBusy(
                f"another swarmnode (pid {holder}) is running with data dir {self.path.parent}; "
                "stop it first or pass a different --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
