"""Start-up time of the commands that need no model: `swarmnode bootstrap --help`, `swarmnode swarm --help`,
`swarmnode --help` and importing the gossip module, for this checkout and others in the same run (`--code DIR`,
e.g. a worktree of an older commit; its gossip module is found in either layout). Each command runs in a fresh
process `--repeats` times, interleaved across checkouts; the table shows the median wall seconds and the ratio
to the first checkout. Writes benchmarks/results/startup.json.

Usage: python benchmarks/bench_startup.py [--code DIR ...] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "startup.json"


def commands(code: Path) -> dict[str, list[str]]:
    gossip = "swarmnode.net.gossip" if (code / "swarmnode" / "net" / "gossip.py").exists() else "swarmnode.gossip"
    return {
        "swarmnode --help": ["-m", "swarmnode.cli", "--help"],
        "swarmnode bootstrap --help": ["-m", "swarmnode.cli", "bootstrap", "--help"],
        "swarmnode swarm --help": ["-m", "swarmnode.cli", "swarm", "--help"],
        "import the gossip module": ["-c", f"import {gossip}"],
    }


def run_once(code: Path, args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                   check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, action="append", default=[], help="another checkout (repeatable)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    checkouts = [ROOT, *args.code]
    labels = [subprocess.run(["git", "-C", str(code), "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip() or str(code) for code in checkouts]
    seconds: dict[tuple[int, int], list[float]] = {}
    for code in checkouts:  # warm the page cache and the bytecode caches of both
        for command in commands(code).values():
            run_once(code, command)
    for _ in range(args.repeats):
        for position, code in enumerate(checkouts):
            for row, command in enumerate(commands(code).values()):
                seconds.setdefault((row, position), []).append(run_once(code, command))
    table = Table(title=f"start-up, median of {args.repeats} fresh processes (wall seconds)")
    table.add_column("command")
    for label in labels:
        table.add_column(label, justify="right")
    rows = []
    for row, name in enumerate(commands(ROOT)):
        medians = [statistics.median(seconds[row, position]) for position in range(len(checkouts))]
        cells = [f"{medians[0]:.2f}"] + [f"{value:.2f} ({value / medians[0]:.1f}x)" for value in medians[1:]]
        table.add_row(name, *cells)
        rows.append({"command": name, "median_s": dict(zip(labels, medians)),
                     "runs_s": {label: seconds[row, position] for position, label in enumerate(labels)}})
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1m_at_start": os.getloadavg()[0]},
        "checkouts": labels, "rows": rows,
    }, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
