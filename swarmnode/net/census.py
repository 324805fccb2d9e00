"""The census: the swarm seen from any node, without a central server (docs/DESIGN.md §8).

Every node stores its signed beacon (`swarmnode.wire.beacon`) once an epoch (`swarm.epoch_windows` windows)
under its census bucket's key of that epoch and of the next (of the next alone where its last beacon stands under
this epoch's until it ends), at the three tiers around the one the swarm's size calls for (`wire/keys.py`). A
census reads the current epoch's bucket keys of one tier and keeps the beacons of the current and previous
epoch: those are the live nodes. A reader that does not know the swarm's size yet probes one bucket of every
tier first: only the tiers near the swarm's hold beacons. Keys that change every epoch leave a liar who ground
an identity next to one an epoch's use of it, and the census reads every replica of a bucket. A node's own
census, taken every CENSUS_EVERY_S for its dashboard, metrics and size estimate, reads one bucket (more only
while it has seen fewer than `CENSUS_SAMPLE` nodes), so its cost does not grow with the swarm; swarm totals are
then scaled up from the buckets read, and say so. `swarmnode swarm` reads every bucket.
"""

from __future__ import annotations

import dataclasses
import math
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivemind.utils import get_dht_time

from swarmnode.config import NetworkConfig
from swarmnode.net.peer import DHTPeer, StoreItem
from swarmnode.net.replicas import REPLICAS
from swarmnode.net.storage import MAX_BEACONS_PER_BUCKET
from swarmnode.net.swarm_size import SwarmSize
from swarmnode.wire.address import Reachability
from swarmnode.wire.beacon import BEACON, Beacon
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import (
    CENSUS_PER_KEY,
    PROTOCOL_VERSION,
    TIER_MAX,
    bucket_of,
    census_key,
    census_windows,
    tier_for,
    written_tiers,
)
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rules import Slot, SwarmRules

# A node's own census reads one bucket of its tier (12-24 nodes; a wave more only while it has seen fewer than
# this): its size estimate is then one bucket's count times the buckets (about ±25%; the tiers a node writes under
# tolerate a factor of two), and its reads were a sixth of a node's bytes at 10,000 peers (docs/DESIGN.md §6.8).
CENSUS_SAMPLE = 8
# Replicas asked for a bucket: all of them (a bucket's answer is small, at most 64 beacons of < 1 KiB), so that
# a bucket is hidden only when every one of its nearest peers lies.
CENSUS_QUORUM = REPLICAS
BUCKETS_PER_WAVE = 2
# A node's own census of a swarm of more than BUCKETS_PER_WAVE buckets is taken this often (to the nearest window):
# its reads were the largest part of a node's DHT bytes in a large swarm (docs/DESIGN.md §6.8), and a large swarm's
# size changes slowly. A smaller swarm's census, one read, stays every window.
CENSUS_EVERY_S = 120.0
FULL_CENSUS_CACHE_S = 5.0
SORT_KEYS = ("reward", "held_out", "round", "model", "last_seen", "peer")


@dataclass(frozen=True)
class CensusEntry:
    peer_id: str
    beacon: Beacon


@dataclass(frozen=True)
class CensusTotals:
    """Swarm-wide sums; `estimated` when only some buckets were read (then nodes and rates are scaled up)."""

    nodes: float
    models: int
    rounds_per_hour: float
    rollouts_per_hour: float
    reachability: dict[str, int]
    estimated: bool


@dataclass
class Census:
    """The live nodes one census found, and what it cost."""

    swarm_id: str
    taken_at: float  # DHT time
    entries: list[CensusEntry]
    buckets_read: int
    buckets_total: int = 1
    tier: int = 0  # the buckets' tier: 2^tier buckets in all
    protocol: int = PROTOCOL_VERSION  # of the node that took it (PROTOCOL.md §4): nodes of others are not in it
    refused: dict[str, int] = field(default_factory=dict)  # beacons that failed their checks, by reason
    bytes_in: int = 0
    timed_out: bool = False
    thin_buckets: int = 0  # buckets too few of whose replicas answered (a liar at the key hides what it likes)
    missing_self: bool = False  # our own beacon, stored this window, was not in its bucket's answers
    full_buckets: int = 0  # buckets whose replicas together returned more signers than a census opens

    @property
    def complete(self) -> bool:
        """Every bucket read, from enough replicas, within the deadline, our own beacon among them, none holding
        more than it opens: anything less, and nodes may be missing that the swarm holds."""
        return (
            self.buckets_read == self.buckets_total and not self.timed_out and self.thin_buckets == 0
            and not self.missing_self and self.full_buckets == 0
        )

    def totals(self) -> CensusTotals:
        scale = self.buckets_total / self.buckets_read if self.buckets_read else 0.0
        beacons = [entry.beacon for entry in self.entries]
        return CensusTotals(
            nodes=len(beacons) * scale,
            models=len({beacon.model_id for beacon in beacons}),
            rounds_per_hour=sum(beacon.rounds_per_hour for beacon in beacons) * scale,
            rollouts_per_hour=sum(beacon.rollouts_per_hour for beacon in beacons) * scale,
            reachability=dict(Counter(beacon.reachability.value for beacon in beacons)),
            estimated=not self.complete,
        )

    def sorted(self, by: str = "reward") -> list[CensusEntry]:
        """Entries best first by `by` (one of SORT_KEYS); ties and missing values by peer id, missing last."""
        if by not in SORT_KEYS:
            raise ValueError(f"sort by one of {', '.join(SORT_KEYS)}, not {by!r}")

        def key(entry: CensusEntry) -> tuple:
            beacon = entry.beacon
            value = {
                "reward": beacon.reward, "held_out": beacon.held_out, "round": beacon.round,
                "last_seen": beacon.timestamp, "model": None, "peer": None,
            }[by]
            if by == "model":
                return (beacon.model_id, entry.peer_id)
            return (value is None, -(value or 0.0), entry.peer_id)

        return sorted(self.entries, key=key)

    def to_json(self) -> dict[str, Any]:
        return {
            "swarm_id": self.swarm_id,
            "taken_at": self.taken_at,
            "complete": self.complete,
            "buckets_read": self.buckets_read,
            "buckets_total": self.buckets_total,
            "tier": self.tier,
            "protocol": self.protocol,
            "refused": self.refused,
            "bytes_in": self.bytes_in,
            "timed_out": self.timed_out,
            "thin_buckets": self.thin_buckets,
            "missing_self": self.missing_self,
            "full_buckets": self.full_buckets,
            "totals": dataclasses.asdict(self.totals()),
            "nodes": [
                {"peer_id": entry.peer_id, **dataclasses.asdict(entry.beacon), "reachability": entry.beacon.reachability.value}
                for entry in self.entries
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Census:
        """The JSON of `to_json` (from a node's /census or /status) back; raises KeyError/TypeError/ValueError."""
        entries = []
        for node in data["nodes"]:
            fields = {name: node[name] for name in Beacon.__dataclass_fields__ if name in node}
            fields["reachability"] = Reachability(fields.get("reachability", "unknown"))
            entries.append(CensusEntry(str(node["peer_id"]), Beacon(**fields)))
        return cls(
            swarm_id=data["swarm_id"], taken_at=float(data["taken_at"]), entries=entries,
            buckets_read=int(data["buckets_read"]), buckets_total=int(data["buckets_total"]),
            tier=int(data.get("tier", 0)), protocol=int(data.get("protocol", 1)),
            refused=dict(data.get("refused", {})), bytes_in=int(data.get("bytes_in", 0)),
            timed_out=bool(data.get("timed_out", False)), thin_buckets=int(data.get("thin_buckets", 0)),
            missing_self=bool(data.get("missing_self", False)), full_buckets=int(data.get("full_buckets", 0)),
        )


def beacon_places(
    window: int, tiers: range, standing: Mapping[tuple[int, int], float], rules: SwarmRules, offset: int = 0
) -> list[tuple[int, int]]:
    """The (key window, tier) places a beacon of `window` goes under: its epoch's and the next's keys at `tiers`,
    less those where our beacon already stands until that key's epoch ends (`standing`: place -> expiration). A node
    whose beacon stands under this epoch's keys stores one under the next epoch's alone, once an epoch, from the
    epoch's window `offset` on (a node's own, so that a swarm's beacons spread over the epoch): a census in the next
    epoch reads it, at most an epoch old. None while nothing is missing or due."""
    epoch, current = rules.epoch_windows, rules.epoch_start(window)
    missing = [(key_window, tier) for key_window in census_windows(window, rules) for tier in tiers
               if standing.get((key_window, tier), 0.0) < rules.window_s * (key_window + epoch)]
    if window - current < offset and all(key_window != current for key_window, _ in missing):
        return []
    return missing


def beacon_stood(
    standing: Mapping[tuple[int, int], float], since: int, placed: list[tuple[int, int]], stored: list[bool], expires: float
) -> dict[tuple[int, int], float]:
    """Where our beacon stands once one was stored (at `placed`, where `stored`) until `expires`; places of key
    windows before `since` (the current epoch's first) forgotten. What `beacon_places` reads next window. A new
    mapping: a census on another thread may be reading the old one."""
    return {**{place: until for place, until in standing.items() if place[0] >= since},
            **{place: expires for place, kept in zip(placed, stored) if kept}}


def take_census(
    peer: DHTPeer,
    rules: SwarmRules,
    *,
    timeout_s: float,
    enough: int | None = None,
    expected_nodes: float | None = None,
    rng: random.Random | None = None,
    own: str | None = None,
) -> Census:
    """Read census buckets of the tier `expected_nodes` calls for (all at once, or in random waves until `enough`
    live nodes were seen) and keep the valid beacons of the current and previous window. Stale beacons (departed
    nodes) are left out silently; any other failed check is counted by reason. A key holds at most
    MAX_BEACONS_PER_BUCKET signers on honest replicas; what the replicas return beyond that together is not
    opened (`census_full`), and the census is then not complete.

    Each wave is one DHT read; the first reads as many buckets as should hold `enough` of `expected_nodes`
    (all of them without `enough`), later ones BUCKETS_PER_WAVE. With no `expected_nodes`, a probe of one bucket
    at every tier comes first and sets the tier (its bucket there counts as read). A wave cut by the deadline
    counts only the buckets it returned as read. `own`: our peer id, when our beacon of this window was stored:
    its bucket read without it says the read missed what the swarm holds."""
    if rules.swarm_id is None:
        raise ValueError("a census is of one swarm: the rules must name it")
    rng = rng or random.Random()
    deadline = time.monotonic() + timeout_s
    census = Census(rules.swarm_id, get_dht_time(), [], 0)
    window = rules.epoch_start(rules.window_of(census.taken_at))  # the first window of the epoch, which names its keys
    refused: Counter[str] = Counter()
    probed: dict[tuple[int, int], list[CensusEntry]] = {}
    flaws: dict[tuple[int, int], _Flaws] = {}
    if expected_nodes is None:
        probe = {(tier, rng.randrange(2**tier)) for tier in range(TIER_MAX + 1)}
        probed, flaws = _read_buckets(peer, rules, census, window, probe, deadline, refused, own)
        expected_nodes = _probed_size(probed)
    census.tier = tier_for(expected_nodes, CENSUS_PER_KEY)
    census.buckets_total = 2**census.tier
    _judge(census, flaws)  # of the probe, only the bucket of the tier read counts
    buckets = list(range(census.buckets_total))
    rng.shuffle(buckets)
    for (tier, bucket), entries in probed.items():
        if tier == census.tier:
            buckets.remove(bucket)
            census.entries.extend(entries)
            census.buckets_read += 1
    wave_size = len(buckets)
    if enough is not None and expected_nodes:
        wave_size = min(max(math.ceil(enough * census.buckets_total / expected_nodes), 1), len(buckets))
    while buckets and not census.timed_out and (enough is None or len(census.entries) < enough):
        wave, buckets = buckets[:wave_size], buckets[wave_size:]
        wave_size = BUCKETS_PER_WAVE
        found, flaws = _read_buckets(peer, rules, census, window, {(census.tier, bucket) for bucket in wave}, deadline, refused, own)
        _judge(census, flaws)
        census.buckets_read += len(found) if census.timed_out else len(wave)
        census.entries.extend(entry for entries in found.values() for entry in entries)
    census.refused = dict(refused)
    return census


def _read_buckets(
    peer: DHTPeer, rules: SwarmRules, census: Census, window: int, buckets: set[tuple[int, int]], deadline: float,
    refused: Counter[str], own: str | None,
) -> tuple[dict[tuple[int, int], list[CensusEntry]], dict[tuple[int, int], _Flaws]]:
    """One DHT read of these (tier, bucket) keys of the epoch `window` names: the live beacons of each key that
    answered, and what each key's answer leaves short (`_judge` counts those of the tier read). What it cost and what
    it refused go on `census` and `refused`."""
    keys = {census_key(rules.swarm_id, window, tier, bucket): (tier, bucket) for tier, bucket in buckets}
    read = peer.get_many(list(keys), timeout_s=max(deadline - time.monotonic(), 0.0), quorum=CENSUS_QUORUM)
    census.timed_out = read.timed_out
    flaws = {keys[key]: _Flaws(thin=True) for key in read.thin_keys()}
    now = get_dht_time()
    found: dict[tuple[int, int], list[CensusEntry]] = {}
    for key, entries in read.entries.items():
        tier, bucket = keys[key]
        flaw = flaws.setdefault((tier, bucket), _Flaws())
        flaw.missing_self = own is not None and bucket == bucket_of(own, tier) and own not in entries
        if len(entries) > MAX_BEACONS_PER_BUCKET:  # the entries most replicas returned are opened first
            refused["census_full"] += len(entries) - MAX_BEACONS_PER_BUCKET
            flaw.full = True
        live = found.setdefault((tier, bucket), [])
        for subkey, (frame, _) in list(entries.items())[:MAX_BEACONS_PER_BUCKET]:
            census.bytes_in += len(frame)
            try:
                signed = open_frame(
                    frame, BEACON, rules, now=now, slot=Slot(window, bucket, subkey, tier), verified=peer.verified,
                    reading=True,
                )
            except Rejected as rejected:
                if rejected.reason is not Reason.STALE:
                    refused[rejected.reason.value] += 1
                continue
            live.append(CensusEntry(signed.signer, signed.value))
    return found, flaws


@dataclass
class _Flaws:
    """What one key's answer leaves short: too few replicas, more signers than a census opens, our own beacon
    missing from our bucket."""

    thin: bool = False
    full: bool = False
    missing_self: bool = False


def _judge(census: Census, flaws: dict[tuple[int, int], _Flaws]) -> None:
    """Count the flaws of the buckets of the tier the census reads (a probe's other tiers are not read for it)."""
    for (tier, _), flaw in flaws.items():
        if tier == census.tier:
            census.thin_buckets += flaw.thin
            census.full_buckets += flaw.full
            census.missing_self |= flaw.missing_self


def _probed_size(probed: dict[tuple[int, int], list[CensusEntry]]) -> float | None:
    """The swarm's size from one bucket of each tier: signers write under the tiers around the swarm's own, so
    those buckets each hold about nodes / 2^tier and the others none. The median of their counts, scaled."""
    estimates = sorted(len(entries) * 2**tier for (tier, _), entries in probed.items() if entries)
    return float(estimates[len(estimates) // 2]) if estimates else None


def take_census_as_client(rules: SwarmRules, network: NetworkConfig, *, timeout_s: float) -> Census:
    """A full census by a throwaway DHT client that joins through `network.initial_peers` and leaves: no
    node of one's own needed, nothing stored, a fresh key that is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="swarmnode-census-") as scratch:
        key = Path(scratch) / "census.key"
        save_identity(Identity.generate(), key)
        client = network.model_copy(update={"port": 0, "reachability": "private", "fallback_peers": []})
        with DHTPeer(key, rules, client, serve=False) as peer:
            return take_census(peer, rules, timeout_s=timeout_s)


BeaconSource = Callable[[int, float], Beacon]  # (window, DHT time) -> our beacon
CensusSink = Callable[[Census | None], None]  # after each beacon: the census, or None if none was due or it failed


class BeaconService:
    """Once a window, on its own thread: store our beacon where it does not stand yet (once an epoch), then, when
    due, take a sampled census; hand it on.

    Independent of rounds: a node in a round of many minutes still shows as live, with its phase.
    """

    def __init__(
        self,
        peer: DHTPeer,
        identity: Identity,
        rules: SwarmRules,
        source: BeaconSource,
        on_census: CensusSink,
        *,
        timeout_s: float,
        size: SwarmSize | None = None,
    ) -> None:
        self.peer, self.identity, self.rules = peer, identity, rules
        self.size = size if size is not None else SwarmSize()
        self._source, self._on_census, self._timeout_s = source, on_census, timeout_s
        self._stop = threading.Event()
        self._random = random.Random()
        self.offset = self._random.randrange(rules.epoch_windows)  # the window of each epoch our next beacon goes in
        self._thread = threading.Thread(target=self._run, name="swarmnode-beacon", daemon=True)
        self._full_lock = threading.Lock()
        self._full: Census | None = None
        self.published = self.failures = 0
        # (window, tier) whose key another peer stored our beacon under -> when that beacon expires there
        self._stored_at: dict[tuple[int, int], float] = {}
        self.last_error: str | None = None  # why the latest beacon was not stored
        self.census_error: str | None = None  # why the latest census failed
        self._census_due = 0.0  # when the next own census is due (time.monotonic)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Safe to call more than once, and before start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._timeout_s * 3)

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            # the census is for people: a failure is counted and shown, it never ends the thread
            try:
                self.publish()
            except Exception as error:
                self.failures += 1
                self.last_error = f"{type(error).__name__}: {error}"
            census = None
            if not self._stop.is_set() and self.census_due():
                try:
                    census = self.sampled_census()
                except Exception as error:
                    self.census_error = f"{type(error).__name__}: {error}"
                else:
                    self.census_error = None
            self._on_census(census)
            delay = self.rules.seconds_to_next_window(get_dht_time(), self._random)

    def publish(self) -> bool:
        """Store this window's beacon where ours does not stand yet (once an epoch, in the epoch's window `offset`);
        True if another peer holds one under this epoch's keys and the next's. A beacon peers would refuse (e.g. a
        model id over 200 bytes) is not sent; `last_error` says why."""
        now = get_dht_time()
        window = self.rules.window_of(now)
        tiers = written_tiers(tier_for(self.size.nodes(fallback=self.peer.estimated_swarm_size()), CENSUS_PER_KEY))
        placed = beacon_places(window, tiers, self._stored_at, self.rules, self.offset)
        if not placed:
            return True
        beacon = self._source(window, now)
        frame = BEACON.seal(beacon, self.identity)
        try:
            open_frame(frame, BEACON, self.rules, now=now)
        except Rejected as rejected:
            self.failures += 1
            self.last_error = f"our beacon would be refused by peers: {rejected}"
            return False
        expires = BEACON.expiration(beacon, self.rules)
        items = [
            StoreItem(census_key(beacon.swarm_id, key_window, tier, bucket_of(self.identity.peer_id, tier)),
                      self.identity.peer_id, frame, expires)
            for key_window, tier in placed
        ]
        outcomes = self.peer.store(items, timeout_s=self._timeout_s)
        self._stored_at = beacon_stood(
            self._stored_at, self.rules.epoch_start(window), placed, [o.remote > 0 for o in outcomes], expires
        )
        key_windows = census_windows(window, self.rules)
        stored = all(any((key_window, tier) in self._stored_at for tier in tiers) for key_window in key_windows)
        self.published += int(stored)
        self.failures += int(not stored)
        self.last_error = None if stored else f"no other peer stored our beacon within {self._timeout_s:g} s"
        return stored

    def _stored_beacon_of(self) -> str | None:
        """Our peer id while the current epoch's census key holds our beacon: a census that reads it must find it."""
        epoch = self.rules.epoch_start(self.rules.window_of(get_dht_time()))
        return self.identity.peer_id if any(stored == epoch for stored, _ in self._stored_at) else None

    def census_due(self) -> bool:
        """Whether the node's own census is due: every window in a swarm whose census is one read (at most
        BUCKETS_PER_WAVE buckets), else CENSUS_EVERY_S (at least an epoch: its keys hold the same beacons all
        epoch) after the last one that was not cut short."""
        return time.monotonic() >= self._census_due

    def sampled_census(self) -> Census:
        """The node's own census: as many buckets as should hold CENSUS_SAMPLE nodes (one of a tier's 12-24), more
        while fewer were seen; all of a small swarm's."""
        census = take_census(
            self.peer, self.rules, timeout_s=self._timeout_s, enough=CENSUS_SAMPLE,
            expected_nodes=self.size.nodes(), rng=self._random, own=self._stored_beacon_of(),
        )
        if not census.timed_out and census.buckets_read:  # a cut census would undercount: keep the previous estimate
            self.size.update(census.totals().nodes)
            if census.buckets_total > BUCKETS_PER_WAVE:  # a small swarm is one read: its census stays every window
                every_s = max(CENSUS_EVERY_S, self.rules.epoch_windows * self.rules.window_s)
                self._census_due = time.monotonic() + every_s - self.rules.window_s / 2
        return census

    def full_census(self) -> Census:
        """Every bucket, for `swarmnode swarm --url`; reused for a few seconds so that polling costs little."""
        with self._full_lock:
            if self._full is None or get_dht_time() - self._full.taken_at > FULL_CENSUS_CACHE_S:
                self._full = take_census(
                    self.peer, self.rules, timeout_s=self._timeout_s, expected_nodes=self.size.nodes(),
                    own=self._stored_beacon_of(),
                )
            return self._full
