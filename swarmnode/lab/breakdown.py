"""Where a round's time goes, across the nodes of a run: each phase's share of the round, median and p95 seconds,
by node and pooled (the real-swarm benchmarks print it beside their results)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swarmnode.ops.metrics import RoundRecord, read_records

PHASES = ("generate", "publish", "collect", "rescore", "train", "checkpoint")
UNTIMED = "untimed"  # between phases: health check, metrics record and log line, loop overhead
GOAL_OUTSIDE_SHARE = 0.10


def breakdown(records_by_node: Mapping[Any, Sequence[RoundRecord]]) -> dict:
    """Mean seconds, p95 and share of the mean round wall time per phase, over all nodes' rounds 2..R."""
    samples: dict[str, list[float]] = {phase: [] for phase in (*PHASES, UNTIMED)}
    walls: list[float] = []
    for records in records_by_node.values():
        for previous, record in zip(records, records[1:]):
            wall = record.time - previous.time
            walls.append(wall)
            for phase in PHASES:
                samples[phase].append(record.seconds.get(phase, 0.0))
            samples[UNTIMED].append(max(0.0, wall - sum(record.seconds.values())))
    if not walls:
        raise ValueError("no node has two rounds recorded: nothing to measure")
    wall_mean = statistics.mean(walls)
    phases = {
        name: {"mean_s": statistics.mean(values), "p95_s": _p95(values), "share": statistics.mean(values) / wall_mean}
        for name, values in samples.items()
    }
    checkpoints = [s for s in samples["checkpoint"] if s > 0.05]
    outside = wall_mean - phases["generate"]["mean_s"] - phases["train"]["mean_s"]
    return {
        "nodes": len(records_by_node),
        "rounds_measured": len(walls),
        "round_wall_s": {"mean": wall_mean, "p95": _p95(walls)},
        "phases": phases,
        "outside_generate_train_share": outside / wall_mean,
        "goal_share": GOAL_OUTSIDE_SHARE,
        "checkpoint_rounds": {"count": len(checkpoints), "mean_s": statistics.mean(checkpoints) if checkpoints else 0.0},
    }


def _p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def load(data_dirs: Sequence[Path]) -> dict[str, list[RoundRecord]]:
    return {str(path): read_records(Path(path) / "metrics.jsonl") for path in data_dirs}


def print_breakdown(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title}: {result['nodes']} nodes, {result['rounds_measured']} rounds, "
                        f"round {result['round_wall_s']['mean']:.2f} s (p95 {result['round_wall_s']['p95']:.2f} s)")
    for column in ("phase", "mean s", "p95 s", "share of round"):
        table.add_column(column, justify="right")
    for name, phase in result["phases"].items():
        table.add_row(name, f"{phase['mean_s']:.3f}", f"{phase['p95_s']:.3f}", f"{100 * phase['share']:.1f}%")
    console = Console(width=120)
    console.print(table)
    share = result["outside_generate_train_share"]
    verdict = "meets" if share < GOAL_OUTSIDE_SHARE else "misses"
    checkpoints = result["checkpoint_rounds"]
    console.print(
        f"outside generate+train: {100 * share:.1f}% of the round ({verdict} the < {100 * GOAL_OUTSIDE_SHARE:.0f}% goal); "
        f"{checkpoints['count']} checkpoint saves, {checkpoints['mean_s']:.2f} s each", highlight=False,
    )


def print_comparison(results: Mapping[str, dict], title: str) -> None:
    """One row per labelled breakdown (e.g. per configuration): mean seconds per phase, and the outside share."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("", "round s", *PHASES, UNTIMED, "outside gen+train"):
        table.add_column(column, justify="right")
    for label, result in results.items():
        table.add_row(
            label, f"{result['round_wall_s']['mean']:.2f}",
            *(f"{result['phases'][name]['mean_s']:.3f}" for name in (*PHASES, UNTIMED)),
            f"{100 * result['outside_generate_train_share']:.1f}%",
        )
    Console(width=140).print(table)
