"""A real swarm of DHT-only peers on an honest schedule, with churn: the machinery of
benchmarks/bench_swarm_scale.py (and of tests/test_swarm_scale.py).

Every peer is a real `DHTPeer` (its own p2pd on 127.0.0.1) with `Gossip` and `BeaconService` over it, all in one
process, as `swarmnode join` composes them minus the model. Each round every live peer publishes a batch and then
collects J x oversample rollouts, at a random moment of the round (independent nodes are not in lockstep); once a
window each stores its beacon and takes its own sampled census, at a random moment of the window. A few workers
run the actions, so a machine that cannot keep up shows as actions starting late (`lag`), not as a faster
schedule. Some peers are DHT clients (`reachability: private`, as behind NAT). Churn closes a peer (in turn:
its p2pd killed, as in a crash, or a graceful close) and a fresh peer joins through the bootstrap.

Imports only the net layer's public API, so that `python swarm_scale.py` can drive another checkout's
`swarmnode` (PYTHONPATH pointed at it; see `run_in_tree`): the same harness measures the code before and after
a change.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from hivemind.dht.protocol import DHTProtocol
from hivemind.p2p import PeerID
from hivemind.utils import get_dht_time

from swarmnode.config import GossipConfig, NetworkConfig, SwarmConfig
from swarmnode.net import gossip as gossip_module
from swarmnode.net.census import BeaconService
from swarmnode.net.gossip import Gossip
from swarmnode.net.peer import DHTPeer
from swarmnode.net.routing import node_id_of
from swarmnode.net.traffic import TrafficSnapshot
from swarmnode.wire import keys as wire_keys
from swarmnode.wire.beacon import Beacon
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.rollout import Completion, Rollout, TaskRef
from swarmnode.wire.rules import SwarmRules

DRAIN_S = 20.0  # what in-flight actions may still take after the schedule ends (each bounded by its own deadlines)
CLOSE_WORKERS = 8


@dataclass(frozen=True)
class ScaleConfig:
    """One run. `round_s` is how often a node publishes and collects (a real round of a small model on a CPU is
    minutes; shorter here so that several rounds fall in each window and the load per window is a node's worst
    case); `window_s` and the swarm's TTL follow SwarmConfig's rule (record_ttl_s = 2 windows)."""

    size: int
    nat: int = 2  # DHT clients among the first members (never the bootstrap)
    window_s: float = 15.0
    round_s: float = 5.0
    windows: int = 3  # measured, after one warm-up window
    churn_per_min: float = 0.01  # share of the swarm replaced per minute
    workers: int = 0  # threads running the peers' actions; 0: two per peer (its rounds and its beacon thread)
    storm_workers: int = 8  # peers starting at once in the join storm
    collect: int = 12  # J x oversample (IntakeConfig: J = 4, collect_oversample = 3)
    rollouts: int = 8  # per batch (Q = 8 groups of a round)
    completions: int = 4
    completion_bytes: int = 200
    seed: int = 0

    def swarm(self) -> SwarmConfig:
        return SwarmConfig(id="scale", window_s=self.window_s, record_ttl_s=2 * self.window_s)


@dataclass
class Member:
    """One peer and what the harness needs to know about it: its rounds run one at a time, and beside them its
    beacons, as a node's round loop and beacon thread do."""

    index: int
    identity: Identity
    peer: DHTPeer
    gossip: Gossip
    beacons: BeaconService
    nat: bool
    joined_at: float  # monotonic, after its start returned
    join_s: float
    alive: bool = True
    rounding: threading.Lock = field(default_factory=threading.Lock)  # one round at a time, as a node's loop
    beaconing: threading.Lock = field(default_factory=threading.Lock)  # its beacon thread, beside the rounds
    first_publish_round: int | None = None
    start: TrafficSnapshot | None = None  # counters when its measurement began (the measured period or its join)
    end: TrafficSnapshot | None = None
    rpc_start: Counter[str] = field(default_factory=Counter)
    rpc_end: Counter[str] = field(default_factory=Counter)
    refusals_start: Counter[str] = field(default_factory=Counter)
    refusals_end: Counter[str] = field(default_factory=Counter)
    measured_from: float | None = None
    measured_to: float | None = None
    p2pd_pid: int | None = None


_OPERATION: ContextVar[Counter[str] | None] = ContextVar("swarm_scale_operation", default=None)
_IN_LOOKUP: ContextVar[bool] = ContextVar("swarm_scale_in_lookup", default=False)


class RpcCounter:
    """Find and store RPCs each peer sends, counted at hivemind's DHTProtocol (a lookup's hops included): per
    sending node, and per operation (`operation()`: the context variable travels from the calling thread into
    the DHT loop's tasks, so a publish and a census of one node running at once are told apart); an operation's
    finds sent inside `DHTPeer._nearest` count also as "lookup" (the rest read replicas). Patched in for the run and
    restored afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[int, str]] = Counter()
        self._originals: dict[str, Any] = {}

    def of(self, node_id: int) -> Counter[str]:
        with self._lock:
            return Counter({kind: count for (node, kind), count in self.counts.items() if node == node_id})

    @staticmethod
    @contextmanager
    def operation() -> Iterator[Counter[str]]:
        """The RPCs that the calling thread's DHT calls inside the block send."""
        counts: Counter[str] = Counter()
        token = _OPERATION.set(counts)
        try:
            yield counts
        finally:
            _OPERATION.reset(token)

    @contextmanager
    def installed(self) -> Iterator[RpcCounter]:
        for name, kind in (("call_find", "find"), ("call_store", "store")):
            original = self._originals[name] = getattr(DHTProtocol, name)
            setattr(DHTProtocol, name, self._counting(original, kind))
        nearest = getattr(DHTPeer, "_nearest", None)  # a tree from before it looked keys up on its own: no split
        if nearest is not None:
            DHTPeer._nearest = _looking_up(nearest)  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for name, original in self._originals.items():
                setattr(DHTProtocol, name, original)
            if nearest is not None:
                DHTPeer._nearest = nearest  # type: ignore[method-assign]

    def _counting(self, original: Callable, kind: str) -> Callable:
        counter = self

        async def call(protocol: DHTProtocol, *args: Any, **kwargs: Any) -> Any:
            with counter._lock:
                counter.counts[(int(protocol.node_id), kind)] += 1
                operation = _OPERATION.get()
                if operation is not None:
                    operation[kind] += 1
                    if kind == "find" and _IN_LOOKUP.get():
                        operation["lookup"] += 1

            return await original(protocol, *args, **kwargs)

        return call


def _looking_up(nearest: Callable) -> Callable:
    async def looking_up(peer: DHTPeer, *args: Any, **kwargs: Any) -> Any:
        token = _IN_LOOKUP.set(True)
        try:
            return await nearest(peer, *args, **kwargs)
        finally:
            _IN_LOOKUP.reset(token)

    return looking_up


def rollouts_for(config: ScaleConfig, tag: int) -> list[Rollout]:
    text = f"<answer>{tag}</answer>".ljust(config.completion_bytes, ".")
    return [
        Rollout(TaskRef("chain_sum", "0123456789abcdef", tag, index), tuple(Completion(text, 1.0) for _ in range(config.completions)))
        for index in range(config.rollouts)
    ]


def beacon_source(swarm_id: str, peer: DHTPeer) -> Callable[[int, float], Beacon]:
    """A beacon the size of a real one (a hub model id, every field set), with the peer's reachability."""

    def source(window: int, now: float) -> Beacon:
        return Beacon(
            swarm_id, window, now, "swarmnode/0.1.0", "Qwen/Qwen2.5-0.5B-Instruct", round=1000, reward=0.42,
            held_out=0.31, held_out_round=1000, rollouts_shared=8000, rollouts_received=7000, peer_groups_trained=3000,
            reachability=peer.reachability.reachability, uptime_s=3600.0, rounds_per_hour=30.0, rollouts_per_hour=240.0,
            phase="generate",
        )

    return source


def rss_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process from /proc; PSS shares p2pd's common pages among its copies: (0, 0) if gone."""
    try:
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
        return rss, pss
    except (OSError, ValueError):
        return 0, 0


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process (every peer's Python: one interpreter, one GIL) and of its p2pd children, the
    running and the reaped ones."""
    me = psutil.Process()
    times = me.cpu_times()
    children = times.children_user + times.children_system
    for child in me.children():
        try:
            child_times = child.cpu_times()
            children += child_times.user + child_times.system
        except psutil.Error:
            continue
    return times.user + times.system, children


def quantiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/max of `samples` (NaN when empty)."""
    if not samples:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan, "count": 0}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1], "count": len(ordered)}


class ScaleSwarm:
    """The swarm, its schedule and its records. `run()` returns the measured row; `close()` always stops every peer."""

    def __init__(self, config: ScaleConfig, workdir: Path, rpcs: RpcCounter) -> None:
        self.config = config
        self.workdir = workdir
        self.rpcs = rpcs
        self.rules = SwarmRules.of(config.swarm())
        self.gossip_config = GossipConfig()
        self.rng = random.Random(config.seed)
        self.members: list[Member] = []
        self._lock = threading.Lock()
        self._next_index = 0
        self.bootstrap: DHTPeer | None = None
        self.events: dict[str, list[dict[str, Any]]] = {"publish": [], "collect": [], "beacon": [], "ahead": [], "churn": []}
        self.lags: list[float] = []  # from an action's moment until it started (after the member's previous one)
        self.waits: list[float] = []  # from an action's moment until a worker thread took it up: the machine alone
        self.skipped_late = 0
        self.rss_samples: list[dict[str, float]] = []
        self.storm: dict[str, Any] = {}

    # ---- peers -------------------------------------------------------------------------------------------

    def _new_member(self, nat: bool) -> Member:
        """Start a fresh peer (a new identity) that joins through the bootstrap; a NATed one as a DHT client."""
        with self._lock:
            index = self._next_index
            self._next_index += 1
        identity = Identity.generate()
        key = self.workdir / f"peer-{index}.key"
        save_identity(identity, key, overwrite=True)
        network = NetworkConfig(initial_peers=self.bootstrap.visible_maddrs) if self.bootstrap is not None else NetworkConfig()
        if nat:
            network = network.model_copy(update={"reachability": "private"})
        peer = DHTPeer(key, self.rules, network)
        started = time.monotonic()
        try:
            peer.start()
        except BaseException:
            peer.close()
            raise
        joined = time.monotonic()
        gossip = Gossip(peer, identity, self.rules, self.gossip_config)
        shared = {"size": gossip.size} if hasattr(gossip, "size") else {}  # as node.py; trees before v2 had none
        beacons = BeaconService(
            peer, identity, self.rules, beacon_source(self.rules.swarm_id, peer), lambda census: None,
            timeout_s=self.gossip_config.publish_timeout_s, **shared,
        )
        return Member(index, identity, peer, gossip, beacons, nat, joined, joined - started, p2pd_pid=peer.daemon_pid())

    def _snapshot(self, member: Member, *, start: bool) -> None:
        node = int(node_id_of(PeerID.from_base58(member.peer.peer_id)))
        traffic, rpcs, refusals = member.peer.traffic(), self.rpcs.of(node), member.peer.refusals()
        now = time.monotonic()
        if start:
            member.start, member.rpc_start, member.refusals_start, member.measured_from = traffic, rpcs, refusals, now
        else:
            member.end, member.rpc_end, member.refusals_end, member.measured_to = traffic, rpcs, refusals, now

    def start(self) -> None:
        """The bootstrap, then everyone else at once (`storm_workers` starting together): the join storm."""
        first = self._new_member(nat=False)
        self.bootstrap = first.peer
        self.members.append(first)
        boot_before, started = first.peer.traffic(), time.monotonic()
        nat = [index < self.config.nat for index in range(self.config.size - 1)]
        with ThreadPoolExecutor(self.config.storm_workers) as pool:
            futures = [pool.submit(self._new_member, flag) for flag in nat]
            joined, errors = [], []
            for future in futures:
                try:
                    joined.append(future.result())
                except Exception as error:  # counted: a peer that could not start is part of what the storm did
                    errors.append(f"{type(error).__name__}: {error}"[:200])
        storm_s = time.monotonic() - started
        served = (first.peer.traffic() - boot_before).requests_served
        self.members.extend(joined)
        self.storm = {
            "peers": len(nat), "workers": self.config.storm_workers, "failed": len(errors), "errors": errors[:5],
            "wall_s": storm_s, "join_s": quantiles([member.join_s for member in joined]),
            "bootstrap_served": served, "bootstrap_served_per_s": served / storm_s if storm_s else 0.0,
        }

    def close(self) -> None:
        """Stop every peer (a few at a time); safe after a failed start."""
        with self._lock:
            members = list(self.members)
        for member in members:
            member.gossip.close()
            member.beacons.stop()
        with ThreadPoolExecutor(CLOSE_WORKERS) as pool:
            list(pool.map(lambda member: member.peer.close(), members))

    def alive(self) -> list[Member]:
        with self._lock:
            return [member for member in self.members if member.alive]

    # ---- actions -----------------------------------------------------------------------------------------

    def _round_action(self, member: Member, round_index: int, due: float, measured: bool) -> None:
        """A node's round: publish its batch, then collect what its intake wants."""
        if not self._begin(member, member.rounding, due):
            return
        try:
            traffic = member.peer.traffic()
            with self.rpcs.operation() as rpcs:
                published = member.gossip.publish(rollouts_for(self.config, round_index), model_id="bench", suite_version="v")
            if published.ok and member.first_publish_round is None:
                member.first_publish_round = round_index
            self.events["publish"].append({
                "member": member.index, "round": round_index, "window": published.window, "ok": published.ok,
                "latency_s": published.latency_s, "replicas": published.replicas, "measured": measured,
                "finds": rpcs["find"], "lookup_finds": rpcs["lookup"], "stores": rpcs["store"], "error": published.error,
            })
            with self.rpcs.operation() as rpcs:
                collected = member.gossip.collect(self.config.collect)
            self.events["collect"].append({
                "member": member.index, "round": round_index, "measured": measured, "elapsed_s": collected.elapsed_s,
                "timed_out": collected.timed_out, "got": len(collected.rollouts), "wanted": self.config.collect,
                "taken": sorted({(item.signer, item.window) for item in collected.rollouts}),
                "keys_read": collected.keys_read, "directory_keys_read": collected.directory_keys_read,
                "finds": rpcs["find"], "lookup_finds": rpcs["lookup"], "rejected": dict(collected.rejected),
                "error": collected.error,
                "round_taken_s": published.latency_s + collected.elapsed_s,

                "round_requests": (member.peer.traffic() - traffic).requests_sent,  # all it sent meanwhile: the round's
            })
        finally:
            member.rounding.release()

    def _ahead_action(self, member: Member, measured: bool) -> None:
        """Once a window at a random moment, as Gossip's window thread does: look the next window's keys up."""
        if not member.alive:
            return
        started = time.monotonic()
        with self.rpcs.operation() as rpcs:
            keys = member.gossip.look_ahead()
        self.events["ahead"].append({
            "member": member.index, "measured": measured, "keys": keys, "finds": rpcs["find"],
            "elapsed_s": time.monotonic() - started,
        })

    def _beacon_action(self, member: Member, window: int, due: float, measured: bool) -> None:
        """Once a window, as BeaconService's thread does: store the beacon, then take the node's own census when due. One
        that could only start in a later window is skipped: the thread stores one beacon a window."""
        if not self._begin(member, member.beaconing, due):
            return
        try:
            if self.rules.window_of(get_dht_time()) != window:
                self._late(member)
                return
            with self.rpcs.operation() as beacon_rpcs:
                stored = member.beacons.publish()
            event = {"member": member.index, "measured": measured, "stored": stored, "error": member.beacons.last_error,
                     "beacon_finds": beacon_rpcs["find"], "beacon_lookup_finds": beacon_rpcs["lookup"]}
            if getattr(member.beacons, "census_due", lambda: True)():  # a tree from before CENSUS_EVERY_S: every window
                started = time.monotonic()
                with self.rpcs.operation() as census_rpcs:
                    census = member.beacons.sampled_census()
                event.update({
                    "census_finds": census_rpcs["find"], "census_lookup_finds": census_rpcs["lookup"], "census_s": time.monotonic() - started,
                    "census_nodes": len(census.entries), "census_complete": census.complete,
                    "census_buckets_read": census.buckets_read, "census_nodes_estimate": census.totals().nodes,
                })
            self.events["beacon"].append(event)
        finally:
            member.beaconing.release()

    def _begin(self, member: Member, lock: threading.Lock, due: float) -> bool:
        """Wait for the member's previous action of this kind; one that could not start within a window is
        skipped (counted: the machine is not keeping up). The lag is from the action's moment to its start."""
        self.waits.append(time.monotonic() - due)
        if not member.alive or not lock.acquire(timeout=self.config.window_s):
            self._late(member)
            return False
        lag = time.monotonic() - due
        if not member.alive or lag > self.config.window_s:
            lock.release()
            self._late(member)
            return False
        self.lags.append(lag)
        return True

    def _late(self, member: Member) -> None:
        if member.alive:  # a departed member's pending actions are not the machine's fault
            with self._lock:
                self.skipped_late += 1

    def _churn(self, number: int, measured: bool) -> None:
        """Replace a random member (never the bootstrap): every other one crashes (p2pd SIGKILLed, then the
        process side torn down), the others close gracefully; a fresh peer joins through the bootstrap."""
        candidates = [member for member in self.alive() if member.peer is not self.bootstrap]
        if not candidates:
            return
        gone = self.rng.choice(candidates)
        crash = number % 2 == 0
        gone.alive = False
        with gone.rounding, gone.beaconing:  # its in-flight actions end first: none is half-recorded
            self._snapshot(gone, start=False)
            if crash and gone.p2pd_pid is not None:
                os.kill(gone.p2pd_pid, signal.SIGKILL)
            gone.gossip.close()
            gone.peer.close()
        try:
            fresh = self._new_member(nat=gone.nat)
        except Exception as error:
            self.events["churn"].append({"left": gone.index, "crash": crash, "joined": None, "error": str(error)[:200]})
            return
        self._snapshot(fresh, start=True)
        with self._lock:
            self.members.append(fresh)
        self.events["churn"].append({
            "left": gone.index, "crash": crash, "joined": fresh.index, "join_s": fresh.join_s, "nat": fresh.nat,
            "measured": measured,
        })

    # ---- the schedule ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """One warm-up window, then `windows` measured ones; every action at a random moment of its round/window."""
        config = self.config
        now_dht, now = get_dht_time(), time.monotonic()
        first_window = self.rules.window_of(now_dht) + 1
        t0 = now + (first_window * config.window_s - now_dht)  # monotonic time of the first window's start
        measure_at = t0 + config.window_s
        end = t0 + (config.windows + 1) * config.window_s
        rounds_per_window = max(1, round(config.window_s / config.round_s))
        total_rounds = (config.windows + 1) * rounds_per_window
        queue: list[tuple[float, int, str, Any]] = []
        sequence = 0

        def push(when: float, kind: str, payload: Any) -> None:
            nonlocal sequence
            heapq.heappush(queue, (when, sequence, kind, payload))
            sequence += 1

        for round_index in range(total_rounds):
            push(t0 + round_index * config.round_s, "round", round_index)
        for window in range(config.windows + 1):
            push(t0 + window * config.window_s, "window", window)
        churn_events = config.churn_per_min * config.size * config.windows * config.window_s / 60
        count = round(churn_events)
        for number in range(count):  # evenly over the measured windows
            push(measure_at + (number + 0.5) * config.windows * config.window_s / count, "churn", number)
        measured = False
        cpu_before, wall_before = (0.0, 0.0), 0.0
        spread = getattr(gossip_module, "LOOK_AHEAD_SPREAD", None)  # a tree from before the look-ahead has none
        with ThreadPoolExecutor(config.workers or 2 * config.size) as pool, ThreadPoolExecutor(1) as churner:

            while queue:
                when, _, kind, payload = heapq.heappop(queue)
                delay = when - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not measured and time.monotonic() >= measure_at - 1e-3:
                    measured = True
                    for member in self.alive():
                        self._snapshot(member, start=True)
                    cpu_before, wall_before = cpu_seconds(), time.monotonic()
                    self.lags.clear()
                    self.waits.clear()
                    self.skipped_late = 0
                if kind == "round":
                    for member in self.alive():
                        at = when + self.rng.uniform(0, 0.8 * config.round_s)
                        push(at, "act", ("round", member, payload, at))
                elif kind == "window":
                    self._sample_memory()
                    for member in self.alive():
                        at = when + self.rng.uniform(0, 0.8 * config.window_s)
                        push(at, "act", ("beacon", member, first_window + payload, at))
                        if spread is not None:
                            ahead = when + self.rng.uniform(0, spread * config.window_s)  # as the window thread
                            push(ahead, "act", ("ahead", member, first_window + payload, ahead))
                elif kind == "churn":
                    churner.submit(self._churn, payload, measured)
                elif kind == "act":
                    action, member, number, due = payload
                    if action == "round":
                        pool.submit(self._round_action, member, number, due, measured)
                    elif action == "ahead":
                        pool.submit(self._ahead_action, member, measured)
                    else:
                        pool.submit(self._beacon_action, member, number, due, measured)
            if time.monotonic() < end:
                time.sleep(end - time.monotonic())
            self._sample_memory()
            ended = time.monotonic()
            for member in self.alive():  # the measured period ends here; what is still in flight finishes below
                self._snapshot(member, start=False)
            cpu_after = cpu_seconds()
            pool.shutdown(wait=True, cancel_futures=True)
            churner.shutdown(wait=True)
        cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
        return self._summary(first_window, ended - wall_before, cpu)

    def _sample_memory(self) -> None:
        pids = [member.p2pd_pid for member in self.alive() if member.p2pd_pid is not None]
        sizes = [rss_bytes(pid) for pid in pids]
        sizes = [size for size in sizes if size[0]]
        if sizes:
            self.rss_samples.append({
                "p2pd_count": len(sizes),
                "p2pd_rss_mean": statistics.fmean(rss for rss, _ in sizes),
                "p2pd_pss_mean": statistics.fmean(pss for _, pss in sizes),
                "p2pd_pss_total": sum(pss for _, pss in sizes),
                "ours_rss": psutil.Process().memory_info().rss,
            })

    # ---- the row -----------------------------------------------------------------------------------------

    def _summary(
        self, first_window: int, wall_s: float, cpu_s: tuple[float, float]
    ) -> dict[str, Any]:
        config = self.config
        measured_windows = range(first_window + 1, first_window + 1 + config.windows)
        members = [member for member in self.members if member.start is not None and member.end is not None]
        per_node = []
        for member in members:
            seconds = max(member.measured_to - member.measured_from, 1e-9)
            traffic = member.end - member.start
            per_node.append({
                "member": member.index, "bootstrap": member.peer is self.bootstrap, "nat": member.nat, "seconds": seconds,
                "sent_per_s": traffic.requests_sent / seconds, "served_per_s": traffic.requests_served / seconds,
                "in_per_s": traffic.bytes_in / seconds, "out_per_s": traffic.bytes_out / seconds,
                "finds": member.rpc_end["find"] - member.rpc_start["find"],
                "refusals": dict(member.refusals_end - member.refusals_start),
            })
        full = [node for node in per_node if node["seconds"] >= 0.5 * config.window_s]  # churned-in late: too short a rate
        row: dict[str, Any] = {
            "config": asdict(config), "peers": config.size, "wall_s": wall_s, "protocol": protocol_version(),
            "epoch_windows": getattr(self.rules, "epoch_windows", 1),  # trees before protocol v3: keys of a window
        }
        for name, unit in (("round", config.round_s), ("window", config.window_s)):
            for metric in ("sent", "served", "in", "out"):
                values = [node[f"{metric}_per_s"] * unit for node in full]
                row[f"{metric}_per_node_{name}"] = statistics.fmean(values) if values else math.nan
                row[f"{metric}_busiest_{name}"] = max(values) if values else math.nan
        totals = [node["in_per_s"] + node["out_per_s"] for node in full]
        served = [node["served_per_s"] for node in full]
        busiest = max(full, key=lambda node: node["in_per_s"] + node["out_per_s"]) if full else None
        row["busiest_is_bootstrap"] = bool(busiest and busiest["bootstrap"])
        row["busiest_over_median_bytes"] = max(totals) / statistics.median(totals) if totals else math.nan
        row["busiest_over_median_served"] = max(served) / statistics.median(served) if served and statistics.median(served) else math.nan
        row["busiest_bytes_window_excl_bootstrap"] = max(
            (total for total, node in zip(totals, full) if not node["bootstrap"]), default=math.nan
        ) * config.window_s
        refusals = sum((Counter(node["refusals"]) for node in per_node), Counter())
        row["refusals"] = dict(refusals)
        publishes = [event for event in self.events["publish"] if event["measured"]]
        collects = [event for event in self.events["collect"] if event["measured"]]
        beacons = [event for event in self.events["beacon"] if event["measured"]]
        row["publishes"] = len(publishes)
        row["publish_ok_share"] = sum(event["ok"] for event in publishes) / len(publishes) if publishes else math.nan
        row["publish_s"] = quantiles([event["latency_s"] for event in publishes])
        row["collect_s"] = quantiles([event["elapsed_s"] for event in collects])
        row["collects"] = len(collects)
        row["collect_satisfied_share"] = (
            sum(event["got"] >= event["wanted"] for event in collects) / len(collects) if collects else math.nan
        )
        row["collect_timed_out_share"] = sum(event["timed_out"] for event in collects) / len(collects) if collects else math.nan
        row["finds_per_publish"] = _mean(event["finds"] for event in publishes)
        row["stores_per_publish"] = _mean(event["stores"] for event in publishes)
        row["finds_per_collect"] = _mean(event["finds"] for event in collects)
        row["lookup_finds_per_publish"] = _mean(event["lookup_finds"] for event in publishes)
        row["lookup_finds_per_collect"] = _mean(event["lookup_finds"] for event in collects)
        row["requests_per_round"] = _mean(event["round_requests"] for event in collects)
        row["keys_per_collect"] = _mean(event["keys_read"] + event["directory_keys_read"] for event in collects)
        aheads = [event for event in self.events["ahead"] if event["measured"]]
        row["look_aheads"] = len(aheads)
        row["finds_per_look_ahead"] = _mean(event["finds"] for event in aheads)
        row["look_ahead_s"] = quantiles([event["elapsed_s"] for event in aheads])
        row["finds_per_beacon"] = _mean(event["beacon_finds"] for event in beacons)
        row["lookup_finds_per_beacon"] = _mean(event["beacon_lookup_finds"] for event in beacons)
        row["beacon_stored_share"] = _mean(event["stored"] for event in beacons)
        censuses = [event for event in beacons if "census_s" in event]
        row["censuses_per_beacon"] = len(censuses) / len(beacons) if beacons else math.nan
        row["finds_per_census"] = _mean(event["census_finds"] for event in censuses)
        row["lookup_finds_per_census"] = _mean(event["census_lookup_finds"] for event in censuses)
        row["census_nodes"] = _mean(event["census_nodes"] for event in censuses)
        row["census_estimate"] = _mean(event["census_nodes_estimate"] for event in censuses)
        row["census_complete_share"] = _mean(event["census_complete"] for event in censuses)
        row["census_s"] = quantiles([event["census_s"] for event in censuses])
        row.update(self._delivery(measured_windows))
        row.update(self._first_reads())
        row["storm"] = self.storm
        churn = self.events["churn"]
        row["churn"] = {
            "events": len(churn), "crashes": sum(event["crash"] for event in churn),
            "failed_joins": sum(event["joined"] is None for event in churn),
            "join_s": quantiles([event["join_s"] for event in churn if event["joined"] is not None]),
        }
        row["lag_s"] = quantiles(self.lags)
        row["skipped_late"] = self.skipped_late
        row["wait_s"] = quantiles(self.waits)
        row["round_taken_s"] = quantiles([event["round_taken_s"] for event in collects])
        row["cpu_cores"] = sum(cpu_s) / wall_s if wall_s else math.nan
        row["cpu_cores_python"] = cpu_s[0] / wall_s if wall_s else math.nan
        row["cpu_cores_p2pd"] = cpu_s[1] / wall_s if wall_s else math.nan

        row["memory"] = {
            key: max(sample[key] for sample in self.rss_samples) for key in self.rss_samples[0]
        } if self.rss_samples else {}
        row["per_node"] = per_node
        return row

    def _delivery(self, measured_windows: range) -> dict[str, Any]:
        """A signer's batch of window w counts once per (signer, w) it published successfully, for the measured
        windows but the last (a batch is read in its window and the next; the run ends after the last). It was
        delivered if any collect, at any time of the run, took a rollout of that signer's batch of w."""
        counted = set(measured_windows[:-1])
        published = {
            (event["member"], event["window"]) for event in self.events["publish"] if event["ok"] and event["window"] in counted
        }
        signer_of = {member.identity.peer_id: member.index for member in self.members}
        readers: Counter[tuple[int, int]] = Counter()
        for event in self.events["collect"]:
            for signer, window in event["taken"]:
                if signer in signer_of:
                    readers[(signer_of[signer], window)] += 1
        delivered = [key for key in published if readers[key] > 0]
        nat = {member.index for member in self.members if member.nat}
        nat_published = [key for key in published if key[0] in nat]
        return {
            "signer_windows": len(published),
            "delivered_share": len(delivered) / len(published) if published else math.nan,
            "undelivered": sorted(published - set(delivered)),
            "nat_delivered_share": (
                sum(readers[key] > 0 for key in nat_published) / len(nat_published) if nat_published else math.nan
            ),
            "readers_per_signer_window": _mean(readers[key] for key in published),
        }

    def _first_reads(self) -> dict[str, Any]:
        """Rounds from a signer's first successful publish until a collect first took its rollouts (0: the same
        round), for the NATed peers that started with the swarm and for the peers churn brought in."""
        first_read: dict[str, int] = {}
        for event in self.events["collect"]:
            for signer, _ in event["taken"]:
                first_read[signer] = min(first_read.get(signer, event["round"]), event["round"])
        joiners = {event["joined"] for event in self.events["churn"] if event["joined"] is not None}

        def rounds(members: list[Member]) -> list[int | None]:
            return [
                first_read[member.identity.peer_id] - member.first_publish_round
                if member.first_publish_round is not None and member.identity.peer_id in first_read else None
                for member in members
            ]

        return {
            "nat_rounds_to_first_read": rounds([m for m in self.members if m.nat and m.index not in joiners]),
            "joiner_rounds_to_first_read": rounds([m for m in self.members if m.index in joiners]),
        }


def protocol_version() -> int:
    """The protocol of the tree this harness drives (one from before protocol versions is v1)."""
    return getattr(wire_keys, "PROTOCOL_VERSION", 1)


def _mean(values: Any) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan


def run_swarm(config: ScaleConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Start the swarm, run its schedule, stop every peer (also on failure); the measured row."""
    with tempfile.TemporaryDirectory(prefix="swarm-scale-") as scratch, RpcCounter().installed() as rpcs:
        swarm = ScaleSwarm(config, Path(workdir or scratch), rpcs)
        try:
            swarm.start()
            return swarm.run()
        finally:
            swarm.close()


# ---- another checkout's code ---------------------------------------------------------------------------------

_BOOT = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def run_in_tree(tree: Path, config: ScaleConfig, timeout_s: float) -> dict[str, Any]:
    """Run one size in a process of its own whose `swarmnode` is `tree`'s (this file drives it by path), so that
    memory is per run and another checkout is measured by the same harness. A run past `timeout_s` is stopped
    (SIGTERM: it closes its peers; then SIGKILL), and any p2pd it left is stopped by pid."""
    with tempfile.TemporaryDirectory(prefix="swarm-scale-run-") as scratch:
        out = Path(scratch) / "row.json"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [sys.executable, "-c", _BOOT, str(Path(__file__).resolve()), json.dumps(asdict(config)), str(out)]
        process = subprocess.Popen(command, cwd=tree, env=env)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            stop_daemons_of(process.pid)
        if process.returncode != 0 or not out.exists():
            return {"peers": config.size, "config": asdict(config), "failed": f"exit {process.returncode}"}
        return json.loads(out.read_text())


def stop_daemons_of(owner: int) -> int:
    """SIGTERM the p2pd daemons that process `owner` started (their socket names carry its pid); how many."""
    stopped = 0
    tag = f"/tmp/hivemind-swarmnode-{owner}-"
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if cmdline and cmdline[0].endswith("p2pd") and any(tag in argument for argument in cmdline):
            try:
                os.kill(process.info["pid"], signal.SIGTERM)
                stopped += 1
            except ProcessLookupError:
                continue
    return stopped


def _worker(argv: list[str]) -> None:
    """`python swarm_scale.py CONFIG_JSON OUT`: one run, its row written to OUT."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    config = ScaleConfig(**json.loads(argv[1]))
    row = run_swarm(config)
    Path(argv[2]).write_text(json.dumps(row, default=str))


if __name__ == "__main__":
    _worker(sys.argv)
