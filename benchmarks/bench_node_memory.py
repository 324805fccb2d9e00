"""A whole node's peak memory against its budget, held-out evaluation included: a Qwen2.5-0.5B-shaped model.

The memory plan (`memory.budget_gib`) is what a volunteer gives the node; this checks the node keeps to it in
every phase, not only in training. Each run is a fresh process (peak RSS is per process) running an in-process
`Node` alone (no gossip) for `--rounds` rounds: a random-init model of Qwen2.5-0.5B's geometry and 151,936-token
vocabulary (saved once under benchmarks/.models, with the seed model's tokenizer), LoRA r 16 on q/k/v/o, the
base evaluation before round 1 (`--questions` per family), then the rounds (a random model scores 0, so its
steps are skipped: sampling and evaluation are what is measured). `--code DIR` runs another checkout's
swarmnode (before/after in one table). Prints a table; writes benchmarks/results/node-memory.json.

Usage: python benchmarks/bench_node_memory.py [--budget-gib 3.7] [--rounds 2] [--questions 7] [--code DIR ...]
       [--set key=value ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

from swarmnode.lab.measure import measure_apart
from swarmnode.lab.models import LORA, MODELS

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = MODELS / "qwen2.5-0.5b-shape"


def ensure_model() -> Path:
    """The 0.5B-shaped random model as a directory a node loads by `model.name` (2 GB, made once)."""
    if not (MODEL_DIR / "model.safetensors").exists():
        import torch

        from swarmnode.lab.models import make_model
        from swarmnode.learn.policy import EMBEDDED_MODEL_DIR

        torch.manual_seed(0)
        model, tokenizer = make_model("0.5b", "full", EMBEDDED_MODEL_DIR)
        model.save_pretrained(MODEL_DIR)
        tokenizer.save_pretrained(MODEL_DIR)
    return MODEL_DIR


def one(overrides: list[str], rounds: int, data_dir: str) -> dict:
    """Runs inside the measured process: the node, and the highest RSS seen in each phase (sampled every 50 ms)."""
    import resource
    import threading
    import time

    import psutil

    from swarmnode.config import load_config
    from swarmnode.node import Node

    events: list[dict] = []
    node = Node(load_config(None, overrides), Path(data_dir), events.append, threading.Event())
    by_phase: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        process = psutil.Process()
        while not done.wait(0.05):
            phase = node.metrics.status.phase if hasattr(node, "metrics") else "starting"
            by_phase[phase] = max(by_phase.get(phase, 0), process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        node.start()
        node.run(rounds)
    finally:
        node.close()
        done.set()
        watcher.join()
    first = next(e for e in events if e["event"] == "started")
    held_out = [e for e in events if e["event"] == "held_out"]
    return {
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_by_phase": by_phase, "memory_plan": first.get("memory_plan"),
        "sampling_plan": first.get("sampling_plan"), "eval_s": held_out[0]["seconds"] if held_out else None,
        "rounds": sum(e["event"] == "round" for e in events), "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-gib", type=float, default=3.7, help="memory.budget_gib")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--questions", type=int, default=7, help="eval.questions_per_family (0: evaluation off)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="more config overrides")
    parser.add_argument("--code", action="append", default=[], help="another checkout to run (repeatable); default this one")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "node-memory")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "node-memory.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(**json.loads(args.one))))
        return
    from rich.console import Console
    from rich.table import Table

    evaluation = [f"eval.questions_per_family={args.questions}"] if args.questions else ["eval.every_rounds=0"]
    overrides = [
        f"model.name={ensure_model()}", f"model.lora={json.dumps(LORA)}", f"memory.budget_gib={args.budget_gib}",
        "gossip.enabled=false", "metrics.port=null", "seed=0", "tasks.seed=0", *evaluation, *args.overrides,
    ]
    results = []
    for code in args.code or [str(ROOT)]:
        commit = subprocess.run(["git", "-C", code, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
        data_dir = args.dir / commit
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)
        spec = {"overrides": overrides, "rounds": args.rounds, "data_dir": str(data_dir)}
        measured = measure_apart(__file__, spec, code, commit)
        if measured is not None:
            results.append({"code": commit, **measured})
            print(f"{commit}: peak {measured['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    gib = 2**30
    table = Table(title=f"A node with a 0.5B-shaped LoRA model, {args.rounds} rounds, budget {args.budget_gib:g} GiB, "
                        f"evaluation {'of ' + str(args.questions) + ' questions per family' if args.questions else 'off'}")
    for column in ("code", "peak RSS GiB", "of budget", "evaluate peak", "generate peak", "eval s", "run s", "plan"):
        table.add_column(column, justify="left" if column in ("code", "plan") else "right")
    for row in results:
        phases = row["peak_rss_by_phase"]
        table.add_row(
            row["code"], f"{row['peak_rss_bytes'] / gib:.2f}", f"{row['peak_rss_bytes'] / gib / args.budget_gib:.0%}",
            f"{phases.get('evaluate', 0) / gib:.2f}", f"{phases.get('generate', 0) / gib:.2f}",
            f"{row['eval_s']:.0f}" if row["eval_s"] is not None else "—", f"{row['seconds']:.0f}",
            "; ".join(filter(None, (row["memory_plan"], row["sampling_plan"]))),
        )
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1m_at_start": os.getloadavg()[0]},
        "settings": {"budget_gib": args.budget_gib, "rounds": args.rounds, "questions_per_family": args.questions,
                     "overrides": overrides},
        "results": results,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
