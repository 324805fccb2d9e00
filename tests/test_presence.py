"""Presence entries and the per-window directory (PROTOCOL.md §4.1): signed, placed, bounded, never
confused with a batch."""

import dataclasses

import msgpack
import pytest
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmnode.net.storage import BoundedRecordStorage
from swarmnode.net.validator import SwarmRecordValidator, key_id
from swarmnode.wire.address import Reachability, is_tcp_address
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import TIER_MAX, batch_key, bucket_of, directory_key
from swarmnode.wire.presence import MAX_PRESENCE_BYTES, PRESENCE, Presence, join_addresses
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import Slot, SwarmRules, shard_of

ALICE = Identity.from_seed(b"\x31" * 32)
MALLORY = Identity.from_seed(b"\x32" * 32)
RULES = SwarmRules("presence-test", window_s=30.0, record_ttl_s=60.0, num_shards=16, clock_skew_s=5.0)
T0 = 1_800_000_010.0
WINDOW = RULES.window_of(T0)
TIER = 3  # the tier of most keys here: 8 buckets


def presence(**changes) -> Presence:
    base = Presence(RULES.swarm_id, WINDOW, T0, Reachability.PUBLIC, ("/ip4/127.0.0.1/tcp/31337",))
    return dataclasses.replace(base, **changes)


def entry(signer: Identity = ALICE, content: Presence | None = None, **changes) -> DHTRecord:
    """A presence as a peer asks us to store it: under the signer's directory bucket of TIER of its window."""
    content = content or presence()
    base = DHTRecord(
        key=key_id(directory_key(content.swarm_id, content.window, TIER, bucket_of(signer.peer_id, TIER))),
        subkey=msgpack.packb(signer.peer_id),
        value=msgpack.packb(PRESENCE.seal(content, signer)),
        expiration_time=RULES.expiration_of(content.timestamp),
    )
    return dataclasses.replace(base, **changes)


def refusal(record: DHTRecord, now: float = T0 + 1) -> Reason:
    validator = SwarmRecordValidator(RULES, clock=lambda: now)
    assert not validator.validate(record)
    [(reason, count)] = validator.refusals().items()
    return Reason(reason)


def test_an_honest_entry_round_trips_and_names_where_to_join():
    signed = open_frame(PRESENCE.seal(presence(), ALICE), PRESENCE, RULES, now=T0 + 1, slot=Slot(None, None, ALICE.peer_id))
    assert signed.value == presence()
    assert join_addresses(signed) == [f"/ip4/127.0.0.1/tcp/31337/p2p/{ALICE.peer_id}"]
    assert SwarmRecordValidator(RULES, clock=lambda: T0 + 1).validate(entry())


@pytest.mark.parametrize("tier", [0, TIER, TIER_MAX])
def test_an_entry_is_accepted_under_its_signers_bucket_of_any_tier(tier):
    """PROTOCOL.md §4.1: a writer picks its tiers from its own estimate of the swarm's size; every tier's key of its
    bucket is a valid place, for the DHT peer that stores it and for the reader."""
    bucket = bucket_of(ALICE.peer_id, tier)
    frame = PRESENCE.seal(presence(), ALICE)
    assert open_frame(frame, PRESENCE, RULES, now=T0 + 1, slot=Slot(WINDOW, bucket, ALICE.peer_id, tier)).value == presence()
    key = key_id(directory_key(RULES.swarm_id, WINDOW, tier, bucket))
    assert SwarmRecordValidator(RULES, clock=lambda: T0 + 1).validate(entry(key=key))
    assert directory_key(RULES.swarm_id, WINDOW, tier, bucket) in PRESENCE.keys(presence(), ALICE.peer_id, RULES)


def test_an_entry_under_another_bucket_of_its_tier_or_another_tiers_bucket_is_refused():
    """P4: the key's bucket, at the key's tier, is bucket(signer, tier), whether the entry is stored or read."""
    frame = PRESENCE.seal(presence(), ALICE)
    other = (bucket_of(ALICE.peer_id, TIER) + 1) % 2**TIER
    # its bucket of one tier under another tier's key where the two differ
    tier = next(t for t in range(1, TIER_MAX + 1) if bucket_of(ALICE.peer_id, t) != bucket_of(ALICE.peer_id, t - 1))
    lower = bucket_of(ALICE.peer_id, tier - 1)
    for slot_tier, bucket in ((TIER, other), (tier, lower)):
        assert refusal(entry(key=key_id(directory_key(RULES.swarm_id, WINDOW, slot_tier, bucket)))) is Reason.KEY_MISMATCH
        with pytest.raises(Rejected) as read:
            open_frame(frame, PRESENCE, RULES, now=T0 + 1, slot=Slot(WINDOW, bucket, ALICE.peer_id, slot_tier))
        assert read.value.reason is Reason.KEY_MISMATCH


def test_a_presence_is_never_taken_for_a_batch_nor_a_batch_for_a_presence():
    frame = PRESENCE.seal(presence(), ALICE)
    with pytest.raises(Rejected) as as_batch:
        open_frame(frame, BATCH, RULES)
    assert as_batch.value.reason is Reason.BAD_SIGNATURE  # another domain tag: the signature cannot verify
    batch = RolloutBatch(RULES.swarm_id, WINDOW, 1, T0, "m", "v",
                         (Rollout(TaskRef("chain_sum", "0123456789abcdef", 1, 2), (Completion("x"),)),))
    with pytest.raises(Rejected) as as_presence:
        open_frame(BATCH.seal(batch, ALICE), PRESENCE)
    assert as_presence.value.reason in (Reason.TOO_LARGE, Reason.BAD_SIGNATURE)
    under_directory = dataclasses.replace(entry(), value=msgpack.packb(BATCH.seal(batch, ALICE)))
    assert refusal(under_directory) is Reason.KEY_MISMATCH  # a batch, which no directory key holds
    under_shard = entry(key=key_id(batch_key(RULES.swarm_id, WINDOW, shard_of(ALICE.peer_id, RULES.num_shards))))
    assert refusal(under_shard) is Reason.KEY_MISMATCH  # a presence, which no shard key holds


def test_a_forged_entry_under_alices_subkey_is_refused():
    forged = entry(subkey=msgpack.packb(ALICE.peer_id), value=msgpack.packb(PRESENCE.seal(presence(), MALLORY)))
    assert refusal(forged) is Reason.KEY_MISMATCH


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"swarm_id": "other-swarm"}, Reason.WRONG_SWARM),
        ({"window": WINDOW + 1}, Reason.BAD_VALUE),
        ({"timestamp": float("nan")}, Reason.BAD_VALUE),
        ({"addresses": ("/dns4/example.org/tcp/1",)}, Reason.BAD_VALUE),
        ({"addresses": ("/ip4/127.0.0.1/tcp/0",)}, Reason.BAD_VALUE),
        ({"addresses": ("/ip4/127.0.0.1/tcp/1",) * 5}, Reason.LIMIT_EXCEEDED),
        ({"addresses": ("/ip6/" + "1" * 80 + "/tcp/1",)}, Reason.LIMIT_EXCEEDED),
    ],
)
def test_entries_with_bad_fields_are_refused_with_their_reason(changes, reason):
    content = presence(**changes)
    with pytest.raises(Rejected) as info:
        open_frame(PRESENCE.seal(content, ALICE), PRESENCE, RULES)
    assert info.value.reason is reason
    assert not SwarmRecordValidator(RULES, clock=lambda: T0 + 1).validate(entry(content=content))


def test_an_oversized_entry_is_refused_before_it_is_parsed():
    padded = entry(value=msgpack.packb(b"\x00" * (MAX_PRESENCE_BYTES + 1)))
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    assert validator.validate(entry())  # the key is now known to hold presence entries: a frame is judged as one
    assert not validator.validate(padded) and validator.refusals() == {"too_large": 1}
    assert refusal(padded) is Reason.MALFORMED  # under a key no record proved yet: not a frame of any kind


def test_an_entry_under_another_windows_directory_or_with_another_expiry_is_refused():
    bucket = bucket_of(ALICE.peer_id, TIER)
    assert refusal(entry(key=key_id(directory_key(RULES.swarm_id, WINDOW - 1, TIER, bucket)))) is Reason.KEY_MISMATCH
    assert refusal(entry(expiration_time=T0 + 3600)) is Reason.BAD_EXPIRY
    assert refusal(entry(), now=T0 + 3600) is Reason.STALE  # long expired


@settings(max_examples=150, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_single_bit_flip_of_an_entry_is_refused(position, bit):
    honest = entry()
    value = bytearray(honest.value)
    value[position % len(value)] ^= 1 << bit
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    assert not validator.validate(dataclasses.replace(honest, value=bytes(value)))


def test_a_directory_key_holds_a_bounded_number_of_signers_and_replacements_still_land():
    """Once an entry proved a key (of any tier) to be a directory key, the storage caps its signers; a shard key
    holds any number."""
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    top = key_id(directory_key(RULES.swarm_id, WINDOW, TIER_MAX, bucket_of(ALICE.peer_id, TIER_MAX)))
    assert validator.kinds.kind_of(top) is None
    assert validator.validate(entry(key=top)) and validator.kinds.kind_of(top) is PRESENCE
    storage = BoundedRecordStorage(kinds=validator.kinds, max_directory_entries=3)
    key = DHTID.from_bytes(top)
    assert [storage.store_subkey(key, f"signer{i}", b"x" * 100, T0 + 60) for i in range(5)] == [True] * 3 + [False] * 2
    assert storage.store_subkey(key, "signer0", b"y" * 100, T0 + 61)  # a signer refreshing its entry
    assert storage.refusals() == {"directory_full": 2}
    shard_key = DHTID.from_bytes(key_id(batch_key(RULES.swarm_id, WINDOW, 3)))
    assert all(storage.store_subkey(shard_key, f"signer{i}", b"x" * 100, T0 + 60) for i in range(5))


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("/ip4/127.0.0.1/tcp/31337", True),
        ("/ip6/::1/tcp/4001", True),
        ("/ip4/0127.0.0.1/tcp/1", False),  # not the canonical form of the address
        ("/ip4/127.0.0.1/tcp/65536", False),
        ("/ip4/127.0.0.1/tcp/01", False),
        ("/ip6/127.0.0.1/tcp/1", False),
        ("/ip4/127.0.0.1/tcp/1/p2p/12D3KooW", False),
        ("/ip4/127.0.0.1/udp/1", False),
    ],
)
def test_only_plain_tcp_addresses_are_accepted(text, valid):
    assert is_tcp_address(text) is valid
