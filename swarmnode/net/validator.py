"""The DHT validator: every peer runs it on every record a peer asks it to store and on every record a peer
returns to its own lookups, so a swarmnode DHT holds nothing but signed frames placed exactly where PROTOCOL.md
§4 puts them (a batch under its shard key, a presence entry under its window's directory, a beacon under its
signer's census bucket; §5.1). A peer asked to store a record sees only the key's hash: `KeyKinds` tells from
the hash which kind the key holds, so no kind can be passed off as another.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import msgpack
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils import get_dht_time

from swarmnode.wire.batch import BATCH
from swarmnode.wire.beacon import BEACON
from swarmnode.wire.keys import TIER_MAX, census_key, directory_key
from swarmnode.wire.presence import PRESENCE
from swarmnode.wire.receive import VerifiedFrames, open_frame
from swarmnode.wire.record import Kind, Signed
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import RolloutBatch
from swarmnode.wire.rules import Slot, SwarmRules

EXPIRY_TOLERANCE_S = 1e-3
# msgpack headers (https://github.com/msgpack/msgpack/blob/master/spec.md): marker -> length bytes.
_BIN_HEADERS = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_STR_HEADERS = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_FIXSTR_MASK, _FIXSTR_TAG = 0xE0, 0xA0

_reading = contextvars.ContextVar("swarmnode_reading_records", default=False)
KeyOf = Callable[[RolloutBatch, str, SwarmRules], str]  # where a batch belongs; benchmarks try other layouts
# (key, subkey, value bytes, expiration) -> why the storage would refuse it, or None: asked before a frame is opened
Precheck = Callable[[DHTID, str, int, float], "str | None"]


def key_id(key: str) -> bytes:
    """The 20 bytes hivemind stores a key under: SHA-1 of the msgpack-encoded key string."""
    return DHTID.generate(source=key).to_bytes()


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


def check_record(
    record: DHTRecord,
    rules: SwarmRules,
    now: float,
    *,
    kind: Kind = BATCH,
    reading: bool = False,
    key_of: KeyOf | None = None,
    verified: VerifiedFrames | None = None,
) -> Signed:
    """Accept a record only as a valid frame of `kind` stored exactly where PROTOCOL.md §4 puts it, else
    raise Rejected. `kind` comes from the key (`KeyKinds`).

    Freshness is judged on the record's expiration, not on windows: a record stays legitimately stored until
    it expires. When `reading` (a peer returned the record to us), the future bound is widened by the clock
    difference hivemind tolerates between two peers, because hivemind drops a peer's whole answer for a key
    if one entry fails: an entry that a peer with a slightly faster clock accepted must not blank the shard.
    """
    if len(record.value) > kind.max_frame_bytes + 5:
        raise Rejected(Reason.TOO_LARGE, f"{len(record.value)} bytes")
    frame = unpack_bin(record.value)
    subkey = unpack_str(record.subkey)
    signed = open_frame(frame, kind, rules, slot=Slot(None, None, subkey), verified=verified)
    timestamp = kind.timestamp(signed.value)
    if key_of is not None and kind is BATCH:
        expected_keys: tuple[str, ...] = (key_of(signed.value, subkey, rules),)
    else:
        expected_keys = kind.keys(signed.value, subkey, rules)
    if record.subkey != msgpack.packb(signed.signer):
        raise Rejected(Reason.KEY_MISMATCH, "subkey is not in canonical msgpack form")
    if record.key not in {key_id(key) for key in expected_keys}:
        raise Rejected(Reason.KEY_MISMATCH, "stored under another key than the one its content places it under")
    # written as "not <=" so that a NaN expiration (which hivemind would store and never expire) is refused
    if not abs(record.expiration_time - rules.expiration_of(timestamp)) <= EXPIRY_TOLERANCE_S:
        raise Rejected(
            Reason.BAD_EXPIRY, f"expiration {record.expiration_time} is not timestamp + record_ttl_s"
        )
    if record.expiration_time + rules.clock_skew_s < now:
        raise Rejected(Reason.STALE, "expired")
    if timestamp > now + rules.future_bound(reading):
        raise Rejected(Reason.FUTURE, f"timestamp {timestamp:.1f} is ahead of {now:.1f}")
    return signed


class KeyKinds:
    """Which kind of record a DHT key id holds: census and directory keys (every tier's) of windows whose entries
    can still be stored (by expiration), else batches.

    A peer asked to store a record sees only the key's hash; it tells the kinds apart by whether the hash is
    one of these (computed, not learnt from the record), so no kind can be passed off as another.
    """

    def __init__(self, rules: SwarmRules, clock: Callable[[], float] = get_dht_time) -> None:
        self.rules = rules
        self._clock = clock
        self._lock = threading.Lock()
        self._span: tuple[int, int] | None = None
        # every window of the span, held here whatever their number: the process-wide cache below holds 16, and
        # a span longer than that (record_ttl_s over ~12 windows) would otherwise recompute each window on each call
        self._windows: list[dict[bytes, Kind]] = []

    def kind_of(self, key: bytes) -> Kind:
        """PROTOCOL.md §5.1: windows floor((now - record_ttl_s - clock_skew_s) / window_s) - 1 to current + 2
        (a beacon is stored under the next window's census keys too)."""
        now, rules = self._clock(), self.rules
        span = (rules.window_of(now - rules.record_ttl_s - rules.clock_skew_s) - 1, rules.window_of(now) + 2)
        with self._lock:
            if span != self._span:
                held = dict(zip(range(self._span[0], self._span[1] + 1), self._windows)) if self._span else {}
                self._windows = [
                    held[window] if window in held else _window_key_kinds(rules.swarm_id, window)
                    for window in range(span[0], span[1] + 1)
                ]
                self._span = span
            windows = self._windows
        for kinds in windows:
            kind = kinds.get(key)
            if kind is not None:
                return kind
        return BATCH


@functools.lru_cache(maxsize=16)
def _window_key_kinds(swarm_id: str | None, window: int) -> dict[bytes, Kind]:
    """The directory and census keys of one window, every tier's (16,382 hashes, about 40 ms): shared by all the
    validators of a process, computed once a window."""
    kinds: dict[bytes, Kind] = {}
    for tier in range(TIER_MAX + 1):
        for bucket in range(2**tier):
            kinds[key_id(directory_key(swarm_id, window, tier, bucket))] = PRESENCE
            kinds[key_id(census_key(swarm_id, window, tier, bucket))] = BEACON
    return kinds


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

    Refusals are counted by reason code (thread-safe snapshot via `refusals()`). What a frame's bytes proved is
    remembered in `verified`, which the node's readers share: a frame our lookup returned is opened once. A record
    offered for storage is first put to `precheck` (the storage's refusals that need no signature: key full, older
    than stored, directory full...), so a flood of frames that would be refused anyway costs no verification.
    """

    def __init__(
        self,
        rules: SwarmRules,
        clock: Callable[[], float] = get_dht_time,
        key_of: KeyOf | None = None,
        verified: VerifiedFrames | None = None,
    ) -> None:
        self.rules = rules
        self._clock = clock
        self._key_of = key_of
        self.kinds = KeyKinds(rules, clock)
        self.verified = verified if verified is not None else VerifiedFrames()
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()
        self.precheck: Precheck | None = None

    def validate(self, record: DHTRecord) -> bool:
        kind, reading = self.kinds.kind_of(record.key), _reading.get()
        try:
            if self.precheck is not None and not reading and math.isfinite(record.expiration_time):
                if len(record.value) > kind.max_frame_bytes + 5:
                    raise Rejected(Reason.TOO_LARGE, f"{len(record.value)} bytes")
                key, subkey = DHTID.from_bytes(record.key), unpack_str(record.subkey)
                if self.precheck(key, subkey, len(record.value), record.expiration_time) is not None:
                    return False  # counted by the storage
            check_record(
                record, self.rules, self._clock(), kind=kind, reading=reading, key_of=self._key_of, verified=self.verified
            )
        except Rejected as rejected:
            with self._lock:
                self._refused[rejected.reason.value] += 1
            return False
        return True

    def refusals(self) -> Counter[str]:
        with self._lock:
            return Counter(self._refused)
