"""An in-process swarm: N learners that share groups in memory through the node's own selection and
rescoring code (no network), to measure what sharing does to learning, quickly and repeatably.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from swarmnode.config import NodeConfig
from swarmnode.learn.learner import HealthMonitor, Learner
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import TaskSuite
from swarmnode.wire.rollout import Rollout


@dataclass(frozen=True)
class SimulatedPeerRollout:
    signer: str
    model_id: str
    rollout: Rollout


@dataclass
class NodeTrace:
    """Per-round measurements of one simulated node."""

    name: str
    model: str
    families: list[str]
    rewards: list[float] = field(default_factory=list)
    answer_rates: list[float] = field(default_factory=list)
    own_groups: list[int] = field(default_factory=list)
    external_groups: list[int] = field(default_factory=list)
    own_tokens: list[int] = field(default_factory=list)
    external_tokens: list[int] = field(default_factory=list)
    questions: list[int] = field(default_factory=list)  # asked per round (transplant asks I while peers supply)
    compute_s: list[float] = field(default_factory=list)  # generate + rescore + train, as a node times them
    generate_s: list[float] = field(default_factory=list)
    skipped: int = 0
    collapses: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def cumulative_reward(self) -> float:
        return sum(self.rewards)


@dataclass(frozen=True)
class SimulatedNode:
    """What differs between nodes: config (I/J, families, safeguards) and model."""

    config: NodeConfig
    model: str


def simulate(nodes: list[SimulatedNode], rounds: int, seed: int) -> list[NodeTrace]:
    """Run `rounds` synchronous rounds; node k's RNG seeds depend only on (seed, k), never on I/J,
    so every configuration sees the same question stream."""
    learners, monitors, traces = [], [], []
    for index, node in enumerate(nodes):
        torch.manual_seed(seed * 1000 + index)
        policy = Policy.load(node.model, dtype=node.config.model.dtype)
        suite = TaskSuite.of(node.config.tasks)
        learners.append(Learner.of(node.config, policy, suite, seed=seed * 1000 + index, data_seed=seed * 1000 + index))
        monitors.append(HealthMonitor())
        traces.append(NodeTrace(f"node{index}", policy.model_id, suite.family_names()))
    sharing_rng = random.Random(seed)
    supplied = [False] * len(learners)  # as a node: did the last round have peers' groups to train on
    for _ in range(rounds):
        asked = [learner.sapo.questions_to_ask(peers) for learner, peers in zip(learners, supplied)]
        own_rounds = [learner.sample_round(True, questions) for learner, questions in zip(learners, asked)]
        for index, (learner, own) in enumerate(zip(learners, own_rounds)):
            incoming = _collect(index, learners, own_rounds, nodes[index].config, sharing_rng)
            started = time.perf_counter()
            external = learner.external_groups(incoming)
            rescore_s = time.perf_counter() - started
            supplied[index] = bool(external.groups)
            step = learner.train(own.groups, external.groups)
            trace = traces[index]
            trace.questions.append(asked[index])
            trace.compute_s.append(own.seconds + rescore_s + step.seconds)
            trace.generate_s.append(own.seconds)
            trace.rewards.append(own.mean_reward)
            trace.answer_rates.append(own.answer_rate)
            trace.own_groups.append(step.own_groups)
            trace.external_groups.append(step.external_groups)
            trace.own_tokens.append(step.own_tokens)
            trace.external_tokens.append(step.external_tokens)
            trace.skipped += step.skipped_reason is not None
            trace.collapses += monitors[index].observe(own.mean_reward, own.answer_rate)
            for reason, count in external.rejected.items():
                trace.rejected[reason] = trace.rejected.get(reason, 0) + count
    return traces


def _collect(index: int, learners: list[Learner], own_rounds: list, config: NodeConfig, rng: random.Random):
    """What gossip's collect would hand node `index`: a random sample of other nodes' latest rollouts,
    at most `max_rollouts_per_peer` from each, J x oversample in all."""
    wanted = config.sapo.external_groups * config.intake.collect_oversample
    if wanted == 0:
        return []
    candidates = []
    for peer, own in enumerate(own_rounds):
        if peer == index:
            continue
        rollouts = rng.sample(own.rollouts, min(config.gossip.max_rollouts_per_peer, len(own.rollouts)))
        model_id = learners[peer].policy.model_id
        candidates += [SimulatedPeerRollout(f"node{peer}", model_id, rollout) for rollout in rollouts]
    rng.shuffle(candidates)
    return candidates[:wanted]
