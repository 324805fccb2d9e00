"""Beacons and the census (PROTOCOL.md §4.2): signed, placed, bounded in size and rate, safe to print."""

import dataclasses
import io
import time

import msgpack
import pytest
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from swarmnode.net import census as census_module
from swarmnode.net.census import BeaconService, Census, CensusEntry
from swarmnode.net.replicas import Coverage, Read
from swarmnode.net.storage import BoundedRecordStorage
from swarmnode.net.swarm_size import SwarmSize
from swarmnode.net.validator import SwarmRecordValidator, key_id
from swarmnode.ops.dashboard import census_table, census_title, peer_text
from swarmnode.wire.address import Reachability
from swarmnode.wire.beacon import BEACON, MAX_BEACON_BYTES, Beacon, showable
from swarmnode.wire.envelope import Envelope
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import TIER_MAX, batch_key, bucket_of, census_key, directory_key
from swarmnode.wire.presence import PRESENCE, Presence
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rules import Slot, SwarmRules

ALICE = Identity.from_seed(b"\x41" * 32)
MALLORY = Identity.from_seed(b"\x42" * 32)
RULES = SwarmRules("beacon-test", window_s=30.0, record_ttl_s=60.0, num_shards=16, clock_skew_s=5.0)
T0 = 1_800_000_010.0
WINDOW = RULES.window_of(T0)
TIER = 3  # the tier of most keys here: 8 buckets


def beacon(**changes) -> Beacon:
    base = Beacon(
        RULES.swarm_id, WINDOW, T0, "swarmnode/0.1.0", "Qwen/Qwen2.5-0.5B-Instruct", round=120, reward=0.5,
        held_out=0.25, held_out_round=100, rollouts_shared=960, rollouts_received=700, peer_groups_trained=300,
        reachability=Reachability.PRIVATE, uptime_s=3600.0, rounds_per_hour=60.0, rollouts_per_hour=480.0, phase="train",
    )
    return dataclasses.replace(base, **changes)


def stored(signer: Identity = ALICE, content: Beacon | None = None, **changes) -> DHTRecord:
    """A beacon as a peer asks us to store it: under the signer's census bucket of TIER of its window."""
    content = content or beacon()
    base = DHTRecord(
        key=key_id(census_key(content.swarm_id, content.window, TIER, bucket_of(signer.peer_id, TIER))),
        subkey=msgpack.packb(signer.peer_id),
        value=msgpack.packb(BEACON.seal(content, signer)),
        expiration_time=RULES.expiration_of(content.timestamp),
    )
    return dataclasses.replace(base, **changes)


def refusal(record: DHTRecord, now: float = T0 + 1) -> Reason:
    validator = SwarmRecordValidator(RULES, clock=lambda: now)
    assert not validator.validate(record)
    [(reason, _)] = validator.refusals().items()
    return Reason(reason)


def test_an_honest_beacon_round_trips_and_is_stored_under_its_bucket_of_every_tier():
    bucket = bucket_of(ALICE.peer_id, TIER)
    slot = Slot(WINDOW, bucket, ALICE.peer_id, TIER)
    signed = open_frame(BEACON.seal(beacon(), ALICE), BEACON, RULES, now=T0 + 1, slot=slot)
    assert signed.signer == ALICE.peer_id
    assert dataclasses.replace(signed.value, reward=0.5, held_out=0.25) == beacon()  # float32 on the wire
    assert abs(signed.value.reward - 0.5) < 1e-6
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    assert validator.validate(stored())
    for window in (WINDOW, WINDOW + 1):  # the next window's census reads it too
        for tier in range(TIER_MAX + 1):  # whichever tier the swarm's size, as a writer estimates it, calls for
            key = key_id(census_key(RULES.swarm_id, window, tier, bucket_of(ALICE.peer_id, tier)))
            assert validator.validate(stored(key=key)), (window, tier)
            open_frame(BEACON.seal(beacon(), ALICE), BEACON, RULES, now=T0 + 1,
                       slot=Slot(window, bucket_of(ALICE.peer_id, tier), ALICE.peer_id, tier))
    assert BEACON.keys(beacon(), ALICE.peer_id, RULES) == tuple(
        census_key(RULES.swarm_id, window, tier, bucket_of(ALICE.peer_id, tier))
        for window in (WINDOW, WINDOW + 1) for tier in range(TIER_MAX + 1)
    )
    minimal = open_frame(BEACON.seal(beacon(reward=None, held_out=None), ALICE), BEACON, RULES, now=T0 + 1).value
    assert minimal.reward is None and minimal.held_out is None  # absent, not 0.0


def test_a_forged_beacon_under_alices_subkey_is_refused():
    envelope = Envelope.decode(BEACON.seal(beacon(model_id="alice/is-slow"), MALLORY))
    forged = dataclasses.replace(envelope, signer=ALICE.public_key).encode()
    assert refusal(stored(value=msgpack.packb(forged))) is Reason.BAD_SIGNATURE
    assert refusal(stored(signer=MALLORY, subkey=msgpack.packb(ALICE.peer_id))) is Reason.KEY_MISMATCH


def test_an_oversized_beacon_is_refused_before_it_is_parsed():
    payload = pb.Beacon(swarm_id=RULES.swarm_id, window=WINDOW, timestamp=T0, model_id="m" * 2000).SerializeToString()
    frame = Envelope.sign(ALICE, payload, domain=b"swarmnode/beacon\x00").encode()
    assert len(frame) > MAX_BEACON_BYTES
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    assert validator.validate(stored())  # the key is now known to hold beacons: a frame is judged as one
    assert not validator.validate(stored(value=msgpack.packb(frame))) and validator.refusals() == {"too_large": 1}
    # under a key no record proved yet, no kind's signature verifies within that kind's size
    assert refusal(stored(value=msgpack.packb(frame))) is Reason.BAD_SIGNATURE
    with pytest.raises(Rejected) as info:
        open_frame(frame, BEACON)
    assert info.value.reason is Reason.TOO_LARGE


def test_no_kind_of_record_passes_for_another():
    """A record is of the kind its signature verifies under and belongs only under keys its content computes for
    that kind: a presence under a census key, a beacon under a shard or directory key, are misplaced."""
    presence = PRESENCE.seal(Presence(RULES.swarm_id, WINDOW, T0), ALICE)
    assert refusal(stored(value=msgpack.packb(presence))) is Reason.KEY_MISMATCH  # a presence under a census key
    shard = key_id(batch_key(RULES.swarm_id, WINDOW, 3))
    assert refusal(stored(key=shard)) is Reason.KEY_MISMATCH  # a beacon under a shard key
    directory = key_id(directory_key(RULES.swarm_id, WINDOW, TIER, bucket_of(ALICE.peer_id, TIER)))
    assert refusal(stored(key=directory)) is Reason.KEY_MISMATCH
    bucket = bucket_of(ALICE.peer_id, TIER)
    for window in (WINDOW - 1, WINDOW + 2):  # the census keys of other windows than its own and the next
        assert refusal(stored(key=key_id(census_key(RULES.swarm_id, window, TIER, bucket)))) is Reason.KEY_MISMATCH
    assert refusal(stored(), now=T0 + 3600) is Reason.STALE  # long expired


def test_a_beacon_under_another_bucket_of_its_tier_or_another_tiers_bucket_is_refused():
    """PROTOCOL.md §4.2, B4: the key's bucket, at the key's tier, is bucket(signer, tier)."""
    bucket = bucket_of(ALICE.peer_id, TIER)
    other_bucket = (bucket + 1) % 2**TIER
    assert refusal(stored(key=key_id(census_key(RULES.swarm_id, WINDOW, TIER, other_bucket)))) is Reason.KEY_MISMATCH
    with pytest.raises(Rejected) as read:
        open_frame(BEACON.seal(beacon(), ALICE), BEACON, RULES, now=T0 + 1, slot=Slot(WINDOW, other_bucket, ALICE.peer_id, TIER))
    assert read.value.reason is Reason.KEY_MISMATCH
    # its bucket of one tier under another tier's key where the two differ (a bucket carries its tier)
    tier = next(t for t in range(1, TIER_MAX + 1) if bucket_of(ALICE.peer_id, t) != bucket_of(ALICE.peer_id, t - 1))
    lower = bucket_of(ALICE.peer_id, tier - 1)
    assert refusal(stored(key=key_id(census_key(RULES.swarm_id, WINDOW, tier, lower)))) is Reason.KEY_MISMATCH
    with pytest.raises(Rejected) as read:
        open_frame(BEACON.seal(beacon(), ALICE), BEACON, RULES, now=T0 + 1, slot=Slot(WINDOW, lower, ALICE.peer_id, tier))
    assert read.value.reason is Reason.KEY_MISMATCH


def test_a_stored_beacons_expiration_is_its_timestamp_plus_the_ttl_and_not_past():
    assert refusal(stored(expiration_time=T0 + 3600)) is Reason.BAD_EXPIRY
    expired = RULES.expiration_of(T0) + RULES.clock_skew_s + 1
    assert refusal(stored(), now=expired) is Reason.STALE


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model_id": "\x1b]0;pwned\x07Qwen"}, Reason.BAD_VALUE),  # a terminal escape
        ({"software": "swarmnode\u202e0.1"}, Reason.BAD_VALUE),  # a bidi override
        ({"model_id": "line\u2028break"}, Reason.BAD_VALUE),
        ({"phase": "Train"}, Reason.BAD_VALUE),
        ({"reward": 1.5}, Reason.BAD_VALUE),
        ({"held_out": float("nan")}, Reason.BAD_VALUE),
        ({"uptime_s": -1.0}, Reason.BAD_VALUE),
        ({"rollouts_per_hour": 1e12}, Reason.BAD_VALUE),
        ({"timestamp": T0 + 3600}, Reason.BAD_VALUE),  # outside its window
        ({"model_id": "m" * 201}, Reason.LIMIT_EXCEEDED),
        ({"phase": "a" * 17}, Reason.LIMIT_EXCEEDED),
        ({"swarm_id": "another-swarm"}, Reason.WRONG_SWARM),
    ],
)
def test_beacons_with_bad_fields_are_refused_with_their_reason(changes, reason):
    content = beacon(**changes)
    with pytest.raises(Rejected) as info:
        open_frame(BEACON.seal(content, ALICE), BEACON, RULES)
    assert info.value.reason is reason
    assert not SwarmRecordValidator(RULES, clock=lambda: T0 + 1).validate(stored(content=content))


def test_readers_keep_only_the_current_and_previous_window():
    frame = BEACON.seal(beacon(), ALICE)
    open_frame(frame, BEACON, RULES, now=T0 + RULES.window_s)
    lenient = dataclasses.replace(RULES, max_age_windows=5)  # a swarm's batch age does not stretch the census
    with pytest.raises(Rejected) as info:
        open_frame(frame, BEACON, lenient, now=T0 + 2 * RULES.window_s)
    assert info.value.reason is Reason.STALE


def test_a_beacon_under_the_next_epochs_keys_alone_waits_for_its_nodes_window_of_the_epoch():
    """A node's first beacon goes under its epoch's keys and the next's at once; after that, one beacon an epoch
    under the next epoch's keys, in the node's own window of the epoch (`BeaconService.offset`, drawn at random:
    a swarm's beacon stores spread over the epoch instead of all landing in its first window)."""
    rules = SwarmRules("s", window_s=1.0, record_ttl_s=2.0, epoch_windows=4)
    tiers = range(2, 5)
    first = census_module.beacon_places(1_002, tiers, {}, rules, offset=3)
    assert {key_window for key_window, _ in first} == {1_000, 1_004}
    standing = census_module.beacon_stood({}, 1_000, first, [True] * len(first), 1_002 + rules.epoch_record_ttl_s)
    assert [census_module.beacon_places(w, tiers, standing, rules, offset=3) for w in range(1_003, 1_007)] == [[]] * 4
    assert census_module.beacon_places(1_007, tiers, standing, rules, offset=3) == [(1_008, tier) for tier in tiers]
    service = BeaconService(None, ALICE, rules, lambda window, now: beacon(), lambda census: None, timeout_s=1.0)
    assert 0 <= service.offset < 4


@pytest.mark.parametrize(
    ("kind", "key_of", "placed", "misplaced"),
    [(BEACON, census_key, (0, 4), (3, 8)), (PRESENCE, directory_key, (0,), (3, 4))],
    ids=["beacon", "presence"],
)
def test_with_epochs_a_record_stands_under_its_epochs_keys_and_lives_until_the_next_epoch_ends(
    kind, key_of, placed, misplaced
):
    """PROTOCOL.md §4.1, §4.2, §5.1: with epochs of four windows, a presence of any window of an epoch is stored
    under the directory keys named by that epoch's first window, a beacon under those census keys and the next
    epoch's; both expire record_ttl_s + 6 windows after they were signed and are live while their epoch is the
    current one or the one before."""
    epochs = dataclasses.replace(RULES, epoch_windows=4)
    start = epochs.epoch_start(WINDOW)
    signed_at = (start + 3) * epochs.window_s + 1
    late = beacon(window=start + 3, timestamp=signed_at) if kind is BEACON else Presence(RULES.swarm_id, start + 3, signed_at)
    frame, bucket = kind.seal(late, ALICE), bucket_of(ALICE.peer_id, TIER)
    lives = signed_at + epochs.record_ttl_s + 6 * epochs.window_s

    def under(key_window: int, expiration: float = lives) -> DHTRecord:
        key = key_id(key_of(RULES.swarm_id, key_window, TIER, bucket))
        return DHTRecord(key, msgpack.packb(ALICE.peer_id), msgpack.packb(frame), expiration)

    validator = SwarmRecordValidator(epochs, clock=lambda: signed_at + 1)
    assert all(validator.validate(under(start + offset)) for offset in placed)
    wrong = [under(start + offset) for offset in misplaced] + [under(start, expiration=epochs.expiration_of(signed_at))]
    assert not any(validator.validate(record) for record in wrong)
    assert validator.refusals() == {"key_mismatch": 2, "bad_expiry": 1}
    open_frame(frame, kind, epochs, now=(start + 8) * epochs.window_s - 1)  # the next epoch's last second
    with pytest.raises(Rejected) as info:
        open_frame(frame, kind, epochs, now=(start + 8) * epochs.window_s + 1)
    assert info.value.reason is Reason.STALE


@settings(max_examples=150, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_single_bit_flip_of_a_stored_beacon_is_refused(position, bit):
    value = bytearray(stored().value)
    value[position % len(value)] ^= 1 << bit
    assert not SwarmRecordValidator(RULES, clock=lambda: T0 + 1).validate(dataclasses.replace(stored(), value=bytes(value)))


def test_a_census_key_holds_a_bounded_number_of_signers_and_one_beacon_per_signer_and_window():
    """Once a beacon proved a key (of any tier) to be a census key, the storage caps its signers and their rate."""
    validator = SwarmRecordValidator(RULES, clock=lambda: T0 + 1)
    top = key_id(census_key(RULES.swarm_id, WINDOW + 1, TIER_MAX, bucket_of(ALICE.peer_id, TIER_MAX)))
    assert validator.kinds.kind_of(top) is None
    assert validator.validate(stored(key=top)) and validator.kinds.kind_of(top) is BEACON
    storage = BoundedRecordStorage(kinds=validator.kinds, max_beacons_per_bucket=3)
    key = DHTID.from_bytes(top)
    expiry = RULES.expiration_of(T0)
    assert [storage.store_subkey(key, f"signer{i}", b"x" * 100, expiry) for i in range(5)] == [True] * 3 + [False] * 2
    assert not storage.store_subkey(key, "signer0", b"y" * 100, expiry + 1)  # same window: once is enough
    assert storage.store_subkey(key, "signer0", b"z" * 100, expiry + RULES.window_s)  # the next window's lands
    assert storage.refusals() == {"census_full": 2, "beacon_rate": 1}


def test_showable_text_excludes_what_could_rewrite_a_terminal_and_the_display_blanks_the_rest():
    assert showable("Qwen/Qwen2.5-0.5B-Instruct") and showable("模型 v2") and showable("a b")
    assert not any(showable(text) for text in ("a\tb", "a\x1b[2J", "a\u200bb", "a\u00a0b", "a\ue000", "a\u2029", "a\U000e0041"))
    # U+110BD is a format character this Python knows but the fixed wire list does not name: shown blanked
    assert showable("kaithi\U000110bd") and peer_text("kaithi\U000110bd").plain == "kaithi\ufffd"


def census_of(*beacons: tuple[str, Beacon], buckets_read: int = 2**TIER) -> Census:
    """A census of the 2^TIER buckets of TIER."""
    entries = [CensusEntry(peer, content) for peer, content in beacons]
    return Census(RULES.swarm_id, T0 + 5, entries, buckets_read, buckets_total=2**TIER, tier=TIER)


def test_totals_sum_the_swarm_and_are_scaled_up_from_a_sample():
    census = census_of(
        ("peer-a", beacon(reachability=Reachability.PUBLIC)), ("peer-b", beacon(model_id="swarmnode-seed")),
    )
    totals = census.totals()
    assert (totals.nodes, totals.models, totals.rounds_per_hour, totals.rollouts_per_hour) == (2, 2, 120.0, 960.0)
    assert totals.reachability == {"public": 1, "private": 1} and not totals.estimated
    sample = census_of(("peer-a", beacon()), buckets_read=2).totals()
    assert sample.estimated and sample.nodes == 4 and sample.rollouts_per_hour == 4 * 480.0
    assert Census.from_json(census.to_json()) == census


def test_the_census_sorts_best_first_with_missing_values_last():
    census = census_of(
        ("peer-a", beacon(reward=0.2, round=5)), ("peer-b", beacon(reward=None, round=50)), ("peer-c", beacon(reward=0.9, round=1)),
    )
    assert [entry.peer_id for entry in census.sorted("reward")] == ["peer-c", "peer-a", "peer-b"]
    assert [entry.peer_id for entry in census.sorted("round")] == ["peer-b", "peer-a", "peer-c"]
    with pytest.raises(ValueError):
        census.sorted("rewards")


def test_a_peers_text_is_printed_as_text_not_as_markup():
    census = census_of(("peer-a", beacon(model_id="[bold red]OFFICIAL[/] [link=https://x]click[/link]")))
    out = io.StringIO()
    Console(file=out, width=300, force_terminal=False).print(census_table(census, T0 + 10))
    assert "[bold red]OFFICIAL[/] [link=https://x]click[/link]" in out.getvalue()
    assert "1 node (1 private), 1 model," in census_title(census)


def test_a_beacon_peers_would_refuse_is_not_sent():
    long_name = beacon(model_id="/home/volunteer/" + "checkpoints/" * 20)

    class NoDHT:
        def estimated_swarm_size(self) -> float:
            return 1.0

        def store(self, items, timeout_s):
            raise AssertionError("nothing should be stored")

    service = BeaconService(NoDHT(), ALICE, RULES, lambda window, now: dataclasses.replace(long_name, window=window, timestamp=now),
                            lambda census: None, timeout_s=1.0)
    assert not service.publish() and "limit_exceeded" in service.last_error and service.failures == 1


def test_a_failing_dht_does_not_end_the_beacon_thread():
    class BrokenDHT:
        calls = 0

        def estimated_swarm_size(self) -> float:
            return 1.0

        def store(self, items, timeout_s):
            BrokenDHT.calls += 1
            raise RuntimeError("the DHT loop is gone")

    fast = dataclasses.replace(RULES, window_s=0.05)  # a new window every 50 ms

    def source(window: int, now: float) -> Beacon:
        return beacon(window=window, timestamp=now)

    service = BeaconService(BrokenDHT(), ALICE, fast, source, lambda census: None, timeout_s=0.1)
    service.start()
    deadline = time.monotonic() + 10
    while BrokenDHT.calls < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    service.stop()
    assert BrokenDHT.calls >= 3 and "RuntimeError: the DHT loop is gone" in service.last_error


class EmptyBuckets:
    """A DHT whose census keys all answer, empty: how many buckets a census reads is its tier's."""

    verified = None

    def estimated_swarm_size(self) -> float:
        return 1.0

    def get_many(self, keys, *, timeout_s, quorum):
        return Read({key: {} for key in keys}, False, {key: Coverage(5, quorum, quorum, False, quorum) for key in keys})


@pytest.mark.parametrize(("nodes", "due_again"), [(None, True), (10_000.0, False)])
def test_a_nodes_own_census_is_every_window_in_a_small_swarm_and_every_few_minutes_in_a_large_one(
    monkeypatch, nodes, due_again
):
    """A small swarm's census is one read and stays every window (the dashboard follows joins at once); a census
    spread over many buckets is the largest part of a node's DHT bytes in a large swarm, taken every
    CENSUS_EVERY_S."""
    monkeypatch.setattr(census_module, "CENSUS_EVERY_S", 0.3)
    fast = dataclasses.replace(RULES, window_s=0.2)
    size = SwarmSize()
    if nodes is not None:
        size.update(nodes)
    service = BeaconService(EmptyBuckets(), ALICE, fast, lambda window, now: beacon(window=window, timestamp=now),
                            lambda census: None, timeout_s=1.0, size=size)
    assert service.census_due()
    census = service.sampled_census()
    assert (census.buckets_total > 2) is (not due_again)
    assert service.census_due() is due_again
    time.sleep(0.3 - 0.2 / 2)
    assert service.census_due()
