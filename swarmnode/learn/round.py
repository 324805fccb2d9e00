"""One SAPO round, the same for a node and for the in-process simulator: ask, sample and score, share, collect,
rescore, train. Where a round's rollouts go and where peers' come from is an `Exchange`: the node (its
gossip), or the simulator's memory; how a phase is timed and whether a stop between two phases interrupts the round is `phase`'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from swarmnode.learn.intake import IntakeResult
from swarmnode.learn.learner import Learner, OwnRound
from swarmnode.learn.sapo import StepStats
from swarmnode.wire.rollout import PeerRollout, Rollout


class Published(Protocol):
    """What a round needs to know of its publish: whether another peer holds the batch."""

    ok: bool
    replicas: int
    stored_locally: bool


class Collected(Protocol):
    """What a round needs of its collect: verified peers' rollouts, and what was refused on the way."""

    rollouts: list[PeerRollout]
    rejected: Counter[str]
    timed_out: bool


class Exchange(Protocol):
    """The contract a round relies on: publish and collect never raise (a failure is in their result), and the
    exchange counts the offences the intake found against their signers."""

    def publish(self, rollouts: Sequence[Rollout], *, model_id: str, suite_version: str) -> Published: ...

    def collect(self, max_rollouts: int) -> Collected: ...

    def report_offences(self, offenders: Sequence[tuple[str, str]]) -> None: ...


Phase = Callable[[str], AbstractContextManager[None]]


@dataclass
class RoundOutcome:
    """Everything one round did, for its record: questions asked, own samples, the publish and collect, peers'
    groups after the intake, the training step."""

    questions: int
    own: OwnRound
    published: Published
    collected: Collected
    external: IntakeResult
    step: StepStats


def play_round(learner: Learner, exchange: Exchange, phase: Phase) -> RoundOutcome:
    """One round, top to bottom. Transplant sampling asks I questions while peers supply groups, Q otherwise
    (`SapoConfig.questions_to_ask`); peers' rollouts are rescored by our verifier before any is trained on.
    A stop (Interrupted, from `phase` or from the learner's loops) abandons it: `Learner.interruptible`."""
    with learner.interruptible():
        questions = learner.questions_to_ask()
        with phase("generate"):
            own = learner.sample_round(share_logprobs=True, questions=questions)
        with phase("publish"):
            published = exchange.publish(own.rollouts, model_id=learner.policy.model_id, suite_version=learner.suite.version)
        with phase("collect"):
            collected = exchange.collect(learner.rollouts_wanted)
        with phase("rescore"):
            external = learner.external_groups(collected.rollouts)
            exchange.report_offences(external.offenders)
        with phase("train"):
            step = learner.train(own.groups, external.groups)
    return RoundOutcome(questions, own, published, collected, external, step)
