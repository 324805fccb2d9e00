"""A malicious DHT peer for the integration tests: raw hivemind, no record validator, driven by JSON lines.

It joins the swarm, then tries to get bad records stored under a victim's subkey at every peer it knows
(tampered copy of the victim's frame, a frame it signed itself, junk bytes) and keeps them in its own
storage, so honest readers that ask it are served them too. Each command answers with the per-peer
store results: {peer_id: true | false | null (no answer)}.
Usage: python tests/forger_peer.py --identity KEY --initial-peer MADDR [--swarm ID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from hivemind.dht.node import DHTNode
from hivemind.dht.routing import DHTID
from hivemind.utils import MSGPackSerializer, get_dht_time

from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import load_identity
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import SwarmRules

FORGED_TAG = 666


async def bad_value(
    node: DHTNode, command: dict[str, Any], rules: SwarmRules, identity_path: Path
) -> tuple[bytes, float]:
    """The value bytes (msgpack bin, as hivemind stores them) and expiration of the bad record to plant."""
    now = get_dht_time()
    if command["op"] == "junk":
        return MSGPackSerializer.dumps(b"junk"), now + rules.record_ttl_s
    if command["op"] == "forge":
        batch = RolloutBatch(
            rules.swarm_id,
            rules.window_of(now),
            1,
            now,
            "forged",
            "v",
            (
                Rollout(
                    TaskRef("chain_sum", "0123456789abcdef", FORGED_TAG, 0),
                    (Completion("<answer>0</answer>", 1.0),),
                ),
            ),
        )
        return MSGPackSerializer.dumps(BATCH.seal(batch, load_identity(identity_path))), rules.expiration_of(now)
    found = await node.get(command["key"], latest=True)
    genuine, expiration = found.value[command["victim"]]
    tampered = bytearray(genuine)
    tampered[len(tampered) // 2] ^= 0x01  # inside the signed payload
    return MSGPackSerializer.dumps(
        bytes(tampered)
    ), expiration + 1.0  # later: it would replace the genuine one


async def plant(
    node: DHTNode, command: dict[str, Any], rules: SwarmRules, identity_path: Path
) -> dict[str, Any]:
    value, expiration = await bad_value(node, command, rules, identity_path)
    key_id = DHTID.generate(source=command["key"])
    node.protocol.storage.store_subkey(key_id, command["victim"], value, expiration)
    peers = dict(node.protocol.routing_table.uid_to_peer_id)
    results = await asyncio.gather(
        *(
            node.protocol.call_store(peer, [key_id], [value], [expiration], [command["victim"]])
            for peer in peers.values()
        )
    )
    return {
        peer.to_base58(): None if result is None else bool(result[0])
        for peer, result in zip(peers.values(), results)
    }


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identity", type=Path, required=True)
    parser.add_argument("--initial-peer", action="append", default=[])
    parser.add_argument("--swarm", default="itest")
    args = parser.parse_args()
    rules = SwarmRules(args.swarm)
    node = await DHTNode.create(
        initial_peers=args.initial_peer,
        host_maddrs=["/ip4/127.0.0.1/tcp/0"],
        cache_locally=False,
        cache_nearest=0,
    )
    print(json.dumps({"peer_id": node.peer_id.to_base58(), "daemon_pid": node.p2p._child.pid}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            if command["op"] == "quit":
                break
            print(json.dumps(await plant(node, command, rules, args.identity)), flush=True)
    finally:
        await node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
