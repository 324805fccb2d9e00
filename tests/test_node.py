"""`swarmnode join` as a volunteer runs it: real processes, real p2pd on 127.0.0.1, the embedded model."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import time
import urllib.request

import pytest

from swarmnode.lab.node_process import FAST, NodeProcess, events
from swarmnode.ops.metrics import read_records


@pytest.mark.network
def test_join_completes_rounds_headless_with_json_lines_only(tmp_path):
    with NodeProcess(tmp_path / "node", "--rounds", "2", "--set", "network.max_kbps=512") as node:
        returncode, stdout, stderr = node.finish(timeout_s=180)
    assert returncode == 0, stderr
    assert "\x1b[" not in stdout and "\x1b[" not in stderr
    logged = events(stdout)
    assert [e["event"] for e in logged] == ["started", "round", "round", "checkpoint", "stopped"]
    assert logged[0]["max_kbps"] == 512  # a volunteer's bandwidth cap is said at start
    assert logged[0]["maddrs"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert (logged[0]["device"], logged[0]["dtype"]) == ("cpu", "float32")  # the seed model: float32 on a CPU
    assert logged[0]["parameters"] == logged[0]["trainable_parameters"] > 5_000_000
    records = read_records(tmp_path / "node" / "metrics.jsonl")
    assert [r.round for r in records] == [1, 2]
    assert [(r.published, r.published_local_only) for r in records] == [(False, True)] * 2  # alone: nobody to share with
    saved, stopped = logged[-2:]  # what a service operator's log says about the save and the stop
    path = tmp_path / "node" / "checkpoints" / "round-00000002"
    assert (saved["round"], saved["path"], saved["bytes"]) == (2, str(path), sum(f.stat().st_size for f in path.iterdir()))
    assert 0 < saved["seconds"] < 60 and (path / "model.safetensors").exists()
    assert stopped | {"ts": 0} == {"ts": 0, "event": "stopped", "round": 2, "reason": "rounds_done", "signal": None,
                                   "error": None, "checkpoint": str(path)}


@pytest.mark.network
def test_sigterm_mid_run_checkpoints_and_a_restart_continues_at_the_next_round(tmp_path):
    data_dir = tmp_path / "node"
    with NodeProcess(data_dir) as node:
        node.wait_for(lambda e: e["event"] == "round" and e["round"] >= 2, timeout_s=120)
        node.signal(signal.SIGTERM)
        returncode, stdout, stderr = node.finish(timeout_s=30)
    assert returncode == 0, stderr
    stopped = events(stdout)[-1]
    last_round = stopped["round"]
    assert (stopped["reason"], stopped["signal"]) == ("signal", "SIGTERM")
    assert stopped["checkpoint"] == str(data_dir / "checkpoints" / f"round-{last_round:08d}")
    assert (data_dir / "checkpoints" / f"round-{last_round:08d}").is_dir()
    sequence = json.loads((data_dir / "checkpoints" / f"round-{last_round:08d}" / "state.json").read_text())["sequence"]
    assert sequence >= last_round  # a batch signed each round (and one more if the stop came after a publish)
    with NodeProcess(data_dir, "--rounds", "1") as again:
        returncode, stdout, stderr = again.finish(timeout_s=120)
    assert returncode == 0, stderr
    assert (events(stdout)[0]["round"], events(stdout)[0]["checkpoint"]) == (last_round, stopped["checkpoint"])
    assert [e["round"] for e in events(stdout) if e["event"] == "round"] == [last_round + 1]
    assert read_records(data_dir / "metrics.jsonl")[-1].resumed_from == last_round  # where the restart picked up
    resumed = json.loads((data_dir / "checkpoints" / f"round-{last_round + 1:08d}" / "state.json").read_text())
    assert resumed["sequence"] == sequence + 1  # the publish sequence went on from the checkpoint's


ALONE = ("--set", "gossip.enabled=false", "--set", "checkpoint.min_interval_s=0")


def test_a_node_killed_after_its_checkpoint_redoes_the_lost_rounds_and_its_history_only_goes_forward(tmp_path):
    data_dir = tmp_path / "node"
    with NodeProcess(data_dir, *ALONE, "--set", "checkpoint.every_rounds=2") as node:
        node.wait_for(lambda e: e["event"] == "round" and e["round"] == 3, timeout_s=120)
        node.kill()  # round 3 recorded, its checkpoint not due before round 4
    assert [e["event"] for e in events("".join(node.lines))] == ["started", "round", "round", "checkpoint", "round"]
    last = int(max(p.name for p in (data_dir / "checkpoints").glob("round-*")).split("-")[1])
    with NodeProcess(data_dir, *ALONE, "--rounds", "2") as again:
        returncode, stdout, stderr = again.finish(timeout_s=120)
    assert returncode == 0, stderr
    assert events(stdout)[0]["checkpoint"] == str(data_dir / "checkpoints" / f"round-{last:08d}")
    written = [json.loads(line)["round"] for line in (data_dir / "metrics.jsonl").read_text().splitlines()]
    assert written[:3] == [1, 2, 3] and written[-2:] == [last + 1, last + 2]  # the file keeps the lost rounds' lines
    records = read_records(data_dir / "metrics.jsonl")
    assert [r.round for r in records] == list(range(1, last + 3))  # each round once: the redone ones
    assert [r.resumed_from for r in records][last:] == [last, None]


def test_a_node_that_cannot_checkpoint_warns_trains_on_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / "checkpoints").write_text("not a directory")  # as a full or read-only disk would refuse the save
    with NodeProcess(data_dir, *ALONE, "--rounds", "1") as node:
        returncode, stdout, stderr = node.finish(timeout_s=120)
    assert returncode == 0 and "Traceback" not in stderr, stderr
    logged = events(stdout)
    assert [e["event"] for e in logged] == ["started", "round", "checkpoint_failed", "stopped"]
    assert "cannot write a checkpoint" in logged[2]["message"] and "newest checkpoint kept: none" in logged[2]["message"]
    assert logged[-1] | {"ts": 0} == {"ts": 0, "event": "stopped", "round": 1, "reason": "rounds_done", "signal": None,
                                      "error": None, "checkpoint": None}


@pytest.mark.network
def test_a_second_node_on_the_same_data_dir_is_refused(tmp_path):
    with NodeProcess(tmp_path / "node") as first, contextlib.ExitStack() as stack:
        first.wait_for(lambda e: e["event"] == "started", timeout_s=120)
        second = stack.enter_context(NodeProcess(tmp_path / "node", "--rounds", "1"))
        returncode, _, stderr = second.finish(timeout_s=60)
        assert returncode == 1
        assert "another swarmnode" in stderr and "--data-dir" in stderr and "Traceback" not in stderr


def one_line_failure(data_dir, *args, env=None) -> str:
    with NodeProcess(data_dir, "--rounds", "1", *args, env=env) as process:
        returncode, _, stderr = process.finish(timeout_s=120)
    assert returncode != 0
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
    with NodeProcess(tmp_path / "a", "--set", "swarm.id=pair", "--set", "sapo.sampling=equal") as first:
        started = first.wait_for(lambda e: e["event"] == "started", timeout_s=120)
        # the second node runs the SAPO authors' protocol: Q = 2 own + 2 peers' groups
        transplant = ["--set", "sapo.sampling=transplant", "--set", "sapo.local_groups=2", "--set", "sapo.external_groups=2"]
        with NodeProcess(tmp_path / "b", "--set", "swarm.id=pair", "--peers", started["maddrs"][0], "--rounds", "8",
                         *transplant) as second:
            second_id = second.wait_for(lambda e: e["event"] == "started", timeout_s=120)["peer_id"]
            listed = census_until(started["metrics_url"], lambda nodes: len(nodes) == 2, timeout_s=60)  # both beacons
            assert set(listed) == {started["peer_id"], second_id}
            assert all(node["model_id"] == started["model"] for node in listed.values())
            returncode, stdout, stderr = second.finish(timeout_s=240)
            assert returncode == 0, stderr
        first.signal(signal.SIGTERM)
        assert first.finish(timeout_s=60)[0] == 0
    rounds = [e for e in events(stdout) if e["event"] == "round"]
    assert sum(r["rollouts_in"] for r in rounds) > 0
    assert sum(r["groups_external"] for r in rounds) > 0
    assert max(r["peers"] for r in rounds) >= 1
    # transplant asks I = 2 questions only after a round whose peers' groups had an advantage, else all Q = 4
    supplied = [False] + [r["groups_external_informative"] > 0 for r in rounds[:-1]]
    assert [r["questions"] for r in rounds] == [2 if peers else 4 for peers in supplied]
    assert 2 in [r["questions"] for r in rounds]
    first_records = read_records(tmp_path / "a" / "metrics.jsonl")
    assert sum(r.rollouts_in for r in first_records) > 0
    assert {r.questions for r in first_records} == {4}  # equal sampling asks Q whatever its peers do
    with_peers = [r for r in first_records if r.peers >= 1]  # alone, a node sends nothing
    assert with_peers and all(r.bytes_in > 0 and r.bytes_out > 0 for r in with_peers)  # the traffic sparkline's data


def census_until(url: str, done, timeout_s: float) -> dict[str, dict]:
    """Poll a node's /census (what `swarmnode swarm --url` reads) until `done(nodes by peer id)`; AssertionError,
    with what it listed, at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"{url}/census", timeout=30) as response:
            nodes = {node["peer_id"]: node for node in json.loads(response.read())["nodes"]}
        if done(nodes):
            return nodes
        assert time.monotonic() < deadline, f"the census listed {sorted(nodes)} after {timeout_s:g} s"
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


def test_a_node_whose_disk_fills_up_trains_on_and_keeps_its_newest_checkpoint(tmp_path, tmpfs):
    """Days on a volunteer's machine, and the disk fills after round 1's checkpoint: each due save, and the one at
    the stop, fails as a `checkpoint_failed` problem naming the kept checkpoint; rounds go on, round 1 stays on disk
    as it was, the metrics still describe it, and once there is room the next save succeeds."""
    import threading

    import torch

    from swarmnode.config import load_config
    from swarmnode.learn.checkpoint import load_checkpoint
    from swarmnode.node import Node

    disk = tmpfs.mount(tmp_path / "checkpoints")
    kept = disk / "round-00000001"
    overrides = [flag for flag in FAST if flag != "--set"] + [
        "gossip.enabled=false", "metrics.port=null", "checkpoint.every_rounds=1", "checkpoint.min_interval_s=0",
    ]
    logged: list[dict] = []
    node = Node(load_config(None, overrides), tmp_path, logged.append, threading.Event())
    try:
        node.start()
        node.run(1)
        model = node.learner.policy.model
        weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        size = sum(path.stat().st_size for path in kept.iterdir())
        tmpfs.leave_free(disk, size // 2)
        node.run(2)
        assert [e["round"] for e in logged if e["event"] == "round"] == [1, 2, 3]
        failed = [e for e in logged if e["event"] == "checkpoint_failed"]
        assert [(e["round"], e["checkpoint"]) for e in failed] == [(2, str(kept)), (3, str(kept)), (3, str(kept))]
        for event in failed:
            assert f"cannot write a checkpoint in {disk}: " in event["message"]
            assert "No space left on device" in event["message"] and "free disk space" in event["message"]
            assert "newest checkpoint kept: round-00000001" in event["message"]
        assert sorted(path.name for path in disk.iterdir()) == [kept.name]  # nothing half-written, nothing aside
        assert node.checkpoint == kept
        value = node.metrics.registry.get_sample_value
        assert value("swarmnode_problems_total", {"kind": "checkpoint_failed"}) == 3
        assert node.status.problems_total["checkpoint_failed"] == 3
        assert value("swarmnode_checkpoint_bytes") == size  # the dashboard's checkpoint is the one kept

        # room for a checkpoint with Adam's two moments per weight: round 1 took no step if its groups carried no
        # signal, and then its checkpoint held no optimizer state (a third of this one's size)
        tmpfs.leave_free(disk, 4 * size)
        node.save_checkpoint()
        failed_again = [e["message"] for e in logged if e["event"] == "checkpoint_failed"][3:]
        assert node.checkpoint == disk / "round-00000003", (failed_again, shutil.disk_usage(disk), size)
        assert sorted(path.name for path in disk.iterdir()) == [kept.name, "round-00000003"]
        assert load_checkpoint(kept, model, None).round == 1
        assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters() if p.requires_grad)
    finally:
        node.close()
