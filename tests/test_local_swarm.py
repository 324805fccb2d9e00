"""swarmnode/lab/local_swarm.py, the benchmarks' launcher: a real bootstrap and real nodes on 127.0.0.1 run,
report their rounds, and leave no process or p2pd behind, whether they finish or are interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from swarmnode.lab import local_swarm

FAST = ("sapo.questions_per_round=4", "sapo.completions_per_question=4", "model.max_new_tokens=12", "eval.every_rounds=0")


def survivors(pids: set[int]) -> list[str]:
    """Those of `pids` still running, and any p2pd whose control socket names one of them as its owner."""
    alive = [f"{p.pid} {p.name()}" for p in map(_process, pids) if p is not None and p.status() != psutil.STATUS_ZOMBIE]
    return alive + [f"{p.pid} p2pd" for p in local_swarm._daemons_owned_by(pids)]


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.network
def test_two_nodes_run_their_rounds_share_and_leave_nothing_running(tmp_path):
    nodes = [
        local_swarm.NodeSpec(f"node{k}", tuple(local_swarm.seeded_overrides(k, seed=0)), rounds=3) for k in range(2)
    ]
    swarm = local_swarm.LocalSwarm(nodes, tmp_path, "test-local", FAST, timeout_s=240)
    result = swarm.run()
    assert result.ok, result.failures()
    assert [len(node.records) for node in result.nodes] == [3, 3]
    assert len({node.peer_id for node in result.nodes}) == 2
    assert sum(r.rollouts_in for node in result.nodes for r in node.records) > 0
    assert result.leftovers == []
    assert survivors(set(swarm._seen)) == []


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_on_the_launcher_tears_the_whole_swarm_down(tmp_path):
    launcher = subprocess.Popen(
        [sys.executable, "-m", "swarmnode.lab.local_swarm", "--nodes", "2", "--rounds", "1000", "--dir", str(tmp_path),
         "--swarm-id", "test-interrupt", *(part for flag in FAST for part in ("--set", flag))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    names: dict[int, str] = {}
    deadline = time.monotonic() + 180
    while True:
        names |= {p.pid: p.name() for p in psutil.Process(launcher.pid).children(recursive=True)}
        if all((tmp_path / f"node{k}" / "metrics.jsonl").exists() for k in range(2)):
            break
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.stdout.read()
        time.sleep(0.5)
    launcher.send_signal(signal.SIGINT)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 1 and "interrupted" in output, output
    assert list(names.values()).count("p2pd") == 3, names  # the bootstrap's and both nodes'
    assert survivors(set(names)) == [], output
