"""Held-out evaluation: a policy's mean reward on a fixed question set, the number RL must move.

Used by the seed-model script (its recorded baseline), the tests that check learning, and benchmarks.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch

from swarmnode.policy import Policy, SamplingSettings
from swarmnode.tasks import Task, TaskSuite, format_prompt

EVAL_DATASET_SEED = 20_261_123  # items the seed model was not supervised on


@dataclass(frozen=True)
class EvalResult:
    mean_reward: float
    answer_rate: float  # share of completions with a closed <answer> tag
    per_family: dict[str, float]
    questions: int
    samples_per_question: int


def evaluation_tasks(suite: TaskSuite, questions: int, seed: int = 0) -> list[Task]:
    return suite.sample(random.Random(seed), questions, seed=EVAL_DATASET_SEED)


def evaluate(
    policy: Policy,
    suite: TaskSuite,
    tasks: list[Task],
    settings: SamplingSettings,
    samples_per_question: int = 4,
    seed: int = 0,
    batch_questions: int = 32,
) -> EvalResult:
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    rewards: dict[str, list[float]] = defaultdict(list)
    answered = total = 0
    for start in range(0, len(tasks), batch_questions):
        chunk = tasks[start : start + batch_questions]
        prompts = [format_prompt(task.question, policy.tokenizer) for task in chunk]
        groups = policy.sample(prompts, samples_per_question, settings, generator)
        for task, group in zip(chunk, groups):
            for completion in group:
                score = suite.score(task, completion.text)
                rewards[task.ref.family].append(score.reward)
                answered += score.has_answer
                total += 1
    every = [r for values in rewards.values() for r in values]
    return EvalResult(
        mean_reward=sum(every) / len(every),
        answer_rate=answered / total,
        per_family={family: sum(v) / len(v) for family, v in sorted(rewards.items())},
        questions=len(tasks),
        samples_per_question=samples_per_question,
    )
