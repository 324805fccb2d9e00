"""DHT records: where a frame lives in the DHT (PROTOCOL.md §4), the validator every peer runs on it, and
the budget of what a peer stores for others.

A swarmnode DHT holds nothing but signed frames placed exactly where the layout says: rollout batches
under their shard keys, presence entries under their window's directory key (§4.1), beacons under their
signer's census bucket (§4.2). Anything else is refused when a peer asks us to store it and when a peer
returns it to us. Valid frames cost an attacker nothing but fresh keys, so what we hold is bounded in bytes,
a directory or census key in entries, and a signer's beacon to one per window (§5.1).
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from enum import Enum

import msgpack
from hivemind.dht.routing import DHTID, Subkey
from hivemind.dht.storage import DHTLocalStorage, DictionaryDHTValue
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils import get_dht_time
from hivemind.utils.timed_storage import MAX_DHT_TIME_DISCREPANCY_SECONDS, TimedStorage

from swarmnode.wire.beacon import BEACON_BUCKETS, MAX_BEACON_BYTES, SignedBeacon, beacon_bucket, open_beacon
from swarmnode.wire.envelope import (
    MAX_ENVELOPE_BYTES,
    Reason,
    Rejected,
    SignedBatch,
    Slot,
    SwarmRules,
    open_envelope,
    shard_of,
)
from swarmnode.wire.presence import MAX_PRESENCE_BYTES, SignedPresence, open_presence
from swarmnode.wire.rollout import RolloutBatch

KEY_PREFIX = "swarmnode/v1/"
EXPIRY_TOLERANCE_S = 1e-3
# Storage budget (local policy, PROTOCOL.md §5.1). A key stays below hivemind's 4 MiB message limit, or no
# reader could fetch it at all; the total bounds a peer's memory whatever the number of signers.
MAX_KEY_BYTES = 3 * 2**20
MAX_STORED_BYTES = 128 * 2**20
# A directory key holds at most this many entries: a collector reads the whole key each round, so this
# bounds its cost whatever the swarm's size (§4.1). First come, first kept within a window.
MAX_DIRECTORY_ENTRIES = 32
# A census bucket key holds at most this many signers' beacons (a full census reads every bucket).
MAX_BEACONS_PER_BUCKET = 64
RECOUNT_INTERVAL_S = 1.0

# msgpack headers (https://github.com/msgpack/msgpack/blob/master/spec.md): marker -> length bytes.
_BIN_HEADERS = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_STR_HEADERS = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_FIXSTR_MASK, _FIXSTR_TAG = 0xE0, 0xA0

_reading = contextvars.ContextVar("swarmnode_reading_records", default=False)
KeyOf = Callable[[RolloutBatch, str, SwarmRules], str]


def record_key(swarm_id: str, window: int, shard: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/{shard}"


def directory_key(swarm_id: str, window: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/{window}/directory"


def census_key(swarm_id: str, bucket: int) -> str:
    return f"{KEY_PREFIX}{swarm_id}/census/{bucket}"


def key_id(key: str) -> bytes:
    """The 20 bytes hivemind stores a key under: SHA-1 of the msgpack-encoded key string."""
    return DHTID.generate(source=key).to_bytes()


def expiration_of(timestamp: float, rules: SwarmRules) -> float:
    return timestamp + rules.record_ttl_s


def unpack_bin(data: bytes) -> bytes:
    """The payload of a msgpack bin8/16/32 whose length is exactly what the header says."""
    return _unpack(data, _BIN_HEADERS, Reason.MALFORMED, "value")


def unpack_str(data: bytes) -> str:
    """A msgpack str (fixstr or str8/16/32) of exact length, as hivemind encodes a subkey."""
    if data and data[0] & _FIXSTR_MASK == _FIXSTR_TAG:
        length, body = data[0] & ~_FIXSTR_MASK, data[1:]
        if len(body) != length:
            raise Rejected(Reason.KEY_MISMATCH, "subkey length does not match its header")
    else:
        body = _unpack(data, _STR_HEADERS, Reason.KEY_MISMATCH, "subkey")
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise Rejected(Reason.KEY_MISMATCH, "subkey is not UTF-8") from None


def _unpack(data: bytes, headers: dict[int, int], reason: Reason, what: str) -> bytes:
    size_bytes = headers.get(data[0]) if data else None
    if size_bytes is None:
        raise Rejected(reason, f"{what} is not a msgpack {'bin' if reason is Reason.MALFORMED else 'str'}")
    length = int.from_bytes(data[1 : 1 + size_bytes], "big")
    body = data[1 + size_bytes :]
    if len(data) < 1 + size_bytes or len(body) != length:
        raise Rejected(reason, f"{what} length does not match its header")
    return body


class RecordKind(str, Enum):
    """What a record must be, told by the key it is stored under (PROTOCOL.md §4)."""

    BATCH = "batch"
    PRESENCE = "presence"
    BEACON = "beacon"


def shard_key_of(batch: RolloutBatch, signer: str, rules: SwarmRules) -> str:
    """PROTOCOL.md §4: the key a batch belongs under."""
    return record_key(batch.swarm_id, batch.window, shard_of(signer, rules.num_shards))


def check_record(
    record: DHTRecord,
    rules: SwarmRules,
    now: float,
    *,
    reading: bool = False,
    key_of: KeyOf = shard_key_of,
    kind: RecordKind = RecordKind.BATCH,
) -> SignedBatch | SignedPresence | SignedBeacon:
    """Accept a record only as a valid frame of `kind` stored exactly where PROTOCOL.md §4 puts it, else
    raise Rejected. `kind` comes from the key (`KeyKinds`): a directory key holds presence entries, a census
    key beacons, any other key batches under their shard key.

    Freshness is judged on the record's expiration, not on windows: a record stays legitimately stored until
    it expires. When `reading` (a peer returned the record to us), the future bound is widened by the clock
    difference hivemind tolerates between two peers, because hivemind drops a peer's whole answer for a key
    if one entry fails: an entry that a peer with a slightly faster clock accepted must not blank the shard.
    """
    limit = _MAX_FRAME_BYTES[kind]
    if len(record.value) > limit + 5:
        raise Rejected(Reason.TOO_LARGE, f"{len(record.value)} bytes")
    frame = unpack_bin(record.value)
    subkey = unpack_str(record.subkey)
    signed: SignedBatch | SignedPresence | SignedBeacon
    if kind is RecordKind.BATCH:
        signed = open_envelope(frame, rules, slot=Slot(window=None, shard=None, subkey=subkey))
        timestamp, expected_key = signed.batch.timestamp, key_of(signed.batch, subkey, rules)
    elif kind is RecordKind.PRESENCE:
        signed = open_presence(frame, rules, subkey=subkey)
        timestamp = signed.presence.timestamp
        expected_key = directory_key(signed.presence.swarm_id, signed.presence.window)
    else:
        signed = open_beacon(frame, rules, subkey=subkey)
        timestamp = signed.beacon.timestamp
        expected_key = census_key(signed.beacon.swarm_id, beacon_bucket(subkey))
    if record.subkey != msgpack.packb(signed.signer_peer_id):
        raise Rejected(Reason.KEY_MISMATCH, "subkey is not in canonical msgpack form")
    if record.key != key_id(expected_key):
        raise Rejected(Reason.KEY_MISMATCH, "stored under another key than the one its content places it under")
    # written as "not <=" so that a NaN expiration (which hivemind would store and never expire) is refused
    if not abs(record.expiration_time - (timestamp + rules.record_ttl_s)) <= EXPIRY_TOLERANCE_S:
        raise Rejected(
            Reason.BAD_EXPIRY, f"expiration {record.expiration_time} is not timestamp + record_ttl_s"
        )
    if record.expiration_time + rules.clock_skew_s < now:
        raise Rejected(Reason.STALE, "expired")
    # hivemind refuses to bootstrap with a peer whose clock differs from ours by more than this.
    future_slack_s = rules.clock_skew_s + (MAX_DHT_TIME_DISCREPANCY_SECONDS if reading else 0.0)
    if timestamp > now + future_slack_s:
        raise Rejected(Reason.FUTURE, f"timestamp {timestamp:.1f} is ahead of {now:.1f}")
    return signed


_MAX_FRAME_BYTES = {
    RecordKind.BATCH: MAX_ENVELOPE_BYTES,
    RecordKind.PRESENCE: MAX_PRESENCE_BYTES,
    RecordKind.BEACON: MAX_BEACON_BYTES,
}


class KeyKinds:
    """Which kind of record a DHT key id holds: the swarm's census keys, directory keys of windows whose
    entries can still be stored (by expiration), else batches.

    A peer asked to store a record sees only the key's hash; it tells the kinds apart by whether the hash is
    one of these (computed, not learnt from the record), so no kind can be passed off as another.
    """

    def __init__(self, rules: SwarmRules, clock: Callable[[], float] = get_dht_time) -> None:
        self.rules = rules
        self._clock = clock
        self._lock = threading.Lock()
        self._span: tuple[int, int] | None = None
        self._directories: set[bytes] = set()
        self._census = {key_id(census_key(rules.swarm_id, bucket)) for bucket in range(BEACON_BUCKETS)}

    def kind_of(self, key: bytes) -> RecordKind:
        """PROTOCOL.md §5.1: directory windows floor((now - record_ttl_s - clock_skew_s) / window_s) - 1 to current + 1."""
        if key in self._census:
            return RecordKind.BEACON
        now, rules = self._clock(), self.rules
        span = (rules.window_of(now - rules.record_ttl_s - rules.clock_skew_s) - 1, rules.window_of(now) + 1)
        with self._lock:
            if span != self._span:
                self._span = span
                self._directories = {
                    key_id(directory_key(rules.swarm_id, window)) for window in range(span[0], span[1] + 1)
                }
            return RecordKind.PRESENCE if key in self._directories else RecordKind.BATCH
@contextlib.contextmanager
def reading_records() -> Iterator[None]:
    """Mark the records validated inside this block (and tasks it starts) as answers to our own reads."""
    token = _reading.set(True)
    try:
        yield
    finally:
        _reading.reset(token)


class SwarmRecordValidator(RecordValidatorBase):
    """hivemind calls validate() when a peer asks us to store a record and when a peer returns one to us.

    Refusals are counted by reason code in `refused` (thread-safe snapshot via `refusals()`).
    """

    def __init__(
        self, rules: SwarmRules, clock: Callable[[], float] = get_dht_time, key_of: KeyOf = shard_key_of
    ) -> None:
        self.rules = rules
        self._clock = clock
        self._key_of = key_of
        self.kinds = KeyKinds(rules, clock)
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()

    def validate(self, record: DHTRecord) -> bool:
        try:
            check_record(
                record, self.rules, self._clock(), reading=_reading.get(), key_of=self._key_of,
                kind=self.kinds.kind_of(record.key),
            )
        except Rejected as rejected:
            with self._lock:
                self._refused[rejected.reason.value] += 1
            return False
        return True

    def refusals(self) -> Counter[str]:
        with self._lock:
            return Counter(self._refused)


class BoundedRecordStorage(DHTLocalStorage):
    """hivemind's storage with a byte budget per key and in total; hivemind calls `store_subkey` when a peer
    asks us to store a record that our validator accepted.

    hivemind's own storage has no size limit, and a valid record costs nothing but a key pair, so a peer
    making up identities could fill our memory with validly signed frames. A record that would exceed a
    budget is refused (`key_full`, `storage_full`): what is stored stays readable, and what arrives first is
    kept rather than evicted by a flood. Byte counts are kept exact for stores and replacements and
    recounted at most once a second for expirations (which hivemind performs silently), so they never
    under-count. Also avoids two hivemind habits under floods: every store pushes an expiration-heap
    entry, dropped only when it expires (so the heap grows with the store rate), and a refused older record
    re-points the subkey's expiry at itself, deleting the newer one early. A directory key (`kinds` tells
    which keys are) holds at most `max_directory_entries` signers (`directory_full`), a census key
    `max_beacons_per_bucket` (`census_full`), and a signer's beacon is replaced only by one of a later
    window (`beacon_rate`): a beacon costs its replicas one store per signer and window, however often sent.
    """

    def __init__(
        self,
        max_key_bytes: int = MAX_KEY_BYTES,
        max_total_bytes: int = MAX_STORED_BYTES,
        kinds: KeyKinds | None = None,
        max_directory_entries: int = MAX_DIRECTORY_ENTRIES,
        max_beacons_per_bucket: int = MAX_BEACONS_PER_BUCKET,
    ) -> None:
        super().__init__()
        self.max_key_bytes = max_key_bytes
        self.max_total_bytes = max_total_bytes
        self.kinds = kinds
        self.max_entries = {RecordKind.PRESENCE: max_directory_entries, RecordKind.BEACON: max_beacons_per_bucket}
        self._key_bytes: dict[DHTID, int] = {}
        self._total_bytes = 0
        self._counted_at = float("-inf")
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()

    def store(self, key: DHTID, value: bytes, expiration_time: float, subkey: Subkey | None = None) -> bool:
        if subkey is None:  # our validator refuses regular values; should one ever pass, it is not kept
            return self._refuse("not_a_record")
        return self.store_subkey(key, subkey, value, expiration_time)

    def store_subkey(self, key: DHTID, subkey: Subkey, value: bytes, expiration_time: float) -> bool:
        entry = self.get(key)
        records = entry.value if entry is not None and isinstance(entry.value, DictionaryDHTValue) else None
        previous = records.get(subkey) if records is not None else None
        if previous is not None and previous.expiration_time >= expiration_time:
            return False
        kind = self.kinds.kind_of(key.to_bytes()) if self.kinds is not None else RecordKind.BATCH
        if previous is None and records is not None and kind in self.max_entries:
            if len(records) >= self.max_entries[kind]:
                return self._refuse("directory_full" if kind is RecordKind.PRESENCE else "census_full")
        if previous is not None and kind is RecordKind.BEACON and self._same_window(previous.expiration_time, expiration_time):
            return self._refuse("beacon_rate")
        self._recount_if_due()
        growth = len(value) - (len(previous.value) if previous is not None else 0)
        key_bytes = self._key_bytes.get(key, 0)
        if key_bytes + growth > self.max_key_bytes:
            return self._refuse("key_full")
        if self._total_bytes + growth > self.max_total_bytes:
            return self._refuse("storage_full")
        if not super().store_subkey(key, subkey, value, expiration_time):
            return False
        self._key_bytes[key] = key_bytes + growth
        self._total_bytes += growth
        _compact(self)
        entry = self.get(key)
        if entry is not None and isinstance(entry.value, DictionaryDHTValue):
            _compact(entry.value)
        return True

    def _same_window(self, expiration_a: float, expiration_b: float) -> bool:
        """Whether two records of a key signed in the same window (the validator tied expiration to timestamp)."""
        assert self.kinds is not None
        rules = self.kinds.rules
        return rules.window_of(expiration_a - rules.record_ttl_s) == rules.window_of(expiration_b - rules.record_ttl_s)

    @property
    def stored_bytes(self) -> int:
        """Bytes of the values held (an upper bound until the next recount)."""
        return self._total_bytes

    def refusals(self) -> Counter[str]:
        with self._lock:
            return Counter(self._refused)

    def _refuse(self, reason: str) -> bool:
        with self._lock:
            self._refused[reason] += 1
        return False

    def _recount_if_due(self) -> None:
        now = time.monotonic()
        if now - self._counted_at < RECOUNT_INTERVAL_S:
            return
        self._counted_at = now
        self._key_bytes = {
            key: sum(len(record.value) for _, record in entry.value.items())
            for key, entry in self.items()
            if isinstance(entry.value, DictionaryDHTValue)
        }
        self._total_bytes = sum(self._key_bytes.values())


def _compact(storage: TimedStorage) -> None:
    """Drop superseded expiration-heap entries once they outnumber the live ones."""
    if len(storage.expiration_heap) > 2 * len(storage.data) + 64:
        storage.expiration_heap = [entry for key, entry in storage.key_to_heap.items() if key in storage.data]
        heapq.heapify(storage.expiration_heap)
