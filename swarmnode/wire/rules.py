"""What every peer of a swarm agrees on (PROTOCOL.md §3-§4): windows of time, shards of signers, how long a
record lives and how far clocks may differ; and the freshness and placement checks 9-12 that follow from them."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from swarmnode.config import SwarmConfig
from swarmnode.wire.allowlist import load_allowlist
from swarmnode.wire.rejection import Reason, Rejected

WINDOW_JITTER_S = 5.0
# What a reader of the DHT allows beyond clock_skew_s: the clock difference DHT peers tolerate between each other
# (hivemind's MAX_DHT_TIME_DISCREPANCY_SECONDS), so that what one replica with a faster clock accepted is neither
# refused nor held against its signer by a reader with a slower one. One rule for the validator and the collector.
READ_CLOCK_SLACK_S = 3.0


def shard_of(peer_id: str, num_shards: int) -> int:
    """A signer's shard: first 8 bytes of SHA-256 of its base58 peer id, big-endian, mod num_shards."""
    digest = hashlib.sha256(peer_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


@dataclass(frozen=True)
class SwarmRules:
    """What a receiver needs to judge freshness and placement; all peers of a swarm agree on these. A tool
    that checks frames of any swarm leaves `swarm_id` None (checks 9-11 are then skipped)."""

    swarm_id: str | None
    window_s: float = 30.0
    record_ttl_s: float = 60.0
    num_shards: int = 256
    clock_skew_s: float = 5.0
    max_age_windows: int = 1
    allowed: frozenset[str] | None = None  # a closed swarm's members (wire/allowlist.py); None: open to anyone
    epoch_windows: int = 1  # directory and census keys change once an epoch of this many windows (PROTOCOL.md §4)

    @classmethod
    def of(cls, swarm: SwarmConfig) -> SwarmRules:
        """The rules of the swarm a node's `swarm:` section names; a closed swarm's allowlist is read and its
        signature checked here (AllowlistError, a ConfigError, names the file and the fix)."""
        allowed = None
        if swarm.allowlist is not None and swarm.operator is not None:
            allowed = load_allowlist(swarm.allowlist, swarm.id, swarm.operator).peers
        return cls(
            swarm.id, swarm.window_s, swarm.record_ttl_s, swarm.num_shards, swarm.clock_skew_s, swarm.max_age_windows,
            allowed, swarm.epoch_windows,
        )

    def admits(self, peer_id: str) -> bool:
        """Whether `peer_id` may store, serve and sign in this swarm: anyone, unless it is closed."""
        return self.allowed is None or peer_id in self.allowed

    def window_of(self, dht_time: float) -> int:
        return math.floor(dht_time / self.window_s)

    def future_bound(self, reading: bool) -> float:
        """How far ahead of our clock a signed time may be: clock_skew_s, and READ_CLOCK_SLACK_S more for a record
        read from the DHT (PROTOCOL.md §5, check 12)."""
        return self.clock_skew_s + (READ_CLOCK_SLACK_S if reading else 0.0)

    def expiration_of(self, timestamp: float) -> float:
        """When a record signed at `timestamp` expires; replicas refuse any other expiration (PROTOCOL.md §5.1)."""
        return timestamp + self.record_ttl_s

    def epoch_start(self, window: int) -> int:
        """The first window of `window`'s epoch, which names its directory and census keys: a node stores and reads
        those once an epoch, not once a window (PROTOCOL.md §4)."""
        return window - window % self.epoch_windows

    @property
    def epoch_record_ttl_s(self) -> float:
        """How long a presence entry or a beacon lives: it is read in its epoch and the next, whichever window of
        its epoch it was signed in (record_ttl_s alone when an epoch is one window)."""
        return self.record_ttl_s + 2 * (self.epoch_windows - 1) * self.window_s

    def epoch_age_limit(self, window: int) -> int:
        """How many windows before `window` a presence entry or beacon read in it may be: one of this epoch or the
        one before (check 11)."""
        return window - self.epoch_start(window) + self.epoch_windows

    def seconds_to_next_window(self, dht_time: float, rng: random.Random) -> float:
        """Until a random moment early in the next window: peers' once-a-window stores (beacons, refreshed
        batches) spread over its first seconds instead of all landing at once."""
        jitter = rng.uniform(0.0, min(WINDOW_JITTER_S, self.window_s / 4))
        return (self.window_of(dht_time) + 1) * self.window_s - dht_time + jitter


@dataclass(frozen=True)
class Slot:
    """Where a frame was read from in the DHT: the key's window and shard (a presence's or beacon's bucket, of
    `tier`), and the subkey. A DHT peer asked to store a record sees only the key's hash, so it passes None for
    window and shard and compares the hash itself (`swarmnode.net.validator`)."""

    window: int | None
    shard: int | None
    subkey: str
    tier: int = 0


def check_swarm_and_window(swarm_id: str, window: int, timestamp: float, rules: SwarmRules) -> None:
    """Check 9: the receiver's swarm, then a window that matches the signed timestamp (another swarm may
    use another window_s). Skipped when the receiver names no swarm."""
    if rules.swarm_id is None:
        return
    if swarm_id != rules.swarm_id:
        raise Rejected(Reason.WRONG_SWARM, f"swarm {swarm_id!r}")
    if rules.window_of(timestamp) != window:
        raise Rejected(Reason.BAD_VALUE, "timestamp lies outside its window")


def check_freshness(
    window: int, timestamp: float, rules: SwarmRules, now: float, max_age_windows: int | None = None, reading: bool = False
) -> None:
    """Checks 11-12: not older than max_age_windows (windows are the swarm's: only with a known swarm), not
    ahead of our clock by more than `rules.future_bound(reading)`."""
    max_age = rules.max_age_windows if max_age_windows is None else max_age_windows
    if rules.swarm_id is not None and window < rules.window_of(now) - max_age:
        raise Rejected(Reason.STALE, f"window {window}")
    if timestamp > now + rules.future_bound(reading):
        raise Rejected(Reason.FUTURE, f"timestamp {timestamp:.1f} is ahead of {now:.1f}")
