"""Each key's nearest peers, remembered from a recent lookup: a node touches many keys again within a window or
two (a beacon's next-window keys, the previous window's shard keys a collect reads again, a refreshed batch, the
keys `Gossip.look_ahead` finds early), and a lookup is several finds, one after another, on the path of every
publish and collect (docs/DESIGN.md §6.8). A remembered answer is as good as the lookup it came from: kept only
while a key is read, only if it named (about) a full set of replicas (a young swarm's next lookup may find more),
less each peer that has failed to answer since, and dropped once too few are left or our routing table knows a
peer nearer the key.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable

from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID

MAX_KEYS = 4_096  # lookups remembered; the oldest is forgotten first
MAY_LOSE = 1  # a key's remembered peers are used while at most this many of a full set are gone


class ReplicaCache:
    """Lookup answers (a probe's nearest peers that answered; a full set is `replicas`) for `keep_s`, at most
    `capacity` of them."""

    def __init__(
        self, keep_s: float, replicas: int, capacity: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep_s, self.capacity, self._clock = keep_s, capacity, clock
        self.enough = max(replicas - MAY_LOSE, 1)
        self._found: OrderedDict[DHTID, tuple[float, dict[DHTID, PeerID]]] = OrderedDict()

    def get(self, probe: DHTID, barred: Container[PeerID], known: Iterable[DHTID] = ()) -> dict[DHTID, PeerID] | None:
        """The peers a recent lookup of `probe` found, less those barred since (failed, or left behind as slow:
        forgotten for good, or a departed one would be asked again once its ban ran out), or None: never looked
        up, looked up too long ago, too few left (peers have left around the key), or one of the node ids `known`
        (our routing table's nearest to the probe) is nearer than the farthest of them (one has joined): look
        again."""
        entry = self._found.pop(probe, None)
        if entry is None or entry[0] <= self._clock():
            return None
        found = {node_id: peer for node_id, peer in entry[1].items() if peer not in barred}
        farthest = max((int(node_id) ^ int(probe) for node_id in found), default=0)
        if len(found) < self.enough or any(
            node_id not in found and int(node_id) ^ int(probe) < farthest for node_id in known
        ):
            return None
        self._found[probe] = (entry[0], found)
        return dict(found)

    def put(self, probe: DHTID, found: dict[DHTID, PeerID]) -> None:
        """Remember a lookup's answer unless it named too few peers (a young swarm: the next lookup may find more)."""
        if self.keep_s <= 0 or len(found) < self.enough:
            return
        self._found.pop(probe, None)
        self._found[probe] = (self._clock() + self.keep_s, dict(found))
        while len(self._found) > self.capacity:
            self._found.popitem(last=False)

    def clear(self) -> None:
        """Forget every answer: a node that changed mode (a client is never among the nearest) looks up afresh."""
        self._found.clear()

    def __len__(self) -> int:
        return len(self._found)

    def __contains__(self, probe: object) -> bool:
        return probe in self._found
