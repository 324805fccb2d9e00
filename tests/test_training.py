"""What training does and shows: the clip acts once a round takes more than one update, KL to the start
and the importance weights are measured, the behaviour log-probs are the sampler's, prompts are encoded
as the model expects them."""

from __future__ import annotations

import random

import pytest
import torch
from models import make_tiny_gpt2
from tokenizers import processors

from swarmnode.config import LoraConfig, load_config
from swarmnode.learn.learner import Learner
from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.tasks import TaskSuite, format_prompt

SUITE = TaskSuite.of(load_config().tasks)
FAST = ["sapo.questions_per_round=8", "sapo.completions_per_question=4", "model.max_new_tokens=12", "sapo.min_own_groups=0"]


def learner(*overrides: str, seed: int = 0) -> Learner:
    torch.manual_seed(seed)
    return Learner.of(load_config(None, [*FAST, *overrides]), Policy.load(dtype="float32"), SUITE, seed=seed, data_seed=seed)


def informative_round(node: Learner):
    for _ in range(20):
        own = node.sample_round()
        if sum(g.informative for g in own.groups) >= 2:
            return own
    raise AssertionError("no informative groups in 20 rounds")


def test_with_one_update_the_clip_cannot_act_and_with_several_it_does():
    single = learner("optimizer.learning_rate=3e-3")
    own = informative_round(single)
    stats = single.train(own.groups, [])
    assert stats.updates == 1 and stats.clip_fraction == 0.0  # ratio to the sampler = 1
    several = learner("optimizer.learning_rate=3e-3", "sapo.updates_per_round=4")
    own = informative_round(several)
    stats = several.train(own.groups, [])
    assert stats.updates == 4 and stats.clip_fraction > 0.0 and stats.grad_norm > 0.0


def test_kl_to_the_start_is_zero_before_training_and_grows_with_it():
    node = learner("optimizer.learning_rate=3e-3")
    first = node.train(informative_round(node).groups, [])
    assert first.kl_to_start == pytest.approx(0.0, abs=1e-6)
    for _ in range(4):
        later = node.train(informative_round(node).groups, [])
    assert later.kl_to_start > 1e-4
    untracked = learner("sapo.kl_to_start=false")
    assert untracked.train(informative_round(untracked).groups, []).kl_to_start is None


def lora_learner(*overrides: str, dtype: str = "float32") -> Learner:
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return Learner.of(load_config(None, [*FAST, *overrides]), Policy.load(dtype=dtype, lora=lora), SUITE, seed=0, data_seed=0)


def test_a_lora_node_measures_kl_to_its_base_with_adapters_off_not_a_copy_of_the_model():
    node = lora_learner("optimizer.learning_rate=3e-2")
    assert node.trainer.reference is None and node.trainer.tracks_kl
    first = node.train(informative_round(node).groups, [])
    assert first.kl_to_start == pytest.approx(0.0, abs=1e-6)
    for _ in range(4):
        later = node.train(informative_round(node).groups, [])
    assert later.kl_to_start > 1e-5


def test_frozen_weights_are_kept_in_the_compute_dtype_and_trained_ones_stay_float32_masters():
    node = lora_learner("optimizer.learning_rate=1e-2", dtype="bfloat16")
    parameters = list(node.policy.model.named_parameters())
    assert {p.dtype for _, p in parameters if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for _, p in parameters if p.requires_grad} == {torch.float32}
    adapters = {name: p.detach().clone() for name, p in parameters if p.requires_grad}
    stats = node.train(informative_round(node).groups, [])
    assert stats.updates == 1 and stats.grad_norm > 0
    assert any(not torch.equal(adapters[name], p) for name, p in parameters if p.requires_grad)


def test_peers_tokens_have_their_share_and_importance_weights_stay_under_the_clip():
    sender, receiver = learner(seed=1), learner("sapo.importance_clip=1.5", seed=2)

    class Incoming:
        def __init__(self, rollout) -> None:
            self.signer, self.model_id, self.rollout = "12D3KooWsender", receiver.policy.model_id, rollout

    for _ in range(30):
        external = receiver.external_groups([Incoming(r) for r in sender.sample_round().rollouts]).groups
        if any(g.informative for g in external):
            break
    else:
        pytest.fail("no informative group in 30 rounds of the sender")
    stats = receiver.train(informative_round(receiver).groups, external)
    assert stats.external_groups >= 1 and 0.0 < stats.external_token_share < 1.0
    assert 0.0 < stats.importance_mean and stats.importance_max <= 1.5 + 1e-6


def test_with_top_p_the_recorded_log_probs_are_those_of_the_nucleus_the_sampler_drew_from():
    policy = Policy.load(dtype="float32")
    prompt = [format_prompt(SUITE.sample(random.Random(0), 1, seed=1)[0].question, policy.tokenizer)]
    settings = SamplingSettings(max_new_tokens=8, top_p=0.3)
    [group] = policy.sample(prompt, 4, settings, torch.Generator().manual_seed(0))
    ids = policy.encode_prompts(prompt, settings.max_prompt_tokens)
    full, mask = policy.completion_logprobs(ids * 4, [list(c.completion_ids) for c in group])
    recorded = torch.tensor([lp for c in group for lp in c.logprobs])
    unnormalised = full[mask]
    assert torch.all(recorded >= unnormalised - 1e-5)  # the nucleus holds less mass: its tokens are likelier
    assert torch.any(recorded > unnormalised + 1e-3)


def test_a_chat_template_that_writes_its_bos_gets_exactly_one(tmp_path):
    path = make_tiny_gpt2(tmp_path / "templated")
    policy = Policy.load(str(path), dtype="float32")
    tokenizer = policy.tokenizer
    bos = tokenizer.eos_token
    tokenizer.bos_token = bos
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(  # adds BOS, as Llama's tokenizers do
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    prompt = format_prompt("What is 2 + 2?", tokenizer)
    assert prompt.startswith(bos)
    [ids] = policy.encode_prompts([prompt], 192)
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id


def test_an_over_long_prompt_keeps_its_header_and_its_end():
    policy = Policy.load(dtype="float32")
    header, ending = "SYSTEM HEADER: answer in tags. ", " Answer with <answer>…</answer>."
    prompt = header + "lorem ipsum " * 200 + ending
    [ids] = policy.encode_prompts([prompt], 64)
    text = policy.tokenizer.decode(ids)
    assert len(ids) == 64 and text.startswith("SYSTEM HEADER") and text.endswith(ending)


def test_float16_training_scales_its_loss_and_still_learns():
    node = Learner.of(load_config(None, [*FAST, "optimizer.learning_rate=3e-3"]), Policy.load(dtype="float16"), SUITE, 0, 0)
    assert node.trainer.scaler.is_enabled()
    before = [p.detach().clone() for p in node.policy.model.parameters()]
    stats = node.train(informative_round(node).groups, [])
    assert stats.updates == 1 and torch.isfinite(torch.tensor(stats.loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, node.policy.model.parameters()))
