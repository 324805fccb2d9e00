"""Reading a key from its replicas so that no single one decides the answer (docs/DESIGN.md §6.7): a liar can
answer with an empty or partial dictionary, or claim its stale copy is the newest. A read asks READ_QUORUM of
the key's nearest peers, chosen at random, and the rest when their answers differ or too few answered; the
answer is the union of the validated entries, each at its newest expiration, and says what it covered. A read
for signers we know publish under the key asks one replica first: a signed batch proves itself, so one answer
holding it is enough, while its absence still takes `quorum` answers (a liar can hide a batch, not forge one).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID
from hivemind.utils import MSGPackSerializer, ValueWithExpiration

Entries = dict[str, tuple[bytes, float]]
REPLICAS = 5  # a key's nearest peers that store it (hivemind's default): what a read can ask
READ_QUORUM = 3  # replicas asked first: with 2 liars among a key's 5 nearest, at least one of 3 is honest
BATCH_QUORUM = 2  # for shard keys, whose answers are large: one liar among 5 never makes both picks
STORE_QUORUM = 3  # replicas whose acceptance ends a store's wait (the others' stores finish in the background)
FIND_NEIGHBOURS = REPLICAS + 2  # neighbours an answer to a find names per key: a lookup's beam, and 2 for any gone
# peers of our routing table a lookup asks first (Kademlia's alpha): three answers of FIND_NEIGHBOURS name the key's
# neighbourhood as well as five did, for a tenth fewer finds at 10,000 peers in the model (docs/DESIGN.md §6.8)
LOOKUP_START = 3


@dataclass(frozen=True)
class Coverage:
    """What one key's read reached: the key's nearest peers the lookup found, how many were asked and answered
    (an empty answer is an answer), whether the answers differed, and whether every signer wanted was found."""

    replicas: int
    asked: int
    answered: int
    disagreed: bool
    quorum: int = READ_QUORUM
    found_wanted: bool = False

    @property
    def thin(self) -> bool:
        """Fewer answers than a read needs to trust their union (a key censored this way looks empty), unless
        it held every signer the read was for."""
        return not self.found_wanted and self.answered < min(self.quorum, self.replicas)


@dataclass
class Read:
    """Entries by key (keys whose replicas answered), whether the deadline cut the read, and each key's coverage."""

    entries: dict[str, Entries]
    timed_out: bool
    coverage: dict[str, Coverage] = field(default_factory=dict)

    def thin_keys(self) -> list[str]:
        return [key for key, coverage in self.coverage.items() if coverage.thin]


class KeyRead:
    """One key's read in progress: its replicas (node id -> peer id), whom it asked and what each answered, and
    the signers it is for (none: whatever the key holds)."""

    def __init__(
        self, key_id: DHTID, replicas: dict[DHTID, PeerID], quorum: int = READ_QUORUM, wanted: frozenset[str] = frozenset()
    ) -> None:
        self.key_id = key_id
        self.replicas = replicas
        self.quorum = quorum
        self.wanted = wanted
        self.asked: set[DHTID] = set()
        self.answers: dict[DHTID, Entries] = {}
        self._order: list[DHTID] = list(replicas)  # the order replicas are asked in (`first_round` draws it)

    def first_round(self, rng: random.Random) -> list[DHTID]:
        """Replicas in a random order (liars ground next to a key are its nearest: an order by distance would
        always pick them next), the first `quorum` of them, or one for a read of wanted signers."""
        self._order = rng.sample(list(self.replicas), len(self.replicas))
        chosen = self._order[: 1 if self.wanted else self.quorum]
        self.asked.update(chosen)
        return chosen

    def second_round(self) -> list[DHTID]:
        """Who else to ask: none once every wanted signer was found; for a read of wanted signers not found, as
        many more as `quorum` answers need; otherwise the replicas not yet asked when the first answers differ or
        too few came."""
        rest = [replica for replica in self._order if replica not in self.asked]
        if self.wanted:
            if self.found_wanted:
                return []
            rest = rest[: max(self.quorum - len(self.answers), 1)] if len(self.answers) < self.quorum else []
        elif not self.disagreed and len(self.answers) >= min(self.quorum, len(self.asked)):
            return []
        self.asked.update(rest)
        return rest

    @property
    def found_wanted(self) -> bool:
        return bool(self.wanted) and all(any(signer in answer for answer in self.answers.values()) for signer in self.wanted)

    def answer(self, replica: DHTID, value: ValueWithExpiration | None) -> None:
        """A replica's answer: its dictionary for the key (its entries passed the validator), or None for none."""
        entries: Entries = {}
        if value is not None and hasattr(value.value, "items"):
            for subkey, item in value.value.items():
                frame = MSGPackSerializer.loads(item.value) if isinstance(item.value, bytes) else None
                if isinstance(subkey, str) and isinstance(frame, bytes):
                    entries[subkey] = (frame, item.expiration_time)
        self.answers[replica] = entries

    @property
    def disagreed(self) -> bool:
        seen = {frozenset((subkey, expiration) for subkey, (_, expiration) in answer.items()) for answer in self.answers.values()}
        return len(seen) > 1

    def entries(self) -> Entries:
        """The union of the answers: every signer's entry at the newest expiration any replica holds, those more
        replicas returned first. A reader that opens only the first entries of a full key then opens what the
        honest replicas agree on before what one liar alone adds (Sybils it holds and nobody else does)."""
        merged: Entries = {}
        support: Counter[str] = Counter()
        for answer in self.answers.values():
            for subkey, (frame, expiration) in answer.items():
                support[subkey] += 1
                if subkey not in merged or expiration > merged[subkey][1]:
                    merged[subkey] = (frame, expiration)
        return {subkey: merged[subkey] for subkey in sorted(merged, key=lambda subkey: -support[subkey])}

    def coverage(self) -> Coverage:
        return Coverage(len(self.replicas), len(self.asked), len(self.answers), self.disagreed, self.quorum, self.found_wanted)
