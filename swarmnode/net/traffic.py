"""DHT traffic of one peer: requests it sent and served and protobuf bytes both ways, counted on the loop thread
and read from any other."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class TrafficSnapshot:
    """DHT RPC traffic of one peer: requests it sent and served, protobuf message bytes both ways.

    Bytes are serialized request/response protobuf sizes (what DHTProtocol exchanges), without libp2p
    framing, TLS or yamux overhead.
    """

    requests_sent: int = 0
    requests_served: int = 0
    bytes_out: int = 0
    bytes_in: int = 0

    def __sub__(self, other: TrafficSnapshot) -> TrafficSnapshot:
        return self + TrafficSnapshot(-other.requests_sent, -other.requests_served, -other.bytes_out, -other.bytes_in)

    def __add__(self, other: TrafficSnapshot) -> TrafficSnapshot:
        return TrafficSnapshot(
            self.requests_sent + other.requests_sent,
            self.requests_served + other.requests_served,
            self.bytes_out + other.bytes_out,
            self.bytes_in + other.bytes_in,
        )


class TrafficMeter:
    """Counts on the loop thread; `snapshot()` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0]

    def add(self, *, sent: int = 0, served: int = 0, bytes_out: int = 0, bytes_in: int = 0) -> None:
        with self._lock:
            for index, amount in enumerate((sent, served, bytes_out, bytes_in)):
                self._counts[index] += amount

    def snapshot(self) -> TrafficSnapshot:
        with self._lock:
            return TrafficSnapshot(*self._counts)
