import dataclasses
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmnode.wire.batch import BATCH, MAX_COMPLETION_BYTES, MAX_ENVELOPE_BYTES
from swarmnode.wire.envelope import Envelope
from swarmnode.wire.identity import Identity
from swarmnode.wire.receive import ReplayGuard, open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import READ_CLOCK_SLACK_S, Slot, SwarmRules, shard_of

ALICE = Identity.from_seed(b"\x11" * 32)
RULES = SwarmRules("test-swarm", window_s=30.0, num_shards=16)
T0 = 1_800_000_000.0


def make_batch(**changes) -> RolloutBatch:
    batch = RolloutBatch(
        swarm_id="test-swarm",
        window=RULES.window_of(T0),
        sequence=3,
        timestamp=T0,
        model_id="swarmnode/seed",
        suite_version="v",
        rollouts=(
            Rollout(
                TaskRef("chain_sum", "0123456789abcdef", 5, 17),
                (Completion("<answer>3</answer>", 1.0, (-0.25, -1.5)), Completion("no idea")),
            ),
        ),
    )
    return dataclasses.replace(batch, **changes)


VALID = BATCH.seal(make_batch(), ALICE)


def reason_of(frame: bytes, **kwargs) -> Reason:
    with pytest.raises(Rejected) as info:
        open_frame(frame, BATCH, **kwargs)
    return info.value.reason


def test_sealed_batch_opens_to_the_same_batch_and_signer():
    signed = open_frame(VALID, BATCH, RULES, now=T0 + 1)
    assert signed.value == make_batch()
    assert signed.signer == ALICE.peer_id


def test_size_is_checked_before_parsing():
    assert reason_of(b"\x00" * (MAX_ENVELOPE_BYTES + 1)) is Reason.TOO_LARGE


def test_signature_by_another_key_is_refused():
    envelope = Envelope.decode(VALID)
    forged = dataclasses.replace(envelope, signer=Identity.from_seed(b"\x22" * 32).public_key).encode()
    assert reason_of(forged) is Reason.BAD_SIGNATURE


def test_record_under_another_peers_subkey_is_refused():
    other = Identity.from_seed(b"\x22" * 32).peer_id
    slot = Slot(make_batch().window, shard_of(ALICE.peer_id, 16), other)
    assert reason_of(VALID, rules=RULES, now=T0, slot=slot) is Reason.KEY_MISMATCH


def test_record_copied_to_another_shard_is_refused():
    slot = Slot(make_batch().window, (shard_of(ALICE.peer_id, 16) + 1) % 16, ALICE.peer_id)
    assert reason_of(VALID, rules=RULES, now=T0, slot=slot) is Reason.KEY_MISMATCH


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"swarm_id": "other"}, Reason.WRONG_SWARM),
        ({"swarm_id": "Bad Swarm"}, Reason.BAD_VALUE),
        ({"timestamp": math.inf}, Reason.BAD_VALUE),
        ({"rollouts": ()}, Reason.BAD_VALUE),
        ({"model_id": "m" * 201}, Reason.LIMIT_EXCEEDED),
        ({"rollouts": (Rollout(TaskRef("chain_sum", "0123456789abcdef", 0, 0), ()),)}, Reason.BAD_VALUE),
        (
            {"rollouts": (Rollout(TaskRef("chain_sum", "0123456789abcdef", 0, 0), (Completion("x" * (MAX_COMPLETION_BYTES + 1)),)),)},
            Reason.LIMIT_EXCEEDED,
        ),
        ({"rollouts": (Rollout(TaskRef("chain_sum", "XYZ", 0, 0), (Completion("x"),)),)}, Reason.BAD_VALUE),
        ({"rollouts": (Rollout(TaskRef("chain_sum", "0123456789abcdef", 2**63, 0), (Completion("x"),)),)}, Reason.BAD_VALUE),
        ({"rollouts": (Rollout(TaskRef("chain_sum", "0123456789abcdef", 0, 0), (Completion("x", 1.5),)),)}, Reason.BAD_VALUE),
        ({"rollouts": (Rollout(TaskRef("chain_sum", "0123456789abcdef", 0, 0), (Completion("x", None, (0.5,)),)),)}, Reason.BAD_VALUE),
        ({"rollouts": (Rollout(TaskRef("chain_sum", "0123456789abcdef", 0, 0), (Completion("x"),)),) * 65}, Reason.LIMIT_EXCEEDED),
    ],
)
def test_schema_violations_are_refused_with_their_reason(changes, reason):
    assert reason_of(BATCH.seal(make_batch(**changes), ALICE), rules=RULES, now=T0) is reason


def test_freshness_window():
    assert reason_of(VALID, rules=RULES, now=T0 + 2 * RULES.window_s) is Reason.STALE
    assert reason_of(VALID, rules=RULES, now=T0 - 60) is Reason.FUTURE
    open_frame(VALID, BATCH, RULES, now=T0 + RULES.window_s)  # the previous window is still fresh


def test_second_sighting_of_a_batch_is_a_replay_and_a_new_sequence_is_not():
    guard = ReplayGuard()
    open_frame(VALID, BATCH, RULES, now=T0, replay_guard=guard)
    assert reason_of(VALID, rules=RULES, now=T0, replay_guard=guard) is Reason.REPLAY
    open_frame(BATCH.seal(make_batch(sequence=4), ALICE), BATCH, RULES, now=T0, replay_guard=guard)


def test_replay_guard_memory_is_bounded():
    guard = ReplayGuard(max_signers=10, per_signer=5)
    for signer in range(100):
        for sequence in range(50):
            guard.first_sighting(f"peer{signer}", 1, sequence)
    assert len(guard) <= 50


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0, max_value=len(VALID) - 1), mask=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_of_a_valid_envelope_is_rejected(position, mask):
    mutated = bytearray(VALID)
    mutated[position] ^= mask
    with pytest.raises(Rejected):
        open_frame(bytes(mutated), BATCH, RULES, now=T0)


@settings(max_examples=200, deadline=None)
@given(
    size=st.one_of(st.integers(0, 4096), st.integers(MAX_ENVELOPE_BYTES - 64, 2 * MAX_ENVELOPE_BYTES)),
    seed=st.integers(0, 2**32),
)
def test_random_bytes_up_to_twice_the_limit_are_rejected_without_other_exceptions(size, seed):
    data = random.Random(seed).randbytes(size)
    with pytest.raises(Rejected):
        open_frame(data, BATCH, RULES, now=T0)


completion_text = st.text(max_size=200)
rollouts = st.lists(
    st.builds(
        Rollout,
        st.builds(
            TaskRef,
            st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
            st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
            st.integers(0, 2**63 - 1),
            st.integers(0, 2**31 - 1),
        ),
        st.lists(
            st.builds(Completion, completion_text, st.one_of(st.none(), st.sampled_from([0.0, 0.25, 1.0]))),
            min_size=1,
            max_size=4,
        ).map(tuple),
    ),
    min_size=1,
    max_size=5,
).map(tuple)


@settings(max_examples=100, deadline=None)
@given(rollouts=rollouts, sequence=st.integers(0, 2**64 - 1))
def test_every_valid_batch_round_trips(rollouts, sequence):
    batch = make_batch(rollouts=rollouts, sequence=sequence)
    assert open_frame(BATCH.seal(batch, ALICE), BATCH, RULES, now=T0).value == batch


def test_a_receiver_allows_exactly_its_clock_skew_and_a_reader_of_the_dht_three_seconds_more():
    """PROTOCOL.md §5 check 12, one rule for the DHT validator and the collector (READ_CLOCK_SLACK_S)."""
    open_frame(VALID, BATCH, RULES, now=T0 - RULES.clock_skew_s)  # exactly at the bound: accepted
    assert reason_of(VALID, rules=RULES, now=T0 - RULES.clock_skew_s - 0.001) is Reason.FUTURE
    open_frame(VALID, BATCH, RULES, now=T0 - RULES.clock_skew_s - 2.9, reading=True)
    assert reason_of(VALID, rules=RULES, now=T0 - RULES.clock_skew_s - 3.1, reading=True) is Reason.FUTURE
    assert RULES.future_bound(reading=True) == RULES.future_bound(reading=False) + READ_CLOCK_SLACK_S == RULES.clock_skew_s + 3


@pytest.mark.parametrize("theirs", ["a-swarm", "zzz-swarm"])  # sorting before and after ours
def test_a_batch_of_any_other_swarm_is_wrong_swarm(theirs):
    frame = BATCH.seal(make_batch(swarm_id=theirs), ALICE)
    assert reason_of(frame, rules=RULES, now=T0) is Reason.WRONG_SWARM


def test_a_window_is_the_floor_of_the_double_quotient_as_every_implementation_computes_it():
    """PROTOCOL.md §3: floor(timestamp / window_s) with IEEE-754 division (1.0 / 0.1 is 10.0, 1.0 // 0.1 is 9.0)."""
    assert SwarmRules(None, window_s=0.1).window_of(1.0) == 10
    assert [RULES.window_of(t) for t in (59.999, 60.0, 60.001)] == [1, 2, 2]
