"""The first GPU, prepared: the sampler against `generate`, a training step's peak memory against the memory plan, and
a two-node swarm sharing the GPU, in one command meant to end within --budget-s (8 minutes: the swarm gets what the
other sections leave) on a machine with torch and nothing to download.

On a CUDA GPU, at Qwen2.5-0.5B's shape (random init, made here: no hub), in bfloat16 where the GPU has it:
- sampling: the node's sampler (Policy.sample) against plain `model.generate` (lab/baselines.py), 8 prompts x G = 8 =
  64 completions, at 128 and 512 new tokens; a random model writes to the limit, so both keep 64 x N tokens;
- training: one SAPO step (SapoTrainer, `memory.micro_batch_size: auto`) on a round's worth of groups at the lengths
  the plan assumes (8 x 8 completions of 512 tokens after 128-token prompts), full fine-tune and LoRA: its seconds and
  torch.cuda.max_memory_allocated against the plan's estimate (the first step allocates AdamW's state and is not the
  one measured);
- swarm: 20 rounds of two `swarmnode join` processes sharing the GPU, gossiping over real hivemind on 127.0.0.1
  (lab/local_swarm.py), each round's seconds by phase (metrics.jsonl). They run the embedded seed model by default
  (--swarm-model: any model.name, e.g. a Qwen2.5-0.5B-Instruct directory): its groups carry reward signal, so every
  phase runs, training included; a random-init model scores 0 everywhere and a node then skips every step.
Without CUDA, or with --tiny, the same code at a tiny shape, length and round count, so CI keeps it working
(tests/test_bench_gpu.py). Prints tables; writes benchmarks/results/gpu-<device>.json (gpu-tiny-cpu.json when tiny).

Usage: python benchmarks/bench_gpu.py [--tiny] [--budget-s 480] [--swarm-model NAME] [--dir runs/gpu-bench] [--out FILE]
On a GPU machine that has torch and no network: bash scripts/bench_gpu.sh (installs scripts/gpu_wheelhouse.py's
wheelhouse for the python that has the machine's torch, then runs this).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, by us or by the nodes we start

import argparse
import gc
import random
import re
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from rich.table import Table

from swarmnode.config import MemoryConfig, OptimizerConfig, SapoConfig, load_config
from swarmnode.lab.baselines import plain_generate
from swarmnode.lab.breakdown import breakdown, print_breakdown
from swarmnode.lab.local_swarm import LocalSwarm, NodeSpec, machine_facts, print_nodes, seeded_overrides, write_results
from swarmnode.lab.models import make_model, random_selection
from swarmnode.learn.policy import EMBEDDED_MODEL_DIR, Policy, SamplingSettings, keep_frozen_in, pick_compute_dtype
from swarmnode.learn.sapo import SapoTrainer
from swarmnode.learn.tasks import TaskSuite, format_prompt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROMPTS, GROUP_SIZE = 8, 8  # 64 completions a sampling call, as a node's default round asks
TRAIN_GROUPS = 8  # I + J of the default config
SWARM_NODES = 2
TEARDOWN_RESERVE_S = 45.0  # of the budget, kept for stopping the swarm (each node saves a checkpoint) and the report
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """What one run measures at: the GPU's real shape and lengths, or the tiny ones a CPU in CI can afford."""

    size: str  # a swarmnode.lab.models geometry
    sample_tokens: tuple[int, ...]
    train_prompt_tokens: int
    train_tokens: int
    swarm_rounds: int


GPU = Scale("0.5b", (128, 512), train_prompt_tokens=128, train_tokens=512, swarm_rounds=20)
TINY = Scale("tiny", (8, 16), train_prompt_tokens=16, train_tokens=8, swarm_rounds=3)


def timed(device: torch.device, work: Callable[[], T]) -> tuple[T, float]:
    """`work()` and its seconds, the GPU's queued kernels included."""
    synchronize(device)
    started = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_memory(device: torch.device) -> None:
    """Drop what an earlier section left, so that the next peak is the next section's alone."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def make_policy(size: str, mode: str, device: torch.device) -> Policy:
    """A random-init model of `size` as Policy.load would hold it: frozen weights in the compute dtype, on `device`."""
    torch.manual_seed(0)
    model, tokenizer = make_model(size, mode, EMBEDDED_MODEL_DIR)
    dtype = pick_compute_dtype("auto", device, sum(p.numel() for p in model.parameters()))
    keep_frozen_in(model, dtype)
    return Policy(model.to(device), tokenizer, size, device, dtype)


def sampling(policy: Policy, scale: Scale) -> dict:
    """Tokens per second of the sampler and of `generate` on the same prompts, G and limits."""
    suite = TaskSuite.of(load_config().tasks)
    prompts = [format_prompt(t.question, policy.tokenizer) for t in suite.sample(random.Random(0), PROMPTS, seed=1)]
    device = policy.device

    def ours(settings: SamplingSettings) -> int:
        groups = policy.sample(prompts, GROUP_SIZE, settings, torch.Generator(device=device).manual_seed(0))
        return sum(len(c.completion_ids) for g in groups for c in g)

    warm_up = SamplingSettings(max_new_tokens=4)  # kernels, cuBLAS handles, allocator pools: not the first timed call's
    ours(warm_up)
    plain_generate(policy, prompts, GROUP_SIZE, warm_up, 0)
    rows = []
    for max_new in scale.sample_tokens:
        settings = SamplingSettings(max_new_tokens=max_new)
        ours_tokens, ours_s = timed(device, lambda: ours(settings))
        generate_tokens, generate_s = timed(device, lambda: plain_generate(policy, prompts, GROUP_SIZE, settings, 0))
        rows.append({
            "max_new_tokens": max_new, "ours_tokens": ours_tokens, "generate_tokens": generate_tokens,
            "ours_s": ours_s, "generate_s": generate_s, "ours_tokens_per_s": ours_tokens / ours_s,
            "generate_tokens_per_s": generate_tokens / generate_s,
            "speedup": (ours_tokens / ours_s) / (generate_tokens / generate_s),
        })
    return {"model": policy.model_id, "parameters": policy.parameters, "dtype": _dtype(policy), "prompts": PROMPTS,
            "G": GROUP_SIZE, "completions": PROMPTS * GROUP_SIZE, "rows": rows}


def training(scale: Scale, mode: str, device: torch.device) -> dict:
    """One SAPO step at the planned micro-batch: seconds and peak memory against the plan's estimate."""
    fresh_memory(device)
    policy = make_policy(scale.size, mode, device)
    trainer = SapoTrainer(
        policy, SapoConfig(kl_to_start=False), OptimizerConfig(), MemoryConfig(micro_batch_size="auto"),
        max_new_tokens=scale.train_tokens, max_prompt_tokens=scale.train_prompt_tokens,
    )
    selection = random_selection(min(policy.model.config.vocab_size, len(policy.tokenizer)), scale.train_prompt_tokens,
                                 scale.train_tokens, TRAIN_GROUPS, GROUP_SIZE)
    _, first_step_s = timed(device, lambda: trainer.step(selection))  # AdamW's state is allocated here
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats, step_s = timed(device, lambda: trainer.step(selection))
    plan = trainer.memory_plan
    peak_gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "mode": mode, "parameters": policy.parameters, "trainable": policy.trainable_parameters, "dtype": _dtype(policy),
        "prompt_tokens": scale.train_prompt_tokens, "completion_tokens": scale.train_tokens,
        "rows": TRAIN_GROUPS * GROUP_SIZE, "micro_batch": trainer.micro_batch_size, "out_of_memory": stats.out_of_memory,
        "skipped": stats.skipped_reason, "first_step_s": first_step_s, "step_s": step_s,
        "peak_gpu_bytes": peak_gpu, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "estimate_bytes": plan.estimate_bytes, "estimate_fixed_bytes": plan.fixed_bytes, "budget_bytes": plan.budget_bytes,
        "peak_over_estimate": peak_gpu / plan.estimate_bytes if peak_gpu else None,
    }


def swarm(rounds: int, model: str, base_dir: Path, timeout_s: float) -> dict:
    """Two real nodes and a bootstrap on 127.0.0.1 sharing the device (the default config otherwise: 8 questions
    x 8 completions, 4 own + 4 external groups); each round's seconds by phase."""
    nodes = [NodeSpec(f"node{k}", tuple(seeded_overrides(k, seed=0)), rounds) for k in range(SWARM_NODES)]
    overrides = [f"model.name={model}", "eval.every_rounds=0"]
    print(f"swarm: {SWARM_NODES} nodes x {rounds} rounds of {model} (deadline {timeout_s:.0f} s)", flush=True)
    result = LocalSwarm(nodes, base_dir, "gpu-bench", overrides, timeout_s=timeout_s).run(
        progress=lambda done: print(f"  rounds so far {done}", flush=True), progress_every_s=60.0,
    )
    print_nodes(result, f"{SWARM_NODES} nodes sharing the device")
    measured = {node.name: node.records for node in result.nodes if len(node.records) >= 2}
    return {
        "nodes": SWARM_NODES, "rounds_requested": rounds, "model": model, "overrides": overrides,
        "seconds": result.seconds, "ok": result.ok, "timed_out": result.timed_out, "failures": result.failures(),
        "leftovers": result.leftovers,
        "per_node": [
            {
                "name": node.name, "exit": node.returncode, "model": node.model,
                "rounds": [
                    {"round": record.round, "wall_s": record.time - previous.time if previous else None,
                     "seconds": record.seconds, "peers": record.peers, "rollouts_in": record.rollouts_in,
                     "groups_external": record.groups_external, "tokens_generated": record.tokens_generated,
                     "skipped": record.skipped}
                    for previous, record in zip([None, *node.records], node.records)
                ],
            }
            for node in result.nodes
        ],
        "breakdown": breakdown(measured) if measured else None,  # rounds 2..R: the first is the warm-up
    }


def device_facts(device: torch.device) -> dict[str, Any]:
    """Which card gave the numbers (timings compare only on the same one)."""
    if device.type != "cuda":
        return {"device": "cpu"}
    properties = torch.cuda.get_device_properties(device)
    return {"device": properties.name, "memory_bytes": properties.total_memory, "cuda": torch.version.cuda,
            "bf16": torch.cuda.is_bf16_supported(), "multiprocessors": properties.multi_processor_count}


def _dtype(policy: Policy) -> str:
    return str(policy.compute_dtype).removeprefix("torch.")


def attempt(work: Callable[[], T]) -> T | dict:
    """A section's result, or what broke it: a first run on a GPU may well find a bug in one section, and the
    others' numbers are still worth the device time."""
    try:
        return work()
    except Exception as error:  # recorded, printed, and the run exits non-zero at its end
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}


def failures(report: dict) -> list[str]:
    sections = [("sampling", report["sampling"]), *(("training", row) for row in report["training"]), ("swarm", report["swarm"])]
    broken = [f"{name}: {result['error']}" for name, result in sections if "error" in result]
    if "error" not in report["swarm"] and not report["swarm"]["ok"]:
        broken.append(f"swarm: {report['swarm']['failures']}")
    return broken


def print_tables(report: dict) -> None:
    gib = 2**30
    console = Console(width=150)
    sampled = report["sampling"]
    if "rows" in sampled:
        table = Table(title=f"sampling: ours vs model.generate, {sampled['model']} ({sampled['parameters'] / 1e6:.1f}M), "
                            f"{sampled['dtype']}, {sampled['prompts']} prompts x G={sampled['G']}")
        for column in ("max new", "ours tok/s", "generate tok/s", "ours s", "generate s", "tokens ours / generate", "speed-up"):
            table.add_column(column, justify="right")
        for row in sampled["rows"]:
            table.add_row(str(row["max_new_tokens"]), f"{row['ours_tokens_per_s']:,.0f}", f"{row['generate_tokens_per_s']:,.0f}",
                          f"{row['ours_s']:.2f}", f"{row['generate_s']:.2f}", f"{row['ours_tokens']} / {row['generate_tokens']}",
                          f"{row['speedup']:.2f}x")
        console.print(table)
    table = Table(title="one SAPO step, micro-batch planned by memory.micro_batch_size: auto")
    for column in ("mode", "params (trained)", "tokens", "micro-batch", "first step s", "step s", "peak GPU GiB",
                   "estimate GiB", "peak / estimate", "peak RSS GiB"):
        table.add_column(column, justify="right")
    for row in report["training"]:
        if "error" in row:
            continue
        peak = row["peak_gpu_bytes"]
        table.add_row(
            row["mode"], f"{row['parameters'] / 1e6:.1f}M ({row['trainable'] / 1e6:.2f}M)",
            f"{row['rows']} x ({row['prompt_tokens']}+{row['completion_tokens']})", str(row["micro_batch"]),
            f"{row['first_step_s']:.2f}", f"{row['step_s']:.2f}", f"{peak / gib:.2f}" if peak else "— (no GPU)",
            f"{row['estimate_bytes'] / gib:.2f}", f"{row['peak_over_estimate']:.2f}" if peak else "—",
            f"{row['peak_rss_bytes'] / gib:.2f}",
        )
    console.print(table)
    if report["swarm"].get("breakdown"):
        print_breakdown(report["swarm"]["breakdown"], "swarm round time by phase")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on whatever device (the default without CUDA)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole run's deadline: the swarm gets what is left")
    parser.add_argument("--swarm-model", default="swarmnode-seed", help="the nodes' model.name (a model that earns rewards)")
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "gpu-bench", help="the nodes' data dirs")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/gpu-<device>.json")
    args = parser.parse_args()
    started = time.monotonic()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device.type != "cuda"
    scale = TINY if tiny else GPU
    facts = device_facts(device)
    label = f"tiny-{device.type}" if tiny else re.sub(r"[^a-z0-9]+", "-", facts["device"].lower()).strip("-")
    out = args.out or RESULTS / f"gpu-{label}.json"
    print(f"{facts['device']}: {'TINY shapes (a check of this benchmark, not a measurement)' if tiny else scale.size} "
          f"-> {out}", flush=True)

    sampled = attempt(lambda: sampling(make_policy(scale.size, "full", device), scale))
    trained = [attempt(lambda: training(scale, mode, device)) for mode in ("full", "lora")]
    fresh_memory(device)
    swarm_deadline = max(60.0, args.budget_s - (time.monotonic() - started) - TEARDOWN_RESERVE_S)
    swarmed = attempt(lambda: swarm(scale.swarm_rounds, args.swarm_model, args.dir, swarm_deadline))
    report = {
        "label": f"TINY shapes on {facts['device']}: checks this benchmark end to end; its numbers measure nothing" if tiny
                 else f"{facts['device']}, {scale.size} shape",
        "tiny": tiny, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_facts() | facts,
        "scale": asdict(scale), "sampling": sampled, "training": trained, "swarm": swarmed,
        "total_s": time.monotonic() - started, "budget_s": args.budget_s,
    }
    print_tables(report)
    write_results(out, report)
    print(f"wrote {out} ({report['total_s']:.0f} s of a {args.budget_s:.0f} s budget)")
    broken = failures(report)
    if broken:
        raise SystemExit("failed:\n" + "\n".join(broken))


if __name__ == "__main__":
    main()
