"""Held-out evaluation's cost and result, from the metrics.jsonl of finished runs.

Per run: rounds, evaluations, seconds per evaluation, mean seconds of a round without one, the share of
all round time that evaluation took, and the share it would take at a given interval (default: the
config's); held-out greedy and sampled pass rates at the first and last evaluation. Prints a table and
writes JSON.

Usage: python benchmarks/bench_eval.py DATA_DIR [DATA_DIR ...] [--every 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from swarmnode.config import EvalConfig
from swarmnode.ops.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]


def summarise(data_dir: Path, every: int) -> dict:
    records = read_records(data_dir / "metrics.jsonl")
    evaluated = [r for r in records if r.held_out]
    plain = [sum(r.seconds.values()) for r in records if not r.held_out]
    eval_seconds = [r.seconds["evaluate"] for r in evaluated]
    total = sum(sum(r.seconds.values()) for r in records)
    mean_eval = sum(eval_seconds) / len(eval_seconds) if eval_seconds else 0.0
    mean_round = sum(plain) / len(plain) if plain else 0.0
    first, last = (evaluated[0].held_out, evaluated[-1].held_out) if evaluated else (None, None)
    return {
        "data_dir": str(data_dir),
        "rounds": len(records),
        "evaluations": len(evaluated),
        "seconds_per_evaluation": round(mean_eval, 3),
        "seconds_per_round_without": round(mean_round, 3),
        "share_of_round_time": round(sum(eval_seconds) / total, 4) if total else 0.0,
        "share_at_interval": round(mean_eval / (every * mean_round + mean_eval), 4) if mean_round else 0.0,
        "interval": every,
        "first": first,
        "last": last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=EvalConfig().every_rounds, help="interval to project the cost at")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "held-out.json")
    args = parser.parse_args()
    rows = [summarise(d, args.every) for d in args.data_dirs]
    table = Table(title=f"held-out evaluation: cost and pass rates (interval {args.every} rounds)")
    for column in ("run", "rounds", "evals", "s/eval", "s/round", "share (run)", f"share @{args.every}",
                   "greedy first → last", "sampled first → last"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for row in rows:
        first, last = row["first"] or {}, row["last"] or {}
        table.add_row(
            Path(row["data_dir"]).name, str(row["rounds"]), str(row["evaluations"]),
            f"{row['seconds_per_evaluation']:.2f}", f"{row['seconds_per_round_without']:.2f}",
            f"{100 * row['share_of_round_time']:.1f}%", f"{100 * row['share_at_interval']:.1f}%",
            f"{first.get('greedy', 0):.3f} (r{first.get('after_rounds')}) → {last.get('greedy', 0):.3f} (r{last.get('after_rounds')})",
            f"{first.get('sampled', 0):.3f} → {last.get('sampled', 0):.3f}",
        )
    Console(width=170).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
