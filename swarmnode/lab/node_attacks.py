"""What valid records from the swarm can do to a node's learning, on real `swarmnode join` processes on 127.0.0.1,
each scenario run once per checkout given (--code, e.g. the code before a change and this one) so before and
after are measured in one run:

- junk groups: a peer publishes, every few seconds, in-suite questions whose completions are all wrong and
  honestly scored 0 (valid in every respect, never an offence, and no group has an advantage to learn from)
  to a node that samples `transplant` (it asks I of Q questions while peers supply groups): how many questions
  does it ask per round?
- clock drift: an honest node whose clock runs ahead of its collector's (each within hivemind's 3 s join
  tolerance of the bootstrap, so together further apart than clock_skew_s): what does the collector refuse,
  and does it ban the honest signer?

Clocks are shifted per process by a `sitecustomize` hook on PYTHONPATH (the whole process sees the shifted
time, as on a machine whose clock is off). Writes benchmarks/results/node_attacks.json.

Usage: python -m swarmnode.lab.node_attacks [--code /path/to/old/checkout] [--code .] [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from swarmnode.config import SwarmConfig
from swarmnode.lab.adversarial_peers import FAST, new_key
from swarmnode.lab.attacker_peer import AttackerPeer, wrong_answers
from swarmnode.lab.local_swarm import LocalSwarm, NodeSpec, exit_on_sigterm, machine_facts, write_results
from swarmnode.wire.rules import SwarmRules

ROOT = Path(__file__).resolve().parents[2]
SWARM_ID = "node-attacks"
JUNK_EVERY_S = 2.0
QUESTIONS, LOCAL_GROUPS = 4, 2  # Q and I of the transplant node
DRIFT_S = 2.7  # each side of the bootstrap's clock: 5.4 s apart, each within hivemind's 3 s join check
CLOCK_HOOK = """import os, time
_offset = float(os.environ.get("SWARMNODE_LAB_CLOCK_OFFSET_S", "0"))
if _offset:
    _real_time = time.time
    time.time = lambda: _real_time() + _offset
"""


def metrics(data_dir: Path) -> list[dict[str, Any]]:
    """A node's round records as plain JSON (read without this checkout's RoundRecord: any version's file)."""
    path = data_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def clocked(hook_dir: Path, offset_s: float) -> tuple[str, ...]:
    return ("env", f"PYTHONPATH={hook_dir}", f"SWARMNODE_LAB_CLOCK_OFFSET_S={offset_s}")


def junk_groups(directory: Path, code: Path, rounds: int) -> dict[str, Any]:
    """A transplant node and a peer publishing junk groups: questions asked per round."""
    victim = NodeSpec(
        "victim",
        (*FAST, "sapo.sampling=transplant", f"sapo.questions_per_round={QUESTIONS}", f"sapo.local_groups={LOCAL_GROUPS}",
         "sapo.min_own_groups=0"),
        rounds=rounds,
    )
    swarm = LocalSwarm([victim], directory, SWARM_ID, timeout_s=1800.0, code_dir=code)
    stop = threading.Event()
    offered: Counter[str] = Counter()
    with swarm:
        attacker = AttackerPeer(new_key(directory, "junk"), [swarm.bootstrap_maddr], SwarmRules.of(SwarmConfig(id=SWARM_ID)))

        def publish() -> None:
            while not stop.wait(JUNK_EVERY_S):
                offered.update(attacker.offer_batch(rollouts=wrong_answers(0.0)))

        publisher = threading.Thread(target=publish, name="junk-publisher", daemon=True)
        publisher.start()
        try:
            result = swarm.wait()
        finally:
            stop.set()
            publisher.join(timeout=60)
            attacker.close()
    records = metrics(directory / "victim")[1:]  # the first round has read nothing yet
    questions = [record.get("questions", 0) for record in records]
    return {
        "ok": result.ok, "rounds": len(records), "questions": questions,
        "mean_questions": round(statistics.fmean(questions), 2) if questions else None,
        "rounds_at_Q": sum(count == QUESTIONS for count in questions),
        "external_groups": sum(record.get("groups_external", 0) for record in records),
        "junk_stored": offered.get("stored", 0),
    }


def clock_drift(directory: Path, code: Path, rounds: int) -> dict[str, Any]:
    """A collector DRIFT_S behind and an honest signer DRIFT_S ahead of the bootstrap: refusals and bans."""
    hook_dir = directory / "clock"
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(CLOCK_HOOK)
    nodes = [
        NodeSpec("victim", (*FAST, "sapo.min_own_groups=0"), rounds=rounds, prefix=clocked(hook_dir, -DRIFT_S)),
        NodeSpec("ahead", (*FAST,), rounds=rounds, prefix=clocked(hook_dir, DRIFT_S)),
    ]
    result = LocalSwarm(nodes, directory, SWARM_ID, timeout_s=1800.0, code_dir=code).run()
    records = metrics(directory / "victim")
    rejected: Counter[str] = Counter()
    for record in records:
        rejected.update(record.get("rejected", {}))
    return {
        "ok": result.ok, "rounds": len(records), "future": rejected.get("future", 0), "banned": rejected.get("banned", 0),
        "rounds_with_peer_groups": sum(record.get("groups_external", 0) > 0 for record in records),
        "rounds_after_a_ban": sum(record.get("rejected", {}).get("banned", 0) > 0 for record in records),
    }


def render(report: dict[str, Any], console: Console) -> None:
    junk = Table(title=f"junk groups against a transplant node (Q={QUESTIONS}, I={LOCAL_GROUPS}): questions it asks")
    for column in ("code", "rounds", "mean questions/round", f"rounds asking Q={QUESTIONS}", "junk batches stored"):
        junk.add_column(column, justify="right")
    drift = Table(title=f"an honest signer {2 * DRIFT_S:g} s ahead of its collector (clock_skew_s 5)")
    for column in ("code", "rounds", "refused future", "skipped as banned", "rounds after a ban", "rounds with peer groups"):
        drift.add_column(column, justify="right")
    for code, runs in report["runs"].items():
        j, d = runs["junk"], runs["drift"]
        junk.add_row(code, str(j["rounds"]), str(j["mean_questions"]), str(j["rounds_at_Q"]), str(j["junk_stored"]))
        drift.add_row(code, str(d["rounds"]), str(d["future"]), str(d["banned"]), str(d["rounds_after_a_ban"]),
                      str(d["rounds_with_peer_groups"]))
    console.print(junk)
    console.print(drift)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, action="append", default=None,
                        help="run the nodes from this checkout (repeat to compare; default: this one)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "node_attacks.json")
    args = parser.parse_args()
    exit_on_sigterm()
    console = Console(width=160)
    report: dict[str, Any] = {"machine": machine_facts(), "command": " ".join(["python", *sys.argv]), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="node-attacks-") as scratch:
        for index, code in enumerate(args.code or [ROOT]):
            code = code.resolve()
            report["runs"][str(code)] = {
                "junk": junk_groups(Path(scratch) / f"junk{index}", code, args.rounds),
                "drift": clock_drift(Path(scratch) / f"drift{index}", code, args.rounds),
            }
            console.print(f"{code}: {report['runs'][str(code)]}", highlight=False)
    render(report, console)
    write_results(args.out, report)
    console.print(f"wrote {args.out}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
