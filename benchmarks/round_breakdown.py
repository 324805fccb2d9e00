"""Where a node's round time goes: mean seconds and share of the round per phase (generate, publish,
collect, rescore, train, checkpoint, and untimed work), read from nodes' metrics.jsonl files.

The goal (issue #6): everything outside generate + train takes under 10% of the round. A round's wall time
is the gap between two consecutive records of a node, so each node's first round (warm-up) is left out.
Usage: python benchmarks/round_breakdown.py DATA_DIR... [--out benchmarks/results/round_breakdown.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from swarmnode.lab.breakdown import breakdown, load, print_breakdown
from swarmnode.lab.local_swarm import machine_facts

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "round_breakdown.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", type=Path, nargs="+", help="node data directories (each holds metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    result = breakdown(load(args.data_dirs))
    print_breakdown(result, "round time by phase")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_facts(),
        "sources": [str(path) for path in args.data_dirs], **result,
    }, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
