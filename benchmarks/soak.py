"""Soak: a 3-node local swarm (real DHT on 127.0.0.1) runs for a set time while every node process and its
p2pd are sampled for RSS, open files and threads; reports growth per hour. Goal (issue #7): bounded.

Growth is the least-squares slope over the samples after a warm-up (model load, first checkpoints and
the DHT's record tables filling up take the first minutes), per process, in units per hour.
Writes benchmarks/results/soak.json.
Usage: python benchmarks/soak.py [--minutes 60] [--nodes 3] [--sample-s 15] [--warmup-minutes 3]
       [--dir runs/soak] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from swarmnode.lab.local_swarm import LocalSwarm, NodeSpec, exit_on_sigterm, machine_facts, seeded_overrides

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "soak.json"
MEASURES = ("rss_mb", "open_files", "threads")


def sample(process: psutil.Process) -> dict[str, float]:
    with process.oneshot():
        return {
            "rss_mb": process.memory_info().rss / 2**20,
            "open_files": float(process.num_fds()),
            "threads": float(process.num_threads()),
        }


def slope_per_hour(times: list[float], values: list[float]) -> float:
    if len(times) < 3:
        return 0.0
    return statistics.linear_regression(times, values).slope * 3600.0


def processes_of(swarm: LocalSwarm) -> dict[str, psutil.Process]:
    """Each node's process and its p2pd child, by a readable name."""
    found = {}
    for child in swarm._children:
        with contextlib.suppress(psutil.Error):
            node = psutil.Process(child.popen.pid)
            found[child.name] = node
            for descendant in node.children(recursive=True):
                if descendant.name() == "p2pd":
                    found[f"{child.name}/p2pd"] = descendant
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--sample-s", type=float, default=15.0)
    parser.add_argument("--warmup-minutes", type=float, default=3.0)
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "soak")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    exit_on_sigterm()
    nodes = [NodeSpec(f"node{k}", tuple(seeded_overrides(k, seed=0)), rounds=10**9) for k in range(args.nodes)]
    samples: dict[str, list[tuple[float, dict[str, float]]]] = {}
    started = time.monotonic()
    end = started + args.minutes * 60
    with LocalSwarm(nodes, args.dir, "soak", args.overrides, timeout_s=args.minutes * 60 + 600) as swarm:
        while time.monotonic() < end:
            if any(child.popen.poll() is not None for child in swarm._children):
                sys.exit(f"a node stopped during the soak: {swarm.rounds_done()}; see {args.dir}/*/stderr.log")
            now = time.monotonic() - started
            for name, process in processes_of(swarm).items():
                with contextlib.suppress(psutil.Error):
                    samples.setdefault(name, []).append((now, sample(process)))
            time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
        rounds = swarm.rounds_done()
    report = summarise(samples, args.warmup_minutes * 60)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_facts(), "minutes": args.minutes,
        "nodes": args.nodes, "warmup_minutes": args.warmup_minutes, "rounds": rounds, "processes": report,
        "samples": {name: [[round(t, 1), s] for t, s in rows] for name, rows in samples.items()},
    }, indent=1) + "\n")
    print_report(report, rounds, args.minutes)


def summarise(samples: dict[str, list[tuple[float, dict[str, float]]]], warmup_s: float) -> dict[str, dict]:
    """Per process: start (after warm-up), end, peak and slope per hour of each measure."""
    report = {}
    for name, rows in samples.items():
        steady = [(t, s) for t, s in rows if t >= warmup_s] or rows
        times = [t for t, _ in steady]
        report[name] = {
            measure: {
                "start": steady[0][1][measure], "end": steady[-1][1][measure],
                "peak": max(s[measure] for _, s in rows),
                "per_hour": slope_per_hour(times, [s[measure] for _, s in steady]),
            }
            for measure in MEASURES
        }
    return report


def print_report(report: dict[str, dict], rounds: dict[str, int], minutes: float) -> None:
    table = Table(title=f"soak: {minutes:g} min, rounds {rounds}")
    table.add_column("process")
    for measure in MEASURES:
        table.add_column(f"{measure} start→end (peak)", justify="right")
        table.add_column(f"{measure} /h", justify="right")
    for name, row in report.items():
        cells = []
        for measure in MEASURES:
            m = row[measure]
            cells += [f"{m['start']:.0f}→{m['end']:.0f} ({m['peak']:.0f})", f"{m['per_hour']:+.1f}"]
        table.add_row(name, *cells)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
