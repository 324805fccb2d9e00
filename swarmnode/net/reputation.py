"""Peer reputation: which signers we stop reading for a while because they keep sending bad data.

Policy: `ban_after_offences` offences within `ban_window_s` ban a signer for `ban_duration_s`. Memory is
bounded: at most `max_peers` signers are tracked, the least recently offending forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from swarmnode.wire.rejection import Reason, is_offence


class Reputation:
    """Counts offences per signer and answers whether a signer is currently banned; thread-safe."""

    def __init__(
        self,
        ban_after_offences: int,
        ban_window_s: float,
        ban_duration_s: float,
        *,
        max_peers: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ban_after = ban_after_offences
        self._window_s = ban_window_s
        self._duration_s = ban_duration_s
        self._max_peers = max_peers
        self._clock = clock
        self._lock = threading.Lock()
        self._offences: OrderedDict[str, deque[float]] = OrderedDict()
        self._banned_until: dict[str, float] = {}

    def record_offence(self, peer_id: str, reason: Reason) -> bool:
        """Note one offence; returns True if it got the signer banned just now."""
        if not is_offence(reason):  # not the sender's fault, or not provably
            return False
        now = self._clock()
        with self._lock:
            times = self._offences.pop(peer_id, None) or deque()
            self._offences[peer_id] = times
            if len(self._offences) > self._max_peers:
                self._offences.popitem(last=False)
            times.append(now)
            while times and times[0] < now - self._window_s:
                times.popleft()
            if len(times) < self._ban_after or self._is_banned(peer_id, now):
                return False
            times.clear()
            if len(self._banned_until) >= self._max_peers:
                self._banned_until = {
                    peer: until for peer, until in self._banned_until.items() if until > now
                }
            self._banned_until[peer_id] = now + self._duration_s
            return True

    def is_banned(self, peer_id: str) -> bool:
        with self._lock:
            return self._is_banned(peer_id, self._clock())

    def banned_peers(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return [peer for peer in list(self._banned_until) if self._is_banned(peer, now)]

    def _is_banned(self, peer_id: str, now: float) -> bool:
        until = self._banned_until.get(peer_id)
        if until is None:
            return False
        if until <= now:
            del self._banned_until[peer_id]
            return False
        return True
