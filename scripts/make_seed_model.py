"""Make the embedded seed policy: a byte-level BPE tokenizer trained on reasoning-gym text and a small
Qwen2-architecture model, supervised briefly on gold answers of the default task mix.

Deterministic for a given machine and library versions (fixed seeds, fixed corpus order, one thread).
Stops supervising as soon as the held-out mean reward reaches the target, so RL starts with signal
but with room to learn. Writes swarmnode/assets/seed_model/ (float32 safetensors, tokenizer, baseline.json).

The same script makes the other models the benchmarks need: a weaker warm start (--target-reward 0.08)
and another architecture with another tokenizer (--arch gpt2: GPT-2 pre-tokenizer, multi-digit tokens).
Usage: python scripts/make_seed_model.py [OUT_DIR] [--arch qwen2|gpt2] [--hidden N] [--layers N]
       [--vocab N] [--target-reward R]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from swarmnode.config import DEFAULT_FAMILIES
from swarmnode.learn.evaluation import evaluate, held_out_tasks
from swarmnode.learn.policy import EMBEDDED_MODEL_DIR, EMBEDDED_MODEL_NAME, Policy, SamplingSettings
from swarmnode.learn.tasks import ANSWER_CLOSE, ANSWER_OPEN, EXCLUDED_FAMILIES, FamilySpec, TaskSuite, format_prompt

SEED = 1234
EOS = "<|endoftext|>"
SUPERVISED_DATASET_SEED = 1
CORPUS_ITEMS_PER_DEFAULT_FAMILY = 4000
CORPUS_ITEMS_PER_OTHER_FAMILY = 40
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
MAX_STEPS = 3000
EVAL_EVERY = 50
EVAL_QUESTIONS_PER_FAMILY = 32
EVAL_SAMPLES = 4
SETTINGS = SamplingSettings(max_new_tokens=24, temperature=1.0)


def build_corpus(suite: TaskSuite) -> list[str]:
    """Default-mix prompts with gold answers, plus a little of every other family so peers' text tokenizes."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    rng = random.Random(SEED)
    lines = []
    for task in suite.sample(rng, CORPUS_ITEMS_PER_DEFAULT_FAMILY * len(suite.families), SUPERVISED_DATASET_SEED):
        lines.append(f"{task.question}\n{ANSWER_OPEN}{task.entry['answer']}{ANSWER_CLOSE}")
    for name in sorted(DATASETS):
        if name in EXCLUDED_FAMILIES or name in suite.family_names():
            continue
        try:
            dataset = reasoning_gym.create_dataset(name, size=CORPUS_ITEMS_PER_OTHER_FAMILY, seed=SEED)
            lines += [f"{item['question']}\n{ANSWER_OPEN}{item['answer']}{ANSWER_CLOSE}" for item in dataset]
        except Exception as error:  # a few generators need optional data; their text is not essential
            print(f"  skipped {name}: {type(error).__name__}")
    return lines


def train_tokenizer(corpus: list[str], arch: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with the pre-tokenizer AutoTokenizer applies to this architecture: Qwen2's (NFC,
    digits split one by one) or GPT-2's (runs of digits kept together). Training must match loading."""
    tokenizer = Tokenizer(models.BPE())
    if arch == "qwen2":
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_tokens([AddedToken(ANSWER_OPEN, normalized=False), AddedToken(ANSWER_CLOSE, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)


def reload_as_the_node_will(trained: PreTrainedTokenizerFast, out_dir: Path, corpus: list[str]):
    """Save, reload through AutoTokenizer (the node's path) and insist that nothing changed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(out_dir)
    loaded = AutoTokenizer.from_pretrained(out_dir)
    sample = corpus[:: max(1, len(corpus) // 500)]
    if trained(sample).input_ids != loaded(sample).input_ids:
        raise SystemExit("AutoTokenizer tokenizes differently from the trained tokenizer; fix the pre-tokenizer")
    return loaded


def build_model(tokenizer: PreTrainedTokenizerFast, arch: str, hidden: int, layers: int) -> PreTrainedModel:
    torch.manual_seed(SEED)
    eos = tokenizer.eos_token_id
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=max(1, hidden // 64),
            n_positions=512, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
        )
        return GPT2LMHeadModel(config)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75) // 16 * 16,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=512,
        rope_theta=10_000.0,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return Qwen2ForCausalLM(config)


def supervised_batches(policy: Policy, suite: TaskSuite, rng: random.Random):
    """Endless batches of (prompt ids, gold completion ids + EOS), loss on the completion only."""
    while True:
        tasks = suite.sample(rng, BATCH_SIZE, SUPERVISED_DATASET_SEED)
        prompts = policy.encode_prompts([format_prompt(t.question, policy.tokenizer) for t in tasks], 192)
        completions = [
            policy.encode_completion(f"{ANSWER_OPEN}{t.entry['answer']}{ANSWER_CLOSE}") + [policy.tokenizer.eos_token_id]
            for t in tasks
        ]
        yield prompts, completions


def main(out_dir: Path, arch: str, hidden: int, layers: int, vocab_size: int, target_reward: float) -> None:
    started = time.time()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    suite = TaskSuite([FamilySpec.of(family) for family in DEFAULT_FAMILIES])
    corpus = build_corpus(suite)
    tokenizer = reload_as_the_node_will(train_tokenizer(corpus, arch, vocab_size), out_dir, corpus)
    model = build_model(tokenizer, arch, hidden, layers)
    policy = Policy(model, tokenizer, out_dir.name, torch.device("cpu"), torch.float32)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"corpus {len(corpus)} lines, vocab {len(tokenizer)}, model {parameters / 1e6:.2f}M parameters")

    eval_tasks = held_out_tasks(suite, EVAL_QUESTIONS_PER_FAMILY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    batches = supervised_batches(policy, suite, random.Random(SEED))
    history = []
    result = evaluate(policy, suite, eval_tasks, SETTINGS, EVAL_SAMPLES)
    step = 0
    while result.mean_reward < target_reward and step < MAX_STEPS:
        model.train()
        for _ in range(EVAL_EVERY):
            prompts, completions = next(batches)
            logprobs, mask = policy.completion_logprobs(prompts, completions)
            loss = -(logprobs * mask).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
        result = evaluate(policy, suite, eval_tasks, SETTINGS, EVAL_SAMPLES)
        history.append({"step": step, "loss": round(loss.item(), 4), "eval_reward": round(result.mean_reward, 4)})
        print(f"step {step:5d}  loss {loss.item():.3f}  eval reward {result.mean_reward:.3f}  answers {result.answer_rate:.2f}")

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    baseline = {
        "model": EMBEDDED_MODEL_NAME if out_dir == EMBEDDED_MODEL_DIR else out_dir.name,
        "arch": arch,
        "parameters": parameters,
        "target_reward": target_reward,
        "supervised_steps": step,
        "history": history,
        "evaluation": {
            "questions": len(eval_tasks),
            "samples_per_question": EVAL_SAMPLES,
            "temperature": SETTINGS.temperature,
            "max_new_tokens": SETTINGS.max_new_tokens,
            "task_suite": suite.version,
            "mean_reward": round(result.mean_reward, 4),
            "answer_rate": round(result.answer_rate, 4),
            "per_family": {k: round(v.mean_reward, 4) for k, v in result.families.items()},
        },
        "seconds": round(time.time() - started, 1),
    }
    (out_dir / "baseline.json").write_text(json.dumps(baseline, indent=2) + "\n")
    size_mb = sum(f.stat().st_size for f in out_dir.iterdir()) / 1e6
    print(f"wrote {out_dir} ({size_mb:.1f} MB) in {baseline['seconds']} s; baseline reward {result.mean_reward:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=EMBEDDED_MODEL_DIR)
    parser.add_argument("--arch", choices=["qwen2", "gpt2"], default="qwen2")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--target-reward", type=float, default=0.2)
    args = parser.parse_args()
    main(args.out_dir.resolve(), args.arch, args.hidden, args.layers, args.vocab, args.target_reward)
