"""What honest peers see when hostile DHT servers stand next to the keys they read: the code before a defence and
after it, in one run.

An honest swarm of N DHT-only peers (benchmarks/dht_attack_scene.py, one process, under the tree measured) beacons
every window and publishes a batch every round; readers take full censuses, collectors collect. Hostile servers
(swarmnode/lab/hostile_dht.py, this tree's code in both runs) grind identities whose DHT ids are nearer the
target key than every honest peer's, acknowledge and drop its stores, and answer its finds with an empty
dictionary (or 64 valid Sybil beacons) claimed to expire in a year. Each attack runs with 0, 1, 2 and 4 attackers
(census hiding also with 8, one per census bucket before protocol v2; in v2 a swarm of up to 24 nodes reads one
census key, tier 0's, which the 8 then share), each for one window, the attackers in place a window before:

  census_hiding       the busiest census bucket of the tier readers read: share of the N honest nodes a full
                      census lists; share of censuses that say complete; share that say complete while listing
                      fewer (false complete)
  census_replacement  the same bucket answers with Sybils: honest listed, Sybils listed, complete
  shard               a victim signer's shard key of the window: share of the collectors' reads that got the
                      victim's batch of that round; share of rounds an honest peer stored it (the attackers
                      acknowledge every store, so the victim believes it published)
  directory           the window's directory key (v2: its busiest bucket of the tier the swarm's size calls for):
                      share of the other N-1 signers a directory read lists

"before" runs the honest swarm with PYTHONPATH=--before, "after" with this checkout. Prints a table per attack
and writes benchmarks/results/dht_attacks.json.

Usage: python benchmarks/bench_dht_attacks.py [--before PATH] [--peers 16] [--window-s 15] [--counts 0,1,2,4]
       [--attacks census_hiding,census_replacement,shard,directory] [--collectors 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from swarmnode.lab.dht_attacks import ATTACKS, Cell, run_cells, summarize
from swarmnode.wire.identity import Identity, save_identity

ROOT = Path(__file__).resolve().parents[1]
# census hiding also runs with this many attackers: one per census bucket before protocol v2 (8 buckets). In v2 a
# swarm of up to 24 nodes has one census key (tier 0), which the 8 then share.
ALL_BUCKETS_BEFORE_V2 = 8
MEASURED = {"census_hiding": "census", "census_replacement": "census", "shard": "shard", "directory": "directory"}


def revision(tree: Path) -> str:
    """The tree's commit, "+dirty" with uncommitted changes: each cell's swarm imports the tree anew, so a tree
    edited during the run is seen in its later cells (the revision is taken before and after)."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *arguments], capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def plan(attacks: list[str], counts: list[int]) -> list[Cell]:
    """One baseline cell (no attacker, every measurement), then each attack with each nonzero count."""
    cells = [Cell((), 0)] if 0 in counts else []
    for attack in attacks:
        extra = [ALL_BUCKETS_BEFORE_V2] if attack == "census_hiding" else []
        cells += [Cell((attack,), count) for count in [*counts, *extra] if count]
    return cells


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def describe(attack: str, summary: dict[str, Any] | None) -> str:
    """One cell of the table: the measurement the attack targets, from a cell's summary."""
    measured = (summary or {}).get(MEASURED[attack])
    if measured is None:
        return "—"
    if attack in ("census_hiding", "census_replacement"):
        text = (f"listed {percent(measured['listed_mean'])} (min {percent(measured['listed_min'])}), "
                f"complete {percent(measured['complete'])}, false complete {percent(measured['false_complete'])}")
        return text + (f", {measured['sybils_mean']:.0f} Sybils" if attack == "census_replacement" else "")
    if attack == "shard":
        return (f"delivered {percent(measured['delivered'])} of {measured['collects_read']} reads, stored "
                f"{percent(measured['victim_stored_honestly'])} / acked {percent(measured['victim_acknowledged'])} "
                f"of {measured['rounds']} rounds")
    return f"listed {percent(measured['listed_mean'])} (min {percent(measured['listed_min'])}) in {measured['reads']} reads"


def render(attack: str, table: dict[int, dict[str, dict[str, Any]]], labels: list[str], peers: int) -> Table:
    rendered = Table(title=f"{attack} ({peers} honest peers)")
    rendered.add_column("attackers", justify="right")
    for label in labels:
        rendered.add_column(label)
    for count in sorted(table):
        rendered.add_row(str(count), *[describe(attack, table[count].get(label)) for label in labels])
    return rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code before the defences (its repository root)")
    parser.add_argument("--peers", type=int, default=16)
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--counts", default="0,1,2,4", help="attackers per attack (census hiding adds 8)")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--collectors", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dht_attacks.json")
    args = parser.parse_args()
    attacks = [name for name in args.attacks.split(",") if name]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks {sorted(unknown)}; choose from {', '.join(ATTACKS)}")
    cells = plan(attacks, [int(text) for text in args.counts.split(",")])
    trees = {"before": args.before.resolve()} if args.before else {}
    trees["after"] = ROOT
    console = Console(width=160)
    load_at_start = os.getloadavg()[0]
    console.print(f"load average at start: {load_at_start:.2f} on {os.cpu_count()} CPUs; {len(cells)} cells per tree",
                  highlight=False)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dht-attacks-") as tmp:
        keys = Path(tmp) / "honest"  # the same honest identities in every run
        for index in range(args.peers):
            save_identity(Identity.generate(), keys / f"honest-{index:03d}.key")
        for label, tree in trees.items():
            started, revision_before = time.monotonic(), revision(tree)

            def progress(report: dict[str, Any], label: str = label) -> None:
                console.print(f"{label}: {report['attack']} x{report['attackers']} in {report['wall_s']:.0f} s: "
                              f"{summarize(report, args.peers)}", highlight=False)

            runs[label] = run_cells(tree, cells, peers=args.peers, window_s=args.window_s, collectors=args.collectors,
                                    workdir=Path(tmp), keys=keys, on_cell=progress)
            runs[label]["wall_s"] = round(time.monotonic() - started, 1)
            runs[label]["revision"] = {"start": revision_before, "end": revision(tree)}
    table: dict[str, dict[int, dict[str, Any]]] = {attack: {} for attack in attacks}
    for label, run in runs.items():
        for report in run["cells"]:
            summary = summarize(report, args.peers)
            for attack in report["attacks"] or attacks:  # the baseline is every attack's row 0
                table[attack].setdefault(report["attackers"], {})[label] = summary
    for attack in attacks:
        console.print(render(attack, table[attack], list(runs), args.peers))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "config": {"peers": args.peers, "window_s": args.window_s, "record_ttl_s": 2 * args.window_s,
                   "collectors": args.collectors, "counts": args.counts, "attacks": attacks},
        "trees": {label: str(tree) for label, tree in trees.items()},
        "machine": {"cpus": os.cpu_count(), "load_1m_at_start": load_at_start, "python": platform.python_version()},
        "table": {attack: {str(count): row for count, row in rows.items()} for attack, rows in table.items()},
        "runs": runs,
    }, indent=2))
    console.print(f"wrote {args.out}", highlight=False)


if __name__ == "__main__":
    main()
