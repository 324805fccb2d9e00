"""One SAPO round by model size on this machine: phase times, peak memory, sampler vs `generate`, checkpoint.

Per size (the embedded 5.5M seed, then random-init Qwen2 geometries up to Qwen2.5-0.5B's, made locally: no
hub) and mode (full fine-tune, LoRA r=16 on the attention projections), in a fresh process each (peak RSS
is per process): sample Q questions x G completions of the default task mix with the node's sampler and,
as the baseline in the same process, with plain `model.generate` (same prompts, G and limits; a random-init
model writes to the token limit, so both keep the same number of tokens); one SAPO step on I own + J
external groups of those completions (alternating rewards: a random model scores 0 everywhere) at the
micro-batch `memory.micro_batch_size: auto` plans (or `--micro-batch`); a checkpoint save. Network phases
(publish, collect) are measured by bench_gossip.py and do not grow with the model. The first step allocates
the optimizer state and is timed apart. Prints a table, writes benchmarks/results/scale.json.

Usage: python benchmarks/bench_scale.py [--sizes seed,30m,120m,0.5b] [--modes full,lora] [--tokens 24]
       [--micro-batch auto|N] [--budget-gib G] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from swarmnode.lab.measure import measure_apart

QUESTIONS, GROUP_SIZE = 8, 8


def one(size: str, mode: str, tokens: int, micro_batch: str, budget_gib: float | None) -> dict:
    """Runs inside the measured process."""
    import random
    import resource
    import tempfile
    import time

    import torch

    from swarmnode.config import MemoryConfig, OptimizerConfig, SapoConfig, load_config
    from swarmnode.lab.baselines import plain_generate
    from swarmnode.lab.models import make_model
    from swarmnode.learn.checkpoint import Checkpointer, TrainingState
    from swarmnode.learn.group import Group
    from swarmnode.learn.policy import EMBEDDED_MODEL_DIR, Policy, SamplingSettings, pick_compute_dtype
    from swarmnode.learn.sapo import SapoTrainer
    from swarmnode.learn.selection import Selection
    from swarmnode.learn.tasks import TaskSuite, format_prompt

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    torch.manual_seed(0)
    model, tokenizer = make_model(size, mode, EMBEDDED_MODEL_DIR)
    parameters = sum(p.numel() for p in model.parameters())
    device = torch.device("cpu")
    policy = Policy(model, tokenizer, size, device, pick_compute_dtype("auto", device, parameters))
    loaded = peak()
    suite = TaskSuite.of(load_config().tasks)
    prompts = [format_prompt(t.question, tokenizer) for t in suite.sample(random.Random(0), QUESTIONS, seed=1)]
    settings = SamplingSettings(max_new_tokens=tokens)

    started = time.perf_counter()
    groups = policy.sample(prompts, GROUP_SIZE, settings, torch.Generator().manual_seed(0))
    generate_s = time.perf_counter() - started
    ours_tokens = sum(len(c.completion_ids) for g in groups for c in g)
    started = time.perf_counter()
    generate_tokens = plain_generate(policy, prompts, GROUP_SIZE, settings, 0)
    baseline_s = time.perf_counter() - started

    prompt_ids = policy.encode_prompts(prompts, settings.max_prompt_tokens)
    trained = [
        Group(task=None, prompt_ids=prompt_ids[q], completion_ids=[list(c.completion_ids) for c in group],
              rewards=[float(k % 2) for k in range(GROUP_SIZE)], source="own" if q < QUESTIONS // 2 else "external",
              behaviour_logprobs=[list(c.logprobs) for c in group] if q < QUESTIONS // 2 else None)
        for q, group in enumerate(groups)
    ]
    selection = Selection(trained[: QUESTIONS // 2], trained[QUESTIONS // 2 :])
    memory = MemoryConfig(micro_batch_size=micro_batch if micro_batch == "auto" else int(micro_batch), budget_gib=budget_gib)
    trainer = SapoTrainer(
        policy, SapoConfig(kl_to_start=False), OptimizerConfig(), memory, max_new_tokens=tokens,
        max_prompt_tokens=settings.max_prompt_tokens,
    )
    started = time.perf_counter()
    trainer.step(selection)
    first_step_s = time.perf_counter() - started
    started = time.perf_counter()
    stats = trainer.step(selection)
    train_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        saved = Checkpointer(Path(directory)).save(model, trainer.optimizer, TrainingState(round=1))
        checkpoint_s, checkpoint_bytes = time.perf_counter() - started, saved.size
    plan = trainer.memory_plan
    return {
        "size": size, "mode": mode, "parameters": parameters,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "compute_dtype": str(policy.compute_dtype).removeprefix("torch."), "tokens": tokens,
        "micro_batch": trainer.micro_batch_size, "out_of_memory": stats.out_of_memory,
        "estimate_bytes": plan.estimate_bytes if plan else None, "budget_bytes": plan.budget_bytes if plan else None,
        "loaded_rss_bytes": loaded, "peak_rss_bytes": peak(), "bytes_per_parameter": peak() / parameters,
        "generate_s": generate_s, "generate_tokens_per_s": ours_tokens / generate_s,
        "baseline_generate_tokens_per_s": generate_tokens / baseline_s,
        "first_step_s": first_step_s, "train_s": train_s,
        "checkpoint_s": checkpoint_s, "checkpoint_bytes": checkpoint_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="seed,30m,120m,0.5b")
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--tokens", type=int, default=24, help="completion tokens (model.max_new_tokens)")
    parser.add_argument("--micro-batch", default="auto", help="memory.micro_batch_size: auto or a number")
    parser.add_argument("--budget-gib", type=float, default=None, help="memory.budget_gib (auto only)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(**json.loads(args.one))))
        return
    from rich.console import Console
    from rich.table import Table

    results = []
    for size in args.sizes.split(","):
        for mode in args.modes.split(","):
            spec = {"size": size, "mode": mode, "tokens": args.tokens, "micro_batch": args.micro_batch, "budget_gib": args.budget_gib}
            row = measure_apart(__file__, spec, str(ROOT), f"{size} {mode}")
            if row is None:
                continue
            results.append(row)
            print(f"{size:>5} {mode:<4} peak {row['peak_rss_bytes'] / 2**30:.2f} GiB, train {row['train_s']:.1f} s", flush=True)
    gib = 2**30
    table = Table(title=f"One SAPO round on this CPU: {QUESTIONS} questions x {GROUP_SIZE} completions x {args.tokens} tokens, "
                        f"micro-batch {args.micro_batch}" + (f" in {args.budget_gib:g} GiB" if args.budget_gib else ""))
    for column in ("model", "mode", "params", "trained", "dtype", "generate s", "tok/s ours / generate", "train s",
                   "micro-batch", "peak RSS GiB", "estimate GiB", "bytes/param", "checkpoint MB", "save s"):
        table.add_column(column, justify="right")
    for row in results:
        estimate = f"{row['estimate_bytes'] / gib:.2f}" if row["estimate_bytes"] else "—"
        table.add_row(
            row["size"], row["mode"], f"{row['parameters'] / 1e6:.1f}M", f"{row['trainable'] / 1e6:.1f}M", row["compute_dtype"],
            f"{row['generate_s']:.1f}",
            f"{row['generate_tokens_per_s']:.0f} / {row['baseline_generate_tokens_per_s']:.0f} "
            f"({row['generate_tokens_per_s'] / row['baseline_generate_tokens_per_s']:.2f}x)",
            f"{row['train_s']:.1f}", str(row["micro_batch"]), f"{row['peak_rss_bytes'] / gib:.2f}", estimate,
            f"{row['bytes_per_parameter']:.1f}", f"{row['checkpoint_bytes'] / 1e6:.0f}", f"{row['checkpoint_s']:.1f}",
        )
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1m_at_start": os.getloadavg()[0]},
        "settings": vars(args) | {"out": str(args.out), "questions": QUESTIONS, "group_size": GROUP_SIZE},
        "results": results,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
