"""A swarmnode gossip peer in its own OS process, for the integration tests; driven by JSON lines.

Prints one JSON line when started ({peer_id, maddrs, daemon_pid, sockets} or {error, reason}), then answers
each command on stdin with one JSON line: publish, collect, stats, quit. A batch's tag travels as the task
seed of its rollouts, so tests can tell which batch was delivered.
Usage: python tests/swarm_peer.py --identity KEY [--initial-peer MADDR ...] [--swarm ID] [--sequence N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from swarmnode.config import GossipConfig, NetworkConfig, SwarmConfig
from swarmnode.net.gossip import Gossip
from swarmnode.net.peer import DHTPeer
from swarmnode.net.start import StartError
from swarmnode.wire.identity import load_identity
from swarmnode.wire.rollout import Completion, Rollout, TaskRef
from swarmnode.wire.rules import SwarmRules


def rollouts(tag: int, count: int, text_bytes: int) -> list[Rollout]:
    text = f"<answer>{tag}</answer>".ljust(text_bytes, ".")
    return [
        Rollout(TaskRef("chain_sum", "0123456789abcdef", tag, index), (Completion(text, 1.0),))
        for index in range(count)
    ]


def answer(peer: DHTPeer, gossip: Gossip, command: dict[str, Any]) -> dict[str, Any]:
    if command["op"] == "publish":
        batch = rollouts(command["tag"], command.get("count", 2), command.get("text_bytes", 32))
        return dataclasses.asdict(gossip.publish(batch, model_id="test-model", suite_version="test"))
    if command["op"] == "collect":
        result = gossip.collect(command["max"], timeout_s=command.get("timeout_s"))
        return {
            "rollouts": [
                {"signer": item.signer, "sequence": item.sequence, "tag": item.rollout.task.seed}
                for item in result.rollouts
            ],
            "rejected": dict(result.rejected),
            "skipped": dict(result.skipped),
            "elapsed_s": result.elapsed_s,
            "timed_out": result.timed_out,
        }
    if command["op"] == "stats":
        stats = gossip.stats
        return {
            "refused_records": dict(stats.refused_records),
            "num_peers": peer.num_peers(),
            "published": stats.published,
            "requests_served": stats.requests_served,
        }
    raise ValueError(f"unknown op {command['op']!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identity", type=Path, required=True)
    parser.add_argument("--initial-peer", action="append", default=[])
    parser.add_argument("--swarm", default="itest")
    parser.add_argument("--sequence", type=int, default=0)
    args = parser.parse_args()
    rules = SwarmRules.of(SwarmConfig(id=args.swarm))
    peer = DHTPeer(args.identity, rules, NetworkConfig(initial_peers=args.initial_peer, startup_timeout_s=30.0))
    try:
        peer.start()
    except StartError as error:
        print(json.dumps({"error": str(error), "reason": error.reason.value}), flush=True)
        return 1
    gossip = Gossip(peer, load_identity(args.identity), rules, GossipConfig(collect_timeout_s=5.0, max_rollouts_per_peer=8))
    gossip.next_sequence = args.sequence
    print(
        json.dumps(
            {
                "peer_id": gossip.peer_id,
                "maddrs": peer.visible_maddrs,
                "daemon_pid": peer.daemon_pid(),
                "sockets": [str(path) for path in peer.socket_paths()],
            }
        ),
        flush=True,
    )
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "quit":
                break
            print(json.dumps(answer(peer, gossip, command)), flush=True)
    finally:
        gossip.close()
        peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
