"""What the census costs a node per window, for N peers: its beacon plus its own sampled census (what a node
does), against every node reading every census bucket each window (the baseline a full view would cost).

All peers live in this process, each with its own p2pd daemon and DHT loop thread, on 127.0.0.1. Each window:
every peer stores its beacon and takes its census (8 at a time, in random order), then, in the same window,
every peer takes a full census. Reported per node and window: DHT requests sent, bytes in/out (protobuf
messages, including requests served for others), the busiest node, and how many nodes the censuses saw.
Writes benchmarks/results/census.json.

Usage: python benchmarks/bench_census.py [--sizes 4,16,64] [--windows 2] [--window-s 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hivemind.utils import get_dht_time
from rich.console import Console
from rich.table import Table

from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.lab.dht_swarm import START_WORKERS, start_all
from swarmnode.net.census import CENSUS_SAMPLE, BeaconService, Census, take_census
from swarmnode.net.peer import DHTPeer
from swarmnode.net.traffic import TrafficSnapshot
from swarmnode.wire.address import Reachability
from swarmnode.wire.beacon import BEACON, Beacon
from swarmnode.wire.identity import Identity, load_identity, save_identity
from swarmnode.wire.rules import SwarmRules

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 10.0


def beacon_source(swarm_id: str, index: int) -> Callable[[int, float], Beacon]:
    """A beacon the size of a real one (a hub model id, every field set)."""

    def source(window: int, now: float) -> Beacon:
        return Beacon(
            swarm_id, window, now, "swarmnode/0.1.0", "Qwen/Qwen2.5-0.5B-Instruct", round=1000 + index, reward=0.42,
            held_out=0.31, held_out_round=1000, rollouts_shared=8000, rollouts_received=7000, peer_groups_trained=3000,
            reachability=Reachability.PRIVATE, uptime_s=86400.0, rounds_per_hour=30.0, rollouts_per_hour=240.0, phase="generate",
        )

    return source


class Swarm:
    def __init__(self, keys: list[Path], swarm: SwarmConfig) -> None:
        self.rules = SwarmRules.of(swarm)
        first = DHTPeer(keys[0], self.rules, NetworkConfig())
        first.start()
        join = NetworkConfig(initial_peers=first.visible_maddrs)
        rest = [DHTPeer(key, self.rules, join) for key in keys[1:]]
        start_all([peer.start for peer in rest])
        self.peers = [first, *rest]
        self.services = [
            BeaconService(peer, load_identity(key), self.rules, beacon_source(swarm.id, index), lambda census: None,
                          timeout_s=TIMEOUT_S)
            for index, (peer, key) in enumerate(zip(self.peers, keys))
        ]

    def traffic(self) -> list[TrafficSnapshot]:
        return [peer.traffic() for peer in self.peers]

    def each(self, call: Callable[[int], Census | bool], rng: random.Random) -> list:
        order = list(range(len(self.peers)))
        rng.shuffle(order)
        with ThreadPoolExecutor(START_WORKERS) as pool:
            return list(pool.map(call, order))

    def close(self) -> None:
        start_all([peer.close for peer in self.peers])


def measure(swarm: Swarm, windows: int, rng: random.Random) -> dict[str, float]:
    size, rules = len(swarm.peers), swarm.rules
    ours, full = [TrafficSnapshot() for _ in swarm.peers], [TrafficSnapshot() for _ in swarm.peers]
    seen_sampled, seen_full, buckets_sampled, stored = [], [], [], 0
    for window in range(windows + 1):  # the first window warms routing tables up and is not counted
        time.sleep(rules.window_s - get_dht_time() % rules.window_s + 0.5)
        before = swarm.traffic()
        published = swarm.each(lambda i: swarm.services[i].publish(), rng)
        sampled = swarm.each(lambda i: swarm.services[i].sampled_census(), rng)
        middle = swarm.traffic()
        complete = swarm.each(lambda i: take_census(swarm.peers[i], rules, timeout_s=TIMEOUT_S), rng)
        after = swarm.traffic()
        if window == 0:
            continue
        ours = [total + (b - a) for total, a, b in zip(ours, before, middle)]
        full = [total + (b - a) for total, a, b in zip(full, middle, after)]
        stored += sum(published)
        seen_sampled += [len(census.entries) for census in sampled]
        buckets_sampled += [census.buckets_read for census in sampled]
        seen_full += [len(census.entries) for census in complete]
    per = size * windows
    row: dict[str, float] = {"peers": size, "beacons_stored_share": stored / per}
    for name, deltas in (("ours", ours), ("full", full)):
        row[f"{name}_requests_per_node_window"] = sum(d.requests_sent for d in deltas) / per
        row[f"{name}_bytes_in_per_node_window"] = sum(d.bytes_in for d in deltas) / per
        row[f"{name}_bytes_out_per_node_window"] = sum(d.bytes_out for d in deltas) / per
        row[f"{name}_busiest_bytes_per_window"] = max(d.bytes_in + d.bytes_out for d in deltas) / windows
        row[f"{name}_busiest_served_per_window"] = max(d.requests_served for d in deltas) / windows
    row["ours_nodes_seen_mean"] = sum(seen_sampled) / len(seen_sampled)
    row["ours_buckets_read_mean"] = sum(buckets_sampled) / len(buckets_sampled)
    row["full_nodes_seen_mean"] = sum(seen_full) / len(seen_full)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64", help="comma-separated swarm sizes")
    parser.add_argument("--windows", type=int, default=2, help="measured windows per size (after one warm-up window)")
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "census.json")
    args = parser.parse_args()
    swarm_config = SwarmConfig(id="bench-census", window_s=args.window_s, record_ttl_s=2 * args.window_s)
    rng = random.Random(0)
    console = Console(width=140)
    load_at_start = os.getloadavg()[0]
    console.print(f"load average at start: {load_at_start:.2f} on {os.cpu_count()} CPUs", highlight=False)
    beacon_bytes = len(BEACON.seal(beacon_source(swarm_config.id, 0)(0, 1.0), Identity.generate()))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-census-") as tmp:
        for size in [int(text) for text in args.sizes.split(",")]:
            keys = [Path(tmp) / f"{size}-{index}.key" for index in range(size)]
            for key in keys:
                save_identity(Identity.generate(), key, overwrite=True)
            started = time.monotonic()
            swarm = Swarm(keys, swarm_config)
            try:
                row = measure(swarm, args.windows, rng)
            finally:
                swarm.close()
            row["wall_s"] = time.monotonic() - started
            results.append(row)
            console.print(f"N={size:>3} done in {row['wall_s']:.0f} s", highlight=False)
    console.print(render(results, beacon_bytes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "beacon_bytes": beacon_bytes,
        "census_sample": CENSUS_SAMPLE,
        "windows": args.windows,
        "swarm": swarm_config.model_dump(exclude={"num_shards"}),
        "machine": {"cpus": os.cpu_count(), "load_1m_at_start": load_at_start, "python": platform.python_version()},
        "results": results,
    }, indent=2))
    console.print(f"wrote {args.out}", highlight=False)


def render(results: list[dict], beacon_bytes: int) -> Table:
    table = Table(title=f"census per node and window (beacon frame {beacon_bytes} B; ours: beacon + census of "
                        f"≥{CENSUS_SAMPLE} nodes; full: every bucket, every node, every window)")
    for column in ("N", "requests ours / full", "KB in ours / full", "KB out ours / full", "busiest KB ours / full",
                   "busiest served ours / full", "nodes seen ours / full", "buckets read ours"):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            str(row["peers"]),
            f"{row['ours_requests_per_node_window']:.1f} / {row['full_requests_per_node_window']:.1f}",
            f"{row['ours_bytes_in_per_node_window'] / 1e3:.1f} / {row['full_bytes_in_per_node_window'] / 1e3:.1f}",
            f"{row['ours_bytes_out_per_node_window'] / 1e3:.1f} / {row['full_bytes_out_per_node_window'] / 1e3:.1f}",
            f"{row['ours_busiest_bytes_per_window'] / 1e3:.1f} / {row['full_busiest_bytes_per_window'] / 1e3:.1f}",
            f"{row['ours_busiest_served_per_window']:.0f} / {row['full_busiest_served_per_window']:.0f}",
            f"{row['ours_nodes_seen_mean']:.1f} / {row['full_nodes_seen_mean']:.1f}",
            f"{row['ours_buckets_read_mean']:.1f}",
        )
    return table


if __name__ == "__main__":
    main()
