"""Held-out evaluation: pass rates per family on questions training never draws, the number RL must move.

The held-out set lives at reserved reasoning-gym stream positions (PROTOCOL.md §2.5): an item is
generated from `Random(seed + index)`, own training stays below 2^33 and the intake refuses peers'
rollouts whose `seed + index` falls in the reserved range, so no node trains on these items. Used by the
node (every `eval.every_rounds`), `swarmnode eval`, the seed-model script and the learning tests.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.tasks import Task, TaskSuite, format_prompt
from swarmnode.wire.rollout import HELD_OUT_SEED, HELD_OUT_SPAN, TaskRef

PASS = 1.0 - 1e-9  # a pass is a fully correct answer by the verifier

Progress = Callable[[int, int], None]  # (questions done, questions in all)


def held_out_tasks(suite: TaskSuite, per_family: int) -> list[Task]:
    """The first `per_family` reserved items of every family this suite samples: the same questions on every
    node with the same family configs, so results compare across nodes, runs and models."""
    if not 1 <= per_family <= HELD_OUT_SPAN:
        raise ValueError(f"per_family must be between 1 and {HELD_OUT_SPAN}")
    sampled = suite.sampled_family_names()
    return [
        suite.task(TaskRef(spec.name, spec.config_hash, HELD_OUT_SEED, index))
        for spec in suite.families
        if spec.name in sampled
        for index in range(min(per_family, spec.dataset_size))
    ]


@dataclass(frozen=True)
class FamilyScore:
    greedy: float  # pass rate of the greedy completion
    sampled: float  # pass rate of samples at the training temperature (pass@1 estimate)
    mean_reward: float  # training reward (reward mode applied) of the samples
    answer_rate: float  # share of samples with a closed <answer> tag


@dataclass(frozen=True)
class EvalResult:
    families: dict[str, FamilyScore]
    questions: int
    samples_per_question: int
    seconds: float
    after_rounds: int | None = None  # the policy had trained this many rounds; None outside a node
    model: str = ""

    @property
    def greedy(self) -> float:
        return _mean([score.greedy for score in self.families.values()])

    @property
    def sampled(self) -> float:
        return _mean([score.sampled for score in self.families.values()])

    @property
    def mean_reward(self) -> float:
        return _mean([score.mean_reward for score in self.families.values()])

    @property
    def answer_rate(self) -> float:
        return _mean([score.answer_rate for score in self.families.values()])

    def to_dict(self) -> dict:
        return asdict(self) | {"greedy": self.greedy, "sampled": self.sampled}

    @classmethod
    def from_dict(cls, data: dict) -> EvalResult:
        families = {name: FamilyScore(**score) for name, score in data["families"].items()}
        known = {"questions", "samples_per_question", "seconds", "after_rounds", "model"}
        return cls(families=families, **{k: v for k, v in data.items() if k in known})


def evaluate(
    policy: Policy,
    suite: TaskSuite,
    tasks: list[Task],
    settings: SamplingSettings,
    samples_per_question: int = 4,
    seed: int = 0,
    batch_questions: int = 32,
    progress: Progress | None = None,
) -> EvalResult:
    """Greedy and sampled pass rates per family. The sampler's generator is seeded, so two evaluations of
    the same weights give the same numbers and successive ones differ only by what training changed.

    `batch_questions` at a time, each sampled in as many rows at once as the policy's plan allows
    (`Policy.sample_rows`); `progress` hears of each batch done (and of 0 before the first), since an evaluation
    can take minutes. A stop the policy is asked about raises Interrupted from inside the decoding."""
    started = time.perf_counter()
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    greedy_settings = SamplingSettings(settings.max_new_tokens, 0.0, 1.0, settings.max_prompt_tokens)
    greedy: dict[str, list[float]] = defaultdict(list)
    sampled: dict[str, list[float]] = defaultdict(list)
    rewards: dict[str, list[float]] = defaultdict(list)
    answered: dict[str, list[float]] = defaultdict(list)
    report = progress or (lambda done, total: None)
    report(0, len(tasks))
    for start in range(0, len(tasks), batch_questions):
        chunk = tasks[start : start + batch_questions]
        prompts = [format_prompt(task.question, policy.tokenizer) for task in chunk]
        for task, (best,) in zip(chunk, policy.sample(prompts, 1, greedy_settings)):
            greedy[task.ref.family].append(float(suite.score(task, best.text).verifier >= PASS))
        if samples_per_question:
            for task, group in zip(chunk, policy.sample(prompts, samples_per_question, settings, generator)):
                for completion in group:
                    score = suite.score(task, completion.text)
                    sampled[task.ref.family].append(float(score.verifier >= PASS))
                    rewards[task.ref.family].append(score.reward)
                    answered[task.ref.family].append(float(score.has_answer))
        report(start + len(chunk), len(tasks))
    families = {
        family: FamilyScore(
            greedy=_mean(greedy[family]),
            sampled=_mean(sampled[family]),
            mean_reward=_mean(rewards[family]),
            answer_rate=_mean(answered[family]),
        )
        for family in sorted(greedy)
    }
    return EvalResult(
        families=families,
        questions=len(tasks),
        samples_per_question=samples_per_question,
        seconds=time.perf_counter() - started,
        model=policy.model_id,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
