"""A remembered lookup answers for its key only while it is as good as a fresh one."""

from __future__ import annotations

from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID

from swarmnode.net.replica_cache import MAY_LOSE, ReplicaCache

PROBE = DHTID(1 << 100)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def peer(index: int) -> PeerID:
    return PeerID(index.to_bytes(4, "big"))


def near(distance: int) -> DHTID:
    return DHTID(int(PROBE) ^ distance)


def answer(*distances: int) -> dict[DHTID, PeerID]:
    return {near(distance): peer(distance) for distance in distances}


def test_an_answer_is_used_for_its_key_until_it_is_kept_no_longer() -> None:
    clock = Clock()
    cache = ReplicaCache(keep_s=60.0, replicas=3, clock=clock)
    cache.put(PROBE, answer(1, 2, 3))
    clock.now = 59.0
    assert cache.get(PROBE, barred=set()) == answer(1, 2, 3)
    assert cache.get(DHTID(int(PROBE) + 7), barred=set()) is None  # another key: never looked up
    clock.now = 60.0
    assert cache.get(PROBE, barred=set()) is None
    assert len(cache) == 0


def test_an_answer_naming_too_few_peers_is_not_kept() -> None:
    """A young swarm: the next lookup may find peers that have joined since (a lonely publisher would else keep
    storing only to itself)."""
    cache = ReplicaCache(keep_s=60.0, replicas=3, clock=Clock())
    cache.put(PROBE, answer(*range(1, 3 - MAY_LOSE)))
    assert cache.get(PROBE, barred=set()) is None
    cache.put(PROBE, answer(*range(1, 4 - MAY_LOSE)))
    assert cache.get(PROBE, barred=set()) is not None


def test_a_peer_that_failed_is_forgotten_and_the_answer_with_it_once_too_few_are_left() -> None:
    cache = ReplicaCache(keep_s=60.0, replicas=4, clock=Clock())
    cache.put(PROBE, answer(1, 2, 3, 4))
    assert cache.get(PROBE, barred={peer(2)}) == answer(1, 3, 4)  # one gone: the others still make a quorum
    assert cache.get(PROBE, barred=set()) == answer(1, 3, 4)  # its ban over, a departed peer is not asked again
    assert cache.get(PROBE, barred={peer(3)}) is None
    assert cache.get(PROBE, barred=set()) is None  # and forgotten: the next use looks up afresh


def test_an_answer_is_dropped_when_our_routing_table_knows_a_peer_nearer_the_key() -> None:
    cache = ReplicaCache(keep_s=60.0, replicas=3, clock=Clock())
    cache.put(PROBE, answer(4, 5, 6))
    assert cache.get(PROBE, barred=set(), known=[near(4), near(9)]) is not None  # known, or farther: still good
    assert cache.get(PROBE, barred=set(), known=[near(4), near(2)]) is None  # one has joined between the key and them


def test_no_more_answers_are_kept_than_its_capacity_the_oldest_going_first() -> None:
    cache = ReplicaCache(keep_s=60.0, replicas=1, capacity=2, clock=Clock())
    probes = [DHTID(index << 20) for index in range(1, 4)]
    for probe in probes:
        cache.put(probe, {DHTID(int(probe) ^ 1): peer(1)})
    assert len(cache) == 2
    assert cache.get(probes[0], barred=set()) is None
    assert cache.get(probes[2], barred=set()) is not None


def test_nothing_is_kept_when_keeping_is_off() -> None:
    cache = ReplicaCache(keep_s=0.0, replicas=1, clock=Clock())
    cache.put(PROBE, answer(1))
    assert cache.get(PROBE, barred=set()) is None
