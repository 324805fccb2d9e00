"""A sender's store requests held to a rate (swarmnode/net/store_rate.py): on its own with an injected clock, and
on real p2pd peers, where a flooding peer is answered "not stored" while an honest peer's stores land."""

from __future__ import annotations

import contextlib

import pytest
from gossip_peers import join
from test_gossip import new_key, rollouts

from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.lab.attacker_peer import AttackerPeer
from swarmnode.net.store_rate import StoreRate
from swarmnode.wire.rules import SwarmRules

RULES = SwarmRules.of(SwarmConfig(id="store-rate-test"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_sender_gets_its_burst_then_its_rate_and_others_keep_theirs():
    clock = Clock()
    rate = StoreRate(bytes_per_s=100.0, burst_bytes=1_000.0, clock=clock)
    assert [rate.allow("flooder", 400) for _ in range(3)] == [True, True, False]
    assert rate.allow("honest", 1_000)  # a bucket per sender
    clock.now = 1.0  # 100 bytes back: 300 now
    assert rate.allow("flooder", 300) and not rate.allow("flooder", 1)
    clock.now = 100.0
    assert rate.allow("flooder", 1_000) and not rate.allow("flooder", 1)  # a long pause refills the burst, no more
    assert rate.refusals() == {"store_rate": 3}


def test_the_senders_remembered_are_bounded_and_a_forgotten_one_starts_full():
    clock = Clock()
    rate = StoreRate(bytes_per_s=1.0, burst_bytes=10.0, max_peers=3, clock=clock)
    assert rate.allow("first", 10) and not rate.allow("first", 1)
    for peer in ("b", "c", "d"):
        rate.allow(peer, 1)
    assert rate.allow("first", 10)  # forgotten: a sender gains a burst by being forgotten, never more than that


@pytest.mark.network
def test_a_peer_storing_faster_than_its_rate_is_answered_not_stored_while_honest_stores_land(tmp_path):
    with contextlib.ExitStack() as stack:
        replica_peer, _ = join(stack, new_key(tmp_path, "replica"), RULES, NetworkConfig())
        network = NetworkConfig(initial_peers=replica_peer.advertised_maddrs())
        _, honest = join(stack, new_key(tmp_path, "honest"), RULES, network)
        attacker = AttackerPeer(new_key(tmp_path, "flooder"), replica_peer.advertised_maddrs(), RULES)
        stack.callback(attacker.close)
        # a smaller bucket than the default, so that the flood outruns it however slowly this machine signs
        replica_peer.store_rate.burst_bytes, replica_peer.store_rate.bytes_per_s = 256_000.0, 64_000.0
        flood = attacker.flood(replica_peer.peer_id, rate=400.0, seconds=3.0, mode="one_identity", text_bytes=16_384)
        assert flood["refused"] > flood["stored"] > 0, flood
        assert replica_peer.refusals()["store_rate"] >= 1
        assert honest.publish(rollouts(1), model_id="m", suite_version="v").ok
