"""Who may stand where in the DHT: a node's id is derived from its peer id (SHA-1 of the peer id's bytes, as
hivemind derives a key's), so nobody picks the position next to a key it wants to answer for: it must grind
keys until one lands there, and rejoin under each. Routing-table entries and the neighbours peers name whose
id is not derived from their peer id are refused, so a liar cannot fill our routing with positions it chose.
(hivemind lets every node choose its id; swarmnode's nodes refuse to route to one that did.) Since every id is
derived, finds between swarmnode peers name neighbours by peer id alone (PROTOCOL.md §5.4). A peer that our
own bandwidth cap kept us from asking is not taken for one that failed to answer. A peer that failed to answer is
left out of lookups, stores and reads for a while (bounded memory), and a lookup does not wait the whole RPC
timeout for one silent peer once others have answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from google.protobuf import unknown_fields
from hivemind.dht.node import DHTNode
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID, RoutingTable
from hivemind.p2p import PeerID
from hivemind.proto import dht_pb2

# A FindRequest field hivemind does not define (PROTOCOL.md §5.4): varint 1 asks for neighbours named by peer id
# alone. Peers that do not know it skip it and answer in full, so old and new nodes interoperate both ways.
BARE_NEIGHBOURS_FIELD = 1000
_BARE_NEIGHBOURS = b"\xc0\x3e\x01"  # its tag (1000 << 3 | 0, a varint: c0 3e), then 1


def node_id_of(peer_id: PeerID) -> DHTID:
    """The one DHT id a peer may use."""
    return DHTID.generate(source=peer_id.to_bytes())


def ask_for_bare_neighbours(request: dht_pb2.FindRequest) -> dht_pb2.FindRequest:
    """A copy of `request` that asks for neighbours without their node ids: ours derives every id from its peer id
    (`node_id_of`), and the ids were a third of the bytes of a find's answer (docs/DESIGN.md §6.8)."""
    marked = dht_pb2.FindRequest()
    marked.CopyFrom(request)
    marked.MergeFromString(_BARE_NEIGHBOURS)
    return marked


def asks_for_bare_neighbours(request: dht_pb2.FindRequest) -> bool:
    """Whether a find we answer came from a peer that derives node ids (`ask_for_bare_neighbours`)."""
    return any(field.field_number == BARE_NEIGHBOURS_FIELD and field.data == 1
               for field in unknown_fields.UnknownFieldSet(request))


def leave_out_node_ids(response: dht_pb2.FindResponse) -> None:
    """Our answer to a find that asked for bare neighbours: each neighbour by its peer id alone."""
    for result in response.results:
        del result.nearest_node_ids[:]


def derive_node_ids(response: dht_pb2.FindResponse) -> None:
    """Give a bare answer's neighbours their node ids before hivemind reads it (it pairs ids with peer ids)."""
    for result in response.results:
        if result.nearest_peer_ids and not result.nearest_node_ids:
            result.nearest_node_ids.extend(node_id_of(PeerID(peer)).to_bytes() for peer in result.nearest_peer_ids)


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


def answer_with_fewer_neighbours(node: DHTNode, count: int) -> None:
    """Name `count` nearest neighbours per key in our answers to finds, not hivemind's k (20): lookups keep a beam
    of num_replicas, so the rest were bytes nobody used, the largest part of a node's traffic in a large swarm
    (docs/DESIGN.md §6.8; the model's lookups found the same replicas with 6 as with 20). The routing table
    still keeps k peers a bucket."""
    node.protocol.bucket_size = count


QUIET_S = 300.0  # a full bucket's least recently heard-from peer is pinged only once it has been quiet this long
MAX_HEARD = 4096  # peers whose last contact is remembered; one forgotten counts as quiet


def ping_only_the_quiet(
    table: RoutingTable, quiet_s: float = QUIET_S, clock: Callable[[], float] = time.monotonic
) -> OrderedDict[DHTID, float]:
    """When a peer we cannot add to a full bucket contacts us, hivemind pings that bucket's least recently heard-from
    peer to see whether to replace it: in a swarm of thousands, one ping for most requests served (13 KB of a node's
    178 a round at 10,000 peers in the model, docs/DESIGN.md §6.8). Ping it only once it has been quiet for
    `quiet_s` (as BEP 5 keeps a peer heard from in 15 minutes): if it has not, neither has anyone in the bucket, and
    the newcomer waits among the replacements as before. A departed peer stays quiet, so it is still pinged and
    dropped. Returns when each peer was last heard from (`clock`, the swarm model's virtual one, which seeds it for a
    long-running table)."""
    add = table.add_or_update_node
    heard: OrderedDict[DHTID, float] = OrderedDict()

    def add_or_update_node(node_id: DHTID, peer_id: PeerID) -> tuple[DHTID, PeerID] | None:
        now = clock()
        heard[node_id] = now
        heard.move_to_end(node_id)
        if len(heard) > MAX_HEARD:
            heard.popitem(last=False)
        to_ping = add(node_id, peer_id)
        if to_ping is not None and now - heard.get(to_ping[0], -math.inf) < quiet_s:
            table.buckets[table.get_bucket_index(to_ping[0])].nodes_requested_for_ping.discard(to_ping[0])
            return None
        return to_ping

    table.add_or_update_node = add_or_update_node  # type: ignore[method-assign]  # hivemind calls it on the table
    return heard


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


# Peers whose request failed are barred from our lookups, stores and reads for a while (hivemind's Blacklist does
# this for lookups only, for 5 s, and counts failures per peer for good): a departed replica would otherwise cost
# a full RPC timeout at every lookup that meets it again.
FAILED_BAN_S = 10.0  # after a first failure; doubled for each further one in a row
FAILED_MAX_BAN_S = 600.0
MAX_FAILED_PEERS = 1024  # peers remembered; the oldest failure is forgotten first
SLOW_PEER_S = 0.5  # a lookup, store or read stops waiting for a peer this late once others have answered (at least;
SLOW_TIMES_TYPICAL = 4  # or this many times the typical answer time, when that is longer: far or loaded peers)
MAX_SLOW_S = 2.5  # and never later than this (the RPC timeout is 3 s)
SLOW_FOR_S = 5.0  # a peer left behind as slow is avoided until its request's outcome, at most this long
ENOUGH_ANSWERS = 2  # answers a lookup needs before it leaves a slow peer behind


class RecentFailures:
    """hivemind's Blacklist, bounded: a peer whose request failed is barred for FAILED_BAN_S, twice that after each
    further failure while it has not answered (at most FAILED_MAX_BAN_S); an answer forgets it. At most
    MAX_FAILED_PEERS peers are remembered. Concurrent failures while barred count once (one outage). A peer
    whose request was left behind as slow (`register_slow`) is avoided until that request's outcome is known, at
    most SLOW_FOR_S: operations started meanwhile do not wait on it again."""

    def __init__(
        self, base_s: float = FAILED_BAN_S, max_s: float = FAILED_MAX_BAN_S, capacity: int = MAX_FAILED_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s, self.max_s, self.capacity, self._clock = base_s, max_s, capacity, clock
        self._peers: OrderedDict[PeerID, tuple[float, int]] = OrderedDict()  # peer -> (barred until, failures)
        self._slow: OrderedDict[PeerID, float] = OrderedDict()  # peer -> avoided until
        self.typical_s = 0.0  # answer time, moving average of recent answers

    def answered_in(self, seconds: float) -> None:
        self.typical_s = seconds if not self.typical_s else 0.9 * self.typical_s + 0.1 * seconds

    @property
    def slow_after_s(self) -> float:
        """How long a peer may take before others' answers are enough: SLOW_PEER_S, longer on a loaded machine
        (whose answers all take long), so that load alone does not make peers look gone."""
        return min(max(SLOW_PEER_S, SLOW_TIMES_TYPICAL * self.typical_s), MAX_SLOW_S)

    def register_slow(self, peer: PeerID) -> None:
        if peer not in self._slow:
            self._slow[peer] = self._clock() + SLOW_FOR_S
            while len(self._slow) > self.capacity:
                self._slow.popitem(last=False)

    def register_failure(self, peer: PeerID) -> None:
        self._slow.pop(peer, None)
        now = self._clock()
        until, failures = self._peers.get(peer, (0.0, 0))
        if until > now:
            return
        self._peers.pop(peer, None)
        self._peers[peer] = (now + min(self.base_s * 2**failures, self.max_s), failures + 1)
        while len(self._peers) > self.capacity:
            self._peers.popitem(last=False)

    def register_success(self, peer: PeerID) -> None:
        self._peers.pop(peer, None)
        self._slow.pop(peer, None)

    def settle(self, peer: PeerID, answered: bool) -> None:
        """A request's outcome: a peer that did not answer is left out for a while; one that answered is forgotten."""
        if answered:
            self.register_success(peer)
        else:
            self.register_failure(peer)

    def __contains__(self, peer: object) -> bool:
        now = self._clock()
        entry = self._peers.get(peer)  # type: ignore[arg-type]
        return (entry is not None and entry[0] > now) or self._slow.get(peer, 0.0) > now  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._peers)


class Lookup:
    """One lookup in progress (`hedged_lookup`): how many peers answered it, and the slow ones it left behind."""

    def __init__(self, enough: int) -> None:
        self.enough = enough
        self.answered = 0
        self.slow: set[PeerID] = set()
        self.enough_answered = asyncio.Event()

    def answer(self) -> None:
        self.answered += 1
        if self.answered >= self.enough:
            self.enough_answered.set()


_LOOKUP: ContextVar[Lookup | None] = ContextVar("swarmnode_lookup", default=None)


@contextlib.contextmanager
def hedged_lookup(enough: int = ENOUGH_ANSWERS) -> Iterator[Lookup]:
    """Lookups (`find_nearest_nodes`) started inside leave a peer that has not answered within SLOW_PEER_S (or 4
    times the typical answer time, if longer) behind once `enough` others answered: hivemind's search otherwise
    waits the whole RPC timeout for one dead peer."""
    token = _LOOKUP.set(Lookup(enough))
    try:
        yield _LOOKUP.get()  # type: ignore[misc]
    finally:
        _LOOKUP.reset(token)


def remember_failures(node: DHTNode, clock: Callable[[], float] = time.monotonic) -> None:
    """Give `node` a bounded RecentFailures for its blacklist, and lookups that hedge (`hedged_lookup`). A find left
    behind finishes in the background (within the RPC timeout); its outcome is registered then. Call before
    `spare_unasked`, which wraps the blacklist's register_failure. `clock`: for bans and answer times (the swarm
    model's is virtual)."""
    node.blacklist = RecentFailures(clock=clock)
    protocol = node.protocol

    async def call_find_with_blacklist(peer_id: PeerID, keys):  # noqa: ANN202 (hivemind's own return type)
        if peer_id in node.blacklist:
            return None
        lookup = _LOOKUP.get()
        started = clock()
        task = asyncio.ensure_future(protocol.call_find(peer_id, keys))
        if lookup is not None:
            done, _ = await asyncio.wait({task}, timeout=node.blacklist.slow_after_s)
            if not done:
                enough = asyncio.ensure_future(lookup.enough_answered.wait())
                try:
                    done, _ = await asyncio.wait({task, enough}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    enough.cancel()
                if task not in done:
                    lookup.slow.add(peer_id)
                    node.blacklist.register_slow(peer_id)
                    task.add_done_callback(
                        lambda finished: node.blacklist.settle(peer_id, not finished.cancelled() and bool(finished.result()))
                    )
                    return None
        response = await task
        node.blacklist.settle(peer_id, bool(response))
        if not response:
            return None
        node.blacklist.answered_in(clock() - started)
        if lookup is not None:
            lookup.answer()
        return {key: (value, node._filter_blacklisted(nearest)) for key, (value, nearest) in response.items()}

    node._call_find_with_blacklist = call_find_with_blacklist  # find_nearest_nodes calls self._call_find_with_blacklist
