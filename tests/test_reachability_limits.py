"""The limits of the dial-back check: what counts as a libp2p greeting, which ports an answerer dials, how many
askers it remembers, and how it counts refusals. The answering side runs against a stand-in for p2pd's peer
list, so no daemon starts; probes go to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from swarmnode.net import reachability
from swarmnode.net.reachability import (  # hivemind's types as swarmnode imports them: without torch
    _REMEMBERED_ASKERS,
    DIAL_BACK_HANDLER,
    MULTISTREAM_HEADER,
    DialBackRefused,
    DialBackService,
    Multiaddr,
    P2PContext,
    PeerID,
    probe_listener,
)
from swarmnode.wire.proto import swarmnode_pb2 as pb

LOCAL = PeerID(b"\x00\x05local")
DIRECT = Multiaddr("/ip4/127.0.0.1/tcp/40001")


def peer(number: int) -> PeerID:
    """A distinct peer id (an identity multihash of `number`)."""
    return PeerID(b"\x00\x04" + number.to_bytes(4, "big"))


@dataclass(frozen=True)
class PeerInfo:
    """What p2pd's peer list says of one connected peer: who, and the addresses of its connections."""

    peer_id: PeerID
    addrs: Sequence[Multiaddr]


class ConnectedPeers:
    """Stands in for the P2P instance: all the service asks it is which peers are connected, and from where."""

    def __init__(self) -> None:
        self.peers: list[PeerInfo] = []

    async def list_peers(self) -> list[PeerInfo]:
        return self.peers


async def ask(service: DialBackService, asker: PeerID, ports: list[int]) -> pb.DialBackResponse:
    return await service._handle(
        pb.DialBackRequest(ports=ports), P2PContext(handle_name=DIAL_BACK_HANDLER, local_id=LOCAL, remote_id=asker)
    )


async def ask_connected(service: DialBackService, connected: ConnectedPeers, asker: PeerID) -> None:
    """Ask about no port, as `asker` with a direct connection from 127.0.0.1."""
    connected.peers = [PeerInfo(asker, [DIRECT])]
    await ask(service, asker, [])


async def probe_greeted_by(greeting: bytes) -> bool:
    """Probe a listener on 127.0.0.1 that sends `greeting` and hangs up."""

    async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    try:
        return await probe_listener("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("greeting", "libp2p"),
    [
        (MULTISTREAM_HEADER, True),
        (b"\x13/multistream/2.0.0\n", False),  # as long as the header, so the probe reads all of it
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", False),
        (b"", False),
    ],
)
def test_only_a_listener_that_greets_with_the_multistream_header_is_libp2p(greeting: bytes, libp2p: bool) -> None:
    """A full greeting that is not the multistream header, or none before hanging up, is not a libp2p listener."""
    assert asyncio.run(probe_greeted_by(greeting)) is libp2p


def test_an_answerer_dials_only_the_valid_tcp_ports_it_is_asked_about(monkeypatch: pytest.MonkeyPatch) -> None:
    """Port 0 and ports past 65535 (a uint32 on the wire) are dropped; 1 and 65535 are dialled, in order."""
    dialled: list[tuple[str, int]] = []

    async def listener_on_65535(host: str, port: int) -> bool:
        dialled.append((host, port))
        return port == 65535

    monkeypatch.setattr(reachability, "probe_listener", listener_on_65535)

    async def check() -> pb.DialBackResponse:
        connected = ConnectedPeers()
        connected.peers = [PeerInfo(peer(1), [DIRECT])]
        return await ask(DialBackService(connected), peer(1), [65536, 0, 65535, 1])

    response = asyncio.run(check())
    assert dialled == [("127.0.0.1", 1), ("127.0.0.1", 65535)]
    assert response.observed_host == "127.0.0.1" and list(response.reached_ports) == [65535]


def test_the_askers_memory_holds_exactly_the_latest_remembered_askers(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the memory full the oldest asker is still rate-limited; each newer asker evicts one, never more."""
    monkeypatch.setattr(reachability, "time", SimpleNamespace(monotonic=lambda: 1000.0))  # every ask at once

    async def check() -> None:
        connected = ConnectedPeers()
        service = DialBackService(connected)
        for number in range(_REMEMBERED_ASKERS):
            await ask_connected(service, connected, peer(number))
        with pytest.raises(DialBackRefused):
            await ask_connected(service, connected, peer(0))
        for number in range(_REMEMBERED_ASKERS, _REMEMBERED_ASKERS + 5):
            await ask_connected(service, connected, peer(number))
        assert len(service._last_asked) == _REMEMBERED_ASKERS
        await ask_connected(service, connected, peer(0))  # forgotten, so served again
        assert service.served == _REMEMBERED_ASKERS + 6 and service.refused == 1

    asyncio.run(check())


def test_each_asker_without_a_direct_connection_is_refused_and_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An asker not connected, or connected only through a relay, gets a refusal, counted once each, and no dial."""
    dialled: list[int] = []

    async def no_listener(host: str, port: int) -> bool:
        dialled.append(port)
        return False

    monkeypatch.setattr(reachability, "probe_listener", no_listener)

    async def check() -> None:
        connected = ConnectedPeers()
        service = DialBackService(connected)
        with pytest.raises(DialBackRefused):
            await ask(service, peer(1), [4001])
        assert service.refused == 1
        relay = Multiaddr(f"/ip4/203.0.113.7/tcp/4001/p2p/{peer(9).to_base58()}/p2p-circuit")
        connected.peers = [PeerInfo(peer(2), [relay])]
        with pytest.raises(DialBackRefused):
            await ask(service, peer(2), [4001])
        assert service.refused == 2 and service.served == 0

    asyncio.run(check())
    assert dialled == []
