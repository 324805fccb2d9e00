"""A closed swarm's allowlist: the peer ids its operator lets store and serve, signed by the operator's key.

Identities cost nothing, so no rule about signers stops Sybils in an open swarm; a swarm whose members are
known can close itself instead. Every member holds the same signed file and refuses records signed by, DHT
requests from, and routing-table places for any peer not listed (docs/DESIGN.md §6.7). libp2p authenticates
the remote peer id of every connection, so a listed id cannot be claimed by anyone else.

The file is JSON: {"swarm_id", "peers" (peer ids), "operator" (the signer's peer id), "signature" (hex)}; the
signature is Ed25519 over ALLOWLIST_DOMAIN_TAG || the canonical JSON of {"peers": sorted, "swarm_id"}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from swarmnode.config import ConfigError
from swarmnode.files import atomic_write_bytes
from swarmnode.wire.identity import Identity, public_key_of, verify_signature

ALLOWLIST_DOMAIN_TAG = b"swarmnode/allowlist\x00"
MAX_ALLOWLIST_BYTES = 4 * 2**20  # some 70,000 peer ids


class AllowlistError(ConfigError):
    """The allowlist file is missing, malformed, for another swarm or not signed by the operator."""


@dataclass(frozen=True)
class Allowlist:
    swarm_id: str
    peers: frozenset[str]
    operator: str


def signed_message(swarm_id: str, peers: Iterable[str]) -> bytes:
    canonical = json.dumps({"peers": sorted(set(peers)), "swarm_id": swarm_id}, sort_keys=True, separators=(",", ":"))
    return ALLOWLIST_DOMAIN_TAG + canonical.encode()


def write_allowlist(path: Path, operator: Identity, swarm_id: str, peers: Iterable[str]) -> Allowlist:
    """Sign and write the allowlist (atomically); each peer id must be an Ed25519 peer id."""
    listed = sorted(set(peers))
    for peer in listed:
        public_key_of(peer)  # raises ValueError naming the bad id
    signature = operator.sign(signed_message(swarm_id, listed))
    document = {"swarm_id": swarm_id, "peers": listed, "operator": operator.peer_id, "signature": signature.hex()}
    atomic_write_bytes(Path(path), (json.dumps(document, indent=1) + "\n").encode())
    return Allowlist(swarm_id, frozenset(listed), operator.peer_id)


def load_allowlist(path: Path, swarm_id: str, operator: str) -> Allowlist:
    """The allowlist at `path` if `operator` signed it for `swarm_id`; AllowlistError (naming the file and the
    fix) otherwise."""
    fix = "sign one with `swarmnode allowlist sign` and give every member the same file (swarm.allowlist)"
    try:
        if Path(path).stat().st_size > MAX_ALLOWLIST_BYTES:
            raise AllowlistError(f"{path}: larger than {MAX_ALLOWLIST_BYTES} bytes; {fix}")
        document = json.loads(Path(path).read_text())
        listed, signature = document["peers"], bytes.fromhex(document["signature"])
        if document["swarm_id"] != swarm_id:
            raise AllowlistError(f"{path}: signed for swarm {document['swarm_id']!r}, not swarm.id {swarm_id!r}; {fix}")
        if not isinstance(listed, list) or not all(isinstance(peer, str) for peer in listed):
            raise AllowlistError(f"{path}: \"peers\" must be a list of peer ids; {fix}")
    except AllowlistError:
        raise
    except OSError as error:
        raise AllowlistError(f"{path}: cannot read the allowlist ({error.strerror or error}); {fix}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise AllowlistError(f"{path}: not an allowlist ({type(error).__name__}: {error}); {fix}") from None
    try:
        key = public_key_of(operator)
    except ValueError as error:
        raise AllowlistError(f"swarm.operator: {error}; set the operator's peer id (`swarmnode identity show`)") from None
    if not verify_signature(key, signature, signed_message(swarm_id, listed)):
        raise AllowlistError(f"{path}: not signed by swarm.operator {operator}; ask the operator for the signed file")
    return Allowlist(swarm_id, frozenset(listed), operator)
