"""Chaos on real processes: a node killed with SIGKILL mid-round resumes from its last checkpoint; a swarm
that loses half its nodes and then its bootstrap peer keeps completing rounds and gossiping.

(A full or read-only data dir is covered at the checkpoint layer in test_checkpoint.py.)
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import psutil
import pytest

from swarmnode.lab import local_swarm
from swarmnode.lab.node_process import FAST, NodeProcess, events
from swarmnode.learn.checkpoint import Checkpointer
from swarmnode.learn.policy import Policy
from swarmnode.ops.metrics import read_records

pytestmark = pytest.mark.network
LOOPBACK = {"127.0.0.1", "::1"}


def inet_addresses(pid: int) -> set[str]:
    """Local IP addresses of every TCP/UDP socket of a process and its descendants (p2pd included)."""
    root = psutil.Process(pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        for connection in process.net_connections(kind="inet"):
            found.add(connection.laddr.ip)
    return found


def phase_of(metrics_url: str) -> tuple[int, str]:
    """(round, phase) of a running node, from its /status."""
    with urllib.request.urlopen(f"{metrics_url}/status", timeout=10) as response:
        status = json.loads(response.read())
    return status["round"], status["phase"]


def test_sigkill_mid_round_resumes_from_the_last_checkpoint_with_nothing_corrupt(tmp_path):
    data_dir = tmp_path / "node"
    with NodeProcess(data_dir, "--set", "checkpoint.every_rounds=2", "--set", "checkpoint.min_interval_s=0") as node:
        url = node.wait_for(lambda e: e["event"] == "started", timeout_s=120)["metrics_url"]
        node.wait_for(lambda e: e["event"] == "round" and e["round"] >= 5, timeout_s=180)
        assert inet_addresses(node.pid) <= LOOPBACK  # nothing bound or connected beyond what we configured
        deadline = time.monotonic() + 60
        while (killed_in := phase_of(url))[1] not in ("generate", "train"):  # mid-round, not between two rounds
            assert time.monotonic() < deadline, "never saw the node generate or train"
            time.sleep(0.01)
        node.kill()  # the moment it said so
    print(f"killed in round {killed_in[0] + 1}'s {killed_in[1]} phase")
    saved = Checkpointer(data_dir / "checkpoints").checkpoints()
    assert saved and saved[-1].name >= "round-00000004"
    last = int(saved[-1].name.split("-")[1])
    for path in saved:  # every checkpoint on disk is complete and loads
        assert Checkpointer(path.parent).load(Policy.load(dtype="float32").model, None) is not None
    restarted_at = time.monotonic()
    with NodeProcess(data_dir, "--rounds", "2") as again:
        returncode, stdout, stderr = again.finish(timeout_s=180)
    assert returncode == 0, stderr
    logged = events(stdout)
    assert logged[0]["event"] == "started" and logged[0]["round"] == last
    assert [e["round"] for e in logged if e["event"] == "round"] == [last + 1, last + 2]
    print(f"recovery: first round after restart {time.monotonic() - restarted_at:.1f} s after relaunch")
    records = read_records(data_dir / "metrics.jsonl")
    assert [r.round for r in records] == list(range(1, last + 3))  # rounds lost with the kill replaced, none twice
    assert records[last].resumed_from == last


def test_a_swarm_keeps_rounds_and_gossip_going_after_losing_half_its_nodes_and_the_bootstrap(tmp_path):
    nodes = [local_swarm.NodeSpec(f"node{k}", tuple(local_swarm.seeded_overrides(k, seed=0)), rounds=1000)
             for k in range(4)]
    overrides = (*FAST[1::2], "gossip.collect_timeout_s=3", "checkpoint.every_rounds=1000")
    with local_swarm.LocalSwarm(nodes, tmp_path, "test-chaos", overrides, timeout_s=600) as swarm:
        children = {child.name: child for child in swarm._children}

        def records(name: str):
            path = children[name].data_dir / "metrics.jsonl"
            return read_records(path) if path.exists() else []

        def wait_until(condition, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while not condition():
                assert time.monotonic() < deadline, {name: len(records(name)) for name in children}
                time.sleep(0.5)

        wait_until(lambda: all(len(records(n)) >= 3 for n in children), 300)
        for name in ("node2", "node3"):  # 50% of the swarm, no warning, p2pd left to notice on its own
            os.killpg(children[name].popen.pid, signal.SIGKILL)
        killed_at = time.time()
        wait_until(lambda: all(len([r for r in records(n) if r.time > killed_at]) >= 3 for n in ("node0", "node1")), 120)
        os.killpg(swarm._processes[0].popen.pid, signal.SIGKILL)  # the bootstrap peer
        bootstrap_killed_at = time.time()
        wait_until(lambda: all(len([r for r in records(n) if r.time > bootstrap_killed_at]) >= 4 for n in ("node0", "node1")), 120)
        for name in ("node0", "node1"):
            assert children[name].popen.poll() is None, f"{name} stopped"
            before = [r for r in records(name) if r.time < killed_at]
            after = [r for r in records(name) if r.time > killed_at]
            usual = max(b.time - a.time for a, b in zip(before, before[1:]))
            gaps = [b.time - a.time for a, b in zip(after, after[1:])]
            assert max(gaps) < usual + 3.0 + 5.0, (name, usual, gaps)  # + collect and publish timeouts
            assert sum(r.rollouts_in for r in records(name) if r.time > bootstrap_killed_at) > 0, name
