"""Gossip: publish our signed rollouts under this window's shard key, collect verified ones from peers.

A collect reads a random sample of shard keys in waves until it has enough rollouts or its deadline
passes, so a node's gossip cost depends on how much it wants, not on the size of the swarm. Gossip never
stops training: publish and collect never raise; a failure is in their result.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from hivemind.utils import get_dht_time

from swarmnode.config import GossipConfig
from swarmnode.net.directory import Directory
from swarmnode.net.drawn_ahead import DrawnAhead
from swarmnode.net.peer import DHTPeer, StoreItem, StoreOutcome
from swarmnode.net.recent_set import RecentSet
from swarmnode.net.replicas import BATCH_QUORUM
from swarmnode.net.reputation import Reputation
from swarmnode.net.swarm_size import SwarmSize
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import batch_key
from swarmnode.wire.receive import ReplayGuard, open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import PeerRollout, Rollout, RolloutBatch
from swarmnode.wire.rules import Slot, SwarmRules, shard_of

_SEEN_DIGESTS = 16_384
_LATENCY_SAMPLES = 1_024
_SIGNERS_SEEN = 16_384  # distinct signers taken from, counted among the most recent this many
LOOK_AHEAD_SPREAD = 0.75  # the next window's keys are looked up within this share of the rest of the window
NEWEST_FIRST_AFTER = 0.5  # from this share of a window on, a collect reads the current window's batches first
PlannedKey = tuple[str, Slot, frozenset[str]]  # a shard key a collect plans to read, and the signers known under it


@dataclass
class PublishResult:
    """`ok`: at least one other peer accepted the batch (`replicas` of them); `stored_locally`: we keep a
    copy too (we are among the key's nearest peers), which alone does not make it published."""

    ok: bool
    window: int
    sequence: int
    frame_bytes: int
    latency_s: float
    error: str | None = None
    replicas: int = 0
    stored_locally: bool = False


@dataclass
class CollectResult:
    """What one collect delivered and refused. `bytes_in` counts the frames the DHT returned to us.

    `skipped` holds frames passed over without judging them: our own, already consumed, or from a signer
    whose per-collect cap is reached.
    """

    rollouts: list[PeerRollout]
    rejected: Counter[str]
    peers_seen: int
    bytes_in: int
    elapsed_s: float
    timed_out: bool
    skipped: Counter[str] = field(default_factory=Counter)
    keys_read: int = 0  # shard keys
    directory_keys_read: int = 0
    directory_entries: int = 0  # other signers' valid entries in the directories read
    directory_timed_out: bool = False
    thin_reads: int = 0  # keys too few of whose replicas answered: what a liar at the key hides looks like this
    listed_not_found: int = 0  # signers the directory listed whose shard held nothing of theirs: dropped
    error: str | None = None  # the collect failed (the DHT loop raised): nothing was read


@dataclass(frozen=True)
class LatencySummary:
    count: int = 0
    p50_s: float = 0.0
    p95_s: float = 0.0
    max_s: float = 0.0

    @classmethod
    def of(cls, samples: Sequence[float]) -> LatencySummary:
        if not samples:
            return cls()
        if len(samples) == 1:
            return cls(1, samples[0], samples[0], samples[0])
        cuts = statistics.quantiles(samples, n=20, method="inclusive")
        return cls(len(samples), statistics.median(samples), cuts[18], max(samples))


@dataclass(frozen=True)
class GossipStats:
    """Cumulative counters since start. Traffic is all DHT RPC traffic of this peer, including the
    requests it serves for others (protobuf message bytes); latencies summarise the last 1024 calls, and
    peers_seen counts distinct signers among the last 16,384 taken from."""

    published: int
    publish_failures: int
    published_local_only: int  # failures where only our own copy was stored
    collected: int
    rejected: Counter[str]
    refused_records: Counter[str]
    skipped: Counter[str]
    offences: Counter[str]
    bytes_out: int
    bytes_in: int
    requests_sent: int
    requests_served: int
    store_latency: LatencySummary
    get_latency: LatencySummary
    peers_seen: int
    banned_peers: int
    refreshed: int = 0  # re-stores of our latest batch in a later window (slow rounds)


@dataclass
class _Latest:
    """What `refresh` re-signs: our last batch's content, its sequence, when it was made, whether a store of it
    has returned and the window another peer last took it in (None while none has)."""

    rollouts: tuple[Rollout, ...]
    model_id: str
    suite_version: str
    sequence: int
    made: float  # time.monotonic()
    tried: bool = False
    window: int | None = None

    def stored(self, result: PublishResult) -> None:
        """A store returned: only one another peer took marks its window done; a failed one is retried by the
        next refresh (the next window), not after the windows collectors read have passed."""
        self.tried = True
        if result.ok:
            self.window = result.window


def _opened(taken: Container[str], entry: PlannedKey, window: int) -> bool:
    """Whether a collect already opened the batch of that past window of every signer we know under the key
    (`taken`: "signer/window"): a node whose rounds come at another moment of each window would read the window
    before's batches twice. A past window's batch is final; one of the current `window` may be replaced by a newer."""
    _, slot, signers = entry
    return slot.window < window and bool(signers) and all(f"{signer}/{slot.window}" in taken for signer in signers)


def _ahead_first(ahead: list[PlannedKey], plan: list[PlannedKey], taken: Container[str], window: int) -> list[PlannedKey]:
    """The wave `look_ahead` drew for `window`, less what a collect opened since, then the rest of a new plan."""
    wave = [entry for entry in ahead if not _opened(taken, entry, window)]
    drawn = {key for key, _, _ in wave}
    return wave + [entry for entry in plan if entry[0] not in drawn]


class Gossip:
    """A node's exchange with the swarm: sign and publish batches, collect and verify peers' batches, count the
    offences of their signers. publish/collect block the calling thread; the DHT runs on its own loop thread."""

    def __init__(
        self, peer: DHTPeer, identity: Identity, rules: SwarmRules, config: GossipConfig, size: SwarmSize | None = None
    ) -> None:
        if peer.peer_id and peer.peer_id != identity.peer_id:
            raise ValueError(f"the DHT peer runs as {peer.peer_id}, not as the signer {identity.peer_id}")
        self.identity = identity
        self.peer_id = identity.peer_id
        self.rules = rules
        self.config = config
        self.next_sequence = 0
        self._peer = peer
        self.size = size if size is not None else SwarmSize()  # the census's estimate sets the directory's tier
        self._directory = Directory(peer, identity, rules, self.size)
        self._latest: _Latest | None = None  # our last batch, re-stored each window until replaced (`refresh`)
        self._published_in: int | None = None  # the window of our last publish
        self._wanted = 0  # what our last collect asked for
        self._ahead: DrawnAhead[list[PlannedKey]] = DrawnAhead()  # the first wave `look_ahead` drew for a window
        self._shard_read: dict[int, int] = {}  # shard -> the newest window a collect read a key of it in
        self._window_thread: threading.Thread | None = None
        self._store_lock = threading.Lock()  # one batch store at a time: a refresh never races a publish
        self._stopping = threading.Event()
        self._reputation = Reputation(config.ban_after_offences, config.ban_window_s, config.ban_duration_s)
        self._replay_guard = ReplayGuard()
        self._consumed = RecentSet(_SEEN_DIGESTS)
        self._consumed_batches = RecentSet(_SEEN_DIGESTS)  # (signer, sequence, rollouts): a refreshed batch is taken once
        self._taken = RecentSet(_SEEN_DIGESTS)  # "signer/window" of every batch a collect opened: not read for again
        self._offended = RecentSet(_SEEN_DIGESTS)  # frames already held against their signer
        self._random = random.Random()
        self._lock = threading.Lock()
        self._published = self._publish_failures = self._published_local_only = self._collected = self._refreshed = 0
        self._rejected: Counter[str] = Counter()
        self._skipped: Counter[str] = Counter()
        self._offences: Counter[str] = Counter()
        self._signers_seen = RecentSet(_SIGNERS_SEEN)
        self._store_latency_s: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._get_latency_s: deque[float] = deque(maxlen=_LATENCY_SAMPLES)

    def close(self) -> None:
        """Stop the window thread; the DHT peer is its owner's to close."""
        self._stopping.set()
        if self._window_thread is not None and self._window_thread.is_alive():
            self._window_thread.join(timeout=self.config.publish_timeout_s * 3)

    def start_each_window(self) -> None:
        """Once a window, on its own thread: `refresh()` early in the window, then `look_ahead()` to the next one at
        a random moment of the rest. A node in a round of many minutes keeps its latest batch readable (records
        live `record_ttl_s`, collectors read the last `max_age_windows + 1` windows); one that rounds every
        window finds the next window's replicas before its rounds need them, at a moment of its own (were every
        node to look ahead at once, each machine would serve a burst of finds)."""
        if self._window_thread is None:
            self._window_thread = threading.Thread(target=self._each_window, name="swarmnode-window", daemon=True)
            self._window_thread.start()

    def _each_window(self) -> None:
        while not self._stopping.wait(self.rules.seconds_to_next_window(get_dht_time(), self._random)):
            try:
                self.refresh()
            except Exception:  # a failed refresh is counted by publish's stats; the thread must go on
                with self._lock:
                    self._publish_failures += 1
            now = get_dht_time()
            left_s = (self.rules.window_of(now) + 1) * self.rules.window_s - now
            if not self._stopping.wait(self._random.uniform(0.0, LOOK_AHEAD_SPREAD * left_s)):
                self.look_ahead()

    def look_ahead(self) -> int:
        """Find the replicas of the next window's keys before its rounds need them (`DHTPeer.look_ahead`: they are
        kept as long as the keys are read): our batch's and directory entry's keys, the directory buckets and the
        first wave of shards its first collect reads (drawn now, kept for it). A publish then costs one round of
        stores, and a collect's first reads go straight to the replicas. Only while we publish every window: a
        node whose rounds are longer would look up keys it never uses. Returns the keys looked up; never raises."""
        now = get_dht_time()
        window = self.rules.window_of(now) + 1
        with self._lock:
            published_in, wanted = self._published_in, self._wanted
        if published_in is None or published_in < window - 2:
            return 0
        try:
            keys = [batch_key(self.rules.swarm_id, window, shard_of(self.peer_id, self.rules.num_shards))]
            with self._store_lock:
                if self._directory.entry_due(window):
                    keys += self._directory.entry_keys(window)
            if wanted:
                peers_needed = math.ceil(wanted / self.config.max_rollouts_per_peer)
                keys += self._directory.keys_ahead(window, peers_needed)
                # the moment of the next collect in its window is not known: the window before it holds a batch of
                # every signer that rounds once a window whenever it comes (the current one, only of those before it)
                wave = self._next_wave(self._reading_plan(window, newest_first=False), peers_needed)
                with self._lock:  # the current window's wave stays for its collect, which may come after this
                    self._ahead.put(window, wave)
                keys += [key for key, _, _ in wave]
            until_window_s = window * self.rules.window_s - now  # past that, the next window's rounds look up themselves
            self._peer.look_ahead(keys, timeout_s=min(self.config.publish_timeout_s, max(until_window_s, 1.0)))
            return len(keys)
        except Exception:  # gossip must never stop; a round without its replicas found early just looks them up
            return 0

    def publish(self, rollouts: Sequence[Rollout], *, model_id: str, suite_version: str) -> PublishResult:
        """Sign a batch and store it under this window's key for our shard, replacing our earlier batch; with
        the epoch's first batch (and the next ones until another peer took it), also our entry in the
        epoch's directory buckets (PROTOCOL.md §4.1). Once an epoch, not every round: a directory key's replicas
        take one store per listed signer an epoch.

        Published means that at least one other peer accepted the batch: a copy only we hold leaves with us.
        The sequence number advances even if the store fails: the signed frame may have reached a peer.
        """
        with self._lock:
            sequence = self.next_sequence
            self.next_sequence += 1
            self._published_in = self.rules.window_of(get_dht_time())
            latest = self._latest = _Latest(tuple(rollouts), model_id, suite_version, sequence, time.monotonic())
        with self._store_lock:
            try:
                result = self._store_batch(latest)
            except Exception as error:  # gossip must never stop training; the failure is in the result
                result = PublishResult(False, 0, sequence, 0, 0.0, f"{type(error).__name__}: {error}")
            latest.stored(result)
        with self._lock:
            if result.ok:
                self._published += 1
                self._store_latency_s.append(result.latency_s)
            else:
                self._publish_failures += 1
                self._published_local_only += int(result.stored_locally)
        return result

    def refresh(self) -> PublishResult | None:
        """Re-sign our latest batch for the current window once it has left the windows collectors read
        (`max_age_windows` back), for up to `refresh_for_s` after it was made: records live until replaced, so
        rounds longer than `record_ttl_s` still share, and a node that publishes every window never refreshes.
        Same sequence and rollouts: a collector that took the batch before skips it (PROTOCOL.md §2.3)."""
        with self._store_lock:
            with self._lock:
                latest = self._latest
            window = self.rules.window_of(get_dht_time())
            if latest is None or not latest.tried or time.monotonic() - latest.made > self.config.refresh_for_s:
                return None  # nothing yet, or a publish is about to store it
            if latest.window is not None and latest.window >= window - self.rules.max_age_windows:
                return None
            result = self._store_batch(latest)
            latest.stored(result)  # under the store lock, as publish's: one store of a batch at a time
        with self._lock:
            if result.ok:
                self._refreshed += 1
            else:
                self._publish_failures += 1
        return result

    def _store_batch(self, latest: _Latest) -> PublishResult:
        started = time.monotonic()
        now = get_dht_time()
        window = self.rules.window_of(now)
        batch = RolloutBatch(
            self.rules.swarm_id, window, latest.sequence, now, latest.model_id, latest.suite_version, latest.rollouts
        )
        frame = BATCH.seal(batch, self.identity)
        shard = shard_of(self.peer_id, self.rules.num_shards)
        outcome, error = StoreOutcome(0, False), None
        try:
            open_frame(frame, BATCH, self.rules, now=now, slot=Slot(window, shard, self.peer_id))
        except Rejected as rejected:
            error = f"the batch would be refused by peers: {rejected}"
        else:
            items = [
                StoreItem(batch_key(self.rules.swarm_id, window, shard), self.peer_id, frame, self.rules.expiration_of(now))
            ]
            if self._directory.entry_due(window):
                items.extend(self._directory.entries(window, now))
            outcomes = self._peer.store(items, timeout_s=self.config.publish_timeout_s)
            outcome = outcomes[0]
            if any(entry.remote > 0 for entry in outcomes[1:]):
                self._directory.entry_stored(window)
            if outcome.remote == 0:
                kept = "; kept only locally" if outcome.local else ""
                error = f"no other peer stored the batch within {self.config.publish_timeout_s:g} s{kept}"
        latency_s = time.monotonic() - started
        return PublishResult(
            error is None, window, latest.sequence, len(frame), latency_s, error, outcome.remote, outcome.local
        )

    def collect(self, max_rollouts: int, *, timeout_s: float | None = None) -> CollectResult:
        """Up to `max_rollouts` verified rollouts of other peers from the current and recent windows.

        Reads shard keys in waves (one DHT lookup each, at most `shards_per_wave` keys) until it has enough
        or the deadline (`collect_timeout_s` by default) passes. Takes at most `max_rollouts_per_peer` from
        one signer per call; a batch is consumed once (what is not taken from it is not offered again).
        Never raises: a failure is a timed-out result that counts `collect_error`.
        """
        started = time.monotonic()
        try:
            return self._collect(max_rollouts, started, timeout_s)
        except Exception as error:  # gossip must never stop training
            failed = CollectResult([], Counter({"collect_error": 1}), 0, 0, time.monotonic() - started, True)
            failed.error = f"{type(error).__name__}: {error}"
            return failed

    def _collect(self, max_rollouts: int, started: float, timeout_s: float | None) -> CollectResult:
        deadline = started + (self.config.collect_timeout_s if timeout_s is None else timeout_s)
        result = CollectResult([], Counter(), 0, 0, 0.0, False)
        if max_rollouts == 0:
            return result
        taken: Counter[str] = Counter()
        now = get_dht_time()
        window = self.rules.window_of(now)
        newest_first = now - window * self.rules.window_s >= NEWEST_FIRST_AFTER * self.rules.window_s
        peers_needed = math.ceil(max_rollouts / self.config.max_rollouts_per_peer)
        with self._lock:
            self._wanted = max_rollouts
            ahead = self._ahead.take(window)
        if self._directory.read_due(window, peers_needed):
            read = self._directory.read(window, now, deadline, peers_needed)
            result.directory_keys_read += read.keys_read
            result.directory_entries += read.entries
            result.directory_timed_out = read.timed_out
            result.bytes_in += read.bytes_in
            result.rejected.update(read.rejected)
            result.thin_reads += read.thin
        plan = self._reading_plan(window, newest_first)
        if ahead is not None:
            plan = _ahead_first(ahead, plan, self._taken, window)
        read_slots: set[tuple[int, int]] = set()  # (window, shard) of the keys read from enough replicas
        signers_found: set[str] = set()
        while plan and len(result.rollouts) < max_rollouts and not result.timed_out:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                result.timed_out = True
                break
            peers_needed = math.ceil(
                (max_rollouts - len(result.rollouts)) / self.config.max_rollouts_per_peer
            )
            wave = self._next_wave(plan, peers_needed)
            wave_started = time.monotonic()
            read = self._peer.get_many(
                [key for key, _, _ in wave], timeout_s=remaining_s, quorum=BATCH_QUORUM,
                wanted={key: signers for key, _, signers in wave if signers},
            )
            found, result.timed_out = read.entries, read.timed_out
            result.thin_reads += len(read.thin_keys())
            with self._lock:
                self._get_latency_s.append(time.monotonic() - wave_started)
            result.keys_read += len(wave)
            thin = set(read.thin_keys())
            for key, slot, _ in wave:
                entries = list(found.get(key, {}).items())
                if key not in thin and key in read.coverage:
                    read_slots.add((slot.window, slot.shard))
                signers_found.update(signer for signer, _ in entries)
                result.bytes_in += sum(len(frame) for _, (frame, _) in entries)
                self._random.shuffle(entries)
                for subkey, (frame, _) in entries:
                    if len(result.rollouts) >= max_rollouts:
                        break
                    if time.monotonic() > deadline:
                        result.timed_out = True
                        break
                    self._consider(
                        frame, Slot(slot.window, slot.shard, subkey), now, max_rollouts, taken, result
                    )
        result.listed_not_found = self._directory.not_found(read_slots, signers_found)
        result.peers_seen = len(taken)
        result.elapsed_s = time.monotonic() - started
        with self._lock:
            self._collected += len(result.rollouts)
            self._rejected.update(result.rejected)
            self._skipped.update(result.skipped)
            self._signers_seen.update(taken)
            for read_window, shard in read_slots:
                self._shard_read[shard] = max(self._shard_read.get(shard, read_window), read_window)
        return result

    def _reading_plan(self, window: int, newest_first: bool) -> list[PlannedKey]:
        """Keys to read, best first, each with the peers we know publish under it (a read for them asks one
        replica first: `KeyRead`).

        Known publishers (`Directory.publishers`; our signing key is our libp2p identity, so a peer id tells its
        shard) come first: one window of every known shard, then their other windows, so that a collect that has
        enough reads one key a signer. The first window is the previous one in a window's first half (most signers
        have not published in the current one yet, and every batch is read for the whole window after its own), the
        current one from `NEWEST_FIRST_AFTER` on (fresher rollouts). Signers the directory listed come first, in
        the window it listed them in if that is newer (their batch is there, and a forged entry is found out by one
        read): its buckets are drawn at random, so its signers are a fair draw from all publishers, while those in
        our routing table are public ones only (mixed in, they crowded out signers behind NAT, whom only the
        directory names). Before the listed, one shard of a peer in our routing table that none of our directory
        reads found there (`Directory.met_since_read`), the one we read least lately: a node that joined since our
        last read is in routing tables an epoch before a read lists it. Then one wave of keys of shards we know no
        publisher of (a different random few each call), so that signers the directory missed (it is capped) are
        still reached without every collect reading every empty shard. Keys of a past window whose batches of
        every signer we know there a collect already opened come last.
        """
        oldest = window - self.rules.max_age_windows
        first = window if newest_first or self.rules.max_age_windows == 0 else window - 1
        windows = [first] + [w for w in range(window, oldest - 1, -1) if w != first]
        listed: dict[int, int] = {}  # shard -> the window to read a listed signer of it in first
        for peer, listed_in in self._directory.listed().items():
            shard = shard_of(peer, self.rules.num_shards)
            listed[shard] = max(listed.get(shard, first), min(listed_in, window))
        known: dict[int, set[str]] = {}
        for peer in self._directory.publishers():
            known.setdefault(shard_of(peer, self.rules.num_shards), set()).add(peer)
        others = sorted(set(known) - set(listed))
        probes: list[int] = []
        wanted = min(math.ceil(self.config.shards_per_wave / len(windows)), self.rules.num_shards - len(known))
        while len(probes) < wanted:  # shards no known peer publishes to: drawn, never listed (there may be a million)
            shard = self._random.randrange(self.rules.num_shards)
            if shard not in known and shard not in probes:
                probes.append(shard)
        listed_order = self._random.sample(sorted(listed), len(listed))
        others_order = self._random.sample(others, len(others))
        met = sorted({shard_of(peer, self.rules.num_shards) for peer in self._directory.met_since_read()} - set(listed))
        joined = min(self._random.sample(met, len(met)), key=lambda shard: self._shard_read.get(shard, -1), default=None)
        slots = [(listed[shard], shard) for shard in listed_order] + [(windows[0], shard) for shard in others_order]
        if joined is not None:
            slots.remove((windows[0], joined))
            slots.insert(0, (windows[0], joined))
        slots += [(w, shard) for shard in listed_order for w in windows if w != listed[shard]]
        slots += [(w, shard) for w in windows[1:] for shard in others_order]
        slots += [(w, shard) for w in windows for shard in probes]
        plan = [
            (batch_key(self.rules.swarm_id, read_window, shard), Slot(read_window, shard, ""), frozenset(known.get(shard, ())))
            for read_window, shard in slots
        ]
        plan.sort(key=lambda entry: _opened(self._taken, entry, window))  # stable: the opened last, in their order
        return plan[: len(known) * len(windows) + self.config.shards_per_wave]

    def _next_wave(self, plan: list[PlannedKey], peers_needed: int) -> list[PlannedKey]:
        """Take keys off the plan until they should hold `peers_needed` peers, within [1, shards_per_wave]:
        a dense shard costs one key per lookup, sparse or unknown ones are read several at a time. Every wave
        also reads a key of a shard we know no publisher of while one is left, so that listed signers (an entry
        costs nothing to forge) cannot keep the probes for the others out past the deadline."""
        limit = min(len(plan), self.config.shards_per_wave)
        wave: list[PlannedKey] = []
        expected = 0
        for entry in plan:
            if len(wave) == limit or (wave and expected >= peers_needed):
                break
            wave.append(entry)
            expected += len(entry[2])
        probe = next((entry for entry in plan if not entry[2]), None)
        if probe is not None and probe not in wave:
            wave[-1 if len(wave) == limit else len(wave):] = [probe]
        plan[:] = [entry for entry in plan if entry not in wave]
        return wave

    def _consider(
        self,
        frame: bytes,
        slot: Slot,
        now: float,
        max_rollouts: int,
        taken: Counter[str],
        result: CollectResult,
    ) -> None:
        signer = slot.subkey
        digest = hashlib.blake2b(frame, digest_size=16).digest()
        if signer == self.peer_id:
            result.skipped["own"] += 1
            return
        if digest in self._consumed:
            result.skipped["already_seen"] += 1
            return
        if taken[signer] >= self.config.max_rollouts_per_peer:
            result.skipped["over_cap"] += 1
            return
        if self._reputation.is_banned(signer):
            result.rejected[Reason.BANNED.value] += 1
            return
        try:
            signed = open_frame(
                frame, BATCH, self.rules, now=now, slot=slot, replay_guard=self._replay_guard,
                verified=self._peer.verified, reading=True,
            )
        except Rejected as rejected:
            result.rejected[rejected.reason.value] += 1
            if rejected.reason is not Reason.FUTURE:
                self._consumed.add(digest)
            if rejected.offender is not None and digest not in self._offended:  # one offence per frame, however often read
                self._offended.add(digest)
                self.report_offence(rejected.offender, rejected.reason)
            return
        self._consumed.add(digest)
        batch = signed.value
        self._taken.add(f"{signer}/{slot.window}")
        self._directory.saw(signer, batch.window)
        taken_before = hashlib.blake2b(repr((signer, batch.sequence, batch.rollouts)).encode(), digest_size=16).digest()
        if taken_before in self._consumed_batches:
            result.skipped["already_seen"] += 1
            return
        self._consumed_batches.add(taken_before)
        room = min(self.config.max_rollouts_per_peer - taken[signer], max_rollouts - len(result.rollouts))
        for rollout in self._random.sample(batch.rollouts, min(room, len(batch.rollouts))):
            result.rollouts.append(
                PeerRollout(signer, batch.model_id, rollout, batch.window, batch.sequence)
            )
            taken[signer] += 1

    def report_offence(self, peer_id: str, reason: Reason) -> None:
        """Count an offence against a signer (e.g. a rollout that failed rescoring); enough of them ban it."""
        with self._lock:
            self._offences[reason.value] += 1
        self._reputation.record_offence(peer_id, reason)

    def report_offences(self, offenders: Sequence[tuple[str, str]]) -> None:
        """The intake's findings of one round: (peer id, reason) pairs."""
        for peer_id, reason in offenders:
            self.report_offence(peer_id, Reason(reason))

    @property
    def stats(self) -> GossipStats:
        traffic = self._peer.traffic()
        refused = self._peer.refusals()
        with self._lock:
            return GossipStats(
                published=self._published,
                publish_failures=self._publish_failures,
                published_local_only=self._published_local_only,
                collected=self._collected,
                rejected=Counter(self._rejected),
                refused_records=refused,
                skipped=Counter(self._skipped),
                offences=Counter(self._offences),
                bytes_out=traffic.bytes_out,
                bytes_in=traffic.bytes_in,
                requests_sent=traffic.requests_sent,
                requests_served=traffic.requests_served,
                store_latency=LatencySummary.of(list(self._store_latency_s)),
                get_latency=LatencySummary.of(list(self._get_latency_s)),
                peers_seen=len(self._signers_seen),
                banned_peers=len(self._reputation.banned_peers()),
                refreshed=self._refreshed,
            )
