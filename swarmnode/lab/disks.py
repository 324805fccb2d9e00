"""Small disks of one's own, to fill without filling the machine's: tmpfs mounts (root needed, as in CI here).
The fault scenarios and the tests mount them; whoever mounts one unmounts it, also on failure."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


def mount_tmpfs(path: Path, size: str = "256m") -> bool:
    """A tmpfs of `size` at `path` (memory only as it fills); False where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def leave_free(path: Path, free: int) -> None:
    """Resize the tmpfs at `path` to what it holds plus `free` bytes: a write beyond that fails with ENOSPC."""
    size = shutil.disk_usage(path).used + free
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "256m") -> Iterator[Path]:
    """A tmpfs at `path` for the duration; OSError where mounting is not allowed."""
    if not mount_tmpfs(path, size):
        raise OSError(f"cannot mount a tmpfs at {path} (root needed)")
    try:
        yield path
    finally:
        unmount(path)
