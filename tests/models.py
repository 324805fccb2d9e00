"""Small real transformers models made on the fly, for tests that need a second, different policy."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

CORPUS = [
    "State the final answer to the following arithmetic problem: 4 + 5 = <answer>9</answer>",
    "How many 1 bits are there in the binary representation of the number 12? <answer>2</answer>",
    "Solve the following multiplication: 3 * 7. Give only the result as your final answer. <answer>21</answer>",
    "Find the Greatest Common Divisor (GCD) of these numbers: 12, 18. <answer>6</answer>",
    "how many legs are there in total if you have 2 ducks, 1 cat? Answer with <answer>…</answer>.",
]


def make_tiny_gpt2(directory: Path, vocab_size: int = 300, seed: int = 0) -> Path:
    """A GPT-2-architecture model with its own byte-level BPE: another architecture, another tokenizer."""
    import torch

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(fast), n_embd=64, n_layer=2, n_head=2, n_positions=512,
        bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id,
    )
    directory.mkdir(parents=True, exist_ok=True)
    GPT2LMHeadModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
