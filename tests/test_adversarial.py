"""Adversarial peers against a real victim node on 127.0.0.1 (swarmnode/lab/adversarial_peers.py drives them).

The victim runs its real round loop; a spy records what its collector returned, what its learner refused
and exactly which groups its trainer was given. No attack may ever reach the trainer; each must be
counted under its reason code where it is stopped; a sender of poisoned rewards gets banned; and a flood
of records leaves the victim's memory bounded and its rounds going.
"""

from __future__ import annotations

import pytest

from swarmnode.lab.adversarial_peers import run_attacks, run_floods
from swarmnode.lab.attacker_peer import ATTACKS

pytestmark = pytest.mark.network

# The default suite runs one attack per layer that stops it; the slow suite runs the whole catalogue.
QUICK = ("forged_signature", "wrong_subkey", "nan_reward", "too_many_rollouts", "unknown_family", "poisoned_rewards")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_attacks(tmp_path_factory.mktemp("attacks"), QUICK)


def rows(report: dict, attack: str) -> list[dict]:
    return [row for row in report["attacks"] if row["attack"].startswith(attack)]


def test_no_attack_is_ever_trained_on_while_the_honest_peers_groups_are(quick):
    assert [row["trained_on"] for row in quick["attacks"]] == [0] * len(quick["attacks"])
    assert quick["honest_groups_trained_total"] > 0  # the spy sees real training on peers' groups


@pytest.mark.parametrize("attack", QUICK)
def test_each_attack_is_counted_under_its_reason_where_it_is_stopped(quick, attack):
    where, reason = ATTACKS[attack]
    first = rows(quick, attack)[0]
    assert first["counted"], first
    if where == "store":  # no honest peer stored it, the victim refused it, and nothing reached the collector
        assert first["stored_by_peers"] == 0 and first["victim_refused_at_store"].get(reason, 0) >= 1
        assert first["round_rejected"].get(f"dht_{reason}", 0) >= 1  # and the node's metrics show it
    else:
        assert first["learner_rejected"].get(reason, 0) >= 1 and first["round_rejected"].get(reason, 0) >= 1


def test_poisoned_rewards_are_never_trained_on_and_the_sender_is_banned(quick):
    poisoned = rows(quick, "poisoned_rewards")
    assert all(row["trained_on"] == 0 for row in poisoned)
    assert sum(row["learner_rejected"].get("reward_mismatch", 0) for row in poisoned) >= 4
    assert poisoned[-2]["attacker_banned"]
    after_ban = poisoned[-1]
    assert after_ban["collect_rejected"].get("banned", 0) >= 1 and after_ban["learner_rejected"] == {}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_attack_of_the_catalogue_is_stopped_counted_and_never_trained_on(tmp_path):
    report = run_attacks(tmp_path)
    assert report["trained_on_attacker_total"] == 0 and report["honest_groups_trained_total"] > 0
    assert [row["attack"] for row in report["attacks"] if not row["counted"]] == []
    assert report["batches_delivered_twice"] == 0  # replays included
    assert rows(report, "poisoned_rewards")[-1]["collect_rejected"].get("banned", 0) >= 1


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_flood_from_one_peer_leaves_memory_bounded_and_rounds_going(tmp_path):
    """1,000 records/s (as fast as this machine lets the attacker send) from one identity, then from a fresh
    identity per record: the victim keeps completing rounds and stores within its budget."""
    report = run_floods(tmp_path, rate=1000.0, seconds=25.0, quiet_s=10.0, text_bytes=8192,
                        modes=("one_identity", "sybils"))
    for mode, row in report["modes"].items():
        assert row["flood"]["sent"] >= 5_000, (mode, row["flood"])
        assert row["during"]["rounds"] >= 1 and row["after"]["rounds"] >= 1, (mode, row)
        assert row["during"]["rss_peak_mb"] - row["before"]["rss_end_mb"] < 400, (mode, row)
    refusals = report["victim_dht_refusals"]  # the flood hits its sender's store rate, or a storage budget
    assert refusals.get("dht_key_full", 0) + refusals.get("dht_storage_full", 0) + refusals.get("dht_store_rate", 0) > 0, refusals
