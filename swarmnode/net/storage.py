"""What a peer stores for others: hivemind's record storage under a byte budget per key and in total, with caps
on the entries of a directory or census key and on how often a signer's beacon is replaced (PROTOCOL.md §5.1).
Valid frames cost an attacker nothing but fresh keys, so nothing a peer holds for others is unbounded, no
signer's large records keep a smaller one out of a full key, and what can be refused without opening a frame
is refused before its signature is checked (`precheck`).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter

from hivemind.dht.routing import DHTID, Subkey
from hivemind.dht.storage import DHTLocalStorage, DictionaryDHTValue
from hivemind.utils.timed_storage import TimedStorage

from swarmnode.net.validator import KeyKinds
from swarmnode.wire.beacon import BEACON
from swarmnode.wire.presence import PRESENCE

# Storage budget (local policy, PROTOCOL.md §5.1). A key stays below hivemind's 4 MiB message limit, or no
# reader could fetch it at all; the total bounds a peer's memory whatever the number of signers.
MAX_KEY_BYTES = 3 * 2**20
MAX_STORED_BYTES = 128 * 2**20
# A directory key holds at most this many entries: a collector reads the whole key each round, so this
# bounds its cost whatever the swarm's size (§4.1). First come, first kept within a window.
MAX_DIRECTORY_ENTRIES = 32
# A census bucket key holds at most this many signers' beacons (a full census reads every bucket).
MAX_BEACONS_PER_BUCKET = 64
NOT_NEWER = "not_newer"  # a copy no newer than the one stored: refused, and not counted (replicas resend freely)
RECOUNT_INTERVAL_S = 1.0
# What an entry costs beyond its value (hivemind's dictionaries, expiration heap entry, the subkey), counted in
# every budget: a flood of tiny valid frames must not hold more memory than the budget says.
RECORD_OVERHEAD_BYTES = 512


def cost(value_bytes: int) -> int:
    return value_bytes + RECORD_OVERHEAD_BYTES


class BoundedRecordStorage(DHTLocalStorage):
    """hivemind's storage with a byte budget per key and in total; hivemind calls `store_subkey` when a peer
    asks us to store a record that our validator accepted.

    hivemind's own storage has no size limit, and a valid record costs nothing but a key pair, so a peer
    making up identities could fill our memory with validly signed frames. Budgets count every entry's value
    and RECORD_OVERHEAD_BYTES. A record that would exceed a key's budget evicts other signers' records larger
    than itself, largest first (`evicted_larger`), so that a few huge frames signed by keys ground into a
    victim's shard cannot keep its batch out; if that does not make room it is refused (`key_full`), as it is
    beyond the total (`storage_full`): what is stored stays readable, and a flood evicts nothing smaller.
    Byte counts are kept exact for stores and replacements and recounted at most once a second for
    expirations (which hivemind performs silently), so they never under-count. Also avoids two hivemind habits under floods: every store pushes an expiration-heap
    entry, dropped only when it expires (so the heap grows with the store rate), and a refused older record
    re-points the subkey's expiry at itself, deleting the newer one early. A directory key (`kinds` tells
    which keys are, once a record proved it) holds at most `max_directory_entries` signers (`directory_full`), a census key
    `max_beacons_per_bucket` (`census_full`), and a signer's beacon is replaced only by one of a later
    window (`beacon_rate`): a beacon costs its replicas one store per signer and window, however often sent.
    """

    def __init__(
        self,
        max_key_bytes: int = MAX_KEY_BYTES,
        max_total_bytes: int = MAX_STORED_BYTES,
        kinds: KeyKinds | None = None,
        max_directory_entries: int = MAX_DIRECTORY_ENTRIES,
        max_beacons_per_bucket: int = MAX_BEACONS_PER_BUCKET,
    ) -> None:
        super().__init__()
        self.max_key_bytes = max_key_bytes
        self.max_total_bytes = max_total_bytes
        self.kinds = kinds
        self.max_entries = {PRESENCE: max_directory_entries, BEACON: max_beacons_per_bucket}
        self._key_bytes: dict[DHTID, int] = {}
        self._total_bytes = 0
        self._counted_at = float("-inf")
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()

    def store(self, key: DHTID, value: bytes, expiration_time: float, subkey: Subkey | None = None) -> bool:
        if subkey is None:  # our validator refuses regular values; should one ever pass, it is not kept
            return self._refuse("not_a_record")
        return self.store_subkey(key, subkey, value, expiration_time)

    def precheck(self, key: DHTID, subkey: Subkey, value_bytes: int, expiration_time: float) -> str | None:
        """Why a record of this size would be refused, or None: what store_subkey would decide from the sizes and
        times alone, asked before the frame is opened (counted here when refused)."""
        refusal, _ = self._admit(key, subkey, value_bytes, expiration_time)
        self._count(refusal)
        return refusal

    def store_subkey(self, key: DHTID, subkey: Subkey, value: bytes, expiration_time: float) -> bool:
        refusal, evicted = self._admit(key, subkey, len(value), expiration_time)
        if refusal is not None:
            self._count(refusal)
            return False
        records = self.get(key)
        for victim in evicted:
            assert records is not None and isinstance(records.value, DictionaryDHTValue)
            freed = cost(len(records.value.get(victim).value))
            del records.value[victim]
            self._key_bytes[key] -= freed
            self._total_bytes -= freed
            self._refuse("evicted_larger")
        previous = records.value.get(subkey) if records is not None and isinstance(records.value, DictionaryDHTValue) else None
        growth = cost(len(value)) - (cost(len(previous.value)) if previous is not None else 0)
        if not super().store_subkey(key, subkey, value, expiration_time):
            return False
        self._key_bytes[key] = self._key_bytes.get(key, 0) + growth
        self._total_bytes += growth
        _compact(self)
        entry = self.get(key)
        if entry is not None and isinstance(entry.value, DictionaryDHTValue):
            _compact(entry.value)
        return True

    def _admit(self, key: DHTID, subkey: Subkey, value_bytes: int, expiration_time: float) -> tuple[str | None, list[Subkey]]:
        """(the refusal, or None; the other signers' records to evict first to make room)."""
        entry = self.get(key)
        records = entry.value if entry is not None and isinstance(entry.value, DictionaryDHTValue) else None
        previous = records.get(subkey) if records is not None else None
        if previous is not None and previous.expiration_time >= expiration_time:
            return NOT_NEWER, []
        kind = self.kinds.kind_of(key.to_bytes()) if self.kinds is not None else None
        if previous is None and records is not None and kind in self.max_entries:
            if len(records) >= self.max_entries[kind]:
                return ("directory_full" if kind is PRESENCE else "census_full"), []
        if previous is not None and kind is BEACON and self._same_window(previous.expiration_time, expiration_time):
            return "beacon_rate", []
        self._recount_if_due()
        growth = cost(value_bytes) - (cost(len(previous.value)) if previous is not None else 0)
        excess = self._key_bytes.get(key, 0) + growth - self.max_key_bytes
        evicted: list[Subkey] = []
        if excess > 0:
            larger = sorted(
                ((len(item.value), other) for other, item in (records.items() if records is not None else [])
                 if other != subkey and len(item.value) > value_bytes),
                reverse=True,
            )
            for size, other in larger:
                if excess <= 0:
                    break
                evicted.append(other)
                excess -= cost(size)
                growth -= cost(size)
            if excess > 0:
                return "key_full", []
        if self._total_bytes + growth > self.max_total_bytes:
            return "storage_full", []
        return None, evicted

    def _same_window(self, expiration_a: float, expiration_b: float) -> bool:
        """Whether two beacons of a key were signed in the same window (the validator tied expiration to timestamp)."""
        assert self.kinds is not None
        rules = self.kinds.rules
        return rules.window_of(expiration_a - rules.epoch_record_ttl_s) == rules.window_of(expiration_b - rules.epoch_record_ttl_s)

    def clear(self) -> None:
        """Drop every record held: a node that stopped serving must not answer lookups (its own first) from
        records peers stored with it while it was a replica."""
        super().clear()
        self._key_bytes = {}
        self._total_bytes = 0

    @property
    def stored_bytes(self) -> int:
        """Bytes of the values held (an upper bound until the next recount)."""
        return self._total_bytes

    def refusals(self) -> Counter[str]:
        with self._lock:
            return Counter(self._refused)

    def _count(self, refusal: str | None) -> None:
        if refusal is not None and refusal != NOT_NEWER:  # an older copy is no offence: replicas resend freely
            self._refuse(refusal)

    def _refuse(self, reason: str) -> bool:
        with self._lock:
            self._refused[reason] += 1
        return False

    def _recount_if_due(self) -> None:
        now = time.monotonic()
        if now - self._counted_at < RECOUNT_INTERVAL_S:
            return
        self._counted_at = now
        self._key_bytes = {
            key: sum(cost(len(record.value)) for _, record in entry.value.items())
            for key, entry in self.items()
            if isinstance(entry.value, DictionaryDHTValue)
        }
        self._total_bytes = sum(self._key_bytes.values())


def _compact(storage: TimedStorage) -> None:
    """Drop superseded expiration-heap entries once they outnumber the live ones."""
    if len(storage.expiration_heap) > 2 * len(storage.data) + 64:
        storage.expiration_heap = [entry for key, entry in storage.key_to_heap.items() if key in storage.data]
        heapq.heapify(storage.expiration_heap)
