"""Reachability: can other peers open a connection to this node, or only answer the ones it opens?

A node behind NAT (or listening on loopback) can dial out, so it joins, publishes and reads fine; but a
peer that learns its address and dials it waits for a timeout. So each node asks a few peers to dial it
back (PROTOCOL.md §7): a peer opens a *new* TCP connection to the address it sees the asker's connection
come from, on the ports the asker listens on, and reports whether a libp2p listener answered. A node that
nobody can dial then runs as a DHT client (`swarmnode.net.peer`): nobody routes to it or stores on it.

The answerer only ever dials the address the asker's own connection comes from, never an address the
asker names, so the check cannot be turned against a third party.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from hivemind.p2p import P2P, P2PContext, PeerID
from hivemind.utils.multiaddr import Multiaddr

from swarmnode.wire.address import Reachability, tcp_address
from swarmnode.wire.proto import swarmnode_pb2 as pb

logger = logging.getLogger(__name__)

DIAL_BACK_HANDLER = "swarmnode.v1.dial_back"
MULTISTREAM_HEADER = b"\x13/multistream/1.0.0\n"  # what a libp2p TCP listener sends first
MAX_DIAL_BACK_PORTS = 4
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 1.0
ASK_TIMEOUT_S = 2 * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + 1.0
MIN_ASK_INTERVAL_S = 5.0  # per asker: one check per this many seconds is served
MAX_CONCURRENT_CHECKS = 4
_REMEMBERED_ASKERS = 1024


@dataclass(frozen=True)
class ReachabilityReport:
    """The outcome of one check: the verdict, how many peers were asked and answered, the address they see
    our connections come from, and the addresses at which they reached us (what we may advertise)."""

    reachability: Reachability
    asked: int = 0
    answered: int = 0
    reached: int = 0
    observed_hosts: tuple[str, ...] = ()
    dialable: tuple[str, ...] = ()  # "/ip4/A.B.C.D/tcp/PORT" confirmed by a dial-back
    checked_at: float = field(default_factory=time.time)
    forced: bool = False  # set by network.reachability, not measured
    announced: tuple[str, ...] = ()  # hosts of network.announce_maddrs

    def describe(self) -> str:
        if self.forced:
            return f"{self.reachability.value} (set by network.reachability)"
        if self.asked == 0:
            return f"{self.reachability.value}: no peer to ask yet"
        seen = f"; seen as {', '.join(self.observed_hosts)}" if self.observed_hosts else ""
        text = (
            f"{self.reachability.value}: {self.reached} of {self.answered} peers that answered "
            f"(of {self.asked} asked) could dial us{seen}"
        )
        if self.announced and self.observed_hosts and not set(self.announced) & set(self.observed_hosts):
            text += f"; but announce_maddrs names {', '.join(self.announced)}, which peers cannot confirm"
        return text


def verdict(
    answers: Sequence[pb.DialBackResponse | None], ports: Sequence[int], announced_hosts: Sequence[str] = ()
) -> ReachabilityReport:
    """Public when at least half of the peers that answered reached one of our ports (Petals' rule). With
    announced addresses, a peer's dial counts only if it sees us at one of them: p2pd then advertises
    nothing else, so an address peers cannot confirm leaves us undiallable, whatever else works."""
    answered = [answer for answer in answers if answer is not None]
    reached = [
        answer for answer in answered
        if set(answer.reached_ports) & set(ports) and (not announced_hosts or answer.observed_host in announced_hosts)
    ]
    if not answered:
        reachability = Reachability.UNKNOWN
    else:
        reachability = Reachability.PUBLIC if 2 * len(reached) >= len(answered) else Reachability.PRIVATE
    dialable = sorted({
        tcp_address(answer.observed_host, port)
        for answer in reached
        for port in answer.reached_ports
        if port in ports
    })
    observed = sorted({answer.observed_host for answer in answered if answer.observed_host})
    return ReachabilityReport(
        reachability, len(answers), len(answered), len(reached), tuple(observed), tuple(dialable),
        announced=tuple(announced_hosts),
    )


async def probe_listener(host: str, port: int) -> bool:
    """Open a new TCP connection to host:port and check that a libp2p listener greets us (multistream-select);
    an open port of some other program does not count."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        greeting = await asyncio.wait_for(reader.readexactly(len(MULTISTREAM_HEADER)), READ_TIMEOUT_S)
        return greeting == MULTISTREAM_HEADER
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def observed_host(addrs: Sequence[Multiaddr]) -> str | None:
    """The IP address of a direct (not relayed) connection, from the remote multiaddrs p2pd reports."""
    for addr in addrs:
        if "p2p-circuit" in str(addr):
            continue
        for protocol in ("ip4", "ip6"):
            with contextlib.suppress(Exception):  # the multiaddr has no such part
                return str(ipaddress.ip_address(addr.value_for_protocol(protocol)))
    return None


class DialBackRefused(Exception):
    """Sent to an asker instead of an answer (rate limit, malformed request, no direct connection)."""


class DialBackService:
    """Answers peers' dial-back requests on one P2P instance, bounded: one check per asker every
    MIN_ASK_INTERVAL_S, at most MAX_CONCURRENT_CHECKS at once, at most MAX_DIAL_BACK_PORTS ports each."""

    def __init__(self, p2p: P2P) -> None:
        self.p2p = p2p
        self._last_asked: OrderedDict[PeerID, float] = OrderedDict()
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self.served = 0
        self.refused = 0

    async def serve(self) -> None:
        await self.p2p.add_protobuf_handler(DIAL_BACK_HANDLER, self._handle, pb.DialBackRequest)

    async def _handle(self, request: pb.DialBackRequest, context: P2PContext) -> pb.DialBackResponse:
        """Refusals are errors, not answers: an asker must not read "not reachable" into them."""
        asker = context.remote_id
        now = time.monotonic()
        if now - self._last_asked.get(asker, float("-inf")) < MIN_ASK_INTERVAL_S or len(request.ports) > MAX_DIAL_BACK_PORTS:
            self.refused += 1
            raise DialBackRefused("at most one check per asker every 5 s, of at most 4 ports")
        self._last_asked[asker] = now
        self._last_asked.move_to_end(asker)
        while len(self._last_asked) > _REMEMBERED_ASKERS:
            self._last_asked.popitem(last=False)
        host = observed_host(await self._connection_addrs(asker))
        if host is None:
            self.refused += 1
            raise DialBackRefused("no direct connection to the asker (relayed?): nothing to dial back")
        ports = sorted({port for port in request.ports if 0 < port < 65536})
        async with self._checks:
            reached = await asyncio.gather(*(probe_listener(host, port) for port in ports))
        self.served += 1
        return pb.DialBackResponse(observed_host=host, reached_ports=[p for p, ok in zip(ports, reached) if ok])

    async def _connection_addrs(self, peer: PeerID) -> list[Multiaddr]:
        for info in await self.p2p.list_peers():
            if info.peer_id == peer:
                return list(info.addrs)
        return []


async def ask_dial_back(p2p: P2P, peer: PeerID, ports: Sequence[int]) -> pb.DialBackResponse | None:
    """Ask one peer to dial us back; None if it does not answer in time (or does not speak the check)."""
    request = pb.DialBackRequest(ports=list(ports)[:MAX_DIAL_BACK_PORTS])
    try:
        return await asyncio.wait_for(
            p2p.call_protobuf_handler(peer, DIAL_BACK_HANDLER, request, pb.DialBackResponse), ASK_TIMEOUT_S
        )
    except Exception as error:  # an old peer, a dropped connection, a timeout: no answer
        logger.debug("dial-back request to %s failed: %r", peer, error)
        return None


def network_warnings(host: str, initial_peers: Sequence[str]) -> list[str]:
    """What a volunteer should fix before anything fails: a loopback listener with peers on other hosts
    connects out by luck and can never be dialled back."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return []  # the DHT start reports a bad host with its own fix
    remote = [peer for peer in initial_peers if (address := _maddr_host(peer)) is not None and not address.is_loopback]
    if loopback and remote:
        return [
            f"network.host is {host} but initial peers are on other hosts ({remote[0]}): they cannot dial this "
            f"node, so it joins as a DHT client; set network.host=0.0.0.0 (or this machine's address) to serve others"
        ]
    return []


def _maddr_host(maddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    parts = maddr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(parts[2])
    return None


async def check_reachability(
    p2p: P2P, peers: Sequence[PeerID], ports: Sequence[int], announced_hosts: Sequence[str] = ()
) -> ReachabilityReport:
    """Ask `peers` (already connected) in parallel to dial us back on `ports`."""
    answers = await asyncio.gather(*(ask_dial_back(p2p, peer, ports) for peer in peers))
    return verdict(answers, ports, announced_hosts)
