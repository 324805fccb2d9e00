"""Small disks of a test's own, to fill without filling the machine's: tmpfs mounts (root needed, as in CI here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


class Tmpfs:
    """The tmpfs mounts of one test (the `tmpfs` fixture unmounts them at its end)."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []

    def mount(self, path: Path) -> Path:
        """A 256 MB tmpfs at `path` (memory only as it fills); the test is skipped where mounting is not allowed."""
        path.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(path)], capture_output=True)
        if mounted.returncode:
            pytest.skip("cannot mount a tmpfs here")
        self.mounted.append(path)
        return path

    def leave_free(self, path: Path, free: int) -> None:
        """Resize the disk at `path` to what it holds plus `free` bytes: a write beyond that fails with ENOSPC."""
        size = shutil.disk_usage(path).used + free
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)

    def unmount_all(self) -> None:
        for path in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)
        self.mounted.clear()
