"""The DHT record validator: only valid frames, stored exactly where PROTOCOL.md §4 puts them, pass."""

import dataclasses

import msgpack
import pytest
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord
from hivemind.utils import get_dht_time
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmnode.net.storage import RECORD_OVERHEAD_BYTES, BoundedRecordStorage, cost
from swarmnode.net.validator import SwarmRecordValidator, check_record, key_id, reading_records, unpack_bin, unpack_str
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import batch_key
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import SwarmRules, shard_of

ALICE = Identity.from_seed(b"\x21" * 32)
MALLORY = Identity.from_seed(b"\x22" * 32)
RULES = SwarmRules("record-test", window_s=30.0, record_ttl_s=60.0, num_shards=16, clock_skew_s=5.0)
T0 = 1_800_000_010.0


def batch(**changes) -> RolloutBatch:
    base = RolloutBatch(
        swarm_id=RULES.swarm_id,
        window=RULES.window_of(T0),
        sequence=1,
        timestamp=T0,
        model_id="m",
        suite_version="v",
        rollouts=(
            Rollout(TaskRef("chain_sum", "0123456789abcdef", 1, 2), (Completion("<answer>3</answer>"),)),
        ),
    )
    return dataclasses.replace(base, **changes)


def record(signer: Identity = ALICE, content: RolloutBatch | None = None, **changes) -> DHTRecord:
    """A record exactly as an honest publisher stores it, then `changes` to its fields."""
    content = content or batch()
    key = batch_key(content.swarm_id, content.window, shard_of(signer.peer_id, RULES.num_shards))
    base = DHTRecord(
        key=key_id(key),
        subkey=msgpack.packb(signer.peer_id),
        value=msgpack.packb(BATCH.seal(content, signer)),
        expiration_time=RULES.expiration_of(content.timestamp),
    )
    return dataclasses.replace(base, **changes)


def reason_of(candidate: DHTRecord, now: float = T0 + 1, reading: bool = False) -> Reason:
    with pytest.raises(Rejected) as info:
        check_record(candidate, RULES, now, reading=reading)
    return info.value.reason


def test_an_honest_record_is_accepted():
    assert check_record(record(), RULES, T0 + 1).signer == ALICE.peer_id


def test_the_same_frame_under_another_peers_subkey_is_refused():
    assert reason_of(record(subkey=msgpack.packb(MALLORY.peer_id))) is Reason.KEY_MISMATCH


def test_a_frame_signed_by_mallory_under_alices_subkey_is_refused():
    forged = record(MALLORY)
    assert reason_of(dataclasses.replace(forged, subkey=msgpack.packb(ALICE.peer_id))) is Reason.KEY_MISMATCH


def test_a_tampered_frame_is_refused_as_a_bad_signature():
    frame = bytearray(BATCH.seal(batch(), ALICE))
    frame[-70] ^= 0x01  # inside the payload, before the 64-byte signature
    assert reason_of(record(value=msgpack.packb(bytes(frame)))) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "key",
    [
        batch_key(RULES.swarm_id, RULES.window_of(T0) + 1, shard_of(ALICE.peer_id, RULES.num_shards)),
        batch_key(RULES.swarm_id, RULES.window_of(T0), (shard_of(ALICE.peer_id, RULES.num_shards) + 1) % 16),
        batch_key("other-swarm", RULES.window_of(T0), shard_of(ALICE.peer_id, RULES.num_shards)),
        f"swarmnode-naive/{RULES.window_of(T0)}",
    ],
    ids=["next_window", "other_shard", "other_swarm_key", "naive_key"],
)
def test_a_valid_frame_under_the_wrong_key_is_refused(key):
    assert reason_of(record(key=key_id(key))) is Reason.KEY_MISMATCH


def test_a_batch_of_another_swarm_is_refused_even_under_its_own_key():
    assert reason_of(record(content=batch(swarm_id="other-swarm"))) is Reason.WRONG_SWARM


@pytest.mark.parametrize("delta_s", [-10.0, -0.01, 0.01, 3600.0, float("nan"), float("inf")])
def test_an_expiration_other_than_timestamp_plus_ttl_is_refused(delta_s):
    """NaN included: hivemind would store a NaN-expiring record and never expire it (nor what sits behind
    it in its expiration heap)."""
    honest = record()
    assert (
        reason_of(dataclasses.replace(honest, expiration_time=honest.expiration_time + delta_s))
        is Reason.BAD_EXPIRY
    )


def test_an_expiration_within_a_millisecond_is_accepted():
    honest = record()
    check_record(dataclasses.replace(honest, expiration_time=honest.expiration_time + 5e-4), RULES, T0 + 1)


def test_expired_records_are_refused_after_the_clock_skew_slack():
    expires = T0 + RULES.record_ttl_s
    check_record(record(), RULES, expires + RULES.clock_skew_s - 0.1)
    assert reason_of(record(), now=expires + RULES.clock_skew_s + 0.1) is Reason.STALE


def test_records_from_the_future_are_refused_but_readers_allow_peer_clock_difference():
    now = T0 - RULES.clock_skew_s - 1.0
    assert reason_of(record(), now=now) is Reason.FUTURE
    with reading_records():
        check_record(record(), RULES, now, reading=True)
    assert reason_of(record(), now=T0 - RULES.clock_skew_s - 3.5, reading=True) is Reason.FUTURE


def test_a_store_request_meets_the_strict_future_bound_and_only_our_own_reads_get_the_clock_slack():
    """Through the validator as hivemind calls it: a peer asking us to store gets no slack; an answer to our own
    lookup (inside `reading_records`, as DHTPeer reads) is allowed hivemind's tolerated clock difference."""
    now = T0 - RULES.clock_skew_s - 1.0  # the record is 1 s past the strict bound, within the reader's
    validator = SwarmRecordValidator(RULES, clock=lambda: now)
    assert not validator.validate(record())
    assert validator.refusals() == {Reason.FUTURE.value: 1}
    with reading_records():
        assert validator.validate(record())
    assert validator.refusals() == {Reason.FUTURE.value: 1}


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"", Reason.MALFORMED),
        (msgpack.packb("a string"), Reason.MALFORMED),
        (msgpack.packb([1, 2]), Reason.MALFORMED),
        (b"\xc4\x05abc", Reason.MALFORMED),  # bin8 header claims 5 bytes, 3 follow
        (b"\xc4\x01abc", Reason.MALFORMED),  # trailing bytes after the bin
        (msgpack.packb(b"not a frame"), Reason.MALFORMED),
    ],
)
def test_values_that_are_not_a_msgpack_bin_frame_are_refused(value, reason):
    assert reason_of(record(value=value)) is reason


@pytest.mark.parametrize(
    "subkey", [DHTProtocol.IS_REGULAR_VALUE, DHTProtocol.IS_DICTIONARY, msgpack.packb(7), b"\xd9\x40short"]
)
def test_regular_values_dictionaries_and_non_string_subkeys_are_refused(subkey):
    assert reason_of(record(subkey=subkey)) is Reason.KEY_MISMATCH


def test_a_non_canonical_subkey_encoding_is_refused():
    peer_id = ALICE.peer_id.encode()
    str16 = b"\xda" + len(peer_id).to_bytes(2, "big") + peer_id
    assert unpack_str(str16) == ALICE.peer_id
    assert reason_of(record(subkey=str16)) is Reason.KEY_MISMATCH


def test_a_bin32_header_is_accepted_as_the_protocol_allows():
    frame = BATCH.seal(batch(), ALICE)
    assert unpack_bin(b"\xc6" + len(frame).to_bytes(4, "big") + frame) == frame
    check_record(record(value=b"\xc6" + len(frame).to_bytes(4, "big") + frame), RULES, T0 + 1)


def test_the_validator_counts_refusals_by_reason_and_never_raises():
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    assert validator.validate(record())
    assert not validator.validate(record(subkey=msgpack.packb(MALLORY.peer_id)))
    assert not validator.validate(record(value=b"junk"))
    assert validator.refusals() == {"key_mismatch": 1, "malformed": 1}


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(max_size=24),
    subkey=st.binary(max_size=80),
    value=st.binary(max_size=400),
    expiry=st.floats(),
)
def test_arbitrary_records_are_refused_without_crashing(key, subkey, value, expiry):
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    assert validator.validate(DHTRecord(key, subkey, value, expiry)) is False


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_single_bit_flip_of_an_honest_record_value_is_refused(position, bit):
    honest = record()
    value = bytearray(honest.value)
    value[position % len(value)] ^= 1 << bit
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    assert validator.validate(dataclasses.replace(honest, value=bytes(value))) is False


# ---------------------------------------------------------------------------------------------------------
# The storage budget: what a peer holds for others is bounded in bytes, whatever the number of signers.


def stored(storage: BoundedRecordStorage, key: int, subkey: str, size: int, expires_in_s: float = 60.0) -> bool:
    return storage.store_subkey(DHTID(key), subkey, b"v" * size, get_dht_time() + expires_in_s)


def test_records_beyond_a_keys_byte_budget_are_refused_and_those_stored_stay():
    storage = BoundedRecordStorage(max_key_bytes=10 * cost(1_000), max_total_bytes=10**9)
    assert all(stored(storage, 1, f"sybil{i}", 1_000) for i in range(10))
    assert not stored(storage, 1, "sybil10", 1_000)
    assert stored(storage, 2, "elsewhere", 1_000)  # another key has its own budget
    assert len(storage.get(DHTID(1)).value) == 10 and storage.refusals() == {"key_full": 1}


def test_a_key_full_of_large_records_makes_room_for_a_smaller_one_evicting_the_largest():
    """Three huge frames signed by keys ground into a victim's shard must not keep its batch out (first come
    first kept would); a record no smaller than those stored evicts nothing."""
    storage = BoundedRecordStorage(max_key_bytes=3 * cost(1_000), max_total_bytes=10**9)
    assert all(stored(storage, 1, name, size) for name, size in [("junk0", 1_000), ("junk1", 900), ("junk2", 1_000)])
    assert not stored(storage, 1, "same_size", 1_000)
    assert stored(storage, 1, "victim", 300)
    held = storage.get(DHTID(1)).value
    assert sorted(subkey for subkey, _ in held.items()) == ["junk0", "junk1", "victim"]  # one of the largest went
    assert storage.refusals() == {"key_full": 1, "evicted_larger": 1}
    assert storage.stored_bytes == cost(900) + cost(1_000) + cost(300)


def test_every_entry_costs_its_overhead_in_the_budgets():
    """A flood of tiny valid frames holds hivemind's per-entry structures too: the budget counts them."""
    storage = BoundedRecordStorage(max_key_bytes=10**9, max_total_bytes=10 * RECORD_OVERHEAD_BYTES)
    assert [stored(storage, 1, f"tiny{i}", 0) for i in range(12)] == [True] * 10 + [False] * 2
    assert storage.stored_bytes == 10 * RECORD_OVERHEAD_BYTES


def test_records_beyond_the_total_byte_budget_are_refused():
    storage = BoundedRecordStorage(max_key_bytes=10**9, max_total_bytes=5 * cost(1_000))
    assert [stored(storage, key, "s", 1_000) for key in range(7)] == [True] * 5 + [False] * 2
    assert storage.stored_bytes == 5 * cost(1_000) and storage.refusals() == {"storage_full": 2}


def test_what_the_storage_would_refuse_is_refused_before_the_frame_is_opened():
    """A replica under a flood spends no signature check on a record its budget refuses anyway: a forged frame
    offered to a full key is refused as key_full, not bad_signature (it was never opened)."""
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    storage = BoundedRecordStorage(max_key_bytes=cost(len(record().value)), kinds=validator.kinds)
    validator.precheck = storage.precheck
    honest = record()
    assert validator.validate(honest)
    assert storage.store_subkey(DHTID.from_bytes(honest.key), ALICE.peer_id, honest.value, honest.expiration_time)
    forged = record(signer=MALLORY, content=batch(sequence=2))
    forged = dataclasses.replace(forged, key=honest.key, value=forged.value[:-1] + bytes([forged.value[-1] ^ 1]))
    assert not validator.validate(forged)
    assert storage.refusals() == {"key_full": 1} and validator.refusals() == {}
    assert not validator.validate(honest)  # the same record again: older than or as old as stored, not counted
    assert storage.refusals() == {"key_full": 1} and validator.refusals() == {}
    with reading_records():  # what our own lookups return is judged on its frame alone
        assert validator.validate(honest)


def test_a_signer_replacing_its_record_does_not_grow_and_an_older_record_never_displaces_a_newer_one():
    storage = BoundedRecordStorage(max_key_bytes=2 * cost(1_000), max_total_bytes=10**9)
    for expires_in_s in range(30, 60):
        assert stored(storage, 1, "alice", 1_000, expires_in_s)
    assert storage.stored_bytes == cost(1_000)
    assert not stored(storage, 1, "alice", 1_000, expires_in_s=5)
    records = storage.get(DHTID(1)).value
    assert records.get("alice").expiration_time > get_dht_time() + 50
    assert records.key_to_heap["alice"].expiration_time > get_dht_time() + 50  # hivemind would re-point it


def test_a_flood_of_replacements_keeps_the_expiration_heaps_proportional_to_what_is_stored():
    storage = BoundedRecordStorage()
    for step in range(5_000):
        stored(storage, 1, "alice", 100, expires_in_s=30 + step * 1e-3)
    assert len(storage.expiration_heap) < 100 and len(storage.get(DHTID(1)).value.expiration_heap) < 100


def test_expired_records_give_their_bytes_back(monkeypatch):
    clock = [T0]  # hivemind's storage expires records by its own clock: ours, so no sleeping and no racing it
    monkeypatch.setattr("hivemind.utils.timed_storage.get_dht_time", lambda: clock[0])
    monkeypatch.setattr("swarmnode.net.storage.RECOUNT_INTERVAL_S", 0.0)
    storage = BoundedRecordStorage(max_key_bytes=10**9, max_total_bytes=2 * cost(1_000))

    def store(key: int, subkey: str) -> bool:
        return storage.store_subkey(DHTID(key), subkey, b"v" * 1_000, T0 + 0.2)

    assert store(1, "a") and store(2, "b")
    assert not store(3, "c")
    clock[0] = T0 + 0.3
    assert storage.store_subkey(DHTID(3), "c", b"v" * 1_000, T0 + 60) and storage.stored_bytes == cost(1_000)
