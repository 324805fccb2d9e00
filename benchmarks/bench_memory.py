"""Peak memory and time of SAPO training steps by model size, full fine-tune and LoRA, on this machine.

Each configuration runs in a fresh process (peak RSS is per process): a random-init Qwen2-geometry model
made locally (no hub), the node's own SapoTrainer, and one round's worth of groups (I+J = 8 groups of G = 8
completions of `--tokens` tokens after a 128-token prompt). The first step allocates the optimizer state and
is not timed. `--code DIR` runs another checkout's swarmnode (e.g. a worktree of an older commit) for a
before/after comparison in one table. Writes benchmarks/results/memory.json.

Usage: python benchmarks/bench_memory.py [--sizes seed,30m,120m,0.5b] [--modes full,lora] [--tokens 24]
       [--micro-batch 32] [--steps 2] [--code DIR ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

from swarmnode.lab.measure import measure_apart
from swarmnode.lab.models import make_model

ROOT = Path(__file__).resolve().parents[1]
PROMPT_TOKENS = 128
GROUPS, GROUP_SIZE = 8, 8


def one(size: str, mode: str, tokens: int, micro_batch: str, steps: int, budget_gib: float | None = None) -> dict:
    """Runs inside the measured process."""
    import resource
    import time

    import torch

    from swarmnode.config import MemoryConfig, OptimizerConfig, SapoConfig
    from swarmnode.learn.group import Group
    from swarmnode.learn.policy import EMBEDDED_MODEL_DIR, Policy, pick_compute_dtype
    from swarmnode.learn.sapo import SapoTrainer
    from swarmnode.learn.selection import Selection

    torch.manual_seed(0)
    model, tokenizer = make_model(size, mode, EMBEDDED_MODEL_DIR)
    parameters = sum(p.numel() for p in model.parameters())
    device = torch.device("cpu")
    policy = Policy(model, tokenizer, size, device, pick_compute_dtype("auto", device, parameters))
    if micro_batch == "auto":  # planned (this code only: older checkouts take a number)
        memory = MemoryConfig(micro_batch_size="auto", budget_gib=budget_gib)
        trainer = SapoTrainer(
            policy, SapoConfig(kl_to_start=False), OptimizerConfig(), memory, max_new_tokens=tokens,
            max_prompt_tokens=PROMPT_TOKENS,
        )
    else:
        memory = MemoryConfig(micro_batch_size=int(micro_batch))
        trainer = SapoTrainer(policy, SapoConfig(kl_to_start=False), OptimizerConfig(), memory, max_new_tokens=tokens)
    vocabulary = model.config.vocab_size if hasattr(model, "config") else 4096
    generator = torch.Generator().manual_seed(0)

    def ids(count: int) -> list[int]:
        return torch.randint(10, min(vocabulary, len(tokenizer)), (count,), generator=generator).tolist()

    groups = [
        Group(task=None, prompt_ids=ids(PROMPT_TOKENS), completion_ids=[ids(tokens) for _ in range(GROUP_SIZE)],
              rewards=[float(k % 2) for k in range(GROUP_SIZE)], source="own" if g < GROUPS // 2 else "external")
        for g in range(GROUPS)
    ]
    selection = Selection(groups[: GROUPS // 2], groups[GROUPS // 2 :])
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # model made: what the steps add comes on top
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        trainer.step(selection)
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "size": size, "mode": mode, "parameters": parameters,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "compute_dtype": str(policy.compute_dtype).removeprefix("torch."), "tokens": tokens, "micro_batch": trainer.micro_batch_size,
        "peak_rss_bytes": peak, "loaded_rss_bytes": loaded, "bytes_per_parameter": peak / parameters,
        "step_s": min(seconds[1:]) if len(seconds) > 1 else seconds[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="seed,30m,120m,0.5b")
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--tokens", type=int, default=24, help="completion tokens (model.max_new_tokens)")
    parser.add_argument("--micro-batch", default="32", help="memory.micro_batch_size: a number, or auto (this code only)")
    parser.add_argument("--budget-gib", type=float, default=None, help="memory.budget_gib, with --micro-batch auto")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--code", action="append", default=[], help="another checkout to run (repeatable); default this one")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(**json.loads(args.one))))
        return
    from rich.console import Console
    from rich.table import Table

    results = []
    for code in args.code or [str(ROOT)]:
        commit = subprocess.run(["git", "-C", code, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
        for size in args.sizes.split(","):
            for mode in args.modes.split(","):
                spec = {"size": size, "mode": mode, "tokens": args.tokens, "micro_batch": args.micro_batch, "steps": args.steps,
                        "budget_gib": args.budget_gib}
                measured = measure_apart(__file__, spec, code, f"{commit} {size} {mode}")
                if measured is None:
                    continue
                row = {"code": commit, **measured}
                results.append(row)
                print(f"{commit} {size:>5} {mode:<4} peak {row['peak_rss_bytes'] / 2**30:.2f} GiB, step {row['step_s']:.1f} s", flush=True)
    table = Table(title=f"SAPO step on this CPU: {GROUPS} groups x {GROUP_SIZE} completions x {args.tokens} tokens, "
                        f"{PROMPT_TOKENS}-token prompts, micro-batch {args.micro_batch}")
    for column in ("code", "model", "mode", "parameters", "trainable", "dtype", "peak RSS GiB", "of it at load", "bytes/param", "step s"):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(row["code"], row["size"], row["mode"], f"{row['parameters'] / 1e6:.1f}M", f"{row['trainable'] / 1e6:.1f}M",
                      row["compute_dtype"], f"{row['peak_rss_bytes'] / 2**30:.2f}", f"{row.get('loaded_rss_bytes', 0) / 2**30:.2f}",
                      f"{row['bytes_per_parameter']:.1f}", f"{row['step_s']:.1f}")
    Console(width=150).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1m_at_start": os.getloadavg()[0]},
        "results": results,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
