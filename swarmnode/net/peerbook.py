"""The peer book: public peers a node reached as DHT servers, kept in its data dir, so that after a restart it
can join through any of them when its configured initial peers (often one bootstrap) are gone.

The file holds full multiaddrs; anything else in it is ignored, never trusted: a peer found there is only
dialled and must still answer as a swarmnode DHT peer. It is counted by peer (a peer's addresses cost one
place), and the peers already in it keep their places while they are still reached: peers that turn up
later, Sybils included, fill free places only, so nobody can push the peers a node has long known out of it.
Learnt peers help a node join; they never judge its reachability (`swarmnode.net.peer`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from swarmnode.config import NetworkConfig
from swarmnode.files import atomic_write_bytes
from swarmnode.wire.address import is_tcp_address

PEERBOOK_FILENAME = "known_peers.json"
MAX_KNOWN_PEERS = 16
MAX_ADDRESSES_PER_PEER = 2
MAX_FILE_BYTES = 64 * 1024
_PEER_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{46,60}")  # base58btc


def is_join_address(text: object) -> bool:
    """A dialable TCP address with the peer id: /ip4|ip6/HOST/tcp/PORT/p2p/PEER_ID."""
    if not isinstance(text, str) or "/p2p/" not in text:
        return False
    transport, _, peer = text.partition("/p2p/")
    return is_tcp_address(transport) and _PEER_ID.fullmatch(peer) is not None


def peer_of(address: str) -> str:
    return address.partition("/p2p/")[2]


def bounded(addresses: Sequence[object]) -> list[str]:
    """The join addresses among `addresses`, in order, without repeats: the first MAX_KNOWN_PEERS peers with at
    most MAX_ADDRESSES_PER_PEER addresses each."""
    by_peer: dict[str, list[str]] = {}
    for address in dict.fromkeys(address for address in addresses if is_join_address(address)):
        assert isinstance(address, str)
        kept = by_peer.setdefault(peer_of(address), [])
        if len(kept) < MAX_ADDRESSES_PER_PEER:
            kept.append(address)
    return [address for kept in list(by_peer.values())[:MAX_KNOWN_PEERS] for address in kept]


def load(data_dir: Path) -> list[str]:
    """The saved addresses, longest known first; an unreadable or foreign file counts as empty."""
    path = Path(data_dir) / PEERBOOK_FILENAME
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return bounded(entries) if isinstance(entries, list) else []


def save(data_dir: Path, addresses: Sequence[str]) -> None:
    atomic_write_bytes(Path(data_dir) / PEERBOOK_FILENAME, json.dumps(bounded(addresses), indent=1).encode())


def updated(known: Sequence[str], reached: Sequence[str]) -> list[str]:
    """The book after a run: its peers that were reached again keep their places, in order, then newly reached
    ones fill what is free; peers not reached this time leave it."""
    reached_peers = {peer_of(address) for address in reached}
    return bounded([*(address for address in known if peer_of(address) in reached_peers), *reached])


def learnt_peers(network: NetworkConfig, known: Sequence[str], own_peer_id: str) -> list[str]:
    """The known addresses that are neither ours nor configured already."""
    configured = {*network.initial_peers, *network.fallback_peers}
    return [address for address in known if address not in configured and peer_of(address) != own_peer_id]
