"""The data a node shares: task references and completion text, grouped per question.

These are plain values; `swarmnode.wire.batch` turns a `RolloutBatch` into signed bytes and back.
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


# Held-out items (PROTOCOL.md §2.5): reasoning-gym builds item `index` of dataset `seed` from Random(seed + index)
# for almost every family, so a stream position seed + index names an item. These positions are reserved for
# evaluation: own training seeds stay below MAX_TRAINING_SEED and peers' references into them are not trained on.
HELD_OUT_SEED = 2**40
HELD_OUT_SPAN = 2**16
MAX_TRAINING_SEED = 2**32


def is_held_out(ref: TaskRef) -> bool:
    """Whether a reference names a reserved item: no node trains on it, whoever sampled it."""
    return HELD_OUT_SEED <= ref.seed + ref.index < HELD_OUT_SEED + HELD_OUT_SPAN


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


@dataclass(frozen=True)
class PeerRollout:
    """One rollout out of a peer's verified batch: who signed it, with which model, in which window and batch.
    Its rewards are the sender's claims, to be rescored by the receiver (`swarmnode.learn.intake`)."""

    signer: str
    model_id: str
    rollout: Rollout
    window: int = 0
    sequence: int = 0
