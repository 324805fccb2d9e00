"""Presence: a signer's small signed entry in the swarm's per-window directory (PROTOCOL.md §4.1).

A node behind NAT runs as a DHT client, so it is in nobody's routing table, and a collector that plans
its reads from its routing table would never look in its shard. Every publisher therefore also writes
one presence entry per window under the window's directory key; a collector reads the directory and so
learns every signer, reachable or not, at a cost bounded by the directory's size cap. An entry also says
whether peers can dial its signer and at which addresses, so a node can join through any public peer.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass

from swarmnode.wire.address import Reachability, canonical_host
from swarmnode.wire.envelope import (
    MAX_SWARM_ID_BYTES,
    SWARM_ID_PATTERN,
    Envelope,
    Reason,
    Rejected,
    SwarmRules,
    check_freshness,
    check_swarm_and_window,
    parse_canonical,
    text_limit,
    verified_envelope,
)
from swarmnode.wire.identity import Identity
from swarmnode.wire.proto import swarmnode_pb2 as pb

PRESENCE_DOMAIN_TAG = b"swarmnode/presence\x00"
MAX_PRESENCE_BYTES = 1024
MAX_ADDRESSES = 4
MAX_ADDRESS_BYTES = 64
_ADDRESS = re.compile(r"/(ip4|ip6)/([^/]+)/tcp/([0-9]{1,5})")


@dataclass(frozen=True)
class Presence:
    swarm_id: str
    window: int
    timestamp: float
    reachability: Reachability = Reachability.UNKNOWN
    addresses: tuple[str, ...] = ()  # where peers dialled the signer; "/ip4/A.B.C.D/tcp/PORT"


@dataclass(frozen=True)
class SignedPresence:
    signer_peer_id: str
    presence: Presence

    @property
    def join_addresses(self) -> list[str]:
        """Full multiaddrs another node can pass as an initial peer."""
        return [f"{address}/p2p/{self.signer_peer_id}" for address in self.presence.addresses]


def seal_presence(presence: Presence, identity: Identity) -> bytes:
    message = pb.Presence(
        swarm_id=presence.swarm_id,
        window=presence.window,
        timestamp=presence.timestamp,
        reachability=presence.reachability.to_proto(),
        addresses=list(presence.addresses),
    )
    payload = message.SerializeToString(deterministic=True)
    return Envelope.sign(identity, payload, domain=PRESENCE_DOMAIN_TAG).encode()


def open_presence(
    frame: bytes,
    rules: SwarmRules | None = None,
    *,
    now: float | None = None,
    subkey: str | None = None,
    window: int | None = None,
) -> SignedPresence:
    """The checks of PROTOCOL.md §4.1 in order; those whose context is not given are skipped (`subkey` and
    `window`: where the entry was read from)."""
    envelope = verified_envelope(frame, MAX_PRESENCE_BYTES, PRESENCE_DOMAIN_TAG, subkey)
    message = parse_canonical(pb.Presence, envelope.payload, "payload")
    text_limit(message.swarm_id, MAX_SWARM_ID_BYTES, "swarm_id")
    if len(message.addresses) > MAX_ADDRESSES:
        raise Rejected(Reason.LIMIT_EXCEEDED, f"{len(message.addresses)} addresses > {MAX_ADDRESSES}")
    for address in message.addresses:
        text_limit(address, MAX_ADDRESS_BYTES, "address")
    presence = _to_presence(message)
    if rules is not None:
        check_swarm_and_window(presence.swarm_id, presence.window, presence.timestamp, rules)
        if rules.swarm_id is not None and window is not None and window != presence.window:
            raise Rejected(Reason.KEY_MISMATCH, "read from another window's directory")
        if now is not None:
            check_freshness(presence.window, presence.timestamp, rules, now)
    return SignedPresence(envelope.signer_peer_id, presence)


def _to_presence(message: pb.Presence) -> Presence:
    if not SWARM_ID_PATTERN.fullmatch(message.swarm_id):
        raise Rejected(Reason.BAD_VALUE, "swarm_id must match [a-z0-9][a-z0-9._-]*")
    if not (math.isfinite(message.timestamp) and message.timestamp > 0):
        raise Rejected(Reason.BAD_VALUE, "timestamp must be a positive finite number")
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


def is_tcp_address(text: str) -> bool:
    """/ip4/A.B.C.D/tcp/PORT or /ip6/ADDR/tcp/PORT: the address in canonical text form (`canonical_host`),
    PORT in 1-65535 written without leading zeros."""
    match = _ADDRESS.fullmatch(text)
    if match is None:
        return False
    kind, host, port = match.groups()
    if canonical_host(host) != host or f"ip{ipaddress.ip_address(host).version}" != kind:
        return False
    return 1 <= int(port) <= 65535 and port == str(int(port))
