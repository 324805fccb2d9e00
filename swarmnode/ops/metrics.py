"""What the node reports: one record per round (JSON lines on disk), Prometheus metrics, and a Status
snapshot served as JSON at /status for the dashboard. All of it binds to the configured host only.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from swarmnode.wire.address import Reachability

if TYPE_CHECKING:
    from swarmnode.learn.round import RoundOutcome
    from swarmnode.net.census import Census

HISTORY_ROUNDS = 240
MOVING_AVERAGE_ROUNDS = 10
# what a training step reports (sapo.StepStats), per round in RoundRecord and as swarmnode_training{quantity}
TRAINING_QUANTITIES = ("clip_fraction", "grad_norm", "kl_to_start", "importance_mean", "importance_max", "external_token_share")
RECENT_EVENTS = 30


@dataclass
class RoundRecord:
    """One line of metrics.jsonl: everything a person or a plot needs about one round."""

    round: int
    time: float
    reward_local: float
    reward_external: float | None
    answer_rate: float
    loss: float
    skipped: str | None
    groups_own: int
    groups_external: int  # peers' groups trained on
    tokens_trained: int
    tokens_generated: int
    tokens_per_s: float
    seconds: dict[str, float]  # phase -> seconds: generate, publish, collect, rescore, train, checkpoint
    rollouts_out: int
    rollouts_in: int
    rejected: dict[str, int]  # reason -> count in this round
    published: bool  # stored by at least one other peer
    collapsed: bool = False
    peers: int = 0  # DHT peers in the routing table at the round's end (0 in the simulator)
    questions: int = 0  # asked this round (sapo.sampling: transplant asks I while peers supply groups)
    groups_external_informative: int = 0  # peers' groups past the intake with an advantage: what "supplied" means
    publish_replicas: int = 0  # other peers that accepted this round's batch
    published_local_only: bool = False  # only our own copy was stored: not published
    collect_timed_out: bool = False
    thin_reads: int = 0  # keys of this round's collect too few of whose replicas answered
    rollouts_in_by_peer: dict[str, int] = field(default_factory=dict)  # signer peer id -> rollouts collected
    reachability: str = "unknown"
    # DHT traffic of this peer during the round (protobuf bytes, requests served for others and beacons included)
    bytes_in: int = 0
    bytes_out: int = 0
    # what training did (docs/DESIGN.md §2): 0 updates when the step was skipped
    updates: int = 0
    clip_fraction: float = 0.0
    grad_norm: float = 0.0
    kl_to_start: float | None = None
    importance_mean: float = 1.0
    importance_max: float = 1.0
    external_token_share: float = 0.0
    # the held-out evaluation run at the start of this round (of the policy after `after_rounds` rounds), if any
    held_out: dict[str, Any] | None = None
    # on the first record of a run that found earlier rounds on file: the round it picked up from (its checkpoint's,
    # 0 for the base model); later lines from that round on replace the earlier ones (see read_records)
    resumed_from: int | None = None

    @classmethod
    def of(
        cls, outcome: RoundOutcome, *, round: int, seconds: dict[str, float], collapsed: bool,
        refused: Counter[str] | None = None, **context: Any,
    ) -> RoundRecord:
        """The record of a played round (`swarmnode.learn.round`), the node's and the simulator's alike; `refused`
        adds refusals the round itself did not see (the DHT's), `context` the fields only a node knows."""
        own, step, published, collected = outcome.own, outcome.step, outcome.published, outcome.collected
        return cls(
            round=round,
            time=time.time(),
            reward_local=own.mean_reward,
            reward_external=outcome.external.mean_reward,
            answer_rate=own.answer_rate,
            loss=step.loss,
            skipped=step.skipped_reason,
            questions=outcome.questions,
            groups_own=step.own_groups,
            groups_external=step.external_groups,
            groups_external_informative=sum(group.informative for group in outcome.external.groups),
            tokens_trained=step.own_tokens + step.external_tokens,
            tokens_generated=own.generated_tokens,
            tokens_per_s=own.generated_tokens / max(own.seconds, 1e-9),
            seconds=seconds,
            rollouts_out=len(own.rollouts) if published.ok else 0,
            rollouts_in=len(collected.rollouts),
            rejected=dict(collected.rejected + outcome.external.rejected + (refused or Counter())),
            published=published.ok,
            collapsed=collapsed,
            publish_replicas=published.replicas,
            published_local_only=published.stored_locally and not published.ok,
            collect_timed_out=collected.timed_out,
            rollouts_in_by_peer=dict(Counter(item.signer for item in collected.rollouts)),
            updates=step.updates,
            **{quantity: getattr(step, quantity) for quantity in TRAINING_QUANTITIES},
            **context,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass
class Status:
    """A plain snapshot of the node; the dashboard renders only this, so it works from a file or HTTP."""

    peer_id: str = ""
    swarm_id: str = ""
    model_id: str = ""
    device: str = ""  # where the policy runs, e.g. cpu or cuda:0
    dtype: str = ""  # compute dtype of its forward passes (weights stay float32)
    parameters: int = 0
    trainable_parameters: int = 0  # fewer than parameters with LoRA
    threads: int = 0  # CPU threads it computes on (model.threads; auto: the CPUs it may use)
    maddrs: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    round: int = 0
    phase: str = "starting"
    phase_progress: str = ""  # how far a long phase is, e.g. "32/160" questions evaluated; "" when not told
    rewards: list[float] = field(default_factory=list)  # local reward per round, most recent last
    external_rewards: list[float | None] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    tokens_per_s: float = 0.0
    questions: list[int] = field(default_factory=list)  # asked per round (transplant asks I while peers supply)
    peers: int = 0
    rollouts_out_total: int = 0
    rollouts_in_total: int = 0
    trained_external_groups_total: int = 0
    rejected_total: dict[str, int] = field(default_factory=dict)
    last_phase_seconds: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    gossip_enabled: bool = True
    collapses: int = 0
    reachability: str = "unknown"  # public | private | unknown (docs/DESIGN.md §6)
    reachability_detail: str = ""
    dht_mode: str = "server"
    port_mapping: str = "off"
    published_local_only_total: int = 0
    thin_reads_total: int = 0  # keys a collect read from too few replicas: what a liar at such a key hides looks empty
    problems_total: dict[str, int] = field(default_factory=dict)  # kind -> count: publish_failed, ...
    # held-out pass rates per family, {"greedy": x, "sampled": y}: of the base model and of the latest evaluation
    held_out_base: dict[str, dict[str, float]] = field(default_factory=dict)
    held_out_last: dict[str, dict[str, float]] = field(default_factory=dict)
    held_out_round: int | None = None
    traffic_in_per_s: list[float] = field(default_factory=list)  # DHT bytes per second, per round
    traffic_out_per_s: list[float] = field(default_factory=list)
    max_kbps: float | None = None  # network.max_kbps: the cap on that traffic, in and out together; None: none
    census: dict[str, Any] | None = None  # the node's latest census (census.Census.to_json)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def beacon_fields(self, now: float) -> dict[str, Any]:
        """The beacon's fields this snapshot knows (`swarmnode.wire.beacon.Beacon`): what the node tells the swarm
        once an epoch, and what the dashboard shows of this node between two beacons. Rates and reward are over
        the last MOVING_AVERAGE_ROUNDS rounds."""
        seconds = self.round_seconds[-MOVING_AVERAGE_ROUNDS:]
        rewards = self.rewards[-MOVING_AVERAGE_ROUNDS:]
        hours = sum(seconds) / 3600
        return {
            "model_id": self.model_id, "round": self.round, "reward": statistics.fmean(rewards) if rewards else None,
            "rollouts_shared": self.rollouts_out_total, "rollouts_received": self.rollouts_in_total,
            "peer_groups_trained": self.trained_external_groups_total, "reachability": Reachability(self.reachability),
            "uptime_s": max(now - self.started_at, 0.0), "phase": self.phase,
            "rounds_per_hour": len(seconds) / hours if hours > 0 else 0.0,
            "rollouts_per_hour": sum(self.questions[-MOVING_AVERAGE_ROUNDS:]) / hours if hours > 0 else 0.0,
        }


class Metrics:
    """Keeps the Status, appends metrics.jsonl, and feeds a private Prometheus registry."""

    def __init__(self, jsonl_path: Path | None, status: Status) -> None:
        self.jsonl_path = jsonl_path
        self.status = status
        self._lock = threading.Lock()
        self._events: deque[str] = deque(maxlen=RECENT_EVENTS)
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = PromCounter("swarmnode_rounds", "Rounds completed", registry=r)
        self.reward = Gauge("swarmnode_reward_local", "Mean reward of own completions, last round", registry=r)
        self.reward_external = Gauge("swarmnode_reward_external", "Mean rescored reward of peers' groups", registry=r)
        self.loss = Gauge("swarmnode_loss", "SAPO loss of the last step", registry=r)
        self.peers = Gauge("swarmnode_peers", "DHT peers in the routing table", registry=r)
        self.tokens_per_s = Gauge("swarmnode_generate_tokens_per_second", "Sampling throughput", registry=r)
        self.rollouts_out = PromCounter("swarmnode_rollouts_published", "Rollouts published", registry=r)
        self.rollouts_in = PromCounter("swarmnode_rollouts_collected", "Verified rollouts collected", registry=r)
        self.groups = PromCounter("swarmnode_groups_trained", "Groups trained on", ["source"], registry=r)
        self.rejected = PromCounter("swarmnode_rejected", "Frames or rollouts refused", ["reason"], registry=r)
        self.skipped = PromCounter("swarmnode_steps_skipped", "Training steps skipped", registry=r)
        self.collapses = PromCounter("swarmnode_collapses", "Collapse detections", registry=r)
        self.problems = PromCounter(
            "swarmnode_problems", "Problems by kind: publish_failed, collect_timed_out, collect_failed, beacon_failed, p2pd_died, p2pd_restart_failed, out_of_memory, memory_tight, checkpoint_failed", ["kind"], registry=r
        )
        self.local_only = PromCounter(
            "swarmnode_published_local_only", "Rounds whose batch only this node stored (not published)", registry=r
        )
        self.thin_reads = PromCounter(
            "swarmnode_thin_reads", "DHT keys a collect read from too few of their replicas (records there may be hidden)",
            registry=r,
        )
        self.replicas = Gauge("swarmnode_publish_replicas", "Other peers that stored the last batch", registry=r)
        self.training = Gauge(
            "swarmnode_training", "Last step: clip_fraction, grad_norm, kl_to_start, importance_mean, "
            "importance_max, external_token_share", ["quantity"], registry=r,
        )
        self.held_out = Gauge(
            "swarmnode_held_out_pass_rate", "Held-out pass rate per family: greedy or sampled, of the base model "
            "(at=base) or the latest evaluation (at=last)", ["family", "mode", "at"], registry=r,
        )
        self.reachability = Gauge(
            "swarmnode_reachability", "1 for the node's reachability (public, private, unknown)", ["state"], registry=r
        )
        # the swarm as the node's latest census saw it; no label comes from a peer (a peer could mint millions)
        self.swarm = Gauge(
            "swarmnode_swarm", "Latest census: nodes, models, rounds_per_hour, rollouts_per_hour (scaled up when "
            "the census read only some buckets: see swarmnode_swarm_census_complete)", ["quantity"], registry=r,
        )
        self.swarm_reachability = Gauge(
            "swarmnode_swarm_nodes_by_reachability", "Live nodes the latest census saw, by reachability (not scaled up)",
            ["state"], registry=r
        )
        self.census_complete = Gauge("swarmnode_swarm_census_complete", "1 if the latest census read every bucket", registry=r)
        self.beacons_refused = PromCounter(
            "swarmnode_beacons_refused", "Peers' beacons that failed their checks in a census", ["reason"], registry=r
        )
        self.checkpoint_bytes = Gauge("swarmnode_checkpoint_bytes", "Size of the last checkpoint on disk", registry=r)
        self.checkpoint_seconds = Gauge(
            "swarmnode_checkpoint_seconds", "Seconds the last checkpoint took: write, fsync, rename, prune", registry=r
        )
        self.checkpoints_disk = Gauge("swarmnode_checkpoints_disk_bytes", "Bytes of all checkpoints kept", registry=r)
        self.phase_seconds = Histogram(
            "swarmnode_phase_seconds", "Seconds per round phase", ["phase"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )

    def event(self, message: str) -> None:
        with self._lock:
            self._events.append(f"{time.strftime('%H:%M:%S')} {message}")
            self.status.events = list(self._events)

    def set_phase(self, phase: str, progress: str = "") -> None:
        self.status.phase, self.status.phase_progress = phase, progress

    def problem(self, kind: str, message: str) -> None:
        """Something a volunteer must see: counted by kind and shown as an event."""
        self.problems.labels(kind).inc()
        with self._lock:
            self.status.problems_total[kind] = self.status.problems_total.get(kind, 0) + 1
        self.event(message)

    def set_held_out(self, base: dict[str, Any] | None, last: dict[str, Any] | None) -> None:
        """Evaluations as EvalResult.to_dict(): gauges and the dashboard's base -> now per family."""
        for at, result in (("base", base), ("last", last)):
            for family, score in (result or {}).get("families", {}).items():
                for mode in ("greedy", "sampled"):
                    self.held_out.labels(family, mode, at).set(score[mode])
        with self._lock:
            status = self.status
            status.held_out_base = _pass_rates(base)
            status.held_out_last = _pass_rates(last)
            status.held_out_round = last["after_rounds"] if last else None

    def set_reachability(self, state: str, detail: str, dht_mode: str, port_mapping: str, maddrs: list[str]) -> None:
        for known in ("public", "private", "unknown"):
            self.reachability.labels(known).set(1 if known == state else 0)
        with self._lock:
            status = self.status
            status.reachability, status.reachability_detail = state, detail
            status.dht_mode, status.port_mapping, status.maddrs = dht_mode, port_mapping, list(maddrs)

    def set_checkpoint(self, name: str, size: int, seconds: float, disk: int) -> None:
        """A save: gauges, and an event that tells a volunteer what checkpoints cost their disk and time."""
        self.checkpoint_bytes.set(size)
        self.checkpoint_seconds.set(seconds)
        self.checkpoints_disk.set(disk)
        self.event(f"checkpoint {name} ({_size_text(size)} in {seconds:.1f} s; {_size_text(disk)} kept in all)")

    def set_census(self, census: Census) -> None:
        """The node's latest census: gauges and the dashboard's swarm table."""
        totals = census.totals()
        for quantity in ("nodes", "models", "rounds_per_hour", "rollouts_per_hour"):
            self.swarm.labels(quantity).set(getattr(totals, quantity))
        for state in ("public", "private", "unknown"):
            self.swarm_reachability.labels(state).set(totals.reachability.get(state, 0))
        self.census_complete.set(int(census.complete))
        for reason, count in census.refused.items():
            self.beacons_refused.labels(reason).inc(count)
        snapshot = census.to_json()
        with self._lock:
            self.status.census = snapshot

    def record(self, record: RoundRecord) -> None:
        self.rounds.inc()
        self.reward.set(record.reward_local)
        if record.reward_external is not None:
            self.reward_external.set(record.reward_external)
        self.loss.set(record.loss)
        self.peers.set(record.peers)
        self.tokens_per_s.set(record.tokens_per_s)
        self.rollouts_out.inc(record.rollouts_out)
        self.rollouts_in.inc(record.rollouts_in)
        self.groups.labels("own").inc(record.groups_own)
        self.groups.labels("external").inc(record.groups_external)
        for reason, count in record.rejected.items():
            self.rejected.labels(reason).inc(count)
        if record.skipped:
            self.skipped.inc()
        if record.collapsed:
            self.collapses.inc()
        self.replicas.set(record.publish_replicas)
        if record.updates:
            for quantity in TRAINING_QUANTITIES:
                value = getattr(record, quantity)
                if value is not None:
                    self.training.labels(quantity).set(value)
        if record.published_local_only:
            self.local_only.inc()
        self.thin_reads.inc(record.thin_reads)
        for phase, seconds in record.seconds.items():
            self.phase_seconds.labels(phase).observe(seconds)
        with self._lock:
            s = self.status
            s.round = record.round
            s.rewards = (s.rewards + [record.reward_local])[-HISTORY_ROUNDS:]
            s.external_rewards = (s.external_rewards + [record.reward_external])[-HISTORY_ROUNDS:]
            s.losses = (s.losses + [record.loss])[-HISTORY_ROUNDS:]
            seconds = max(sum(record.seconds.values()), 1e-9)
            s.round_seconds = (s.round_seconds + [sum(record.seconds.values())])[-HISTORY_ROUNDS:]
            s.traffic_in_per_s = (s.traffic_in_per_s + [record.bytes_in / seconds])[-HISTORY_ROUNDS:]
            s.traffic_out_per_s = (s.traffic_out_per_s + [record.bytes_out / seconds])[-HISTORY_ROUNDS:]
            s.tokens_per_s = record.tokens_per_s
            s.questions = (s.questions + [record.questions])[-HISTORY_ROUNDS:]
            s.peers = record.peers
            s.rollouts_out_total += record.rollouts_out
            s.rollouts_in_total += record.rollouts_in
            s.trained_external_groups_total += record.groups_external
            s.rejected_total = dict(Counter(s.rejected_total) + Counter(record.rejected))  # kept across restarts
            s.last_phase_seconds = record.seconds
            s.collapses += int(record.collapsed)
            s.published_local_only_total += int(record.published_local_only)
            s.thin_reads_total += record.thin_reads
        if self.jsonl_path is not None:
            with open(self.jsonl_path, "a") as handle:
                handle.write(record.to_json() + "\n")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.status)


def _size_text(size: int) -> str:
    """Disk sizes as disks are sold: 5.9 GB, 12.4 MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _pass_rates(result: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    if not result:
        return {}
    return {family: {"greedy": score["greedy"], "sampled": score["sampled"]} for family, score in result["families"].items()}


def read_records(path: Path) -> list[RoundRecord]:
    """metrics.jsonl back into the run's surviving history, one record per round, rounds going up.

    A node killed after its last checkpoint resumes from it and plays the rounds since again, so the file holds
    1, 2, 3, 4, then 3, 4 again. The weights descend from the second 3 and 4 only; the first ones were lost with
    the process, so a record replaces every earlier one of its round or later (files written before
    `resumed_from` existed read the same). A torn last line (a crash mid-write) is skipped.
    """
    records: list[RoundRecord] = []
    for line in Path(path).read_text().splitlines():
        try:
            record = RoundRecord(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        while records and records[-1].round >= record.round:
            records.pop()
        records.append(record)
    return records
