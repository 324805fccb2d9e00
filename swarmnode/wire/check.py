"""`swarmnode protocol check`: PROTOCOL.md §5's verdict on frames, as one receiver that reads them in order.

The node's own receiving path (`receive.open_frame`), so the spec, the tool and what a node accepts cannot drift
apart. A batch's rollouts are judged too (checks 14-15) when the caller passes the receiver's `judge`: the
intake's, which regenerates and rescores them; the wire layer itself knows no tasks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from swarmnode.wire.batch import BATCH
from swarmnode.wire.keys import TIER_MAX
from swarmnode.wire.kinds import KINDS, kind_of_frame
from swarmnode.wire.receive import ReplayGuard, open_frame
from swarmnode.wire.record import Kind
from swarmnode.wire.rejection import Rejected
from swarmnode.wire.rollout import Rollout
from swarmnode.wire.rules import Slot, SwarmRules

SLOT_SHAPES = {
    "batch": "WINDOW/SHARD/SUBKEY, e.g. 12345/3/12D3KooW...",
    "presence": f"WINDOW/directory/TIER/BUCKET/SUBKEY, TIER in 0-{TIER_MAX}, BUCKET below 2^TIER",
    "beacon": f"WINDOW/census/TIER/BUCKET/SUBKEY, TIER in 0-{TIER_MAX}, BUCKET below 2^TIER",
}


@dataclass(frozen=True)
class Verdict:
    """One frame's outcome: accepted, or the first check it failed, and which kind it was read as."""

    kind: Kind
    detected: bool  # the kind was told by the frame's own signature (no --kind)
    rejected: Rejected | None = None

    @property
    def accepted(self) -> bool:
        return self.rejected is None


def decimal(text: str) -> int:
    """A number of a key as PROTOCOL.md §4 writes it: ASCII base 10, no sign, no leading zero (Python's int() also
    takes "+3", " 3", "3_0" and other scripts' digits); ValueError otherwise."""
    if not re.fullmatch(r"0|[1-9][0-9]*", text):
        raise ValueError(f"{text!r} is not a number as keys write them")
    return int(text)


def parse_slot(text: str, kind: str) -> Slot:
    """WINDOW/SHARD/SUBKEY (a batch's shard key), WINDOW/directory/TIER/BUCKET/SUBKEY (a presence) or
    WINDOW/census/TIER/BUCKET/SUBKEY (a beacon: Slot(window, bucket, subkey, tier)); ValueError otherwise."""
    window, shard, subkey = text.split("/", 2)
    if kind in ("beacon", "presence"):
        place = {"beacon": "census", "presence": "directory"}[kind]
        tier, bucket, subkey = (subkey.split("/", 2) + ["", ""])[:3]
        if shard != place or not subkey or not decimal(tier) <= TIER_MAX or not decimal(bucket) < 2 ** int(tier):
            raise ValueError(f"a {kind} is read from a key {SLOT_SHAPES[kind]}, not {text}")
        return Slot(decimal(window), int(bucket), subkey, int(tier))
    return Slot(decimal(window), decimal(shard), subkey)


def kind_of_slot(text: str) -> str:
    """The kind of record a key holds, from a slot's shape: .../census/... a beacon, .../directory/... a presence."""
    parts = text.split("/", 2)
    shape = parts[1] if len(parts) > 1 else ""
    return {"census": "beacon", "directory": "presence"}.get(shape, "batch")


class Checker:
    """Frames checked in order, as one receiver: a batch seen twice is a replay. Without `kind` the slot's key
    tells it (a census key holds beacons, a directory key presence entries), and without a slot each frame's
    own signature does (a frame whose signature verifies under no kind is read as a batch). A slot that does not
    fit the kind raises ValueError at once."""

    def __init__(
        self,
        rules: SwarmRules,
        *,
        kind: str | None = None,
        now: float | None = None,
        slot: str | None = None,
        judge: Callable[[Rollout], object] | None = None,
    ) -> None:
        if kind is None and slot is not None:
            kind = kind_of_slot(slot)
        self.rules, self.kind, self.now, self.judge = rules, kind, now, judge
        self.slot = parse_slot(slot, kind) if slot is not None and kind is not None else None
        self.replay_guard = ReplayGuard()

    def check(self, frame: bytes) -> Verdict:
        kind = KINDS[self.kind] if self.kind is not None else kind_of_frame(frame) or BATCH
        slot = self.slot
        try:
            signed = open_frame(
                frame, kind, self.rules, now=self.now, slot=slot,
                replay_guard=self.replay_guard if kind is BATCH else None,
            )
            if kind is BATCH and self.judge is not None:
                for rollout in signed.value.rollouts:
                    self.judge(rollout)
        except Rejected as rejected:
            return Verdict(kind, self.kind is None, rejected)
        return Verdict(kind, self.kind is None)

    def largest_frame(self) -> int:
        """The most bytes worth reading of a file: one byte past the largest frame of the kinds it may be."""
        kinds = [KINDS[self.kind]] if self.kind is not None else KINDS.values()
        return max(kind.max_frame_bytes for kind in kinds) + 1
