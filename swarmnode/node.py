"""The node: SAPO rounds one after another (docs/DESIGN.md §1), resumable, reporting as it goes.

`run_round` is the whole algorithm, top to bottom; everything else here is start-up and shutdown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from swarmnode import __version__
from swarmnode.config import CONFIG_FILENAME, NodeConfig, config_yaml
from swarmnode.files import DataDirLock, atomic_write_bytes, remove_stale_temp_files
from swarmnode.learn.checkpoint import Checkpointer, TrainingState
from swarmnode.learn.evaluation import evaluate, held_out_tasks
from swarmnode.learn.learner import HealthMonitor, Learner
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import TaskSuite
from swarmnode.net import peerbook
from swarmnode.net.census import BeaconService, Census
from swarmnode.net.dht import TrafficSnapshot
from swarmnode.net.gossip import CollectResult, Gossip, PublishResult
from swarmnode.net.reachability import network_warnings
from swarmnode.ops.metrics import MOVING_AVERAGE_ROUNDS, TRAINING_QUANTITIES, Metrics, RoundRecord, Status
from swarmnode.wire.address import Reachability
from swarmnode.wire.beacon import Beacon
from swarmnode.wire.envelope import Reason
from swarmnode.wire.identity import IDENTITY_FILENAME, load_or_create_identity

COUNTERS = ("rollouts_out_total", "rollouts_in_total", "trained_external_groups_total", "collapses")

LogFn = Callable[[dict[str, Any]], None]


class Stopped(Exception):
    """A stop was requested between two phases of a round; the round is abandoned, not half-applied."""


def derive_seed(peer_id: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{peer_id}".encode()).digest()[:4], "big")


class Node:
    def __init__(self, config: NodeConfig, data_dir: Path, log: LogFn, stop: threading.Event | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.log = log
        self.stop = stop or threading.Event()
        self.round = 0
        self.gossip: Gossip | None = None
        self.beacons: BeaconService | None = None
        self.http_server = None
        self._traffic = TrafficSnapshot()  # the DHT traffic counted up to the last round's end
        self._beacon_failures = 0  # windows in a row whose beacon no peer stored
        self._beacon_warned = False  # shown for this streak of failures
        self._lock = DataDirLock(self.data_dir)
        self._phase_seconds: dict[str, float] = {}
        self._saved = (0, time.monotonic())  # (round, monotonic time) of the last checkpoint
        self._dht_refused: Counter[str] = Counter()
        self._peers_supplied = False  # peers' groups passed the intake last round (transplant then asks only I)
        self.warnings: list[str] = []
        self.held_out: dict[str, dict] = {}  # "base" (round 0) and "last" held-out evaluations, as dicts

    def start(self) -> None:
        """Lock the data dir, load identity, model and last checkpoint, join the swarm, serve metrics."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        remove_stale_temp_files(self.data_dir)
        atomic_write_bytes(self.data_dir / CONFIG_FILENAME, config_yaml(self.config).encode())
        identity_path = self.data_dir / IDENTITY_FILENAME
        self.identity = load_or_create_identity(identity_path)
        config = self.config
        policy = Policy.load(
            config.model.name, device=config.model.device, dtype=config.model.dtype,
            lora=config.model.lora, threads=config.model.threads,
        )
        suite = TaskSuite.of(config.tasks)
        peer_id = self.identity.peer_id
        seed = config.seed if config.seed is not None else derive_seed(peer_id, "node")
        data_seed = config.tasks.seed if config.tasks.seed is not None else derive_seed(peer_id, "tasks")
        self.learner = Learner.of(config, policy, suite, seed, data_seed)
        self.health = HealthMonitor()
        self.checkpointer = Checkpointer(
            self.data_dir / "checkpoints", config.checkpoint.keep_last, config.checkpoint.max_disk_gb * 1e9
        )
        self.checkpointer.remove_stale_staging()
        state = self.checkpointer.load(policy.model, self.learner.trainer.optimizer)
        self.status = Status(
            peer_id=peer_id, swarm_id=config.swarm.id, model_id=policy.model_id, device=str(policy.device),
            dtype=str(policy.compute_dtype).removeprefix("torch."), parameters=policy.parameters,
            trainable_parameters=policy.trainable_parameters,
        )
        self.status.gossip_enabled = config.gossip.enabled
        self.metrics = Metrics(self.data_dir / "metrics.jsonl", self.status)
        if state is not None:
            self.learner.restore(state)
            self.health.restore(state.health)
            self.round = state.round
            self._saved = (state.round, time.monotonic())
            for name in COUNTERS:
                setattr(self.status, name, state.counters.get(name, 0))
            self.status.rejected_total = dict(state.counters.get("rejected_total", {}))
            self.status.round = state.round
            self.held_out = dict(state.held_out)
            self.metrics.event(f"resumed from checkpoint at round {state.round}")
        self.held_out_tasks = held_out_tasks(suite, config.eval.questions_per_family) if config.eval.every_rounds else []
        self.metrics.set_held_out(self.held_out.get("base"), self.held_out.get("last"))
        if config.gossip.enabled:
            known = peerbook.fallback_peers(config.network, peerbook.load(self.data_dir), peer_id)
            network = config.network.model_copy(update={"fallback_peers": known})
            self.gossip = Gossip(
                self.identity, identity_path, config.swarm, network, config.gossip, intake=self.learner.intake
            )
            self.gossip.start()
            self.gossip.start_refreshing()
            self._traffic = self.gossip.dht.traffic()  # joining is not the first round's traffic
            if state is not None:
                self.gossip.next_sequence = max(self.gossip.next_sequence, state.sequence)
            self._update_reachability()
            if config.gossip.beacon:
                self.beacons = BeaconService(
                    self.gossip.dht, self.identity, self.gossip.rules, self._beacon, self._census_taken,
                    timeout_s=config.gossip.publish_timeout_s,
                )
                self.beacons.start()
        if config.metrics.port is not None:
            census = self.beacons.full_census if self.beacons is not None else None
            self.http_server = self.metrics.serve(config.metrics.host, config.metrics.port, census=census)
        self.log({
            "event": "started", "peer_id": peer_id, "maddrs": self.status.maddrs, "model": policy.model_id,
            "device": self.status.device, "dtype": self.status.dtype, "parameters": policy.parameters,
            "trainable_parameters": policy.trainable_parameters,
            "micro_batch_size": self.learner.trainer.micro_batch_size,
            "memory_plan": plan.describe() if (plan := self.learner.trainer.memory_plan) else None,
            "swarm": config.swarm.id, "round": self.round, "data_dir": str(self.data_dir),
            "metrics_url": self.metrics_url, "reachability": self.status.reachability,
            "reachability_detail": self.status.reachability_detail, "dht_mode": self.status.dht_mode,
            "port_mapping": self.status.port_mapping,
        })
        self.warnings = network_warnings(config.network.host, config.network.initial_peers) if self.gossip else []
        for warning in self.warnings:
            self._warn("network_warning", warning)
        plan = self.learner.trainer.memory_plan
        if plan is not None and not plan.fits:
            self._warn("memory_tight", f"training memory estimate: {plan.describe()}")

    @property
    def metrics_url(self) -> str | None:
        if self.http_server is None:
            return None
        host, port = self.http_server.server_address[:2]
        return f"http://{host}:{port}"

    def run(self, max_rounds: int | None = None) -> None:
        """Rounds until `max_rounds` more are done or a stop is requested; always ends with a checkpoint."""
        done = 0
        try:
            while not self.stop.is_set() and (max_rounds is None or done < max_rounds):
                try:
                    record = self.run_round()
                except Stopped:
                    self.metrics.event(f"stop requested: round {self.round + 1} abandoned")
                    break
                done += 1
                self.log({"event": "round", **record.__dict__})
        finally:
            self.metrics.set_phase("checkpoint")
            self.save_checkpoint()

    def run_round(self) -> RoundRecord:
        """One SAPO round: sample and score, share, collect and rescore, train, report, checkpoint (a save's
        seconds appear in the next round's record, as the time between two records includes it)."""
        learner, sapo = self.learner, self.config.sapo
        held_out = None
        if self._evaluation_due():
            with self._phase("evaluate"):
                held_out = self._evaluate()
        questions = sapo.questions_to_ask(self._peers_supplied)
        with self._phase("generate"):
            own = learner.sample_round(share_logprobs=True, questions=questions)
        with self._phase("publish"):
            published = self._publish(own.rollouts)
        with self._phase("collect"):
            collected = self._collect(sapo.external_groups * self.config.intake.collect_oversample)
        with self._phase("rescore"):
            external = learner.external_groups(collected.rollouts)
            self._report_offences(external.offenders)
            self._peers_supplied = bool(external.groups)
        with self._phase("train"):
            step = learner.train(own.groups, external.groups)
        if step.out_of_memory:
            self._warn(
                "out_of_memory", f"training ran out of memory {step.out_of_memory} time(s): micro-batch now "
                f"{step.micro_batch_size}" + (f"; {step.skipped_reason}" if step.skipped_reason else ""),
            )
        self.round += 1
        traffic = self._round_traffic()
        if self.gossip is not None:
            self._update_reachability()
        collapsed = self.health.observe(own.mean_reward, own.answer_rate)
        if collapsed:
            self.metrics.event(f"collapse detected at round {self.round}: answer rate {own.answer_rate:.2f}")
        record = RoundRecord(
            round=self.round,
            time=time.time(),
            reward_local=own.mean_reward,
            reward_external=external.mean_reward,
            answer_rate=own.answer_rate,
            loss=step.loss,
            skipped=step.skipped_reason,
            questions=questions,
            groups_own=step.own_groups,
            groups_external=step.external_groups,
            tokens_trained=step.own_tokens + step.external_tokens,
            tokens_generated=own.generated_tokens,
            tokens_per_s=own.generated_tokens / max(own.seconds, 1e-9),
            seconds=dict(self._phase_seconds),
            peers=self.gossip.num_peers() if self.gossip else 0,
            rollouts_out=len(own.rollouts) if published.ok else 0,
            rollouts_in=len(collected.rollouts),
            rejected=dict(collected.rejected + external.rejected + self._new_dht_refusals()),
            published=published.ok,
            collapsed=collapsed,
            publish_replicas=published.replicas,
            published_local_only=published.stored_locally and not published.ok,
            collect_timed_out=collected.timed_out,
            rollouts_in_by_peer=dict(Counter(item.signer for item in collected.rollouts)),
            reachability=self.status.reachability,
            bytes_in=traffic.bytes_in,
            bytes_out=traffic.bytes_out,
            updates=step.updates,
            **{quantity: getattr(step, quantity) for quantity in TRAINING_QUANTITIES},
            held_out=held_out,
        )
        self._phase_seconds = {}
        self.metrics.record(record)  # before the checkpoint: a kill in between repeats a round, never loses its line
        with self._phase("checkpoint", may_stop=False):
            if self._checkpoint_due():
                self.save_checkpoint()
        self.metrics.set_phase("idle")
        return record

    def _evaluation_due(self) -> bool:
        """At round 0 (the base model) and every `eval.every_rounds` rounds, once (a resumed node does not redo it)."""
        every, last = self.config.eval.every_rounds, self.held_out.get("last")
        return every > 0 and self.round % every == 0 and (last is None or last["after_rounds"] != self.round)

    def _evaluate(self) -> dict:
        """The held-out set under the current policy: kept as base (round 0) and last, shown and logged."""
        learner = self.learner
        result = evaluate(
            learner.policy, learner.suite, self.held_out_tasks, learner.settings, self.config.eval.samples_per_question
        )
        data = dataclasses.replace(result, after_rounds=self.round).to_dict()
        if self.round == 0:
            self.held_out["base"] = data
        self.held_out["last"] = data
        self.metrics.set_held_out(self.held_out.get("base"), data)
        self.metrics.event(
            f"held-out after round {self.round}: greedy {result.greedy:.3f}, sampled {result.sampled:.3f} ({result.seconds:.1f} s)"
        )
        self.log({
            "event": "held_out", "after_rounds": self.round, "greedy": round(result.greedy, 4),
            "sampled": round(result.sampled, 4), "seconds": round(result.seconds, 3),
        })
        return data

    def _publish(self, rollouts: list) -> PublishResult:
        if self.gossip is None:
            return PublishResult(ok=False, window=0, sequence=0, frame_bytes=0, latency_s=0.0, error="gossip disabled")
        try:
            result = self.gossip.publish(
                rollouts, model_id=self.learner.policy.model_id, suite_version=self.learner.suite.version
            )
        except Exception as error:  # gossip must never stop training; the failure is shown and counted
            result = PublishResult(False, 0, 0, 0, 0.0, f"{type(error).__name__}: {error}")
        if not result.ok and self.gossip.num_peers() > 0:  # alone (e.g. founding a swarm) is not a failure
            self._warn(
                "publish_failed", f"publish failed: {result.error}; training continues on own rollouts",
                seconds=round(result.latency_s, 3), stored_locally=result.stored_locally,
            )
        return result

    def _collect(self, max_rollouts: int) -> CollectResult:
        if self.gossip is None or max_rollouts == 0:
            return CollectResult([], Counter(), 0, 0, 0.0, False)
        try:
            result = self.gossip.collect(max_rollouts)
        except Exception as error:  # gossip must never stop training; the failure is shown and counted
            self._warn("collect_failed", f"collect failed: {type(error).__name__}: {error}")
            return CollectResult([], Counter({"collect_error": 1}), 0, 0, 0.0, True)
        if result.timed_out or result.directory_timed_out:
            self._warn(
                "collect_timed_out",
                f"collect hit its {self.config.gossip.collect_timeout_s:g} s deadline with "
                f"{len(result.rollouts)} of {max_rollouts} rollouts",
                seconds=round(result.elapsed_s, 3), rollouts=len(result.rollouts), keys_read=result.keys_read,
            )
        return result

    def _warn(self, event: str, message: str, **fields: Any) -> None:
        """A problem the volunteer should see: a JSON log event, a dashboard line and a counter by kind."""
        self.log({"event": event, "round": self.round + 1, "message": message, **fields})
        self.metrics.problem(event, message)

    def _update_reachability(self) -> None:
        """Reachability can change (peers re-check it now and then): show what holds now."""
        gossip = self.gossip
        report = gossip.reachability
        self.metrics.set_reachability(
            report.reachability.value, report.describe(), "client" if gossip.dht.client_mode else "server",
            gossip.dht.port_mapping, gossip.advertised_maddrs,
        )

    def _round_traffic(self) -> TrafficSnapshot:
        """All DHT traffic of this peer since the last round (beacons and requests served for others included)."""
        if self.gossip is None:
            return TrafficSnapshot()
        total = self.gossip.dht.traffic()
        new, self._traffic = total - self._traffic, total
        return new

    def _beacon(self, window: int, now: float) -> Beacon:
        """What this node tells the swarm about itself (PROTOCOL.md §4.2); read from the beacon thread."""
        status, last = self.status, self.held_out.get("last")
        seconds = status.round_seconds[-MOVING_AVERAGE_ROUNDS:]
        rewards = status.rewards[-MOVING_AVERAGE_ROUNDS:]
        hours = sum(seconds) / 3600
        rounds_per_hour = len(seconds) / hours if hours > 0 else 0.0
        rollouts_per_hour = sum(status.questions[-MOVING_AVERAGE_ROUNDS:]) / hours if hours > 0 else 0.0
        return Beacon(
            swarm_id=self.config.swarm.id, window=window, timestamp=now, software=f"swarmnode/{__version__}",
            model_id=status.model_id, round=status.round,
            reward=statistics.fmean(rewards) if rewards else None,
            held_out=last["greedy"] if last else None, held_out_round=last["after_rounds"] if last else 0,
            rollouts_shared=status.rollouts_out_total, rollouts_received=status.rollouts_in_total,
            peer_groups_trained=status.trained_external_groups_total,
            reachability=Reachability(status.reachability), uptime_s=max(time.time() - status.started_at, 0.0),
            rounds_per_hour=rounds_per_hour, rollouts_per_hour=rollouts_per_hour,
            phase=status.phase,
        )

    def _census_taken(self, census: Census | None) -> None:
        """After each beacon (on the beacon thread): show the census, and warn once when beacons failed two
        windows in a row while peers exist (one failure can be a restart within the window, whose earlier
        beacon still stands; alone, e.g. founding a swarm, nobody can store them)."""
        beacons = self.beacons
        if beacons is None:
            return
        if census is not None:
            self.metrics.set_census(census)
        elif beacons.census_error is not None:
            self.metrics.event(f"census failed: {beacons.census_error}")
        self._beacon_failures = 0 if beacons.last_error is None else self._beacon_failures + 1
        if self._beacon_failures == 0:
            self._beacon_warned = False
        elif self._beacon_failures >= 2 and not self._beacon_warned and self.gossip is not None and self.gossip.num_peers() > 0:
            self._beacon_warned = True
            self._warn("beacon_failed", f"beacon not published: {beacons.last_error}; the swarm does not list this node")

    def _new_dht_refusals(self) -> Counter[str]:
        """Records our DHT peer refused since the last round (to store, or in a peer's answer), as
        `dht_<reason>`: nothing reaches the collector from them, but a volunteer should see the attack."""
        if self.gossip is None:
            return Counter()
        total = Counter({f"dht_{reason}": count for reason, count in self.gossip.stats.refused_records.items()})
        new, self._dht_refused = total - self._dht_refused, total
        return new

    def _report_offences(self, offenders: list[tuple[str, str]]) -> None:
        if self.gossip is None:
            return
        for peer_id, reason in offenders:
            self.gossip.report_offence(peer_id, Reason(reason))

    @contextlib.contextmanager
    def _phase(self, name: str, may_stop: bool = True) -> Iterator[None]:
        if may_stop and self.stop.is_set():
            raise Stopped(name)
        self.metrics.set_phase(name)
        started = time.perf_counter()
        yield
        self._phase_seconds[name] = time.perf_counter() - started

    def _checkpoint_due(self) -> bool:
        every = self.config.checkpoint
        rounds_since, seconds_since = self.round - self._saved[0], time.monotonic() - self._saved[1]
        return rounds_since >= every.every_rounds and seconds_since >= every.min_interval_s

    def save_checkpoint(self) -> None:
        state = TrainingState(
            round=self.round,
            sequence=self.gossip.next_sequence if self.gossip else 0,
            counters={name: getattr(self.status, name) for name in COUNTERS}
            | {"rejected_total": self.status.rejected_total},
            health=self.health.state(),
            held_out=self.held_out,
        )
        saved = self.checkpointer.save(self.learner.policy.model, self.learner.trainer.optimizer, self.learner.capture(state))
        self._saved = (self.round, time.monotonic())
        self.metrics.set_checkpoint(saved.path.name, saved.size, saved.seconds, saved.disk)
        if self.gossip is not None and self.gossip.dht.entry_peers:
            peerbook.save(self.data_dir, [*peerbook.load(self.data_dir), *self.gossip.dht.entry_maddrs()])

    def close(self) -> None:
        """Leave the swarm and release the data dir; safe to call more than once."""
        if self.http_server is not None:  # first: a /census request would read a closing DHT
            self.http_server.shutdown()
            self.http_server.server_close()
            self.http_server = None
        if self.beacons is not None:
            self.beacons.stop()
            self.beacons = None
        if self.gossip is not None:
            self.gossip.close()
            self.gossip = None
        self._lock.release()
