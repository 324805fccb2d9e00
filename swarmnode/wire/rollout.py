"""The data a node shares: task references and completion text, grouped per question.

These are plain values; `envelope` turns a `RolloutBatch` into signed bytes and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class TaskRef:
    """Addresses one reasoning-gym item; `tasks` regenerates the question and answer from it."""

    family: str
    config_hash: str
    seed: int
    index: int


@dataclass(frozen=True)
class Completion:
    text: str
    reward: float | None = None  # the sender's claim; receivers rescore and never train on it
    token_logprobs: tuple[float, ...] = ()  # sender's behaviour log-probs; untrusted, optional


@dataclass(frozen=True)
class Rollout:
    """One question and the group of completions sampled for it (a GRPO group)."""

    task: TaskRef
    completions: tuple[Completion, ...]


@dataclass(frozen=True)
class RolloutBatch:
    swarm_id: str
    window: int
    sequence: int
    timestamp: float
    model_id: str
    suite_version: str
    rollouts: tuple[Rollout, ...] = field(default_factory=tuple)
