"""What sharing buys a volunteer, from stored results: the efficiency tables (swarmnode/efficiency.py) of a
reproduce_sapo.py or simulate_swarm.py result file, without running anything again. Real-swarm nodes are
re-read from their metrics.jsonl when their data dirs are still there (phases, wall times, held-out);
otherwise the stored traces are used.
Usage: python scripts/sapo_efficiency.py benchmarks/results/sapo-transplant.json [...] [--share 0.8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swarmnode import efficiency
from swarmnode.metrics import read_records


def node_runs(result: dict) -> dict[str, list[efficiency.NodeRun]]:
    """Configuration -> its nodes' runs, in the result's configuration order."""
    runs: dict[str, list[efficiency.NodeRun]] = {}
    for run in result["runs"]:
        for node in run.get("nodes") or run["traces"]:
            metrics = Path(node.get("data_dir", "")) / "metrics.jsonl"
            if node.get("data_dir") and metrics.exists():
                trace = efficiency.NodeRun.from_records(run["seed"], read_records(metrics))
            else:
                trace = efficiency.NodeRun.from_dict({**node, "seed": run["seed"]})
            runs.setdefault(run["config"], []).append(trace)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--share", type=float, default=efficiency.GPU_LIKE_SHARE,
                        help="sampling's share of the silo's compute for the derived table")
    args = parser.parse_args()
    for path in args.results:
        result = json.loads(path.read_text())
        for table, rows in efficiency.report(node_runs(result), args.share).items():
            efficiency.print_table(rows, f"{path.name}: {table}")


if __name__ == "__main__":
    main()
