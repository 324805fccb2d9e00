"""The honest side of bench_dht_attacks.py: N honest DHT-only peers in this process (each with its own p2pd on
127.0.0.1), running whichever code tree PYTHONPATH names: the current layered one, or the flat one it replaced.

Each window: every peer stores its beacon; in a window whose census is measured, the readers then take a full
census; then rounds follow until the window ends (every peer publishes a batch, then the collectors collect all
they can). swarmnode/lab/dht_attacks.py drives it with one JSON object per line: it asks for a window's target
keys ({"cmd": "keys", "window": W}), then for what the peers saw in a window ({"cmd": "measure", "window": W,
"census": true}, answered once W is over), then {"cmd": "stop"}. The first line out is {"event": "ready", ...}.

Usage: PYTHONPATH=TREE python benchmarks/dht_attack_scene.py --keys DIR [--window-s 15] [--collectors 4]
"""

from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import swarmnode
from swarmnode.config import GossipConfig, NetworkConfig, SwarmConfig

# The version adapter, and the only place that knows several trees: the layered one (net/, wire/) first, then the
# flat one it replaced. The names differ; what they do, and every call below, is the same in all.
try:
    from swarmnode.net.census import BeaconService
    from swarmnode.net.gossip import Gossip
    from swarmnode.net.peer import DHTPeer
    from swarmnode.wire import keys as wire_keys
    from swarmnode.wire.address import Reachability
    from swarmnode.wire.beacon import Beacon
    from swarmnode.wire.identity import load_identity
    from swarmnode.wire.keys import batch_key, census_key, directory_key
    from swarmnode.wire.rollout import Completion, Rollout, TaskRef
    from swarmnode.wire.rules import SwarmRules, shard_of

    LAYERED = True  # Gossip runs over a DHTPeer it is given; SwarmRules.of(config)
    if not hasattr(wire_keys, "bucket_of"):  # protocol v1: 8 census buckets, one directory key a window
        beacon_bucket = wire_keys.beacon_bucket
except ImportError:
    from swarmnode.beacon import Beacon, beacon_bucket
    from swarmnode.census import BeaconService
    from swarmnode.dht import DHTPeer
    from swarmnode.envelope import SwarmRules, shard_of
    from swarmnode.gossip import Gossip
    from swarmnode.identity import load_identity
    from swarmnode.reachability import Reachability
    from swarmnode.record import census_key, directory_key
    from swarmnode.record import record_key as batch_key
    from swarmnode.rollout import Completion, Rollout, TaskRef

    LAYERED = False  # Gossip starts and owns its DHTPeer; config.rules()
# census_key(swarm_id, window, tier, bucket) in protocol v2 (directory and census keys spread over 2^tier buckets);
# census_key(swarm_id, window, bucket) where census keys rotate every window; census_key(swarm_id, bucket) before
CENSUS_KEYS_ROTATE = "window" in inspect.signature(census_key).parameters
TIERED = "tier" in inspect.signature(census_key).parameters

from hivemind.dht.routing import DHTID  # noqa: E402  (after swarmnode.net, which imports hivemind without torch)
from hivemind.dht.storage import DictionaryDHTValue  # noqa: E402
from hivemind.utils import get_dht_time  # noqa: E402

V1_TIER = 3  # before v2, 8 census buckets of shard(peer) mod 8: the buckets of tier 3
WORKERS = 8  # peers acting at once: more only queue on two cores
START_DELAY_S = 0.3  # into each window before its beacons
ROUND_MARGIN_S = 0.5  # a round starts only if one as long as the last ends this long before the window does
MAX_ROUNDS_PER_WINDOW = 6
ROLLOUTS_PER_BATCH = 4
STORE_TIMEOUT_S = 5.0
READERS = 8  # peers taking a full census in a measured window (every peer of the busiest bucket among them)
VICTIM = 1  # the signer whose shard key is attacked (not the bootstrap)


def start_node(identity_path: Path, swarm: SwarmConfig, network: NetworkConfig, config: GossipConfig) -> tuple[Any, Any]:
    """A started DHT peer and the gossip over it."""
    identity = load_identity(identity_path)
    if LAYERED:
        peer = DHTPeer(identity_path, SwarmRules.of(swarm), network)
        peer.start()
        return peer, Gossip(peer, identity, SwarmRules.of(swarm), config)
    gossip = Gossip(identity, identity_path, swarm, network, config)
    gossip.start()
    return gossip.dht, gossip


def census_tier(peers: int) -> int:
    """The tier of the census keys readers read: in v2 the one a swarm of `peers` calls for (what a census that
    knows the swarm's size reads, and where one that probes every tier first settles); before, all 8 buckets."""
    return wire_keys.tier_for(peers, wire_keys.CENSUS_PER_KEY) if TIERED else V1_TIER


def directory_tier(peers: int) -> int:
    """The tier of the directory keys a collector that knows every publisher reads (v2); before, one key a window."""
    return wire_keys.tier_for(peers, wire_keys.DIRECTORY_PER_KEY) if TIERED else 0


def bucket_in(peer_id: str, tier: int) -> int:
    return wire_keys.bucket_of(peer_id, tier) if TIERED else beacon_bucket(peer_id)


def census_keys(swarm_id: str, window: int, tier: int) -> list[str]:
    """The census keys of a window that readers read, bucket by bucket."""
    if TIERED:
        return [census_key(swarm_id, window, tier, b) for b in range(2**tier)]
    return [census_key(swarm_id, window, b) if CENSUS_KEYS_ROTATE else census_key(swarm_id, b) for b in range(2**V1_TIER)]


def directory_target(swarm_id: str, window: int, tier: int, bucket: int) -> str:
    """The directory key attacked: the window's one key before v2; in v2 its busiest bucket of the readers' tier."""
    return directory_key(swarm_id, window, tier, bucket) if TIERED else directory_key(swarm_id, window)


def held_expiration(peer: Any, key: DHTID, subkey: str) -> float | None:
    """When `subkey`'s entry under `key` in the peer's own storage expires (None: it holds none). Read on the peer's
    loop thread (`_loop`, in both trees), where its storage is written."""

    async def read() -> float | None:
        item = peer.storage.get(key)
        entry = item.value.get(subkey) if item is not None and isinstance(item.value, DictionaryDHTValue) else None
        return None if entry is None else entry.expiration_time

    return peer._loop.run(read(), STORE_TIMEOUT_S)


class Scene:
    def __init__(self, args: argparse.Namespace) -> None:
        # census and directory keys of every window, as each scene's attacks time them (protocol v3: epochs of one)
        epochs = {"epoch_windows": 1} if "epoch_windows" in getattr(SwarmConfig, "model_fields", {}) else {}
        self.swarm = SwarmConfig(id=args.swarm_id, window_s=args.window_s, record_ttl_s=2 * args.window_s, **epochs)
        self.rules = SwarmRules.of(self.swarm) if LAYERED else self.swarm.rules()
        self.config = GossipConfig(
            collect_timeout_s=args.window_s / 2, shards_per_wave=8, publish_timeout_s=STORE_TIMEOUT_S, refresh_for_s=0
        )
        self.paths = sorted(args.keys.glob("*.key"))
        self.identities = [load_identity(path) for path in self.paths]
        self.ids = [identity.peer_id for identity in self.identities]
        self.pool = ThreadPoolExecutor(WORKERS)
        self.nodes: list[tuple[Any, Any]] = []
        self.services: list[Any] = []
        self.requests: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sequence = 0
        self.tier = census_tier(len(self.ids))
        buckets = Counter(bucket_in(peer_id, self.tier) for peer_id in self.ids)
        self.bucket = max(range(2**self.tier), key=lambda b: (buckets[b], -b))  # the busiest census bucket
        others = [i for i in range(len(self.ids)) if bucket_in(self.ids[i], self.tier) != self.bucket]
        self.readers = [i for i in range(len(self.ids)) if i not in others] + others[: max(READERS - buckets[self.bucket], 0)]
        self.collectors = [i for i in range(len(self.ids)) if i != VICTIM][-args.collectors:]
        self.directory_tier = directory_tier(len(self.ids))
        listed = Counter(wire_keys.bucket_of(p, self.directory_tier) if TIERED else 0 for p in self.ids)
        self.directory_bucket = max(range(2**self.directory_tier), key=lambda b: (listed[b], -b))

    def start(self) -> None:
        first = start_node(self.paths[0], self.swarm, NetworkConfig(reachability="public"), self.config)
        self.nodes.append(first)
        join = NetworkConfig(reachability="public", initial_peers=first[0].visible_maddrs)
        futures = [self.pool.submit(start_node, path, self.swarm, join, self.config) for path in self.paths[1:]]
        for future in futures:  # every started node is kept, so that close() stops it whatever failed
            self.nodes.append(future.result())
        self.services = [
            BeaconService(peer, identity, self.rules, self.beacon_source(index), lambda census: None, timeout_s=STORE_TIMEOUT_S)
            for index, ((peer, _), identity) in enumerate(zip(self.nodes, self.identities))
        ]
        emit({
            "event": "ready", "tree": str(Path(swarmnode.__file__).parents[1]), "census_keys_rotate": CENSUS_KEYS_ROTATE,
            "tiered": TIERED, "census_tier": self.tier, "directory_tier": self.directory_tier,
            "peers": [{"peer_id": peer_id, "node_id": str(int(peer._node.node_id))} for (peer, _), peer_id in zip(self.nodes, self.ids)],
            "maddrs": [maddr for peer, _ in self.nodes[:3] for maddr in peer.visible_maddrs],
            "daemon_pids": [peer.daemon_pid() for peer, _ in self.nodes],
            "victim": self.ids[VICTIM], "bucket": self.bucket,
            "bucket_peers": [p for p in self.ids if bucket_in(p, self.tier) == self.bucket],
            "readers": len(self.readers), "collectors": len(self.collectors),
        })

    def beacon_source(self, index: int) -> Any:
        def source(window: int, now: float) -> Any:
            return Beacon(self.swarm.id, window, now, "swarmnode/0.1.0", "bench", round=index,
                          reachability=Reachability.PUBLIC, phase="train")

        return source

    def close(self) -> None:
        self.stop.set()
        for _, gossip in self.nodes:
            gossip.close()
        list(self.pool.map(lambda node: node[0].close(), self.nodes))
        self.pool.shutdown()

    def serve(self, line: str) -> None:
        """One request from the driver (the stdin thread): keys are answered at once, measurements once over."""
        request = json.loads(line)
        if request["cmd"] == "stop":
            self.stop.set()
        elif request["cmd"] == "keys":
            window, victim = request["window"], self.ids[VICTIM]
            emit({
                "reply": "keys", "window": window, "census": census_keys(self.swarm.id, window, self.tier),
                "directory": directory_target(self.swarm.id, window, self.directory_tier, self.directory_bucket),
                "victim_batch": batch_key(self.swarm.id, window, shard_of(victim, self.swarm.num_shards)),
            })
        elif request["cmd"] == "measure":
            with self.lock:
                self.requests[request["window"]] = request

    def run(self) -> None:
        window = self.rules.window_of(get_dht_time()) + 1
        while not self.stop.wait(max(window * self.swarm.window_s + START_DELAY_S - get_dht_time(), 0.0)):
            with self.lock:
                request = self.requests.pop(window, None)
                late = [w for w in self.requests if w < window]
            for missed in late:
                emit({"reply": "measured", "window": missed, "error": "asked for a window already begun"})
                del self.requests[missed]
            report = self.play_window(window, request)
            if request is not None:
                emit({"reply": "measured", **report})
            window = max(window + 1, self.rules.window_of(get_dht_time()) + 1)

    def play_window(self, window: int, request: dict[str, Any] | None) -> dict[str, Any]:
        report: dict[str, Any] = {"window": window}
        report["beacons_stored"] = sum(self.pool.map(lambda service: service.publish(), self.services))
        if request is not None and request.get("census"):
            report["censuses"] = list(self.pool.map(self.census_row, self.readers))
        report["rounds"] = []
        end = (window + 1) * self.swarm.window_s
        last_s = 0.0
        while len(report["rounds"]) < MAX_ROUNDS_PER_WINDOW and get_dht_time() + last_s + ROUND_MARGIN_S < end:
            started = time.monotonic()
            row = self.play_round(window, record=request is not None)
            if row is not None:
                report["rounds"].append(row)
            last_s = time.monotonic() - started
        return report

    def census_row(self, index: int) -> dict[str, Any]:
        census = self.services[index].full_census()
        listed = {entry.peer_id for entry in census.entries}
        honest = set(self.ids)
        return {
            "honest": len(listed & honest), "sybils": len(listed - honest), "complete": census.complete,
            "timed_out": census.timed_out, "refused": census.refused,
            "thin_buckets": getattr(census, "thin_buckets", None), "missing_self": getattr(census, "missing_self", None),
        }

    def play_round(self, window: int, record: bool) -> dict[str, Any] | None:
        """Every peer publishes, then the collectors collect all they can; with `record`, what became of the
        victim's batch: who acknowledged it, which honest peers hold it, which collectors got it."""
        self.sequence += 1
        rollouts = [
            Rollout(TaskRef("chain_sum", "0123456789abcdef", self.sequence, index), (Completion("<answer>1</answer>", 1.0),))
            for index in range(ROLLOUTS_PER_BATCH)
        ]
        victim = self.ids[VICTIM]
        key = DHTID.generate(source=batch_key(self.swarm.id, window, shard_of(victim, self.swarm.num_shards)))
        holders = [peer for i, (peer, _) in enumerate(self.nodes) if i != VICTIM]
        before = [held_expiration(peer, key, victim) for peer in holders] if record else []
        published = list(self.pool.map(
            lambda node: node[1].publish(rollouts, model_id="bench", suite_version="v"), self.nodes
        ))
        after = [held_expiration(peer, key, victim) for peer in holders] if record else []
        want = ROLLOUTS_PER_BATCH * (len(self.nodes) - 1)  # everything: every known shard is read
        collected = list(self.pool.map(lambda i: self.nodes[i][1].collect(want), self.collectors))
        mine = published[VICTIM]
        if not record or mine.window != window:
            return None
        return {
            "victim_ok": mine.ok, "victim_replicas": mine.replicas, "published": sum(result.ok for result in published),
            "honest_holders": sum(1 for old, new in zip(before, after) if new is not None and (old is None or new > old)),
            "collects": [
                {
                    "got_victim": any(r.signer == victim and r.sequence == mine.sequence for r in result.rollouts),
                    "timed_out": result.timed_out, "peers": result.peers_seen,
                    "directory_keys_read": result.directory_keys_read, "directory_entries": result.directory_entries,
                    "thin_reads": getattr(result, "thin_reads", None),
                }
                for result in collected
            ],
        }


_emit_lock = threading.Lock()


def emit(message: dict[str, Any]) -> None:
    with _emit_lock:
        print(json.dumps(message), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=Path, required=True, help="a directory of honest identity files (*.key)")
    parser.add_argument("--swarm-id", default="bench-dht-attacks")
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--collectors", type=int, default=4)
    args = parser.parse_args()
    scene = Scene(args)
    signal.signal(signal.SIGTERM, lambda *_: scene.stop.set())

    def read_requests() -> None:
        for line in sys.stdin:  # the driver's requests; end of input (the driver is gone) stops the scene
            scene.serve(line)
        scene.stop.set()

    try:
        scene.start()
        threading.Thread(target=read_requests, name="requests", daemon=True).start()
        scene.run()
    finally:
        scene.close()


if __name__ == "__main__":
    main()
