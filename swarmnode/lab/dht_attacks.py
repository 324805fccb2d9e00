"""Hostile DHT servers next to the keys an honest swarm reads, and what the honest peers see: the measurements of
benchmarks/bench_dht_attacks.py and tests/test_dht_attacks.py.

The honest swarm is benchmarks/dht_attack_scene.py in a process of its own, under the code tree given (so the
same harness measures the code before a defence and after it); the hostile servers (`hostile_dht`) run here,
always this tree's. A cell is one attack with a number of attackers: ask the scene for the keys of a window a few
windows ahead, grind that many identities next to the target key (nearer than every honest peer), start them,
and let the scene report what its peers saw in that window. Attackers are in place before the window before it
begins: a beacon is stored under its window's census key and the next one's, and a census reads both windows'.

Attacks: `census_hiding` (the busiest census bucket of the tier readers read answers empty; with as many attackers as
buckets, one per bucket), `census_replacement` (it answers with 64 valid beacons of Sybils), `shard` (a victim
signer's shard key of the window answers empty and drops its stores) and `directory` (the window's directory key
answers empty; in protocol v2 its busiest bucket of the tier the swarm's size calls for).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hivemind.dht.routing import DHTID
from hivemind.utils import get_dht_time

from swarmnode.config import SwarmConfig
from swarmnode.lab.dht_swarm import start_all
from swarmnode.lab.hostile_dht import Answer, HostilePeer, SybilBeacons, empty, grind
from swarmnode.net.daemon import process_alive
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.rules import SwarmRules

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "benchmarks" / "dht_attack_scene.py"
ATTACKS = ("census_hiding", "census_replacement", "shard", "directory")
BASELINE = "baseline"  # no attacker: every measurement at once
READY_TIMEOUT_S = 240.0  # imports (torch, for the flat tree) and N p2pd starts on a loaded 2-core machine
KEYS_TIMEOUT_S = 30.0
LATE_RETRIES = 2  # a cell whose attackers were not up in time is tried again, further ahead
EXIT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Cell:
    """Attacks run at once, each at its own key by `attackers` attackers of its own; none: the baseline."""

    attacks: tuple[str, ...]
    attackers: int

    @property
    def name(self) -> str:
        return "+".join(self.attacks) or BASELINE


Target = tuple[str, Identity, str, Answer]  # an attacker: the attack it serves, its identity, its key, its answer


class SceneProcess:
    """The honest swarm (benchmarks/dht_attack_scene.py) under PYTHONPATH=`tree`, talked to by JSON lines; on
    close it is stopped (killed if it does not stop), and so is any p2pd of its that outlived it."""

    def __init__(self, tree: Path, keys: Path, window_s: float, collectors: int, log: TextIO) -> None:
        # -S: no .pth file runs, so the venv's editable install of this checkout cannot answer for a module the
        # tree under test lacks (its finder would, after the path); the tree and site-packages are the whole path
        command = [sys.executable, "-S", str(SCENE), "--keys", str(keys), "--window-s", str(window_s),
                   "--collectors", str(collectors)]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), *site.getsitepackages()])}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                        text=True, env=environment, start_new_session=True)
        self.window_s = window_s
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name="scene-out", daemon=True).start()
        self.ready: dict[str, Any] = {}
        self.daemon_pids: list[int] = []
        self.honest: list[DHTID] = []

    def wait_ready(self) -> None:
        self.ready = self.wait_for("event", "ready", READY_TIMEOUT_S)
        self.daemon_pids = [pid for pid in self.ready["daemon_pids"] if pid is not None]
        self.honest = [DHTID(int(peer["node_id"])) for peer in self.ready["peers"]]

    def _read(self) -> None:
        for line in self.process.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait_for(self, field: str, value: str, timeout_s: float, window: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                message = self.lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise TimeoutError(f"the scene sent no {value} within {timeout_s:.0f} s") from None
            if message is None:
                raise RuntimeError(f"the scene exited (code {self.process.wait()}) before sending {value}")
            if message.get(field) == value and (window is None or message.get("window") == window):
                return message

    def send(self, request: dict[str, Any]) -> None:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def keys(self, window: int) -> dict[str, Any]:
        self.send({"cmd": "keys", "window": window})
        return self.wait_for("reply", "keys", KEYS_TIMEOUT_S, window)

    def measure(self, window: int, census: bool) -> dict[str, Any]:
        """What the peers saw in `window`, once it is over."""
        self.send({"cmd": "measure", "window": window, "census": census})
        timeout_s = (window + 2) * self.window_s - get_dht_time() + READY_TIMEOUT_S
        return self.wait_for("reply", "measured", timeout_s, window)

    def close(self) -> list[int]:
        """Stop the scene; returns the p2pd daemons of it that had to be killed (none, if it cleaned up)."""
        with contextlib.suppress(OSError, ValueError):
            self.send({"cmd": "stop"})
            self.process.stdin.close()
        try:
            self.process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return kill_leftovers(self.daemon_pids)


def kill_leftovers(pids: Sequence[int], grace_s: float = 10.0) -> list[int]:
    """The p2pd daemons among `pids` still running after `grace_s` (they exit when their owner does), killed."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive_p2pd(pid) for pid in pids):
        time.sleep(0.2)
    leftovers = [pid for pid in pids if alive_p2pd(pid)]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


def alive_p2pd(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return command.endswith(b"p2pd") and process_alive(pid)


class Attackers:
    """Hostile servers, one per target, up while the block runs and stopped after, p2pd and all;
    `killed`: their daemons that had to be killed (none, if they exited as asked)."""

    def __init__(self, targets: Sequence[Target], initial_peers: Sequence[str], workdir: Path) -> None:
        self.targets, self.initial_peers, self.workdir = targets, initial_peers, workdir
        self.peers: dict[int, HostilePeer] = {}  # by target
        self.killed: list[int] = []

    def _start(self, index: int) -> Callable[[], None]:
        _, identity, key, answer = self.targets[index]
        path = self.workdir / f"hostile-{index}.key"
        return lambda: self.peers.update({index: HostilePeer(identity, path, self.initial_peers, {key: answer})})

    def __enter__(self) -> list[HostilePeer]:
        """The servers, in the order of their targets."""
        try:
            start_all([self._start(index) for index in range(len(self.targets))])
        except BaseException:  # those that started are stopped all the same
            self.__exit__()
            raise
        return [self.peers[index] for index in range(len(self.targets))]

    def __exit__(self, *exc_info: object) -> None:
        pids = [peer.daemon_pid for peer in self.peers.values() if peer.daemon_pid is not None]
        start_all([peer.close for peer in self.peers.values()])
        self.killed = kill_leftovers(pids)


def targets_of(cell: Cell, keys: dict[str, Any], bucket: int, rules: SwarmRules,
               honest: Sequence[DHTID], tier: int = 3) -> tuple[list[Target], set[str]]:
    """Who stands where and says what, for one cell (`bucket`: the busiest census bucket, of `tier`: 3 in a tree
    before protocol v2, whose 8 buckets are those of tier 3); and the Sybils' peer ids."""
    targets: list[Target] = []
    sybils: set[str] = set()
    for attack in cell.attacks:
        if attack == "census_hiding" and cell.attackers == len(keys["census"]):  # one attacker at every bucket
            targets += [(attack, grind(key, honest, 1)[0], key, empty) for key in keys["census"]]
            continue
        key = {"census_hiding": keys["census"][bucket], "census_replacement": keys["census"][bucket],
               "shard": keys["victim_batch"], "directory": keys["directory"]}[attack]
        answer: Answer = empty
        if attack == "census_replacement":
            replacement = SybilBeacons(rules, bucket, tier=tier)
            answer, sybils = replacement, sybils | replacement.peer_ids
        targets += [(attack, identity, key, answer) for identity in grind(key, honest, cell.attackers)]
    return targets, sybils


def run_cell(scene: SceneProcess, cell: Cell, rules: SwarmRules, workdir: Path, lead_s: float) -> dict[str, Any]:
    """One cell: attackers in place before the window before the measured one, then that window's measurements."""
    window_s = rules.window_s
    for attempt in range(LATE_RETRIES + 1):
        started = get_dht_time()
        window = math.floor((started + lead_s) / window_s) + 2  # window - 1 begins at least lead_s from now
        targets, sybils = targets_of(cell, scene.keys(window), scene.ready["bucket"], rules, scene.honest,
                                     scene.ready.get("census_tier", 3))
        hostile = Attackers(targets, scene.ready["maddrs"], workdir)
        with hostile as attackers:
            ready_s = get_dht_time() - started
            if get_dht_time() > (window - 1) * window_s:
                lead_s += window_s
                continue  # too late for the window before: its beacons went to honest replicas
            census = not cell.attacks or any(attack.startswith("census") for attack in cell.attacks)
            report = scene.measure(window, census=census)
            counts = [{"attack": target[0], **attacker.counts()} for target, attacker in zip(targets, attackers)]
        return {"attack": cell.name, "attacks": list(cell.attacks), "attackers": cell.attackers, "window": window, "ready_s": round(ready_s, 2),
                "attempts": attempt + 1, "hostile": counts, "hostile_p2pd_killed": hostile.killed,
                "sybils": len(sybils), **report}
    raise RuntimeError(f"{cell}: the attackers were never up a window ahead (lead {lead_s:.0f} s)")


def run_cells(tree: Path, cells: Sequence[Cell], *, peers: int, window_s: float, collectors: int,
              workdir: Path, keys: Path | None = None, fresh_swarm: bool = True,
              on_cell: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run each cell against an honest swarm of `peers` under `tree` (identities from `keys`, made if None); returns
    the scene's description and each cell's report. `fresh_swarm`: a swarm of its own for each cell (attackers that
    left stay in honest routing tables as dead neighbours of the keys they stood at, and a read that asks one
    counts it as unanswered), else one swarm for all."""
    rules = SwarmRules.of(SwarmConfig(id="bench-dht-attacks", window_s=window_s, record_ttl_s=2 * window_s, epoch_windows=1))
    if keys is None:
        keys = Path(tempfile.mkdtemp(prefix="honest-", dir=workdir))
        for index in range(peers):
            save_identity(Identity.generate(), keys / f"honest-{index:03d}.key")
    reports: list[dict[str, Any]] = []
    killed: list[int] = []
    with open(workdir / f"scene-{tree.name}.log", "a") as log:
        for group in [[cell] for cell in cells] if fresh_swarm else [list(cells)]:
            scene = SceneProcess(tree, keys, window_s, collectors, log)
            try:
                scene.wait_ready()
                lead_s = window_s
                for cell in group:
                    started = time.monotonic()
                    report = run_cell(scene, cell, rules, workdir, lead_s)
                    lead_s = max(window_s / 2, 1.5 * report["ready_s"] + 2.0)
                    report["wall_s"] = round(time.monotonic() - started, 1)
                    reports.append(report)
                    if on_cell is not None:
                        on_cell(report)
            finally:
                killed += scene.close()
    scene_info = {key: scene.ready.get(key) for key in ("tree", "census_keys_rotate", "tiered", "census_tier",
                                                         "directory_tier", "victim", "bucket", "bucket_peers", "readers",
                                                         "collectors")}
    return {"scene": {**scene_info, "peers": len(scene.ready["peers"]), "p2pd_killed": killed}, "cells": reports}


def summarize(report: dict[str, Any], honest: int) -> dict[str, Any]:
    """What a cell's report says about each measurement it took (census, shard delivery, directory)."""
    summary: dict[str, Any] = {}
    censuses = report.get("censuses") or []
    if censuses:
        shares = [row["honest"] / honest for row in censuses]
        summary["census"] = {
            "listed_mean": sum(shares) / len(shares), "listed_min": min(shares),
            "complete": sum(row["complete"] for row in censuses) / len(censuses),
            "false_complete": sum(row["complete"] and row["honest"] < honest for row in censuses) / len(censuses),
            "sybils_mean": sum(row["sybils"] for row in censuses) / len(censuses), "censuses": len(censuses),
        }
    rounds = report.get("rounds") or []
    if rounds:
        collects = [c for row in rounds for c in row["collects"]]
        read = [c for c in collects if c["got_victim"] or not c["timed_out"]]  # a cut collect may not have read it
        directory = [c["directory_entries"] / (honest - 1) for c in collects if c["directory_keys_read"]]
        summary["shard"] = {
            "rounds": len(rounds), "victim_acknowledged": sum(r["victim_ok"] for r in rounds) / len(rounds),
            "victim_stored_honestly": sum(r["honest_holders"] > 0 for r in rounds) / len(rounds),
            "delivered": sum(c["got_victim"] for c in read) / len(read) if read else None, "collects_read": len(read),
        }
        if directory:
            summary["directory"] = {"listed_mean": sum(directory) / len(directory), "listed_min": min(directory),
                                    "reads": len(directory)}
    return summary
