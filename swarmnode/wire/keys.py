"""Where each kind of record lives in the DHT (PROTOCOL.md §4): a batch under its signer's shard of its window,
a presence entry under its window's directory, a beacon under its signer's census bucket."""

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


def census_key(swarm_id: str, bucket: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/census/{bucket}"


def beacon_bucket(peer_id: str) -> int:
    return shard_of(peer_id, BEACON_BUCKETS)
