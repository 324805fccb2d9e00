import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch
from models import make_tiny_gpt2

from swarmnode.config import LoraConfig, load_config
from swarmnode.learn import policy as policy_module
from swarmnode.learn.learner import Learner
from swarmnode.learn.policy import EMBEDDED_MODEL_DIR, DeviceError, Policy, PolicyLoadError, SamplingSettings
from swarmnode.learn.tasks import ANSWER_CLOSE, TaskSuite, format_prompt

SEED_POLICY = Policy.load(dtype="float32")
SUITE = TaskSuite.of(load_config().tasks)


class Incoming:
    """A verified peer rollout as gossip hands it to the learner, from a sender running the seed model."""

    def __init__(self, rollout) -> None:
        self.signer, self.model_id, self.rollout = "12D3KooWsender", SEED_POLICY.model_id, rollout


def prompts(n: int) -> list[str]:
    return [format_prompt(t.question, SEED_POLICY.tokenizer) for t in SUITE.sample(random.Random(0), n, seed=1)]


def test_sampler_returns_g_completions_per_prompt_that_stop_at_the_closing_tag():
    groups = SEED_POLICY.sample(prompts(3), 5, SamplingSettings(max_new_tokens=24), torch.Generator().manual_seed(0))
    assert [len(g) for g in groups] == [5, 5, 5]
    for completion in (c for g in groups for c in g):
        assert len(completion.completion_ids) == len(completion.logprobs) <= 24
        if completion.finish_reason == "stop":
            assert completion.text.endswith(ANSWER_CLOSE) and completion.text.count(ANSWER_CLOSE) == 1
        assert all(lp <= 0 for lp in completion.logprobs)


def test_sampler_log_probs_equal_a_full_forward_pass():
    batch = prompts(2)
    groups = SEED_POLICY.sample(batch, 3, SamplingSettings(max_new_tokens=12), torch.Generator().manual_seed(1))
    prompt_ids = SEED_POLICY.encode_prompts(batch, 192)
    flat = [(p, c) for p, g in zip(prompt_ids, groups) for c in g]
    logprobs, mask = SEED_POLICY.completion_logprobs([p for p, _ in flat], [list(c.completion_ids) for _, c in flat])
    for row, (_, completion) in enumerate(flat):
        recomputed = logprobs[row][mask[row]].tolist()
        assert recomputed == pytest.approx(list(completion.logprobs), abs=1e-4)


def _whole_logits_logprobs(policy: Policy, prompt_ids, completion_ids):
    """The reference computation: each row's full sequence through the whole model, log-softmax of all logits."""
    rows = []
    for prompt, completion in zip(prompt_ids, completion_ids):
        logits = policy.model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
        rows.append(torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1))
    return rows


@pytest.mark.parametrize("lora", [False, True])
def test_chunked_vocabulary_projection_gives_the_whole_logits_values_and_gradients(monkeypatch, lora):
    policy = Policy.load(dtype="float32", lora=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if lora else None)
    assert policy.chunked_logits
    monkeypatch.setattr(policy_module, "LOGIT_CHUNK_BYTES", 4 * policy.tokenizer.vocab_size * 3)  # 3 tokens a chunk
    if lora:  # adapters start at zero; move them so their gradients differ from a base-only path
        with torch.no_grad():
            for name, parameter in policy.model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.05)
    generator = torch.Generator().manual_seed(3)
    prompt_ids = [torch.randint(5, 200, (n,), generator=generator).tolist() for n in (6, 6, 9)]
    completion_ids = [torch.randint(5, 200, (n,), generator=generator).tolist() for n in (5, 2, 7)]
    trainable = [p for p in policy.model.parameters() if p.requires_grad]

    chunked, mask = policy.completion_logprobs(prompt_ids, completion_ids)
    chunked_grads = torch.autograd.grad(chunked.sum(), trainable)
    whole = _whole_logits_logprobs(policy, prompt_ids, completion_ids)
    whole_grads = torch.autograd.grad(sum(row.sum() for row in whole), trainable)

    for row, expected in enumerate(whole):
        assert chunked[row][mask[row]].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(chunked_grads, whole_grads))  # float32 sums in another order


def test_a_model_that_scales_logits_after_its_head_keeps_the_whole_model_path():
    model = Policy.load(dtype="float32").model
    forward = model.forward

    def scaled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 0.5
        return out

    model.forward = scaled
    policy = Policy(model, SEED_POLICY.tokenizer, "scaled", torch.device("cpu"))
    assert not policy.chunked_logits
    prompt_ids, completion_ids = [[5, 6, 7, 8], [5, 6, 7, 8]], [[9, 10, 11], [12]]
    logprobs, mask = policy.completion_logprobs(prompt_ids, completion_ids)
    for row, expected in enumerate(_whole_logits_logprobs(policy, prompt_ids, completion_ids)):
        assert logprobs[row][mask[row]].tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_same_seed_same_samples():
    settings = SamplingSettings(max_new_tokens=10)
    first = SEED_POLICY.sample(prompts(2), 4, settings, torch.Generator().manual_seed(7))
    second = SEED_POLICY.sample(prompts(2), 4, settings, torch.Generator().manual_seed(7))
    assert first == second


def test_a_local_directory_loads_offline_through_the_hub_code_path(tmp_path):
    local = tmp_path / "my-model"
    shutil.copytree(EMBEDDED_MODEL_DIR, local)
    code = (
        "from swarmnode.learn.policy import Policy; p = Policy.load(%r, dtype='float32'); "
        "print(p.model_id, type(p.model).__name__)" % str(local)
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["my-model", "Qwen2ForCausalLM"]


def test_an_unreachable_hub_id_fails_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PolicyLoadError, match="local directory"):
        Policy.load("no-such-org/no-such-model")


def test_rollouts_from_another_model_and_tokenizer_are_retokenized_and_trained_on(tmp_path):
    config = load_config(None, ["sapo.questions_per_round=4", "sapo.completions_per_question=6",
                                "model.max_new_tokens=16", "sapo.local_groups=4", "sapo.external_groups=4",
                                "sapo.min_own_groups=0"])
    sender = Learner.of(config, SEED_POLICY, SUITE, seed=1, data_seed=2)
    other = Policy.load(str(make_tiny_gpt2(tmp_path / "gpt2")), dtype="float32")
    assert other.tokenizer.get_vocab() != SEED_POLICY.tokenizer.get_vocab()
    receiver = Learner.of(config, other, SUITE, seed=3, data_seed=4)

    for _ in range(30):  # a few rounds until one group has reward variance
        shared = receiver.external_groups([Incoming(r) for r in sender.sample_round().rollouts]).groups
        if any(g.informative for g in shared):
            break
    else:
        pytest.fail("no informative group in 30 rounds of the sender")
    group = next(g for g in shared if g.informative)
    for ids in group.completion_ids:
        text = other.tokenizer.decode(ids)
        assert other.tokenizer(text, add_special_tokens=False).input_ids == ids
    assert group.sender_logprobs is None  # another model: its log-probs mean nothing to us
    before = [p.detach().clone() for p in other.model.parameters()]
    stats = receiver.train([], shared)
    assert stats.external_groups >= 1 and stats.external_tokens > 0 and stats.own_groups == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, other.model.parameters()))


@pytest.mark.parametrize("scope, trained", [("sampled", False), ("suite", True)])
def test_peers_groups_of_a_family_we_do_not_sample_are_used_only_when_asked(scope, trained):
    families = [f.model_dump() for f in load_config().tasks.families]
    mine, theirs = families[0]["name"], families[1]["name"]

    def learner_sampling_only(name: str, seed: int, *extra: str) -> Learner:
        mix = [{**f, "weight": 1.0 if f["name"] == name else 0.0} for f in families]
        config = load_config(None, ["sapo.questions_per_round=4", "sapo.completions_per_question=4",
                                    "model.max_new_tokens=8", f"tasks.families={json.dumps(mix)}", *extra])
        return Learner.of(config, SEED_POLICY, TaskSuite.of(config.tasks), seed, seed + 1)

    sender = learner_sampling_only(theirs, 1)
    receiver = learner_sampling_only(mine, 3, f"intake.external_families={scope}")
    rollouts = sender.sample_round().rollouts
    assert {r.task.family for r in rollouts} == {theirs}
    external = receiver.external_groups([Incoming(r) for r in rollouts])
    assert len(external.groups) == (len(rollouts) if trained else 0)
    assert external.rejected.get("not_sampled_here", 0) == (0 if trained else len(rollouts))
    assert not external.offenders


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="needs a machine without a GPU")
def test_a_device_this_torch_cannot_use_is_one_clear_error_not_a_silent_cpu():
    with pytest.raises(DeviceError, match=r"model.device='cuda' but (this torch is a CPU-only build|torch sees no CUDA GPU)"):
        Policy.load(device="cuda")
    with pytest.raises(DeviceError, match=r"model.device='mps' but MPS is not available here"):
        Policy.load(device="mps")
    policy = Policy.load(device="cpu", dtype="bfloat16")
    assert (policy.device.type, policy.compute_dtype) == ("cpu", torch.bfloat16)
    assert policy.parameters == policy.trainable_parameters > 5_000_000
