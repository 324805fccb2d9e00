"""The DHT validator: every peer runs it on every record a peer asks it to store and on every record a peer
returns to its own lookups, so a swarmnode DHT holds nothing but signed frames placed exactly where PROTOCOL.md
§4 puts them (a batch under its shard key, a presence entry under its directory bucket, a beacon under its census
bucket; §5.1). A record's kind is the one its signature verifies under (each kind has its own domain tag), and its
key must be one its content computes for that kind, so no kind can be passed off as another. A peer asked to store
a record sees only the key's hash; `KeyKinds` remembers which kind a key was proven to hold.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator

import msgpack
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils import get_dht_time

from swarmnode.wire.batch import BATCH
from swarmnode.wire.kinds import KINDS
from swarmnode.wire.receive import VerifiedFrames, open_frame
from swarmnode.wire.record import Kind, Signed
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import RolloutBatch
from swarmnode.wire.rules import Slot, SwarmRules

EXPIRY_TOLERANCE_S = 1e-3
BY_SIZE = tuple(sorted(KINDS.values(), key=lambda kind: kind.max_frame_bytes))  # the largest (a batch) last
LARGEST_KIND = BY_SIZE[-1]
KNOWN_KEYS = 65_536  # keys whose kind a peer remembers (a few MB): more than it stores records under
KEY_SETS = 1_024  # records' sets of allowed key ids remembered (about 2 KB each for a beacon)
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


@functools.lru_cache(maxsize=KEY_SETS)
def key_ids(keys: tuple[str, ...]) -> frozenset[bytes]:
    """The ids of the keys a record may be stored under (a beacon's 26): hashed once, not once per replica that
    returns the record or peer that stores it."""
    return frozenset(key_id(key) for key in keys)


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
    kind: Kind | None = None,
    reading: bool = False,
    key_of: KeyOf | None = None,
    verified: VerifiedFrames | None = None,
) -> Signed:
    """Accept a record only as a valid frame stored exactly where PROTOCOL.md §4 puts it, else raise Rejected.
    Its kind is `kind`, or else the one whose domain tag its signature verifies under (a frame that verifies under
    none is judged as a batch): each kind's keys are computed from its content, so no kind passes for another.

    Freshness is judged on the record's expiration, not on windows: a record stays legitimately stored until
    it expires. When `reading` (a peer returned the record to us), the future bound is widened by the clock
    difference hivemind tolerates between two peers, because hivemind drops a peer's whole answer for a key
    if one entry fails: an entry that a peer with a slightly faster clock accepted must not blank the shard.
    """
    candidates = (kind,) if kind is not None else BY_SIZE
    if len(record.value) > candidates[-1].max_frame_bytes + 5:
        raise Rejected(Reason.TOO_LARGE, f"{len(record.value)} bytes")
    frame = unpack_bin(record.value)
    subkey = unpack_str(record.subkey)
    signed = _open_as_its_kind(frame, candidates, rules, subkey, verified)
    kind = signed.kind
    timestamp = kind.timestamp(signed.value)
    if key_of is not None and kind is BATCH:
        expected_keys: tuple[str, ...] = (key_of(signed.value, subkey, rules),)
    else:
        expected_keys = kind.keys(signed.value, subkey, rules)
    if record.subkey != msgpack.packb(signed.signer):
        raise Rejected(Reason.KEY_MISMATCH, "subkey is not in canonical msgpack form")
    if record.key not in key_ids(expected_keys):
        raise Rejected(Reason.KEY_MISMATCH, "stored under another key than the one its content places it under")
    # written as "not <=" so that a NaN expiration (which hivemind would store and never expire) is refused
    expected = kind.expiration(signed.value, rules)
    if not abs(record.expiration_time - expected) <= EXPIRY_TOLERANCE_S:
        raise Rejected(Reason.BAD_EXPIRY, f"expiration {record.expiration_time} is not {expected} (PROTOCOL.md §5.1)")
    if record.expiration_time + rules.clock_skew_s < now:
        raise Rejected(Reason.STALE, "expired")
    if timestamp > now + rules.future_bound(reading):
        raise Rejected(Reason.FUTURE, f"timestamp {timestamp:.1f} is ahead of {now:.1f}")
    return signed


def _open_as_its_kind(
    frame: bytes, kinds: tuple[Kind, ...], rules: SwarmRules, subkey: str, verified: VerifiedFrames | None
) -> Signed:
    """The verdict of the first kind whose signature the frame verifies under, kinds the frame is not too large for
    tried smallest first (a small frame is most likely a presence or a beacon); if none, the largest kind's."""
    last: Rejected | None = None
    for kind in kinds:
        if len(frame) > kind.max_frame_bytes and kind is not kinds[-1]:
            continue
        try:
            return open_frame(frame, kind, rules, slot=Slot(None, None, subkey), verified=verified)
        except Rejected as rejected:
            if rejected.signer is not None:  # signed as this kind: its verdict stands
                raise
            last = rejected
    assert last is not None
    raise last


class KeyKinds:
    """Which kind of record a DHT key id holds, learnt from the records proven to belong there: a frame signed as
    that kind whose content places it under exactly that key (`check_record`). A key id is a hash and tells nothing
    itself; once one record proved it, the storage's caps for the kind (`net/storage.py`) apply to the next record
    offered for the key before its frame is opened. Bounded: the keys proven most recently."""

    def __init__(self, rules: SwarmRules, capacity: int = KNOWN_KEYS) -> None:
        self.rules = rules
        self._capacity = capacity
        self._lock = threading.Lock()
        self._kinds: OrderedDict[bytes, Kind] = OrderedDict()

    def learn(self, key: bytes, kind: Kind) -> None:
        with self._lock:
            self._kinds[key] = kind
            self._kinds.move_to_end(key)
            while len(self._kinds) > self._capacity:
                self._kinds.popitem(last=False)

    def kind_of(self, key: bytes) -> Kind | None:
        with self._lock:
            return self._kinds.get(key)


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
        self.kinds = KeyKinds(rules)
        self.verified = verified if verified is not None else VerifiedFrames()
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()
        self.precheck: Precheck | None = None

    def validate(self, record: DHTRecord) -> bool:
        reading, known = _reading.get(), self.kinds.kind_of(record.key)
        try:
            if self.precheck is not None and not reading and math.isfinite(record.expiration_time):
                if len(record.value) > (known or LARGEST_KIND).max_frame_bytes + 5:
                    raise Rejected(Reason.TOO_LARGE, f"{len(record.value)} bytes")
                key, subkey = DHTID.from_bytes(record.key), unpack_str(record.subkey)
                if self.precheck(key, subkey, len(record.value), record.expiration_time) is not None:
                    return False  # counted by the storage
            signed = check_record(
                record, self.rules, self._clock(), kind=known, reading=reading, key_of=self._key_of,
                verified=self.verified,
            )
        except Rejected as rejected:
            with self._lock:
                self._refused[rejected.reason.value] += 1
            return False
        self.kinds.learn(record.key, signed.kind)  # stored or read: the next record under that key is judged as one
        return True

    def refusals(self) -> Counter[str]:
        with self._lock:
            return Counter(self._refused)
