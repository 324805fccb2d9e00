"""In-process gossip peers for tests: a real DHT peer (its own p2pd on 127.0.0.1) and the gossip over it, as a
node composes them, closed by the caller's ExitStack whatever happens."""

from __future__ import annotations

import contextlib
from pathlib import Path

from swarmnode.config import GossipConfig, NetworkConfig
from swarmnode.net.gossip import Gossip
from swarmnode.net.peer import DHTPeer
from swarmnode.wire.identity import load_identity
from swarmnode.wire.rules import SwarmRules


def join(
    stack: contextlib.ExitStack, key: Path, rules: SwarmRules, network: NetworkConfig, config: GossipConfig | None = None
) -> tuple[DHTPeer, Gossip]:
    """Start a DHT peer with the identity at `key` and gossip over it; both close when `stack` does."""
    peer = stack.enter_context(DHTPeer(key, rules, network))
    gossip = Gossip(peer, load_identity(key), rules, config or GossipConfig())
    stack.callback(gossip.close)
    return peer, gossip
