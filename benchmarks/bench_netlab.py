"""Gossip across hosts: every network-lab scenario (public hosts, homes behind NAT, a lossy capped link),
with this checkout and with an earlier commit ("baseline", today's code path before reachability and the
directory) in the same run, on real `swarmnode` processes in network namespaces (netns).

Per scenario and code path: rounds, delivery by direction (home->home, home->public, public->home,
public->public: the share of a receiver's rounds after its first two with rollouts from the sender, and the
share of the sender's fresh batches it received), publish and collect p50 / p95 / max, bytes on the wire
per node and round, and what doctor says. The baseline records no per-sender counts, so its delivery is
given only where a node has a single peer. Needs root; writes benchmarks/results/netlab.json.

Usage: python benchmarks/bench_netlab.py [--rounds 20] [--scenarios a,b] [--baseline REF] [--no-baseline]
       [--relay-variant] [--fast] [--out FILE]
       python benchmarks/bench_netlab.py --report benchmarks/results/netlab.json   (tables of an earlier run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from swarmnode.lab.local_swarm import ROOT, exit_on_sigterm, machine_facts
from swarmnode.lab.netlab import SCENARIOS, LabRun, NodeReport, lab_unavailable_reason, run_scenario

BASELINE_REF = "680442a"  # main before reachability, client mode and the directory (2026-11-29)
DIRECTIONS = ("home->home", "home->public", "public->home", "public->public")


def direction(sender: NodeReport, receiver: NodeReport) -> str:
    kind = {"home": "home", "public": "public", "loopback": "home"}  # a loopback node is undiallable like a home
    return f"{kind[sender.kind]}->{kind[receiver.kind]}"


def summarise(run: LabRun, code: str) -> dict:
    nodes = {node.name: node for node in run.nodes}
    delivery: dict[str, list[float]] = {name: [] for name in DIRECTIONS}
    fresh: dict[str, list[float]] = {name: [] for name in DIRECTIONS}
    for receiver in run.nodes:
        if code.startswith("baseline") and len(receiver.rollouts_in_by_source) > 1:
            continue  # the baseline's records do not say whose rollouts arrived
        for sender_name in receiver.rollouts_in_by_source:
            sender = nodes[sender_name]
            share, fresh_share = receiver.delivery(sender_name), receiver.fresh_delivery(sender)
            if share is None:
                continue
            delivery[direction(sender, receiver)].append(share)
            if fresh_share is not None:
                fresh[direction(sender, receiver)].append(fresh_share)
    publish = [s for node in run.nodes for s in node.publish_s[2:]]
    collect = [s for node in run.nodes for s in node.collect_s[2:]]
    rounds = [node.rounds for node in run.nodes]
    return {
        "scenario": run.scenario, "code": code, "ok": run.ok, "seconds": round(run.seconds, 1),
        "rounds": rounds,
        "delivery_min": {k: round(min(v), 3) for k, v in delivery.items() if v},
        "fresh_delivery_min": {k: round(min(v), 3) for k, v in fresh.items() if v},
        "publish_s": _quantiles(publish), "collect_s": _quantiles(collect),
        "wire_kb_per_node_round": round(
            statistics.mean(node.wire_bytes / max(node.rounds, 1) for node in run.nodes) / 1024, 1
        ),
        "nodes": [
            {"name": node.name, "kind": node.kind, "reachability": node.reachability, "dht": node.dht_mode,
             "rounds": node.rounds, "doctor": node.doctor, "problems": node.problems,
             "rollouts_in_by_source": node.rollouts_in_by_source, "wire_bytes": node.wire_bytes,
             "exit": node.exit_code}
            for node in run.nodes
        ],
        "failures": run.failures,
    }


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2], 3),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


def baseline_checkout(ref: str, directory: Path) -> Path:
    """A detached worktree of `ref`; its package runs from there through PYTHONPATH."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(directory), ref],
                   check=True, capture_output=True)
    return directory


def print_table(rows: list[dict]) -> None:
    table = Table(title="network lab: delivery, latency and bytes (min over node pairs; after each node's round 2)")
    for column in ("scenario", "code", "rounds", "home→home", "home→public", "public→home", "public→public",
                   "publish p50/p95/max s", "collect p50/p95/max s", "KB/node/round", "reachability (doctor)"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = []
        for name in DIRECTIONS:
            share, fresh = row["delivery_min"].get(name), row["fresh_delivery_min"].get(name)
            cells.append("—" if share is None else f"{100 * share:.0f}%" + (f" / {100 * fresh:.0f}%" if fresh is not None else ""))
        reach = ", ".join(f"{n['name']} {n['reachability']}" + (f" ({n['doctor'].split(':')[0]})" if n["doctor"] else "")
                          for n in row["nodes"])
        table.add_row(
            row["scenario"], row["code"], "/".join(map(str, row["rounds"])), *cells,
            _fmt(row["publish_s"]), _fmt(row["collect_s"]), f"{row['wire_kb_per_node_round']:.1f}", reach,
        )
    Console(width=240).print(table)


def print_nodes(rows: list[dict]) -> None:
    """Per node of this code's runs: rollouts in per round (after round 2) from home and from public senders."""
    table = Table(title="network lab, per node (this code): rollouts in per round after round 2, by sender's kind")
    for column in ("scenario", "node", "kind", "reachability", "DHT", "rounds", "from homes", "from public",
                   "problems", "doctor"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if row["code"] != "current":
            continue
        kinds = {node["name"]: "public" if node["kind"] == "public" else "home" for node in row["nodes"]}
        for node in row["nodes"]:
            per_kind = {"home": 0.0, "public": 0.0}
            for sender, counts in node["rollouts_in_by_source"].items():
                per_kind[kinds[sender]] += sum(counts[2:]) / max(len(counts[2:]), 1)
            has = {kind for sender, kind in kinds.items() if sender != node["name"]}
            table.add_row(
                row["scenario"], node["name"], node["kind"], node["reachability"], node["dht"], str(node["rounds"]),
                f"{per_kind['home']:.1f}" if "home" in has else "—",
                f"{per_kind['public']:.1f}" if "public" in has else "—",
                ", ".join(f"{k} {v}" for k, v in node["problems"].items()) or "none",
                node["doctor"].split(";")[0],
            )
    Console(width=200).print(table)


def _fmt(quantiles: dict) -> str:
    return "—" if not quantiles else f"{quantiles['p50']:.2f}/{quantiles['p95']:.2f}/{quantiles['max']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--baseline", default=BASELINE_REF, help="git ref of the code path to compare against")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--relay-variant", action="store_true", help="also run homes scenarios with network.relay=true")
    parser.add_argument("--fast", action="store_true", help="small rounds (as the tests use)")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "bench-netlab")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "netlab.json")
    parser.add_argument("--report", type=Path, help="print the tables of an earlier run's JSON and exit")
    args = parser.parse_args()
    if args.report is not None:
        rows = json.loads(args.report.read_text())["rows"]
        print_table(rows)
        print_nodes(rows)
        return
    exit_on_sigterm()
    reason = lab_unavailable_reason()
    if reason is not None:
        sys.exit(reason)
    facts = {**machine_facts(), "started": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "fast": args.fast}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        baseline = None if args.no_baseline else baseline_checkout(args.baseline, Path(scratch) / "baseline")
        try:
            for name in args.scenarios.split(","):
                scenario = SCENARIOS[name]
                variants = [("current", [], ROOT)]
                if args.relay_variant and any(host.home for host in scenario.hosts):
                    variants.append(("current+relay", ["network.relay=true"], ROOT))
                if baseline is not None:
                    variants.append((f"baseline {args.baseline}", [], baseline))
                for code, overrides, code_dir in variants:
                    print(f"{name} / {code} …", flush=True)
                    run = run_scenario(scenario, args.dir / name / code.split()[0], args.rounds, overrides,
                                       with_doctor=code_dir == ROOT, fast=args.fast, code_dir=code_dir)
                    rows.append(summarise(run, code))
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))
        finally:
            if baseline is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], capture_output=True)
    print_table(rows)
    print_nodes(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
