"""The tmpfs mounts of a test (swarmnode.lab.disks), skipped where mounting is not allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmnode.lab.disks import leave_free, mount_tmpfs, unmount


class Tmpfs:
    """The tmpfs mounts of one test (the `tmpfs` fixture unmounts them at its end)."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []

    def mount(self, path: Path) -> Path:
        """A 256 MB tmpfs at `path`; the test is skipped where mounting is not allowed."""
        if not mount_tmpfs(path):
            pytest.skip("cannot mount a tmpfs here")
        self.mounted.append(path)
        return path

    leave_free = staticmethod(leave_free)

    def unmount_all(self) -> None:
        for path in reversed(self.mounted):
            unmount(path)
        self.mounted.clear()
