"""Signed envelopes: the security boundary between a node and every byte a peer sends it.

`seal` turns a RolloutBatch into wire bytes; `open_envelope` runs the receiver's checks in the order
PROTOCOL.md specifies and either returns a verified batch or raises `Rejected(reason)`.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

from google.protobuf.message import DecodeError

from swarmnode.config import SwarmConfig
from swarmnode.wire.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, peer_id_base58, verify_signature
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef

PROTOCOL_VERSION = 1
DOMAIN_TAG = b"swarmnode/envelope\x00"

# Hard limits of protocol version 1 (PROTOCOL.md, "Limits"). Sizes are in bytes of UTF-8.
MAX_ENVELOPE_BYTES = 1_048_576
MAX_ROLLOUTS_PER_BATCH = 64
MAX_COMPLETIONS_PER_ROLLOUT = 32
MAX_COMPLETION_BYTES = 16_384
MAX_TOKEN_LOGPROBS = 4_096
MAX_SWARM_ID_BYTES = 64
MAX_MODEL_ID_BYTES = 200
MAX_SUITE_VERSION_BYTES = 64
MAX_FAMILY_BYTES = 64
MAX_SEED = 2**63 - 1
MAX_INDEX = 2**31 - 1
MIN_TOKEN_LOGPROB = -1000.0

SWARM_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
FAMILY_PATTERN = re.compile(r"[a-z0-9_]+")
CONFIG_HASH_PATTERN = re.compile(r"[0-9a-f]{16}")


class Reason(str, Enum):
    """Stable rejection codes, in the order the checks run (PROTOCOL.md, "Receiving")."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    BAD_VERSION = "bad_version"
    BAD_SIGNATURE = "bad_signature"
    KEY_MISMATCH = "key_mismatch"
    LIMIT_EXCEEDED = "limit_exceeded"
    BAD_VALUE = "bad_value"
    WRONG_SWARM = "wrong_swarm"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    # Per-rollout checks, run by the receiver's task suite after the envelope is accepted.
    UNKNOWN_TASK = "unknown_task"
    TASK_ERROR = "task_error"
    REWARD_MISMATCH = "reward_mismatch"
    # Record-level checks of the DHT validator and the collector.
    BAD_EXPIRY = "bad_expiry"
    BANNED = "banned"


# PROTOCOL.md §5.2: refusals only the signer can have caused (for a frame, only when it is signed by the
# key its subkey names). Anyone can re-store a signed frame under another key, in another swarm, later or
# twice (key_mismatch, wrong_swarm, stale, replay), and an honest peer with another task mix or generator
# sends what we cannot regenerate (unknown_task, task_error).
OFFENCES = frozenset({Reason.MALFORMED, Reason.LIMIT_EXCEEDED, Reason.BAD_VALUE, Reason.FUTURE, Reason.REWARD_MISMATCH})


def is_offence(reason: Reason | str) -> bool:
    return Reason(reason) in OFFENCES


class Rejected(Exception):
    """A frame or rollout refused for `reason`; `detail` is for logs, the reason is for counters."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def signing_message(version: int, payload: bytes, domain: bytes = DOMAIN_TAG) -> bytes:
    """What a signature covers; each kind of payload has its own domain tag, so one is never taken for another."""
    return domain + version.to_bytes(4, "big") + payload


def shard_of(peer_id: str, num_shards: int) -> int:
    """A signer's shard: first 8 bytes of SHA-256 of its base58 peer id, big-endian, mod num_shards."""
    digest = hashlib.sha256(peer_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


@dataclass(frozen=True)
class Envelope:
    """Signer, opaque payload bytes and a signature; everything meaningful is inside the payload."""

    version: int
    signer: bytes
    payload: bytes
    signature: bytes

    @classmethod
    def sign(
        cls, identity: Identity, payload: bytes, version: int = PROTOCOL_VERSION, domain: bytes = DOMAIN_TAG
    ) -> Envelope:
        return cls(version, identity.public_key, payload, identity.sign(signing_message(version, payload, domain)))

    def verify(self, domain: bytes = DOMAIN_TAG) -> bool:
        return verify_signature(self.signer, self.signature, signing_message(self.version, self.payload, domain))

    @property
    def signer_peer_id(self) -> str:
        return peer_id_base58(self.signer)

    def encode(self) -> bytes:
        message = pb.Envelope(version=self.version, signer=self.signer, payload=self.payload, signature=self.signature)
        return message.SerializeToString(deterministic=True)

    @classmethod
    def decode(cls, frame: bytes) -> Envelope:
        message = parse_canonical(pb.Envelope, frame, "envelope")
        if len(message.signer) != PUBLIC_KEY_BYTES or len(message.signature) != SIGNATURE_BYTES:
            raise Rejected(Reason.MALFORMED, "signer must be 32 bytes and signature 64 bytes")
        return cls(message.version, message.signer, message.payload, message.signature)


@dataclass(frozen=True)
class SignedBatch:
    """A batch that passed every envelope check, with the peer id that signed it."""

    signer_peer_id: str
    batch: RolloutBatch
    frame_bytes: int


WINDOW_JITTER_S = 5.0


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

    @classmethod
    def of(cls, swarm: SwarmConfig) -> SwarmRules:
        """The rules of the swarm a node's `swarm:` section names."""
        return cls(swarm.id, swarm.window_s, swarm.record_ttl_s, swarm.num_shards, swarm.clock_skew_s, swarm.max_age_windows)

    def window_of(self, dht_time: float) -> int:
        return math.floor(dht_time / self.window_s)

    def seconds_to_next_window(self, dht_time: float, rng: random.Random) -> float:
        """Until a random moment early in the next window: peers' once-a-window stores (beacons, refreshed
        batches) spread over its first seconds instead of all landing at once."""
        jitter = rng.uniform(0.0, min(WINDOW_JITTER_S, self.window_s / 4))
        return (self.window_of(dht_time) + 1) * self.window_s - dht_time + jitter


@dataclass(frozen=True)
class Slot:
    """Where a frame was read from in the DHT: the key's window and shard, and the subkey.

    A DHT peer asked to store a record sees only the key's hash, so it passes None for window and shard
    and compares the hash itself (`swarmnode.net.record`).
    """

    window: int | None
    shard: int | None
    subkey: str


def seal(batch: RolloutBatch, identity: Identity) -> bytes:
    """Encode, sign and frame a batch. The result is what PROTOCOL.md calls a frame."""
    return Envelope.sign(identity, encode_batch(batch)).encode()


def encode_batch(batch: RolloutBatch) -> bytes:
    message = pb.RolloutBatch(
        swarm_id=batch.swarm_id,
        window=batch.window,
        sequence=batch.sequence,
        timestamp=batch.timestamp,
        model_id=batch.model_id,
        suite_version=batch.suite_version,
        rollouts=[
            pb.Rollout(
                task=pb.TaskRef(
                    family=r.task.family, config_hash=r.task.config_hash, seed=r.task.seed, index=r.task.index
                ),
                completions=[
                    pb.Completion(text=c.text, reward=c.reward, token_logprobs=c.token_logprobs)
                    for c in r.completions
                ],
            )
            for r in batch.rollouts
        ],
    )
    return message.SerializeToString(deterministic=True)


def open_envelope(
    frame: bytes,
    rules: SwarmRules | None = None,
    *,
    now: float | None = None,
    slot: Slot | None = None,
    replay_guard: ReplayGuard | None = None,
) -> SignedBatch:
    """Run the receiver's checks in protocol order; checks whose context is not given are skipped.

    rules: enables wrong_swarm (and, with `now`, stale/future; with `slot`, window/shard placement).
    """
    envelope = verified_envelope(frame, MAX_ENVELOPE_BYTES, DOMAIN_TAG, slot.subkey if slot is not None else None)
    signer = envelope.signer_peer_id
    message = parse_canonical(pb.RolloutBatch, envelope.payload, "payload")
    _check_limits(message)
    batch = _to_batch(message)
    if rules is not None:
        check_swarm_and_window(batch.swarm_id, batch.window, batch.timestamp, rules)
        if rules.swarm_id is not None and slot is not None:
            if not _placed_in(slot, batch.window, shard_of(signer, rules.num_shards)):
                raise Rejected(Reason.KEY_MISMATCH, "stored under another window or shard")
        if now is not None:
            check_freshness(batch.window, batch.timestamp, rules, now)
    if replay_guard is not None and not replay_guard.first_sighting(signer, batch.window, batch.sequence):
        raise Rejected(Reason.REPLAY, f"sequence {batch.sequence} already seen")
    return SignedBatch(signer, batch, len(frame))


def verified_envelope(frame: bytes, max_bytes: int, domain: bytes, subkey: str | None) -> Envelope:
    """Checks 1-5 (PROTOCOL.md §5), common to every signed payload: size, canonical envelope, version,
    signature under the payload kind's domain tag, and (when read from the DHT) subkey = signer."""
    if len(frame) > max_bytes:
        raise Rejected(Reason.TOO_LARGE, f"{len(frame)} > {max_bytes} bytes")
    envelope = Envelope.decode(frame)
    if envelope.version != PROTOCOL_VERSION:
        raise Rejected(Reason.BAD_VERSION, f"version {envelope.version}, this node speaks {PROTOCOL_VERSION}")
    if not envelope.verify(domain):
        raise Rejected(Reason.BAD_SIGNATURE)
    if subkey is not None and subkey != envelope.signer_peer_id:
        raise Rejected(Reason.KEY_MISMATCH, "subkey is not the signer's peer id")
    return envelope


def check_swarm_and_window(swarm_id: str, window: int, timestamp: float, rules: SwarmRules) -> None:
    """Check 9: the receiver's swarm, then a window that matches the signed timestamp (another swarm may
    use another window_s). Skipped when the receiver names no swarm."""
    if rules.swarm_id is None:
        return
    if swarm_id != rules.swarm_id:
        raise Rejected(Reason.WRONG_SWARM, f"swarm {swarm_id!r}")
    if rules.window_of(timestamp) != window:
        raise Rejected(Reason.BAD_VALUE, "timestamp lies outside its window")


def check_freshness(window: int, timestamp: float, rules: SwarmRules, now: float) -> None:
    """Checks 11-12: not older than max_age_windows (windows are the swarm's: only with a known swarm), not
    ahead of our clock by more than the skew."""
    if rules.swarm_id is not None and window < rules.window_of(now) - rules.max_age_windows:
        raise Rejected(Reason.STALE, f"window {window}")
    if timestamp > now + rules.clock_skew_s:
        raise Rejected(Reason.FUTURE, f"timestamp {timestamp:.1f} is ahead of {now:.1f}")


def _placed_in(slot: Slot, window: int, shard: int) -> bool:
    return slot.window in (None, window) and slot.shard in (None, shard)


def parse_canonical(message_type: type, data: bytes, what: str):
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise Rejected(Reason.MALFORMED, f"{what} does not parse: {error}") from None
    # protobuf keeps unknown fields and re-encodes them verbatim; canonical form has none (PROTOCOL.md §2.1)
    message.DiscardUnknownFields()
    if message.SerializeToString(deterministic=True) != data:
        raise Rejected(Reason.MALFORMED, f"{what} is not in canonical form")
    return message


def text_limit(value: str, limit: int, name: str) -> None:
    if len(value.encode()) > limit:
        raise Rejected(Reason.LIMIT_EXCEEDED, f"{name} longer than {limit} bytes")


def _check_limits(message: pb.RolloutBatch) -> None:
    text_limit(message.swarm_id, MAX_SWARM_ID_BYTES, "swarm_id")
    text_limit(message.model_id, MAX_MODEL_ID_BYTES, "model_id")
    text_limit(message.suite_version, MAX_SUITE_VERSION_BYTES, "suite_version")
    if len(message.rollouts) > MAX_ROLLOUTS_PER_BATCH:
        raise Rejected(Reason.LIMIT_EXCEEDED, f"{len(message.rollouts)} rollouts > {MAX_ROLLOUTS_PER_BATCH}")
    for rollout in message.rollouts:
        text_limit(rollout.task.family, MAX_FAMILY_BYTES, "family")
        if len(rollout.completions) > MAX_COMPLETIONS_PER_ROLLOUT:
            raise Rejected(Reason.LIMIT_EXCEEDED, f"{len(rollout.completions)} completions in one rollout")
        for completion in rollout.completions:
            text_limit(completion.text, MAX_COMPLETION_BYTES, "completion")
            if len(completion.token_logprobs) > MAX_TOKEN_LOGPROBS:
                raise Rejected(Reason.LIMIT_EXCEEDED, "too many token log-probs")


def _to_batch(message: pb.RolloutBatch) -> RolloutBatch:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_VALUE, detail)

    if not SWARM_ID_PATTERN.fullmatch(message.swarm_id):
        raise bad("swarm_id must match [a-z0-9][a-z0-9._-]*")
    if not message.model_id:
        raise bad("model_id is empty")
    if not (math.isfinite(message.timestamp) and message.timestamp > 0):
        raise bad("timestamp must be a positive finite number")
    if not message.rollouts:
        raise bad("a batch holds at least one rollout")
    rollouts = []
    for rollout in message.rollouts:
        task = rollout.task
        if not FAMILY_PATTERN.fullmatch(task.family):
            raise bad("family must match [a-z0-9_]+")
        if not CONFIG_HASH_PATTERN.fullmatch(task.config_hash):
            raise bad("config_hash must be 16 lowercase hex characters")
        if task.seed > MAX_SEED or task.index > MAX_INDEX:
            raise bad("seed or index out of range")
        if not rollout.completions:
            raise bad("a rollout holds at least one completion")
        completions = []
        for completion in rollout.completions:
            reward = completion.reward if completion.HasField("reward") else None
            if reward is not None and not (0.0 <= reward <= 1.0):
                raise bad("reward must lie in [0, 1]")
            logprobs = tuple(completion.token_logprobs)
            if any(not (MIN_TOKEN_LOGPROB <= value <= 0.0) for value in logprobs):
                raise bad(f"token log-probs must lie in [{MIN_TOKEN_LOGPROB}, 0]")
            completions.append(Completion(completion.text, reward, logprobs))
        rollouts.append(
            Rollout(TaskRef(task.family, task.config_hash, task.seed, task.index), tuple(completions))
        )
    return RolloutBatch(
        swarm_id=message.swarm_id,
        window=message.window,
        sequence=message.sequence,
        timestamp=message.timestamp,
        model_id=message.model_id,
        suite_version=message.suite_version,
        rollouts=tuple(rollouts),
    )


class ReplayGuard:
    """Remembers (window, sequence) per signer so a batch is accepted once; memory is bounded.

    Old windows need no memory: they fail the staleness check before reaching the guard.
    """

    def __init__(self, max_signers: int = 4096, per_signer: int = 64) -> None:
        self._seen: OrderedDict[str, tuple[deque[tuple[int, int]], set[tuple[int, int]]]] = OrderedDict()
        self._max_signers = max_signers
        self._per_signer = per_signer

    def first_sighting(self, signer: str, window: int, sequence: int) -> bool:
        order, seen = self._seen.pop(signer, None) or (deque(), set())
        self._seen[signer] = (order, seen)
        if len(self._seen) > self._max_signers:
            self._seen.popitem(last=False)
        entry = (window, sequence)
        if entry in seen:
            return False
        order.append(entry)
        seen.add(entry)
        if len(order) > self._per_signer:
            seen.discard(order.popleft())
        return True

    def __len__(self) -> int:
        return sum(len(seen) for _, seen in self._seen.values())
