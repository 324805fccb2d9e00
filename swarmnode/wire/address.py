"""How reachability and addresses are written on the wire (PROTOCOL.md §4.1): the Reachability enum and
the canonical text of an IP address, so that every implementation writes and accepts the same bytes."""

from __future__ import annotations

import ipaddress
import re
from enum import Enum

from swarmnode.wire.proto import swarmnode_pb2 as pb

_ADDRESS = re.compile(r"/(ip4|ip6)/([^/]+)/tcp/([0-9]{1,5})")


class Reachability(str, Enum):
    PUBLIC = "public"  # peers dialled us back
    PRIVATE = "private"  # peers tried and could not (NAT, firewall, or listening on loopback)
    UNKNOWN = "unknown"  # no peer answered the check (none yet, or none that speaks it)

    def to_proto(self) -> int:
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> Reachability:
        return _FROM_PROTO[value]


_TO_PROTO = {
    Reachability.UNKNOWN: pb.REACHABILITY_UNKNOWN,
    Reachability.PUBLIC: pb.REACHABILITY_PUBLIC,
    Reachability.PRIVATE: pb.REACHABILITY_PRIVATE,
}
_FROM_PROTO = {value: key for key, value in _TO_PROTO.items()}


def tcp_address(host: str, port: int) -> str:
    """The canonical /ip4|ip6/HOST/tcp/PORT of a host an answerer reported (it may write it otherwise)."""
    address = ipaddress.ip_address(host)
    return f"/ip{address.version}/{canonical_host(host)}/tcp/{port}"


def canonical_host(text: str) -> str | None:
    """The canonical text of an IP address (PROTOCOL.md §4.1), None if `text` is not one: IPv4 dotted
    decimal; IPv6 as RFC 5952 §4 writes it (lowercase hex, no leading zeros, the longest run of two or
    more zero groups, the first of equals, as "::"), never in mixed IPv4 notation and without a zone.
    Written out here so that the result does not depend on the Python version."""
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 4:
        return str(address)
    groups = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_length, start = -1, 1, None
    for index, group in enumerate([*groups, 1]):
        if group == 0 and start is None:
            start = index
        elif group != 0 and start is not None:
            if index - start > best_length:
                best_start, best_length = start, index - start
            start = None
    hexes = [f"{group:x}" for group in groups]
    if best_start < 0:
        return ":".join(hexes)
    return ":".join(hexes[:best_start]) + "::" + ":".join(hexes[best_start + best_length :])


def scope(host: str) -> str:
    """"loopback", "private" (RFC 1918, unique local, link-local, CGNAT) or "public": where an address can be
    reached from, so that a node dials no address of another scope than its swarm's on a peer's word."""
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return "loopback"
    return "public" if address.is_global else "private"


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
