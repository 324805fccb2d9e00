"""The bandwidth cap (network.max_kbps, swarmnode/net/bandwidth.py): the bucket on its own with an injected clock,
and on real p2pd peers on 127.0.0.1, where a capped peer's DHT traffic stays within its cap while an uncapped one
running the same loop does not."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from gossip_peers import join
from test_gossip import new_key

from swarmnode.config import GossipConfig, NetworkConfig, SwarmConfig
from swarmnode.net.bandwidth import BURST_S, BYTES_PER_KBIT, BandwidthCap
from swarmnode.net.peer import LOOP_SLACK_S
from swarmnode.net.routing import spare_unasked
from swarmnode.wire.rollout import Completion, Rollout, TaskRef
from swarmnode.wire.rules import SwarmRules


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def cap(clock: Clock, kbps: float = 8.0, max_wait_s: float = 1.0) -> BandwidthCap:
    """8 kbit/s: 1000 bytes a second, a full bucket of 2000."""
    return BandwidthCap(kbps, max_wait_s=max_wait_s, clock=clock, sleep=clock.sleep)


def test_the_rate_is_kilobits_of_both_directions_and_a_full_bucket_holds_two_seconds_of_it():
    clock = Clock()
    bucket = cap(clock)
    assert (bucket.bytes_per_s, bucket.burst_bytes) == (1000.0, 2000.0)
    assert bucket.admit(1500) and bucket.admit(600)  # the burst: 500 left, so the 600 go, and 100 are owed
    assert not bucket.admit(1)  # refused while anything is owed
    clock.now += 0.1
    assert bucket.admit(300) and not bucket.admit(1)  # then the rate: 0.1 s paid the 100 owed
    clock.now += 3600
    assert bucket.admit(2500) and not bucket.admit(1)  # an hour idle refilled 2000, no more: 500 owed
    clock.now += 0.5
    assert bucket.admit(1)
    assert bucket.refusals() == {"bandwidth_cap": 3}


def test_a_request_larger_than_the_bucket_goes_and_the_deficit_it_leaves_is_paid_for_before_the_next():
    clock = Clock()
    bucket = cap(clock)
    assert bucket.admit(2**20)  # a 1 MiB batch goes on a full bucket far smaller than itself
    owed_s = (2**20 - 2000) / 1000
    clock.now += owed_s - 0.01
    assert not bucket.admit(1)  # still owing 10 bytes
    clock.now += 0.01
    assert bucket.admit(1)


def test_responses_are_charged_whatever_the_bucket_holds_and_peers_are_refused_while_it_owes():
    clock = Clock()
    bucket = cap(clock)
    assert bucket.admit(100)  # a peer's find
    bucket.charge(5000)  # our answer to it: 3100 bytes owed
    assert not bucket.admit(100)
    clock.now += 3.1
    assert bucket.admit(100)
    assert bucket.refusals() == {"bandwidth_cap": 1}


def test_our_own_request_waits_out_a_short_deficit_and_is_not_sent_into_a_long_one():
    clock = Clock()
    bucket = cap(clock, max_wait_s=1.0)
    assert asyncio.run(bucket.send(2500))  # 500 bytes owed
    started = clock.now
    assert asyncio.run(bucket.send(100))  # waits 0.5 s, then goes
    assert clock.now - started == pytest.approx(0.5) and clock.slept == [pytest.approx(0.5)]
    bucket.charge(5000)  # its response: 5100 bytes owed, 5.1 s to wait
    assert not asyncio.run(bucket.send(100))
    assert clock.slept == [pytest.approx(0.5)]  # refused at once, without sleeping first
    assert bucket.refusals() == {"bandwidth_cap_unsent": 1}


def test_a_waiter_outrun_by_others_gives_up_at_its_deadline_not_later():
    clock = Clock()

    async def rival_takes_first(seconds: float) -> None:
        await clock.sleep(seconds)
        bucket.charge(500)  # another request got in while this one slept

    bucket = BandwidthCap(8.0, max_wait_s=1.0, clock=clock, sleep=rival_takes_first)
    bucket.charge(2600)  # 600 bytes owed
    started = clock.now
    assert not asyncio.run(bucket.send(100))  # 0.6 s, then 0.5 more would pass its 1 s
    assert clock.now - started == pytest.approx(0.6)


def test_a_peer_our_cap_did_not_ask_is_neither_dropped_nor_barred_once_per_request_and_a_silent_one_is():
    updates: list[tuple[str, bool]] = []
    barred: list[str] = []

    async def update_routing_table(node_id, peer_id, responded=True):
        updates.append((peer_id, responded))

    node = SimpleNamespace(
        protocol=SimpleNamespace(update_routing_table=update_routing_table),
        blacklist=SimpleNamespace(register_failure=barred.append),
    )
    unasked = Counter({"not-asked": 2})  # two of our requests to it were not sent
    spare_unasked(node, unasked)
    for peer in ("not-asked", "silent", "not-asked"):
        node.blacklist.register_failure(peer)  # a lookup's, right after the failed find...
        asyncio.run(node.protocol.update_routing_table(None, peer, responded=False))  # ...then the routing update
    assert barred == ["silent"] and updates == [("silent", False)]
    assert not unasked  # used up: its next silence is its own
    node.blacklist.register_failure("not-asked")
    asyncio.run(node.protocol.update_routing_table(None, "not-asked", responded=False))
    assert barred == ["silent", "not-asked"] and updates == [("silent", False), ("not-asked", False)]


# ---------------------------------------------------------------------------------------------------------
# Real peers on 127.0.0.1

SWARM = SwarmConfig(id="bandwidth-test")
RULES = SwarmRules.of(SWARM)
CAP_KBPS = 64.0  # 8,000 bytes a second: under two of this loop's batches
LOOP_S = 4.0
MAX_ITERATIONS = 200
GOSSIP = GossipConfig(publish_timeout_s=1.0, collect_timeout_s=1.0)
FRAME_BYTES = 5_000  # a batch of `batch()` sealed: about 4.5 KB
# What the bucket may owe when the loop ends: it lets a request through whenever it owes nothing and charges the
# answer when it arrives, so the last requests let through (a publish, one collect's finds: the three peers'
# batches from each replica asked at once, a peer's find we served) are over the cap by up to that much.
MARGIN_BYTES = 8 * FRAME_BYTES


def batch(tag: int, peer: str) -> list[Rollout]:
    """Two rollouts of 2,000 characters each."""
    return [
        Rollout(TaskRef("chain_sum", "0123456789abcdef", tag, i), (Completion(f"{peer}{tag}" + "x" * 2000, 1.0),))
        for i in range(2)
    ]


@pytest.mark.network
@pytest.mark.parametrize("max_kbps", [CAP_KBPS, None], ids=["capped", "uncapped"])
def test_a_capped_peer_keeps_its_dht_traffic_within_the_cap_and_refuses_peers_while_over_it(tmp_path, max_kbps):
    """Three peers publish and collect in a bounded loop. The capped one's traffic over the loop stays within
    cap x elapsed + a full bucket + MARGIN_BYTES; the same peer uncapped, running the same loop, goes beyond
    that bound. The requests it refused arrived all the same: counted apart, and printed."""
    with contextlib.ExitStack() as stack:
        bootstrap, bootstrap_gossip = join(stack, new_key(tmp_path, "bootstrap"), RULES, NetworkConfig(), GOSSIP)
        entry = bootstrap.advertised_maddrs()
        capped, capped_gossip = join(
            stack, new_key(tmp_path, "capped"), RULES, NetworkConfig(initial_peers=entry, max_kbps=max_kbps), GOSSIP
        )
        _, other_gossip = join(stack, new_key(tmp_path, "other"), RULES, NetworkConfig(initial_peers=entry), GOSSIP)
        assert not capped.client_mode  # a DHT server: the others store on it and read from it
        gossips = {"capped": capped_gossip, "other": other_gossip, "bootstrap": bootstrap_gossip}

        before, started = capped.traffic(), time.monotonic()
        slowest_s, iterations = 0.0, 0
        while time.monotonic() - started < LOOP_S and iterations < MAX_ITERATIONS:
            for name, gossip in gossips.items():
                called = time.monotonic()
                published = gossip.publish(batch(iterations, name), model_id="m", suite_version="v")
                gossip.collect(8)
                slowest_s = max(slowest_s, time.monotonic() - called)
                assert published.frame_bytes <= FRAME_BYTES
            iterations += 1
        elapsed = time.monotonic() - started
        spent = capped.traffic() - before

        bound = CAP_KBPS * BYTES_PER_KBIT * (elapsed + BURST_S) + MARGIN_BYTES
        moved = spent.bytes_in + spent.bytes_out
        stats = capped_gossip.stats
        print(
            f"max_kbps={max_kbps}: {moved:,} bytes in and out in {elapsed:.2f} s ({iterations} iterations); cap x "
            f"elapsed + bucket {bound - MARGIN_BYTES:,.0f}, bound {bound:,.0f}; refused {spent.requests_refused} "
            f"requests ({spent.bytes_refused:,} bytes); {dict(capped.refusals())}; published {stats.published}, "
            f"failed {stats.publish_failures}; slowest publish + collect {slowest_s:.2f} s"
        )
        # fail soft: a publish and a collect end by their deadlines (+ the loop's slack, + a loaded machine's)
        assert slowest_s < GOSSIP.publish_timeout_s + GOSSIP.collect_timeout_s + 2 * LOOP_SLACK_S + 5.0
        if max_kbps is None:
            assert moved > bound
            assert capped.refusals()["bandwidth_cap"] == 0
        else:
            assert 0 < moved <= bound
            assert capped.refusals()["bandwidth_cap"] >= spent.requests_refused > 0
