"""The receiver's bounds and blame at their edges: who a refusal counts against, and exactly how much the
verified-frames memory and the replay guard keep (mutants of these checks survived the broader wire tests)."""

from __future__ import annotations

import contextlib

import pytest
from test_envelope import ALICE, RULES, T0, VALID, make_batch

from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity
from swarmnode.wire.receive import ReplayGuard, VerifiedFrames, open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rules import Slot

FRAME_BYTES = len(VALID)
BELOW_ALICE = Identity.from_seed(b"\x01" * 32)  # peer ids on either side of ALICE's, as strings
ABOVE_ALICE = Identity.from_seed(b"\x03" * 32)


def batch_frame(sequence: int) -> bytes:
    """A valid batch frame of FRAME_BYTES for every sequence from 1 to 127 (0, the default, is not encoded)."""
    frame = BATCH.seal(make_batch(sequence=sequence), ALICE)
    assert len(frame) == FRAME_BYTES
    return frame


def refusal(frame: bytes, **kwargs) -> Rejected:
    with pytest.raises(Rejected) as info:
        open_frame(frame, BATCH, **kwargs)
    return info.value


def from_memory(verified: VerifiedFrames, frame: bytes) -> bool:
    """Open `frame` through `verified`: True when the conclusion came from memory (neither decoded nor verified)."""
    hits = verified.hits
    with contextlib.suppress(Rejected):
        open_frame(frame, BATCH, verified=verified)
    return verified.hits > hits


# Who a refusal counts against


def test_peer_ids_used_below_sort_on_either_side_of_the_signers():
    assert BELOW_ALICE.peer_id < ALICE.peer_id < ABOVE_ALICE.peer_id


@pytest.mark.parametrize("other", [BELOW_ALICE, ABOVE_ALICE], ids=["lower_id", "higher_id"])
def test_a_frame_under_any_other_peers_subkey_is_refused_naming_the_signer_but_blaming_no_one(other):
    rejected = refusal(VALID, rules=RULES, now=T0, slot=Slot(None, None, other.peer_id))
    assert rejected.reason is Reason.KEY_MISMATCH
    assert rejected.signer == ALICE.peer_id
    assert rejected.offender is None  # anyone can re-store alice's frame under another subkey


def test_a_replayed_batch_names_its_signer_but_is_no_offence():
    guard = ReplayGuard()
    open_frame(VALID, BATCH, RULES, now=T0, replay_guard=guard)
    rejected = refusal(VALID, rules=RULES, now=T0, replay_guard=guard)
    assert (rejected.reason, rejected.signer, rejected.offender) == (Reason.REPLAY, ALICE.peer_id, None)


def test_a_schema_violation_under_a_valid_signature_counts_against_the_signer():
    rejected = refusal(BATCH.seal(make_batch(model_id="m" * 201), ALICE), rules=RULES, now=T0)
    assert (rejected.reason, rejected.signer, rejected.offender) == (Reason.LIMIT_EXCEEDED, ALICE.peer_id, ALICE.peer_id)


def test_a_frame_refused_before_its_signature_verified_counts_against_no_one():
    rejected = refusal(VALID[:-1] + bytes([VALID[-1] ^ 1]), rules=RULES, now=T0)
    assert rejected.signer is None and rejected.offender is None


# The verified-frames memory


def test_a_frame_read_twice_is_decoded_and_verified_once():
    verified = VerifiedFrames()
    first = open_frame(VALID, BATCH, RULES, now=T0, verified=verified)
    assert (verified.hits, verified.misses) == (0, 1)
    second = open_frame(VALID, BATCH, RULES, now=T0, verified=verified)
    assert (verified.hits, verified.misses) == (1, 1)
    assert (second.signer, second.value) == (first.signer, first.value)
    open_frame(VALID, BATCH, RULES, now=T0, verified=verified)
    assert (verified.hits, verified.misses, len(verified)) == (2, 1, 1)


def test_a_remembered_refusal_larger_than_the_content_budget_is_still_remembered_and_still_blames_the_signer():
    offending = BATCH.seal(make_batch(model_id="m" * 201), ALICE)
    verified = VerifiedFrames(max_value_bytes=FRAME_BYTES)
    assert len(offending) > FRAME_BYTES
    first = refusal(offending, verified=verified)
    second = refusal(offending, verified=verified)
    assert (verified.hits, verified.misses) == (1, 1)
    assert (second.reason, second.offender) == (first.reason, first.offender) == (Reason.LIMIT_EXCEEDED, ALICE.peer_id)


def test_a_frame_exactly_the_content_budget_is_kept_and_a_larger_one_is_neither_kept_nor_pushes_it_out():
    larger = BATCH.seal(make_batch(model_id="m" * 100), ALICE)
    verified = VerifiedFrames(max_value_bytes=FRAME_BYTES)
    assert len(larger) > FRAME_BYTES
    open_frame(VALID, BATCH, verified=verified)
    assert from_memory(verified, VALID)
    assert open_frame(larger, BATCH, verified=verified).value == make_batch(model_id="m" * 100)
    assert len(verified) == 1
    assert from_memory(verified, VALID)
    assert not from_memory(verified, larger)


@pytest.mark.parametrize(
    ("bound", "capacity"),
    [({"max_entries": 3}, 3), ({"max_value_bytes": 2 * FRAME_BYTES}, 2)],
    ids=["entries", "content_bytes"],
)
def test_a_memory_filled_exactly_to_its_bound_keeps_every_frame_and_one_more_pushes_out_the_oldest(bound, capacity):
    frames = [batch_frame(sequence) for sequence in range(1, capacity + 2)]
    verified = VerifiedFrames(**bound)
    for frame in frames[:capacity]:
        open_frame(frame, BATCH, verified=verified)
    assert len(verified) == capacity
    assert all(from_memory(verified, frame) for frame in frames[:capacity])
    open_frame(frames[capacity], BATCH, verified=verified)
    assert len(verified) == capacity
    assert all(from_memory(verified, frame) for frame in frames[1:])
    assert not from_memory(verified, frames[0])


def test_remembered_refusals_take_nothing_of_the_byte_budget():
    refused = BATCH.seal(make_batch(rollouts=()), ALICE)
    verified = VerifiedFrames(max_value_bytes=2 * FRAME_BYTES)
    frames = [batch_frame(sequence) for sequence in range(1, 3)]
    for frame in [*frames, refused]:
        with contextlib.suppress(Rejected):
            open_frame(frame, BATCH, verified=verified)
    assert len(verified) == 3
    assert all(from_memory(verified, frame) for frame in [*frames, refused])


@pytest.mark.parametrize("budget, kept", [(2 * FRAME_BYTES, 2), (2 * FRAME_BYTES - 1, 1)], ids=["fits", "a_byte_short"])
def test_a_refusal_pushed_out_by_the_entry_bound_gives_back_no_content_bytes(budget, kept):
    """A refusal, then two frames: the entry bound (2) drops the refusal; the content then fits the budget or
    is a byte over it, and only then is the older frame dropped too."""
    refused = BATCH.seal(make_batch(rollouts=()), ALICE)
    frames = [batch_frame(sequence) for sequence in range(1, 3)]
    verified = VerifiedFrames(max_entries=2, max_value_bytes=budget)
    for frame in [refused, *frames]:
        with contextlib.suppress(Rejected):
            open_frame(frame, BATCH, verified=verified)
    assert len(verified) == kept
    assert from_memory(verified, frames[1])
    assert from_memory(verified, frames[0]) is (kept == 2)


# The replay guard


def four_batches(bound: str) -> list[bytes]:
    """Four frames that fill a guard of 3 and pass it by one: four signers' batches, or one signer's four."""
    if bound == "max_signers":
        return [BATCH.seal(make_batch(), Identity.from_seed(bytes([seed]) * 32)) for seed in (0x31, 0x32, 0x33, 0x34)]
    return [batch_frame(sequence) for sequence in range(1, 5)]


@pytest.mark.parametrize("bound", ["max_signers", "per_signer"])
def test_the_guard_catches_replays_up_to_its_bound_and_forgets_the_oldest_first(bound):
    frames = four_batches(bound)
    guard = ReplayGuard(**{bound: 3})
    for frame in frames[:3]:
        open_frame(frame, BATCH, RULES, now=T0, replay_guard=guard)
    for frame in frames[:3]:
        assert refusal(frame, rules=RULES, now=T0, replay_guard=guard).reason is Reason.REPLAY
    open_frame(frames[3], BATCH, RULES, now=T0, replay_guard=guard)
    for frame in frames[1:]:
        assert refusal(frame, rules=RULES, now=T0, replay_guard=guard).reason is Reason.REPLAY
    assert len(guard) == 3
