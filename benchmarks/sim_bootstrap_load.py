"""The bootstrap's share of lookups in swarms of thousands, which one machine cannot run as real peers: hivemind's
own RoutingTable (bucket 20, depth modulo 5) for every node, and a Kademlia lookup as hivemind's traverse does it
(ask the nearest unasked known peer until the `beam` nearest known were all asked; every request puts each side in
the other's table, as hivemind's protocol does). No network, no timing: only who is asked.

N nodes join one after another through the bootstrap (a ping, then a lookup of their own id, beam 20). Then
every node looks up `--lookups` random keys (beam 5, as a store or read does). Compared:

- *before*: lookups start from the nearest peers of the node's table, the bootstrap included;
- *after*: a join also looks up a random id in each bucket not holding the node's own id (Kademlia's refresh),
  and lookups start from the nearest peers other than the configured one while the table holds 5 others
  (`DHTPeer._nearest`).

Reported per variant: requests the bootstrap served per lookup in the workload, against the median and the
busiest other node; and requests served by the bootstrap per join.

Usage: python benchmarks/sim_bootstrap_load.py [--sizes 250,1000,2000] [--lookups 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import time
from pathlib import Path

from hivemind.dht.routing import DHTID, RoutingTable

ROOT = Path(__file__).resolve().parents[1]
BUCKET, DEPTH_MODULO, REPLICAS, JOIN_BEAM = 20, 5, 5, 20


class Sim:
    def __init__(self, size: int, refresh: bool, avoid_configured: bool, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ids = [DHTID(self.rng.randrange(DHTID.MAX)) for _ in range(size)]
        self.tables = [RoutingTable(node_id, BUCKET, DEPTH_MODULO) for node_id in self.ids]
        self.served = [0] * size
        self.refresh, self.avoid_configured = refresh, avoid_configured

    def contact(self, asker: int, asked: int) -> None:
        """A request and its answer: each side adds the other (a full bucket keeps its old, answering nodes)."""
        self.tables[asker].add_or_update_node(self.ids[asked], asked)
        self.tables[asked].add_or_update_node(self.ids[asker], asker)

    def find(self, asker: int, asked: int, query: DHTID) -> list[int]:
        self.served[asked] += 1
        self.contact(asker, asked)
        return [peer for _, peer in self.tables[asked].get_nearest_neighbors(query, BUCKET, exclude=self.ids[asker])]

    def start(self, node: int, query: DHTID, beam: int) -> list[int]:
        known = [peer for _, peer in self.tables[node].get_nearest_neighbors(query, beam + 1, exclude=self.ids[node])]
        if self.avoid_configured:
            others = [peer for peer in known if peer != 0]
            if len(others) >= beam:
                return others[:beam]
        return known[:beam]

    def lookup(self, node: int, query: DHTID, beam: int) -> None:
        distance = lambda peer: int(self.ids[peer]) ^ int(query)  # noqa: E731
        known = set(self.start(node, query, beam)) - {node}
        asked: set[int] = set()
        while True:
            nearest = heapq.nsmallest(beam, known, key=distance)
            unasked = [peer for peer in nearest if peer not in asked]
            if not unasked:
                return
            peer = unasked[0]
            asked.add(peer)
            known.update(neighbour for neighbour in self.find(node, peer, query) if neighbour != node)

    def join(self, node: int) -> None:
        self.contact(node, 0)  # the ping
        self.lookup(node, self.ids[node], JOIN_BEAM)
        if self.refresh:
            for bucket in list(self.tables[node].buckets):
                if not bucket.has_in_range(self.ids[node]):
                    self.lookup(node, DHTID(self.rng.randint(bucket.lower, bucket.upper - 1)), REPLICAS)


def run(size: int, lookups: int, refresh: bool, avoid: bool, seed: int) -> dict:
    sim = Sim(size, refresh, avoid, seed)
    for node in range(1, size):
        sim.join(node)
    joined = list(sim.served)
    sim.served = [0] * size
    for _ in range(lookups):
        for node in range(1, size):
            sim.lookup(node, DHTID(sim.rng.randrange(DHTID.MAX)), REPLICAS)
    total = lookups * (size - 1)
    others = sorted(sim.served[1:])
    holding = sum(1 for table in sim.tables[1:] if sim.ids[0] in table.uid_to_peer_id) / (size - 1)
    return {
        "peers": size,
        "refresh": refresh,
        "avoid_configured": avoid,
        "bootstrap_served_per_join": joined[0] / (size - 1),
        "busiest_other_served_per_join": max(joined[1:]) / (size - 1),
        "bootstrap_served_per_1000_lookups": 1000 * sim.served[0] / total,
        "median_served_per_1000_lookups": 1000 * statistics.median(others) / total,
        "busiest_other_served_per_1000_lookups": 1000 * others[-1] / total,
        "tables_holding_bootstrap": holding,
        "mean_table_size": statistics.mean(len(table.uid_to_peer_id) for table in sim.tables[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250,1000,2000")
    parser.add_argument("--lookups", type=int, default=10, help="random-key lookups per node after the joins")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sim_bootstrap_load.json")
    args = parser.parse_args()
    rows = []
    print(f"{'N':>5} {'variant':<8} {'boot/join':>9} {'boot/1k lookups':>15} {'median':>7} {'busiest other':>13} "
          f"{'tables w/ boot':>14} {'table':>6} {'s':>5}")
    for size in [int(text) for text in args.sizes.split(",")]:
        for label, refresh, avoid in (("before", False, False), ("after", True, True)):
            started = time.monotonic()
            row = {"variant": label, **run(size, args.lookups, refresh, avoid, args.seed)}
            rows.append(row)
            print(f"{size:>5} {label:<8} {row['bootstrap_served_per_join']:>9.2f} "
                  f"{row['bootstrap_served_per_1000_lookups']:>15.1f} {row['median_served_per_1000_lookups']:>7.1f} "
                  f"{row['busiest_other_served_per_1000_lookups']:>13.1f} {row['tables_holding_bootstrap']:>14.0%} "
                  f"{row['mean_table_size']:>6.1f} {time.monotonic() - started:>5.0f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"lookups_per_node": args.lookups, "seed": args.seed, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
