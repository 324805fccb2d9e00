"""The models benchmarks use besides the embedded seed: a weaker warm start and a GPT-2-architecture partner
(both made once by scripts/make_seed_model.py, deterministic) and random-init Qwen2 models of real geometries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swarmnode.learn.selection import Selection

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the lab runs from one
MODELS = ROOT / "benchmarks" / ".models"
WEAK_MODEL = MODELS / "seed-weak"
GPT2_MODEL = MODELS / "seed-gpt2"
# Qwen2 geometries: (hidden, layers, heads, kv heads, intermediate, vocabulary); "seed" is the embedded model.
GEOMETRIES = {
    "tiny": (64, 2, 4, 2, 128, 4096),  # the seed tokenizer's vocabulary: CI runs the GPU benchmark's code path with it
    "30m": (512, 8, 8, 2, 1536, 32_000),
    "120m": (768, 12, 12, 4, 2048, 50_000),
    "0.5b": (896, 24, 14, 2, 4864, 151_936),  # Qwen2.5-0.5B's
}
LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def ensure_weak_model() -> Path:
    """The weaker warm start: the seed recipe stopped at a held-out reward of 0.08 (deterministic)."""
    if not (WEAK_MODEL / "model.safetensors").exists():
        print(f"making the weak warm-start model in {WEAK_MODEL} (a few minutes, once)")
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_seed_model.py"), str(WEAK_MODEL), "--target-reward", "0.08"],
            check=True,
        )
    return WEAK_MODEL


def ensure_gpt2_model() -> Path:
    """The heterogeneous partner: GPT-2 architecture, its own 3000-token tokenizer (deterministic, minutes)."""
    if not (GPT2_MODEL / "model.safetensors").exists():
        print(f"making the GPT-2 seed model in {GPT2_MODEL} (a few minutes, once)", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_seed_model.py"), str(GPT2_MODEL), "--arch", "gpt2",
             "--hidden", "256", "--layers", "6", "--vocab", "3000"],
            check=True,
        )
    return GPT2_MODEL


def make_model(size: str, mode: str, tokenizer_dir: Path):
    """(model, tokenizer): the embedded seed, or a random-init Qwen2 of `size`'s geometry; with LoRA if asked."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from swarmnode.config import LoraConfig
    from swarmnode.learn.policy import Policy, _with_lora

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if size == "seed":
        model = Policy.load().model
    else:
        hidden, layers, heads, kv_heads, intermediate, vocabulary = GEOMETRIES[size]
        model = Qwen2ForCausalLM(Qwen2Config(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
            intermediate_size=intermediate, vocab_size=vocabulary, tie_word_embeddings=True,
            max_position_embeddings=2048,
        ))
    return (_with_lora(model, LoraConfig(**LORA)) if mode == "lora" else model), tokenizer


def random_selection(
    vocabulary: int, prompt_tokens: int, completion_tokens: int, groups: int = 8, group_size: int = 8
) -> Selection:
    """A round's worth of groups of random token ids at exactly the given lengths (half own, half external,
    alternating rewards): a training step at the lengths the memory plan assumes, whatever the model says."""
    import torch

    from swarmnode.learn.group import Group
    from swarmnode.learn.selection import Selection

    generator = torch.Generator().manual_seed(0)

    def ids(count: int) -> list[int]:
        return torch.randint(10, vocabulary, (count,), generator=generator).tolist()

    made = [
        Group(task=None, prompt_ids=ids(prompt_tokens), completion_ids=[ids(completion_tokens) for _ in range(group_size)],
              rewards=[float(k % 2) for k in range(group_size)], source="own" if g < groups // 2 else "external")
        for g in range(groups)
    ]
    return Selection(made[: groups // 2], made[groups // 2 :])
