"""The first GPU, prepared (#27): benchmarks/bench_gpu.py runs end to end at its tiny CPU size, so the one command
meant for a GPU machine has not rotted by the time one is lent; scripts/gpu_wheelhouse.py's wheels install what was
installed here, byte for byte, and its install step refuses a machine that lacks what the wheels leave to it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHASES = {"generate", "publish", "collect", "rescore", "train", "checkpoint"}


def wheelhouse_script():
    spec = importlib.util.spec_from_file_location("gpu_wheelhouse", ROOT / "scripts" / "gpu_wheelhouse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.network
@pytest.mark.timeout(400)
def test_the_tiny_run_measures_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--tiny", "--out", str(out), "--dir", str(tmp_path / "runs")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=380,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["tiny"] and "TINY" in report["label"]

    sampling = report["sampling"]
    assert [row["max_new_tokens"] for row in sampling["rows"]] == [8, 16]
    for row in sampling["rows"]:
        assert row["ours_tokens_per_s"] > 0 and row["generate_tokens_per_s"] > 0 and row["speedup"] > 0
        # a random model never stops early: both keep every completion's whole length, so the rates compare
        assert row["ours_tokens"] == row["generate_tokens"] == sampling["completions"] * row["max_new_tokens"]

    assert [row["mode"] for row in report["training"]] == ["full", "lora"]
    for row in report["training"]:
        assert row["skipped"] is None and row["step_s"] > 0 and row["micro_batch"] >= 1
        assert row["estimate_bytes"] > row["estimate_fixed_bytes"] > 0
        assert "peak_gpu_bytes" in row and row["peak_rss_bytes"] > 0  # no GPU here: its peak is None, RSS stands in
    full, lora = report["training"]
    assert lora["trainable"] < full["trainable"] / 10

    swarm = report["swarm"]
    assert swarm["ok"] and not swarm["timed_out"] and swarm["leftovers"] == []
    assert [len(node["rounds"]) for node in swarm["per_node"]] == [3, 3]
    for node in swarm["per_node"]:
        for record in node["rounds"]:
            assert set(record["seconds"]) >= {"generate", "train"} and all(s >= 0 for s in record["seconds"].values())
        assert sum(record["rollouts_in"] for record in node["rounds"]) > 0  # they gossiped
    assert set(swarm["breakdown"]["phases"]) >= PHASES
    assert swarm["breakdown"]["rounds_measured"] == 4 and swarm["breakdown"]["round_wall_s"]["mean"] > 0
    assert swarm["breakdown"]["phases"]["train"]["mean_s"] > 0  # the seed model's groups carry signal: it trained


def test_a_repacked_wheel_installs_the_installed_files(tmp_path):
    wheelhouse = wheelhouse_script()
    wheel, installed = wheelhouse.repack("base58", tmp_path)
    assert wheel.name.startswith("base58-") and wheel.name.endswith("-py3-none-any.whl") and installed > 0
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, timeout=120)
    import base58

    original = Path(base58.__file__)
    assert (target / "base58" / original.name).read_bytes() == original.read_bytes()
    assert (target / "bin" / "base58").exists()  # the console script, made by pip from entry_points.txt


def test_the_wheelhouse_holds_what_a_node_needs_and_not_torch():
    needed = wheelhouse_script().needed(omit={"numpy"})
    assert {"hivemind", "transformers", "reasoning-gym", "peft", "pydantic-core", "protobuf", "cryptography"} <= set(needed)
    assert not {"torch", "sympy", "scipy", "grpcio-tools", "swarmnode", "numpy"} & set(needed)


def test_install_refuses_a_machine_that_lacks_what_the_wheels_leave_to_it():
    wheelhouse = wheelhouse_script()
    import torch

    row = {"name": "demo", "requires": ["torch>=1.0", "torch>=999", "absent-distribution>=1", "base58",
                                        "scipy", "absent-too; python_version < '3'", "extra-only; extra == 'dev'"]}
    unmet = wheelhouse.unmet_requirements([row, {"name": "base58", "requires": []}], left_out={"scipy"})
    assert unmet == ["absent-distribution>=1 (for demo): not installed",
                     f"torch>=999 (for demo): {torch.__version__} is installed"]


def test_a_wheel_fits_this_python_by_its_tags():
    wheelhouse = wheelhouse_script()
    supported = {"cp311-cp311-manylinux_2_17_x86_64", "cp311-abi3-manylinux_2_17_x86_64", "py3-none-any"}
    assert wheelhouse.fits("a-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", supported)
    assert wheelhouse.fits("a-1-py2.py3-none-any.whl", supported)
    assert not wheelhouse.fits("a-1-cp312-cp312-manylinux_2_17_x86_64.whl", supported)
    assert not wheelhouse.fits("a-1-cp311-cp311-macosx_11_0_arm64.whl", supported)
