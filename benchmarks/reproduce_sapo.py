"""SAPO's table on a real local swarm: each configuration I/J (8/0, 6/2, 4/4, 2/6) is one LocalSwarm of N
node processes on 127.0.0.1 (real DHT, signed gossip, rescoring), run one after another, for several seeds.

Fairness: node k of seed s has the same `seed` and `tasks.seed` in every configuration (same question
stream), and every node asks Q questions, samples G completions each and trains on I+J groups under the
same token budget; only the split between own and external groups differs. Reported per configuration:
cumulative own reward per node (mean over nodes and seeds, std over seeds, min/max over nodes), the ratio
to 8/0, and the paired gain over 8/0 (same seed, same node index). Writes benchmarks/results/sapo.json and
sapo.png; with --hetero, half the nodes run a GPT-2-architecture model with its own tokenizer and the
results (per model) go to sapo-hetero.json/.png. The round-time breakdown of all runs is printed and stored.

--sampling transplant runs the SAPO authors' protocol instead: a node asks I questions and adopts J peers'
groups (Q = I + J = 8), so sharing saves sampling; what that buys is the efficiency table (reward per round,
per compute hour, per wall hour, compute to reach the silo's final reward; swarmnode/lab/efficiency.py),
printed and stored for either mode.
Usage: python benchmarks/reproduce_sapo.py [--quick] [--rounds 120] [--seeds 0,1,2] [--nodes 4]
       [--configs 8/0,6/2,4/4,2/6] [--sampling equal|transplant] [--hetero | --weak | --mixed]
       [--set key=value ...] [--tag NAME] [--dir runs]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from itertools import accumulate
from pathlib import Path

from swarmnode.lab import efficiency
from swarmnode.lab.breakdown import breakdown, print_breakdown, print_comparison
from swarmnode.lab.efficiency import gains, node_runs
from swarmnode.lab.local_swarm import (
    LocalSwarm,
    LocalSwarmError,
    NodeSpec,
    SwarmResult,
    exit_on_sigterm,
    machine_facts,
    print_nodes,
    seeded_overrides,
    sharing_overrides,
)
from swarmnode.lab.models import ensure_gpt2_model, ensure_weak_model
from swarmnode.ops.dashboard import moving_average
from swarmnode.ops.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED_MODEL = "swarmnode-seed"
BASELINE = efficiency.SILO
QUICK = {"rounds": 30, "seeds": "0"}
DEFAULT = {"rounds": 120, "seeds": "0,1,2"}  # about an hour here: 12 runs of 4 nodes
# Measured here with 4 nodes of the seed model, 16 questions, on 2 busy cores (load 4-8), for time
# estimates: a run's startup (bootstrap, N model loads) plus teardown, and one round.
STARTUP_S = 30.0
ROUND_S = 2.3
# Equal training per step needs I+J informative groups in 8/0 too: about 60% of the seed model's groups
# carry an advantage, so 8 questions left 8/0 training on ~5 groups while 4/4 filled ~7.6 (measured).
# 16 questions give ~10 informative own groups; I+J = 8 are trained on in every configuration. Under
# transplant a round is I + J questions by definition (sharing_overrides sets it).
EQUAL_OVERRIDES = ("sapo.questions_per_round=16",)


def node_specs(config: str, seed: int, nodes: int, rounds: int, models: list[str], sampling: str) -> list[NodeSpec]:
    """Node k runs models[k % len(models)] with seeds that depend on (seed, k) only, never on I/J."""
    return [
        NodeSpec(
            f"node{k}",
            tuple(sharing_overrides(config, sampling) + seeded_overrides(k, seed) + [f"model.name={models[k % len(models)]}"]),
            rounds,
        )
        for k in range(nodes)
    ]


def run_configuration(config: str, seed: int, args: argparse.Namespace, models: list[str]) -> dict:
    """One swarm for one (configuration, seed); its nodes' per-round traces, or an error naming the node."""
    tag = f"{config.replace('/', '-')}-s{seed}"
    base_dir = args.dir / tag
    swarm_id = f"{args.name}-{tag}"
    timeout_s = STARTUP_S * 10 + args.rounds * args.round_timeout_s
    swarm = LocalSwarm(node_specs(config, seed, args.nodes, args.rounds, models, args.sampling), base_dir, swarm_id,
                       args.overrides, timeout_s=timeout_s)
    print(f"[{time.strftime('%H:%M:%S')}] {config} seed {seed}: {args.nodes} nodes x {args.rounds} rounds", flush=True)
    result = swarm.run(progress=lambda done: print(f"  rounds so far {sorted(done.values())}", flush=True),
                       progress_every_s=120.0)
    print_nodes(result, f"{config} seed {seed}")
    if not result.ok:
        raise LocalSwarmError(f"{config} seed {seed} did not finish cleanly (logs in {base_dir}):\n{result.failures()}")
    if not args.keep_checkpoints:
        for node in result.nodes:
            shutil.rmtree(node.data_dir / "checkpoints", ignore_errors=True)
    return {"config": config, "seed": seed, "seconds": round(result.seconds, 1), "leftovers": result.leftovers,
            "nodes": traces(result, models, seed)}


def traces(result: SwarmResult, models: list[str], seed: int) -> list[dict]:
    """Per node and round, what the summary and plot need; `model` is the configured one (node k: models[k % M])."""
    return [
        {
            "name": node.name, "model": models[index % len(models)], "model_id": node.model, "peer_id": node.peer_id,
            "data_dir": str(node.data_dir),
            **efficiency.NodeRun.from_records(seed, node.records).to_dict(),
            "questions": [r.questions for r in node.records],
            "answer_rates": [r.answer_rate for r in node.records],
            "groups_own": [r.groups_own for r in node.records],
            "groups_external": [r.groups_external for r in node.records],
            "tokens_trained": [r.tokens_trained for r in node.records],
            "rollouts_in": [r.rollouts_in for r in node.records],
            "skipped": sum(r.skipped is not None for r in node.records),
        }
        for index, node in enumerate(result.nodes)
    ]


def summarise(runs: list[dict], configs: list[str], model: str | None = None) -> list[dict]:
    """Per configuration (and model, if given): cumulative reward statistics and the gain over 8/0.

    The paired gain compares node k of seed s with node k of seed s under 8/0: both saw the same
    question stream, so the difference is the effect of sharing plus sampling noise only.
    """
    cumulative = {
        (run["config"], run["seed"], node["name"]): sum(node["rewards"])
        for run in runs for node in run["nodes"] if model is None or node["model"] == model
    }
    rows = []
    for config in configs:
        mine = {(seed, name): value for (c, seed, name), value in cumulative.items() if c == config}
        if not mine:
            continue
        seeds = sorted({seed for seed, _ in mine})
        per_seed = [statistics.mean(v for (s, _), v in mine.items() if s == seed) for seed in seeds]
        nodes = [node for run in runs if run["config"] == config for node in run["nodes"]
                 if model is None or node["model"] == model]
        rounds = sum(len(node["rewards"]) for node in nodes)
        paired = [value - cumulative[(BASELINE, seed, name)] for (seed, name), value in mine.items()
                  if (BASELINE, seed, name) in cumulative]
        rows.append({
            "config": config,
            "model": model,
            "nodes": len(mine),
            "cumulative_mean": statistics.mean(mine.values()),
            "std_over_seeds": statistics.stdev(per_seed) if len(per_seed) > 1 else None,
            "std_over_nodes": statistics.stdev(mine.values()) if len(mine) > 1 else None,
            "min_node": min(mine.values()),
            "max_node": max(mine.values()),
            "per_seed": per_seed,
            "paired_gain_mean": statistics.mean(paired) if paired else None,
            "paired_gain_sem": statistics.stdev(paired) / math.sqrt(len(paired)) if len(paired) > 1 else None,
            "paired_wins": sum(d > 0 for d in paired),
            "pairs": len(paired),
            "groups_own_per_round": sum(sum(n["groups_own"]) for n in nodes) / rounds,
            "groups_external_per_round": sum(sum(n["groups_external"]) for n in nodes) / rounds,
            "tokens_trained_per_round": sum(sum(n["tokens_trained"]) for n in nodes) / rounds,
            "skipped_steps": sum(n["skipped"] for n in nodes),
            "questions_per_round": sum(sum(n["questions"]) for n in nodes) / rounds,
            "collapses": sum(n["collapses"] for n in nodes),
            "final_answer_rate": statistics.mean(statistics.mean(n["answer_rates"][-20:]) for n in nodes),
        })
    baseline = next((row["cumulative_mean"] for row in rows if row["config"] == BASELINE), None)
    for row in rows:
        row["ratio_to_8_0"] = row["cumulative_mean"] / baseline if baseline else None
    return rows


def round_one_mismatches(runs: list[dict]) -> list[str]:
    """Nodes whose first-round reward differs between configurations. Round 1 happens before any training
    or sharing, so equal seeds must give equal questions, completions and rewards: this checks fairness."""
    first: dict[tuple[int, str], dict[str, float]] = {}
    for run in runs:
        for node in run["nodes"]:
            if node["rewards"]:
                first.setdefault((run["seed"], node["name"]), {})[run["config"]] = node["rewards"][0]
    return [f"seed {seed} {name}: {by_config}" for (seed, name), by_config in first.items()
            if max(by_config.values()) - min(by_config.values()) > 1e-9]


def plot(runs: list[dict], configs: list[str], models: list[str], title: str, path: Path) -> None:
    """Top: moving-average own reward per configuration (and model), mean over nodes and seeds, with the
    spread of the per-seed means. Bottom: cumulative reward gained over 8/0 by the same node on the same
    questions, mean over (seed, node) pairs ± one standard error: round-to-round question difficulty moves
    all configurations together, the difference shows what sharing adds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = min(len(node["rewards"]) for run in runs for node in run["nodes"])
    window = max(3, min(20, rounds // 8))
    x = range(1, rounds + 1)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=(3, 2))
    for index, config in enumerate(configs):
        for style, model in zip(("-", "--", ":", "-."), models):
            rewards = _rewards(runs, config, None if len(models) == 1 else model, rounds)
            if not rewards:
                continue
            label = config if len(models) == 1 else f"{config} {Path(model).name}"
            seeds = sorted({seed for seed, _ in rewards})
            curves = [moving_average([statistics.mean(v) for v in zip(*(r for (s, _), r in rewards.items() if s == seed))],
                                     window) for seed in seeds]
            top.plot(x, [statistics.mean(v) for v in zip(*curves)], style, color=f"C{index}", label=label)
            if len(curves) > 1:
                top.fill_between(x, [min(v) for v in zip(*curves)], [max(v) for v in zip(*curves)], color=f"C{index}",
                                 alpha=0.12, linewidth=0)
            baseline = _rewards(runs, BASELINE, None if len(models) == 1 else model, rounds)
            pairs = [list(accumulate(r)) for r in _differences(rewards, baseline)]
            if config == BASELINE or not pairs:
                continue
            mean = [statistics.mean(v) for v in zip(*pairs)]
            bottom.plot(x, mean, style, color=f"C{index}", label=label)
            if len(pairs) > 1:
                sem = [statistics.stdev(v) / math.sqrt(len(pairs)) for v in zip(*pairs)]
                bottom.fill_between(x, [m - e for m, e in zip(mean, sem)], [m + e for m, e in zip(mean, sem)],
                                    color=f"C{index}", alpha=0.15, linewidth=0)
    top.set_ylabel(f"own reward (moving average of {window})")
    top.set_title(title, fontsize=10)
    top.legend(title="I/J", fontsize=8)
    bottom.axhline(0.0, color="black", linewidth=0.8)
    bottom.set_ylabel("cumulative gain over 8/0\n(same node, same questions)")
    bottom.set_xlabel("round")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _rewards(runs: list[dict], config: str, model: str | None, rounds: int) -> dict[tuple[int, str], list[float]]:
    """(seed, node name) -> own reward per round, for one configuration (and model)."""
    return {(run["seed"], node["name"]): node["rewards"][:rounds] for run in runs if run["config"] == config
            for node in run["nodes"] if model is None or node["model"] == model}


def _differences(rewards: dict, baseline: dict) -> list[list[float]]:
    return [[a - b for a, b in zip(values, baseline[key])] for key, values in rewards.items() if key in baseline]


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("I/J", "model", "cumulative reward", "± seeds", "min..max node", "x 8/0", "paired gain",
                   "wins", "questions /round", "groups own+ext /round", "tokens /round", "skipped", "collapses", "answer rate"):
        table.add_column(column, justify="right")
    for r in rows:
        spread = f"{r['std_over_seeds']:.2f}" if r["std_over_seeds"] is not None else "—"
        ratio = f"{r['ratio_to_8_0']:.3f}" if r["ratio_to_8_0"] else "—"
        gain = "—" if r["paired_gain_mean"] is None or r["config"] == BASELINE else (
            f"{r['paired_gain_mean']:+.2f} ± {r['paired_gain_sem'] or 0:.2f}")
        wins = "—" if r["config"] == BASELINE else f"{r['paired_wins']}/{r['pairs']}"
        table.add_row(
            r["config"], Path(r["model"]).name if r["model"] else "all", f"{r['cumulative_mean']:.2f}", spread,
            f"{r['min_node']:.1f}..{r['max_node']:.1f}", ratio, gain, wins, f"{r['questions_per_round']:.1f}",
            f"{r['groups_own_per_round']:.1f}+{r['groups_external_per_round']:.1f}",
            f"{r['tokens_trained_per_round']:.0f}", str(r["skipped_steps"]), str(r["collapses"]),
            f"{r['final_answer_rate']:.2f}",
        )
    Console(width=170).print(table)


def estimate_minutes(configs: int, seeds: int, rounds: int, round_s: float) -> float:
    """Wall minutes for the whole table, runs one after another."""
    return configs * seeds * (STARTUP_S + rounds * round_s) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['rounds']} rounds, seed {QUICK['seeds']}")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seeds", help=f"comma-separated (default {DEFAULT['seeds']})")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--configs", help="I/J list (default 8/0,6/2,4/4,2/6; with --hetero 8/0,4/4)")
    parser.add_argument("--sampling", choices=("equal", "transplant"), default="equal",
                        help="equal: every node asks Q=16; transplant: a node asks I and adopts J peers' groups")
    regime = parser.add_mutually_exclusive_group()
    regime.add_argument("--hetero", action="store_true", help="half the nodes on a GPT-2 model with its own tokenizer")
    regime.add_argument("--weak", action="store_true", help="every node starts from the weak warm start (reward ~0.08)")
    regime.add_argument("--mixed", action="store_true", help="half the nodes on the seed model, half on the weak start")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for all nodes")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs", help="where node data dirs go")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--round-timeout-s", type=float, default=20.0, help="per-round allowance for the deadline")
    parser.add_argument("--keep-checkpoints", action="store_true")
    args = parser.parse_args()
    preset = QUICK if args.quick else DEFAULT
    args.rounds = args.rounds or preset["rounds"]
    seeds = [int(s) for s in (args.seeds or preset["seeds"]).split(",")]
    configs = (args.configs or ("8/0,4/4" if args.hetero else "8/0,6/2,4/4,2/6")).split(",")
    if args.nodes < 2:
        parser.error("--nodes must be at least 2 (sharing needs peers)")
    args.name = ("sapo" + ("-hetero" if args.hetero else "-mixed" if args.mixed else "")
                 + ("-transplant" if args.sampling == "transplant" else "") + (f"-{args.tag}" if args.tag else ""))
    args.dir = args.dir / args.name
    args.overrides = [*(EQUAL_OVERRIDES if args.sampling == "equal" else ()), *args.overrides]
    first = str(ensure_weak_model()) if args.weak else SEED_MODEL
    models = [first, str(ensure_gpt2_model())] if args.hetero else [first, str(ensure_weak_model())] if args.mixed else [first]
    exit_on_sigterm()
    minutes = estimate_minutes(len(configs), len(seeds), args.rounds, ROUND_S)
    print(f"{len(configs)} configurations x {len(seeds)} seeds x {args.nodes} nodes x {args.rounds} rounds: "
          f"about {minutes:.0f} min at {ROUND_S} s/round; node dirs in {args.dir}", flush=True)
    started = time.time()
    runs = [run_configuration(config, seed, args, models) for seed in seeds for config in configs]
    by_model = len(models) > 1
    rows = [row for model in (models if by_model else [None]) for row in summarise(runs, configs, model)]
    bought = gains(runs, configs, models)
    if by_model:
        rows += summarise(runs, configs)
    mismatches = round_one_mismatches(runs)
    records = {(run["config"], run["seed"], node["name"]): read_records(Path(node["data_dir"]) / "metrics.jsonl")
               for run in runs for node in run["nodes"]}
    timing = breakdown(records)
    timing["by_config"] = {config: breakdown({k: v for k, v in records.items() if k[0] == config}) for config in configs}
    title = (f"{args.nodes} nodes x {len(seeds)} seeds, {args.rounds} rounds"
             f"{' (hetero: seed + GPT-2)' if args.hetero else ' (seed + weak)' if args.mixed else ''}, "
             f"{args.sampling} sampling {' '.join(args.overrides)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(runs, configs, models, title, RESULTS / f"{args.name}.png")
    if BASELINE in configs:
        efficiency.plot(node_runs(runs, configs), title, RESULTS / f"{args.name}-compute.png")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_facts(), "nodes": args.nodes,
        "rounds": args.rounds, "seeds": seeds, "configs": configs, "models": models, "overrides": args.overrides,
        "sampling": args.sampling, "seconds": round(time.time() - started, 1), "summary": rows,
        "efficiency": {model: {name: [row.to_dict() for row in rows] for name, rows in tables.items()}
                       for model, tables in bought.items()},
        "round_one_mismatches": mismatches,
        "round_breakdown": timing, "runs": runs,
    }) + "\n")
    print_table(rows, f"{args.name}: {title} ({(time.time() - started) / 60:.1f} min)")
    for model, tables in bought.items():
        for name, group in tables.items():
            efficiency.print_table(group, f"what sharing buys against 8/0: {args.sampling} sampling, {model} nodes, {name}")
    print_breakdown(timing, "round time by phase, all runs")
    print_comparison(timing["by_config"], "mean seconds per phase by configuration")
    print("fairness: round-1 rewards " + (f"DIFFER: {mismatches}" if mismatches else
                                          "identical across configurations for every node (same questions, same samples)"))
    print(f"wrote {RESULTS / (args.name + '.json')} and {RESULTS / (args.name + '.png')}")


if __name__ == "__main__":
    main()
