"""Where each kind of record lives in the DHT (PROTOCOL.md §4): a batch under its signer's shard of its window,
a presence entry under its signer's directory bucket of its epoch, a beacon under its signer's census bucket of
its epoch and the next. An epoch is a swarm's `epoch_windows` windows, and its keys are named by its first window.
Every key names a window, so no position next to a key is worth holding for longer than an epoch or two.

Directory and census keys are spread over 2^tier buckets, the tier following the swarm's size as a node estimates
it, so that a key holds about the same number of signers in a swarm of 16 as in one of 100,000 and no key's
replicas serve the whole swarm (docs/DESIGN.md §6.8). A signer writes under three neighbouring tiers: readers whose
estimates differ by up to a factor of two from the writer's still find it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rules import Slot, SwarmRules, shard_of

# The protocol version is in every key: nodes of another version read and write other keys (another swarm).
PROTOCOL_VERSION = 3
KEY_PREFIX = f"swarmnode/v{PROTOCOL_VERSION}/"
TIER_MAX = 12  # at most 4,096 buckets per kind and window: 12 (24) signers a key at ~49,000 (98,000) nodes
DIRECTORY_PER_KEY = 12  # signers a directory key should hold (of the 32 its replicas take)
CENSUS_PER_KEY = 24  # beacons a census key should hold (of the 64 its replicas take)
PLACEMENTS = 1_024  # (signer, window, kind) whose keys at every tier are remembered (about 1 KB each)


def batch_key(swarm_id: str, window: int, shard: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/{shard}"


def directory_key(swarm_id: str, window: int, tier: int, bucket: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/directory/{tier}/{bucket}"


def census_key(swarm_id: str, window: int, tier: int, bucket: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/census/{tier}/{bucket}"


def census_windows(window: int, rules: SwarmRules) -> tuple[int, int]:
    """The census keys' windows a beacon of `window` may stand under: its epoch's first window and the next epoch's,
    so that a census reads only the current epoch's keys and still finds every node that stored a beacon in the
    previous one."""
    start = rules.epoch_start(window)
    return (start, start + rules.epoch_windows)


def bucket_of(peer_id: str, tier: int) -> int:
    """A signer's bucket among the 2^tier of a tier; its bucket one tier up is this one or this + 2^tier."""
    return shard_of(peer_id, 2**tier)


@functools.lru_cache(maxsize=PLACEMENTS)
def every_tier(key: Callable[[str, int, int, int], str], swarm_id: str, window: int, signer: str) -> tuple[str, ...]:
    """`signer`'s key of `window` at every tier (`key`: directory_key or census_key): where a validator may find its
    presence or beacon. Remembered: each record is judged once per replica that returns it and per store."""
    return tuple(key(swarm_id, window, tier, bucket_of(signer, tier)) for tier in range(TIER_MAX + 1))


def tier_for(nodes: float | None, per_key: int) -> int:
    """The tier whose keys hold about `per_key` signers of a swarm of `nodes` (0 while its size is unknown)."""
    if nodes is None or nodes <= per_key:
        return 0
    return min(TIER_MAX, math.ceil(math.log2(nodes / per_key)))


def written_tiers(tier: int) -> range:
    """The tiers a signer whose estimate says `tier` writes under: that one and its two neighbours."""
    return range(max(tier - 1, 0), min(tier + 1, TIER_MAX) + 1)


def check_bucket(signer: str, slot: Slot | None) -> None:
    """A presence or beacon read from a directory or census key must be of a signer in that key's bucket."""
    if slot is not None and slot.shard is not None and slot.shard != bucket_of(signer, slot.tier):
        raise Rejected(Reason.KEY_MISMATCH, "read from another bucket than its signer's")
