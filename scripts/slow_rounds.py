"""Nodes whose rounds take minutes still train on each other's groups (records live `record_ttl_s`, 60 s).

Two swarms of two `swarmnode join` processes on 127.0.0.1 run side by side, with the same swarm rules
(30 s windows, 60 s record lifetime) and config. Every node is an emulated slow machine: once it has
started, it and its p2pd move into a cgroup of their own with a CPU quota (`--cpu-share` of one core;
cgroup v1 `cpu` or v2 `cpu.max`), so the default round, 1-2 s on a free core, takes minutes, as a 0.5B
model's does. One swarm refreshes its latest batch each window (the default); the other is the baseline,
with `gossip.refresh_for_s=0`. Prints per node: seconds per round, rollouts collected, peers' groups
trained on; writes benchmarks/results/slow-rounds.json. Needs root (cgroups); removes what it makes.

Usage: python scripts/slow_rounds.py [--rounds 4] [--cpu-share 0.01] [--dir runs/slow-rounds]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import psutil
from local_swarm import ROOT, LocalSwarm, NodeSpec, SwarmResult, exit_on_sigterm, machine_facts, print_nodes

CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class SlowMachine:
    """A cgroup with a CPU quota; processes moved into it get `share` of one core. Removed on close."""

    def __init__(self, name: str, share: float) -> None:
        v2 = (CGROUP_V2 / "cgroup.controllers").exists()
        self.path = (CGROUP_V2 if v2 else CGROUP_V1) / f"swarmnode-{name}-{os.getpid()}"
        self.path.mkdir()
        quota = max(1000, int(share * PERIOD_US))
        if v2:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def take(self, pid: int) -> None:
        """The process and all its descendants (p2pd): a slow machine is slow at everything."""
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            (self.path / "cgroup.procs").write_text(str(process.pid))

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
    """Move each node into its slow machine once its log says it started (loading torch at a 1% share
    would take many minutes, and is not what is measured)."""
    waiting = dict(machines)
    while waiting and not stop.wait(0.5):
        for name, pid in swarm.node_pids().items():
            log = swarm.base_dir / name / "stdout.log"
            if name in waiting and log.exists() and '"event": "started"' in log.read_text():
                waiting.pop(name).take(pid)


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
    parser.add_argument("--cpu-share", type=float, default=0.01, help="of one core, per node (and its p2pd)")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "slow-rounds")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slow-rounds.json")
    args = parser.parse_args()
    exit_on_sigterm()
    # twice the default round's work (16 questions, up to 48 tokens), no held-out evaluation to wait for
    common = ["sapo.questions_per_round=16", "model.max_new_tokens=48", "eval.every_rounds=0"]
    results: dict[str, SwarmResult] = {}
    runs = {"refresh": common, "no-refresh": [*common, "gossip.refresh_for_s=0"]}
    swarms, machines = [], {}
    try:
        for swarm_id, overrides in runs.items():
            names = [f"{swarm_id}-{index}" for index in range(2)]
            nodes = [NodeSpec(name, (f"seed={index}", f"tasks.seed={index}"), args.rounds) for index, name in enumerate(names)]
            machines[swarm_id] = {name: SlowMachine(name, args.cpu_share) for name in names}
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
