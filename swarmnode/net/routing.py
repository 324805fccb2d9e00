"""Who may stand where in the DHT: a node's id is derived from its peer id (SHA-1 of the peer id's bytes, as
hivemind derives a key's), so nobody picks the position next to a key it wants to answer for: it must grind
keys until one lands there, and rejoin under each. Routing-table entries and the neighbours peers name whose
id is not derived from their peer id are refused, so a liar cannot fill our routing with positions it chose.
(hivemind lets every node choose its id; swarmnode's nodes refuse to route to one that did.) And a peer that our
own bandwidth cap kept us from asking is not taken for one that failed to answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hivemind.dht.node import DHTNode
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID


def node_id_of(peer_id: PeerID) -> DHTID:
    """The one DHT id a peer may use."""
    return DHTID.generate(source=peer_id.to_bytes())


def bind_node_ids(protocol: DHTProtocol, refused: Counter[str], admits: Callable[[str], bool] = lambda _: True) -> None:
    """Make `protocol` refuse peers whose DHT id is not theirs: in its routing table (every request and answer
    updates it) and among the neighbours a find returns (which a lookup would ask next). Counted as
    `forged_node_id`; in a closed swarm, peers `admits` refuses are kept out the same way (`not_allowed`)."""
    update = protocol.update_routing_table
    find = protocol.call_find

    def welcome(node_id: DHTID | None, peer_id: PeerID) -> bool:
        if node_id is not None and node_id != node_id_of(peer_id):
            refused["forged_node_id"] += 1
            return False
        if not admits(peer_id.to_base58()):
            refused["not_allowed"] += 1
            return False
        return True

    async def update_routing_table(node_id: DHTID | None, peer_id: PeerID, responded: bool = True) -> None:
        if welcome(node_id, peer_id):
            await update(node_id, peer_id, responded)

    async def call_find(peer: PeerID, keys):  # noqa: ANN202 (hivemind's own return type)
        found = await find(peer, keys)
        if found is None:
            return None
        return {
            key: (value, {node_id: neighbour for node_id, neighbour in nearest.items() if welcome(node_id, neighbour)})
            for key, (value, nearest) in found.items()
        }

    protocol.update_routing_table = update_routing_table  # the protocol calls self.update_routing_table
    protocol.call_find = call_find


def spare_unasked(node: DHTNode, unasked: Counter[PeerID]) -> None:
    """Neither drop from the routing table nor bar from lookups a peer whose request our own bandwidth cap did not
    send (`unasked`: such requests per peer, counted by `SwarmP2P`): hivemind takes any failed request for a peer
    that did not answer. Each unsent request spares its peer once: the routing update that follows it uses it up
    (hivemind schedules that update as a task, so a lookup's blacklisting, right after, still sees it)."""
    protocol, blacklist = node.protocol, node.blacklist
    update, blacklist_failure = protocol.update_routing_table, blacklist.register_failure

    async def update_routing_table(node_id: DHTID | None, peer_id: PeerID, responded: bool = True) -> None:
        if not responded and unasked[peer_id] > 0:
            unasked[peer_id] -= 1
            if not unasked[peer_id]:
                del unasked[peer_id]
            return
        await update(node_id, peer_id, responded)

    def register_failure(peer_id: PeerID) -> None:
        if not unasked[peer_id]:
            blacklist_failure(peer_id)

    protocol.update_routing_table = update_routing_table
    blacklist.register_failure = register_failure
