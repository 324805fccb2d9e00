"""The peer book: public peers a node has learnt from the directory, kept in its data dir, so that after a
restart it can join through any of them when its configured initial peers (often one bootstrap) are gone.

The file holds full multiaddrs; anything else in it is ignored, never trusted: a peer found there is only
dialled and must still answer as a swarmnode DHT peer.
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
MAX_FILE_BYTES = 64 * 1024
_PEER_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{46,60}")  # base58btc


def is_join_address(text: object) -> bool:
    """A dialable TCP address with the peer id: /ip4|ip6/HOST/tcp/PORT/p2p/PEER_ID."""
    if not isinstance(text, str) or "/p2p/" not in text:
        return False
    transport, _, peer = text.partition("/p2p/")
    return is_tcp_address(transport) and _PEER_ID.fullmatch(peer) is not None


def load(data_dir: Path) -> list[str]:
    """The saved addresses, newest last; an unreadable or foreign file counts as empty."""
    path = Path(data_dir) / PEERBOOK_FILENAME
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if is_join_address(entry)][-MAX_KNOWN_PEERS:]


def save(data_dir: Path, addresses: Sequence[str]) -> None:
    kept = list(dict.fromkeys(address for address in addresses if is_join_address(address)))[-MAX_KNOWN_PEERS:]
    atomic_write_bytes(Path(data_dir) / PEERBOOK_FILENAME, json.dumps(kept, indent=1).encode())


def fallback_peers(network: NetworkConfig, known: Sequence[str], own_peer_id: str) -> list[str]:
    """The configured fallback peers, then the known ones that are neither ours nor configured already."""
    configured = {*network.initial_peers, *network.fallback_peers}
    learnt = [address for address in known if address not in configured and not address.endswith(f"/p2p/{own_peer_id}")]
    return [*network.fallback_peers, *learnt]
