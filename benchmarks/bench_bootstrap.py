"""The bootstrap's load: what it serves per round once a swarm runs, and per join in a join storm; run on one or
more checkouts (`--code DIR`, each in a subprocess of its own) so that before and after come from one run.

*rounds*: N peers in one process join through one bootstrap (as `bench_gossip.py`'s sharded layout), a warm-up
round, then `--rounds` rounds of publish + collect. Per round: requests served by the busiest peer and by the
bootstrap, the bootstrap's by kind (pings; finds where it is one of the key's 5 nearest peers, i.e. a replica;
finds where it is only a hop of someone's lookup; stores), and how many of the other peers' routing tables
hold it.

*storm*: `--bootstraps` bootstrap peers and `--settled` peers that joined before; then `--joiners` peers start
at once, each given every bootstrap as an initial peer and (as a restarted node has) the settled peers as its
peer book. Per join: requests served by each bootstrap until every joiner is up.

Usage: python benchmarks/bench_bootstrap.py [--code DIR ...] [--sizes 16,64] [--rounds 3] [--joiners 32]
       [--bootstraps 3] [--settled 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import typing
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@contextlib.contextmanager
def counting():
    """Count every DHT request served in this process, by serving node id and kind (the handlers are looked up
    on the instance when a protocol starts, so patching the class first catches them all)."""
    from hivemind.dht.protocol import DHTProtocol
    from hivemind.dht.routing import DHTID

    served: Counter = Counter()
    keys: dict = {}
    originals = {name: getattr(DHTProtocol, name) for name in ("rpc_ping", "rpc_find", "rpc_store")}

    def wrap(name):
        original = originals[name]

        async def handler(self, request, context):
            served[(self.node_id, name)] += 1
            if name == "rpc_find":
                for key in request.keys:
                    keys.setdefault(self.node_id, []).append(DHTID.from_bytes(key))
            return await original(self, request, context)

        handler.__annotations__ = typing.get_type_hints(original)  # hivemind reads the request type from them
        return handler

    for name in originals:
        setattr(DHTProtocol, name, wrap(name))
    try:
        yield served, keys
    finally:
        for name, original in originals.items():
            setattr(DHTProtocol, name, original)


def is_replica(node_id, key, all_ids, replicas: int = 5) -> bool:
    """Whether `node_id` is among the `replicas` nearest ids to `key` (or to its neighbour key ^ 1: a probe)."""
    nearest = sorted(all_ids, key=lambda other: int(other) ^ int(key))[: replicas + 1]
    return node_id in nearest


def key_names(rules) -> dict[int, str]:
    """DHT ids (last bit cleared: a key and its probe alike) of the keys a bench round uses, by kind."""
    from hivemind.dht.routing import DHTID

    from swarmnode.wire import keys

    window = rules.window_of(time.time())
    tiered = "tier" in inspect.signature(keys.directory_key).parameters  # protocol v2: (tier, bucket) keys
    places = [(tier, bucket) for tier in range(5) for bucket in range(2**tier)] if tiered else [()]
    names = {}
    epoch = getattr(rules, "epoch_windows", 1)  # protocol v3: directory and census keys named by an epoch's first window
    for w in (window - 1, window, window + 1):
        e = window - window % epoch + (w - window) * epoch  # the epochs before, of and after this window
        for place in places:
            names[int(DHTID.generate(source=keys.directory_key(rules.swarm_id, e, *place))) & ~1] = "directory"
            if tiered:
                names[int(DHTID.generate(source=keys.census_key(rules.swarm_id, e, *place))) & ~1] = "census"
        for shard in range(rules.num_shards):
            names[int(DHTID.generate(source=keys.batch_key(rules.swarm_id, w, shard))) & ~1] = "batch"
        for bucket in range(0 if tiered else 64):
            with contextlib.suppress(Exception):
                names[int(DHTID.generate(source=keys.census_key(rules.swarm_id, w, bucket))) & ~1] = "census"
    return names


def rounds_mode(size: int, rounds: int, seed: int) -> dict:
    from bench_gossip import ShardedSwarm, Workload, run_round

    from swarmnode.config import SwarmConfig
    from swarmnode.wire.identity import Identity, save_identity

    rng = random.Random(seed)
    workload = Workload(8, 4, 200, 4, 2)
    with tempfile.TemporaryDirectory(prefix="bench-bootstrap-") as tmp, counting() as (served, keys):
        keys_paths = []
        for index in range(size):
            path = Path(tmp) / f"{index}.key"
            save_identity(Identity.generate(), path)
            keys_paths.append(path)
        identities = [None] * size
        from swarmnode.wire.identity import load_identity

        identities = [load_identity(path) for path in keys_paths]
        swarm = ShardedSwarm(keys_paths, identities, SwarmConfig(id="bench", num_shards=256), workload)
        try:
            order = list(range(size))
            run_round(swarm, 0, order, rng)
            before = [peer.traffic() for peer in swarm.peers]
            served.clear()
            keys.clear()
            started = time.monotonic()
            collected = 0
            for round_index in range(1, rounds + 1):
                collected += run_round(swarm, round_index, order, rng)
            elapsed = time.monotonic() - started
            deltas = [peer.traffic() - start for peer, start in zip(swarm.peers, before)]
            boot = swarm.peers[0]._node
            all_ids = [peer._node.node_id for peer in swarm.peers]
            finds = keys.get(boot.node_id, [])
            replica_finds = sum(1 for key in finds if is_replica(boot.node_id, key, all_ids))
            tables = [peer._node.protocol.routing_table for peer in swarm.peers[1:]]
            holding = sum(1 for table in tables if boot.node_id in table.uid_to_peer_id)
            served_by = sorted((d.requests_served for d in deltas), reverse=True)
            names = key_names(swarm.gossips[0].rules)
            busiest = sorted(range(size), key=lambda i: -deltas[i].requests_served)[:3]
            top = []
            for index in busiest:
                kinds: Counter = Counter()
                for key in keys.get(all_ids[index], []):
                    role = "replica" if is_replica(all_ids[index], key, all_ids) else "hop"
                    kinds[f"{names.get(int(key) & ~1, 'other')}:{role}"] += 1 / rounds
                # index 0 is the bootstrap
                top.append({"peer": index, "served_per_round": deltas[index].requests_served / rounds,
                            "find_keys_per_round": dict(kinds.most_common())})
            return {
                "mode": "rounds",
                "peers": size,
                "rounds": rounds,
                "round_s": elapsed / rounds,
                "requests_sent_per_node_round": sum(d.requests_sent for d in deltas) / rounds / size,
                "rollouts_collected_per_node_round": collected / rounds / size,
                "busiest_served_per_round": served_by[0] / rounds,
                "second_busiest_served_per_round": served_by[1] / rounds,
                "median_served_per_round": served_by[len(served_by) // 2] / rounds,
                "bootstrap_served_per_round": deltas[0].requests_served / rounds,
                "bootstrap_pings_per_round": (served[(boot.node_id, "rpc_ping")] - served[(boot.node_id, "rpc_find")]
                                              - served[(boot.node_id, "rpc_store")]) / rounds,
                "bootstrap_finds_per_round": served[(boot.node_id, "rpc_find")] / rounds,
                "bootstrap_find_keys_as_replica_per_round": replica_finds / rounds,
                "bootstrap_find_keys_as_hop_per_round": (len(finds) - replica_finds) / rounds,
                "bootstrap_stores_per_round": served[(boot.node_id, "rpc_store")] / rounds,
                "tables_holding_bootstrap": holding / len(tables),
                "mean_table_size": sum(len(table.uid_to_peer_id) for table in tables) / len(tables),
                "busiest": top,
            }
        finally:
            swarm.close()


def storm_mode(joiners: int, bootstraps: int, settled: int) -> dict:
    from swarmnode.config import NetworkConfig, SwarmConfig
    from swarmnode.lab.dht_swarm import start_all
    from swarmnode.net.peer import DHTPeer
    from swarmnode.wire.identity import Identity, save_identity
    from swarmnode.wire.rules import SwarmRules

    rules = SwarmRules.of(SwarmConfig(id="bench"))
    peers: list = []
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp, counting() as (served, _):

        def key(name: str) -> Path:
            path = Path(tmp) / f"{name}.key"
            save_identity(Identity.generate(), path)
            return path

        try:
            first = DHTPeer(key("b0"), rules, NetworkConfig())
            first.start()
            peers.append(first)
            others = [DHTPeer(key(f"b{i}"), rules, NetworkConfig(initial_peers=first.visible_maddrs))
                      for i in range(1, bootstraps)]
            start_all([peer.start for peer in others])
            peers.extend(others)
            boots = peers[:bootstraps]
            boot_maddrs = [maddr for peer in boots for maddr in peer.visible_maddrs]
            old = [DHTPeer(key(f"s{i}"), rules, NetworkConfig(initial_peers=boot_maddrs)) for i in range(settled)]
            start_all([peer.start for peer in old])
            peers.extend(old)
            book = [maddr for peer in old for maddr in peer.visible_maddrs]
            time.sleep(1.0)
            before = [peer.traffic() for peer in boots]
            counts_before = Counter(served)
            new = [DHTPeer(key(f"j{i}"), rules, NetworkConfig(initial_peers=boot_maddrs), learnt_peers=book)
                   for i in range(joiners)]
            started = time.monotonic()
            with ThreadPoolExecutor(joiners) as pool:
                outcomes = list(pool.map(lambda peer: _start(peer), new))
            joined_s = time.monotonic() - started
            peers.extend(new)
            time.sleep(1.0)  # the joins' last requests
            deltas = [peer.traffic() - start for peer, start in zip(boots, before)]
            after = Counter(served)
            failed = [outcome for outcome in outcomes if outcome is not None]
            return {
                "mode": "storm",
                "joiners": joiners,
                "bootstraps": bootstraps,
                "settled": settled,
                "joined": joiners - len(failed),
                "failures": failed[:3],
                "storm_s": joined_s,
                "served_per_join_by_bootstrap": [d.requests_served / joiners for d in deltas],
                "by_kind_per_join": {
                    name: sum(after[(p._node.node_id, name)] - counts_before[(p._node.node_id, name)] for p in boots)
                    / joiners / bootstraps
                    for name in ("rpc_ping", "rpc_find", "rpc_store")
                },  # rpc_ping includes the in-process ping each find and store makes for its sender
                "mean_table_size": sum(peer.num_peers() for peer in new if peer.started) / max(1, len(new)),
            }
        finally:
            start_all([peer.close for peer in peers])


def churn_mode(size: int, rounds: int, leave_every: int, seed: int) -> dict:
    """`size` peers publish and collect in turn, round after round; every `leave_every` rounds one of them (never
    the bootstrap) goes silent (its p2pd stopped: a machine that lost its network) and takes no further part.
    Every publish's and collect's duration is recorded."""
    import signal

    from bench_gossip import ShardedSwarm, Workload

    from swarmnode.config import SwarmConfig
    from swarmnode.wire.identity import Identity, load_identity, save_identity

    rng = random.Random(seed)
    workload = Workload(8, 4, 200, 4, 2)
    publish_s: list[float] = []
    collect_s: list[float] = []
    stopped: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp:
        paths = []
        for index in range(size):
            path = Path(tmp) / f"{index}.key"
            save_identity(Identity.generate(), path)
            paths.append(path)
        swarm = ShardedSwarm(paths, [load_identity(path) for path in paths], SwarmConfig(id="bench", num_shards=256),
                             workload)
        try:
            alive = list(range(size))
            for round_index in range(rounds + 1):
                if round_index and round_index % leave_every == 0:
                    leaving = rng.choice(alive[1:])
                    alive.remove(leaving)
                    pid = swarm.peers[leaving].daemon_pid()
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
                order = list(alive)
                for action, seconds in ((swarm.publish, publish_s), (swarm.collect, collect_s)):
                    rng.shuffle(order)
                    for index in order:
                        started = time.monotonic()
                        action(index, round_index)
                        if round_index:
                            seconds.append(time.monotonic() - started)
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            swarm.close()

    def summary(samples: list[float]) -> dict:
        ordered = sorted(samples)
        return {"count": len(ordered), "p50_s": ordered[len(ordered) // 2], "p95_s": ordered[int(0.95 * (len(ordered) - 1))],
                "max_s": ordered[-1], "over_2_5_s": sum(1 for value in ordered if value > 2.5)}

    return {"mode": "churn", "peers": size, "rounds": rounds, "left": len(stopped), "publish": summary(publish_s),
            "collect": summary(collect_s)}


def _start(peer) -> str | None:
    try:
        peer.start()
        return None
    except Exception as error:  # reported, not raised: the storm's outcome is what we measure
        return f"{type(error).__name__}: {error}"


def child(args: argparse.Namespace) -> None:
    rows = []
    for size in [int(text) for text in args.sizes.split(",") if text]:
        rows.append(rounds_mode(size, args.rounds, args.seed))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.joiners:
        rows.append(storm_mode(args.joiners, args.bootstraps, args.settled))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.churn_rounds:
        rows.append(churn_mode(args.churn_peers, args.churn_rounds, args.leave_every, args.seed))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", type=Path, help="checkout to measure (repeatable; default: this)")
    parser.add_argument("--sizes", default="16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--joiners", type=int, default=32, help="0: no join storm")
    parser.add_argument("--bootstraps", type=int, default=3)
    parser.add_argument("--settled", type=int, default=8)
    parser.add_argument("--churn-rounds", type=int, default=0, help="0: no churn run")
    parser.add_argument("--churn-peers", type=int, default=24)
    parser.add_argument("--leave-every", type=int, default=2, help="rounds between two peers going silent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bootstrap.json")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    for code in args.code or [ROOT]:
        command = [sys.executable, __file__, "--child", "--sizes", args.sizes, "--rounds", str(args.rounds),
                   "--joiners", str(args.joiners), "--bootstraps", str(args.bootstraps), "--settled", str(args.settled),
                   "--seed", str(args.seed), "--churn-rounds", str(args.churn_rounds), "--churn-peers",
                   str(args.churn_peers), "--leave-every", str(args.leave_every)]
        env = {**os.environ, "PYTHONPATH": str(Path(code).resolve())}
        label = _describe(Path(code))
        print(f"measuring {label}", flush=True)
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    render(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "results": results},
                                   indent=2))
    print(f"wrote {args.out}")


def _describe(code: Path) -> str:
    commit = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain"], capture_output=True, text=True)
    if commit.returncode != 0:
        return str(code)
    return f"{code.name}@{commit.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''}"


def render(results: dict) -> None:
    print("\nchurn (seconds per publish and per collect; a peer goes silent every few rounds)")
    for label, rows in results.items():
        for row in rows:
            if row["mode"] != "churn":
                continue
            parts = [f"{what} p50 {row[what]['p50_s']:.2f} p95 {row[what]['p95_s']:.2f} max {row[what]['max_s']:.2f} "
                     f"over 2.5 s: {row[what]['over_2_5_s']}/{row[what]['count']}" for what in ("publish", "collect")]
            print(f"{label:<28} {row['peers']} peers, {row['left']} left in {row['rounds']} rounds: " + "; ".join(parts))
    print("\nper round (requests served)")
    print(f"{'code':<28} {'N':>4} {'busiest':>8} {'2nd':>6} {'median':>7} {'boot':>6} {'ping':>5} {'find':>5} "
          f"{'key:rep':>7} {'key:hop':>7} {'store':>6} {'tables w/ boot':>14} {'table':>6}")
    for label, rows in results.items():
        for row in rows:
            if row["mode"] != "rounds":
                continue
            print(f"{label:<28} {row['peers']:>4} {row['busiest_served_per_round']:>8.1f} "
                  f"{row['second_busiest_served_per_round']:>6.1f} {row['median_served_per_round']:>7.1f} "
                  f"{row['bootstrap_served_per_round']:>6.1f} {row['bootstrap_pings_per_round']:>5.1f} "
                  f"{row['bootstrap_finds_per_round']:>5.1f} {row['bootstrap_find_keys_as_replica_per_round']:>7.1f} "
                  f"{row['bootstrap_find_keys_as_hop_per_round']:>7.1f} {row['bootstrap_stores_per_round']:>6.1f} "
                  f"{row['tables_holding_bootstrap']:>14.0%} {row['mean_table_size']:>6.1f}")
    print("\njoin storm (requests served per join)")
    for label, rows in results.items():
        for row in rows:
            if row["mode"] != "storm":
                continue
            each = ", ".join(f"{value:.2f}" for value in row["served_per_join_by_bootstrap"])
            kinds = ", ".join(f"{name[4:]} {value:.2f}" for name, value in row["by_kind_per_join"].items())
            print(f"{label:<28} {row['joiners']} joiners, {row['bootstraps']} bootstraps, {row['settled']} settled: "
                  f"each bootstrap {each}; per bootstrap by kind: {kinds}; joined {row['joined']}/{row['joiners']} "
                  f"in {row['storm_s']:.1f} s; table {row['mean_table_size']:.1f}")


if __name__ == "__main__":
    main()
