"""One node's learning state, network-free: task stream, policy, SAPO trainer and their RNGs.

The node drives it between gossip calls; the in-process swarm simulator drives several of them with
the same code, so what the simulator measures is what the node runs.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from swarmnode.checkpoint import TrainingState, random_state_from_json, random_state_to_json
from swarmnode.config import NodeConfig
from swarmnode.envelope import Rejected
from swarmnode.policy import Policy, SamplingSettings
from swarmnode.rollout import Rollout
from swarmnode.sapo import Group, SapoTrainer, StepStats, external_group, group_rollout, own_group, select_groups
from swarmnode.tasks import Score, Task, TaskSuite, format_prompt


@dataclass
class OwnRound:
    """What one round of sampling produced: groups to train on and rollouts to share."""

    tasks: list[Task]
    groups: list[Group]
    rollouts: list[Rollout]
    scores: list[list[Score]]
    generated_tokens: int
    seconds: float

    @property
    def mean_reward(self) -> float:
        rewards = [s.reward for group in self.scores for s in group]
        return sum(rewards) / len(rewards)

    @property
    def answer_rate(self) -> float:
        flags = [s.has_answer for group in self.scores for s in group]
        return sum(flags) / len(flags)


class PeerRollout(Protocol):
    """A verified rollout from a peer, as the gossip layer (or the simulator) hands it over."""

    signer: str
    model_id: str
    rollout: Rollout


@dataclass
class ExternalGroups:
    groups: list[Group]
    rejected: Counter[str] = field(default_factory=Counter)
    offenders: list[tuple[str, str]] = field(default_factory=list)  # (peer id, reason)

    @property
    def mean_reward(self) -> float | None:
        rewards = [r for g in self.groups for r in g.rewards]
        return sum(rewards) / len(rewards) if rewards else None


class Learner:
    def __init__(self, config: NodeConfig, policy: Policy, suite: TaskSuite, seed: int, data_seed: int) -> None:
        self.config = config
        self.policy = policy
        self.suite = suite
        self.data_seed = data_seed
        self.settings = SamplingSettings(
            max_new_tokens=config.model.max_new_tokens,
            temperature=config.model.temperature,
            top_p=config.model.top_p,
            max_prompt_tokens=config.model.max_prompt_tokens,
        )
        self.trainer = SapoTrainer(policy, config.sapo, config.model.max_new_tokens, config.model.temperature)
        self.task_rng = random.Random(seed)
        self.selection_rng = random.Random(seed + 1)
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)

    def sample_round(self, share_logprobs: bool = True) -> OwnRound:
        """Draw Q questions, sample G completions each, score them with our verifier."""
        started = time.perf_counter()
        tasks = self.suite.sample(self.task_rng, self.config.sapo.questions_per_round, self.data_seed)
        prompts = [format_prompt(task.question, self.policy.tokenizer) for task in tasks]
        sampled = self.policy.sample(prompts, self.config.sapo.completions_per_question, self.settings, self.generator)
        prompt_ids = self.policy.encode_prompts(prompts, self.settings.max_prompt_tokens)
        groups, rollouts, scores = [], [], []
        for task, ids, completions in zip(tasks, prompt_ids, sampled):
            group_scores = [self.suite.score(task, completion.text) for completion in completions]
            group = own_group(task, ids, completions, group_scores)
            groups.append(group)
            rollouts.append(group_rollout(group, completions, group_scores, share_logprobs))
            scores.append(group_scores)
        tokens = sum(len(c.completion_ids) for completions in sampled for c in completions)
        return OwnRound(tasks, groups, rollouts, scores, tokens, time.perf_counter() - started)

    def external_groups(self, peer_rollouts: Sequence[PeerRollout]) -> ExternalGroups:
        """Turn peers' rollouts into our groups: regenerate, rescore, re-tokenize; count what fails.
        Verify-only (weight 0) families are skipped (counted, no offence) unless sapo.external_families=suite:
        at small scale, peers' other families cost a specialised node 0.2-1.6% of its reward."""
        result = ExternalGroups([])
        limit = 2 * self.settings.max_new_tokens
        sampled_only = self.config.sapo.external_families == "sampled"
        skipped = self.suite.verify_only_family_names() if sampled_only else frozenset()
        for item in peer_rollouts:
            if item.rollout.task.family in skipped:
                result.rejected["not_sampled_here"] += 1
                continue
            try:
                group = external_group(
                    item.rollout,
                    item.signer,
                    item.model_id == self.policy.model_id,
                    self.suite,
                    self.policy,
                    self.settings.max_prompt_tokens,
                    limit,
                )
            except Rejected as rejected:
                result.rejected[rejected.reason.value] += 1
                result.offenders.append((item.signer, rejected.reason.value))
                continue
            if len(group.completion_ids) < 2:
                result.rejected["too_long"] += 1
                continue
            result.groups.append(group)
        return result

    def train(self, own: Sequence[Group], external: Sequence[Group]) -> StepStats:
        started = time.perf_counter()
        stats = self.trainer.step(select_groups(own, external, self.config.sapo, self.selection_rng))
        stats.seconds = time.perf_counter() - started
        return stats

    def capture(self, state: TrainingState) -> TrainingState:
        """Put this learner's RNG states into `state` (for a checkpoint)."""
        state.rng = {
            "tasks": random_state_to_json(self.task_rng.getstate()),
            "selection": random_state_to_json(self.selection_rng.getstate()),
        }
        state.generators = {"sampler": self.generator.get_state()}
        return state

    def restore(self, state: TrainingState) -> None:
        self.task_rng.setstate(random_state_from_json(state.rng["tasks"]))
        self.selection_rng.setstate(random_state_from_json(state.rng["selection"]))
        self.generator.set_state(state.generators["sampler"])



class HealthMonitor:
    """Detects collapse from a node's own samples: the moving average of well-formed answers falls below
    half of its best, or the reward's falls below a third of its best. Counts each entry into collapse."""

    def __init__(self, smoothing: float = 0.1, warmup_rounds: int = 10) -> None:
        self.smoothing = smoothing
        self.warmup_rounds = warmup_rounds
        self.rounds = 0
        self.answer_ema: float | None = None
        self.reward_ema: float | None = None
        self.best_answer = 0.0
        self.best_reward = 0.0
        self.collapsed = False
        self.collapses = 0

    def observe(self, reward: float, answer_rate: float) -> bool:
        """Feed one round; True when this round enters a collapse."""
        a = self.smoothing
        self.answer_ema = answer_rate if self.answer_ema is None else (1 - a) * self.answer_ema + a * answer_rate
        self.reward_ema = reward if self.reward_ema is None else (1 - a) * self.reward_ema + a * reward
        self.rounds += 1
        if self.rounds < self.warmup_rounds:
            return False
        self.best_answer = max(self.best_answer, self.answer_ema)
        self.best_reward = max(self.best_reward, self.reward_ema)
        broken = self.answer_ema < 0.5 * self.best_answer or (
            self.best_reward >= 0.05 and self.reward_ema < self.best_reward / 3
        )
        entered = broken and not self.collapsed
        self.collapsed = broken
        self.collapses += int(entered)
        return entered
