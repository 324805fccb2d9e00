"""Adversarial peers against real nodes on 127.0.0.1: the attack catalogue, then floods.

Attacks (one process): a bootstrap DHT peer, an honest publisher, a victim running the real round loop
(`Node.run_round`, with a spy on what it collects, rescores and trains on) and a hostile peer
(attacker_peer.py). Each attack is offered to every peer, then the victim runs a round. Reported per
attack: records sent, refused by the peers asked to store them, what the victim refused at store, on read,
at collect and in its learner (by reason), groups trained on (must be 0) and whether the sender got banned.
Floods: a `swarmnode join` victim process (or, with --flood-target bootstrap, the swarm's bootstrap peer: a
replica and nothing else), flooded at --rate records/s from one identity, from a fresh identity per record
(sybils) and with forged signatures; its RSS and CPU (process + p2pd) and rounds are sampled. --victim-code
runs the victim from another checkout too (e.g. the code before a change), so both are measured in one run.
Writes benchmarks/results/adversarial.json.

Usage: python -m swarmnode.lab.adversarial_peers [--flood-seconds 30] [--rate 1000] [--skip-attacks] [--skip-floods]
       [--flood-target bootstrap] [--rollouts 60 --text-bytes 16000] [--victim-code /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from swarmnode.config import GossipConfig, NetworkConfig, load_config
from swarmnode.lab.attacker_peer import ATTACKS, AttackerPeer
from swarmnode.lab.local_swarm import LocalSwarm, NodeSpec, exit_on_sigterm, machine_facts
from swarmnode.learn.intake import IntakeResult
from swarmnode.learn.selection import Selection
from swarmnode.learn.tasks import TaskSuite
from swarmnode.net.gossip import CollectResult, Gossip
from swarmnode.net.peer import DHTPeer
from swarmnode.node import Node
from swarmnode.ops.metrics import read_records
from swarmnode.wire.identity import Identity, load_identity, save_identity
from swarmnode.wire.rollout import Completion, Rollout
from swarmnode.wire.rules import SwarmRules

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the lab runs from one
SWARM_ID = "adversarial"
FAST = ["sapo.questions_per_round=4", "sapo.completions_per_question=4", "model.max_new_tokens=12", "model.threads=1",
        "eval.every_rounds=0"]
VICTIM = [*FAST, f"swarm.id={SWARM_ID}", "sapo.min_own_groups=0", "checkpoint.every_rounds=1000", "metrics.port=null"]
MAX_POISON_ROUNDS = 4
SAMPLE_S = 1.0
VICTIM_READY_S = 240.0


@dataclasses.dataclass
class Spy:
    """What the victim's collect returned, its learner kept and refused, and what its trainer was given."""

    collected: list[CollectResult] = dataclasses.field(default_factory=list)
    external: list[IntakeResult] = dataclasses.field(default_factory=list)
    selections: list[Selection] = dataclasses.field(default_factory=list)

    @classmethod
    def on(cls, node: Node) -> Spy:
        spy = cls()
        spy._wrap(node.gossip, "collect", spy.collected, returned=True)
        spy._wrap(node.learner, "external_groups", spy.external, returned=True)
        spy._wrap(node.learner.trainer, "step", spy.selections, returned=False)
        return spy

    @staticmethod
    def _wrap(owner: Any, name: str, into: list, returned: bool) -> None:
        original = getattr(owner, name)

        def spied(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            into.append(result if returned else args[0])
            return result

        setattr(owner, name, spied)

    def trained_from(self, signer: str) -> int:
        """External groups of `signer` in the last training step."""
        return sum(group.signer == signer for group in self.selections[-1].external) if self.selections else 0


def honest_rollouts(suite: TaskSuite, rng: random.Random, count: int = 4) -> list[Rollout]:
    """Real questions of the victim's suite, each with two right and two wrong answers, honestly scored."""
    rollouts = []
    for task in suite.sample(rng, count, seed=rng.getrandbits(16)):
        texts = [f"<answer>{task.entry['answer']}</answer>"] * 2 + ["<answer>-1</answer>", "no idea"]
        rollouts.append(Rollout(task.ref, tuple(Completion(t, suite.score(task, t).verifier) for t in texts)))
    return rollouts


def new_key(directory: Path, name: str) -> Path:
    path = directory / f"{name}.key"
    save_identity(Identity.generate(), path)
    return path


class AttackScene:
    """Bootstrap, honest publisher, victim node and attacker, all on 127.0.0.1; `close()` stops them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> AttackScene:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        config = load_config(None, VICTIM)
        rules = SwarmRules.of(config.swarm)
        self.bootstrap = self._stack.enter_context(DHTPeer(new_key(self.directory, "bootstrap"), rules, NetworkConfig()))
        join = NetworkConfig(initial_peers=self.bootstrap.visible_maddrs, startup_timeout_s=60.0)
        honest_key = new_key(self.directory, "honest")
        honest_peer = self._stack.enter_context(DHTPeer(honest_key, rules, join))
        self.honest = Gossip(honest_peer, load_identity(honest_key), rules, GossipConfig())
        self._stack.callback(self.honest.close)
        self.suite = TaskSuite.of(config.tasks)
        victim_config = load_config(None, [*VICTIM, f"network.initial_peers={json.dumps(join.initial_peers)}"])
        self.victim = Node(victim_config, self.directory / "victim", log=lambda event: None)
        self._stack.callback(self.victim.close)
        self.victim.start()
        self.spy = Spy.on(self.victim)
        self.attacker = AttackerPeer(new_key(self.directory, "attacker"), join.initial_peers, rules)
        self._stack.callback(self.attacker.close)
        self.rng = random.Random(0)

    def close(self) -> None:
        self._stack.close()

    def victim_refusals(self) -> Counter[str]:
        return Counter(self.victim.gossip.stats.refused_records)

    def run(self, name: str) -> dict[str, Any]:
        """Offer attack `name` to every peer, then let the victim run one round; what happened where."""
        assert self.honest.publish(honest_rollouts(self.suite, self.rng), model_id="honest", suite_version="v").ok
        before = self.victim_refusals()
        offered = self.attacker.attack(name, honest=self.honest.peer_id)
        after_offer = self.victim_refusals()
        record = self.victim.run_round()
        collected, external = self.spy.collected[-1], self.spy.external[-1]
        where, reason = ATTACKS[name]
        result = {
            "attack": name, "expected_stop": where, "expected_reason": reason,
            "records": offered["records"], "stored_by_peers": offered.get("stored", 0),
            "refused_by_peers": offered.get("refused", 0), "no_answer": offered.get("no_answer", 0),
            "victim_refused_at_store": dict(after_offer - before),
            "victim_refused_on_read": dict(self.victim_refusals() - after_offer),
            "collect_rejected": dict(collected.rejected), "collect_skipped": dict(collected.skipped),
            "learner_rejected": dict(external.rejected),
            "trained_on": self.spy.trained_from(self.attacker.peer_id),
            "honest_groups_trained": self.spy.trained_from(self.honest.peer_id),
            "attacker_banned": self.victim.gossip.stats.banned_peers > 0,
            "round": record.round, "round_rejected": record.rejected,
        }
        result["counted"] = counted_under_reason(result)
        return result


def counted_under_reason(result: dict[str, Any]) -> bool:
    """Whether the victim counted the attack under its reason, where the catalogue says it must be stopped."""
    reason = result["expected_reason"]
    if result["expected_stop"] == "store":
        return result["victim_refused_at_store"].get(reason, 0) > 0 and result["stored_by_peers"] == 0
    if result["expected_stop"] == "learner":
        return result["learner_rejected"].get(reason, 0) > 0 or result["collect_rejected"].get("banned", 0) > 0
    # A replayed frame is byte for byte the honest one: no peer stores a second copy, nobody reads it twice.
    return result["stored_by_peers"] == 0


def run_attacks(
    directory: Path, names: Sequence[str] = tuple(ATTACKS), progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Each attack once, in catalogue order; poisoned rewards until the victim bans the sender, then once
    more to show that its frames are skipped."""
    results = []
    with AttackScene(directory) as scene:
        for name in names:
            rounds = MAX_POISON_ROUNDS if name == "poisoned_rewards" else 1
            for _ in range(rounds):
                results.append(scene.run(name))
                progress(f"{name}: trained on {results[-1]['trained_on']}, banned {results[-1]['attacker_banned']}")
                if results[-1]["attacker_banned"]:
                    break
        if "poisoned_rewards" in names:
            results.append(scene.run("poisoned_rewards") | {"attack": "poisoned_rewards (after the ban)"})
        delivered = Counter(
            batch
            for collect in scene.spy.collected
            for batch in {(item.signer, item.window, item.sequence) for item in collect.rollouts}
        )
    return {
        "attacks": results,
        "trained_on_attacker_total": sum(result["trained_on"] for result in results),
        "honest_groups_trained_total": sum(result["honest_groups_trained"] for result in results),
        "batches_delivered_twice": sum(count > 1 for count in delivered.values()),
    }


# ---------------------------------------------------------------------------------------------------------
# Floods against a `swarmnode join` process


FLOOD_MODES = ("forged", "one_identity", "sybils")


def victim_processes(data_dir: Path, command: str = "join") -> tuple[psutil.Process, list[psutil.Process]]:
    """The `swarmnode join` (or `bootstrap`) process whose arguments name `data_dir` (a descendant of ours) and its
    p2pd."""
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(str(data_dir) in argument for argument in process.cmdline()) and command in process.cmdline():
                return process, [child for child in process.children() if child.name().startswith("p2pd")]
    raise RuntimeError(f"no swarmnode {command} process with data dir {data_dir}")


def wait_for_start(data_dir: Path, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = data_dir / "stdout.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if event.get("event") == "started":
                    return event
        time.sleep(0.5)
    raise TimeoutError(f"the victim did not start within {timeout_s:g} s: {(data_dir / 'stderr.log').read_text()[-500:]}")


def sample(node: psutil.Process, daemons: list[psutil.Process], swarm: LocalSwarm) -> dict[str, float]:
    cpu = [process.cpu_times() for process in (node, *daemons)]
    return {
        "t": time.monotonic(), "node_mb": node.memory_info().rss / 2**20,
        "p2pd_mb": sum(daemon.memory_info().rss for daemon in daemons) / 2**20,
        "cpu_s": sum(times.user + times.system for times in cpu),
        "rounds": swarm.rounds_done()["victim"],
    }


def sample_while(busy: Callable[[], bool], node: psutil.Process, daemons: list[psutil.Process],
                 swarm: LocalSwarm) -> list[dict[str, float]]:
    samples = [sample(node, daemons, swarm)]
    while busy():
        time.sleep(SAMPLE_S)
        samples.append(sample(node, daemons, swarm))
    return samples


def phase_summary(samples: list[dict[str, float]]) -> dict[str, float]:
    seconds = samples[-1]["t"] - samples[0]["t"]
    total = [s["node_mb"] + s["p2pd_mb"] for s in samples]
    return {
        "seconds": round(seconds, 1), "rss_start_mb": round(total[0], 1), "rss_peak_mb": round(max(total), 1),
        "rss_end_mb": round(total[-1], 1), "p2pd_end_mb": round(samples[-1]["p2pd_mb"], 1),
        "cpu_cores": round((samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / max(seconds, 1e-9), 3),
        "rounds": int(samples[-1]["rounds"] - samples[0]["rounds"]),
        "rounds_per_min": round(60 * (samples[-1]["rounds"] - samples[0]["rounds"]) / max(seconds, 1e-9), 2),
    }


def run_floods(directory: Path, rate: float, seconds: float, quiet_s: float, text_bytes: int,
               modes: tuple[str, ...] = FLOOD_MODES, progress: Callable[[str], None] = lambda line: None,
               rollouts: int = 1, target: str = "node", code_dir: Path = ROOT) -> dict[str, Any]:
    """Flood one victim (the node, or the bootstrap peer) with each mode in turn; a quiet phase before and after
    each flood. The swarm runs the code at `code_dir`."""
    swarm = LocalSwarm(
        [NodeSpec("victim", tuple(FAST), rounds=10**6)], directory, SWARM_ID, timeout_s=3600.0, code_dir=code_dir
    )
    results: dict[str, Any] = {}
    with swarm, ThreadPoolExecutor(1) as pool:
        started = wait_for_start(directory / "victim", VICTIM_READY_S)
        if target == "bootstrap":
            node, daemons = victim_processes(directory / "bootstrap", "bootstrap")
            assert swarm.bootstrap_maddr is not None
            maddr = swarm.bootstrap_maddr
            target_peer, target_maddrs = maddr.rsplit("/p2p/", 1)[1], [maddr]
        else:
            node, daemons = victim_processes(directory / "victim")
            target_peer, target_maddrs = started["peer_id"], started["maddrs"]
        attacker = AttackerPeer(new_key(directory, "flooder"), [swarm.bootstrap_maddr], SwarmRules.of(load_config(
            None, [f"swarm.id={SWARM_ID}"]).swarm))
        try:
            attacker.connect(target_peer, target_maddrs)
            while swarm.rounds_done()["victim"] < 1:
                time.sleep(SAMPLE_S)
            for mode in modes:
                quiet_until = time.monotonic() + quiet_s
                before = sample_while(lambda: time.monotonic() < quiet_until, node, daemons, swarm)
                flooding = pool.submit(attacker.flood, target_peer, rate, seconds, mode, text_bytes, rollouts)
                during = sample_while(lambda: not flooding.done(), node, daemons, swarm)
                quiet_until = time.monotonic() + quiet_s
                after = sample_while(lambda: time.monotonic() < quiet_until, node, daemons, swarm)
                results[mode] = {
                    "flood": flooding.result(), "before": phase_summary(before), "during": phase_summary(during),
                    "after": phase_summary(after),
                }
                progress(f"{mode}: {results[mode]['flood']} rss {results[mode]['during']}")
        finally:
            attacker.close()
    records = read_records(directory / "victim" / "metrics.jsonl")
    refused = Counter()
    for record in records:
        refused.update({reason: n for reason, n in record.rejected.items() if reason.startswith("dht_")})
    return {"modes": results, "victim_dht_refusals": dict(refused), "victim_rounds": len(records),
            "rate": rate, "seconds": seconds, "text_bytes": text_bytes, "rollouts": rollouts, "target": target,
            "code": str(code_dir)}


# ---------------------------------------------------------------------------------------------------------
# Report


def print_attacks(report: dict[str, Any], console: Console) -> None:
    table = Table(title="attacks on a victim node (real DHT on 127.0.0.1)")
    for column in ("attack", "records", "stored by peers", "refused by peers", "victim: refused at store",
                   "refused on read", "collect", "learner", "trained on", "banned", "counted"):
        table.add_column(column, justify="right")

    def reasons(counts: dict[str, int]) -> str:
        return " ".join(f"{reason}:{n}" for reason, n in sorted(counts.items())) or "—"

    for row in report["attacks"]:
        collect = {**row["collect_rejected"], **{k: v for k, v in row["collect_skipped"].items() if k != "own"}}
        table.add_row(
            row["attack"], str(row["records"]), str(row["stored_by_peers"]), str(row["refused_by_peers"]),
            reasons(row["victim_refused_at_store"]), reasons(row["victim_refused_on_read"]), reasons(collect),
            reasons(row["learner_rejected"]), str(row["trained_on"]), "yes" if row["attacker_banned"] else "no",
            "yes" if row["counted"] else "NO",
        )
    console.print(table)
    console.print(
        f"groups trained on from the attacker: {report['trained_on_attacker_total']}; from the honest peer: "
        f"{report['honest_groups_trained_total']}; batches delivered twice: {report['batches_delivered_twice']}",
        highlight=False,
    )


def print_floods(report: dict[str, Any], console: Console) -> None:
    record_kb = report["rollouts"] * report["text_bytes"] / 1000
    table = Table(title=f"floods at {report['rate']:g} records/s (~{record_kb:.0f} KB each) for {report['seconds']:g} s "
                        f"against the {report['target']} ({report['code']})")
    for column in ("mode", "sent", "achieved/s", "MB/s", "stored", "refused", "no answer", "RSS before MB",
                   "RSS peak MB", "CPU before", "CPU during", "rounds/min before", "during", "after"):
        table.add_column(column, justify="right")
    for mode, row in report["modes"].items():
        flood = row["flood"]
        table.add_row(
            mode, str(flood["sent"]), f"{flood['achieved_rate']:.0f}", f"{flood['achieved_rate'] * record_kb / 1000:.1f}",
            str(flood.get("stored", 0)), str(flood.get("refused", 0)), str(flood.get("no_answer", 0)),
            f"{row['before']['rss_end_mb']:.0f}", f"{row['during']['rss_peak_mb']:.0f}",
            f"{row['before']['cpu_cores']:.2f}", f"{row['during']['cpu_cores']:.2f}",
            f"{row['before']['rounds_per_min']:.1f}", f"{row['during']['rounds_per_min']:.1f}",
            f"{row['after']['rounds_per_min']:.1f}",
        )
    console.print(table)
    console.print(f"victim's DHT-layer refusals: {report['victim_dht_refusals']}", highlight=False)


@contextlib.contextmanager
def work_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="adversarial-") as directory:
        yield Path(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="flood records per second")
    parser.add_argument("--flood-seconds", type=float, default=30.0)
    parser.add_argument("--quiet-seconds", type=float, default=20.0, help="sampling before and after each flood")
    parser.add_argument("--text-bytes", type=int, default=8192, help="completion size of flood records")
    parser.add_argument("--rollouts", type=int, default=1, help="rollouts per flood record (each one completion)")
    parser.add_argument("--flood-target", choices=("node", "bootstrap"), default="node",
                        help="flood the training node, or the bootstrap peer (a replica and nothing else)")
    parser.add_argument("--victim-code", type=Path, action="append", default=None,
                        help="run the swarm from this checkout (repeat to compare; default: this one)")
    parser.add_argument("--modes", default=",".join(FLOOD_MODES), help=f"flood modes, from {','.join(FLOOD_MODES)}")
    parser.add_argument("--skip-attacks", action="store_true")
    parser.add_argument("--skip-floods", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="keep the nodes' files here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "adversarial.json")
    args = parser.parse_args()
    exit_on_sigterm()
    console = Console(width=180)

    def log(line: str) -> None:
        console.print(line, highlight=False)

    report: dict[str, Any] = {"machine": machine_facts(), "command": " ".join(["python", *sys.argv])}
    with work_dir(args.dir) as directory:
        if not args.skip_attacks:
            report["attacks"] = run_attacks(directory / "attacks", progress=log)
            print_attacks(report["attacks"], console)
        if not args.skip_floods:
            report["floods"] = []
            for index, code in enumerate(args.victim_code or [ROOT]):
                floods = run_floods(
                    directory / f"floods{index}", args.rate, args.flood_seconds, args.quiet_seconds, args.text_bytes,
                    tuple(args.modes.split(",")), progress=log, rollouts=args.rollouts, target=args.flood_target,
                    code_dir=code.resolve(),
                )
                report["floods"].append(floods)
                print_floods(floods, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    console.print(f"wrote {args.out}", highlight=False)
    attacks = report.get("attacks", {})
    failed = attacks.get("trained_on_attacker_total", 0) or not all(row["counted"] for row in attacks.get("attacks", []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
