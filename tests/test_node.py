"""`swarmnode join` as a volunteer runs it: real processes, real p2pd on 127.0.0.1, the embedded model."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from swarmnode.ops.metrics import read_records

FAST = ["--set", "sapo.questions_per_round=4", "--set", "sapo.completions_per_question=4",
        "--set", "model.max_new_tokens=12", "--set", "model.threads=1", "--set", "eval.every_rounds=0"]


def join(data_dir: Path, *args: str, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "swarmnode.cli", "join", "--data-dir", str(data_dir), "--headless",
               "--metrics-port", "0", *FAST, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def wait_for_line(process: subprocess.Popen, predicate, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("{") and predicate(event := json.loads(line)):
            return event
    raise AssertionError("the expected log line did not appear")


@pytest.mark.network
def test_join_completes_rounds_headless_with_json_lines_only(tmp_path):
    process = join(tmp_path, "--rounds", "2")
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert "\x1b[" not in stdout and "\x1b[" not in stderr
    logged = events(stdout)
    assert [e["event"] for e in logged] == ["started", "round", "round", "stopped"]
    assert logged[0]["maddrs"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert (logged[0]["device"], logged[0]["dtype"]) == ("cpu", "float32")  # the seed model: float32 on a CPU
    assert logged[0]["parameters"] == logged[0]["trainable_parameters"] > 5_000_000
    records = read_records(tmp_path / "metrics.jsonl")
    assert [r.round for r in records] == [1, 2]
    assert [(r.published, r.published_local_only) for r in records] == [(False, True)] * 2  # alone: nobody to share with
    assert (tmp_path / "checkpoints" / "round-00000002" / "model.safetensors").exists()


@pytest.mark.network
def test_sigterm_mid_run_checkpoints_and_a_restart_continues_at_the_next_round(tmp_path):
    process = join(tmp_path)
    wait_for_line(process, lambda e: e["event"] == "round" and e["round"] >= 2, timeout_s=120)
    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and time.monotonic() - stopped_at < 30
    last_round = events(stdout)[-1]["round"]
    assert (tmp_path / "checkpoints" / f"round-{last_round:08d}").is_dir()
    again = join(tmp_path, "--rounds", "1")
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert events(stdout)[0]["round"] == last_round
    assert [e["round"] for e in events(stdout) if e["event"] == "round"] == [last_round + 1]


@pytest.mark.network
def test_a_second_node_on_the_same_data_dir_is_refused(tmp_path):
    first = join(tmp_path)
    try:
        wait_for_line(first, lambda e: e["event"] == "started", timeout_s=120)
        second = join(tmp_path, "--rounds", "1")
        _, stderr = second.communicate(timeout=60)
        assert second.returncode == 1
        assert "another swarmnode" in stderr and "--data-dir" in stderr and "Traceback" not in stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)


def one_line_failure(tmp_path, *args, env=None) -> str:
    process = join(tmp_path, "--rounds", "1", *args, env=env)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def test_bad_config_is_one_clear_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("sapo:\n  lerning_rate: 1\n")
    line = one_line_failure(tmp_path / "data", "--config", str(config))
    assert "sapo.lerning_rate" in line and str(config) in line


def test_unreadable_identity_is_one_clear_line(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "identity.key").write_bytes(b"not a key")
    os.chmod(tmp_path / "identity.key", 0o644)
    assert "chmod 600" in one_line_failure(tmp_path)


@pytest.mark.network
def test_busy_metrics_port_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert str(port) in one_line_failure(tmp_path, "--metrics-port", str(port))


@pytest.mark.network
def test_unreachable_peers_are_one_clear_line(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    peer = f"/ip4/127.0.0.1/tcp/{free_port}/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    line = one_line_failure(tmp_path, "--peers", peer)
    assert "reach" in line.lower()


@pytest.mark.network
def test_two_nodes_exchange_rollouts_and_train_on_them(tmp_path):
    first = join(tmp_path / "a", "--set", "swarm.id=pair", "--set", "sapo.sampling=equal")
    try:
        started = wait_for_line(first, lambda e: e["event"] == "started", timeout_s=120)
        # the second node runs the SAPO authors' protocol: Q = 2 own + 2 peers' groups
        transplant = ["--set", "sapo.sampling=transplant", "--set", "sapo.local_groups=2", "--set", "sapo.external_groups=2"]
        second = join(tmp_path / "b", "--set", "swarm.id=pair", "--peers", started["maddrs"][0], "--rounds", "8", *transplant)
        listed = census_until(started["metrics_url"], lambda nodes: len(nodes) == 2, timeout_s=60)  # both beacons
        assert started["peer_id"] in listed and all(node["model_id"] == started["model"] for node in listed.values())
        stdout, stderr = second.communicate(timeout=240)
        assert second.returncode == 0, stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    rounds = [e for e in events(stdout) if e["event"] == "round"]
    assert sum(r["rollouts_in"] for r in rounds) > 0
    assert sum(r["groups_external"] for r in rounds) > 0
    assert max(r["peers"] for r in rounds) >= 1
    # transplant asks I = 2 questions only after a round that had peers' groups (they have a reward), else all Q = 4
    supplied = [False] + [r["reward_external"] is not None for r in rounds[:-1]]
    assert [r["questions"] for r in rounds] == [2 if peers else 4 for peers in supplied]
    assert 2 in [r["questions"] for r in rounds]
    first_records = read_records(tmp_path / "a" / "metrics.jsonl")
    assert sum(r.rollouts_in for r in first_records) > 0
    assert {r.questions for r in first_records} == {4}  # equal sampling asks Q whatever its peers do
    with_peers = [r for r in first_records if r.peers >= 1]  # alone, a node sends nothing
    assert with_peers and all(r.bytes_in > 0 and r.bytes_out > 0 for r in with_peers)  # the traffic sparkline's data


def census_until(url: str, done, timeout_s: float) -> dict[str, dict]:
    """Poll a node's /census (what `swarmnode swarm --url` reads) until `done(nodes by peer id)`."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"{url}/census", timeout=30) as response:
            nodes = {node["peer_id"]: node for node in json.loads(response.read())["nodes"]}
        if done(nodes) or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


@pytest.mark.parametrize(("min_interval_s", "saved"), [(0.0, [1, 2, 3]), (3600.0, [3])])
def test_checkpoints_wait_for_both_the_round_and_the_time_interval(tmp_path, min_interval_s, saved):
    import threading

    from swarmnode.config import load_config
    from swarmnode.node import Node

    overrides = [flag for flag in FAST if flag != "--set"] + [
        "gossip.enabled=false", "metrics.port=null", "checkpoint.every_rounds=1",
        f"checkpoint.min_interval_s={min_interval_s}", "checkpoint.keep_last=5",
    ]
    node = Node(load_config(None, overrides), tmp_path, lambda event: None, threading.Event())
    try:
        node.start()
        node.run(3)
    finally:
        node.close()
    assert sorted(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob("round-*")) == saved
    newest = tmp_path / "checkpoints" / f"round-{saved[-1]:08d}"
    assert node.metrics.registry.get_sample_value("swarmnode_checkpoint_bytes") == sum(
        path.stat().st_size for path in newest.iterdir()
    )
    assert re.search(rf" checkpoint {newest.name} \(\d+\.\d MB in \d+\.\d s; ", node.status.events[-1])


def test_a_restart_keeps_the_rejection_totals_and_the_collapse_monitor(tmp_path):
    import threading

    from swarmnode.config import load_config
    from swarmnode.node import Node

    overrides = [flag for flag in FAST if flag != "--set"] + ["gossip.enabled=false", "metrics.port=null"]

    def node() -> Node:
        return Node(load_config(None, overrides), tmp_path, lambda event: None, threading.Event())

    first = node()
    try:
        first.start()
        first.run(2)
        first.status.rejected_total = {"bad_signature": 2}  # as if peers had sent forgeries
        first.save_checkpoint()
        monitor = first.health.state()
    finally:
        first.close()
    again = node()
    try:
        again.start()
        assert again.health.state() == monitor and monitor["rounds"] == 2
        again.run(1)  # the first round after a restart used to overwrite the restored totals
        assert again.status.rejected_total == {"bad_signature": 2} and again.health.rounds == 3
    finally:
        again.close()
