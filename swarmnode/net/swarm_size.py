"""How many nodes this node believes the swarm holds: its latest census's count (scaled up from the buckets it
read), else what its routing table suggests. It sets how many buckets its directory and census keys are spread over
(`wire/keys.tier_for`), so no key's replicas serve the whole swarm (docs/DESIGN.md §6.8)."""

from __future__ import annotations

import threading


class SwarmSize:
    """Written by the census thread, read by the round's gossip: thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: float | None = None

    def update(self, nodes: float) -> None:
        with self._lock:
            self._nodes = nodes

    def nodes(self, fallback: float | None = None) -> float | None:
        """The census's count; `fallback` (e.g. the routing table's estimate) until a census counted."""
        with self._lock:
            return self._nodes if self._nodes is not None else fallback
