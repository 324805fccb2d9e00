"""What sharing buys a volunteer, from stored results: the efficiency tables (swarmnode/lab/efficiency.py) of a
reproduce_sapo.py or simulate_swarm.py result file, without running anything again. Real-swarm nodes are
re-read from their metrics.jsonl when their data dirs are still there (phases, wall times, held-out);
otherwise the stored traces are used. --update writes the re-read traces and the tables back into the file,
so it stands without the data dirs, and redraws its -compute.png.
Usage: python benchmarks/sapo_efficiency.py benchmarks/results/sapo-transplant.json [...] [--share 0.8] [--update]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swarmnode.lab import efficiency
from swarmnode.lab.efficiency import gains, node_runs
from swarmnode.ops.metrics import read_records


def refresh(result: dict) -> None:
    """Re-read each real-swarm node's trace from its metrics.jsonl, where its data dir still exists."""
    for run in result["runs"]:
        for node in [] if "traces" in run else run["nodes"]:
            metrics = Path(node["data_dir"]) / "metrics.jsonl"
            if metrics.exists():
                node.update(efficiency.NodeRun.from_records(run["seed"], read_records(metrics)).to_dict())


def every_node(result: dict) -> dict[str, list[efficiency.NodeRun]]:
    """Configuration -> all its nodes' runs, of a real-swarm or a simulator result."""
    if "traces" not in result["runs"][0]:
        return node_runs(result["runs"], result["configs"])
    runs: dict[str, list[efficiency.NodeRun]] = {}
    for run in result["runs"]:
        runs.setdefault(run["config"], []).extend(
            efficiency.NodeRun.from_dict({**trace, "seed": run["seed"]}) for trace in run["traces"]
        )
    return runs


def tables(result: dict, share: float) -> dict[str, dict[str, list[efficiency.Efficiency]]]:
    """Group (all nodes, or one model's) -> table name -> rows."""
    if "traces" not in result["runs"][0]:
        return gains(result["runs"], result["configs"], result["models"], share)
    return {"all": efficiency.report(every_node(result), share)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--share", type=float, default=efficiency.GPU_LIKE_SHARE,
                        help="sampling's share of the silo's compute for the derived table")
    parser.add_argument("--update", action="store_true", help="store re-read traces and the tables in the file")
    args = parser.parse_args()
    for path in args.results:
        result = json.loads(path.read_text())
        refresh(result)
        traces = [trace for run in result["runs"] for trace in run["traces" if "traces" in run else "nodes"]]
        if not all("compute_s" in trace for trace in traces):
            print(f"{path}: made before compute was recorded and its node data dirs are gone; skipped")
            continue
        found = tables(result, args.share)
        for group, named in found.items():
            for name, rows in named.items():
                efficiency.print_table(rows, f"{path.name}, {group} nodes: {name}")
        if args.update:
            result["efficiency"] = {group: {name: [row.to_dict() for row in rows] for name, rows in named.items()}
                                    for group, named in found.items()}
            path.write_text(json.dumps(result) + "\n")
            if found.get("all"):
                title = f"{path.stem}: {len(result['seeds'])} seeds, {result['rounds']} rounds, {result.get('sampling', 'equal')} sampling"
                efficiency.plot(every_node(result), title, path.with_name(f"{path.stem}-compute.png"))


if __name__ == "__main__":
    main()
