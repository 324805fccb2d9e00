"""A node in silo learns: held-out reward rises under SAPO on the embedded model (deterministic seeds)."""

import pytest
import torch

from swarmnode.config import load_config
from swarmnode.learn.evaluation import evaluate, held_out_tasks
from swarmnode.learn.learner import Learner
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import TaskSuite

COUNT_BITS = 'tasks.families=[{"name": "count_bits", "config": {"min_n": 1, "max_n": 63}}]'


def held_out_gain(overrides: list[str], rounds: int, seed: int = 0) -> tuple[float, float, float]:
    """Held-out reward before and after `rounds` silo rounds, and the training reward's gain (first 20 rounds
    against the last 20); on two threads, as the node runs by default here (conftest restores the setting)."""
    torch.set_num_threads(2)
    config = load_config(None, ["sapo.local_groups=8", "sapo.external_groups=0", "gossip.enabled=false", *overrides])
    suite = TaskSuite.of(config.tasks)
    learner = Learner.of(config, Policy.load(dtype=config.model.dtype), suite, seed=seed, data_seed=11 + seed)
    held_out = held_out_tasks(suite, 128 // sum(spec.weight > 0 for spec in suite.families))
    before = evaluate(learner.policy, suite, held_out, learner.settings, 4).mean_reward
    training = []
    for _ in range(rounds):
        own = learner.sample_round()
        learner.train(own.groups, [])
        training.append(own.mean_reward)
    after = evaluate(learner.policy, suite, held_out, learner.settings, 4).mean_reward
    return before, after, sum(training[-20:]) / 20 - sum(training[:20]) / 20


def test_silo_node_raises_held_out_reward_on_count_bits_in_80_rounds():
    before, after, training_gain = held_out_gain([COUNT_BITS], rounds=80)
    assert after > before + 0.03, (before, after)
    assert training_gain > 0, training_gain


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silo_node_raises_held_out_reward_on_the_default_mix_in_300_rounds(seed):
    before, after, _ = held_out_gain([], rounds=300, seed=seed)
    assert after > before + 0.05, (before, after)
