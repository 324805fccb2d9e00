"""Receiving a frame: the checks of PROTOCOL.md §5 in order (size -> decode -> signature -> placement ->
content -> freshness -> replay), each frame's signature verified once.

A node meets most frames twice: its DHT validator checks every value a lookup returns, then the collector
opens the same bytes. `VerifiedFrames` remembers what the context-free checks (1-4 and 6-8) concluded about a
frame's bytes, by digest, so the second reader neither decodes nor verifies again; the checks that depend on
where and when the frame was read (5, 9-13) always run.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from swarmnode.wire.envelope import verified_envelope
from swarmnode.wire.record import Kind, Signed
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rules import Slot, SwarmRules

VERIFIED_ENTRIES = 4096
VERIFIED_VALUE_BYTES = 16 * 2**20  # frames whose content is kept; beyond that only refusals are remembered


@dataclass(frozen=True)
class _Opened:
    """What checks 1-4 and 6-8 concluded about one frame's bytes for one kind."""

    signer: str | None  # None: checks 1-4 failed (`refused` says why)
    value: object | None
    refused: tuple[Reason, str] | None  # the first check that failed, and its detail
    frame_bytes: int


class VerifiedFrames:
    """A bounded memory of frames already opened, by (kind, digest): the newest VERIFIED_ENTRIES, keeping the
    content of at most VERIFIED_VALUE_BYTES of frames (a refused frame costs a few bytes). Thread-safe: the DHT
    loop's validator and the collector share one."""

    def __init__(self, max_entries: int = VERIFIED_ENTRIES, max_value_bytes: int = VERIFIED_VALUE_BYTES) -> None:
        self._entries: OrderedDict[bytes, _Opened] = OrderedDict()
        self._max_entries = max_entries
        self._max_value_bytes = max_value_bytes
        self._value_bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: bytes) -> _Opened | None:
        with self._lock:
            opened = self._entries.get(key)
            if opened is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return opened

    def put(self, key: bytes, opened: _Opened) -> None:
        if opened.value is not None and opened.frame_bytes > self._max_value_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = opened
            self._value_bytes += opened.frame_bytes if opened.value is not None else 0
            while len(self._entries) > self._max_entries or self._value_bytes > self._max_value_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._value_bytes -= dropped.frame_bytes if dropped.value is not None else 0

    def __len__(self) -> int:
        return len(self._entries)


def open_frame(
    frame: bytes,
    kind: Kind,
    rules: SwarmRules | None = None,
    *,
    now: float | None = None,
    slot: Slot | None = None,
    replay_guard: ReplayGuard | None = None,
    verified: VerifiedFrames | None = None,
    reading: bool = False,
) -> Signed:
    """Run the receiver's checks in protocol order; checks whose context is not given are skipped: `rules`
    enables a closed swarm's allowlist (right after the signature), wrong_swarm (and, with `now`, stale/future; with `slot`, placement), `replay_guard` the replay check;
    `reading`: the frame was read from the DHT, whose peers' clocks may differ a little more (check 12).
    Raises Rejected, whose `signer` is set once the signature verified."""
    opened = _open_content(frame, kind, verified)
    if opened.signer is None:
        raise Rejected(*opened.refused)
    signer = opened.signer
    try:
        if rules is not None and not rules.admits(signer):
            raise Rejected(Reason.NOT_ALLOWED, "the signer is not on this swarm's allowlist")
        if slot is not None and slot.subkey != signer:
            raise Rejected(Reason.KEY_MISMATCH, "subkey is not the signer's peer id")
        kind.check_signer(signer, slot)
        if opened.refused is not None:
            raise Rejected(*opened.refused)
        if rules is not None:
            kind.check(opened.value, signer, rules, slot, now, reading)
        # a batch is accepted once per (signer, window, sequence): PROTOCOL.md §2.3 (only batches carry a sequence)
        if replay_guard is not None and not replay_guard.first_sighting(signer, opened.value.window, opened.value.sequence):
            raise Rejected(Reason.REPLAY, f"sequence {opened.value.sequence} already seen")
    except Rejected as rejected:
        raise Rejected(rejected.reason, rejected.detail, signer) from None
    return Signed(kind, signer, opened.value, len(frame))


def _open_content(frame: bytes, kind: Kind, verified: VerifiedFrames | None) -> _Opened:
    """Checks 1-4 and 6-8, which depend on the bytes alone, from `verified` when it has seen them."""
    key = kind.domain + hashlib.blake2b(frame, digest_size=16).digest()
    opened = verified.get(key) if verified is not None else None
    if opened is not None:
        return opened
    try:
        envelope = verified_envelope(frame, kind.max_frame_bytes, kind.domain)
    except Rejected as rejected:
        opened = _Opened(None, None, (rejected.reason, rejected.detail), len(frame))
    else:
        try:
            opened = _Opened(envelope.signer_peer_id, kind.parse(envelope.payload), None, len(frame))
        except Rejected as rejected:
            opened = _Opened(envelope.signer_peer_id, None, (rejected.reason, rejected.detail), len(frame))
    if verified is not None:
        verified.put(key, opened)
    return opened


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
