"""How much one peer may ask us to store: a token bucket of request bytes per sending peer. A replica opens
every frame it is offered (about 30 ms per MiB), so without it one peer sending junk at a few tens of MB/s
would keep the DHT loop busy; an honest node stores a batch, a presence and two beacons a window."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

STORE_BYTES_PER_S = 512 * 2**10  # an honest node's 1 MiB batch every 2 s and more; a window's stores are far less
STORE_BURST_BYTES = 4 * 2**20  # a maximal batch, its refresh and the small records around them at once
MAX_TRACKED_PEERS = 4096  # the least recently seen sender's bucket is forgotten (it starts full again)


class StoreRate:
    """Per-sender token buckets; thread-safe, and bounded in the number of senders it remembers."""

    def __init__(
        self,
        bytes_per_s: float = STORE_BYTES_PER_S,
        burst_bytes: float = STORE_BURST_BYTES,
        max_peers: int = MAX_TRACKED_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bytes_per_s, self.burst_bytes, self.max_peers = bytes_per_s, burst_bytes, max_peers
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # peer -> (tokens, at)
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()

    def allow(self, peer: str, size: int) -> bool:
        """Take `size` bytes from `peer`'s bucket; False (counted as `store_rate`) when it holds fewer."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(peer, (self.burst_bytes, now))
            tokens = min(self.burst_bytes, tokens + (now - at) * self.bytes_per_s)
            allowed = tokens >= size
            self._buckets[peer] = (tokens - size if allowed else tokens, now)
            if len(self._buckets) > self.max_peers:
                self._buckets.popitem(last=False)
            if not allowed:
                self._refused["store_rate"] += 1
            return allowed

    def refusals(self) -> Counter[str]:
        with self._lock:
            return Counter(self._refused)
