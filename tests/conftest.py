"""Shared fixtures. Everything binds to 127.0.0.1; nothing here reaches the internet."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from disks import Tmpfs  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def home_of_its_own(tmp_path_factory: pytest.TempPathFactory):
    """A command run without --data-dir (a bootstrap, `identity show`) reads and locks SWARMNODE_HOME: the
    tests' own, never the ~/.swarmnode of whoever runs them."""
    saved = os.environ.get("SWARMNODE_HOME")
    os.environ["SWARMNODE_HOME"] = str(tmp_path_factory.mktemp("home"))
    yield
    if saved is None:
        os.environ.pop("SWARMNODE_HOME")
    else:
        os.environ["SWARMNODE_HOME"] = saved


@pytest.fixture(autouse=True)
def torch_settings_are_restored():
    """No test leaves the next one another thread count, default dtype or determinism mode: a test that sets them
    for itself gets them put back, so results never depend on which test ran before. (Only once torch is loaded:
    the wire and network tests never load it, and need not pay for it.)"""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    saved = torch.get_num_threads(), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(saved[0])
    torch.set_default_dtype(saved[1])
    torch.use_deterministic_algorithms(saved[2])


@pytest.fixture
def tmpfs() -> Iterator[Tmpfs]:
    """Disks a test can fill (tests/disks.py), unmounted whatever the test does."""
    disks = Tmpfs()
    try:
        yield disks
    finally:
        disks.unmount_all()
