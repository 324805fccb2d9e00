"""Who may stand where in the DHT: a node's id is its peer id's, and a peer that chose its own id (to sit next
to a key it wants to answer for) gets no place in our routing, whatever it or others claim."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hivemind.dht.node import DHTNode
from hivemind.dht.routing import DHTID, RoutingTable
from hivemind.p2p import P2P, PeerID
from hivemind.proto import dht_pb2

import swarmnode.net  # noqa: F401  hivemind below, imported as the node imports it
from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.net.loop import LoopThread
from swarmnode.net.peer import DHTPeer
from swarmnode.net.replicas import FIND_NEIGHBOURS
from swarmnode.net.routing import QUIET_S, bind_node_ids, node_id_of, ping_only_the_quiet
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import census_key
from swarmnode.wire.rules import SwarmRules

RULES = SwarmRules.of(SwarmConfig(id="routing-test"))
HONEST = PeerID.from_base58(Identity.from_seed(b"\x01" * 32).peer_id)
LIAR = PeerID.from_base58(Identity.from_seed(b"\x02" * 32).peer_id)


class Protocol:
    """What bind_node_ids wraps of hivemind's DHTProtocol, recording what gets through."""

    def __init__(self) -> None:
        self.added: list[tuple[DHTID, PeerID]] = []

    async def update_routing_table(self, node_id, peer_id, responded=True):
        self.added.append((node_id, peer_id))

    async def call_find(self, peer, keys):
        chosen = DHTID.generate(source=census_key(RULES.swarm_id, 1, 0, 0))  # right next to a census key
        return {key: (None, {node_id_of(HONEST): HONEST, chosen: LIAR}) for key in keys}


def test_a_node_id_is_derived_from_the_peer_id_and_only_that_id_is_routed_to():
    protocol, refused = Protocol(), Counter()
    bind_node_ids(protocol, refused)
    asyncio.run(protocol.update_routing_table(node_id_of(HONEST), HONEST))
    asyncio.run(protocol.update_routing_table(DHTID.generate(source="a place next to a key"), LIAR))
    asyncio.run(protocol.update_routing_table(None, HONEST, responded=False))  # the table looks the id up itself
    assert protocol.added == [(node_id_of(HONEST), HONEST), (None, HONEST)]
    found = asyncio.run(protocol.call_find(HONEST, [DHTID.generate(source="k")]))
    assert [list(nearest.values()) for _, nearest in found.values()] == [[HONEST]]
    assert refused == {"forged_node_id": 2}
    assert node_id_of(HONEST) == node_id_of(PeerID(HONEST.to_bytes())) != node_id_of(LIAR)


@pytest.mark.network
def test_a_peer_that_chose_its_node_id_next_to_a_key_is_not_in_an_honest_routing_table(tmp_path):
    save_identity(Identity.generate(), tmp_path / "honest.key")
    with DHTPeer(tmp_path / "honest.key", RULES, NetworkConfig()) as honest:
        loop = LoopThread("liar")
        target = DHTID.generate(source=census_key(RULES.swarm_id, 1, 3, 3))
        liar = loop.run(DHTNode.create(
            initial_peers=honest.visible_maddrs, host_maddrs=["/ip4/127.0.0.1/tcp/0"], node_id=target,
            cache_locally=False, cache_nearest=0,
        ), 60)
        try:
            assert liar.peer_id.to_base58() not in honest.known_peer_ids()
            assert honest.refusals()["forged_node_id"] >= 1
            assert liar.node_id == target and honest.num_peers() == 0
        finally:
            loop.run(liar.shutdown(), 30)
            loop.stop()


@pytest.mark.network
def test_an_answer_to_a_find_names_a_lookups_beam_and_two_more_neighbours_not_hiveminds_twenty(tmp_path):
    """Lookups keep a beam of REPLICAS; naming k = 20 neighbours per key was most of a node's bytes in a large
    swarm. The routing table itself still keeps 20 a bucket."""
    save_identity(Identity.generate(), tmp_path / "server.key")
    with DHTPeer(tmp_path / "server.key", RULES, NetworkConfig()) as server:
        fill(server)
        keys = [DHTID.generate(source=f"key {index}") for index in range(3)]
        found = stock_find(server, keys)
        assert [len(nearest) for _, nearest in found.values()] == [FIND_NEIGHBOURS] * len(keys)


def fill(server: DHTPeer) -> None:
    """Put three times FIND_NEIGHBOURS peers in `server`'s routing table, so that an answer names as many as it may."""
    others = [PeerID.from_base58(Identity.generate().peer_id) for _ in range(3 * FIND_NEIGHBOURS)]

    async def add() -> int:
        table = server._node.protocol.routing_table
        for peer in others:
            table.add_or_update_node(node_id_of(peer), peer)
        return len(table.uid_to_peer_id)

    assert server._require_loop().run(add(), 10) > FIND_NEIGHBOURS


def stock_find(server: DHTPeer, keys: list[DHTID]) -> dict:
    """What a stock hivemind client's find of `keys` gets from `server`."""
    loop = LoopThread("stock")
    stock = loop.run(DHTNode.create(
        initial_peers=server.visible_maddrs, host_maddrs=["/ip4/127.0.0.1/tcp/0"], client_mode=True,
        cache_locally=False, cache_nearest=0,
    ), 60)
    try:
        return loop.run(stock.protocol.call_find(server._node.peer_id, keys), 30)
    finally:
        loop.run(stock.shutdown(), 30)
        loop.stop()


@pytest.mark.network
def test_swarmnode_peers_name_neighbours_by_peer_id_alone_and_a_stock_hivemind_asker_still_gets_node_ids(
    tmp_path, monkeypatch
):
    """Every node id is its peer id's (`node_id_of`), so a find between swarmnode peers leaves the ids out of the
    answer (PROTOCOL.md §5.4) and the asker derives them; a peer that does not ask for that, stock hivemind or a
    swarmnode before it, is answered in full. Seen on the wire: the answers as libp2p carried them."""
    wire: list[dht_pb2.FindResponse] = []
    call = P2P._call_unary_protobuf_handler

    async def carried(self, peer_id, handle_name, request, response_type):  # what reached the asker
        response = await call(self, peer_id, handle_name, request, response_type)
        if handle_name.endswith(".rpc_find"):
            wire.append(dht_pb2.FindResponse())
            wire[-1].CopyFrom(response)
        return response

    monkeypatch.setattr(P2P, "_call_unary_protobuf_handler", carried)
    for name in ("server", "asker"):
        save_identity(Identity.generate(), tmp_path / f"{name}.key")
    keys = [DHTID.generate(source=f"key {index}") for index in range(3)]
    with DHTPeer(tmp_path / "server.key", RULES, NetworkConfig()) as server:
        fill(server)
        with DHTPeer(tmp_path / "asker.key", RULES, NetworkConfig(initial_peers=server.visible_maddrs)) as ours:
            found = ours._require_loop().run(ours._node.protocol.call_find(server._node.peer_id, keys), 30)
            bare = [answer for answer in wire if len(answer.results) == len(keys)][-1]  # not a join's lookup
        stock_found = stock_find(server, keys)
        full = [answer for answer in wire if len(answer.results) == len(keys)][-1]
    for answer in (found, stock_found):
        neighbours = [nearest for _, nearest in answer.values()]
        assert [len(nearest) for nearest in neighbours] == [FIND_NEIGHBOURS] * len(keys)
        assert all(node_id == node_id_of(peer) for nearest in neighbours for node_id, peer in nearest.items())
    assert all(len(result.nearest_peer_ids) == FIND_NEIGHBOURS and not result.nearest_node_ids for result in bare.results)
    assert all(len(result.nearest_node_ids) == FIND_NEIGHBOURS for result in full.results)
    assert bare.ByteSize() < 0.7 * full.ByteSize()


def test_a_full_bucket_pings_its_least_recently_heard_peer_only_once_it_has_been_quiet():
    """hivemind pings a full bucket's oldest peer at every newcomer's contact; swarmnode only once that peer has
    been quiet for QUIET_S, and the newcomer waits among the replacements either way."""
    now = [0.0]
    table = RoutingTable(DHTID(0), bucket_size=2, depth_modulo=1)  # a bucket without our own id never splits
    ping_only_the_quiet(table, quiet_s=QUIET_S, clock=lambda: now[0])
    oldest, heard, newcomer, later = (DHTID(2**159 + 1 + i) for i in range(4))  # all in the far half
    assert table.add_or_update_node(oldest, HONEST) is None
    assert table.add_or_update_node(heard, LIAR) is None
    now[0] = QUIET_S / 2
    assert table.add_or_update_node(newcomer, HONEST) is None  # the oldest was heard from lately: no ping
    bucket = table.buckets[table.get_bucket_index(newcomer)]
    assert newcomer in bucket.replacement_nodes and oldest in bucket.nodes_to_peer_id
    now[0] = QUIET_S + 1
    assert table.add_or_update_node(later, LIAR) == (oldest, HONEST)  # quiet too long: pinged (and dropped if gone)
    assert table.add_or_update_node(oldest, HONEST) is None  # it answered: heard from again, the newest in its bucket
    assert list(bucket.nodes_to_peer_id) == [heard, oldest]
