"""DHT records: where a frame lives in the DHT (PROTOCOL.md §4), the validator every peer runs on it, and
the budget of what a peer stores for others.

A swarmnode DHT holds nothing but signed frames placed exactly where the layout says: rollout batches
under their shard keys, presence entries under their window's directory key (§4.1). Anything else is
refused when a peer asks us to store it and when a peer returns it to us. Valid frames cost an attacker
nothing but fresh keys, so what we hold is bounded in bytes, and a directory key in entries (§5.1).
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import msgpack
from hivemind.dht.routing import DHTID, Subkey
from hivemind.dht.storage import DHTLocalStorage, DictionaryDHTValue
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils import get_dht_time
from hivemind.utils.timed_storage import MAX_DHT_TIME_DISCREPANCY_SECONDS, TimedStorage

from swarmnode.envelope import (
    MAX_ENVELOPE_BYTES,
    Reason,
    Rejected,
    SignedBatch,
    Slot,
    SwarmRules,
    open_envelope,
    shard_of,
)
from swarmnode.presence import MAX_PRESENCE_BYTES, SignedPresence, open_presence
from swarmnode.rollout import RolloutBatch

KEY_PREFIX = "swarmnode/v1/"
EXPIRY_TOLERANCE_S = 1e-3
# Storage budget (local policy, PROTOCOL.md §5.1). A key stays below hivemind's 4 MiB message limit, or no
# reader could fetch it at all; the total bounds a peer's memory whatever the number of signers.
MAX_KEY_BYTES = 3 * 2**20
MAX_STORED_BYTES = 128 * 2**20
# A directory key holds at most this many entries: a collector reads the whole key each round, so this
# bounds its cost whatever the swarm's size (§4.1). First come, first kept within a window.
MAX_DIRECTORY_ENTRIES = 32
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
    directory_window: int | None = None,
) -> SignedBatch | SignedPresence:
    """Accept a record only as a valid frame stored exactly where PROTOCOL.md §4 puts it, else raise Rejected.

    `directory_window` is the window whose directory key the record is stored under (a presence entry),
    None for any other key (then it must be a batch under its shard key).

    Freshness is judged on the record's expiration, not on windows: a record stays legitimately stored until
    it expires. When `reading` (a peer returned the record to us), the future bound is widened by the clock
    difference hivemind tolerates between two peers, because hivemind drops a peer's whole answer for a key
    if one entry fails: an entry that a peer with a slightly faster clock accepted must not blank the shard.
    """
    limit = MAX_ENVELOPE_BYTES if directory_window is None else MAX_PRESENCE_BYTES
    if len(record.value) > limit + 5:
        raise Rejected(Reason.TOO_LARGE, f"{len(record.value)} bytes")
    frame = unpack_bin(record.value)
    subkey = unpack_str(record.subkey)
    signed: SignedBatch | SignedPresence
    if directory_window is None:
        signed = open_envelope(frame, rules, slot=Slot(window=None, shard=None, subkey=subkey))
        timestamp, expected_key = signed.batch.timestamp, key_of(signed.batch, subkey, rules)
    else:
        signed = open_presence(frame, rules, subkey=subkey)
        timestamp = signed.presence.timestamp
        expected_key = directory_key(signed.presence.swarm_id, signed.presence.window)
    if record.subkey != msgpack.packb(signed.signer_peer_id):
        raise Rejected(Reason.KEY_MISMATCH, "subkey is not in canonical msgpack form")
    if record.key != key_id(expected_key):
        raise Rejected(Reason.KEY_MISMATCH, "stored under another key than its window and shard")
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


class DirectoryKeys:
    """Which DHT key ids are directory keys of windows whose entries can still be stored (by expiration).

    A peer asked to store a record sees only the key's hash; it tells a presence entry from a batch by
    whether the hash is one of these (computed, not learnt from the record), so neither kind can be
    passed off as the other.
    """

    def __init__(self, rules: SwarmRules, clock: Callable[[], float] = get_dht_time) -> None:
        self.rules = rules
        self._clock = clock
        self._lock = threading.Lock()
        self._span: tuple[int, int] | None = None
        self._windows: dict[bytes, int] = {}

    def window_of(self, key: bytes) -> int | None:
        """PROTOCOL.md §5.1: windows floor((now - record_ttl_s - clock_skew_s) / window_s) - 1 to current + 1."""
        now, rules = self._clock(), self.rules
        span = (rules.window_of(now - rules.record_ttl_s - rules.clock_skew_s) - 1, rules.window_of(now) + 1)
        with self._lock:
            if span != self._span:
                self._span = span
                self._windows = {
                    key_id(directory_key(rules.swarm_id, window)): window for window in range(span[0], span[1] + 1)
                }
            return self._windows.get(key)
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
        self.directory = DirectoryKeys(rules, clock)
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()

    def validate(self, record: DHTRecord) -> bool:
        try:
            check_record(
                record, self.rules, self._clock(), reading=_reading.get(), key_of=self._key_of,
                directory_window=self.directory.window_of(record.key),
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
    re-points the subkey's expiry at itself, deleting the newer one early. A directory key (`directory`
    tells which keys are) holds at most `max_directory_entries` signers (`directory_full`).
    """

    def __init__(
        self,
        max_key_bytes: int = MAX_KEY_BYTES,
        max_total_bytes: int = MAX_STORED_BYTES,
        directory: DirectoryKeys | None = None,
        max_directory_entries: int = MAX_DIRECTORY_ENTRIES,
    ) -> None:
        super().__init__()
        self.max_key_bytes = max_key_bytes
        self.max_total_bytes = max_total_bytes
        self.directory = directory
        self.max_directory_entries = max_directory_entries
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
        if previous is None and records is not None and self._is_directory(key):
            if len(records) >= self.max_directory_entries:
                return self._refuse("directory_full")
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

    def _is_directory(self, key: DHTID) -> bool:
        return self.directory is not None and self.directory.window_of(key.to_bytes()) is not None

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
