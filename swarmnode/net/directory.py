"""The directory (PROTOCOL.md §4.1) as one node uses it: its own presence entry, stored with the first batch of
each epoch, and what others' entries teach it: who publishes (signers behind NAT, in nobody's routing table,
included) and which public peers it can rejoin through.

A publisher writes its entry under its bucket's key of the three tiers around the one the swarm's size calls for
(`wire/keys.py`), once an epoch (`swarm.epoch_windows` windows); a reader reads a few random buckets of that tier,
once an epoch, in a window of it drawn once per node after the first (when every steady publisher's first batch of
the epoch has carried its entry), so that a swarm's reads spread over the epoch (every round only while it knows
too few publishers). A key then holds about DIRECTORY_PER_KEY signers and serves about as many reads an epoch,
whatever the swarm's size.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from swarmnode.net.drawn_ahead import DrawnAhead
from swarmnode.net.peer import DHTPeer, StoreItem
from swarmnode.net.recent_set import RecentSet
from swarmnode.net.replicas import REPLICAS
from swarmnode.net.storage import MAX_DIRECTORY_ENTRIES
from swarmnode.net.swarm_size import SwarmSize
from swarmnode.wire.address import Reachability, is_tcp_address
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import DIRECTORY_PER_KEY, bucket_of, directory_key, tier_for, written_tiers
from swarmnode.wire.presence import MAX_ADDRESSES, PRESENCE, Presence, join_addresses
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Rejected
from swarmnode.wire.rules import Slot, SwarmRules, shard_of

DIRECTORY_SLACK = 2  # read the directory every round while we know fewer than this x the peers a collect wants
MAX_COVERED = 4096  # routing-table peers remembered as met before (`met_since_read`), the least recent forgotten


@dataclass
class DirectoryRead:
    """What one read of the directory cost and found."""

    keys_read: int = 0
    entries: int = 0  # other signers' valid entries
    bytes_in: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # presence_<reason>
    timed_out: bool = False
    thin: int = 0  # directory keys too few of whose replicas answered


class Directory:
    """One node's side of the directory: not thread-safe; its gossip calls it under its own locks."""

    def __init__(self, peer: DHTPeer, identity: Identity, rules: SwarmRules, size: SwarmSize) -> None:
        self._peer = peer
        self._identity = identity
        self.rules = rules
        self._size = size
        self._random = random.Random()
        # the window of each epoch whose first collect reads the directory: after the epoch's first (publishers are
        # storing their entries then), at random, so that the swarm's reads do not all reach the keys' replicas at once
        self.read_offset = self._random.randint(min(1, rules.epoch_windows - 1), rules.epoch_windows - 1)
        self._signers: dict[str, int] = {}  # signer -> newest window a batch of it was read from
        self._listed: dict[str, int] = {}  # signer -> newest window whose directory lists it (a claim until read)
        self._absent: dict[str, int] = {}  # signer -> the window of an entry of it whose shard held nothing
        self._read: set[int] = set()  # epochs (first windows) whose directory an earlier read got
        self._covered = RecentSet(MAX_COVERED)  # peers our routing table held when any directory read of ours began
        self._stored_epoch: int | None = None  # the epoch whose directory another peer holds our entry in
        self._ahead: DrawnAhead[tuple[int, list[int]]] = DrawnAhead()  # (tier, buckets) `keys_ahead` drew

    def entry_due(self, window: int) -> bool:
        """Until another peer holds our entry of this epoch, every batch store carries it along."""
        return self._stored_epoch != self.rules.epoch_start(window)

    def _tier(self) -> tuple[int, float | None]:
        """The tier the swarm's size (as we know it) calls for, and that size."""
        nodes = self._size.nodes(fallback=max(len(self.publishers()) + 1, self._peer.estimated_swarm_size()))
        return tier_for(nodes, DIRECTORY_PER_KEY), nodes

    def entries(self, window: int, now: float) -> list[StoreItem]:
        """Our entry, under our bucket of each tier we write: reachability, and where peers dialled us back (only
        if they could)."""
        report = self._peer.reachability
        addresses: tuple[str, ...] = ()
        if report.reachability is Reachability.PUBLIC:
            transports = [maddr.split("/p2p/")[0] for maddr in self._peer.advertised_maddrs()]
            addresses = tuple(address for address in transports if is_tcp_address(address))[:MAX_ADDRESSES]
        presence = Presence(self.rules.swarm_id, window, now, report.reachability, addresses)
        frame, signer = PRESENCE.seal(presence, self._identity), self._identity.peer_id
        expires = PRESENCE.expiration(presence, self.rules)
        return [StoreItem(key, signer, frame, expires) for key in self.entry_keys(window)]

    def entry_keys(self, window: int) -> list[str]:
        """Our bucket's key of each tier we write, of `window`'s epoch."""
        signer, epoch = self._identity.peer_id, self.rules.epoch_start(window)
        return [
            directory_key(self.rules.swarm_id, epoch, tier, bucket_of(signer, tier)) for tier in written_tiers(self._tier()[0])
        ]

    def entry_stored(self, window: int) -> None:
        self._stored_epoch = self.rules.epoch_start(window)

    def saw(self, signer: str, window: int) -> None:
        """A batch of `signer` was read from `window`: it publishes."""
        self._signers[signer] = max(self._signers.get(signer, 0), window)

    def publishers(self) -> set[str]:
        """Peers we know publish: those in our routing table and the signers the directory or recent batches
        showed us (which include nodes behind NAT, in nobody's routing table)."""
        publishers = set(self._peer.known_peer_ids()) | set(self._signers) | set(self._listed)
        publishers.discard(self._identity.peer_id)
        return publishers

    def met_since_read(self) -> set[str]:
        """Peers in our routing table that it held at none of our directory reads, and that no read listed: nodes
        that joined since our last read (their entries wait for the next epoch's), or that we never met before,
        all of them alive when met. A peer that left the table and came back is not new."""
        met = {peer for peer in self._peer.known_peer_ids() if peer not in self._covered}
        return met - set(self._listed) - {self._identity.peer_id}

    def listed(self) -> dict[str, int]:
        """The signers the directory named lately, each with the newest window it named them in (their batch of that
        window is stored with the entry). Its buckets are drawn at random: a fair draw from every publisher, those
        behind NAT included."""
        return {signer: window for signer, window in self._listed.items() if signer != self._identity.peer_id}

    def not_found(self, read_slots: set[tuple[int, int]], found: set[str]) -> int:
        """Drop listed signers whose shard was read in the window they were listed in and held no batch of theirs:
        an entry costs nothing to forge, and a Sybil's entries would otherwise keep collectors reading empty shards
        first. `read_slots`: (window, shard) keys read from enough replicas. Returns how many."""
        absent = [
            signer for signer, window in self._listed.items()
            if signer not in found and signer not in self._signers
            and (window, shard_of(signer, self.rules.num_shards)) in read_slots
        ]
        for signer in absent:
            self._absent[signer] = self._listed.pop(signer)  # not listed again for that entry, however often read
        return len(absent)

    def read_due(self, window: int, peers_needed: int) -> bool:
        """Once an epoch, from its window `read_offset` on; and every round while we know fewer than twice the
        publishers a collect wants (a node that just joined, a small swarm, or one whose other members are all behind
        NAT)."""
        epoch = self.rules.epoch_start(window)
        due = epoch not in self._read and window - epoch >= self.read_offset
        return due or len(self.publishers()) < DIRECTORY_SLACK * peers_needed

    def keys_ahead(self, window: int, peers_needed: int) -> list[str]:
        """The keys the first read of `window` (the next one) will read, drawn now (`Gossip.look_ahead` finds their
        replicas early); none when no read is due then."""
        if not self.read_due(window, peers_needed):
            return []
        tier, nodes = self._tier()
        buckets = self._draw(tier, nodes, peers_needed)
        self._ahead.put(window, (tier, buckets))
        return list(self._keys(window, tier, buckets))

    def _draw(self, tier: int, nodes: float | None, peers_needed: int) -> list[int]:
        """Random buckets of `tier`, as many as should list DIRECTORY_SLACK x `peers_needed` signers."""
        per_key = max((nodes or 1.0) / 2**tier, 1.0)
        return self._random.sample(range(2**tier), min(math.ceil(DIRECTORY_SLACK * peers_needed / per_key), 2**tier))

    def _keys(self, window: int, tier: int, buckets: list[int]) -> dict[str, tuple[int, int]]:
        """Key -> (epoch, bucket): the buckets' keys of this window's epoch and of the one before, if not read yet."""
        epoch = self.rules.epoch_start(window)
        epochs = [epoch] + [epoch - self.rules.epoch_windows] * (epoch - self.rules.epoch_windows not in self._read)
        return {directory_key(self.rules.swarm_id, e, tier, bucket): (e, bucket) for e in epochs for bucket in buckets}

    def read(self, window: int, now: float, deadline: float, peers_needed: int) -> DirectoryRead:
        """Learn who publishes from random buckets of the directory of this epoch (and of the one before, once):
        as many as should list DIRECTORY_SLACK x `peers_needed` signers, those `keys_ahead` drew for the window's
        first read. Public signers' addresses become entry points to rejoin through."""
        tier, nodes = self._tier()
        ahead = self._ahead.take(window)
        buckets = ahead[1] if ahead is not None and ahead[0] == tier else self._draw(tier, nodes, peers_needed)
        keys = self._keys(window, tier, buckets)
        result = DirectoryRead(keys_read=len(keys))
        covered = self._peer.known_peer_ids()
        # every replica: an answer is small (at most MAX_DIRECTORY_ENTRIES presences), and one liar must not hide it
        read = self._peer.get_many(list(keys), timeout_s=max(deadline - time.monotonic(), 0.0), quorum=REPLICAS)
        found, result.timed_out, result.thin = read.entries, read.timed_out, len(read.thin_keys())
        if not result.timed_out:
            self._read.update(epoch for epoch, _ in keys.values())
            self._covered.update(covered)
        for key, entries in found.items():
            if len(entries) > MAX_DIRECTORY_ENTRIES:  # more than an honest replica holds: the rest is not opened
                result.rejected["presence_directory_full"] += len(entries) - MAX_DIRECTORY_ENTRIES
            for subkey, (frame, _) in list(entries.items())[:MAX_DIRECTORY_ENTRIES]:
                result.bytes_in += len(frame)
                if subkey == self._identity.peer_id:
                    continue
                try:
                    signed = open_frame(
                        frame, PRESENCE, self.rules, now=now, slot=Slot(*keys[key], subkey, tier),
                        verified=self._peer.verified, reading=True,
                    )
                except Rejected as rejected:
                    result.rejected[f"presence_{rejected.reason.value}"] += 1
                    continue
                result.entries += 1
                if self._absent.get(subkey, -1) < signed.value.window:
                    self._listed[subkey] = max(self._listed.get(subkey, 0), signed.value.window)
                if signed.value.reachability is Reachability.PUBLIC and signed.value.addresses:
                    self._peer.add_entry_peers(join_addresses(signed))
        oldest, previous_epoch = window - self.rules.max_age_windows, self.rules.epoch_start(window) - self.rules.epoch_windows
        self._read = {e for e in self._read if e >= previous_epoch}
        self._signers = {signer: seen for signer, seen in self._signers.items() if seen >= oldest}
        self._listed = {signer: seen for signer, seen in self._listed.items() if seen >= previous_epoch}  # live entries
        self._absent = {signer: seen for signer, seen in self._absent.items() if seen >= previous_epoch}
        return result
