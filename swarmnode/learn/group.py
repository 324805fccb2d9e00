"""A group: one question and its completions, scored by *our* verifier, the unit SAPO shares, selects and trains
on; and how our own sampled groups are made and written as rollouts to share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from swarmnode.learn.policy import SampledCompletion
from swarmnode.learn.tasks import Score, Task
from swarmnode.wire.rollout import Completion, Rollout

Source = Literal["own", "external"]
ADVANTAGE_EPS = 1e-6


@dataclass
class Group:
    """One question and its completions, scored by *our* verifier: the unit SAPO shares and selects."""

    task: Task
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    rewards: list[float]
    source: Source
    behaviour_logprobs: list[list[float]] | None = None  # own groups: the sampler's log-probs
    sender_logprobs: list[tuple[float, ...]] | None = None  # same-model external groups (untrusted)
    signer: str | None = None

    @property
    def reward_std(self) -> float:
        mean = sum(self.rewards) / len(self.rewards)
        return math.sqrt(sum((r - mean) ** 2 for r in self.rewards) / len(self.rewards))

    @property
    def informative(self) -> bool:
        """A group whose completions all scored the same has zero advantage everywhere: no signal."""
        return self.reward_std > ADVANTAGE_EPS

    def advantages(self) -> list[float]:
        mean = sum(self.rewards) / len(self.rewards)
        std = self.reward_std
        return [(r - mean) / (std + ADVANTAGE_EPS) for r in self.rewards]


def own_group(task: Task, prompt_ids: list[int], sampled: Sequence[SampledCompletion], scores: Sequence[Score]) -> Group:
    return Group(
        task=task,
        prompt_ids=prompt_ids,
        completion_ids=[list(s.completion_ids) for s in sampled],
        rewards=[score.reward for score in scores],
        source="own",
        behaviour_logprobs=[list(s.logprobs) for s in sampled],
    )


def group_rollout(group: Group, sampled: Sequence[SampledCompletion], scores: Sequence[Score], share_logprobs: bool) -> Rollout:
    """Our own group as it travels: reference, text, our verifier score, optionally our log-probs."""
    return Rollout(
        group.task.ref,
        tuple(
            Completion(s.text, score.verifier, _text_logprobs(s) if share_logprobs else ())
            for s, score in zip(sampled, scores)
        ),
    )


def _text_logprobs(sampled: SampledCompletion) -> tuple[float, ...]:
    """Log-probs of the tokens the shared text holds: a final EOS is not part of the text."""
    return sampled.logprobs[:-1] if sampled.finish_reason == "eos" else sampled.logprobs
