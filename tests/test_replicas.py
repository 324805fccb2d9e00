"""One key's read over its replicas (net/replicas.py), with answers as hivemind hands them over: a liar can add
entries or leave them out, but what one honest replica asked holds is read, and what the replicas agree on is
opened before what one of them alone returns."""

from __future__ import annotations

import random

from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID
from hivemind.utils import MSGPackSerializer, ValueWithExpiration

from swarmnode.net.census import Census
from swarmnode.net.replicas import BATCH_QUORUM, READ_QUORUM, KeyRead
from swarmnode.wire.identity import Identity

EXPIRES = 1_800_000_000.0


def answer(entries: dict[str, bytes], expiration: float = EXPIRES) -> ValueWithExpiration:
    """A replica's dictionary for a key, as a lookup returns it: each entry a serialized frame with its expiration."""
    return ValueWithExpiration(
        {subkey: ValueWithExpiration(MSGPackSerializer.dumps(frame), expiration) for subkey, frame in entries.items()},
        expiration,
    )


def key_read(replicas: int = 5, quorum: int = READ_QUORUM, wanted: frozenset[str] = frozenset()) -> KeyRead:
    peers = [PeerID.from_base58(Identity.from_seed(bytes([index + 1]) * 32).peer_id) for index in range(replicas)]
    return KeyRead(
        DHTID.generate(source=b"key"), {DHTID.generate(source=peer.to_bytes()): peer for peer in peers}, quorum, wanted
    )


HONEST = {"alice": b"frame-a", "bob": b"frame-b"}


def test_a_liar_answering_an_empty_dictionary_hides_nothing_an_honest_replica_asked_holds():
    read = key_read()
    liar, honest, *_ = read.first_round(random.Random(0))
    read.answer(liar, answer({}))
    read.answer(honest, answer(HONEST))
    assert read.disagreed and len(read.second_round()) == 2  # answers differ: the rest are asked too
    assert {subkey: frame for subkey, (frame, _) in read.entries().items()} == HONEST


def test_the_entries_most_replicas_returned_come_first_so_a_liars_sybils_come_after_the_honest_ones():
    read = key_read()
    replicas = list(read.replicas)
    sybils = {f"sybil-{index:02d}": b"junk" for index in range(64)}
    read.answer(replicas[0], answer(sybils))  # the liar answers first, with a full key of its own
    for replica in replicas[1:3]:
        read.answer(replica, answer(HONEST))
    assert list(read.entries())[:2] == ["alice", "bob"]
    assert len(read.entries()) == 66  # nothing is dropped here: the reader's cap decides what it opens


def test_each_entry_is_kept_at_the_newest_expiration_any_replica_holds():
    read = key_read()
    first, second, *_ = read.replicas
    read.answer(first, answer(HONEST, EXPIRES))
    read.answer(second, answer(HONEST, EXPIRES + 60))
    assert {expiration for _, expiration in read.entries().values()} == {EXPIRES + 60}


def test_agreeing_answers_from_a_quorum_end_the_read_and_too_few_answers_make_it_thin():
    read = key_read()
    for replica in read.first_round(random.Random(1)):
        read.answer(replica, answer(HONEST))
    assert read.second_round() == [] and not read.coverage().thin
    silent = key_read()
    asked = silent.first_round(random.Random(1))
    silent.answer(asked[0], answer(HONEST))  # the other two never answered
    assert len(silent.second_round()) == 2  # too few answers: the rest are asked
    assert silent.coverage().thin


def test_a_read_for_a_known_signer_asks_one_replica_and_stops_at_its_batch():
    read = key_read(quorum=BATCH_QUORUM, wanted=frozenset({"alice"}))
    [asked] = read.first_round(random.Random(2))
    read.answer(asked, answer(HONEST))
    assert read.second_round() == [] and not read.coverage().thin  # a signed batch proves itself: one answer does
    assert set(read.entries()) == {"alice", "bob"}


def test_a_known_signers_absence_takes_a_quorum_of_answers_so_one_liar_cannot_hide_its_batch():
    read = key_read(quorum=BATCH_QUORUM, wanted=frozenset({"alice"}))
    [liar] = read.first_round(random.Random(2))
    read.answer(liar, answer({}))  # hides alice's batch
    assert read.coverage().thin  # one empty answer proves nothing yet
    [honest] = read.second_round()
    assert honest != liar
    read.answer(honest, answer(HONEST))
    assert "alice" in read.entries() and not read.coverage().thin
    absent = key_read(quorum=BATCH_QUORUM, wanted=frozenset({"carol"}))
    for replica in [*absent.first_round(random.Random(3)), *absent.second_round()]:
        absent.answer(replica, answer(HONEST))
    assert absent.second_round() == [] and not absent.coverage().thin  # two replicas agree carol is not there


def test_whom_a_known_signers_read_asks_next_is_drawn_so_liars_next_to_the_key_are_not_always_next():
    asked_next = set()
    for seed in range(20):
        read = key_read(quorum=BATCH_QUORUM, wanted=frozenset({"alice"}))
        [first] = read.first_round(random.Random(seed))
        read.answer(first, answer({}))
        asked_next.update(read.second_round())
    assert len(asked_next) == 5


def test_a_known_signers_read_whose_one_replica_was_silent_asks_a_quorum_of_others():
    read = key_read(quorum=BATCH_QUORUM, wanted=frozenset({"alice"}))
    [silent] = read.first_round(random.Random(4))
    assert len(others := read.second_round()) == BATCH_QUORUM and silent not in others


def test_a_census_whose_bucket_held_more_signers_than_it_opens_is_not_complete_and_says_so_in_json():
    census = Census("swarm", 0.0, [], buckets_read=8, buckets_total=8, full_buckets=1)
    assert not census.complete
    assert Census.from_json(census.to_json()).full_buckets == 1
    assert Census("swarm", 0.0, [], buckets_read=8, buckets_total=8).complete
