"""Gossip cost and latency for N peers: swarmnode's sharded keys against one shared key per round (naive).

All peers live in this process, each with its own p2pd daemon and DHT loop thread, on 127.0.0.1. A round:
every peer publishes one batch, then every peer collects J rollouts. Reported per node and round: DHT
requests sent, bytes in/out (protobuf messages, including requests served for others) and the busiest node;
and publish->visible latency: from the start of a publish until a random other peer's lookup returns the
new frame. The naive layout is rl-swarm's: all peers store under `swarmnode-naive/{round}` and collectors
read that key. Writes benchmarks/results/gossip.json.

Usage: python benchmarks/bench_gossip.py [--sizes 4,16,64] [--rounds 4] [--latency-samples 40] [--shards 16,256]
       [--no-naive] [--window-s 3600] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hivemind.utils import get_dht_time
from rich.console import Console
from rich.table import Table

from swarmnode.config import GossipConfig, NetworkConfig, SwarmConfig
from swarmnode.lab.dht_swarm import start_all
from swarmnode.net.gossip import Gossip
from swarmnode.net.peer import DHTPeer, StoreItem
from swarmnode.net.validator import SwarmRecordValidator
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import batch_key
from swarmnode.wire.receive import ReplayGuard, open_frame
from swarmnode.wire.rejection import Rejected
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import SwarmRules, shard_of

ROOT = Path(__file__).resolve().parents[1]
NAIVE_PREFIX = "swarmnode-naive/"
VISIBLE_TIMEOUT_S = 5.0
@dataclass(frozen=True)
class Workload:
    rollouts: int
    completions: int
    completion_bytes: int
    collect: int
    per_peer_cap: int

    def rollouts_for(self, tag: int) -> list[Rollout]:
        text = f"<answer>{tag}</answer>".ljust(self.completion_bytes, ".")
        return [
            Rollout(
                TaskRef("chain_sum", "0123456789abcdef", tag, index),
                tuple(Completion(text, 1.0) for _ in range(self.completions)),
            )
            for index in range(self.rollouts)
        ]


def naive_key_of(batch: RolloutBatch, signer: str, rules: SwarmRules) -> str:
    """rl-swarm's layout: every peer's batch of a round under one key (the round is the batch's sequence)."""
    return f"{NAIVE_PREFIX}{batch.sequence}"


class Swarm(Protocol):
    """N peers of one layout."""

    identities: list[Identity]

    def publish(self, index: int, round_index: int) -> tuple[str, str]:
        """Publish peer `index`'s batch; returns the (key, subkey) written, to probe for visibility."""

    def collect(self, index: int, round_index: int) -> int:
        """Collect J rollouts as peer `index`; returns how many it got."""

    def dht(self, index: int) -> DHTPeer: ...

    def close(self) -> None: ...


class ShardedSwarm:
    def __init__(
        self, keys: list[Path], identities: list[Identity], swarm: SwarmConfig, workload: Workload
    ) -> None:
        self.identities = identities
        self.workload = workload
        config = GossipConfig(max_rollouts_per_peer=workload.per_peer_cap)
        rules = SwarmRules.of(swarm)
        first = DHTPeer(keys[0], rules, NetworkConfig())
        first.start()
        join = NetworkConfig(initial_peers=first.visible_maddrs)
        rest = [DHTPeer(key, rules, join) for key in keys[1:]]
        start_all([peer.start for peer in rest])
        self.peers = [first, *rest]
        self.gossips = [Gossip(peer, identity, rules, config) for peer, identity in zip(self.peers, identities)]

    def publish(self, index: int, round_index: int) -> tuple[str, str]:
        gossip = self.gossips[index]
        result = gossip.publish(self.workload.rollouts_for(round_index), model_id="bench", suite_version="v")
        shard = shard_of(gossip.peer_id, gossip.rules.num_shards)
        return batch_key(gossip.rules.swarm_id, result.window, shard), gossip.peer_id

    def collect(self, index: int, round_index: int) -> int:
        return len(self.gossips[index].collect(self.workload.collect).rollouts)

    def dht(self, index: int) -> DHTPeer:
        return self.peers[index]

    def close(self) -> None:
        for gossip in self.gossips:
            gossip.close()
        start_all([peer.close for peer in self.peers])


class NaiveSwarm:
    def __init__(
        self, keys: list[Path], identities: list[Identity], swarm: SwarmConfig, workload: Workload
    ) -> None:
        self.identities = identities
        self.workload = workload
        self.rules = SwarmRules.of(swarm)
        self.guards = [ReplayGuard() for _ in identities]
        first = DHTPeer(
            keys[0],
            self.rules,
            NetworkConfig(),
            validator=SwarmRecordValidator(self.rules, key_of=naive_key_of),
        )
        first.start()
        join = NetworkConfig(initial_peers=first.visible_maddrs)
        rest = [
            DHTPeer(key, self.rules, join, validator=SwarmRecordValidator(self.rules, key_of=naive_key_of))
            for key in keys[1:]
        ]
        start_all([peer.start for peer in rest])
        self.peers = [first, *rest]

    def publish(self, index: int, round_index: int) -> tuple[str, str]:
        now = get_dht_time()
        batch = RolloutBatch(
            self.rules.swarm_id,
            self.rules.window_of(now),
            round_index,
            now,
            "bench",
            "v",
            tuple(self.workload.rollouts_for(round_index)),
        )
        key, peer_id = f"{NAIVE_PREFIX}{round_index}", self.identities[index].peer_id
        item = StoreItem(key, peer_id, BATCH.seal(batch, self.identities[index]), self.rules.expiration_of(now))
        self.peers[index].store([item], timeout_s=5)
        return key, peer_id

    def collect(self, index: int, round_index: int) -> int:
        """rl-swarm's read: the round's one key, every peer's batch in it; verify until J rollouts."""
        key = f"{NAIVE_PREFIX}{round_index}"
        found = self.peers[index].get_many([key], timeout_s=3.0).entries
        taken: Counter[str] = Counter()
        now = get_dht_time()
        for subkey, (frame, _) in found.get(key, {}).items():
            if subkey == self.identities[index].peer_id or sum(taken.values()) >= self.workload.collect:
                continue
            try:
                signed = open_frame(frame, BATCH, self.rules, now=now, replay_guard=self.guards[index])
            except Rejected:
                continue
            room = min(self.workload.per_peer_cap, self.workload.collect - sum(taken.values()))
            taken[subkey] += min(room, len(signed.value.rollouts))
        return sum(taken.values())

    def dht(self, index: int) -> DHTPeer:
        return self.peers[index]

    def close(self) -> None:
        start_all([peer.close for peer in self.peers])


def measure(
    swarm: Swarm, rounds: int, latency_samples: int, rng: random.Random, window_s: float = 3600.0
) -> dict[str, float]:
    """Per node and round; with a short `window_s`, every round starts in a new window."""
    size = len(swarm.identities)
    order = list(range(size))
    run_round(swarm, 0, order, rng)  # warm-up: routing tables settle
    before = [swarm.dht(i).traffic() for i in order]
    collected = 0
    for round_index in range(1, rounds + 1):
        if window_s < 60:
            time.sleep(window_s - get_dht_time() % window_s)
        collected += run_round(swarm, round_index, order, rng)
    deltas = [swarm.dht(i).traffic() - start for i, start in zip(order, before)]
    latencies = [publish_to_visible(swarm, rounds + 1, rng) for _ in range(latency_samples)]
    seen = [latency for latency in latencies if latency is not None]
    per_round = size * rounds
    return {
        "peers": size,
        "requests_per_node_round": sum(d.requests_sent for d in deltas) / per_round,
        "bytes_in_per_node_round": sum(d.bytes_in for d in deltas) / per_round,
        "bytes_out_per_node_round": sum(d.bytes_out for d in deltas) / per_round,
        "busiest_node_bytes_per_round": max(d.bytes_in + d.bytes_out for d in deltas) / rounds,
        "busiest_node_requests_served_per_round": max(d.requests_served for d in deltas) / rounds,
        "rollouts_collected_per_node_round": collected / per_round,
        "visible_p50_ms": 1000 * statistics.median(seen) if seen else float("nan"),
        "visible_p95_ms": 1000 * _p95(seen) if seen else float("nan"),
        "visible_missed": len(latencies) - len(seen),
    }


def run_round(swarm: Swarm, round_index: int, order: list[int], rng: random.Random) -> int:
    rng.shuffle(order)
    for index in order:
        swarm.publish(index, round_index)
    rng.shuffle(order)
    return sum(swarm.collect(index, round_index) for index in order)


def publish_to_visible(swarm: Swarm, round_index: int, rng: random.Random) -> float | None:
    """Seconds from the start of a publish until another random peer's lookup returns that very batch."""
    publisher, reader = rng.sample(range(len(swarm.identities)), 2)
    started, signed_after = time.monotonic(), get_dht_time()
    key, subkey = swarm.publish(publisher, round_index)
    while time.monotonic() - started < VISIBLE_TIMEOUT_S:
        found = swarm.dht(reader).get_many([key], timeout_s=VISIBLE_TIMEOUT_S).entries
        entry = found.get(key, {}).get(subkey)
        if entry is not None and open_frame(entry[0], BATCH).value.timestamp >= signed_after:
            return time.monotonic() - started
    return None


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64", help="comma-separated swarm sizes")
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds per size and layout")
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per published batch")
    parser.add_argument("--completions", type=int, default=4, help="completions per rollout")
    parser.add_argument("--completion-bytes", type=int, default=200)
    parser.add_argument("--collect", type=int, default=4, help="J: rollouts each peer collects per round")
    parser.add_argument("--per-peer-cap", type=int, default=2)
    parser.add_argument("--shards", default=f"16,{SwarmConfig().num_shards}", help="swarm.num_shards values to compare")
    parser.add_argument("--no-naive", action="store_true", help="skip the one-key-per-round layout")
    parser.add_argument(
        "--window-s", type=float, default=3600.0,
        help="swarm.window_s: the default keeps every round in one window; a few seconds puts each round in a new "
        "one (rounds slower than a window: a directory entry and read every round, the worst case)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gossip.json")
    args = parser.parse_args()
    workload = Workload(
        args.rollouts, args.completions, args.completion_bytes, args.collect, args.per_peer_cap
    )
    layouts = [
        ("sharded", ShardedSwarm,
         SwarmConfig(id="bench", window_s=args.window_s, record_ttl_s=2 * args.window_s, num_shards=int(shards)))
        for shards in dict.fromkeys(args.shards.split(","))
    ]
    if not args.no_naive:
        layouts.append(("naive", NaiveSwarm, SwarmConfig(id="bench", window_s=args.window_s, record_ttl_s=2 * args.window_s)))
    rng = random.Random(0)
    console = Console(width=130)
    load_at_start = os.getloadavg()[0]
    console.print(f"load average at start: {load_at_start:.2f} on {os.cpu_count()} CPUs", highlight=False)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-gossip-") as tmp:
        for size in [int(text) for text in args.sizes.split(",")]:
            identities = [Identity.generate() for _ in range(size)]
            keys = [Path(tmp) / f"{size}-{index}.key" for index in range(size)]
            for identity, key in zip(identities, keys):
                save_identity(identity, key, overwrite=True)
            for name, layout, swarm in layouts:
                started = time.monotonic()
                peers = layout(keys, identities, swarm, workload)
                shards = swarm.num_shards if name == "sharded" else None
                try:
                    measured = measure(peers, args.rounds, args.latency_samples, rng, args.window_s)
                    row = {"layout": name, "shards": shards, "window_s": args.window_s, **measured}
                finally:
                    peers.close()
                row["wall_s"] = time.monotonic() - started
                results.append(row)
                console.print(f"N={size:>3} {name:<8} {shards or '':>4} done in {row['wall_s']:.0f} s", highlight=False)
    frame_bytes = len(
        BATCH.seal(
            RolloutBatch("bench", 0, 0, 1.0, "bench", "v", tuple(workload.rollouts_for(0))),
            Identity.generate(),
        )
    )
    console.print(render(results, workload, frame_bytes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "workload": {**workload.__dict__, "frame_bytes": frame_bytes, "rounds": args.rounds},
                "swarm": layouts[0][2].model_dump(exclude={"num_shards"}),
                "gossip": GossipConfig(max_rollouts_per_peer=workload.per_peer_cap).model_dump(),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_1m_at_start": load_at_start,
                    "python": platform.python_version(),
                },
                "results": results,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}", highlight=False)


def render(results: list[dict], workload: Workload, frame_bytes: int) -> Table:
    table = Table(
        title=f"gossip per node and round (batch {frame_bytes} B, "
        f"J={workload.collect}, cap {workload.per_peer_cap}/peer)"
    )
    for column in (
        "N",
        "layout",
        "shards",
        "requests",
        "KB in",
        "KB out",
        "busiest KB",
        "busiest served",
        "rollouts",
        "visible p50 ms",
        "p95 ms",
    ):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            str(row["peers"]),
            row["layout"],
            str(row["shards"] or "1/round"),
            f"{row['requests_per_node_round']:.1f}",
            f"{row['bytes_in_per_node_round'] / 1000:.1f}",
            f"{row['bytes_out_per_node_round'] / 1000:.1f}",
            f"{row['busiest_node_bytes_per_round'] / 1000:.1f}",
            f"{row['busiest_node_requests_served_per_round']:.1f}",
            f"{row['rollouts_collected_per_node_round']:.1f}",
            f"{row['visible_p50_ms']:.1f}",
            f"{row['visible_p95_ms']:.1f}",
        )
    return table


if __name__ == "__main__":
    main()
