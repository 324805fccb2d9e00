"""Why a DHT peer did not start, as one line a volunteer can act on: stable reason codes for callers, and the
translation of what hivemind and p2pd raise into the fix."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from enum import Enum

from hivemind.dht.protocol import ValidationError
from hivemind.p2p import PeerID
from hivemind.p2p.p2p_daemon_bindings.control import P2PDaemonError
from hivemind.utils.multiaddr import Multiaddr

from swarmnode.config import NetworkConfig


class StartFailure(str, Enum):
    """Why the DHT peer did not start; stable codes so callers (e.g. `swarmnode join`) can tell them apart."""

    NO_IDENTITY = "no_identity"
    IDENTITY_MISMATCH = "identity_mismatch"
    BAD_ADDRESS = "bad_address"
    BAD_INITIAL_PEER = "bad_initial_peer"
    PORT_IN_USE = "port_in_use"
    UNREACHABLE_PEERS = "unreachable_peers"
    NOT_REACHABLE = "not_reachable"
    CLOCK_SKEW = "clock_skew"
    P2PD_MISSING = "p2pd_missing"
    TIMEOUT = "timeout"
    P2PD_FAILED = "p2pd_failed"


class StartError(Exception):
    """The DHT peer could not start; the message is one line saying what to do about it."""

    def __init__(self, reason: StartFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def listen_maddr(host: str, port: int) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise StartError(
            StartFailure.BAD_ADDRESS,
            f"network.host {host!r} is not an IP address; use e.g. 127.0.0.1 (this machine only) "
            f"or the address of the interface peers reach you on",
        ) from None
    return f"/ip{address.version}/{address}/tcp/{port}"


def check_initial_peer(text: str) -> None:
    try:
        maddr = Multiaddr(text)
        PeerID.from_base58(maddr["p2p"])
    except Exception:
        raise StartError(
            StartFailure.BAD_INITIAL_PEER,
            f"initial peer {text!r} is not a full multiaddr; expected e.g. "
            f"/ip4/10.0.0.5/tcp/31337/p2p/12D3KooW... (copy it from the output of `swarmnode bootstrap`)",
        ) from None


def explain(error: BaseException, network: NetworkConfig) -> StartError:
    """Turn what hivemind and p2pd raise into one actionable line."""
    if isinstance(error, StartError):
        return error
    text = str(error)
    peers = ", ".join(network.initial_peers)
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)) or "failed to start in" in text:
        return StartError(
            StartFailure.TIMEOUT,
            f"the p2p daemon did not come up within {network.startup_timeout_s:g} s; "
            f"the machine may be overloaded: raise network.startup_timeout_s",
        )
    if "address already in use" in text:
        return StartError(
            StartFailure.PORT_IN_USE,
            f"port {network.port} on {network.host} is already in use; pick another with --port "
            f"(network.port), or stop the process holding it (`ss -ltnp 'sport = :{network.port}'`)",
        )
    if "failed to connect to bootstrap peers" in text or "none of the initial_peers responded" in text:
        return StartError(
            StartFailure.UNREACHABLE_PEERS,
            f"none of the initial peers answered ({peers}); check that they are running and reachable "
            f"from here, or start without initial peers to found a new swarm",
        )
    if isinstance(error, ValidationError) and "local time" in text:
        return StartError(
            StartFailure.CLOCK_SKEW,
            f"this machine's clock {_clock_offset(text)} the swarm's (peers allow 3 s); enable time sync "
            "(e.g. `timedatectl set-ntp true`)",
        )
    if isinstance(error, ValidationError):
        return StartError(
            StartFailure.NOT_REACHABLE,
            "the initial peers cannot connect back to this node; listen on a reachable address "
            "(network.host) and announce it (network.announce_maddrs), or open the port in the firewall",
        )
    if "parse multiaddr" in text:
        return StartError(
            StartFailure.BAD_ADDRESS, f"the p2p daemon rejected an address: {text.split(': ', 1)[-1]}"
        )
    if isinstance(error, P2PDaemonError) and ("not found" in text or "incompatible" in text):
        return StartError(
            StartFailure.P2PD_MISSING,
            "hivemind's p2pd binary is missing or not for this platform; reinstall it with "
            "`pip install --force-reinstall hivemind==1.1.12` (a manylinux x86-64 wheel ships p2pd)",
        )
    last_line = text.strip().splitlines()[-1] if text.strip() else type(error).__name__
    return StartError(StartFailure.P2PD_FAILED, f"the p2p daemon failed to start: {last_line}")


def _clock_offset(text: str) -> str:
    """'is 10.0 s ahead of' from hivemind's 'local time must be within ... (local: T, peer: T)'."""
    found = re.search(r"local: ([\d.]+), peer: ([\d.]+)", text)
    if found is None:
        return "differs by more than 3 s from"
    offset = float(found[1]) - float(found[2])
    return f"is {abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'}"
