"""The first GPU, prepared (#27): benchmarks/bench_gpu.py runs end to end at its tiny CPU size, so the one command
meant for a GPU machine has not rotted by the time one is lent; scripts/gpu_wheelhouse.py carries what that machine
lacks or has at a version we don't allow (decided here without a download), and its install step refuses a machine
that lacks what the wheels leave to it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
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


def test_the_wheelhouse_leaves_to_the_machine_what_it_has_at_a_version_we_allow():
    wheelhouse = wheelhouse_script()
    have = wheelhouse.load_have(wheelhouse.HAVE)
    assert have["torch"] == "2.11.0" and have["transformers"] == "5.17.0" and have["matplotlib"] is None
    carried, kept = wheelhouse.plan(have)
    assert {"hivemind", "reasoning-gym", "cryptography", "pydantic", "pydantic-core", "pycosat", "base58"} <= set(carried)
    assert {"torch", "transformers", "tokenizers", "safetensors", "numpy", "matplotlib", "peft"} <= set(kept)
    # what only transformers 5.25 asks for stays here with it; what nothing imports is never carried
    assert not {"kernels", "huggingface-hub", "scipy", "grpcio-tools", "swarmnode"} & set(carried)
    assert carried["hivemind"] == {"why": "not on the machine", "required_by": ["swarmnode"]}
    assert "protobuf<8,>=7.35 (swarmnode)" in carried["protobuf"]["why"]  # version unread there, and a ceiling


def test_the_wheelhouse_carries_a_machine_copy_outside_our_specifier_with_its_requirements():
    wheelhouse = wheelhouse_script()
    carried, kept = wheelhouse.plan({"transformers": "4.57.0"})
    assert carried["transformers"]["why"] == "the machine's 4.57.0 misses transformers>=5.0 (swarmnode)"
    assert "kernels" in carried  # transformers 5's own requirement: walked once ours is carried
    assert "torch" in kept and "torch" not in carried  # listed or not, the machine's torch is the one measured
    carried, kept = wheelhouse.plan({"transformers": "5.17.0"})
    assert "transformers" in kept and "kernels" not in carried


def test_the_wheelhouse_trusts_an_unread_version_only_with_floors_below_ours():
    wheelhouse = wheelhouse_script()
    from packaging.requirements import Requirement

    def carries(line: str, there: str | None = None) -> bool:
        requirement = Requirement(line)
        return wheelhouse.verdict(requirement.name, [("swarmnode", requirement)], {requirement.name: there})[0]

    ours = importlib.metadata.version("typing-extensions")
    assert not carries("pyyaml>=6.0") and not carries("sortedcontainers")
    assert carries(f"typing-extensions>={ours}")  # a floor at our own version may be newer than the machine's
    assert carries("protobuf>=7.35,<8") and carries("tabulate==0.9.0")  # a ceiling, a pin
    assert carries("msgpack>=1.0", there="0.6.2") and not carries("msgpack>=1.0", there="1.1.0")


def test_the_wheelhouse_reads_the_machine_list_names_and_versions(tmp_path):
    listed = tmp_path / "have.txt"
    listed.write_text("# a comment\nPyYAML\nhuggingface_hub==1.33.0  # read there\n\n")
    assert wheelhouse_script().load_have(listed) == {"pyyaml": None, "huggingface-hub": "1.33.0"}


def test_a_wheel_built_here_is_kept_only_for_the_glibc_the_machine_has(tmp_path):
    wheelhouse = wheelhouse_script()
    wheel = tmp_path / "demo-1-cp312-cp312-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo.cpython-312-x86_64-linux-gnu.so", b"\0GLIBC_2.3\0GLIBC_2.17\0GLIBC_2.2.5\0")
        archive.writestr("demo.py", b"GLIBC_2.99")  # not a shared object
    assert wheelhouse._newest_glibc(wheel) == (2, 17) <= wheelhouse._glibc(wheelhouse.PLATFORMS[0]) == (2, 28)
    assert wheelhouse._pure("base58") and not wheelhouse._pure("pydantic-core")


def test_install_refuses_a_machine_that_lacks_what_the_wheels_leave_to_it():
    wheelhouse = wheelhouse_script()
    torch_version = importlib.metadata.version("torch")
    base58_version = importlib.metadata.version("base58")
    root = {"name": "demo", "extras": ["lora"], "requires": [
        "torch>=1.0", "torch>=999", "absent-distribution>=1", "scipy", "absent-too; python_version < '3'",
        "extra-only; extra == 'dev'", "packed>=2; extra == 'lora'"]}
    packed = [{"name": "packed", "version": "1.0", "requires": ["base58>=999", "absent-three"]},
              # torch (the machine's) requires typing-extensions>=4.10: a wheel that replaces its copy must meet it
              {"name": "typing-extensions", "version": "4.0.0", "requires": []}]
    assert wheelhouse.unmet_requirements(root, packed, left_out={"scipy"}) == [
        "absent-distribution>=1 (for demo): not installed",
        "absent-three (for packed): not installed",
        f"base58>=999 (for packed): {base58_version} is installed",
        'packed>=2; extra == "lora" (for demo): 1.0 is in the wheelhouse',
        f"torch>=999 (for demo): {torch_version} is installed",
        "typing-extensions>=4.10.0 (for torch): 4.0.0 is in the wheelhouse",
    ]


def test_a_wheel_fits_this_python_by_its_tags():
    wheelhouse = wheelhouse_script()
    supported = {"cp311-cp311-manylinux_2_17_x86_64", "cp311-abi3-manylinux_2_17_x86_64", "py3-none-any"}
    assert wheelhouse.fits("a-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", supported)
    assert wheelhouse.fits("a-1-py2.py3-none-any.whl", supported)
    assert not wheelhouse.fits("a-1-cp312-cp312-manylinux_2_17_x86_64.whl", supported)
    assert not wheelhouse.fits("a-1-cp311-cp311-macosx_11_0_arm64.whl", supported)
