"""Memory: the training micro-batch `auto` plans and the rows sampled at once fit the budget they are given, and a
node that runs out of memory anyway halves its micro-batch and goes on, on a real CPU allocator failure (an
address-space limit, tests/oom_probe.py); when not even one row fits it skips the step. Never dies. Sampling
that runs out halves its rows and redoes the chunk, drawing what the smaller chunk would have drawn."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from swarmnode.config import MemoryConfig, OptimizerConfig, SapoConfig
from swarmnode.learn.memory import fixed_bytes, plan_micro_batch, plan_sampling, sample_row_bytes, step_bytes
from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.sapo import SapoTrainer

PROBE = Path(__file__).resolve().parent / "oom_probe.py"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_allocation_failure_halves_the_micro_batch_and_when_one_row_does_not_fit_the_step_is_skipped():
    # both probes at once: each is a process of its own (the limit is per process)
    probes = {
        name: subprocess.Popen([sys.executable, str(PROBE), str(micro_batch), str(headroom_mib)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, micro_batch, headroom_mib in (("halves", 16, 500), ("skips", 4, 1))
    }
    stats = {}
    try:
        for name, probe in probes.items():
            stdout, stderr = probe.communicate(timeout=300)
            assert probe.returncode == 0, stderr[-2000:]
            stats[name] = json.loads(stdout.strip().splitlines()[-1])
    finally:  # a probe whose back-off never ends (a mutant, a regression) must not outlive the test
        for probe in probes.values():
            probe.kill()
            probe.wait()
    halves, skips = stats["halves"], stats["skips"]
    assert halves["out_of_memory"] >= 1 and halves["micro_batch_size"] < 16
    assert halves["skipped_reason"] is None and halves["updates"] == 1 and halves["weights_changed"]
    assert skips["micro_batch_size"] == 1 and skips["out_of_memory"] >= 2
    assert "out of memory with a micro-batch of 1" in skips["skipped_reason"] and not skips["weights_changed"]


QWEN_05B_SHAPE = Qwen2Config(
    hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
    vocab_size=151_936, tie_word_embeddings=True,
)
LENGTHS = {"prompt_tokens": 192, "completion_tokens": 24, "group_size": 8, "compute_dtype": torch.float32}


@pytest.fixture(scope="module")
def half_billion() -> torch.nn.Module:
    with torch.device("meta"):  # the geometry and parameter count, without 2 GB of weights
        return Qwen2ForCausalLM(QWEN_05B_SHAPE)


def test_auto_plans_the_largest_micro_batch_that_fits_and_says_when_none_does(half_billion):
    gib = 2**30
    fixed = fixed_bytes(half_billion)
    roomy, tight = (plan_micro_batch(half_billion, budget * gib, fixed, **LENGTHS) for budget in (64, 10))
    assert roomy.micro_batch_size == 32 and roomy.fits
    assert 1 < tight.micro_batch_size < 32 and tight.fits and tight.estimate_bytes <= 10 * gib
    assert fixed + step_bytes(half_billion, 2 * tight.micro_batch_size, **LENGTHS) > 10 * gib  # the next power of two
    hopeless = plan_micro_batch(half_billion, 4 * gib, fixed, **LENGTHS)  # weights, gradients and AdamW alone are 8 GB
    assert hopeless.micro_batch_size == 1 and not hopeless.fits and "use LoRA" in hopeless.describe()


def test_a_frozen_base_costs_its_weights_only(half_billion):
    full = fixed_bytes(half_billion)
    half_billion.requires_grad_(False)
    try:
        frozen = fixed_bytes(half_billion)
    finally:
        half_billion.requires_grad_(True)
    parameters = sum(p.numel() for p in half_billion.parameters())
    assert full - frozen == parameters * (4 + 8)  # float32 gradients and two AdamW moments per trained weight


SAMPLING = {"prompt_tokens": 192, "completion_tokens": 24, "compute_dtype": torch.float32}


def test_sampling_plans_as_many_rows_as_fit_beside_what_training_holds(half_billion):
    mib = 2**20
    row = sample_row_bytes(half_billion, **SAMPLING)
    assert 19 * mib < row < 21 * mib  # a 192-token prompt's pass at the 0.5B shape, more than its 9 MB last step
    long_answers = sample_row_bytes(half_billion, **{**SAMPLING, "completion_tokens": 1024})
    vocabulary = 151_936 * 4 * 6  # the logits of a decode step, a few float32 copies of the vocabulary per row
    assert long_answers == (192 + 1024) * 24 * 2 * 2 * 64 * 4 + vocabulary  # every layer's keys and values
    fixed = fixed_bytes(half_billion)
    plan = plan_sampling(half_billion, fixed + 40 * row + row // 2, fixed, **SAMPLING)
    assert plan.rows == 40 and "40 rows" in plan.describe()
    assert plan_sampling(half_billion, fixed // 2, fixed, **SAMPLING).rows == 1  # never none


def sampler(rows: int | None) -> Policy:
    policy = Policy.load("swarmnode-seed", threads=1)
    policy.sample_rows = rows
    return policy


PROMPTS = [f"What is {a} + {a + 1}? Answer with <answer>…</answer>." for a in range(5)]
SETTINGS = SamplingSettings(max_new_tokens=6)


def test_sampling_decodes_whole_groups_of_at_most_the_planned_rows_at_once(monkeypatch):
    policy = sampler(rows=9)  # two groups of 4 fit, a third would not
    decoded: list[int] = []
    sample = policy._sample

    def counting(prompts, *args):
        decoded.append(len(prompts))
        return sample(prompts, *args)

    monkeypatch.setattr(policy, "_sample", counting)
    groups = policy.sample(PROMPTS, 4, SETTINGS, torch.Generator().manual_seed(0))
    assert decoded == [2, 2, 1]
    assert [len(group) for group in groups] == [4] * 5


def test_an_allocation_failure_while_sampling_halves_the_rows_and_redoes_the_chunk_as_planned_from_the_start(monkeypatch):
    failing = sampler(rows=8)
    sample = failing._sample

    def refusing_four(prompts, *args):
        drawn = sample(prompts, *args)  # the failure comes after the chunk has drawn from the generator
        if len(prompts) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return drawn

    monkeypatch.setattr(failing, "_sample", refusing_four)
    after_failure = failing.sample(PROMPTS, 2, SETTINGS, torch.Generator().manual_seed(0))
    assert failing.sample_rows == 4
    planned = sampler(rows=4).sample(PROMPTS, 2, SETTINGS, torch.Generator().manual_seed(0))
    assert after_failure == planned


def test_the_vocabulary_projection_is_never_handed_a_strided_view():
    """A [rows, 1, hidden] view sliced out of the prompt's hidden states sends torch's CPU bfloat16 linear down a
    path that copies the projection once per row (8.7 GB for 32 prompts at Qwen2.5-0.5B's vocabulary, before
    the fix): sampling's prompt pass, and training's where the logits are not head(trunk), hand it whole rows."""
    policy = Policy.load("swarmnode-seed", dtype="bfloat16", threads=1)
    inputs: list[bool] = []
    head = policy.model.get_output_embeddings()
    head.register_forward_pre_hook(lambda module, args: inputs.append(args[0].is_contiguous()))
    policy.sample(PROMPTS, 2, SETTINGS, torch.Generator().manual_seed(0))
    policy.chunked_logits = False
    policy.completion_logprobs([[5, 6, 7], [5, 6, 7], [8, 9]], [[10, 11], [12], [13, 14, 15]])
    assert len(inputs) >= 2 and all(inputs)  # the prompt pass, its decode steps, the training pass


def test_sampling_raises_what_is_not_an_allocation_failure_and_a_group_that_alone_does_not_fit(monkeypatch):
    policy = sampler(rows=None)
    monkeypatch.setattr(policy, "_sample", lambda *args: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        policy.sample(PROMPTS, 2, SETTINGS)
    assert policy.sample_rows is None
    monkeypatch.setattr(policy, "_sample", lambda *args: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        policy.sample(PROMPTS[:1], 2, SETTINGS)


def test_after_an_allocation_failure_the_failed_attempts_gradients_are_freed_before_the_retry():
    """The retry with half the micro-batch starts with no gradient tensors at all (set to None, not kept as
    zeros): memory is what failed, and a model's worth of zeroed gradients would stay allocated."""
    policy = Policy.load("swarmnode-seed", threads=1)
    trainer = SapoTrainer(policy, SapoConfig(kl_to_start=False), OptimizerConfig(), MemoryConfig(micro_batch_size=8),
                          max_new_tokens=8)
    parameters = [p for p in policy.model.parameters() if p.requires_grad]
    seen_on_retry: list[list[torch.Tensor | None]] = []

    def work() -> str:
        if not seen_on_retry:
            seen_on_retry.append([])
            sum(p.sum() for p in parameters).backward()  # a failed attempt's partial gradients
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        seen_on_retry[-1] = [p.grad for p in parameters]
        return "done"

    assert trainer._with_backoff(work) == "done"
    assert trainer.micro_batch_size == 4
    assert all(grad is None for grad in seen_on_retry[-1])


@pytest.mark.parametrize("device, releases", [("cuda", True), ("cpu", False), ("mps", False)])
def test_after_an_allocation_failure_on_a_gpu_the_allocators_cache_is_released_before_the_retry(
    monkeypatch, device, releases
):
    """On CUDA the failed attempt's blocks stay in the caching allocator until released: the retry needs them back.
    (Checked through the call the GPU path makes, since this machine has no GPU: other devices make none.)"""
    policy = Policy.load("swarmnode-seed", threads=1)
    trainer = SapoTrainer(policy, SapoConfig(kl_to_start=False), OptimizerConfig(), MemoryConfig(micro_batch_size=8),
                          max_new_tokens=8)
    monkeypatch.setattr(policy, "device", torch.device(device))
    released: list[str] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: released.append("released"))
    failures = iter([True, False])

    def work() -> str:
        if next(failures):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "done"

    assert trainer._with_backoff(work) == "done"
    assert released == (["released"] if releases else [])
