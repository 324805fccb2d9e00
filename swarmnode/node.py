"""The node: SAPO rounds one after another (docs/DESIGN.md §1), resumable, reporting as it goes.

`run_round` is one round, top to bottom: evaluate (now and then), play the round (`swarmnode.learn.round`:
sample, publish, collect, rescore, train), record it, checkpoint. The node is that round's exchange: it
publishes and collects through gossip and tells the volunteer when either fails. Everything else here is
start-up (composing the learner, the DHT peer, gossip, beacons and metrics) and shutdown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from swarmnode import __version__
from swarmnode.config import CONFIG_FILENAME, NodeConfig, config_yaml
from swarmnode.files import DataDirLock, atomic_write_bytes, prepare_data_dir, remove_stale_temp_files
from swarmnode.host import niceness
from swarmnode.learn.checkpoint import Checkpointer, CheckpointError, TrainingState
from swarmnode.learn.evaluation import evaluate, held_out_tasks
from swarmnode.learn.health import HealthMonitor
from swarmnode.learn.interrupt import Interrupted
from swarmnode.learn.learner import Learner
from swarmnode.learn.policy import Policy
from swarmnode.learn.round import play_round
from swarmnode.learn.tasks import TaskSuite
from swarmnode.net import peerbook
from swarmnode.net.census import BeaconService, Census
from swarmnode.net.gossip import CollectResult, Gossip, PublishResult
from swarmnode.net.peer import DHTPeer
from swarmnode.net.reachability import network_warnings
from swarmnode.net.start import StartError
from swarmnode.net.traffic import TrafficSnapshot
from swarmnode.ops.metrics import Metrics, RoundRecord, Status
from swarmnode.ops.server import serve
from swarmnode.wire.beacon import Beacon
from swarmnode.wire.identity import IDENTITY_FILENAME, load_or_create_identity
from swarmnode.wire.keys import PROTOCOL_VERSION
from swarmnode.wire.rollout import Rollout
from swarmnode.wire.rules import SwarmRules

COUNTERS = ("rollouts_out_total", "rollouts_in_total", "trained_external_groups_total", "collapses")

LogFn = Callable[[dict[str, Any]], None]


class DaemonLost(Exception):
    """p2pd died and could not be restarted twice in a row: one line saying why, and the node exits non-zero
    (a service manager restarts it) rather than train alone for good while it looks like a quiet swarm."""


MAX_DAEMON_RESTART_FAILURES = 2


def derive_seed(peer_id: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{peer_id}".encode()).digest()[:4], "big")


class Node:
    def __init__(self, config: NodeConfig, data_dir: Path, log: LogFn, stop: threading.Event | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.log = log
        self.stop = stop or threading.Event()
        self.round = 0
        self.peer: DHTPeer | None = None
        self.gossip: Gossip | None = None
        self.beacons: BeaconService | None = None
        self.http_server = None
        self._traffic = TrafficSnapshot()  # the DHT traffic counted up to the last round's end
        self._beacon_failures = 0  # windows in a row whose beacon no peer stored
        self._beacon_warned = False  # shown for this streak of failures
        self._lock = DataDirLock(self.data_dir)
        self._phase_seconds: dict[str, float] = {}
        self._saved = (0, time.monotonic())  # (round, monotonic time) of the last save tried
        self._dht_refused: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.held_out: dict[str, dict] = {}  # "base" (round 0) and "last" held-out evaluations, as dicts
        self.checkpoint: Path | None = None  # the newest checkpoint: the one resumed from, then each save
        self._resumed_from: int | None = None  # for the run's first record (RoundRecord.resumed_from)
        self._restart_failures = 0  # p2pd restarts failed in a row

    def start(self) -> None:
        """Lock the data dir, load identity, model and last checkpoint, join the swarm, serve metrics. A first
        start that fails leaves no data dir behind: no identity nobody uses, no config of a node that never ran."""
        made = prepare_data_dir(self.data_dir)
        try:
            self._start()
        except BaseException:
            self.close()
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            raise

    def _start(self) -> None:
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
        self.learner = Learner.of(config, policy, suite, seed, data_seed, should_stop=self.stop.is_set)
        self.health = HealthMonitor()
        self.checkpointer = Checkpointer(
            self.data_dir / "checkpoints", config.checkpoint.keep_last, config.checkpoint.max_disk_gb * 1e9
        )
        self.checkpointer.remove_stale_staging()
        state = self.learner.load(self.checkpointer)
        self.status = Status(
            peer_id=peer_id, swarm_id=config.swarm.id, model_id=policy.model_id, device=str(policy.device),
            dtype=str(policy.compute_dtype).removeprefix("torch."), parameters=policy.parameters,
            trainable_parameters=policy.trainable_parameters, threads=policy.threads,
        )
        self.status.gossip_enabled = config.gossip.enabled
        self.status.max_kbps = config.network.max_kbps if config.gossip.enabled else None
        metrics_path = self.data_dir / "metrics.jsonl"
        self.metrics = Metrics(metrics_path, self.status)
        if state is not None:
            self.checkpoint = self.checkpointer.path(state.round)
            self.health.restore(state.health)
            self.round = state.round
            self._saved = (state.round, time.monotonic())
            for name in COUNTERS:
                setattr(self.status, name, state.counters.get(name, 0))
            self.status.rejected_total = dict(state.counters.get("rejected_total", {}))
            self.status.round = state.round
            self.held_out = dict(state.held_out)
            self.metrics.event(f"resumed from checkpoint at round {state.round}")
        if metrics_path.exists() and metrics_path.stat().st_size:  # rounds on file: mark where this run picks up
            self._resumed_from = self.round
        self.held_out_tasks = held_out_tasks(suite, config.eval.questions_per_family) if config.eval.every_rounds else []
        self.metrics.set_held_out(self.held_out.get("base"), self.held_out.get("last"))
        if config.gossip.enabled:
            self._join(identity_path, state)
        if config.metrics.port is not None:
            census = self.beacons.full_census if self.beacons is not None else None
            self.http_server = serve(self.metrics, config.metrics.host, config.metrics.port, census=census)
        plan = self.learner.memory_plan
        self.log({
            "event": "started", "peer_id": peer_id, "maddrs": self.status.maddrs, "model": policy.model_id,
            "device": self.status.device, "dtype": self.status.dtype, "parameters": policy.parameters,
            "trainable_parameters": policy.trainable_parameters, "threads": policy.threads, "nice": niceness(),
            "micro_batch_size": self.learner.micro_batch_size,
            "memory_plan": plan.describe() if plan else None, "sampling_plan": self.learner.sampling_plan.describe(),
            "swarm": config.swarm.id, "protocol": PROTOCOL_VERSION, "round": self.round, "data_dir": str(self.data_dir),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "metrics_url": self.metrics_url, "reachability": self.status.reachability,
            "reachability_detail": self.status.reachability_detail, "dht_mode": self.status.dht_mode,
            "port_mapping": self.status.port_mapping, "max_kbps": self.status.max_kbps,
        })
        self.warnings = network_warnings(config.network.host, config.network.initial_peers) if self.gossip else []
        for warning in self.warnings:
            self._warn("network_warning", warning)
        if plan is not None and not plan.fits:
            self._warn("memory_tight", f"training memory estimate: {plan.describe()}")

    def _join(self, identity_path: Path, state: TrainingState | None) -> None:
        """Start the DHT peer (through the configured peers, then those the peer book learnt), gossip over it and,
        with beacons on, the census."""
        config = self.config
        rules = SwarmRules.of(config.swarm)
        learnt = peerbook.learnt_peers(config.network, peerbook.load(self.data_dir), self.identity.peer_id)
        self.peer = DHTPeer(identity_path, rules, config.network, learnt_peers=learnt)
        self.peer.start()
        self._traffic = self.peer.traffic()  # joining is not the first round's traffic
        self.gossip = Gossip(self.peer, self.identity, rules, config.gossip)
        self.gossip.start_each_window()
        if state is not None:
            self.gossip.next_sequence = max(self.gossip.next_sequence, state.sequence)
        self._update_reachability()
        if config.gossip.beacon:
            self.beacons = BeaconService(
                self.peer, self.identity, rules, self._beacon, self._census_taken, timeout_s=config.gossip.publish_timeout_s,
                size=self.gossip.size,
            )
            self.beacons.start()

    @property
    def metrics_url(self) -> str | None:
        if self.http_server is None:
            return None
        host, port = self.http_server.server_address[:2]
        return f"http://{host}:{port}"

    def run(self, max_rounds: int | None = None) -> None:
        """Rounds until `max_rounds` more are done or a stop is requested; always ends with a save (one that fails
        is warned about, as during the run: the newest checkpoint stays). A stop is honoured between two phases, and
        inside evaluation, sampling and training within a decode step or a micro-batch (Interrupted): the round is
        abandoned and the save is of the rounds done."""
        done = 0
        try:
            while not self.stop.is_set() and (max_rounds is None or done < max_rounds):
                try:
                    self.run_round()
                except Interrupted:
                    self._note("stop_requested", f"stop requested: round {self.round + 1} abandoned", round=self.round + 1)
                    break
                done += 1
        finally:
            self.metrics.set_phase("checkpoint")
            self.save_checkpoint()

    def run_round(self) -> RoundRecord:
        """One SAPO round: evaluate now and then, play the round, record it, checkpoint (a save's seconds appear in
        the next round's record, as the time between two records includes it)."""
        self._watch_daemon()
        held_out = None
        if self._evaluation_due():
            with self._phase("evaluate"):
                held_out = self._evaluate()
        outcome = play_round(self.learner, self, self._phase)
        step = outcome.step
        if step.out_of_memory:
            self._warn(
                "out_of_memory", f"training ran out of memory {step.out_of_memory} time(s): micro-batch now "
                f"{step.micro_batch_size}" + (f"; {step.skipped_reason}" if step.skipped_reason else ""),
            )
        self.round += 1
        traffic = self._round_traffic()
        if self.peer is not None:
            self._update_reachability()
        collapsed = self.health.observe(outcome.own.mean_reward, outcome.own.answer_rate)
        if collapsed:
            self._note(
                "collapse", f"collapse detected at round {self.round}: answer rate {outcome.own.answer_rate:.2f}",
                round=self.round, answer_rate=outcome.own.answer_rate,
            )
        record = RoundRecord.of(
            outcome, round=self.round, seconds=dict(self._phase_seconds), collapsed=collapsed,
            refused=self._new_dht_refusals(), peers=self.peer.num_peers() if self.peer else 0,
            reachability=self.status.reachability, bytes_in=traffic.bytes_in, bytes_out=traffic.bytes_out,
            thin_reads=outcome.collected.thin_reads, held_out=held_out, resumed_from=self._resumed_from,
        )
        self._phase_seconds, self._resumed_from = {}, None
        self.metrics.record(record)  # before the checkpoint: a kill in between repeats a round, never loses its line
        self.log({"event": "round", **record.__dict__})  # and the log says the round, then its checkpoint
        with self._phase("checkpoint", may_stop=False):
            if self._checkpoint_due():
                self.save_checkpoint()
        self.metrics.set_phase("idle")
        return record

    def publish(self, rollouts: Sequence[Rollout], *, model_id: str, suite_version: str) -> PublishResult:
        """The round's publish (the node is its exchange): gossip's, and a warning when peers exist but none took it."""
        if self.gossip is None:
            return PublishResult(ok=False, window=0, sequence=0, frame_bytes=0, latency_s=0.0, error="gossip disabled")
        result = self.gossip.publish(rollouts, model_id=model_id, suite_version=suite_version)
        if not result.ok and self.peer.num_peers() > 0:  # alone (e.g. founding a swarm) is not a failure
            self._warn(
                "publish_failed", f"publish failed: {result.error}; training continues on own rollouts",
                seconds=round(result.latency_s, 3), stored_locally=result.stored_locally,
            )
        return result

    def collect(self, max_rollouts: int) -> CollectResult:
        """The round's collect: gossip's, and a warning when it failed or hit its deadline."""
        if self.gossip is None:
            return CollectResult([], Counter(), 0, 0, 0.0, False)
        result = self.gossip.collect(max_rollouts)
        if result.error is not None:
            self._warn("collect_failed", f"collect failed: {result.error}")
        elif result.timed_out or result.directory_timed_out:
            self._warn(
                "collect_timed_out",
                f"collect hit its {self.config.gossip.collect_timeout_s:g} s deadline with "
                f"{len(result.rollouts)} of {max_rollouts} rollouts",
                seconds=round(result.elapsed_s, 3), rollouts=len(result.rollouts), keys_read=result.keys_read,
            )
        return result

    def report_offences(self, offenders: Sequence[tuple[str, str]]) -> None:
        if self.gossip is not None:
            self.gossip.report_offences(offenders)

    def _watch_daemon(self) -> None:
        """Once a round: a dead p2pd is a problem event and a restart under the same identity; two failed
        restarts in a row end the run (DaemonLost)."""
        if self.peer is None or self.stop.is_set() or self.peer.daemon_alive():
            return  # stopping: a restart (up to a start-up timeout) would hold the stop up
        self._warn("p2pd_died", f"the DHT daemon (p2pd) died; restarting it (attempt {self._restart_failures + 1})")
        try:
            self.peer.restart()
        except StartError as error:
            self._restart_failures += 1
            if self._restart_failures >= MAX_DAEMON_RESTART_FAILURES:
                raise DaemonLost(f"p2pd died and {self._restart_failures} restarts failed: {error}") from None
            self._warn("p2pd_restart_failed", f"p2pd restart failed: {error}; trying again next round")
            return
        self._restart_failures = 0
        self._update_reachability()
        self._note("p2pd_restarted", f"p2pd restarted; {self.peer.num_peers()} peers in the routing table",
                   peers=self.peer.num_peers())

    def _evaluation_due(self) -> bool:
        """At round 0 (the base model) and every `eval.every_rounds` rounds, once (a resumed node does not redo it)."""
        every, last = self.config.eval.every_rounds, self.held_out.get("last")
        return every > 0 and self.round % every == 0 and (last is None or last["after_rounds"] != self.round)

    def _evaluate(self) -> dict:
        """The held-out set under the current policy: kept as base (round 0) and last, shown and logged."""
        learner = self.learner
        result = evaluate(
            learner.policy, learner.suite, self.held_out_tasks, learner.settings, self.config.eval.samples_per_question,
            progress=lambda done, total: self.metrics.set_phase("evaluate", f"{done}/{total}"),
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

    def _warn(self, event: str, message: str, **fields: Any) -> None:
        """A problem the volunteer should see: a JSON log event, a dashboard line and a counter by kind."""
        self.log({"event": event, "round": self.round + 1, "message": message, **fields})
        self.metrics.problem(event, message)

    def _note(self, event: str, message: str, **fields: Any) -> None:
        """What the dashboard's event list shows that is not counted as a problem; a headless run logs it too."""
        self.log({"event": event, "message": message, **fields})
        self.metrics.event(message)

    def _update_reachability(self) -> None:
        """Reachability can change (peers re-check it now and then): show what holds now."""
        peer = self.peer
        report = peer.reachability
        self.metrics.set_reachability(
            report.reachability.value, report.describe(), "client" if peer.client_mode else "server",
            peer.port_mapping, peer.advertised_maddrs(),
        )

    def _round_traffic(self) -> TrafficSnapshot:
        """All DHT traffic of this peer since the last round (beacons and requests served for others included)."""
        if self.peer is None:
            return TrafficSnapshot()
        total = self.peer.traffic()
        new, self._traffic = total - self._traffic, total
        return new

    def _beacon(self, window: int, now: float) -> Beacon:
        """What this node tells the swarm about itself (PROTOCOL.md §4.2); read from the beacon thread."""
        last = self.held_out.get("last")
        return Beacon(
            swarm_id=self.config.swarm.id, window=window, timestamp=now, software=f"swarmnode/{__version__}",
            held_out=last["greedy"] if last else None, held_out_round=last["after_rounds"] if last else 0,
            **self.status.beacon_fields(time.time()),
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
            self._note("census_failed", f"census failed: {beacons.census_error}")
        self._beacon_failures = 0 if beacons.last_error is None else self._beacon_failures + 1
        if self._beacon_failures == 0:
            self._beacon_warned = False
        elif self._beacon_failures >= 2 and not self._beacon_warned and self.peer is not None and self.peer.num_peers() > 0:
            self._beacon_warned = True
            self._warn("beacon_failed", f"beacon not published: {beacons.last_error}; the swarm does not list this node")

    def _new_dht_refusals(self) -> Counter[str]:
        """Records our DHT peer refused since the last round (to store, or in a peer's answer), as
        `dht_<reason>`: nothing reaches the collector from them, but a volunteer should see the attack."""
        if self.peer is None:
            return Counter()
        total = Counter({f"dht_{reason}": count for reason, count in self.peer.refusals().items()})
        new, self._dht_refused = total - self._dht_refused, total
        return new

    @contextlib.contextmanager
    def _phase(self, name: str, may_stop: bool = True) -> Iterator[None]:
        if may_stop and self.stop.is_set():
            raise Interrupted(name)
        self.metrics.set_phase(name)
        started = time.perf_counter()
        yield
        self._phase_seconds[name] = time.perf_counter() - started

    def _checkpoint_due(self) -> bool:
        every = self.config.checkpoint
        rounds_since, seconds_since = self.round - self._saved[0], time.monotonic() - self._saved[1]
        return rounds_since >= every.every_rounds and seconds_since >= every.min_interval_s

    def save_checkpoint(self) -> None:
        """Save now. A save that fails (a full disk) is a problem shown to the volunteer, never a stop: a node left
        for days trains on, keeps its newest checkpoint and tries again at the next due save."""
        state = TrainingState(
            round=self.round,
            sequence=self.gossip.next_sequence if self.gossip else 0,
            counters={name: getattr(self.status, name) for name in COUNTERS}
            | {"rejected_total": self.status.rejected_total},
            health=self.health.state(),
            held_out=self.held_out,
        )
        try:
            saved = self.learner.save(self.checkpointer, state)
        except CheckpointError as error:
            self._saved = (self.round, time.monotonic())  # tried: the next try when the next save is due, not each round
            kept = self.checkpoint.name if self.checkpoint else "none"
            self._warn(
                "checkpoint_failed", f"{error}; newest checkpoint kept: {kept}; training goes on and the next save "
                "tries again", round=self.round, checkpoint=str(self.checkpoint) if self.checkpoint else None,
            )
            return
        self._saved = (self.round, time.monotonic())
        self.checkpoint = saved.path
        self.metrics.set_checkpoint(saved.path.name, saved.size, saved.seconds, saved.disk)
        self.log({
            "event": "checkpoint", "round": self.round, "path": str(saved.path), "bytes": saved.size,
            "seconds": round(saved.seconds, 3), "disk_bytes": saved.disk,
        })
        if self.peer is not None and (reached := self.peer.entry_maddrs()):
            peerbook.save(self.data_dir, peerbook.updated(peerbook.load(self.data_dir), reached))

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
        if self.peer is not None:
            self.peer.close()
            self.peer = None
        self._lock.release()
