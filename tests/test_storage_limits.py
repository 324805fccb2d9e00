"""The record storage's bookkeeping under floods (PROTOCOL.md §5.1): replacements charge only their growth, a
record hivemind does not keep is reported as not stored, expired bytes come back at the recount interval and
not sooner, and the expiration heaps stay proportional to what is stored without being rebuilt on every store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hivemind.dht.routing import DHTID
from hivemind.utils.timed_storage import TimedStorage

import swarmnode.net.storage as storage_module
from swarmnode.net.storage import RECOUNT_INTERVAL_S, BoundedRecordStorage, cost

T0 = 1_800_000_010.0
UNLIMITED = 10**9


class Clock:
    """One clock for hivemind's record expiry and the storage's recount interval, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(T0)
    monkeypatch.setattr("hivemind.utils.timed_storage.get_dht_time", clock)
    monkeypatch.setattr(storage_module, "time", SimpleNamespace(monotonic=clock))
    return clock


def heap_bound(storage: TimedStorage) -> int:
    """The most expiration-heap entries a storage may hold for the records it holds."""
    return 2 * len(storage.data) + 64


def test_replacing_a_record_charges_only_the_difference_in_size(clock: Clock) -> None:
    """A signer shrinking its record frees the difference, so a key at its budget still takes another signer's."""
    storage = BoundedRecordStorage(max_key_bytes=cost(900) + cost(1_000), max_total_bytes=UNLIMITED)
    assert storage.store_subkey(DHTID(1), "alice", b"v" * 1_000, T0 + 60)
    assert storage.store_subkey(DHTID(1), "alice", b"w" * 900, T0 + 61)
    assert storage.stored_bytes == cost(900)
    assert storage.store_subkey(DHTID(1), "bob", b"v" * 1_000, T0 + 60)  # exactly fills the key's budget
    assert storage.store_subkey(DHTID(1), "alice", b"x" * 900, T0 + 62)  # a same-size replacement at the budget
    assert storage.stored_bytes == cost(900) + cost(1_000) and not storage.refusals()


def test_an_already_expired_record_is_reported_as_not_stored_and_costs_nothing(clock: Clock) -> None:
    """hivemind drops a record past its expiry; the store must say so (the sender is told), whether the key is new
    or already holds records, and charge no bytes for it."""
    storage = BoundedRecordStorage(max_key_bytes=UNLIMITED, max_total_bytes=UNLIMITED)
    assert not storage.store_subkey(DHTID(1), "alice", b"v" * 1_000, T0 - 1)
    assert storage.get(DHTID(1)) is None and storage.stored_bytes == 0
    assert storage.store_subkey(DHTID(2), "alice", b"v" * 1_000, T0 + 60)
    assert not storage.store_subkey(DHTID(2), "bob", b"v" * 1_000, T0 - 1)
    assert [subkey for subkey, _ in storage.get(DHTID(2)).value.items()] == ["alice"]
    assert storage.stored_bytes == cost(1_000)


def test_expired_bytes_come_back_once_the_recount_interval_has_passed_and_not_before(clock: Clock) -> None:
    """Recounting walks every record, so a flood must not trigger it more than once an interval; once the
    interval has passed, what hivemind expired silently frees its budget."""
    storage = BoundedRecordStorage(max_key_bytes=UNLIMITED, max_total_bytes=2 * cost(1_000))
    assert storage.store_subkey(DHTID(1), "short", b"v" * 1_000, T0 + 0.2)
    assert storage.store_subkey(DHTID(2), "long", b"v" * 1_000, T0 + 60)
    clock.now = T0 + RECOUNT_INTERVAL_S / 2  # "short" has expired, but the last count is too recent to redo
    assert not storage.store_subkey(DHTID(3), "late", b"v" * 1_000, T0 + 60)
    assert storage.stored_bytes == 2 * cost(1_000) and storage.refusals() == {"storage_full": 1}
    clock.now = T0 + RECOUNT_INTERVAL_S
    assert storage.store_subkey(DHTID(3), "late", b"v" * 1_000, T0 + 60)
    assert storage.stored_bytes == 2 * cost(1_000) and storage.refusals() == {"storage_full": 1}


def test_a_flood_of_overwrites_keeps_every_expiration_heap_within_twice_its_records_plus_64(clock: Clock) -> None:
    """Every store pushes a heap entry that hivemind drops only at expiry: the heaps of the storage and of each
    key stay within 2 * records + 64 however many overwrites arrive, for a key of one record or of many."""
    storage = BoundedRecordStorage(max_key_bytes=UNLIMITED, max_total_bytes=UNLIMITED)
    subkeys = {DHTID(1): ["alone"], DHTID(2): [f"signer{i}" for i in range(40)]}
    expiry = T0 + 60
    for _ in range(100):
        for key, names in subkeys.items():
            for name in names:
                expiry += 1
                assert storage.store_subkey(key, name, b"v" * 10, expiry)
                assert len(storage.expiration_heap) <= heap_bound(storage)
                records = storage.data[key].value
                assert len(records.expiration_heap) <= heap_bound(records), (key, len(records.expiration_heap))


def test_the_expiration_heap_is_rebuilt_only_once_it_exceeds_its_bound(clock: Clock) -> None:
    """Rebuilding a heap costs every record it holds, so it is done once per 2 * records + 64 - records stores,
    not on every store: superseded entries stay until the bound is exceeded, then only the live ones remain."""
    storage = BoundedRecordStorage(max_key_bytes=UNLIMITED, max_total_bytes=UNLIMITED)
    live = 32
    for i in range(live):
        assert storage.store_subkey(DHTID(1), f"signer{i}", b"v" * 10, T0 + 60)
    records = storage.data[DHTID(1)].value
    bound = heap_bound(records)
    lengths = []
    for step in range(2 * (bound - live + 1)):
        assert storage.store_subkey(DHTID(1), "signer0", b"v" * 10, T0 + 61 + step)
        lengths.append(len(records.expiration_heap))
    assert lengths == (list(range(live + 1, bound + 1)) + [live]) * 2
