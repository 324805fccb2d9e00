"""Beacon: a node's small signed status, stored once an epoch so that anyone can see the swarm (PROTOCOL.md §4.2).

There is no central server to list a swarm's nodes, but every node signs what it says. Each node stores a
beacon (what it runs, how it fares, whether peers can dial it) under its census bucket key; a reader of the
buckets sees the live swarm (`swarmnode.net.census`). A beacon is for people: nothing in it is trained on or
trusted for routing, and every field is bounded so that a peer's text cannot take over a terminal.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from swarmnode.wire.address import Reachability
from swarmnode.wire.envelope import (
    MAX_MODEL_ID_BYTES,
    MAX_SWARM_ID_BYTES,
    check_swarm_id,
    check_timestamp,
    parse_canonical,
    text_limit,
)
from swarmnode.wire.keys import census_key, census_windows, check_bucket, every_tier
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.record import Kind
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rules import Slot, SwarmRules, check_freshness, check_swarm_and_window

BEACON_DOMAIN_TAG = b"swarmnode/beacon\x00"
MAX_BEACON_BYTES = 1024
MAX_SOFTWARE_BYTES = 64
MAX_PHASE_BYTES = 16
MAX_RATE_PER_HOUR = 1e7
MAX_UPTIME_S = 100 * 365 * 86400.0
_PHASE = re.compile(r"[a-z_]*")
# Code points that could rewrite a reader's terminal or hide or reorder text (PROTOCOL.md §4.2): controls,
# invisible, bidi and separator characters, private use, tags. A fixed list rather than Unicode categories,
# so that every receiver gives the same verdict whatever its Unicode version: a beacon that one replica
# keeps and another refuses would make hivemind drop that replica's whole answer for the key. A reader also
# blanks what its own Unicode database calls unprintable when it shows a peer's text (swarmnode.ops.dashboard).
FORBIDDEN_TEXT = (
    (0x0000, 0x001F), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x1680, 0x1680), (0x180E, 0x180E), (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x206F),
    (0x3000, 0x3000), (0x3164, 0x3164), (0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB), (0xE0000, 0xE007F), (0xF0000, 0x10FFFF),
)


@dataclass(frozen=True)
class Beacon:
    swarm_id: str
    window: int
    timestamp: float
    software: str
    model_id: str
    round: int = 0
    reward: float | None = None  # moving average of own rollouts' reward
    held_out: float | None = None  # mean greedy held-out pass rate at the latest evaluation
    held_out_round: int = 0
    rollouts_shared: int = 0
    rollouts_received: int = 0
    peer_groups_trained: int = 0
    reachability: Reachability = Reachability.UNKNOWN
    uptime_s: float = 0.0
    rounds_per_hour: float = 0.0
    rollouts_per_hour: float = 0.0
    phase: str = ""


class BeaconKind(Kind[Beacon]):
    """A beacon is placed by its signer alone (`Slot.shard`: the census bucket of `Slot.tier` it was read from),
    and is live for the current and the previous epoch whatever the swarm's max_age_windows: a node that leaves is
    gone within two epochs."""

    name = "beacon"
    domain = BEACON_DOMAIN_TAG
    max_frame_bytes = MAX_BEACON_BYTES

    def encode(self, value: Beacon) -> bytes:
        fields = dataclasses.asdict(value)
        fields["reachability"] = value.reachability.to_proto()
        return pb.Beacon(**fields).SerializeToString(deterministic=True)

    def check_signer(self, signer: str, slot: Slot | None) -> None:
        check_bucket(signer, slot)

    def parse(self, payload: bytes) -> Beacon:
        message = parse_canonical(pb.Beacon, payload, "payload")
        text_limit(message.swarm_id, MAX_SWARM_ID_BYTES, "swarm_id")
        text_limit(message.software, MAX_SOFTWARE_BYTES, "software")
        text_limit(message.model_id, MAX_MODEL_ID_BYTES, "model_id")
        text_limit(message.phase, MAX_PHASE_BYTES, "phase")
        return _to_beacon(message)

    def check(
        self, value: Beacon, signer: str, rules: SwarmRules, slot: Slot | None, now: float | None, reading: bool = False
    ) -> None:
        check_swarm_and_window(value.swarm_id, value.window, value.timestamp, rules)
        if rules.swarm_id is not None and slot is not None and slot.window is not None:
            if slot.window not in census_windows(value.window, rules):
                raise Rejected(Reason.KEY_MISMATCH, "read from the census key of another epoch")
        if now is not None:
            max_age = rules.epoch_age_limit(rules.window_of(now))
            check_freshness(value.window, value.timestamp, rules, now, max_age_windows=max_age, reading=reading)

    def keys(self, value: Beacon, signer: str, rules: SwarmRules) -> tuple[str, ...]:
        own, following = census_windows(value.window, rules)
        return every_tier(census_key, value.swarm_id, own, signer) + every_tier(census_key, value.swarm_id, following, signer)

    def timestamp(self, value: Beacon) -> float:
        return value.timestamp

    def expiration(self, value: Beacon, rules: SwarmRules) -> float:
        return value.timestamp + rules.epoch_record_ttl_s


BEACON = BeaconKind()


def showable(text: str) -> bool:
    """PROTOCOL.md §4.2: no code point in FORBIDDEN_TEXT."""
    return not any(low <= ord(char) <= high for char in text for low, high in FORBIDDEN_TEXT)


def _to_beacon(message: pb.Beacon) -> Beacon:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_VALUE, detail)

    check_swarm_id(message.swarm_id)
    check_timestamp(message.timestamp)
    for name in ("software", "model_id"):
        if not showable(getattr(message, name)):
            raise bad(f"{name} holds a control, format or separator character")
    if not _PHASE.fullmatch(message.phase):
        raise bad("phase must match [a-z_]*")
    for name in ("reward", "held_out"):
        if message.HasField(name) and not 0.0 <= getattr(message, name) <= 1.0:
            raise bad(f"{name} must lie in [0, 1]")
    if message.reachability not in (pb.REACHABILITY_UNKNOWN, pb.REACHABILITY_PUBLIC, pb.REACHABILITY_PRIVATE):
        raise bad(f"unknown reachability {message.reachability}")
    if not 0.0 <= message.uptime_s <= MAX_UPTIME_S:  # written so that NaN fails too
        raise bad("uptime_s must lie in [0, 100 years]")
    for name in ("rounds_per_hour", "rollouts_per_hour"):
        if not 0.0 <= getattr(message, name) <= MAX_RATE_PER_HOUR:
            raise bad(f"{name} must lie in [0, {MAX_RATE_PER_HOUR:g}]")
    return Beacon(
        swarm_id=message.swarm_id,
        window=message.window,
        timestamp=message.timestamp,
        software=message.software,
        model_id=message.model_id,
        round=message.round,
        reward=message.reward if message.HasField("reward") else None,
        held_out=message.held_out if message.HasField("held_out") else None,
        held_out_round=message.held_out_round,
        rollouts_shared=message.rollouts_shared,
        rollouts_received=message.rollouts_received,
        peer_groups_trained=message.peer_groups_trained,
        reachability=Reachability.from_proto(message.reachability),
        uptime_s=message.uptime_s,
        rounds_per_hour=message.rounds_per_hour,
        rollouts_per_hour=message.rollouts_per_hour,
        phase=message.phase,
    )
