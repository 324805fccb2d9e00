"""A stop is honoured inside the long phases, not at their end: a node stops within one decode step of a long
generation or of its evaluation, checkpoints the rounds it finished and resumes at the round it abandoned; the
trainer stops before its next micro-batch and never applies a partial update."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from swarmnode.config import MemoryConfig, OptimizerConfig, SapoConfig, load_config
from swarmnode.learn.group import Group
from swarmnode.learn.interrupt import Interrupted
from swarmnode.learn.policy import Policy
from swarmnode.learn.sapo import SapoTrainer
from swarmnode.learn.selection import Selection
from swarmnode.node import Node

ALONE = ["gossip.enabled=false", "metrics.port=null", "sapo.questions_per_round=4", "sapo.completions_per_question=4",
         "model.max_new_tokens=12", "eval.every_rounds=0", "eval.questions_per_family=4", "seed=1", "tasks.seed=1"]


def node_stopped_at_forward(data_dir: Path, stop_at: int, *overrides: str) -> tuple[Node, list[dict], dict]:
    """A node whose stop is set (as a signal handler would) from inside its model's `stop_at`-th forward pass
    after start; what it logged, and what it showed and counted at that moment."""
    events: list[dict] = []
    node = Node(load_config(None, [*ALONE, *overrides]), data_dir, events.append, threading.Event())
    seen: dict = {"forwards": 0}
    try:
        node.start()
        model = node.learner.policy.model
        forward = model.forward
        seen["task_rng"] = node.learner.task_rng.getstate()

        def counting(*args, **kwargs):
            seen["forwards"] += 1
            if seen["forwards"] == stop_at:
                node.stop.set()
                seen["phase"] = (node.status.phase, node.status.phase_progress)
            return forward(*args, **kwargs)

        model.forward = counting
        node.run()
    finally:
        node.close()
    return node, events, seen


def resume(data_dir: Path, *overrides: str) -> list[dict]:
    events: list[dict] = []
    node = Node(load_config(None, [*ALONE, *overrides]), data_dir, events.append, threading.Event())
    try:
        node.start()
        node.run(1)
    finally:
        node.close()
    return events


def test_a_stop_during_a_long_generation_is_honoured_at_the_next_decode_step_and_the_round_is_replayed(tmp_path):
    # 2000 tokens a row: without a stop inside the decode loop the generation would go on to the phase's end
    node, events, seen = node_stopped_at_forward(tmp_path, 3, "model.max_new_tokens=2000")
    assert seen["phase"] == ("generate", "")
    assert seen["forwards"] == 3  # the prompt pass, two decode steps, and no step after the stop
    assert [e["event"] for e in events] == ["started", "stop_requested", "checkpoint"]
    assert events[1]["round"] == 1 and events[2]["round"] == 0
    assert (tmp_path / "checkpoints" / "round-00000000").is_dir()
    assert node.learner.task_rng.getstate() == seen["task_rng"]  # the abandoned round's questions are asked again
    again = resume(tmp_path)
    assert again[0]["round"] == 0 and again[0]["checkpoint"] == str(tmp_path / "checkpoints" / "round-00000000")
    assert [e["round"] for e in again if e["event"] == "round"] == [1]


def test_a_stop_during_the_evaluation_is_honoured_at_the_next_decode_step_and_its_progress_was_shown(tmp_path):
    node, events, seen = node_stopped_at_forward(tmp_path, 2, "eval.every_rounds=1")
    assert seen["phase"] == ("evaluate", "0/20")  # 4 held-out questions of each of the 5 families, none done yet
    assert seen["forwards"] == 2
    assert [e["event"] for e in events] == ["started", "stop_requested", "checkpoint"]
    assert node.held_out == {}  # an evaluation cut short is not kept as the base
    assert [e["event"] for e in resume(tmp_path, "eval.every_rounds=1")][1:3] == ["held_out", "round"]


def trainer(micro_batch_size: int, updates_per_round: int = 1) -> SapoTrainer:
    policy = Policy.load("swarmnode-seed", threads=1)
    config = SapoConfig(kl_to_start=False, updates_per_round=updates_per_round)
    return SapoTrainer(policy, config, OptimizerConfig(learning_rate=1e-2), MemoryConfig(micro_batch_size=micro_batch_size),
                       max_new_tokens=8)


def selection() -> Selection:
    """Two groups of 4 with alternating rewards: 8 rows, every one with an advantage."""
    generator = torch.Generator().manual_seed(0)

    def ids(count: int) -> list[int]:
        return torch.randint(10, 4000, (count,), generator=generator).tolist()

    groups = [Group(task=None, prompt_ids=ids(12), completion_ids=[ids(8) for _ in range(4)], rewards=[0.0, 1.0, 0.0, 1.0],
                    source="own") for _ in range(2)]
    return Selection(groups, [])


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def unchanged(model: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, b) for p, b in zip((p for p in model.parameters() if p.requires_grad), before))


@pytest.mark.parametrize("asks_before_stop", [0, 2])  # before the step, and after two of its four micro-batches
def test_a_stop_before_or_inside_an_update_applies_nothing_and_discards_its_gradients(asks_before_stop):
    step = trainer(micro_batch_size=2)
    model = step.policy.model
    before = weights(model)
    asks = []
    step.should_stop = lambda: asks.append(1) or len(asks) > asks_before_stop
    with pytest.raises(Interrupted):
        step.step(selection())
    assert len(asks) == asks_before_stop + 1  # asked before every micro-batch, and no forward after a yes
    assert unchanged(model, before) and not step.optimizer.state
    assert all(p.grad is None for p in model.parameters())


def test_a_stop_after_the_first_of_several_updates_keeps_that_whole_update_and_nothing_of_the_next():
    step = trainer(micro_batch_size=2, updates_per_round=2)
    model = step.policy.model
    before = weights(model)
    apply, applied = step._apply, []

    def apply_then_stop() -> float:
        applied.append(apply())
        return applied[-1]

    step._apply = apply_then_stop
    step.should_stop = lambda: bool(applied)
    with pytest.raises(Interrupted):
        step.step(selection())
    assert len(applied) == 1 and not unchanged(model, before)
    assert {int(state["step"]) for state in step.optimizer.state.values()} == {1}  # one whole update: k of n
    assert all(p.grad is None for p in model.parameters())
