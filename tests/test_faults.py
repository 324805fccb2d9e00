"""The fault-injection suite (swarmnode.lab.faults) on this checkout: real `swarmnode join` processes on 127.0.0.1,
each fault as a volunteer's machine meets it, each goal as benchmarks/README.md's fault table states it."""

from __future__ import annotations

import pytest

from swarmnode.lab import faults

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
