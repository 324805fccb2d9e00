"""One node's learning state, network-free: task stream, policy, SAPO trainer, intake and their RNGs.

A round (`swarmnode.learn.round`) drives it between the exchange's calls, for the node and for the in-process
simulator alike, so what the simulator measures is what the node runs.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from swarmnode.config import IntakeConfig, MemoryConfig, ModelConfig, NodeConfig, OptimizerConfig, SapoConfig
from swarmnode.learn.checkpoint import (
    Checkpointer,
    SavedCheckpoint,
    TrainingState,
    random_state_from_json,
    random_state_to_json,
)
from swarmnode.learn.group import Group, group_rollout, own_group
from swarmnode.learn.intake import Intake, IntakeLimits, IntakeResult
from swarmnode.learn.interrupt import Interrupted, ShouldStop, never
from swarmnode.learn.memory import MemoryPlan, SamplingPlan, plan_sampling
from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.sapo import SapoTrainer, StepStats
from swarmnode.learn.selection import select_groups
from swarmnode.learn.tasks import Score, Task, TaskSuite, format_prompt
from swarmnode.wire.rollout import PeerRollout, Rollout


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
    """One node's learning state: the task stream, the policy and its trainer, the intake of peers' rollouts.

    `should_stop` is asked by the policy's decode loop (rounds and evaluation) and between the trainer's
    micro-batches; when it answers yes they raise Interrupted and the round is abandoned (`interruptible`)."""

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
        should_stop: ShouldStop = never,
    ) -> None:
        self.sapo = sapo
        self.intake_config = intake
        self.policy = policy
        self.suite = suite
        self.data_seed = data_seed
        self.settings = SamplingSettings.of(model)
        self.trainer = SapoTrainer(
            policy, sapo, optimizer, memory, max_new_tokens=model.max_new_tokens, temperature=model.temperature,
            max_prompt_tokens=model.max_prompt_tokens, should_stop=should_stop,
        )
        self.sampling_plan: SamplingPlan = plan_sampling(
            policy.model, self.trainer.budget_bytes, self.trainer.fixed_bytes, prompt_tokens=model.max_prompt_tokens,
            completion_tokens=model.max_new_tokens, compute_dtype=policy.compute_dtype,
        )
        policy.sample_rows = self.sampling_plan.rows
        policy.should_stop = should_stop
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
        self.intake = Intake(suite, limits, policy, rng=self.selection_rng)
        self.rollouts_wanted = sapo.external_groups * intake.collect_oversample  # about half of all groups carry no advantage
        self.peers_supplied = False  # peers' groups passed the intake last round (transplant then asks only I)

    @classmethod
    def of(
        cls, config: NodeConfig, policy: Policy, suite: TaskSuite, seed: int, data_seed: int, should_stop: ShouldStop = never
    ) -> Learner:
        """A learner with the sections of a node's config (the node, the simulator and tests build it so)."""
        return cls(
            policy, suite, model=config.model, sapo=config.sapo, optimizer=config.optimizer, memory=config.memory,
            intake=config.intake, seed=seed, data_seed=data_seed, should_stop=should_stop,
        )

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A round that raises Interrupted leaves the task, selection and sampling RNGs where it found them: the
        round a restart replays asks the same questions, as if the abandoned one had never started. (Updates
        the trainer applied before the stop stay: SapoTrainer.step.)"""
        saved = self.capture(TrainingState())
        try:
            yield
        except Interrupted:
            self.restore(saved)
            raise

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
        intake.external_families=suite (at small scale, peers' other families cost a specialised node 0.2-1.6%).
        Whether any came through decides how many questions a transplant node asks next round."""
        result = self.intake.groups(peer_rollouts)
        self.peers_supplied = any(group.informative for group in result.groups)  # junk groups supply nothing
        return result

    def train(self, own: Sequence[Group], external: Sequence[Group]) -> StepStats:
        started = time.perf_counter()
        stats = self.trainer.step(select_groups(own, external, self.sapo, self.selection_rng))
        stats.seconds = time.perf_counter() - started
        return stats

    def questions_to_ask(self) -> int:
        return self.sapo.questions_to_ask(self.peers_supplied)

    @property
    def memory_plan(self) -> MemoryPlan | None:
        return self.trainer.memory_plan

    @property
    def micro_batch_size(self) -> int:
        return self.trainer.micro_batch_size

    def save(self, checkpointer: Checkpointer, state: TrainingState) -> SavedCheckpoint:
        """A checkpoint of the weights, the optimizer and the RNG states, with the caller's `state`."""
        return checkpointer.save(self.policy.model, self.trainer.optimizer, self.capture(state))

    def load(self, checkpointer: Checkpointer) -> TrainingState | None:
        """Resume from the newest readable checkpoint, if any; its state for the caller's own counters."""
        state = checkpointer.load(self.policy.model, self.trainer.optimizer)
        if state is not None:
            self.restore(state)
        return state

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
