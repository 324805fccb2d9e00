"""The fault table: every fault of swarmnode.lab.faults injected into real `swarmnode join` processes of two
checkouts, one fault at a time with the two checkouts back to back, so both meet the same machine and load.

Prints fault → what the node did, rounds lost, data kept, goal met, per checkout; writes
benchmarks/results/faults.json (a run of some faults replaces their rows and keeps the others'). Needs root (the full-disk fault mounts a tmpfs); everything listens on 127.0.0.1.

Usage: python benchmarks/faults.py --before DIR [--faults p2pd_killed,full_disk] [--dir runs/faults]
       (DIR: a checkout of the code to compare with, e.g. `git worktree add --detach /tmp/before <commit>`)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from swarmnode.lab.faults import FAULTS, ROOT
from swarmnode.lab.local_swarm import exit_on_sigterm, machine_facts, write_results


def commit_of(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the checkout to compare this one with")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "faults")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = parser.parse_args()
    exit_on_sigterm()
    trees = {"before": args.before.resolve(), "after": ROOT}
    rows = []
    for fault in args.faults.split(","):
        for label, tree in trees.items():
            work = args.dir / fault / label
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            started = time.monotonic()
            try:
                outcome = dataclasses.asdict(FAULTS[fault](work, tree))
            except Exception as error:  # a fault the old code cannot even be driven through is a row too
                outcome = {"fault": fault, "behaviour": f"scenario failed: {type(error).__name__}: {str(error)[:200]}",
                           "rounds_lost": None, "data_kept": "?", "goal_met": False, "details": {}}
            rows.append({"key": fault, "tree": label, "commit": commit_of(tree), "seconds": round(time.monotonic() - started, 1), **outcome})
            print(f"{fault} / {label}: {outcome['behaviour']}", flush=True)
    table = Table(title="faults on real processes (before → after)")
    for column in ("fault", "code", "what the node did", "rounds lost", "data kept", "goal"):
        table.add_column(column)
    for row in rows:
        lost = "-" if row["rounds_lost"] is None else str(row["rounds_lost"])
        table.add_row(row["fault"], row["tree"], row["behaviour"], lost, row["data_kept"], "met" if row["goal_met"] else "missed")
    Console(width=200).print(table)
    earlier = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    run = {row["key"] for row in rows}  # faults not run this time keep their rows from the last run
    write_results(args.out, {"machine": machine_facts(), "rows": [r for r in earlier if r.get("key") not in run] + rows})


if __name__ == "__main__":
    main()
