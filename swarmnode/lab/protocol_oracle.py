"""A second implementation of PROTOCOL.md's receiving checks (§2-§5.1), written from the text alone.

It shares no code with swarmnode (envelope, presence, record, tasks, intake): its own protobuf wire reader
(canonical form checked field by field instead of by re-encoding), its own strict-signature rules, limits,
DHT placement, address rule, config hash and verifier score (reasoning-gym is the protocol's generator, so
it is used directly). The fuzzer uses it as the judge of what must be accepted; tests run it over the
committed vectors: `judge_frame` for batches (§5, checks 14-15 when the context names a suite),
`judge_presence` for directory entries (§4.1), `judge_beacon` for census beacons (§4.2), `judge_record` for a
record a peer asks to store (§5.1, any of the three kinds); `slot_of` reads the slots the vectors name (§5,
`swarmnode protocol check --slot`) and `context_of` a vector's receiver.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import struct

import base58
import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ACCEPT = "accept"

# PROTOCOL.md §3, restated.
LIMITS = {
    "envelope_bytes": 1_048_576, "rollouts": 64, "completions": 32, "completion_bytes": 16_384,
    "token_logprobs": 4_096, "swarm_id_bytes": 64, "model_id_bytes": 200, "suite_version_bytes": 64,
    "family_bytes": 64,
    # §4.1, P1 and P6
    "presence_bytes": 1_024, "addresses": 4, "address_bytes": 64,
    # §4.2, B1 and B6 (swarm_id and model_id as above)
    "beacon_bytes": 1_024, "software_bytes": 64, "phase_bytes": 16,
}
DOMAIN = b"swarmnode/envelope\x00"
PRESENCE_DOMAIN = b"swarmnode/presence\x00"  # §4.1
BEACON_DOMAIN = b"swarmnode/beacon\x00"  # §4.2
# §4: the protocol version is in every key's prefix
KEY_PREFIX = "swarmnode/v3/"
# §4.1, §4.2: directory and census keys of tiers 0..TIER_MAX, 2^tier buckets each; bucket = shard(signer) with
# 2^tier shards
TIER_MAX = 12
BEACON_MAX_UPTIME_S = 100 * 365 * 86_400  # §4.2, B7
BEACON_MAX_RATE = 1e7
# §4.2 "showable": no code point in these ranges
NOT_SHOWABLE = (  # §4.2, closed ranges of code points
    (0x0, 0x1F), (0x7F, 0xA0), (0xAD, 0xAD), (0x61C, 0x61C), (0x115F, 0x1160), (0x1680, 0x1680), (0x180E, 0x180E),
    (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x206F), (0x3000, 0x3000), (0x3164, 0x3164), (0xD800, 0xDFFF),
    (0xE000, 0xF8FF), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB), (0xE0000, 0xE007F), (0xF0000, 0x10FFFF),
)
REACHABILITY = (0, 1, 2)  # UNKNOWN, PUBLIC, PRIVATE (swarmnode.proto)

# §2.2, strict Ed25519.
FIELD_P = 2**255 - 19
GROUP_L = 2**252 + 27742317777372353535851937790883648493
SMALL_ORDER_HEX = (  # §2.2's list, sign bit cleared
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)
CLAIM_TOLERANCE = 1e-3  # check 15

# Wire types (protobuf encoding spec).
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class Refusal(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclasses.dataclass(frozen=True)
class Field:
    number: int
    kind: str  # uint32, uint64, enum, double, float, string, bytes, message, packed_float
    repeated: bool = False
    explicit_presence: bool = False
    message: str | None = None


SCHEMA: dict[str, tuple[Field, ...]] = {
    "Envelope": (Field(1, "uint32"), Field(2, "bytes"), Field(3, "bytes"), Field(4, "bytes")),
    "TaskRef": (Field(1, "string"), Field(2, "string"), Field(3, "uint64"), Field(4, "uint64")),
    "Completion": (Field(1, "string"), Field(2, "float", explicit_presence=True), Field(3, "packed_float", repeated=True)),
    "Rollout": (Field(1, "message", message="TaskRef"), Field(2, "message", repeated=True, message="Completion")),
    "RolloutBatch": (
        Field(1, "string"), Field(2, "uint64"), Field(3, "uint64"), Field(4, "double"), Field(5, "string"),
        Field(6, "string"), Field(7, "message", repeated=True, message="Rollout"),
    ),
    # swarm_id, window, timestamp, reachability (enum Reachability), addresses
    "Presence": (
        Field(1, "string"), Field(2, "uint64"), Field(3, "double"), Field(4, "enum"), Field(5, "string", repeated=True),
    ),
    # swarm_id, window, timestamp, software, model_id, round, reward (optional), held_out (optional), held_out_round,
    # rollouts_shared, rollouts_received, peer_groups_trained, reachability, uptime_s, rounds_per_hour,
    # rollouts_per_hour, phase
    "Beacon": (
        Field(1, "string"), Field(2, "uint64"), Field(3, "double"), Field(4, "string"), Field(5, "string"),
        Field(6, "uint64"), Field(7, "float", explicit_presence=True), Field(8, "float", explicit_presence=True),
        Field(9, "uint64"), Field(10, "uint64"), Field(11, "uint64"), Field(12, "uint64"), Field(13, "enum"),
        Field(14, "double"), Field(15, "float"), Field(16, "float"), Field(17, "string"),
    ),
}
WIRE_TYPE = {"uint32": VARINT, "uint64": VARINT, "enum": VARINT, "double": I64, "float": I32}
# Fields that may occur once per element (not packed): one record per message or string.
ONE_RECORD_PER_ELEMENT = ("message", "string")


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A canonical (shortest-form) varint of at most 64 bits."""
    value, shift, start = 0, 0, pos
    while True:
        if pos >= len(data) or pos - start == 10:
            raise Refusal("malformed")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if value >= 1 << 64 or (pos - start > 1 and data[pos - 1] == 0):
        raise Refusal("malformed")
    return value, pos


def parse(data: bytes, message: str) -> dict:
    """Decode `message` from `data`, refusing anything that is not its canonical encoding (§2.1)."""
    fields = {f.number: f for f in SCHEMA[message]}
    out: dict = {}
    pos, last = 0, 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        spec = fields.get(number)
        per_element = spec is not None and spec.repeated and spec.kind in ONE_RECORD_PER_ELEMENT
        if spec is None or number < last or (number == last and not per_element):
            raise Refusal("malformed")  # unknown field, out of order, a non-repeated field twice, a split packed list
        last = number
        expected = WIRE_TYPE.get(spec.kind, LEN)
        if wire != expected:
            raise Refusal("malformed")
        if wire == VARINT:
            value, pos = read_varint(data, pos)
            if value == 0 or (spec.kind == "uint32" and value >= 1 << 32):
                raise Refusal("malformed")
            if spec.kind == "enum":
                # a protobuf enum is an int32, and a negative int32 is written sign-extended to 64 bits: other
                # varints are the encoding of no enum value at all
                if 1 << 31 <= value < (1 << 64) - (1 << 31):
                    raise Refusal("malformed")
                value = value - (1 << 64) if value >= 1 << 63 else value
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            raw = data[pos : pos + size]
            if len(raw) != size or (raw == bytes(size) and not spec.explicit_presence):
                raise Refusal("malformed")  # +0.0 is the default; -0.0 has other bits and is written
            value = struct.unpack("<d" if size == 8 else "<f", raw)[0]
            pos += size
        else:
            length, pos = read_varint(data, pos)
            body = data[pos : pos + length]
            if len(body) != length:
                raise Refusal("malformed")
            pos += length
            value = _length_delimited(spec, body)
        if per_element:
            out.setdefault(number, []).append(value)
        else:
            out[number] = value
    return out


def _length_delimited(spec: Field, body: bytes):
    if spec.kind == "message":
        return parse(body, spec.message)
    if not body and spec.kind != "message" and not (spec.repeated and spec.kind == "string"):
        raise Refusal("malformed")  # empty strings, bytes and packed lists are omitted; a list's "" element is not
    if spec.kind == "string":
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal("malformed") from None
    if spec.kind == "packed_float":
        if len(body) % 4:
            raise Refusal("malformed")
        return list(struct.unpack(f"<{len(body) // 4}f", body))
    return body


@dataclasses.dataclass(frozen=True)
class Context:
    """The receiver's swarm rules and clock, and where the frame was read from (if from the DHT)."""

    swarm_id: str | None = None
    window_s: float = 30.0
    num_shards: int = 16
    max_age_windows: int = 1
    clock_skew_s: float = 5.0
    record_ttl_s: float = 60.0
    now: float | None = None
    # (window, shard, subkey) for a batch; (window, bucket, subkey, tier) for a presence or a beacon (a 3-tuple
    # there: tier 0); `slot_of` reads one from its text
    slot: tuple | None = None
    # the receiver's task families for checks 14-15: (family, config_hash) -> (config, dataset size)
    suite: dict[tuple[str, str], tuple[dict, int]] | None = None
    # §4: windows an epoch lasts; directory and census keys are named by an epoch's first window
    epoch_windows: int = 1


def context_of(rules: dict, case: dict, suite: dict[tuple[str, str], tuple[dict, int]] | None = None) -> Context:
    """The receiver of a vector (`protocol/vectors/manifest.json`): the manifest's `rules`, of which a case may name
    its own `epoch_windows`, and the case's swarm, clock and slot."""
    return Context(
        case.get("swarm"), rules["window_s"], rules["num_shards"], rules["max_age_windows"], rules["clock_skew_s"],
        now=case.get("now"), slot=slot_of(case["slot"]) if "slot" in case else None, suite=suite,
        epoch_windows=case.get("epoch_windows", rules["epoch_windows"]),
    )


def epoch_start(window: int, epoch_windows: int) -> int:
    """§4: the first window of `window`'s epoch."""
    return window - window % epoch_windows


def epoch_stale(window: int, c: Context) -> bool:
    """P9, B9: a presence or beacon is live in its epoch and the next; `c.now` required."""
    now_epoch = math.floor(c.now / c.window_s) // c.epoch_windows
    return window // c.epoch_windows < now_epoch - 1


def epoch_expiration(timestamp: float, c: Context) -> float:
    """§4.1, §4.2: when a presence or a beacon expires (record_ttl_s alone when an epoch is one window)."""
    return timestamp + c.record_ttl_s + 2 * (c.epoch_windows - 1) * c.window_s


def config_hash(family: str, config: dict, size: int, generator: str) -> str:
    """§2.4: SHA-256 of the canonical JSON, first 8 bytes in lowercase hex."""
    canonical = json.dumps(
        {"config": config, "family": family, "generator": generator, "size": size},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def peer_id(public_key: bytes) -> str:
    return base58.b58encode(b"\x00\x24\x08\x01\x12\x20" + public_key).decode()


def shard(peer: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.sha256(peer.encode()).digest()[:8], "big") % num_shards


def bucket(peer: str, tier: int) -> int:
    """§4.1: the signer's bucket among the 2^tier of a tier."""
    return shard(peer, 2**tier)


def slot_of(text: str) -> tuple:
    """A slot as §5 writes it: WINDOW/SHARD/SUBKEY (a batch's shard key), WINDOW/directory/TIER/BUCKET/SUBKEY (a
    presence) or WINDOW/census/TIER/BUCKET/SUBKEY (a beacon), as (window, shard, subkey) or (window, bucket,
    subkey, tier); ValueError for any other text (a peer id never holds a slash, but a subkey is taken whole)."""
    window, place, rest = text.split("/", 2)
    if place in ("directory", "census"):
        tier, number, subkey = rest.split("/", 2)
        if not (_number(tier) <= TIER_MAX and _number(number) < 2 ** int(tier) and subkey):
            raise ValueError(f"not a {place} slot: {text}")
        return (_number(window), int(number), subkey, int(tier))
    return (_number(window), _number(place), rest)


def _number(text: str) -> int:
    """§4's `decimal`: base 10 in ASCII digits, no sign, no leading zero."""
    if not (text and all("0" <= c <= "9" for c in text) and (text == "0" or text[0] != "0")):
        raise ValueError(f"not a decimal: {text!r}")
    return int(text)


def _bucket_check(signer_id: str, slot: tuple | None) -> None:
    """P4 and B4 of §4.1-4.2: the key's bucket, at the key's tier, is the signer's."""
    if slot is None or slot[1] is None:
        return
    tier = slot[3] if len(slot) > 3 else 0
    if not 0 <= tier <= TIER_MAX or slot[1] != bucket(signer_id, tier):
        raise Refusal("key_mismatch")


def judge_frame(frame: bytes, context: Context = Context()) -> str:
    """'accept' or the rejection code of §5 (checks 1-12, and 14-15 with a suite; replay needs state and
    is not judged here)."""
    try:
        _frame_checks(frame, context)
    except Refusal as refusal:
        return refusal.code
    return ACCEPT


def _envelope_checks(frame: bytes, c: Context, max_bytes: int, domain: bytes) -> tuple[str, bytes]:
    """Checks 1-5 of §5 (P1-P4 of §4.1): the signer's peer id and the payload it signed under `domain`."""
    if len(frame) > max_bytes:
        raise Refusal("too_large")
    envelope = parse(frame, "Envelope")
    signer, payload, signature = envelope.get(2, b""), envelope.get(3, b""), envelope.get(4, b"")
    if len(signer) != 32 or len(signature) != 64:
        raise Refusal("malformed")
    version = envelope.get(1, 0)
    if version != 1:
        raise Refusal("bad_version")
    if not strict_signature_ok(signer, signature, domain + version.to_bytes(4, "big") + payload):
        raise Refusal("bad_signature")
    signer_id = peer_id(signer)
    if c.slot is not None and c.slot[2] != signer_id:
        raise Refusal("key_mismatch")
    return signer_id, payload


def strict_signature_ok(key: bytes, signature: bytes, message: bytes) -> bool:
    """§2.2: S < L; A and R canonical (y < p) and not of small order; then RFC 8032 verification."""
    r, s = signature[:32], signature[32:]
    if int.from_bytes(s, "little") >= GROUP_L:
        return False
    for point in (key, r):
        if int.from_bytes(point, "little") % 2**255 >= FIELD_P:
            return False
        if (point[:31] + bytes([point[31] & 0x7F])).hex() in SMALL_ORDER_HEX:
            return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _rollout_checks(rollout: dict, suite: dict[tuple[str, str], tuple[dict, int]]) -> None:
    """Checks 14-15 for one rollout (its fields already passed checks 7-8)."""
    import reasoning_gym

    task = rollout.get(1, {})
    family, digest, seed, index = task.get(1, ""), task.get(2, ""), task.get(3, 0), task.get(4, 0)
    known = suite.get((family, digest))
    if known is None or index >= known[1]:
        raise Refusal("unknown_task")
    config, size = known
    try:
        dataset = reasoning_gym.create_dataset(family, size=size, seed=seed, **config)
        entry = dataset[index]
    except Exception:
        raise Refusal("task_error") from None
    for completion in rollout.get(2, []):
        if 2 not in completion:  # no claim
            continue
        match = re.search(r"<answer>(.*?)</answer>", completion.get(1, ""), re.DOTALL)
        score = 0.0
        if match is not None:
            try:
                score = float(dataset.score_answer(answer=match.group(1).strip(), entry=entry))
            except Exception:
                score = 0.0
            if not 0.0 <= score <= 1.0:
                score = 0.0
        if abs(completion[2] - score) > CLAIM_TOLERANCE:
            raise Refusal("reward_mismatch")


def _frame_checks(frame: bytes, c: Context) -> dict:
    signer_id, payload = _envelope_checks(frame, c, LIMITS["envelope_bytes"], DOMAIN)
    batch = parse(payload, "RolloutBatch")
    rollouts = batch.get(7, [])
    _limits(batch, rollouts)
    _values(batch, rollouts)
    timestamp = batch.get(4, 0.0)
    window = batch.get(2, 0)
    if c.swarm_id is not None:
        if batch.get(1, "") != c.swarm_id:
            raise Refusal("wrong_swarm")
        if math.floor(timestamp / c.window_s) != window:
            raise Refusal("bad_value")
        if c.slot is not None and (
            c.slot[0] not in (None, window) or c.slot[1] not in (None, shard(signer_id, c.num_shards))
        ):
            raise Refusal("key_mismatch")
        if c.now is not None and window < math.floor(c.now / c.window_s) - c.max_age_windows:
            raise Refusal("stale")
    if c.now is not None and timestamp > c.now + c.clock_skew_s:  # check 12 needs no swarm, only a clock
        raise Refusal("future")
    if c.suite is not None:
        for rollout in rollouts:
            _rollout_checks(rollout, c.suite)
    return {"signer": signer_id, "batch": batch}


def _limits(batch: dict, rollouts: list[dict]) -> None:
    def over(text: str, limit: str) -> bool:
        return len(text.encode()) > LIMITS[limit]

    if over(batch.get(1, ""), "swarm_id_bytes") or over(batch.get(5, ""), "model_id_bytes"):
        raise Refusal("limit_exceeded")
    if over(batch.get(6, ""), "suite_version_bytes") or len(rollouts) > LIMITS["rollouts"]:
        raise Refusal("limit_exceeded")
    for rollout in rollouts:
        completions = rollout.get(2, [])
        if over(rollout.get(1, {}).get(1, ""), "family_bytes") or len(completions) > LIMITS["completions"]:
            raise Refusal("limit_exceeded")
        for completion in completions:
            if over(completion.get(1, ""), "completion_bytes") or len(completion.get(3, [])) > LIMITS["token_logprobs"]:
                raise Refusal("limit_exceeded")


def _values(batch: dict, rollouts: list[dict]) -> None:
    timestamp = batch.get(4, 0.0)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", batch.get(1, "")) or not batch.get(5, ""):
        raise Refusal("bad_value")
    if not (math.isfinite(timestamp) and timestamp > 0) or not rollouts:
        raise Refusal("bad_value")
    for rollout in rollouts:
        task = rollout.get(1, {})
        if not re.fullmatch(r"[a-z0-9_]+", task.get(1, "")) or not re.fullmatch(r"[0-9a-f]{16}", task.get(2, "")):
            raise Refusal("bad_value")
        if task.get(3, 0) >= 2**63 or task.get(4, 0) >= 2**31 or not rollout.get(2):
            raise Refusal("bad_value")
        for completion in rollout[2]:
            reward = completion.get(2, 0.0)
            if not 0.0 <= reward <= 1.0 or not all(-1000.0 <= v <= 0.0 for v in completion.get(3, [])):
                raise Refusal("bad_value")


def judge_presence(frame: bytes, context: Context = Context()) -> str:
    """'accept' or the rejection code of §4.1 (P1-P9) for a directory entry; of `context.slot` the subkey and
    the bucket at the slot's tier (P4) and the window (P8) are used. Whatever `context.max_age_windows`, an entry
    is stale once its epoch is two epochs behind (P9)."""
    try:
        _presence_checks(frame, context)
    except Refusal as refusal:
        return refusal.code
    return ACCEPT


def _presence_checks(frame: bytes, c: Context) -> dict:
    signer_id, payload = _envelope_checks(frame, c, LIMITS["presence_bytes"], PRESENCE_DOMAIN)  # P1-P4: the subkey
    _bucket_check(signer_id, c.slot)  # P4: the bucket
    presence = parse(payload, "Presence")  # P5
    swarm_id, window, timestamp = presence.get(1, ""), presence.get(2, 0), presence.get(3, 0.0)
    reachability, addresses = presence.get(4, 0), presence.get(5, [])
    if (
        len(swarm_id.encode()) > LIMITS["swarm_id_bytes"]
        or len(addresses) > LIMITS["addresses"]
        or any(len(address.encode()) > LIMITS["address_bytes"] for address in addresses)
    ):
        raise Refusal("limit_exceeded")  # P6
    if (
        not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", swarm_id)
        or not (math.isfinite(timestamp) and timestamp > 0)
        or reachability not in REACHABILITY
        or not all(tcp_address_ok(address) for address in addresses)
        or (addresses and reachability != 1)  # only PUBLIC lists addresses
        or len(set(addresses)) != len(addresses)
    ):
        raise Refusal("bad_value")  # P7
    if c.swarm_id is not None:
        if swarm_id != c.swarm_id:
            raise Refusal("wrong_swarm")  # P8
        if math.floor(timestamp / c.window_s) != window:
            raise Refusal("bad_value")
        if c.slot is not None and c.slot[0] not in (None, epoch_start(window, c.epoch_windows)):
            raise Refusal("key_mismatch")  # P8: the directory of its epoch
        if c.now is not None and epoch_stale(window, c):  # P9: whatever max_age_windows
            raise Refusal("stale")
    if c.now is not None and timestamp > c.now + c.clock_skew_s:
        raise Refusal("future")
    return {"signer": signer_id, "presence": presence}


def judge_beacon(frame: bytes, context: Context = Context()) -> str:
    """'accept' or the rejection code of §4.2 (B1-B9) for a census beacon; of `context.slot` the subkey and the
    bucket at the slot's tier (B4) and the window (B8) are used. Whatever `context.max_age_windows`, a beacon is stale
    once its epoch is two epochs behind (B9): after one window when an epoch is one window."""
    try:
        _beacon_checks(frame, context)
    except Refusal as refusal:
        return refusal.code
    return ACCEPT


def _beacon_checks(frame: bytes, c: Context) -> dict:
    signer_id, payload = _envelope_checks(frame, c, LIMITS["beacon_bytes"], BEACON_DOMAIN)  # B1-B4: the subkey
    _bucket_check(signer_id, c.slot)  # B4: the bucket
    beacon = parse(payload, "Beacon")  # B5
    swarm_id, window, timestamp = beacon.get(1, ""), beacon.get(2, 0), beacon.get(3, 0.0)
    software, model_id, phase = beacon.get(4, ""), beacon.get(5, ""), beacon.get(17, "")
    for text, limit in ((swarm_id, "swarm_id_bytes"), (software, "software_bytes"), (model_id, "model_id_bytes"),
                        (phase, "phase_bytes")):
        if len(text.encode()) > LIMITS[limit]:
            raise Refusal("limit_exceeded")  # B6
    in_range = [0.0 <= beacon[number] <= 1.0 for number in (7, 8) if number in beacon]  # reward, held_out
    in_range.append(0.0 <= beacon.get(14, 0.0) <= BEACON_MAX_UPTIME_S)
    in_range += [0.0 <= beacon.get(number, 0.0) <= BEACON_MAX_RATE for number in (15, 16)]
    if (
        not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", swarm_id)
        or not (math.isfinite(timestamp) and timestamp > 0)
        or not (showable(software) and showable(model_id))
        or not re.fullmatch(r"[a-z_]*", phase)
        or beacon.get(13, 0) not in REACHABILITY
        or not all(in_range)  # comparisons with NaN are false: NaN is out of every range
    ):
        raise Refusal("bad_value")  # B7
    if c.swarm_id is not None:
        if swarm_id != c.swarm_id:
            raise Refusal("wrong_swarm")  # B8
        if math.floor(timestamp / c.window_s) != window:
            raise Refusal("bad_value")
        first = epoch_start(window, c.epoch_windows)
        if c.slot is not None and c.slot[0] not in (None, first, first + c.epoch_windows):
            raise Refusal("key_mismatch")  # B8: a beacon is stored under its epoch's and the next epoch's keys
        if c.now is not None and epoch_stale(window, c):  # B9: of the current or the previous epoch
            raise Refusal("stale")
    if c.now is not None and timestamp > c.now + c.clock_skew_s:
        raise Refusal("future")
    return {"signer": signer_id, "beacon": beacon}


def showable(text: str) -> bool:
    """§4.2: no code point in the listed ranges."""
    return all(not any(low <= ord(char) <= high for low, high in NOT_SHOWABLE) for char in text)


def tcp_address_ok(text: str) -> bool:
    """§4.1: /ip4/A.B.C.D/tcp/PORT or /ip6/ADDR/tcp/PORT, the address in its canonical text form (IPv4:
    dotted decimal without leading zeros; IPv6: RFC 5952 section 4), PORT in 1-65535 in decimal without
    leading zeros, nothing after it."""
    parts = text.split("/")
    if len(parts) != 5 or parts[0] != "" or parts[3] != "tcp":
        return False
    _, kind, host, _, port = parts
    if not re.fullmatch(r"[1-9][0-9]{0,4}", port) or int(port) > 65_535:
        return False
    if kind == "ip4":
        octets = host.split(".")
        return len(octets) == 4 and all(re.fullmatch(r"0|[1-9][0-9]{0,2}", o) and int(o) <= 255 for o in octets)
    if kind == "ip6":
        groups = _ip6_groups(host)
        return groups is not None and _rfc5952(groups) == host
    return False


def _ip6_groups(text: str) -> list[int] | None:
    """The eight 16-bit groups of an IPv6 address written in hexadecimal groups (with at most one "::")."""
    if not re.fullmatch(r"[0-9a-fA-F:]+", text) or text.count("::") > 1:
        return None
    if "::" in text:
        head, tail = text.split("::")
        left, right = (head.split(":") if head else []), (tail.split(":") if tail else [])
        if len(left) + len(right) > 7:
            return None
        written = [*left, *["0"] * (8 - len(left) - len(right)), *right]
    else:
        written = text.split(":")
    if len(written) != 8 or not all(1 <= len(group) <= 4 for group in written):
        return None
    return [int(group, 16) for group in written]


def _rfc5952(groups: list[int]) -> str:
    """RFC 5952 section 4: lowercase hex without leading zeros; the longest run of two or more zero groups
    (the first of equally long ones) written as "::"."""
    best_start, best_length, i = 0, 0, 0
    while i < 8:
        if groups[i] == 0:
            j = i
            while j < 8 and groups[j] == 0:
                j += 1
            if j - i > best_length:
                best_start, best_length = i, j - i
            i = j
        else:
            i += 1
    text = [format(group, "x") for group in groups]
    if best_length < 2:
        return ":".join(text)
    return ":".join(text[:best_start]) + "::" + ":".join(text[best_start + best_length :])


def judge_record(key: bytes, subkey: bytes, value: bytes, expiration: float, context: Context) -> str:
    """'accept' or the code of §5.1 (D1-D8; P1-P8 or B1-B8 for a presence or a beacon) for a record a peer asks us
    to store (`context.now` required)."""
    try:
        _record_checks(key, subkey, value, expiration, context)
    except Refusal as refusal:
        return refusal.code
    return ACCEPT


# §5.1: the kinds a record may be, in the order they are tried: (name, frame limit, domain tag)
RECORD_KINDS = (
    ("batch", LIMITS["envelope_bytes"], DOMAIN),
    ("presence", LIMITS["presence_bytes"], PRESENCE_DOMAIN),
    ("beacon", LIMITS["beacon_bytes"], BEACON_DOMAIN),
)


def record_kind(frame: bytes) -> str:
    """§5.1: the first kind whose domain tag the frame's signature verifies under, the frame within that kind's
    size limit (check 1); a batch if none."""
    for name, limit, domain in RECORD_KINDS:
        try:
            _envelope_checks(frame, Context(), limit, domain)
        except Refusal:
            continue
        return name
    return "batch"


def record_keys(kind: str, content: dict, signer: str, c: Context) -> list[str]:
    """§4, §4.1, §4.2 (D5): the key strings a record of `kind` is valid under."""
    swarm_id, window = content.get(1, ""), content.get(2, 0)
    if kind == "batch":
        return [f"{KEY_PREFIX}{swarm_id}/{window}/{shard(signer, c.num_shards)}"]
    first = epoch_start(window, c.epoch_windows)
    if kind == "presence":
        return [f"{KEY_PREFIX}{swarm_id}/{first}/directory/{t}/{bucket(signer, t)}" for t in range(TIER_MAX + 1)]
    return [
        f"{KEY_PREFIX}{swarm_id}/{w}/census/{t}/{bucket(signer, t)}"
        for w in (first, first + c.epoch_windows) for t in range(TIER_MAX + 1)
    ]


def _record_checks(key: bytes, subkey: bytes, value: bytes, expiration: float, c: Context) -> None:
    if len(value) > LIMITS["envelope_bytes"] + 5:
        raise Refusal("too_large")
    frame = _msgpack_body(value, {0xC4: 1, 0xC5: 2, 0xC6: 4}, "malformed")
    if subkey[:1] and 0xA0 <= subkey[0] <= 0xBF:
        text = subkey[1:]
        if len(text) != subkey[0] - 0xA0:
            raise Refusal("key_mismatch")
    else:
        text = _msgpack_body(subkey, {0xD9: 1, 0xDA: 2, 0xDB: 4}, "key_mismatch")
    try:
        subkey_text = text.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal("key_mismatch") from None
    kind = record_kind(frame)
    checks = {"batch": _frame_checks, "presence": _presence_checks, "beacon": _beacon_checks}[kind]
    checked = checks(frame, dataclasses.replace(c, now=None, slot=(None, None, subkey_text), suite=None))
    content, signer = checked[kind], checked["signer"]
    key_ids = {hashlib.sha1(msgpack.packb(string)).digest() for string in record_keys(kind, content, signer, c)}
    if subkey != msgpack.packb(signer) or key not in key_ids:
        raise Refusal("key_mismatch")
    timestamp = content.get(3 if kind != "batch" else 4, 0.0)
    expected = timestamp + c.record_ttl_s if kind == "batch" else epoch_expiration(timestamp, c)
    if not abs(expiration - expected) <= 1e-3:
        raise Refusal("bad_expiry")
    if expiration + c.clock_skew_s < c.now:
        raise Refusal("stale")
    if timestamp > c.now + c.clock_skew_s:
        raise Refusal("future")


def _msgpack_body(data: bytes, headers: dict[int, int], code: str) -> bytes:
    size = headers.get(data[0]) if data else None
    if size is None or len(data) < 1 + size:
        raise Refusal(code)
    length = int.from_bytes(data[1 : 1 + size], "big")
    if len(data) != 1 + size + length:
        raise Refusal(code)
    return data[1 + size :]
