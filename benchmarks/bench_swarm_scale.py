"""The largest real swarm this machine holds: DHT-only peers on an honest schedule, with NATed peers and churn.

Every peer is a real DHTPeer (its own p2pd on 127.0.0.1) with Gossip and BeaconService over it, in one process per
size (`swarmnode.lab.swarm_scale`). Each round every peer publishes a batch and collects J x oversample rollouts at
its own random moment; once a window it stores its beacon and takes its sampled census; some peers are DHT clients
(as behind NAT); churn replaces peers (p2pd killed or a graceful close) by fresh ones joining through the
bootstrap. After `--sizes`, `--try-sizes` are tried in order until one does not start, does not keep up (actions
start late) or would not fit in memory: the ceiling, and why. Writes benchmarks/results/swarm-scale.json.

Usage: python benchmarks/bench_swarm_scale.py [--sizes 16,64,128] [--try-sizes 256,384,512] [--churn-per-min 0.01]
       [--window-s 15] [--round-s 5] [--windows 3] [--tree DIR | --before DIR] [--out FILE]
       (DIR: another checkout, e.g. `git worktree add --detach /tmp/before 20e203a`; --tree runs only it,
       --before runs it and this tree back to back at each size, rows of both in one table)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from swarmnode.lab.swarm_scale import DRAIN_S, ScaleConfig, run_in_tree

ROOT = Path(__file__).resolve().parents[1]
MEMORY_HEADROOM = 0.8  # a try must fit in this share of the memory available when it starts
START_S_PER_PEER = 2.0  # a bound on a peer's start during the storm on a loaded 2-core machine


def commit_of(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_1m_at_start": round(os.getloadavg()[0], 2), "python": platform.python_version(),
        "machine": platform.machine(),
    }


def kept_up(row: dict[str, Any]) -> tuple[bool, str]:
    """Whether the machine ran the schedule: actions started within half a round (p95), a node's publish and collect
    fit in its round (p95), and no action was skipped for starting a window late. Otherwise the numbers measure
    the machine, not the protocol: lookups wait for CPU, publishes and collects hit their deadlines."""
    if "failed" in row:
        return False, f"the run failed ({row['failed']})"
    if row["storm"]["failed"]:
        return False, f"{row['storm']['failed']} peers could not start ({row['storm']['errors'][:1]})"
    round_s = row["config"]["round_s"]
    if row["lag_s"]["p95"] > round_s / 2 or row["skipped_late"] or row["round_taken_s"]["p95"] > round_s:
        return False, (f"CPU: publish+collect took {row['round_taken_s']['p95']:.1f} s (p95, round {round_s:g} s), "
                       f"actions started {row['lag_s']['p95']:.1f} s late, {row['skipped_late']} skipped; "
                       f"{row['cpu_cores_python']:.2f} + {row['cpu_cores_p2pd']:.2f} cores (Python + p2pd)")
    return True, "kept up"


def memory_needed(size: int, done: list[dict[str, Any]]) -> float | None:
    """Bytes a swarm of `size` should take, from the largest run so far: p2pd's PSS and our RSS per peer."""
    measured = [row for row in done if row.get("memory")]
    if not measured:
        return None
    row = max(measured, key=lambda row: row["peers"])
    memory = row["memory"]
    return size * (memory["p2pd_pss_mean"] + memory["ours_rss"] / row["peers"])


def run_size(tree: Path, label: str, config: ScaleConfig, console: Console) -> dict[str, Any]:
    timeout_s = 120 + START_S_PER_PEER * config.size + (config.windows + 2) * config.window_s + 2 * DRAIN_S
    started = time.monotonic()
    load = os.getloadavg()[0]
    row = run_in_tree(tree, config, timeout_s)
    row.update({"tree": label, "commit": commit_of(tree), "load_1m_before": round(load, 2),
                "seconds": round(time.monotonic() - started, 1)})
    row["kept_up"], row["verdict"] = kept_up(row)
    console.print(f"{label} N={config.size}: {row['verdict']} ({row['seconds']:.0f} s)", highlight=False)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,128", help="comma-separated swarm sizes, all run")
    parser.add_argument("--try-sizes", default="256,384,512",
                        help="larger sizes, tried in order until one fails, falls behind or would not fit in memory")
    parser.add_argument("--nat-share", type=float, default=0.1, help="share of DHT clients (behind NAT); at least 2")
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--round-s", type=float, default=5.0)
    parser.add_argument("--windows", type=int, default=3, help="measured windows, after one warm-up window")
    parser.add_argument("--churn-per-min", type=float, default=0.01, help="share of the swarm replaced per minute")
    parser.add_argument("--storm-workers", type=int, default=8, help="peers starting at once in the join storm")
    parser.add_argument("--bisect", type=int, default=2,
                        help="then up to this many sizes between the largest that kept up and the smallest that did not")
    parser.add_argument("--tree", type=Path, help="run the swarm with this checkout's swarmnode instead of this one")
    parser.add_argument("--before", type=Path, help="also run this checkout, before this tree at each size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "swarm-scale.json")
    args = parser.parse_args()
    trees = {"this": (args.tree or ROOT).resolve()}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": ROOT}
    console = Console(width=200)
    facts = machine()
    console.print(f"load average at start: {facts['load_1m_at_start']:.2f} on {facts['cpus']} CPUs, "
                  f"{facts['memory_gib']} GiB", highlight=False)
    sizes = [int(text) for text in args.sizes.split(",") if text]
    tries = [int(text) for text in args.try_sizes.split(",") if text]
    rows: list[dict[str, Any]] = []
    ceiling: dict[str, Any] = {"largest_kept_up": None, "stopped_at": None, "why": "every size kept up"}
    for size in [*sizes, *tries]:
        config = ScaleConfig(
            size=size, nat=max(2, round(args.nat_share * size)), window_s=args.window_s, round_s=args.round_s,
            windows=args.windows, churn_per_min=args.churn_per_min, storm_workers=args.storm_workers,
        )
        needed = memory_needed(size, rows)
        available = psutil.virtual_memory().available
        if size in tries and needed is not None and needed > MEMORY_HEADROOM * available:
            ceiling["memory"] = f"N={size} not tried: about {needed / 2**30:.1f} GiB needed, {available / 2**30:.1f} GiB available"
            if ceiling["stopped_at"] is None:
                ceiling.update(stopped_at=size, why=ceiling["memory"])
            console.print(ceiling["memory"], highlight=False)
            break

        size_rows = [run_size(tree, label, config, console) for label, tree in trees.items()]
        rows.extend(size_rows)
        if all(row["kept_up"] for row in size_rows):
            ceiling["largest_kept_up"] = max(size, ceiling["largest_kept_up"] or 0)
        else:
            if ceiling["stopped_at"] is None or size < ceiling["stopped_at"]:
                ceiling.update(stopped_at=size, why="; ".join(f"{row['tree']}: {row['verdict']}" for row in size_rows))
            if size in tries:
                break
    for _ in range(args.bisect):
        low, high = ceiling["largest_kept_up"] or 0, ceiling["stopped_at"]
        if high is None or high - low <= max(8, low // 4):
            break
        size = (low + high) // 2
        config = dataclasses.replace(config, size=size, nat=max(2, round(args.nat_share * size)))
        size_rows = [run_size(tree, label, config, console) for label, tree in trees.items()]
        rows.extend(size_rows)
        if all(row["kept_up"] for row in size_rows):
            ceiling["largest_kept_up"] = size
        else:
            ceiling.update(stopped_at=size, why="; ".join(f"{row['tree']}: {row['verdict']}" for row in size_rows))
    rows.sort(key=lambda row: (row["peers"], row["tree"] != "before"))
    for table in render(rows):
        console.print(table)
    console.print(f"ceiling: largest swarm that kept up {ceiling['largest_kept_up']}; smallest that did not "
                  f"{ceiling['stopped_at']}: {ceiling['why']}" + (f"; {ceiling['memory']}" if "memory" in ceiling else ""),
                  highlight=False)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": facts,
        "trees": {label: {"path": str(tree), "commit": commit_of(tree)} for label, tree in trees.items()},
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "ceiling": ceiling,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    console.print(f"wrote {args.out}", highlight=False)


def _ms(quantiles: dict[str, float]) -> str:
    return "-" if math.isnan(quantiles["p50"]) else f"{1000 * quantiles['p50']:.0f} / {1000 * quantiles['p95']:.0f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.0f}%"


def _rounds(values: list[int | None]) -> str:
    return ", ".join("never" if value is None else str(value) for value in values) or "-"


def render(rows: list[dict[str, Any]]) -> list[Table]:
    """Three tables: what a node pays, what the swarm does, what the machine carried."""
    ok = [row for row in rows if "failed" not in row]
    cost = Table(title="cost per node (protobuf bytes of DHT RPCs, served requests included; means over nodes, "
                       "busiest = the node with the most bytes)")
    for column in ("code", "N (NAT)", "sent / served per round", "KB in / out per round", "KB in+out per window",
                   "busiest KB per window", "busiest served per window", "busiest / median bytes", "refused stores"):
        cost.add_column(column, justify="right")
    for row in ok:
        cost.add_row(
            row["tree"], f"{row['peers']} ({row['config']['nat']})",
            f"{row['sent_per_node_round']:.1f} / {row['served_per_node_round']:.1f}",
            f"{row['in_per_node_round'] / 1e3:.1f} / {row['out_per_node_round'] / 1e3:.1f}",
            f"{(row['in_per_node_window'] + row['out_per_node_window']) / 1e3:.0f}",
            f"{(row['in_busiest_window'] + row['out_busiest_window']) / 1e3:.0f}"
            + (" (boot)" if row["busiest_is_bootstrap"] else ""),
            f"{row['served_busiest_window']:.0f}", f"{row['busiest_over_median_bytes']:.1f}",
            ", ".join(f"{reason} {count}" for reason, count in sorted(row["refusals"].items())) or "0",
        )
    behaviour = Table(title="what the swarm did (measured windows; delivered: signer-windows whose batch some collect "
                            "took; full: collects that got all J x oversample)")
    for column in ("code", "N", "publish ms p50 / p95", "collect ms p50 / p95", "delivered", "NAT delivered",
                   "collects full", "finds per publish / collect / census", "NAT rounds to 1st read",
                   "joiners' rounds to 1st read", "census nodes seen", "beacons stored"):
        behaviour.add_column(column, justify="right")
    for row in ok:
        behaviour.add_row(
            row["tree"], str(row["peers"]), _ms(row["publish_s"]), _ms(row["collect_s"]), _pct(row["delivered_share"]),
            _pct(row["nat_delivered_share"]), _pct(row["collect_satisfied_share"]),
            f"{row['finds_per_publish']:.1f} / {row['finds_per_collect']:.1f} / {row['finds_per_census']:.1f}",
            _rounds(row["nat_rounds_to_first_read"]), _rounds(row["joiner_rounds_to_first_read"]),
            f"{row['census_nodes']:.0f} (≈{row['census_estimate']:.0f})", _pct(row["beacon_stored_share"]),
        )
    carried = Table(title="the machine (join storm: all but the bootstrap joining through it at once)")
    for column in ("code", "N", "storm join s p50 / p95", "bootstrap served/s", "churn: events (crashes), join s",
                   "p2pd RSS / PSS MB per peer", "our RSS MB", "CPU cores Python + p2pd", "publish+collect s p95",
                   "late start s p95 (worker)", "skipped", "verdict"):
        carried.add_column(column, justify="right")
    for row in rows:
        if "failed" in row:
            carried.add_row(row["tree"], str(row["peers"]), *["-"] * 9, row["verdict"])
            continue
        storm, churn, memory = row["storm"], row["churn"], row["memory"]
        carried.add_row(
            row["tree"], str(row["peers"]), f"{storm['join_s']['p50']:.1f} / {storm['join_s']['p95']:.1f}",
            f"{storm['bootstrap_served_per_s']:.1f}",
            f"{churn['events']} ({churn['crashes']}), " + ("-" if not churn["join_s"]["count"] else f"{churn['join_s']['p50']:.1f}"),
            f"{memory['p2pd_rss_mean'] / 2**20:.0f} / {memory['p2pd_pss_mean'] / 2**20:.0f}",
            f"{memory['ours_rss'] / 2**20:.0f}", f"{row['cpu_cores_python']:.2f} + {row['cpu_cores_p2pd']:.2f}",
            f"{row['round_taken_s']['p95']:.1f}", f"{row['lag_s']['p95']:.2f} ({row['wait_s']['p95']:.2f})",

            str(row["skipped_late"]), row["verdict"],
        )
    return [cost, behaviour, carried]


if __name__ == "__main__":
    main()
