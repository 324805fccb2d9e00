"""Presence: a signer's small signed entry in the swarm's per-window directory (PROTOCOL.md §4.1).

A node behind NAT runs as a DHT client, so it is in nobody's routing table, and a collector that plans
its reads from its routing table would never look in its shard. Every publisher therefore also writes
one presence entry per epoch under the epoch's directory key; a collector reads the directory and so
learns every signer, reachable or not, at a cost bounded by the directory's size cap. An entry also says
whether peers can dial its signer and at which addresses, so a node can join through any public peer.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmnode.wire.address import Reachability, is_tcp_address
from swarmnode.wire.envelope import MAX_SWARM_ID_BYTES, check_swarm_id, check_timestamp, parse_canonical, text_limit
from swarmnode.wire.keys import check_bucket, directory_key, every_tier
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.record import Kind, Signed
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rules import Slot, SwarmRules, check_freshness, check_swarm_and_window

PRESENCE_DOMAIN_TAG = b"swarmnode/presence\x00"
MAX_PRESENCE_BYTES = 1024
MAX_ADDRESSES = 4
MAX_ADDRESS_BYTES = 64


@dataclass(frozen=True)
class Presence:
    swarm_id: str
    window: int
    timestamp: float
    reachability: Reachability = Reachability.UNKNOWN
    addresses: tuple[str, ...] = ()  # where peers dialled the signer; "/ip4/A.B.C.D/tcp/PORT"


class PresenceKind(Kind[Presence]):
    """A presence entry is placed by its epoch and signer (`Slot`: the directory bucket it was read from), and is
    live for its epoch and the next."""

    name = "presence"
    domain = PRESENCE_DOMAIN_TAG
    max_frame_bytes = MAX_PRESENCE_BYTES

    def encode(self, value: Presence) -> bytes:
        message = pb.Presence(
            swarm_id=value.swarm_id,
            window=value.window,
            timestamp=value.timestamp,
            reachability=value.reachability.to_proto(),
            addresses=list(value.addresses),
        )
        return message.SerializeToString(deterministic=True)

    def parse(self, payload: bytes) -> Presence:
        message = parse_canonical(pb.Presence, payload, "payload")
        text_limit(message.swarm_id, MAX_SWARM_ID_BYTES, "swarm_id")
        if len(message.addresses) > MAX_ADDRESSES:
            raise Rejected(Reason.LIMIT_EXCEEDED, f"{len(message.addresses)} addresses > {MAX_ADDRESSES}")
        for address in message.addresses:
            text_limit(address, MAX_ADDRESS_BYTES, "address")
        return _to_presence(message)

    def check_signer(self, signer: str, slot: Slot | None) -> None:
        check_bucket(signer, slot)

    def check(
        self, value: Presence, signer: str, rules: SwarmRules, slot: Slot | None, now: float | None, reading: bool = False
    ) -> None:
        check_swarm_and_window(value.swarm_id, value.window, value.timestamp, rules)
        if rules.swarm_id is not None and slot is not None and slot.window is not None:
            if slot.window != rules.epoch_start(value.window):
                raise Rejected(Reason.KEY_MISMATCH, "read from another epoch's directory")
        if now is not None:
            max_age = rules.epoch_age_limit(rules.window_of(now))
            check_freshness(value.window, value.timestamp, rules, now, max_age_windows=max_age, reading=reading)

    def keys(self, value: Presence, signer: str, rules: SwarmRules) -> tuple[str, ...]:
        return every_tier(directory_key, value.swarm_id, rules.epoch_start(value.window), signer)

    def timestamp(self, value: Presence) -> float:
        return value.timestamp

    def expiration(self, value: Presence, rules: SwarmRules) -> float:
        return value.timestamp + rules.epoch_record_ttl_s


PRESENCE = PresenceKind()


def join_addresses(signed: Signed[Presence]) -> list[str]:
    """Full multiaddrs another node can pass as an initial peer."""
    return [f"{address}/p2p/{signed.signer}" for address in signed.value.addresses]


def _to_presence(message: pb.Presence) -> Presence:
    check_swarm_id(message.swarm_id)
    check_timestamp(message.timestamp)
    if message.reachability not in (pb.REACHABILITY_UNKNOWN, pb.REACHABILITY_PUBLIC, pb.REACHABILITY_PRIVATE):
        raise Rejected(Reason.BAD_VALUE, f"unknown reachability {message.reachability}")
    for address in message.addresses:
        if not is_tcp_address(address):
            raise Rejected(Reason.BAD_VALUE, f"address {address!r} is not /ip4|ip6/HOST/tcp/PORT")
    if message.addresses and message.reachability != pb.REACHABILITY_PUBLIC:
        raise Rejected(Reason.BAD_VALUE, "only a PUBLIC signer lists addresses")
    if len(set(message.addresses)) != len(message.addresses):
        raise Rejected(Reason.BAD_VALUE, "an address is listed twice")
    return Presence(
        message.swarm_id,
        message.window,
        message.timestamp,
        Reachability.from_proto(message.reachability),
        tuple(message.addresses),
    )
