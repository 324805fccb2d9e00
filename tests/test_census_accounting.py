"""The census's bookkeeping, driven through a stand-in for the one DHT read it makes (`get_many`) that returns
real signed beacons: totals scaled up from the buckets read, a bucket holding more signers than a census opens
counted and marked, a thinly answered bucket marked, each wave's read given the time left before the deadline,
the first wave sized to the swarm expected, a census of unknown size probing every tier first (and judged on the
tier it reads), a wave cut by the
deadline ending the census, and which refused beacons are counted."""

from __future__ import annotations

import dataclasses
import itertools
import random
import types
from collections.abc import Sequence

import pytest

from swarmnode.net import census as census_module
from swarmnode.net.census import CENSUS_QUORUM, CENSUS_SAMPLE, Census, CensusEntry, take_census
from swarmnode.net.replicas import REPLICAS, Coverage, Entries, Read
from swarmnode.net.storage import MAX_BEACONS_PER_BUCKET
from swarmnode.wire.beacon import BEACON, Beacon
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import TIER_MAX, bucket_of, census_key
from swarmnode.wire.rules import READ_CLOCK_SLACK_S, SwarmRules

RULES = SwarmRules("census-accounting", window_s=30.0, record_ttl_s=60.0, num_shards=16, clock_skew_s=5.0)
T0 = 1_800_000_010.0
WINDOW = RULES.window_of(T0)
TIER, BUCKETS = 3, 8
EXPECTED = 192.0  # nodes that make a census read tier 3: 8 buckets of 24
PLACE_OF_KEY = {
    census_key(RULES.swarm_id, WINDOW, tier, bucket): (tier, bucket)
    for tier in range(TIER_MAX + 1) for bucket in range(2**tier)
}


def beacon(
    rounds_per_hour: float = 60.0, rollouts_per_hour: float = 480.0, timestamp: float = T0, swarm_id: str = RULES.swarm_id
) -> Beacon:
    return Beacon(
        swarm_id, RULES.window_of(timestamp), timestamp, "swarmnode/test", "model-a", round=3,
        rounds_per_hour=rounds_per_hour, rollouts_per_hour=rollouts_per_hour,
    )


def signers(bucket: int, count: int, tier: int = TIER) -> list[Identity]:
    """The first `count` identities, by seed, whose beacons belong in census bucket `bucket` of `tier`."""
    identities = (Identity.from_seed(seed.to_bytes(32, "big")) for seed in itertools.count())
    return list(itertools.islice((i for i in identities if bucket_of(i.peer_id, tier) == bucket), count))


def held(identities: list[Identity], contents: list[Beacon] | None = None) -> Entries:
    """A bucket's entries as its replicas return them: each signer's sealed beacon (`contents`, in order, or the
    plain one) under its peer id."""
    signed = contents or [beacon()] * len(identities)
    return {i.peer_id: (BEACON.seal(c, i), RULES.expiration_of(c.timestamp)) for i, c in zip(identities, signed)}


@dataclasses.dataclass
class Clock:
    """The census's monotonic clock, moved only by reads, and DHT time, which starts just after T0 and moves with it."""

    now: float = 100.0

    def monotonic(self) -> float:
        return self.now

    def dht_time(self) -> float:
        return T0 + 1.0 + (self.now - 100.0)


@dataclasses.dataclass(frozen=True)
class Reply:
    """How one read goes: the seconds it takes, how many of its keys (the first) too few replicas answered, and,
    when the deadline cuts it, how many of its keys answered."""

    took_s: float = 0.0
    thin: int = 0
    cut_after: int | None = None


class OneReadPeer:
    """Stands in for DHTPeer.get_many: answers each census key with what its (tier, bucket) holds, spending `clock`
    time; `buckets` keyed by bucket alone are tier 3's."""

    verified = None

    def __init__(
        self, buckets: dict[int, Entries] | dict[tuple[int, int], Entries], clock: Clock, replies: Sequence[Reply] = ()
    ) -> None:
        self.buckets = {place if isinstance(place, tuple) else (TIER, place): held for place, held in buckets.items()}
        self.clock, self.replies = clock, list(replies)
        self.calls: list[tuple[list[tuple[int, int]], float]] = []  # ((tier, bucket) asked, timeout_s) per read

    def get_many(self, keys: Sequence[str], *, timeout_s: float, quorum: int) -> Read:
        assert quorum == CENSUS_QUORUM
        reply = self.replies[len(self.calls)] if len(self.calls) < len(self.replies) else Reply()
        asked = [PLACE_OF_KEY[key] for key in keys]
        self.calls.append((asked, timeout_s))
        self.clock.now += reply.took_s
        answered = list(zip(keys, asked))[: reply.cut_after]
        coverage = {
            key: Coverage(REPLICAS, REPLICAS, 1 if n < reply.thin else REPLICAS, False, quorum) for n, key in enumerate(keys)
        }
        entries = {key: dict(self.buckets.get(place, {})) for key, place in answered}
        return Read(entries, reply.cut_after is not None, coverage)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The census's clocks replaced by one that only reads move."""
    clock = Clock()
    monkeypatch.setattr(census_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(census_module, "get_dht_time", clock.dht_time)
    return clock


def test_totals_are_scaled_up_by_buckets_total_over_buckets_read_without_flooring() -> None:
    """Two nodes in 3 of 8 buckets: 16/3 nodes and (30+45)·8/3 rounds/h, estimated; all 8 read: as counted."""
    entries = [
        CensusEntry("a", beacon(rounds_per_hour=30.0, rollouts_per_hour=100.0)),
        CensusEntry("b", beacon(rounds_per_hour=45.0, rollouts_per_hour=200.0)),
    ]
    sampled = Census(RULES.swarm_id, T0, entries, buckets_read=3, buckets_total=BUCKETS).totals()
    assert sampled.nodes == pytest.approx(16 / 3)
    assert sampled.rounds_per_hour == pytest.approx(200.0)
    assert sampled.rollouts_per_hour == pytest.approx(800.0)
    assert sampled.models == 1 and sampled.estimated
    full = Census(RULES.swarm_id, T0, entries, buckets_read=BUCKETS, buckets_total=BUCKETS).totals()
    assert (full.nodes, full.rounds_per_hour, full.rollouts_per_hour, full.estimated) == (2, 75.0, 300.0, False)
    empty = Census(RULES.swarm_id, T0, [], buckets_read=0).totals()  # e.g. a first wave cut before any answer
    assert f"{empty.nodes:,.0f} {empty.rounds_per_hour:,.0f}" == "0 0"  # as the dashboard prints them: not "-0"


def test_a_bucket_over_the_cap_counts_its_excess_as_census_full_and_leaves_the_census_incomplete(clock: Clock) -> None:
    """130 signers in one bucket: 66 refused as census_full, one full bucket, not complete; 64 (the cap) are fine."""
    crowded = signers(7, 2 * MAX_BEACONS_PER_BUCKET + 2)
    at_cap = signers(2, MAX_BEACONS_PER_BUCKET)
    census = take_census(OneReadPeer({7: held(crowded), 2: held(at_cap)}, clock), RULES, timeout_s=5.0, expected_nodes=EXPECTED)
    assert census.refused == {"census_full": MAX_BEACONS_PER_BUCKET + 2}
    assert census.full_buckets == 1
    opened = {entry.peer_id for entry in census.entries}
    assert opened == {i.peer_id for i in crowded[:MAX_BEACONS_PER_BUCKET] + at_cap}
    assert census.buckets_read == BUCKETS and not census.timed_out and census.thin_buckets == 0
    assert not census.missing_self and not census.complete
    capped = take_census(
        OneReadPeer({7: held(crowded[:MAX_BEACONS_PER_BUCKET])}, clock), RULES, timeout_s=5.0, expected_nodes=EXPECTED
    )
    assert capped.full_buckets == 0 and capped.refused == {} and capped.complete


def test_a_bucket_too_few_of_whose_replicas_answered_leaves_the_census_incomplete(clock: Clock) -> None:
    """One of 8 buckets answered by 1 replica of 5: one thin bucket, not complete; all answering: complete."""
    thin = take_census(OneReadPeer({}, clock, [Reply(thin=1)]), RULES, timeout_s=5.0, expected_nodes=EXPECTED)
    assert thin.thin_buckets == 1 and thin.buckets_read == BUCKETS and not thin.timed_out
    assert not thin.complete
    assert take_census(OneReadPeer({}, clock), RULES, timeout_s=5.0, expected_nodes=EXPECTED).complete


def test_each_wave_asks_get_many_for_the_time_left_and_for_none_once_the_deadline_passed(clock: Clock) -> None:
    """Deadline 5 s: the first read gets 5 s, the next the 3 s left; one that came back past it leaves 0 s."""
    replies = [Reply(took_s=2.0), Reply(took_s=3.5), Reply(cut_after=0)]  # the 2nd answered in full, 0.5 s late
    peer = OneReadPeer({}, clock, replies)
    census = take_census(peer, RULES, timeout_s=5.0, enough=1, expected_nodes=EXPECTED, rng=random.Random(0))
    assert [timeout for _, timeout in peer.calls] == [5.0, 3.0, 0.0]
    assert census.timed_out and census.buckets_read == 3  # a first wave of 1, then 2, then none returned


def test_a_wave_cut_by_the_deadline_ends_the_census_counting_only_the_buckets_it_returned(clock: Clock) -> None:
    """A first wave of 2 buckets cut after 1: no further read, 1 bucket read, timed out, totals estimated."""
    peer = OneReadPeer({}, clock, [Reply(took_s=5.0, cut_after=1)])
    census = take_census(peer, RULES, timeout_s=5.0, enough=48, expected_nodes=EXPECTED, rng=random.Random(0))
    assert len(peer.calls) == 1
    assert census.timed_out and census.buckets_read == 1 and not census.complete and census.totals().estimated


@pytest.mark.parametrize(
    ("enough", "expected_nodes", "tier", "waves"),
    [(32, 100.0, 3, [3, 2, 2, 1]), (3, 30.0, 1, [1, 1]), (1, 1000.0, 6, [1] + [2] * 31 + [1]), (32, 16.0, 0, [1])],
)
def test_the_first_wave_reads_the_buckets_that_should_hold_enough_nodes_and_later_ones_two(
    clock: Clock, enough: int, expected_nodes: float, tier: int, waves: list[int]
) -> None:
    """The tier whose keys hold at most 24 of the nodes expected; a first wave of ceil(enough·buckets/expected)
    buckets, at least 1, at most all; then 2 at a time, until every bucket of that tier was read."""
    peer = OneReadPeer({}, clock)
    census = take_census(peer, RULES, timeout_s=5.0, enough=enough, expected_nodes=expected_nodes, rng=random.Random(0))
    assert [len(asked) for asked, _ in peer.calls] == waves
    assert sorted(place for asked, _ in peer.calls for place in asked) == [(tier, b) for b in range(2**tier)]
    assert census.tier == tier and census.buckets_read == census.buckets_total == 2**tier


def test_a_census_of_unknown_size_probes_one_bucket_of_every_tier_and_reads_the_tier_whose_buckets_held_beacons(
    clock: Clock,
) -> None:
    """640 nodes write under tiers 4-6 (the swarm's tier is 5: 32 buckets of 20): the probe's one read of a bucket
    per tier finds beacons at those tiers alone, estimates the size from them, and the census goes on at tier 5,
    the probed tier-5 bucket counted as read."""
    nodes = 640
    rng = random.Random(3)
    draws = random.Random(3)
    probed = {tier: draws.randrange(2**tier) for tier in range(TIER_MAX + 1)}  # what the probe draws
    holds = {(tier, probed[tier]): held(signers(probed[tier], nodes // 2**tier, tier)) for tier in (4, 5, 6)}
    swarm = (Identity.from_seed(seed.to_bytes(32, "big")) for seed in itertools.count())
    at_tier_5: dict[int, list[Identity]] = {b: [] for b in range(32)}
    while any(len(members) < nodes // 32 for members in at_tier_5.values()):
        identity = next(swarm)
        if len(members := at_tier_5[bucket_of(identity.peer_id, 5)]) < nodes // 32:
            members.append(identity)
    holds.update({(5, b): held(members) for b, members in at_tier_5.items()})
    peer = OneReadPeer(holds, clock)
    own = at_tier_5[probed[5]][0].peer_id  # our beacon went under tiers 4-6, not into the probed tier-0 key
    census = take_census(peer, RULES, timeout_s=5.0, enough=32, rng=rng, own=own)
    assert sorted(peer.calls[0][0]) == sorted(probed.items())
    assert census.tier == 5 and census.buckets_total == 32
    assert all(tier == 5 and bucket != probed[5] for asked, _ in peer.calls[1:] for tier, bucket in asked)
    assert len(census.entries) >= 32 and census.buckets_read == 1 + sum(len(asked) for asked, _ in peer.calls[1:])
    assert census.totals().nodes == pytest.approx(nodes, rel=0.5)
    assert not census.missing_self  # only the buckets of the tier read are judged, not the probe's others


@pytest.mark.parametrize("found", [CENSUS_SAMPLE, 24])
def test_a_sampled_census_stops_reading_once_it_has_seen_enough_nodes(clock: Clock, found: int) -> None:
    """A node's own census wants CENSUS_SAMPLE nodes, and finds that many or a full key's 24 in its first wave's
    one bucket: no second wave."""
    order = list(range(BUCKETS))
    random.Random(7).shuffle(order)  # the order take_census reads buckets in with this seed
    peer = OneReadPeer({order[0]: held(signers(order[0], found))}, clock)
    census = take_census(peer, RULES, timeout_s=5.0, enough=CENSUS_SAMPLE, expected_nodes=EXPECTED, rng=random.Random(7))
    assert len(peer.calls) == 1 and len(census.entries) == found and census.buckets_read == 1


def test_a_beacon_gone_stale_during_the_read_is_left_out_silently_and_any_other_refusal_counted(clock: Clock) -> None:
    """Read a window later: the previous window's beacon is stale (not counted), another swarm's counted once, and
    the beacon after them in the bucket still listed."""
    stale, foreign, live = signers(3, 3)
    contents = [beacon(timestamp=T0 - RULES.window_s), beacon(swarm_id="another-swarm"), beacon()]
    peer = OneReadPeer({3: held([stale, foreign, live], contents)}, clock, [Reply(took_s=RULES.window_s)])
    census = take_census(peer, RULES, timeout_s=60.0, expected_nodes=EXPECTED)
    assert census.refused == {"wrong_swarm": 1}
    assert [entry.peer_id for entry in census.entries] == [live.peer_id]


def test_a_beacon_signed_ahead_of_our_clock_is_listed_within_the_read_slack_and_refused_beyond(clock: Clock) -> None:
    """Read from the DHT, a beacon may be ahead of our clock by clock_skew_s + READ_CLOCK_SLACK_S, not more."""
    within, beyond = signers(5, 2)
    now = clock.dht_time()
    bound = RULES.clock_skew_s + READ_CLOCK_SLACK_S
    contents = [beacon(timestamp=now + bound - 1.0), beacon(timestamp=now + bound + 1.0)]
    assert {RULES.window_of(c.timestamp) for c in contents} == {WINDOW}
    peer = OneReadPeer({5: held([within, beyond], contents)}, clock)
    census = take_census(peer, RULES, timeout_s=5.0, expected_nodes=EXPECTED)
    assert census.refused == {"future": 1}
    assert [entry.peer_id for entry in census.entries] == [within.peer_id]
