"""The fault-injection suite (swarmnode.lab.faults) on this checkout: real `swarmnode join` processes on 127.0.0.1,
each fault as a volunteer's machine meets it, each goal as benchmarks/README.md's fault table states it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from peer_process import wait_until_gone

from swarmnode.config import load_config
from swarmnode.lab import faults
from swarmnode.node import DaemonLost, Node

pytestmark = pytest.mark.network


def test_a_killed_p2pd_is_restarted_and_the_node_shares_again_within_two_rounds(tmp_path):
    outcome = faults.p2pd_killed(tmp_path)
    assert outcome.goal_met, outcome
    assert outcome.behaviour.startswith("p2pd_died event")


@pytest.mark.slow
def test_a_node_whose_clock_is_ten_seconds_off_is_refused_with_the_fix_and_the_swarm_goes_on(tmp_path):
    ahead = faults.clock_skew(tmp_path / "ahead", offset_s=10.0)
    assert ahead.goal_met, ahead
    assert "is 10." in ahead.details["message"] and "s ahead of the swarm's" in ahead.details["message"]
    assert "timedatectl" in ahead.details["message"]


@pytest.mark.slow
def test_a_newcomer_joining_through_a_restarted_bootstrap_reaches_the_swarm_within_a_minute(tmp_path):
    outcome = faults.bootstrap_restarted(tmp_path)
    assert outcome.goal_met, outcome


@pytest.mark.slow
def test_sigterm_in_a_long_generate_exits_within_ten_seconds_and_resumes_at_the_abandoned_round(tmp_path):
    outcome = faults.sigterm_in_generate(tmp_path)
    assert outcome.goal_met, outcome
    assert [e["event"] for e in outcome.details["stopped"]] == ["stop_requested", "stopped"]


def test_a_p2pd_that_cannot_be_restarted_twice_ends_the_run_with_one_line(tmp_path):
    """In process, for real: p2pd killed and its configured port taken by another program, so each restart fails; the first
    failure is a warning and training goes on, the second in a row ends the run (DaemonLost)."""
    events: list[dict] = []
    with socket.socket() as probe:  # a configured port: a restart may not move to another
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    overrides = [f"network.port={port}", "metrics.port=null", "sapo.questions_per_round=2", "sapo.completions_per_question=2",
                 "model.max_new_tokens=4", "eval.every_rounds=0", "network.host=127.0.0.1", "gossip.beacon=false"]
    node = Node(load_config(None, overrides), tmp_path / "node", events.append, threading.Event())
    try:
        node.start()
        node.run_round()
        daemon = node.peer.daemon_pid()
        os.kill(daemon, signal.SIGKILL)
        assert wait_until_gone(daemon, 5.0)
        with squatting(port):
            node.run_round()  # the restart fails: warned, and the round is played alone
            assert [e["event"] for e in events if e["event"].startswith("p2pd")] == ["p2pd_died", "p2pd_restart_failed"]
            assert node.round == 2
            with pytest.raises(DaemonLost, match="p2pd died and 2 restarts failed"):
                node.run_round()
    finally:
        node.close()
    assert node.metrics.status.problems_total["p2pd_died"] == 2


@contextlib.contextmanager
def squatting(port: int, timeout_s: float = 10.0) -> Iterator[None]:
    """Another program listening on 127.0.0.1:`port`, once the killed daemon's socket is released."""
    deadline = time.monotonic() + timeout_s
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the dead daemon's TIME_WAIT
        while True:
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {port} still held {timeout_s:g} s after the kill"
                time.sleep(0.1)
        squatter.listen()
        yield
