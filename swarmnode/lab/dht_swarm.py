"""Many DHT peers in one process (each with its own p2pd on 127.0.0.1), as the gossip and census benchmarks run
them: started and stopped a few at a time, so that a swarm of a hundred is up in seconds, not minutes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

START_WORKERS = 8  # p2pd starts at once: more only queue on two cores


def start_all(calls: Sequence[Callable[[], None]]) -> None:
    """Run every call (a peer's start or close), START_WORKERS at a time; the first error is raised."""
    with ThreadPoolExecutor(START_WORKERS) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()
