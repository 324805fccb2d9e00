"""A real swarm on this machine: one bootstrap peer and N `swarmnode join` processes on 127.0.0.1, each
with its own data dir (so its own identity), seeds and config; waits, collects metrics, always tears down.

Used by benchmarks/reproduce_sapo.py and the tests; as a CLI it runs one swarm and prints a table per node.
Usage: python -m swarmnode.lab.local_swarm [--nodes 4] [--rounds 5] [--dir runs/local] [--config 4/4]
       [--seed 0] [--timeout-s 1800] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from swarmnode.net.daemon import SOCKET_DIR, SOCKET_TAG
from swarmnode.ops.metrics import RoundRecord, read_records

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the lab runs from one
CLI = (sys.executable, "-m", "swarmnode.cli")
# One thread per process and no tokenizer thread pool: N nodes share two cores, oversubscription only adds noise.
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
POLL_S = 1.0


class LocalSwarmError(Exception):
    """The swarm could not be started (the message names the process and ends with its last stderr lines)."""


@dataclass(frozen=True)
class NodeSpec:
    """One node: a name (its data dir under the swarm's base dir), `--set` overrides and rounds to run;
    `prefix` goes before the command (e.g. `ip netns exec NS` to run it on another host of a lab)."""

    name: str
    overrides: tuple[str, ...] = ()
    rounds: int = 5
    prefix: tuple[str, ...] = ()


@dataclass
class NodeResult:
    name: str
    data_dir: Path
    returncode: int | None  # None: still running when the deadline passed (then killed)
    records: list[RoundRecord]
    peer_id: str | None = None
    model: str | None = None
    stderr_tail: str = ""

    @property
    def cumulative_reward(self) -> float:
        return sum(record.reward_local for record in self.records)


@dataclass
class SwarmResult:
    nodes: list[NodeResult]
    seconds: float
    timed_out: bool
    leftovers: list[str] = field(default_factory=list)  # processes of ours the sweep had to kill

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(node.returncode == 0 for node in self.nodes)

    def failures(self) -> str:
        """One line per node that did not finish cleanly, with the end of its stderr."""
        lines = [f"timed out after {self.seconds:.0f} s"] if self.timed_out else []
        for node in self.nodes:
            if node.returncode != 0:
                lines.append(f"{node.name}: exit {node.returncode}, {len(node.records)} rounds; {node.stderr_tail}")
        return "\n".join(lines)


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen
    streams: tuple[IO[str], IO[str]]
    data_dir: Path


class LocalSwarm:
    """Start, wait for and tear down one local swarm. Use as a context manager or call `run()`.

    Teardown is unconditional (context exit, `atexit`, SIGTERM/Ctrl-C via the caller's handlers): SIGTERM
    to each process group (a node then checkpoints and stops its p2pd), SIGKILL after `grace_s`, and a
    final psutil sweep over every descendant ever seen. p2pd runs in a session of its own (so that a
    terminal's Ctrl-C does not kill it before the node closes it), which is why process groups alone
    would miss it.
    """

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        base_dir: Path,
        swarm_id: str,
        common_overrides: Sequence[str] = (),
        timeout_s: float = 1800.0,
        grace_s: float = 30.0,
        fresh: bool = True,
        bootstrap: NodeSpec = NodeSpec("bootstrap"),
        env: dict[str, str] | None = None,
        code_dir: Path = ROOT,
    ) -> None:
        if len({node.name for node in nodes}) != len(nodes):
            raise ValueError("node names must be distinct (each is a data dir)")
        self.nodes = list(nodes)
        self.base_dir = Path(base_dir)
        self.swarm_id = swarm_id
        self.common_overrides = [f"swarm.id={swarm_id}", "model.threads=1", *common_overrides]
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.fresh = fresh
        self.bootstrap = bootstrap
        self.env = {**os.environ, **CHILD_ENV, **(env or {})}
        self.code_dir = code_dir  # whose swarmnode the processes run (`python -m` looks in its cwd first)
        self.bootstrap_maddr: str | None = None
        self._processes: list[_Child] = []  # the bootstrap first, then the nodes, in start order
        self._seen: dict[int, psutil.Process] = {}
        self._closed = False
        self._leftovers: list[str] = []

    def __enter__(self) -> LocalSwarm:
        try:
            self.start()
        except BaseException:  # Ctrl-C or a failure half-way through start: stop what did start
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, progress: Callable[[dict[str, int]], None] | None = None, progress_every_s: float = 30.0) -> SwarmResult:
        """Start, wait, tear down (also on Ctrl-C or an error, which then propagate)."""
        with self:
            return self.wait(progress, progress_every_s)

    def start(self) -> None:
        """Start the bootstrap peer, read its multiaddr, then start every node pointed at it."""
        atexit.register(self.close)
        if self.fresh:
            for name in ["bootstrap", *(node.name for node in self.nodes)]:
                shutil.rmtree(self.base_dir / name, ignore_errors=True)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        swarm_rules = [flag for flag in self.common_overrides if flag.startswith("swarm.")]
        bootstrap_dir = self.base_dir / self.bootstrap.name
        bootstrap = self._spawn(
            self.bootstrap.name, bootstrap_dir,
            ["bootstrap", "--identity", str(bootstrap_dir / "identity.key"),
             *_flags([*swarm_rules, *self.bootstrap.overrides])],
            self.bootstrap.prefix,
        )
        self.bootstrap_maddr = self._wait_for_maddr(bootstrap, deadline_s=120.0)
        for node in self.nodes:
            data_dir = self.base_dir / node.name
            self._spawn(
                node.name, data_dir,
                ["join", "--headless", "--data-dir", str(data_dir), "--peers", self.bootstrap_maddr,
                 "--rounds", str(node.rounds), "--metrics-port", "0",
                 *_flags([*self.common_overrides, *node.overrides])],
                node.prefix,
            )

    @property
    def _children(self) -> list[_Child]:
        return self._processes[1:]

    def node_pids(self) -> dict[str, int]:
        """Each node's process id, by name (e.g. to put it in a cgroup)."""
        return {child.name: child.popen.pid for child in self._children}

    def wait(self, progress: Callable[[dict[str, int]], None] | None = None, progress_every_s: float = 30.0) -> SwarmResult:
        """Until every node has exited, one has failed, or the deadline passes; then collect metrics."""
        started = time.monotonic()
        deadline = started + self.timeout_s
        next_progress = started + progress_every_s
        timed_out = False
        while True:
            self._remember_descendants()
            codes = [child.popen.poll() for child in self._children]
            if all(code is not None for code in codes) or any(code not in (None, 0) for code in codes):
                break
            if self._processes[0].popen.poll() is not None:  # the bootstrap peer died
                break
            now = time.monotonic()
            if now > deadline:
                timed_out = True
                break
            if progress is not None and now >= next_progress:
                progress(self.rounds_done())
                next_progress = now + progress_every_s
            time.sleep(POLL_S)
        seconds = time.monotonic() - started
        self.close()
        return SwarmResult([self._result(child) for child in self._children], seconds, timed_out, self._leftovers)

    def rounds_done(self) -> dict[str, int]:
        """Rounds each node has recorded so far (its metrics.jsonl lines)."""
        done = {}
        for child in self._children:
            path = child.data_dir / "metrics.jsonl"
            done[child.name] = path.read_text().count("\n") if path.exists() else 0
        return done

    def close(self) -> None:
        """Stop everything we started; idempotent. Ctrl-C is held off meanwhile so teardown completes."""
        if self._closed:
            return
        self._closed = True
        with _sigint_deferred():
            self._remember_descendants()
            self._stop(self._children)
            self._stop(self._processes[:1])
            self._sweep()
            for child in self._processes:
                for stream in child.streams:
                    stream.close()
        atexit.unregister(self.close)

    def _spawn(self, name: str, data_dir: Path, arguments: list[str], prefix: Sequence[str] = ()) -> _Child:
        data_dir.mkdir(parents=True, exist_ok=True)
        stdout = open(data_dir / "stdout.log", "w")
        stderr = open(data_dir / "stderr.log", "w")
        popen = subprocess.Popen(
            [*prefix, *CLI, *arguments], stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=self.code_dir,
            env=self.env, start_new_session=True,
        )
        child = _Child(name, popen, (stdout, stderr), data_dir)
        self._processes.append(child)
        self._seen[popen.pid] = psutil.Process(popen.pid)
        return child

    def _wait_for_maddr(self, child: _Child, deadline_s: float) -> str:
        """The bootstrap prints the multiaddrs others join with on stdout once its DHT is up."""
        log = child.data_dir / "stdout.log"
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            for line in log.read_text().splitlines():
                if line.startswith("/ip"):
                    return line.strip()
            if child.popen.poll() is not None:
                break
            time.sleep(0.2)
        self.close()
        raise LocalSwarmError(f"the bootstrap peer printed no multiaddr: {_tail(child.data_dir / 'stderr.log')}")

    def _remember_descendants(self) -> None:
        """Note every live descendant (p2pd included) so the final sweep can find it even if orphaned."""
        for child in self._processes:
            with contextlib.suppress(psutil.Error):
                for process in psutil.Process(child.popen.pid).children(recursive=True):
                    self._seen.setdefault(process.pid, process)

    def _stop(self, children: list[_Child]) -> None:
        """SIGTERM each process group, wait up to grace_s for all, then SIGKILL what is left."""
        children = [child for child in children if child.popen.poll() is None]
        for child in children:
            _signal_group(child.popen, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.popen.poll() is None:
                self._leftovers.append(f"{child.name} (pid {child.popen.pid}) ignored SIGTERM for {self.grace_s:g} s")
                _signal_group(child.popen, signal.SIGKILL)
                child.popen.wait()

    def _sweep(self) -> None:
        """Kill anything of ours still alive: remembered descendants, and p2pd daemons whose owner was ours."""
        owners = {child.popen.pid for child in self._processes}
        survivors = [process for process in self._seen.values() if _alive(process)]
        survivors += [p for p in _daemons_owned_by(owners) if p.pid not in {s.pid for s in survivors}]
        if survivors:
            _, alive = psutil.wait_procs(survivors, timeout=5.0)  # p2pd exits once its owner's socket closes
            for process in alive:
                with contextlib.suppress(psutil.Error):
                    self._leftovers.append(f"{process.name()} (pid {process.pid}) outlived its owner")
                    process.kill()
            psutil.wait_procs(alive, timeout=5.0)
        for owner in owners:
            for path in SOCKET_DIR.glob(f"{SOCKET_TAG}{owner}-*.sock"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _result(self, child: _Child) -> NodeResult:
        metrics = child.data_dir / "metrics.jsonl"
        result = NodeResult(
            child.name, child.data_dir, child.popen.returncode, read_records(metrics) if metrics.exists() else [],
            stderr_tail=_tail(child.data_dir / "stderr.log"),
        )
        for line in (child.data_dir / "stdout.log").read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if event.get("event") == "started":
                    result.peer_id, result.model = event["peer_id"], event["model"]
        return result


def _flags(overrides: Sequence[str]) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


def _signal_group(popen: subprocess.Popen, signum: int) -> None:
    """Signal the child's process group (it leads one: start_new_session) while the leader is unreaped."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signum)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _daemons_owned_by(owners: set[int]) -> list[psutil.Process]:
    """p2pd processes whose control socket names one of `owners` (swarmnode names sockets by owner pid)."""
    prefixes = tuple(f"-listen=/unix{SOCKET_DIR}/{SOCKET_TAG}{owner}-" for owner in owners)
    daemons = []
    for process in psutil.process_iter(["name", "cmdline"]):
        arguments = process.info["cmdline"] or []
        if arguments and arguments[0].endswith("p2pd") and any(a.startswith(prefixes) for a in arguments):
            daemons.append(process)
    return daemons


def _tail(path: Path, lines: int = 3) -> str:
    if not path.exists():
        return ""
    return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def _sigint_deferred():
    """Ignore SIGINT while tearing down (only the main thread may change handlers), then restore it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def exit_on_sigterm() -> None:
    """Make SIGTERM/SIGHUP unwind like Ctrl-C does, so `finally` blocks and context exits tear down."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def seeded_overrides(index: int, seed: int) -> list[str]:
    """Node `index` of replicate `seed`: the same sampling and question seeds in every configuration."""
    node_seed = seed * 1000 + index
    return [f"seed={node_seed}", f"tasks.seed={node_seed}"]


def sharing_overrides(config: str, sampling: str = "equal") -> list[str]:
    """'I/J' -> the node's own and external group counts and sampling mode; under transplant, Q = I + J (the
    SAPO authors' protocol: a round is I own questions plus J peers' groups)."""
    local, external = (int(part) for part in config.split("/"))
    overrides = [f"sapo.local_groups={local}", f"sapo.external_groups={external}", f"sapo.sampling={sampling}"]
    return overrides + ([f"sapo.questions_per_round={local + external}"] if sampling == "transplant" else [])


def machine_facts() -> dict:
    """What a reader needs to compare timings: cores, load when measured, versions."""
    import torch

    return {
        "cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2), "machine": platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__,
    }


def write_results(path: Path, report: dict) -> None:
    """A harness's JSON report, in its folder (made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def print_nodes(result: SwarmResult, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title} ({result.seconds:.0f} s)")
    for column in ("node", "model", "exit", "rounds", "cumulative reward", "s/round", "peers", "rollouts in",
                   "external groups"):
        table.add_column(column, justify="right")
    for node in result.nodes:
        records = node.records
        spans = [b.time - a.time for a, b in zip(records, records[1:])]
        table.add_row(
            node.name, (node.model or "?")[-24:], str(node.returncode), str(len(records)),
            f"{node.cumulative_reward:.2f}", f"{sum(spans) / len(spans):.1f}" if spans else "—",
            str(max((r.peers for r in records), default=0)), str(sum(r.rollouts_in for r in records)),
            str(sum(r.groups_external for r in records)),
        )
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "local")
    parser.add_argument("--swarm-id", default="local")
    parser.add_argument("--config", default="4/4", help="I/J for every node")
    parser.add_argument("--sampling", choices=("equal", "transplant"), default="equal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    exit_on_sigterm()
    nodes = [
        NodeSpec(f"node{k}", tuple(sharing_overrides(args.config, args.sampling) + seeded_overrides(k, args.seed)), args.rounds)
        for k in range(args.nodes)
    ]
    swarm = LocalSwarm(nodes, args.dir, args.swarm_id, args.overrides, timeout_s=args.timeout_s)
    try:
        result = swarm.run(progress=lambda done: print(f"rounds so far: {done}", flush=True))
    except KeyboardInterrupt:
        sys.exit("interrupted: the swarm is torn down; node logs and metrics are in " + str(args.dir))
    print_nodes(result, f"{args.nodes} nodes, {args.config}, seed {args.seed}")
    for line in result.leftovers:
        print(f"teardown: {line}")
    if not result.ok:
        sys.exit(f"the swarm did not finish cleanly:\n{result.failures()}")


if __name__ == "__main__":
    main()
