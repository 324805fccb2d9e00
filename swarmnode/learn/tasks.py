"""Verifiable tasks: a weighted mix of reasoning-gym families, addressed by reference and scored locally.

A `TaskRef` (family, config hash, seed, index) regenerates the same question and oracle on any node with
the same reasoning-gym version and family config, so peers ship references and never answers.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
import re
import warnings
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# cellpylib (a reasoning-gym dependency) compares to literals with `is`: without cached bytecode
# (PYTHONDONTWRITEBYTECODE) every start printed its SyntaxWarnings above the node's own output.
warnings.filterwarnings("ignore", category=SyntaxWarning, module=r".*[/\\]cellpylib[/\\]")

import reasoning_gym  # noqa: E402
from reasoning_gym.factory import DATASETS  # noqa: E402

from swarmnode.config import DEFAULT_DATASET_SIZE, FamilyConfig, RewardMode, TasksConfig
from swarmnode.learn import verifiers
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import TaskRef

GENERATOR = f"reasoning-gym=={importlib.metadata.version('reasoning-gym')}"

# Families whose scorer can be gamed outright, or that are not a single task.
EXCLUDED_FAMILIES: Mapping[str, str] = {
    "game_of_life_halting": "its scorer gives 1.0 to any non-empty answer",
    "composite": "a mix of other families; list those families instead",
}

SYSTEM_PROMPT = (
    "Solve the problem. Put only the final answer between <answer> and </answer>, "
    "for example <answer>42</answer>."
)
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_ANSWER_PATTERN = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class FamilySpec:
    """One family of the mix. Some reasoning-gym generators precompute items from `size`, so the
    dataset size is part of the item's identity (and of the config hash), not a free parameter."""

    name: str
    weight: float = 1.0  # 0: never sampled here, but peers' rollouts of it can be verified (and trained on)
    config: Mapping[str, Any] = field(default_factory=dict)
    dataset_size: int = DEFAULT_DATASET_SIZE

    @classmethod
    def of(cls, family: FamilyConfig) -> FamilySpec:
        return cls(family.name, family.weight, family.config, family.dataset_size)

    @property
    def config_hash(self) -> str:
        """16 hex chars of SHA-256 over the canonical JSON of generator version, family, config and size."""
        canonical = json.dumps(
            {"config": dict(self.config), "family": self.name, "generator": GENERATOR, "size": self.dataset_size},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,  # PROTOCOL.md §2.4: another implementation could not write NaN the same way
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    ref: TaskRef
    question: str
    entry: dict[str, Any]  # reasoning-gym's item, oracle included; never leaves this node


@dataclass(frozen=True)
class Score:
    reward: float  # what training uses, after the reward mode
    verifier: float  # reasoning-gym's raw score; what a sender may claim on the wire
    has_answer: bool  # the completion contains a closed <answer> tag (format validity)


def extract_answer(completion: str) -> str | None:
    """The text inside the first closed <answer>…</answer>, stripped; None if there is none."""
    match = _ANSWER_PATTERN.search(completion)
    return match.group(1).strip() if match else None


class TaskSuite:
    """The node's task mix; samples questions, regenerates referenced ones, and scores completions."""

    def __init__(
        self,
        families: Sequence[FamilySpec],
        reward_mode: RewardMode = RewardMode.GUARDED,
        dataset_cache_size: int = 256,
    ) -> None:
        if not families:
            raise ValueError("a task suite needs at least one family")
        for spec in families:
            if spec.name in EXCLUDED_FAMILIES:
                raise ValueError(f"task family {spec.name!r} is excluded: {EXCLUDED_FAMILIES[spec.name]}")
            if spec.name not in DATASETS:
                raise ValueError(f"unknown task family {spec.name!r}; see reasoning_gym.factory.DATASETS")
            if spec.weight < 0:
                raise ValueError(f"task family {spec.name!r} has a negative weight")
        if not any(spec.weight > 0 for spec in families):
            raise ValueError("at least one task family needs a positive weight (weight 0 = verify only)")
        verifiers.harden()  # before any scorer sees text: no scorer may run an answer as code
        self.families = tuple(families)
        self.reward_mode = RewardMode(reward_mode)
        self._by_hash = {spec.config_hash: spec for spec in self.families}
        self._datasets: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._cache_size = dataset_cache_size
        self.scorer_errors: Counter[str] = Counter()

    @classmethod
    def of(cls, tasks: TasksConfig) -> TaskSuite:
        """The suite a node's `tasks:` section describes."""
        return cls([FamilySpec.of(family) for family in tasks.families], tasks.reward)

    @property
    def version(self) -> str:
        """Covers the generator version and every family's config and weight."""
        parts = sorted(f"{spec.config_hash}:{spec.weight:g}" for spec in self.families)
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return f"{GENERATOR.replace('==', '-')}+{digest}"

    def family_names(self) -> list[str]:
        return [spec.name for spec in self.families]

    def sampled_family_names(self) -> frozenset[str]:
        """Families of weight > 0: the ones this node asks (weight 0 is verify-only)."""
        return frozenset(spec.name for spec in self.families if spec.weight > 0)

    def sample(self, rng: random.Random, count: int, seed: int) -> list[Task]:
        """`count` fresh questions from the weighted mix, drawn with `rng` from dataset `seed`."""
        weights = [spec.weight for spec in self.families]
        picks = rng.choices(self.families, weights=weights, k=count)
        return [self.task(TaskRef(spec.name, spec.config_hash, seed, rng.randrange(spec.dataset_size))) for spec in picks]

    def task(self, ref: TaskRef) -> Task:
        """Regenerate the item a reference names; unknown_task if this suite cannot."""
        spec = self._by_hash.get(ref.config_hash)
        if spec is None or spec.name != ref.family:
            raise Rejected(Reason.UNKNOWN_TASK, f"{ref.family}/{ref.config_hash} is not in this node's suite")
        if ref.index >= spec.dataset_size:
            raise Rejected(Reason.UNKNOWN_TASK, f"index {ref.index} beyond the dataset size {spec.dataset_size}")
        entry = self._dataset(spec, ref.seed)[ref.index]
        return Task(ref, entry["question"], entry)

    def score(self, task: Task, completion: str) -> Score:
        answer = extract_answer(completion)
        verifier = self._verifier_score(task, answer)
        return Score(self._shape(task, answer, verifier), verifier, answer is not None)

    def _verifier_score(self, task: Task, answer: str | None) -> float:
        if answer is None:
            return 0.0
        dataset = self._dataset(self._by_hash[task.ref.config_hash], task.ref.seed)
        try:
            value = float(dataset.score_answer(answer=answer, entry=task.entry))
        except Exception:  # reasoning-gym scorers raise on odd input (e.g. prime_factorization): score 0
            self.scorer_errors[task.ref.family] += 1
            return 0.0
        if not 0.0 <= value <= 1.0:  # NaN included
            self.scorer_errors[task.ref.family] += 1
            return 0.0
        return value

    def _shape(self, task: Task, answer: str | None, verifier: float) -> float:
        if self.reward_mode is RewardMode.EXACT:
            return 1.0 if verifier >= 1.0 else 0.0
        if self.reward_mode is RewardMode.GUARDED and answer is not None and verifier < 1.0:
            oracle = task.entry.get("answer")
            if isinstance(oracle, str) and len(answer) > 2 * len(oracle) + 2:
                return 0.0
        return verifier

    def _dataset(self, spec: FamilySpec, seed: int) -> Any:
        """Datasets are cheap to build but not free; keep the recently used ones (peers use many seeds)."""
        key = (spec.config_hash, seed)
        dataset = self._datasets.pop(key, None)
        if dataset is None:
            dataset = reasoning_gym.create_dataset(spec.name, size=spec.dataset_size, seed=seed, **dict(spec.config))
        self._datasets[key] = dataset
        if len(self._datasets) > self._cache_size:
            self._datasets.popitem(last=False)
        return dataset


def format_prompt(question: str, tokenizer: Any) -> str:
    """The prompt a policy sees: the model's chat template when it has one, a plain frame otherwise."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{question}\nAnswer with <answer>…</answer>.\n"
