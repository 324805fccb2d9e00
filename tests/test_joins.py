"""Joins and churn at scale (docs/DESIGN.md §6.4, §6.7): a replica that left costs no RPC timeout, a join goes
through a few of its entry peers and past dead ones, and failed peers are remembered in bounded memory."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID

from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.lab.dht_swarm import start_all
from swarmnode.net import peer as peer_module
from swarmnode.net.peer import RPC_TIMEOUT_S, DHTPeer, StoreItem
from swarmnode.net.replicas import LOOKUP_START
from swarmnode.net.routing import RecentFailures
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import directory_key
from swarmnode.wire.presence import PRESENCE, Presence
from swarmnode.wire.rules import SwarmRules

RULES = SwarmRules.of(SwarmConfig(id="joins", window_s=3600, record_ttl_s=7200))  # no window turns mid-test
PEER_IDS = [PeerID.from_base58(text) for text in (
    "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
    "12D3KooWJbQf5ADwhVvDc4PJhL5Xhv8UWKPgGuJ5cE8RAMixyDSF",
    "12D3KooWLzZ5FVvL34ejwhYzPmsVzRzRY6xJQF3u9xFAZ3ZpQmxL",
)]


def new_key(directory: Path, name: str) -> Path:
    path = directory / f"{name}.key"
    save_identity(Identity.generate(), path)
    return path


def test_failed_peers_are_barred_for_a_while_longer_each_time_and_memory_is_bounded():
    now = [0.0]
    failures = RecentFailures(base_s=10, max_s=25, capacity=2, clock=lambda: now[0])
    a, b, c = PEER_IDS
    failures.register_failure(a)
    assert a in failures
    failures.register_failure(a)  # while barred: the same outage
    now[0] = 10.5
    assert a not in failures
    failures.register_failure(a)  # the second outage: 20 s
    now[0] = 30.0
    assert a in failures
    now[0] = 31.0
    failures.register_failure(a)  # the third: 40 s, capped at 25
    now[0] = 56.5
    assert a not in failures
    failures.register_success(a)
    failures.register_failure(a)
    now[0] = 66.0
    assert a in failures  # an answer forgot the count: 10 s again
    failures.register_failure(b)
    failures.register_failure(c)
    assert len(failures) == 2 and a not in failures and b in failures and c in failures  # the oldest forgotten


@contextlib.contextmanager
def swarm(tmp_path: Path, size: int) -> Iterator[list[DHTPeer]]:
    first = DHTPeer(new_key(tmp_path, "p0"), RULES, NetworkConfig())
    peers = [first]
    try:
        first.start()
        join = NetworkConfig(initial_peers=first.visible_maddrs)
        rest = [DHTPeer(new_key(tmp_path, f"p{index}"), RULES, join) for index in range(1, size)]
        peers.extend(rest)
        start_all([peer.start for peer in rest])
        yield peers
    finally:
        for peer in peers:  # a stopped daemon would hold its owner's close for the exit timeout
            pid = peer.daemon_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        start_all([peer.close for peer in peers])


def presence(key: str) -> StoreItem:
    """A signed entry under the window's directory key, by a new signer: a small record every replica takes."""
    signer, now = Identity.generate(), time.time()
    entry = Presence(RULES.swarm_id, RULES.window_of(now), now)
    return StoreItem(key, signer.peer_id, PRESENCE.seal(entry, signer), PRESENCE.expiration(entry, RULES))


def replicas_of(key: str, peers: list[DHTPeer]) -> list[DHTPeer]:
    """The key's nearest peers by XOR distance: those a store writes to."""
    key_id = DHTID.generate(source=key)
    return sorted(peers, key=lambda peer: int(peer._node.node_id) ^ int(key_id))[:5]


@pytest.mark.network
@pytest.mark.parametrize("how", [signal.SIGSTOP, signal.SIGKILL], ids=["silent", "killed"])
def test_a_publish_and_a_read_right_after_a_replica_left_do_not_wait_the_rpc_timeout(tmp_path, how):
    """A replica's p2pd stops answering (SIGSTOP: a peer that went away without closing its connections, as a
    machine that lost its network) or dies: the next stores and reads of its key go on without it, well within
    the RPC timeout, and still reach the other replicas."""
    with swarm(tmp_path, 8) as peers:
        key = directory_key(RULES.swarm_id, RULES.epoch_start(RULES.window_of(time.time())), 0, 0)  # tier 0: all
        writer, reader = peers[1], peers[2]
        for peer in peers:  # every peer talks to every other, so each would ask the one that leaves
            peer.get_many([key], timeout_s=5)
        leaving = next(peer for peer in replicas_of(key, peers) if peer not in (writer, reader, peers[0]))
        assert writer.store([presence(key)], timeout_s=5)[0].remote >= 2
        os.kill(leaving.daemon_pid(), how)
        slowest = 0.0
        for round_index in range(3):
            started = time.monotonic()
            item = presence(key)
            outcome = writer.store([item], timeout_s=5)[0]
            stored_s = time.monotonic() - started
            started = time.monotonic()
            read = reader.get_many([key], timeout_s=5)
            read_s = time.monotonic() - started
            slowest = max(slowest, stored_s, read_s)
            assert outcome.remote >= 2, round_index
            assert item.subkey in read.entries.get(key, {}), (round_index, read)
        assert slowest < RPC_TIMEOUT_S / 2, f"waited {slowest:.2f} s for a peer that left"


class _InOrder(random.Random):
    """Entry peers tried in the order given (configured, then the peer book's)."""

    def shuffle(self, items: list) -> None:  # type: ignore[override]
        return None


@pytest.mark.network
def test_a_join_with_a_dead_bootstrap_goes_through_another_entry_peer_and_says_so(tmp_path, caplog, monkeypatch):
    """The configured bootstrap is down; the node joins through a peer from its peer book, logging which entry
    peers did not answer. With every entry peer dead it fails with one line by the start-up deadline."""
    monkeypatch.setattr(peer_module, "JOIN_FANOUT", 1)  # one entry peer at a time: the dead one is tried too
    with contextlib.ExitStack() as stack:
        alive = stack.enter_context(DHTPeer(new_key(tmp_path, "alive"), RULES, NetworkConfig()))
        dead = stack.enter_context(DHTPeer(new_key(tmp_path, "dead"), RULES, NetworkConfig()))
        dead_maddrs = dead.visible_maddrs
        dead.close()
        network = NetworkConfig(initial_peers=dead_maddrs, startup_timeout_s=8)
        new = DHTPeer(new_key(tmp_path, "new"), RULES, network, learnt_peers=alive.visible_maddrs)
        new._random = _InOrder()  # the configured (dead) one first: the join's order is random otherwise
        with caplog.at_level(logging.WARNING, logger="swarmnode.net.peer"), new:
            assert alive.peer_id in new.known_peer_ids()
        assert any("did not answer" in record.getMessage() for record in caplog.records)
        assert dead.peer_id[-8:] in caplog.text


def test_the_swarm_size_is_estimated_from_how_near_the_nearest_known_peers_are():
    from hivemind.dht.routing import RoutingTable

    from swarmnode.net.peer import swarm_size_estimate

    rng = __import__("random").Random(1)
    for size in (10, 1000, 20000):
        table = RoutingTable(DHTID(rng.randrange(DHTID.MAX)), 20, 5)
        for index in range(size - 1):
            table.add_or_update_node(DHTID(rng.randrange(DHTID.MAX)), index)
        estimate = swarm_size_estimate(table)
        assert size / 2 <= estimate <= size * 2, (size, estimate)
        assert estimate >= len(table.uid_to_peer_id) + 1
    # a small swarm in which our 5 nearest share our first 4 bits (from the 5 nearest, the estimate said 199)
    me = rng.randrange(DHTID.MAX)
    table = RoutingTable(DHTID(me), 20, 5)
    near = [me ^ rng.randrange(2**156) for _ in range(5)]
    far = [rng.randrange(DHTID.MAX) for _ in range(6)]
    for index, node in enumerate(near + far):
        table.add_or_update_node(DHTID(node), index)
    assert swarm_size_estimate(table) == 12


@pytest.mark.network
def test_lookups_of_stores_and_reads_do_not_start_at_the_configured_bootstrap_once_others_are_known(tmp_path):
    """Every joiner's routing table holds its bootstrap; its stores' and reads' lookups start from other peers."""
    with swarm(tmp_path, 8) as peers:
        bootstrap, node = peers[0], peers[5]
        assert bootstrap._p2p.peer_id in node._node.protocol.routing_table.peer_id_to_uid
        starts = []

        async def find_nearest_nodes(queries, node_to_peer_id=None, **_):
            starts.append(dict(node_to_peer_id))
            return {query: {} for query in queries}

        node._node.find_nearest_nodes = find_nearest_nodes
        probes = [DHTID.generate(source=f"key{index}") for index in range(32)]
        node._require_loop().run(node._nearest(node._node, probes), 10)
        assert len(starts) == len(probes) and all(len(start) == LOOKUP_START for start in starts)  # a lookup a key
        assert not any(bootstrap._p2p.peer_id in start.values() for start in starts)
