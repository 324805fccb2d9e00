"""Memory: what a training step and a sampled row will take, and the largest batches of each that fit the budget.

An estimate from the model's geometry, made before the first step, so that a 0.5B model on a 16 GB laptop
starts at a micro-batch that fits rather than at one the allocator refuses (`memory.micro_batch_size: auto`),
and samples, for its rounds and its held-out evaluation, no more rows at once than fit beside what training
holds. It need not be exact: an allocation failure still halves the micro-batch and redoes the update
(sapo.SapoTrainer), or halves the rows and redoes the chunk (policy.Policy.sample). How close it is is measured
by benchmarks/bench_scale.py and bench_node_memory.py, against the peak RSS of real steps and of a whole node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from swarmnode.learn.policy import LOGIT_CHUNK_BYTES

AUTO_MAX_MICRO_BATCH = 32  # the fixed default before `auto`; larger gains no speed on a CPU and little on a GPU
RUNTIME_BYTES = 2**30  # Python, torch, transformers, hivemind, task generators: a seed node runs at 0.6-0.9 GB RSS
BUDGET_SHARE_OF_FREE = 0.8  # of the memory free at start; the rest for the DHT daemon, the OS and other work
ADAM_STATE_BYTES = 8  # two float32 moments per trained parameter
# float32 [vocabulary] vectors a decode step holds per row: the model's logits, their float32 copy, the scaled
# logits, the log-softmax, the probabilities drawn from, and one for the nucleus (top_p) or the argmax
SAMPLING_LOGIT_COPIES = 6


@dataclass(frozen=True)
class MemoryPlan:
    """A step's estimated peak at the chosen micro-batch, against the budget it was chosen for."""

    micro_batch_size: int
    estimate_bytes: int
    budget_bytes: int
    fixed_bytes: int  # weights, gradients, optimizer state and runtime, whatever the micro-batch

    @property
    def fits(self) -> bool:
        return self.estimate_bytes <= self.budget_bytes

    def describe(self) -> str:
        gib = 2**30
        verdict = "" if self.fits else " (over budget even at 1: lower model.max_new_tokens or use LoRA)"
        return (
            f"micro-batch {self.micro_batch_size}: ~{self.estimate_bytes / gib:.1f} GiB of a "
            f"{self.budget_bytes / gib:.1f} GiB budget{verdict}"
        )


def budget_bytes(device: torch.device, configured_gib: float | None) -> int:
    """`memory.budget_gib`, or what this process holds plus a share of what is free now: on a GPU its
    free memory, elsewhere the machine's available RAM."""
    if configured_gib is not None:
        return int(configured_gib * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return torch.cuda.memory_allocated(device) + int(free * BUDGET_SHARE_OF_FREE)
    held = psutil.Process().memory_info().rss
    return held + int(psutil.virtual_memory().available * BUDGET_SHARE_OF_FREE)


@dataclass(frozen=True)
class SamplingPlan:
    """How many rows are sampled at once (whole groups of them), and what one row is estimated to take."""

    rows: int
    row_bytes: int
    budget_bytes: int
    fixed_bytes: int

    def describe(self) -> str:
        gib = 2**30
        return (
            f"sampling up to {self.rows} rows at once: ~{self.row_bytes / 2**20:.1f} MiB each beside "
            f"{self.fixed_bytes / gib:.1f} GiB held, in a {self.budget_bytes / gib:.1f} GiB budget"
        )


def fixed_bytes(model: torch.nn.Module, *, reference_bytes: int = 0, runtime_bytes: int = RUNTIME_BYTES) -> int:
    """What the node holds whatever it is doing: weights, a reference copy, the runtime and, for the trained
    weights, gradients and AdamW's moments (the moments outlive the step; sampling counts them too)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return weights + trained * (4 + ADAM_STATE_BYTES) + reference_bytes + runtime_bytes


def step_bytes(
    model: torch.nn.Module,
    micro_batch: int,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    group_size: int,
    compute_dtype: torch.dtype,
    chunked_logits: bool = True,
) -> int:
    """Bytes one training step's micro-batch adds to the fixed ones, at the configured maximum lengths.

    Per token and layer, a step's peak holds about 16 hidden-size and 9 MLP-size values: what a decoder
    block keeps for the backward pass (norm inputs and outputs in float32, q/k/v with the grouped heads
    repeated, the attention output; gate, up, the activation, their product) and the backward's own
    temporaries. Measured, not derived: benchmarks/bench_memory.py on the 120M and 0.5B Qwen2 shapes in
    float32, full fine-tune; with most weights frozen (LoRA) two thirds of that, also measured: a frozen
    layer's weight needs no gradient, so its input is not kept for one. Rows of a group share their prompt's
    pass. The vocabulary projection holds one chunk of logits, its softmax and their gradient, or, for a model
    whose logits are not head(body) (policy.chunked_logits false), all of the micro-batch's."""
    config = model.config
    hidden, layers, intermediate = _geometry(config)
    parameters = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = micro_batch * completion_tokens + math.ceil(micro_batch / group_size) * prompt_tokens
    element = _element_bytes(compute_dtype)
    activations = tokens * layers * (16 * hidden + 9 * intermediate) * element
    if trained < parameters / 2:
        activations = activations * 2 // 3
    logits = LOGIT_CHUNK_BYTES if chunked_logits else micro_batch * completion_tokens * config.vocab_size * 4
    return activations + 3 * logits


def plan_micro_batch(
    model: torch.nn.Module, budget: int, fixed: int, largest: int = AUTO_MAX_MICRO_BATCH, **estimate: Any
) -> MemoryPlan:
    """The largest power of two up to `largest` whose estimate (`fixed` plus `step_bytes` with `estimate`) fits
    `budget`; 1 if none does."""
    candidate = 1 << (max(largest, 1).bit_length() - 1)
    while True:
        total = fixed + step_bytes(model, candidate, **estimate)
        if total <= budget or candidate == 1:
            return MemoryPlan(candidate, total, budget, fixed)
        candidate //= 2


def sample_row_bytes(model: torch.nn.Module, *, prompt_tokens: int, completion_tokens: int, compute_dtype: torch.dtype) -> int:
    """The peak one sampled row adds, at the configured maximum lengths, counted as a group of one (evaluation's
    greedy rows; a group of G shares its prompt's pass): the larger of its prompt's pass (one layer's
    activations at a time, no gradients, the attention weights in float32, the prompt's keys and values) and
    the last decode step (keys and values of every layer for prompt and completion, SAMPLING_LOGIT_COPIES
    float32 vectors of the vocabulary). At Qwen2.5-0.5B's shape in float32 that is 21 MB at a 192-token prompt,
    the pass; 9 MB per row at the last step, of which 3.6 MB are the 151,936-token vocabulary's logits."""
    config = model.config
    hidden, layers, intermediate = _geometry(config)
    heads = _first(config, "num_attention_heads", "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    element = _element_bytes(compute_dtype)
    kv_per_token = layers * 2 * kv_heads * head_dim * element
    prompt_pass = prompt_tokens * ((4 * hidden + 3 * intermediate) * element + kv_per_token) + heads * prompt_tokens**2 * 4
    last_step = (prompt_tokens + completion_tokens) * kv_per_token + SAMPLING_LOGIT_COPIES * config.vocab_size * 4
    return max(prompt_pass, last_step)


def plan_sampling(model: torch.nn.Module, budget: int, fixed: int, **estimate: Any) -> SamplingPlan:
    """As many rows at once as fit `budget` beside `fixed` (`sample_row_bytes` with `estimate` each); at least
    one. Where everything fits, a round samples all its rows in one batch, as it did before there was a plan."""
    row = sample_row_bytes(model, **estimate)
    return SamplingPlan(max(1, (budget - fixed) // row), row, budget, fixed)


def _geometry(config: object) -> tuple[int, int, int]:
    """(hidden size, layers, MLP size), under the names the common architectures give them."""
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return hidden, layers, intermediate


def _element_bytes(compute_dtype: torch.dtype) -> int:
    return 4 if compute_dtype == torch.float32 else 2


def _first(config: object, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"model config has none of {', '.join(names)}: cannot estimate its memory")
