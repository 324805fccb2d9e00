"""A poisoned peer book against an honest public node, on real processes on 127.0.0.1: two liars (DHT peers
whose dial-back answer is always "not reached") sit in the node's known_peers.json, as Sybil presences put
them there; the node restarts through its bootstrap. What does its reachability check say, and does it serve
the DHT? Run once per checkout given (--code), so before and after are measured in one run.

The liars run this module as a script (`--liar KEY`): a swarmnode DHT peer whose dial-back service lies.
Writes benchmarks/results/peerbook_attack.json.

Usage: python -m swarmnode.lab.peerbook_attack [--code /path/to/old/checkout] [--code .] [--restarts 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from swarmnode.lab.adversarial_peers import FAST, new_key, wait_for_start
from swarmnode.lab.local_swarm import LocalSwarm, NodeSpec, exit_on_sigterm, machine_facts, write_results

ROOT = Path(__file__).resolve().parents[2]
SWARM_ID = "peerbook-attack"
LIARS = 2
LIAR_LIFETIME_S = 900.0  # a liar stops by itself however the harness ends
START_TIMEOUT_S = 60.0


def run_liar(key: Path) -> None:
    """A DHT peer of this swarm whose dial-back service answers every asker "not reached"; prints its
    multiaddrs, then serves until stdin closes or LIAR_LIFETIME_S passes."""
    import select

    from swarmnode.config import NetworkConfig, SwarmConfig
    from swarmnode.net import peer as peer_module
    from swarmnode.net.reachability import DialBackService
    from swarmnode.wire.proto import swarmnode_pb2 as pb
    from swarmnode.wire.rules import SwarmRules

    class LyingDialBack(DialBackService):
        async def _handle(self, request: pb.DialBackRequest, context: Any) -> pb.DialBackResponse:
            self.served += 1
            return pb.DialBackResponse(observed_host="127.0.0.1", reached_ports=[])

    peer_module.DialBackService = LyingDialBack  # this process only
    network = NetworkConfig(reachability="public")
    with peer_module.DHTPeer(key, SwarmRules.of(SwarmConfig(id=SWARM_ID)), network) as liar:
        print(json.dumps(liar.advertised_maddrs()), flush=True)
        select.select([sys.stdin], [], [], LIAR_LIFETIME_S)


@contextlib.contextmanager
def liars(directory: Path, count: int) -> Iterator[list[str]]:
    """`count` liar processes; their join addresses. Stopped on exit, whatever happens."""
    processes: list[subprocess.Popen] = []
    try:
        addresses = []
        for index in range(count):
            key = new_key(directory, f"liar{index}")
            process = subprocess.Popen(
                [sys.executable, "-m", "swarmnode.lab.peerbook_attack", "--liar", str(key)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True,
            )
            processes.append(process)
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"liar {index} did not start")
            addresses += json.loads(line)
        yield addresses
    finally:
        for process in processes:
            with contextlib.suppress(Exception):
                process.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            if process.poll() is None:
                process.kill()
                process.wait()


def restart_with_book(directory: Path, code: Path, book: list[str]) -> dict[str, Any]:
    """One honest node, its peer book holding `book`, started through a fresh bootstrap: its `started` event."""
    data_dir = directory / "node"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "known_peers.json").write_text(json.dumps(book))
    swarm = LocalSwarm([NodeSpec("node", (*FAST,), rounds=1)], directory, SWARM_ID, timeout_s=600.0, fresh=False,
                       code_dir=code)
    with swarm:
        started = wait_for_start(data_dir, START_TIMEOUT_S * 4)
    return {key: started.get(key) for key in ("reachability", "reachability_detail", "dht_mode")}


def measure(directory: Path, code: Path, restarts: int) -> dict[str, Any]:
    with liars(directory, LIARS) as book:
        outcomes = [restart_with_book(directory / f"restart{index}", code, book) for index in range(restarts)]
    modes = Counter(str(outcome["dht_mode"]) for outcome in outcomes)
    verdicts = Counter(str(outcome["reachability"]) for outcome in outcomes)
    return {"restarts": outcomes, "dht_modes": dict(modes), "verdicts": dict(verdicts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--liar", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, action="append", default=None,
                        help="run the node from this checkout (repeat to compare; default: this one)")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peerbook_attack.json")
    args = parser.parse_args()
    if args.liar is not None:
        run_liar(args.liar)
        return 0
    exit_on_sigterm()
    console = Console(width=160)
    report: dict[str, Any] = {"machine": machine_facts(), "command": " ".join(["python", *sys.argv]), "runs": {}}
    table = Table(title=f"an honest public node restarted through its bootstrap, {LIARS} liars in its peer book")
    for column in ("code", "restarts", "verdicts", "DHT mode", "detail"):
        table.add_column(column)
    with tempfile.TemporaryDirectory(prefix="peerbook-attack-") as scratch:
        for index, code in enumerate(args.code or [ROOT]):
            started = time.monotonic()
            run = measure(Path(scratch) / f"code{index}", code.resolve(), args.restarts)
            run["seconds"] = round(time.monotonic() - started, 1)
            report["runs"][str(code.resolve())] = run
            table.add_row(str(code.resolve()), str(args.restarts), json.dumps(run["verdicts"]), json.dumps(run["dht_modes"]),
                          str(run["restarts"][0]["reachability_detail"]))
    console.print(table)
    write_results(args.out, report)
    console.print(f"wrote {args.out}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
