"""Nodes whose rounds take minutes still train on each other's groups (records live `record_ttl_s`, 60 s).

Two swarms of two `swarmnode join` processes on 127.0.0.1 run side by side, with the same swarm rules
(30 s windows, 60 s record lifetime) and config. Every node is an emulated slow machine: once it has
started, the thread that samples and trains moves into a cgroup of its own with a CPU quota (`--cpu-share`
of one core; cgroup v1 `cpu`), so a round of 2 CPU-seconds takes minutes, as a 0.5B model's does, while
its DHT thread and p2pd run at full speed, as on a real machine busy with a big model. One swarm refreshes its latest batch each window (the default); the other is the baseline,
with `gossip.refresh_for_s=0`. Prints per node: seconds per round, rollouts collected, peers' groups
trained on; writes benchmarks/results/slow-rounds.json. Needs root (cgroups); removes what it makes.

Usage: python benchmarks/slow_rounds.py [--rounds 4] [--cpu-share 0.015] [--dir runs/slow-rounds]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from swarmnode.lab.local_swarm import (
    ROOT,
    LocalSwarm,
    NodeSpec,
    SwarmResult,
    exit_on_sigterm,
    machine_facts,
    print_nodes,
)

CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")  # unified hierarchy: refused, see SlowMachine
# the quota in the kernel's smallest slices (1 ms), so a slow machine runs often and briefly rather than
# stalling for most of each 100 ms
QUOTA_US = 1_000
MAX_PERIOD_US = 1_000_000


class SlowMachine:
    """A cgroup with a CPU quota; a thread moved into it gets `share` of one core. Removed on close."""

    def __init__(self, name: str, share: float) -> None:
        if (CGROUP_V2 / "cgroup.controllers").exists():
            raise SystemExit("needs cgroup v1's cpu controller: on cgroup v2 one thread cannot be throttled alone")
        self.path = CGROUP_V1 / f"swarmnode-{name}-{os.getpid()}"
        self.path.mkdir()
        period = min(MAX_PERIOD_US, round(QUOTA_US / share))  # the shortest period the kernel's minimum quota allows
        try:
            (self.path / "cpu.cfs_period_us").write_text(str(period))
            (self.path / "cpu.cfs_quota_us").write_text(str(QUOTA_US))
        except OSError:
            self.path.rmdir()
            raise

    def take(self, pid: int) -> None:
        """The process's main thread, which samples and trains (model.threads=1 keeps torch on it); not its
        DHT and beacon threads, nor p2pd. A volunteer's slow round is long compute on a machine whose network
        is as quick as anyone's: throttling everything would make its DHT requests time out instead."""
        (self.path / "tasks").write_text(str(pid))

    def close(self) -> None:
        for _ in range(50):  # the kernel lets go of a cgroup once its last process has exited
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.2)
        print(f"could not remove {self.path}: a process is still in it")


def throttle_when_started(swarm: LocalSwarm, machines: dict[str, SlowMachine], stop: threading.Event) -> None:
    """Move each node into its slow machine once its log says it started (loading torch at a 1.5% share
    would take many minutes, and is not what is measured)."""
    waiting = dict(machines)
    while waiting and not stop.wait(0.5):
        for name, pid in swarm.node_pids().items():
            log = swarm.base_dir / name / "stdout.log"
            if name in waiting and log.exists() and '"event": "started"' in log.read_text():
                try:
                    waiting.pop(name).take(pid)
                except OSError as error:  # the node already exited: its results say so; the others go on
                    print(f"{name}: not throttled ({error})")


def run_swarm(swarm: LocalSwarm, machines: dict[str, SlowMachine], results: dict[str, SwarmResult]) -> None:
    stop = threading.Event()
    try:
        with swarm:
            threading.Thread(target=throttle_when_started, args=(swarm, machines, stop), daemon=True).start()
            results[swarm.swarm_id] = swarm.wait()
    finally:
        stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cpu-share", type=float, default=0.015, help="of one core, for each node's computing thread")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "slow-rounds")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slow-rounds.json")
    args = parser.parse_args()
    exit_on_sigterm()
    # 2 CPU-seconds a round (64 questions of up to 48 tokens; the default round is under 1), no held-out
    # evaluation to wait for, and the J slots for peers' groups whenever there are some (own_first=false, as
    # SAPO's authors run it: with 64 questions own groups would fill every slot). Verifying peers' frames runs
    # on the throttled thread, so collect gets 30 s instead of 3.
    common = [
        "sapo.questions_per_round=64", "sapo.sampling=equal", "model.max_new_tokens=48", "eval.every_rounds=0", "sapo.own_first=false",
        "gossip.collect_timeout_s=30",
    ]
    results: dict[str, SwarmResult] = {}
    runs = {"refresh": common, "no-refresh": [*common, "gossip.refresh_for_s=0"]}
    swarms, machines = [], {}
    try:
        for swarm_id, overrides in runs.items():
            names = [f"{swarm_id}-{index}" for index in range(2)]
            nodes = [NodeSpec(name, (f"seed={index}", f"tasks.seed={index}"), args.rounds) for index, name in enumerate(names)]
            machines[swarm_id] = {}
            for name in names:  # one at a time: a cgroup made before a failure is still closed below
                machines[swarm_id][name] = SlowMachine(name, args.cpu_share)
            swarms.append(LocalSwarm(nodes, args.dir / swarm_id, swarm_id, overrides, timeout_s=args.timeout_s))
        threads = [threading.Thread(target=run_swarm, args=(swarm, machines[swarm.swarm_id], results)) for swarm in swarms]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:  # also on SIGTERM or Ctrl-C: processes out first, then their cgroups
        for swarm in swarms:
            swarm.close()
        for machine in (m for group in machines.values() for m in group.values()):
            machine.close()
    rows = []
    for name in runs:
        result = results.get(name)
        if result is None:
            print(f"{name}: did not run")
            continue
        print_nodes(result, f"{name}: 2 nodes at {args.cpu_share:.1%} of a core each")
        for node in result.nodes:
            spans = [b.time - a.time for a, b in zip(node.records, node.records[1:])]
            rows.append({
                "swarm": name, "node": node.name, "rounds": len(node.records), "seconds_per_round": spans,
                "rollouts_in": [r.rollouts_in for r in node.records],
                "groups_external": [r.groups_external for r in node.records],
                "seconds_by_phase": [r.seconds for r in node.records],
            })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_facts(), "cpu_share": args.cpu_share, "nodes": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
