"""An in-process swarm: N learners that play the node's own round (`swarmnode.learn.round.play_round`) and share
rollouts in memory instead of over a DHT, to measure what sharing does to learning, quickly and repeatably.

Each simulated node plays its rounds on a thread of its own. A barrier between publish and collect keeps them
in lockstep (every node collects from what every other published this round, dealt in node order from one
seeded RNG), and one node computes at a time, so each node's phase seconds are its own. Every random choice
is a node's own or the dealer's: a run with the same seed is the same run.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from swarmnode.config import NodeConfig
from swarmnode.learn.health import HealthMonitor
from swarmnode.learn.learner import Learner
from swarmnode.learn.policy import Policy
from swarmnode.learn.round import play_round
from swarmnode.learn.tasks import TaskSuite
from swarmnode.net.gossip import CollectResult, PublishResult
from swarmnode.ops.metrics import RoundRecord
from swarmnode.wire.rollout import PeerRollout, Rollout

COMPUTE_PHASES = ("generate", "rescore", "train")


@dataclass(frozen=True)
class SimulatedNode:
    """What differs between nodes: config (I/J, families, safeguards) and model."""

    config: NodeConfig
    model: str


@dataclass
class SimulatedRun:
    """One simulated node's run: what it ran, and the node's own record of every round."""

    name: str
    model: str
    families: list[str]
    records: list[RoundRecord] = field(default_factory=list)

    def series(self) -> dict:
        """The per-round series the benchmarks store and plot; compute is generate + rescore + train, as a node
        times them."""
        records = self.records
        return {
            "name": self.name,
            "model": self.model,
            "families": self.families,
            "rewards": [record.reward_local for record in records],
            "answer_rates": [record.answer_rate for record in records],
            "own_groups": [record.groups_own for record in records],
            "external_groups": [record.groups_external for record in records],
            "own_tokens": [round(record.tokens_trained * (1 - record.external_token_share)) for record in records],
            "external_tokens": [round(record.tokens_trained * record.external_token_share) for record in records],
            "questions": [record.questions for record in records],
            "compute_s": [sum(record.seconds.get(phase, 0.0) for phase in COMPUTE_PHASES) for record in records],
            "generate_s": [record.seconds.get("generate", 0.0) for record in records],
            "skipped": sum(record.skipped is not None for record in records),
            "collapses": sum(record.collapsed for record in records),
            "rejected": dict(sum((Counter(record.rejected) for record in records), Counter())),
        }


class _Memory:
    """The swarm's shared memory: each node's latest rollouts, and what the dealer hands each collector."""

    def __init__(self, nodes: list[SimulatedNode], seed: int) -> None:
        self.nodes = nodes
        self.latest: list[tuple[str, Sequence[Rollout]]] = [("", ())] * len(nodes)
        self.wanted = [0] * len(nodes)
        self.incoming: list[list[PeerRollout]] = [[] for _ in nodes]
        self.barrier = threading.Barrier(len(nodes), action=self._deal)
        self.compute = threading.Lock()
        self._rng = random.Random(seed)

    def _deal(self) -> None:
        """What gossip's collect would hand each node, in node order: a random sample of the other nodes' latest
        rollouts, at most `max_rollouts_per_peer` from each, as many as the node asked for."""
        for index, node in enumerate(self.nodes):
            self.incoming[index] = []
            if self.wanted[index] == 0:
                continue
            candidates = []
            for peer, (model_id, rollouts) in enumerate(self.latest):
                if peer == index:
                    continue
                taken = self._rng.sample(list(rollouts), min(node.config.gossip.max_rollouts_per_peer, len(rollouts)))
                candidates += [PeerRollout(f"node{peer}", model_id, rollout) for rollout in taken]
            self._rng.shuffle(candidates)
            self.incoming[index] = candidates[: self.wanted[index]]


@dataclass
class _Exchange:
    """One simulated node's exchange: publish into memory, collect once every node has published."""

    memory: _Memory
    index: int

    def publish(self, rollouts: Sequence[Rollout], *, model_id: str, suite_version: str) -> PublishResult:
        self.memory.latest[self.index] = (model_id, rollouts)
        return PublishResult(True, 0, 0, 0, 0.0, replicas=len(self.memory.nodes) - 1)

    def collect(self, max_rollouts: int) -> CollectResult:
        self.memory.wanted[self.index] = max_rollouts
        self.memory.barrier.wait()
        rollouts = self.memory.incoming[self.index]
        return CollectResult(rollouts, Counter(), len({item.signer for item in rollouts}), 0, 0.0, False)

    def report_offences(self, offenders: Sequence[tuple[str, str]]) -> None:
        """Simulated peers are honest: nothing to hold against them."""


def simulate(nodes: list[SimulatedNode], rounds: int, seed: int) -> list[SimulatedRun]:
    """Run `rounds` lockstep rounds; node k's RNG seeds depend only on (seed, k), never on I/J, so every
    configuration sees the same question stream."""
    learners, runs = [], []
    for index, node in enumerate(nodes):
        torch.manual_seed(seed * 1000 + index)
        policy = Policy.load(node.model, dtype=node.config.model.dtype)
        suite = TaskSuite.of(node.config.tasks)
        learners.append(Learner.of(node.config, policy, suite, seed=seed * 1000 + index, data_seed=seed * 1000 + index))
        runs.append(SimulatedRun(f"node{index}", policy.model_id, suite.family_names()))
    memory = _Memory(nodes, seed)
    failures: list[BaseException] = []

    def play(index: int) -> None:
        health, exchange, seconds = HealthMonitor(), _Exchange(memory, index), {}

        @contextlib.contextmanager
        def phase(name: str) -> Iterator[None]:
            with memory.compute if name in COMPUTE_PHASES else contextlib.nullcontext():
                started = time.perf_counter()
                yield
                seconds[name] = time.perf_counter() - started

        try:
            for number in range(1, rounds + 1):
                seconds = {}
                outcome = play_round(learners[index], exchange, phase)
                collapsed = health.observe(outcome.own.mean_reward, outcome.own.answer_rate)
                runs[index].records.append(RoundRecord.of(outcome, round=number, seconds=seconds, collapsed=collapsed))
        except BaseException as error:  # the others must not wait at the barrier for a node that is gone
            failures.append(error)
            memory.barrier.abort()

    threads = [threading.Thread(target=play, args=(index,), name=f"simulated-node{index}") for index in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise next((error for error in failures if not isinstance(error, threading.BrokenBarrierError)), failures[0])
    return runs
