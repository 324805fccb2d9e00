"""One key's read over its replicas (net/replicas.py), with answers as hivemind hands them over: a liar can add
entries or leave them out, but what one honest replica asked holds is read, and what the replicas agree on is
opened before what one of them alone returns."""

from __future__ import annotations

import random

from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID
from hivemind.utils import MSGPackSerializer, ValueWithExpiration

from swarmnode.net.census import Census
from swarmnode.net.replicas import KeyRead
from swarmnode.wire.identity import Identity

EXPIRES = 1_800_000_000.0


def answer(entries: dict[str, bytes], expiration: float = EXPIRES) -> ValueWithExpiration:
    """A replica's dictionary for a key, as a lookup returns it: each entry a serialized frame with its expiration."""
    return ValueWithExpiration(
        {subkey: ValueWithExpiration(MSGPackSerializer.dumps(frame), expiration) for subkey, frame in entries.items()},
        expiration,
    )


def key_read(replicas: int = 5) -> KeyRead:
    peers = [PeerID.from_base58(Identity.from_seed(bytes([index + 1]) * 32).peer_id) for index in range(replicas)]
    return KeyRead(DHTID.generate(source=b"key"), {DHTID.generate(source=peer.to_bytes()): peer for peer in peers})


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


def test_a_census_whose_bucket_held_more_signers_than_it_opens_is_not_complete_and_says_so_in_json():
    census = Census("swarm", 0.0, [], buckets_read=8, buckets_total=8, full_buckets=1)
    assert not census.complete
    assert Census.from_json(census.to_json()).full_buckets == 1
    assert Census("swarm", 0.0, [], buckets_read=8, buckets_total=8).complete
