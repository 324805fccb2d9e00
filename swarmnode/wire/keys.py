"""Where each kind of record lives in the DHT (PROTOCOL.md §4): a batch under its signer's shard of its window,
a presence entry under its window's directory, a beacon under its signer's census bucket of its window and the
next. Every key names a window, so no position next to a key is worth holding for longer than a window or two."""

from __future__ import annotations

from swarmnode.wire.rules import shard_of

KEY_PREFIX = "swarmnode/v1/"
# A census bucket key holds the beacons of the signers whose peer id falls in it (shard_of with this many
# buckets): a reader that wants only a sample of the swarm reads a few buckets, not every beacon.
BEACON_BUCKETS = 8


def batch_key(swarm_id: str, window: int, shard: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/{shard}"


def directory_key(swarm_id: str, window: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/directory"


def census_key(swarm_id: str, window: int, bucket: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/census/{bucket}"


def census_windows(window: int) -> tuple[int, int]:
    """The census keys' windows a beacon of `window` is stored under: its own and the next, so that a census
    reads only the current window's keys and still finds every node that stored a beacon in the previous one."""
    return (window, window + 1)


def beacon_bucket(peer_id: str) -> int:
    return shard_of(peer_id, BEACON_BUCKETS)
