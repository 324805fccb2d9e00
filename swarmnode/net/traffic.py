"""DHT traffic of one peer: requests it sent, served and refused and protobuf bytes both ways, counted on the loop
thread and read from any other."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrafficSnapshot:
    """DHT RPC traffic of one peer: requests it sent and served, protobuf message bytes both ways.

    Bytes are serialized request/response protobuf sizes (what DHTProtocol exchanges), without libp2p
    framing, TLS or yamux overhead. Requests refused unanswered (over `network.max_kbps`, or from a peer a
    closed swarm's allowlist does not name) are counted apart, in `requests_refused` and `bytes_refused`:
    they arrived, but nothing was spent on them.
    """

    requests_sent: int = 0
    requests_served: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    requests_refused: int = 0
    bytes_refused: int = 0

    def __sub__(self, other: TrafficSnapshot) -> TrafficSnapshot:
        return TrafficSnapshot(*(a - b for a, b in zip(_values(self), _values(other))))

    def __add__(self, other: TrafficSnapshot) -> TrafficSnapshot:
        return TrafficSnapshot(*(a + b for a, b in zip(_values(self), _values(other))))


def _values(snapshot: TrafficSnapshot) -> list[int]:
    return [getattr(snapshot, field.name) for field in fields(snapshot)]


class TrafficMeter:
    """Counts on the loop thread; `snapshot()` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * len(fields(TrafficSnapshot))

    def add(
        self, *, sent: int = 0, served: int = 0, bytes_out: int = 0, bytes_in: int = 0, refused: int = 0,
        bytes_refused: int = 0,
    ) -> None:
        with self._lock:
            for index, amount in enumerate((sent, served, bytes_out, bytes_in, refused, bytes_refused)):
                self._counts[index] += amount

    def snapshot(self) -> TrafficSnapshot:
        with self._lock:
            return TrafficSnapshot(*self._counts)
