"""The package as a volunteer installs it: a wheel built from this tree, installed outside the checkout, carries
the embedded model and task mix (and none of the lab) and trains offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_LEFTOVERS = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", "runs", "data")


@pytest.mark.network
def test_a_wheel_installed_outside_the_checkout_joins_and_trains_offline(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools builds inside the tree it is given
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("swarmnode-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "swarmnode/assets/seed_model/model.safetensors" in names and "swarmnode/wire/proto/swarmnode_pb2.py" in names
    assert not any(name.startswith("swarmnode/lab/") for name in names)
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "SWARMNODE_HOME": str(tmp_path / "home")}
    where = subprocess.run([sys.executable, "-c", "import swarmnode; print(swarmnode.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    joined = subprocess.run(
        [sys.executable, "-m", "swarmnode", "join", "--rounds", "2", "--headless", "--metrics-port", "0",
         "--data-dir", str(tmp_path / "node"), "--set", "eval.every_rounds=0"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300,
    )
    assert joined.returncode == 0, joined.stderr[-3000:]
    events = [json.loads(line) for line in joined.stdout.splitlines() if line.startswith("{")]
    assert [event["round"] for event in events if event["event"] == "round"] == [1, 2]
