"""Simulate a swarm in one process per run and compare sharing configurations (I own / J external).

Each (configuration, seed) run trains N nodes for R rounds with swarmnode's own Learner (sampling,
verifier, rescoring, selection, SAPO step); runs go to a process pool. Prints cumulative reward per
configuration (mean over nodes, mean ± std over seeds), the ratio to 8/0, collapses and trained
groups/tokens; writes benchmarks/results/sim-<regime>.json and .png.

Regimes: easy (one family, partial credit), sparse (exact-match reward, weak warm start),
specialised (each node samples one family of five and verifies all), mixed (two strong and two weak warm starts).
--sampling transplant: a node asks I questions and adopts J peers' groups (Q = I + J); either way the
efficiency table (swarmnode/lab/efficiency.py: reward per round and per compute hour, compute to reach the
silo's final reward) is printed and stored, and sim-<regime>[-tag]-compute.png plots reward against compute.
Usage: python benchmarks/simulate_swarm.py --regime easy [--rounds 150] [--seeds 0,1,2] [--jobs 2]
       [--configs 8/0,6/2,4/4,2/6] [--sampling equal|transplant] [--set sapo.min_own_groups=0 ...] [--tag NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from swarmnode.lab import efficiency
from swarmnode.lab.models import WEAK_MODEL, ensure_weak_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REGIMES = ("easy", "sparse", "specialised", "mixed")
DEFAULT_FAMILY_NAMES = ("chain_sum", "products", "count_bits", "gcd", "leg_counting")


def node_specs(regime: str, config: str, sampling: str, overrides: list[str], nodes: int):
    """(config, model) per node for a regime; only I/J differ between configurations."""
    from swarmnode.config import DEFAULT_FAMILIES, load_config
    from swarmnode.lab.local_swarm import sharing_overrides
    from swarmnode.lab.simulation import SimulatedNode

    base = [*sharing_overrides(config, sampling), "gossip.enabled=false"]
    by_name = {f.name: f for f in DEFAULT_FAMILIES}
    specs = []
    for index in range(nodes):
        extra, model = [], "swarmnode-seed"
        if regime == "easy":
            extra = [f"tasks.families=[{json.dumps(by_name['chain_sum'].model_dump())}]", "tasks.reward=partial"]
        elif regime == "sparse":
            extra, model = ["tasks.reward=exact"], str(WEAK_MODEL)
        elif regime == "specialised":  # samples one family, can verify (and learn from) all five
            mine = DEFAULT_FAMILY_NAMES[index % len(DEFAULT_FAMILY_NAMES)]
            families = [by_name[n].model_copy(update={"weight": 1.0 if n == mine else 0.0}).model_dump() for n in DEFAULT_FAMILY_NAMES]
            extra = [f"tasks.families={json.dumps(families)}"]
        elif regime == "mixed":
            model = "swarmnode-seed" if index < nodes // 2 else str(WEAK_MODEL)
        specs.append(SimulatedNode(load_config(None, base + extra + overrides), model))
    return specs


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    from swarmnode.lab.simulation import simulate

    started = time.time()
    specs = node_specs(job["regime"], job["config"], job["sampling"], job["overrides"], job["nodes"])
    runs = simulate(specs, job["rounds"], job["seed"])
    return {**job, "seconds": round(time.time() - started, 1), "traces": [run.series() for run in runs]}


def summarise(runs: list[dict], configs: list[str]) -> list[dict]:
    rows = []
    for config in configs:
        mine = [r for r in runs if r["config"] == config]
        per_seed = [statistics.mean(sum(t["rewards"]) for t in r["traces"]) for r in mine]
        by_model: dict[str, list[float]] = {}
        for r in mine:
            for t in r["traces"]:
                by_model.setdefault(t["model"], []).append(sum(t["rewards"]))
        traces = [t for r in mine for t in r["traces"]]
        rounds = sum(len(t["rewards"]) for t in traces)
        rows.append({
            "config": config,
            "cumulative_mean": statistics.mean(per_seed),
            "cumulative_std": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
            "per_seed": per_seed,
            "per_model": {m: statistics.mean(v) for m, v in by_model.items()},
            "collapses": sum(t["collapses"] for t in traces),
            "skipped_steps": sum(t["skipped"] for t in traces),
            "questions_per_round": sum(sum(t["questions"]) for t in traces) / rounds,
            "own_groups_per_round": sum(sum(t["own_groups"]) for t in traces) / rounds,
            "external_groups_per_round": sum(sum(t["external_groups"]) for t in traces) / rounds,
            "own_tokens_per_round": sum(sum(t["own_tokens"]) for t in traces) / rounds,
            "external_tokens_per_round": sum(sum(t["external_tokens"]) for t in traces) / rounds,
            "final_answer_rate": statistics.mean(statistics.mean(t["answer_rates"][-20:]) for t in traces),
        })
    baseline = next((r["cumulative_mean"] for r in rows if r["config"] == "8/0"), None)
    for row in rows:
        row["ratio_to_8_0"] = row["cumulative_mean"] / baseline if baseline else None
    return rows


def plot(runs: list[dict], configs: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from swarmnode.ops.dashboard import moving_average

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for config in configs:
        traces = [t for r in runs if r["config"] == config for t in r["traces"]]
        rounds = min(len(t["rewards"]) for t in traces)
        mean = [statistics.mean(t["rewards"][i] for t in traces) for i in range(rounds)]
        axis.plot(moving_average(mean, 20), label=config)
    axis.set_xlabel("round")
    axis.set_ylabel("own reward (moving average of 20, mean over nodes and seeds)")
    axis.set_title(title)
    axis.legend(title="I/J")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=REGIMES, required=True)
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--configs", default="8/0,6/2,4/4,2/6")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sampling", choices=("equal", "transplant"), default="equal")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    if args.regime in ("sparse", "mixed"):
        ensure_weak_model()
    configs = args.configs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    jobs = [
        {"regime": args.regime, "config": c, "sampling": args.sampling, "seed": s, "rounds": args.rounds,
         "nodes": args.nodes, "overrides": args.overrides, "threads": threads}
        for s in seeds for c in configs
    ]
    started = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_one, jobs))
    rows = summarise(runs, configs)
    transplant = "-transplant" if args.sampling == "transplant" else ""
    name = f"sim-{args.regime}{transplant}{'-' + args.tag if args.tag else ''}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    title = f"{args.regime}: {args.nodes} nodes, {len(seeds)} seeds, {args.sampling} sampling {' '.join(args.overrides)}"
    plot(runs, configs, title, RESULTS / f"{name}.png")
    node_runs = {config: [efficiency.NodeRun.from_dict({**trace, "seed": run["seed"]}) for run in runs
                          if run["config"] == config for trace in run["traces"]] for config in configs}
    gains = efficiency.report(node_runs)
    if gains:
        efficiency.plot(node_runs, title, RESULTS / f"{name}-compute.png")
    (RESULTS / f"{name}.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "regime": args.regime, "rounds": args.rounds, "nodes": args.nodes,
        "seeds": seeds, "sampling": args.sampling, "overrides": args.overrides, "seconds": round(time.time() - started, 1),
        "summary": rows, "efficiency": {"all": {table: [row.to_dict() for row in rows] for table, rows in gains.items()}}, "runs": runs,
    }) + "\n")
    print_table(rows, name, time.time() - started)
    for table, rows in gains.items():
        efficiency.print_table(rows, f"{name}: what sharing buys against 8/0, {table} (in one process)")


def print_table(rows: list[dict], name: str, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} ({seconds / 60:.1f} min)")
    for column in ("I/J", "cumulative reward", "x 8/0", "per model", "collapses", "skipped", "questions /round",
                   "groups own+ext /round", "tokens own+ext /round", "answer rate"):
        table.add_column(column, justify="right")
    for r in rows:
        ratio = f"{r['ratio_to_8_0']:.3f}" if r["ratio_to_8_0"] else "—"
        per_model = " ".join(f"{m}:{v:.1f}" for m, v in r["per_model"].items())
        table.add_row(
            r["config"], f"{r['cumulative_mean']:.1f} ± {r['cumulative_std']:.1f}", ratio, per_model,
            str(r["collapses"]), str(r["skipped_steps"]), f"{r['questions_per_round']:.1f}",
            f"{r['own_groups_per_round']:.1f}+{r['external_groups_per_round']:.1f}",
            f"{r['own_tokens_per_round']:.0f}+{r['external_tokens_per_round']:.0f}", f"{r['final_answer_rate']:.2f}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
