"""Sampling speed: swarmnode's group sampler vs plain `model.generate`, same model, prompts, G and limits.

Both sample (temperature 1, no top-k/top-p), stop a sequence at EOS or </answer>, and count the tokens
each sequence keeps (up to and including its stop token); tokens/s = kept tokens / wall seconds.
Prints a table and writes benchmarks/results/generation.json.
Usage: python benchmarks/bench_generation.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import Qwen2Config, Qwen2ForCausalLM

from swarmnode.config import load_config
from swarmnode.lab.baselines import plain_generate
from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.tasks import TaskSuite, format_prompt

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "generation.json"


def ours(policy: Policy, prompts: list[str], group: int, settings: SamplingSettings, seed: int) -> int:
    groups = policy.sample(prompts, group, settings, torch.Generator().manual_seed(seed))
    return sum(len(c.completion_ids) for g in groups for c in g)


def larger_random_policy(seed_policy: Policy) -> Policy:
    """A 34M-parameter Qwen2 (h512, 10 layers), untrained: it never stops early, so every row runs to the limit."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(seed_policy.tokenizer), hidden_size=512, intermediate_size=1408, num_hidden_layers=10,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=seed_policy.tokenizer.eos_token_id,
    )
    return Policy(Qwen2ForCausalLM(config).eval(), seed_policy.tokenizer, "qwen2-34m-random", seed_policy.device,
                  seed_policy.compute_dtype)


def measure(fn, policy, prompts, group, settings, repeats) -> tuple[float, float]:
    fn(policy, prompts[:2], group, settings, 0)  # warm-up
    rates, seconds = [], []
    for seed in range(repeats):
        started = time.perf_counter()
        tokens = fn(policy, prompts, group, settings, seed)
        elapsed = time.perf_counter() - started
        rates.append(tokens / elapsed)
        seconds.append(elapsed)
    return statistics.median(rates), statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config()
    suite = TaskSuite.of(config.tasks)
    seed_policy = Policy.load()
    prompts = [format_prompt(t.question, seed_policy.tokenizer) for t in suite.sample(random.Random(0), 8, seed=3)]
    cases = [
        ("seed 5.5M (embedded)", seed_policy, 8, 24),
        ("qwen2 34M (random init)", larger_random_policy(seed_policy), 8, 64),
    ]
    rows = []
    for name, policy, group, max_new in cases:
        settings = SamplingSettings(max_new_tokens=max_new)
        ours_rate, ours_s = measure(ours, policy, prompts, group, settings, args.repeats)
        base_rate, base_s = measure(plain_generate, policy, prompts, group, settings, args.repeats)
        rows.append({
            "model": name, "dtype": str(policy.compute_dtype).removeprefix("torch."), "prompts": len(prompts),
            "G": group, "max_new_tokens": max_new, "ours_tokens_per_s": round(ours_rate, 1),
            "generate_tokens_per_s": round(base_rate, 1), "ours_s": round(ours_s, 3), "generate_s": round(base_s, 3),
            "speedup": round(ours_rate / base_rate, 2),
        })
    table = Table(title=f"sampling: ours vs model.generate ({args.threads} threads, median of {args.repeats})")
    for column in ("model", "dtype", "G", "max new", "ours tok/s", "generate tok/s", "ours s", "generate s", "speed-up"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["model"], r["dtype"], str(r["G"]), str(r["max_new_tokens"]), f"{r['ours_tokens_per_s']:,.0f}",
                      f"{r['generate_tokens_per_s']:,.0f}", f"{r['ours_s']:.2f}", f"{r['generate_s']:.2f}",
                      f"{r['speedup']:.2f}x")
    Console(width=150).print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {args.threads} threads",
        "torch": torch.__version__, "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
