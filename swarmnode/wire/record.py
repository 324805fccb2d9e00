"""One generic signed record: a `Kind` says what a record of that kind holds and how it is checked, `Signed` is
a record that passed, and `Kind.seal` makes one. Batches, presence entries and beacons are the three kinds
(`swarmnode.wire.kinds`); the receiving checks common to all of them are in `swarmnode.wire.receive`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

from swarmnode.wire.envelope import Envelope
from swarmnode.wire.identity import Identity
from swarmnode.wire.rules import Slot, SwarmRules

T = TypeVar("T")


class Kind(ABC, Generic[T]):
    """One kind of signed record (PROTOCOL.md §4). Its envelope is checked the same way for every kind (checks
    1-5, `swarmnode.wire.receive.open_frame`); then open_frame calls, in this order: `check_signer` (placement
    that needs nothing but the signer's peer id), `parse` (checks 6-8 on the payload bytes: what they are, in
    any context, so a result can be reused for the same bytes) and, when the receiver knows its swarm, `check`
    (checks 9-12: swarm, window, placement, freshness). The DHT validator compares the key a record was stored
    under with `keys`, and its expiration with `expiration`."""

    name: str
    domain: bytes  # the signature's domain tag: a record of one kind never verifies as another
    max_frame_bytes: int

    @abstractmethod
    def encode(self, value: T) -> bytes:
        """The canonical payload bytes of `value`."""

    @abstractmethod
    def parse(self, payload: bytes) -> T:
        """Checks 6-8: canonical protobuf, limits, values; raises Rejected."""

    def check_signer(self, signer: str, slot: Slot | None) -> None:
        """Placement that depends on the signer alone, checked before the payload is parsed."""

    @abstractmethod
    def check(
        self, value: T, signer: str, rules: SwarmRules, slot: Slot | None, now: float | None, reading: bool = False
    ) -> None:
        """Checks 9-12 against the receiver's rules, where the record was read (`slot`) and its clock (`now`);
        those whose context is None are skipped. `reading`: the record came from the DHT (check 12's slack)."""

    @abstractmethod
    def keys(self, value: T, signer: str, rules: SwarmRules) -> tuple[str, ...]:
        """The DHT keys the record may be stored under."""

    @abstractmethod
    def timestamp(self, value: T) -> float:
        """The signed time the record's expiration is counted from."""

    def expiration(self, value: T, rules: SwarmRules) -> float:
        """The one expiration replicas accept for `value` (PROTOCOL.md §5.1)."""
        return rules.expiration_of(self.timestamp(value))

    def seal(self, value: T, identity: Identity) -> bytes:
        """Encode, sign and frame `value`: what PROTOCOL.md calls a frame."""
        return Envelope.sign(identity, self.encode(value), self.domain).encode()

    def __repr__(self) -> str:
        return f"<record kind {self.name}>"


@dataclass(frozen=True)
class Signed(Generic[T]):
    """A record that passed every check its context allowed: its kind, the peer id that signed it, what it says."""

    kind: Kind[T]
    signer: str
    value: T
    frame_bytes: int
