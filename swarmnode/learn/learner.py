"""One node's learning state, network-free: task stream, policy, SAPO trainer and their RNGs.

The node drives it between gossip calls; the in-process swarm simulator drives several of them with
the same code, so what the simulator measures is what the node runs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from swarmnode.config import IntakeConfig, MemoryConfig, ModelConfig, NodeConfig, OptimizerConfig, SapoConfig
from swarmnode.learn.checkpoint import TrainingState, random_state_from_json, random_state_to_json
from swarmnode.learn.intake import Intake, IntakeLimits, IntakeResult, PeerRollout
from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.sapo import Group, SapoTrainer, StepStats, group_rollout, own_group, select_groups
from swarmnode.learn.tasks import Score, Task, TaskSuite, format_prompt
from swarmnode.wire.envelope import SwarmRules
from swarmnode.wire.rollout import Rollout


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


class Learner:
    """One node's learning state: the task stream, the policy and its trainer, the intake of peers' rollouts."""

    def __init__(
        self,
        policy: Policy,
        suite: TaskSuite,
        *,
        model: ModelConfig,
        sapo: SapoConfig,
        optimizer: OptimizerConfig,
        memory: MemoryConfig,
        intake: IntakeConfig,
        seed: int,
        data_seed: int,
        rules: SwarmRules | None = None,
    ) -> None:
        self.sapo = sapo
        self.intake_config = intake
        self.policy = policy
        self.suite = suite
        self.data_seed = data_seed
        self.settings = SamplingSettings.of(model)
        self.trainer = SapoTrainer(
            policy, sapo, optimizer, memory, max_new_tokens=model.max_new_tokens, temperature=model.temperature,
            max_prompt_tokens=model.max_prompt_tokens,
        )
        self.task_rng = random.Random(seed)
        self.selection_rng = random.Random(seed + 1)
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)
        limits = IntakeLimits(
            group_size=sapo.completions_per_question,
            max_completion_tokens=model.max_new_tokens,
            max_prompt_tokens=model.max_prompt_tokens,
            train_families=suite.sampled_family_names() if intake.external_families == "sampled" else None,
            budget_s=intake.rescore_budget_s,
        )
        self.intake = Intake(rules, suite, limits, policy, rng=self.selection_rng)

    @classmethod
    def of(cls, config: NodeConfig, policy: Policy, suite: TaskSuite, seed: int, data_seed: int) -> Learner:
        """A learner with the sections of a node's config (the node, the simulator and tests build it so)."""
        return cls(
            policy, suite, model=config.model, sapo=config.sapo, optimizer=config.optimizer, memory=config.memory,
            intake=config.intake, seed=seed, data_seed=data_seed, rules=SwarmRules.of(config.swarm),
        )

    def sample_round(self, share_logprobs: bool = True, questions: int | None = None) -> OwnRound:
        """Draw `questions` (default Q) questions, sample G completions each, score them with our verifier.
        Q are always drawn and the first `questions` kept, so every configuration sees the same question stream."""
        started = time.perf_counter()
        tasks = self.suite.sample(self.task_rng, self.sapo.questions_per_round, self.data_seed)[:questions]
        prompts = [format_prompt(task.question, self.policy.tokenizer) for task in tasks]
        sampled = self.policy.sample(prompts, self.sapo.completions_per_question, self.settings, self.generator)
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

    def external_groups(self, peer_rollouts: Sequence[PeerRollout]) -> IntakeResult:
        """Peers' rollouts to our groups through the intake: regenerated, rescored, their claims judged,
        trimmed to our G and token limit. Families we do not sample are verified, not trained on, unless
        intake.external_families=suite (at small scale, peers' other families cost a specialised node 0.2-1.6%)."""
        return self.intake.groups(peer_rollouts)

    def train(self, own: Sequence[Group], external: Sequence[Group]) -> StepStats:
        started = time.perf_counter()
        stats = self.trainer.step(select_groups(own, external, self.sapo, self.selection_rng))
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

    def state(self) -> dict[str, float | int | bool | None]:
        return {name: getattr(self, name) for name in _HEALTH_FIELDS}

    def restore(self, state: dict) -> None:
        for name in _HEALTH_FIELDS:
            if name in state:
                setattr(self, name, state[name])

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


_HEALTH_FIELDS = ("rounds", "answer_ema", "reward_ema", "best_answer", "best_reward", "collapsed", "collapses")
