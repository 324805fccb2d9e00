"""Shared fixtures. Everything binds to 127.0.0.1; nothing here reaches the internet."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

import pytest  # noqa: E402


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
