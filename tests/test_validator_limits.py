"""The DHT validator's exact limits: the record size bound, msgpack headers whose length disagrees with their body,
and how a peer learns which kind a key holds (PROTOCOL.md §5.1)."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord
from hypothesis import example, given
from hypothesis import strategies as st

from swarmnode.net.validator import KeyKinds, SwarmRecordValidator, check_record, key_id, unpack_bin, unpack_str
from swarmnode.wire.batch import BATCH, MAX_ENVELOPE_BYTES
from swarmnode.wire.beacon import BEACON
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import batch_key, directory_key
from swarmnode.wire.presence import PRESENCE
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import SwarmRules, shard_of

ALICE = Identity.from_seed(b"\x31" * 32)
RULES = SwarmRules("limits-test", window_s=30.0, record_ttl_s=60.0, num_shards=16, clock_skew_s=5.0)
T0 = 1_800_000_010.0
SIZE_LIMIT = MAX_ENVELOPE_BYTES + 5  # a frame of the largest size under a bin32 header (marker + 4 length bytes)


def padded_batch(last_completion_bytes: int) -> RolloutBatch:
    """A valid batch near 1 MiB: two full rollouts of 16,000-byte completions and a third whose last one varies."""
    task = TaskRef("chain_sum", "0123456789abcdef", 1, 2)
    full = Rollout(task, tuple(Completion("x" * 16_000) for _ in range(32)))
    last = Rollout(task, (Completion("x" * 16_000), Completion("x" * last_completion_bytes)))
    return RolloutBatch(RULES.swarm_id, RULES.window_of(T0), 1, T0, "m", "v", (full, full, last))


def batch_key_id() -> bytes:
    return key_id(batch_key(RULES.swarm_id, RULES.window_of(T0), shard_of(ALICE.peer_id, RULES.num_shards)))


@pytest.fixture(scope="module")
def record_at_limit() -> DHTRecord:
    """An honest record whose value is exactly SIZE_LIMIT bytes: a MAX_ENVELOPE_BYTES frame under a bin32 header."""
    probe = len(BATCH.seal(padded_batch(8_000), ALICE))
    frame = BATCH.seal(padded_batch(8_000 + MAX_ENVELOPE_BYTES - probe), ALICE)
    assert len(frame) == MAX_ENVELOPE_BYTES
    value = b"\xc6" + len(frame).to_bytes(4, "big") + frame
    return DHTRecord(batch_key_id(), msgpack.packb(ALICE.peer_id), value, RULES.expiration_of(T0))


def test_a_record_exactly_at_the_size_limit_is_accepted(record_at_limit: DHTRecord) -> None:
    """The size bound admits the largest frame the protocol allows in the widest msgpack bin header."""
    assert len(record_at_limit.value) == SIZE_LIMIT
    assert check_record(record_at_limit, RULES, T0 + 1).signer == ALICE.peer_id


def test_a_value_one_byte_over_the_size_limit_is_refused_as_too_large_before_it_is_parsed() -> None:
    """A value past the bound is refused for its size, not for what its bytes hold (they are not even msgpack)."""
    oversized = DHTRecord(batch_key_id(), msgpack.packb(ALICE.peer_id), b"\x00" * (SIZE_LIMIT + 1), T0 + 60)
    with pytest.raises(Rejected) as info:
        check_record(oversized, RULES, T0 + 1)
    assert info.value.reason is Reason.TOO_LARGE


def test_a_store_request_at_the_size_limit_goes_to_the_precheck_and_is_stored(record_at_limit: DHTRecord) -> None:
    """The validator's early size check passes a record at the bound on to the storage's precheck."""
    asked: list[tuple[DHTID, str, int, float]] = []
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    validator.precheck = lambda key, subkey, size, expiration: asked.append((key, subkey, size, expiration))
    assert validator.validate(record_at_limit)
    assert asked == [(DHTID.from_bytes(batch_key_id()), ALICE.peer_id, SIZE_LIMIT, RULES.expiration_of(T0))]
    assert validator.refusals() == {}


def test_a_store_request_one_byte_over_the_size_limit_is_counted_as_too_large_without_asking_the_storage() -> None:
    """An oversized store is refused and counted before the precheck, which would refuse it uncounted."""
    asked: list[int] = []

    def precheck(key: DHTID, subkey: str, size: int, expiration: float) -> str:
        asked.append(size)
        return "key_full"

    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    validator.precheck = precheck
    oversized = DHTRecord(batch_key_id(), msgpack.packb(ALICE.peer_id), b"\x00" * (SIZE_LIMIT + 1), T0 + 60)
    assert not validator.validate(oversized)
    assert asked == []
    assert validator.refusals() == {Reason.TOO_LARGE.value: 1}


@pytest.mark.parametrize(
    "unpack, data, reason, detail",
    [
        *((unpack_bin, data, Reason.MALFORMED, "value length does not match its header")
          for data in (b"\xc4", b"\xc5\x00", b"\xc6\x00\x00\x00")),
        *((unpack_str, data, Reason.KEY_MISMATCH, "subkey length does not match its header")
          for data in (b"\xd9", b"\xda\x00", b"\xdb\x00\x00\x00")),
    ],
)
def test_a_header_cut_inside_its_length_bytes_is_refused(unpack, data: bytes, reason: Reason, detail: str) -> None:
    """A bin or str marker (8/16/32) missing length bytes is refused, not read as an empty payload or subkey."""
    with pytest.raises(Rejected) as info:
        unpack(data)
    assert info.value.reason is reason
    assert info.value.detail == detail


def test_the_refusal_of_a_foreign_msgpack_type_names_the_type_that_was_expected() -> None:
    """A value must be a msgpack bin and a subkey a msgpack str; each refusal says which one was expected."""
    with pytest.raises(Rejected) as value_info:
        unpack_bin(msgpack.packb("a string"))
    assert (value_info.value.reason, value_info.value.detail) == (Reason.MALFORMED, "value is not a msgpack bin")
    with pytest.raises(Rejected) as subkey_info:
        unpack_str(msgpack.packb(7))
    assert (subkey_info.value.reason, subkey_info.value.detail) == (Reason.KEY_MISMATCH, "subkey is not a msgpack str")


@given(st.text(max_size=40))
@example("")
@example("a" * 31)  # the longest fixstr
@example(ALICE.peer_id)
def test_any_msgpack_encoded_subkey_round_trips(text: str) -> None:
    """Subkeys as hivemind encodes them, fixstr (under 32 bytes) or str8, decode to the same string."""
    assert unpack_str(msgpack.packb(text)) == text


@given(st.binary(max_size=31), st.integers(min_value=0, max_value=31))
def test_a_fixstr_whose_length_disagrees_with_its_body_is_refused(body: bytes, declared: int) -> None:
    """A fixstr header declaring more or fewer bytes than follow is refused as a key mismatch."""
    if declared == len(body):
        declared = (declared + 1) % 32
    with pytest.raises(Rejected) as info:
        unpack_str(bytes([0xA0 | declared]) + body)
    assert info.value.reason is Reason.KEY_MISMATCH


def test_a_key_s_kind_is_learnt_from_a_record_proven_to_belong_there_and_only_the_newest_keys_are_kept() -> None:
    """A key id is a hash: its kind is known once a record signed as that kind, whose content computes that very
    key, was accepted under it (then the storage's caps for the kind apply before the next frame is opened). A
    refused record teaches nothing, and the memory keeps the most recently proven keys."""
    kinds = KeyKinds(RULES, capacity=2)
    keys = [bytes([n]) * 20 for n in range(3)]
    assert kinds.kind_of(keys[0]) is None
    for key, kind in zip(keys, (PRESENCE, BEACON, BATCH)):
        kinds.learn(key, kind)
    assert [kinds.kind_of(key) for key in keys] == [None, BEACON, BATCH]
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    task = TaskRef("chain_sum", "0123456789abcdef", 1, 2)
    frame = BATCH.seal(RolloutBatch(RULES.swarm_id, RULES.window_of(T0), 1, T0, "m", "v", (Rollout(task, (Completion("x"),)),)), ALICE)
    record = DHTRecord(batch_key_id(), msgpack.packb(ALICE.peer_id), msgpack.packb(frame), RULES.expiration_of(T0))
    assert validator.kinds.kind_of(record.key) is None and validator.validate(record)
    assert validator.kinds.kind_of(record.key) is BATCH
    misplaced = dataclasses.replace(record, key=key_id(directory_key(RULES.swarm_id, RULES.window_of(T0), 0, 0)))
    assert not validator.validate(misplaced) and validator.kinds.kind_of(misplaced.key) is None
