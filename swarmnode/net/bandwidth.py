"""A volunteer's cap on this node's DHT traffic (`network.max_kbps`): one token bucket of bytes, both directions
together, since a metered link bills the total. The bucket may go into deficit: a request is let through
whenever it is not in deficit and its bytes are charged in full, so a 1 MiB batch can always go, and
everything after it waits until the rate has paid for it. What we ask waits for the bucket; what peers ask
of us is refused while it is in deficit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable

BURST_S = 2.0  # a full bucket holds this many seconds of the rate: a window's small records go at once
BYTES_PER_KBIT = 1000 / 8


class OverCap(Exception):
    """A request not sent, or not served, because the bandwidth cap is in deficit."""


class BandwidthCap:
    """Token bucket of `kbps` kilobits (1000 bits) per second; used on the DHT loop, read from any thread.

    `max_wait_s`: the longest one of our own requests waits for the bucket; beyond that it is not sent (a
    deficit that long would outlast the request's own timeout)."""

    def __init__(
        self,
        kbps: float,
        *,
        max_wait_s: float,
        burst_s: float = BURST_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bytes_per_s = kbps * BYTES_PER_KBIT
        self.burst_bytes = burst_s * self.bytes_per_s
        self.max_wait_s = max_wait_s
        self._clock, self._sleep = clock, sleep
        self._tokens, self._at = self.burst_bytes, clock()
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()

    def charge(self, size: int) -> None:
        """Spend `size` bytes that crossed the link (a response), deficit or not."""
        with self._lock:
            self._refill()
            self._tokens -= size

    def admit(self, size: int) -> bool:
        """A request a peer asks us to serve: charged unless the bucket is in deficit; then refused, counted as
        `bandwidth_cap`."""
        if self._take(size) > 0:
            with self._lock:
                self._refused["bandwidth_cap"] += 1
            return False
        return True

    async def send(self, size: int) -> bool:
        """One of our own requests: wait (never longer than `max_wait_s` in all) until the bucket is out of
        deficit, then charge `size`; False, counted as `bandwidth_cap_unsent`, when that would take longer."""
        deadline = self._clock() + self.max_wait_s
        while (wait := self._take(size)) > 0:
            if self._clock() + wait > deadline:
                with self._lock:
                    self._refused["bandwidth_cap_unsent"] += 1
                return False
            await self._sleep(wait)
        return True

    def refusals(self) -> Counter[str]:
        with self._lock:
            return Counter(self._refused)

    def _take(self, size: int) -> float:
        """Charge `size` unless the bucket is in deficit (0 returned); else the seconds until it is not."""
        with self._lock:
            deficit_s = self._deficit_s(self._refill())
            if deficit_s == 0:
                self._tokens -= size
            return deficit_s

    def _deficit_s(self, tokens: float) -> float:
        # less than a byte owed is no deficit: float rounding must not leave a waiter sleeping for nothing
        return 0.0 if tokens > -1 else -tokens / self.bytes_per_s

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst_bytes, self._tokens + (now - self._at) * self.bytes_per_s)
        self._at = now
        return self._tokens
