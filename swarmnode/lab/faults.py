"""Faults a volunteer's machine meets over days, injected into real `swarmnode join` processes on 127.0.0.1: what
the node did, the rounds it lost and the data it kept. The tests assert the goals on this checkout;
benchmarks/faults.py runs every fault on two checkouts (before and after a change) and prints the table.

Each scenario takes a work directory and the checkout to run, and always kills what it started (processes,
their p2pd, a mounted tmpfs), also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from swarmnode.lab.disks import tmpfs
from swarmnode.lab.node_process import NodeProcess, events, kill_family
from swarmnode.learn.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
SWARM = ["--set", "swarm.id=faults"]
ROUND_TIMEOUT_S = 120.0  # a round of the tiny model, on a loaded 2-core machine, with a start in front of it


@dataclass
class FaultOutcome:
    """One row of the fault table."""

    fault: str
    behaviour: str  # what the node did, in words
    rounds_lost: int | None  # rounds not shared, not trained or not kept, as the fault defines it
    data_kept: str
    goal_met: bool
    details: dict = field(default_factory=dict)


def p2pd_killed(work: Path, tree: Path = ROOT, rounds_after: int = 4) -> FaultOutcome:
    """kill -9 of a running node's p2pd: the node should share again within 2 rounds (goal)."""
    with _founder(work, tree) as (founder, maddr), NodeProcess(
        work / "node", *SWARM, "--peers", maddr, tree=tree
    ) as node:
        node.wait_for(_published, ROUND_TIMEOUT_S)
        daemon = node.daemon()
        assert daemon is not None, "the node runs no p2pd"
        killed_at = _status(node)["round"]
        daemon.send_signal(signal.SIGKILL)
        seen = _rounds_until(node, lambda e: e["event"] == "round" and e["round"] > killed_at + rounds_after)
    rounds = [e for e in seen if e["event"] == "round"]
    shared = [e["round"] for e in rounds if e["published"]]
    lost = (shared[0] if shared else max([killed_at, *(e["round"] for e in rounds)]) + 1) - killed_at - 1
    died = [e for e in seen if e["event"] == "p2pd_died"]
    behaviour = (
        f"p2pd_died event, p2pd restarted, shared again at round {shared[0]}" if died and shared
        else f"no event; {len(shared)} of the {len(rounds)} rounds after the kill shared"
    )
    return FaultOutcome(
        "p2pd killed (SIGKILL)", behaviour, lost, "all (training never stopped)", bool(shared) and lost <= 2,
        {"killed_in_round": killed_at, "rounds": [(e["round"], e["published"]) for e in rounds]},
    )


def sigterm_in_generate(work: Path, tree: Path = ROOT, new_tokens: int = 1500) -> FaultOutcome:
    """SIGTERM a few seconds into a long generate phase (a random-init model never stops early, as a big model on
    a CPU takes minutes): exit within 10 s (goal), and the next start resumes at the round that was abandoned."""
    model = _never_stopping_model(work / "model")
    long_generate = ["--set", f"model.name={model}", "--set", "gossip.enabled=false",
                     "--set", f"model.max_new_tokens={new_tokens}", "--set", "model.max_prompt_tokens=128"]
    data_dir = work / "node"
    with NodeProcess(data_dir, *long_generate, tree=tree) as node:
        node.wait_for(lambda e: e["event"] == "started", ROUND_TIMEOUT_S)
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while (status := _status(node))["phase"] != "generate":
            assert time.monotonic() < deadline, "the node never started generating"
            time.sleep(0.05)
        time.sleep(3.0)  # well inside the phase
        signalled = time.monotonic()
        node.signal(signal.SIGTERM)
        code, stdout, _ = node.finish(timeout_s=900)
        exit_s = time.monotonic() - signalled
    kept = Checkpointer(data_dir / "checkpoints").latest()
    kept_round = int(kept.name.split("-")[1]) if kept else None
    with NodeProcess(data_dir, *long_generate, "--set", "model.max_new_tokens=4", "--rounds", "1", tree=tree) as again:
        resumed = again.wait_for(lambda e: e["event"] == "started", ROUND_TIMEOUT_S)["round"]
        again.finish(timeout_s=ROUND_TIMEOUT_S)
    stopped = [e for e in events(stdout) if e["event"] in ("stop_requested", "stopped")]
    return FaultOutcome(
        "SIGTERM during a long generate", f"exited {code} {exit_s:.1f} s after the signal; resumed at round {resumed + 1}",
        None if kept_round is None else status["round"] - kept_round,
        f"checkpoint of round {kept_round}" if kept is not None else "no checkpoint",
        exit_s <= 10 and code == 0 and resumed == status["round"],
        {"exit_s": round(exit_s, 2), "exit_code": code, "round_at_signal": status["round"], "resumed_at": resumed,
         "stopped": stopped},
    )


def full_disk(work: Path, tree: Path = ROOT, rounds: int = 6) -> FaultOutcome:
    """The disk fills after the first checkpoint: the node keeps training, the newest valid checkpoint is
    kept, nothing is torn (goal); space freed, the next save succeeds."""
    data_dir = work / "node"
    checkpoints = data_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    every_round = ["--set", "gossip.enabled=false", "--set", "checkpoint.min_interval_s=0",
                   "--set", "checkpoint.every_rounds=1", "--rounds", str(rounds)]
    with tmpfs(checkpoints), NodeProcess(data_dir, *every_round, tree=tree) as node:
        node.wait_for(lambda e: e["event"] == "checkpoint", ROUND_TIMEOUT_S)
        _fill(checkpoints / ".filler")
        code, stdout, stderr = node.finish(timeout_s=ROUND_TIMEOUT_S * 2)
        logged = events(stdout)
        saved = Checkpointer(checkpoints).checkpoints()
        loadable = [path.name for path in saved if (path / "state.json").exists()]
        torn = [path.name for path in checkpoints.iterdir() if path.name.startswith(".round-")]
    done = [e["round"] for e in logged if e["event"] == "round"]
    warned = [e for e in logged if e["event"] == "checkpoint_failed"]
    behaviour = (
        f"exit {code}; {len(done)} of {rounds} rounds; {len(warned)} checkpoint_failed warnings"
        + ("" if code == 0 else f"; error: {stderr.strip().splitlines()[-1] if stderr.strip() else '?'}")
    )
    return FaultOutcome(
        "disk full during checkpoints", behaviour, rounds - len(done),
        f"checkpoint {loadable[-1] if loadable else 'none'} (newest on disk), {len(torn)} torn"
        + (f"; {len(done) - len(loadable)} rounds trained since, saved once space is freed" if code == 0 else ""),
        code == 0 and len(done) == rounds and bool(loadable) and not torn,
        {"rounds_done": done, "checkpoints": loadable, "torn": torn},
    )


def bootstrap_restarted(work: Path, tree: Path = ROOT, within_s: float = 60.0) -> FaultOutcome:
    """The bootstrap killed, and started again on its address and identity: the nodes keep sharing meanwhile, and
    a newcomer that knows only the bootstrap gets peers' rollouts within `within_s` of the restart (goal)."""
    port = _free_port()
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(_bootstrap(work / "bootstrap", port, tree))
        nodes = [stack.enter_context(NodeProcess(work / name, *SWARM, "--peers", first.maddr, tree=tree)) for name in "ab"]
        for node in nodes:
            node.wait_for(_published, ROUND_TIMEOUT_S)
        first.kill()
        target = _status(nodes[0])["round"] + 2
        meanwhile = _rounds_until(nodes[0], lambda e: e["event"] == "round" and e["round"] >= target)
        shared = sum(e["published"] for e in meanwhile if e["event"] == "round" and e["round"] >= target - 1)
        again = stack.enter_context(_bootstrap(work / "bootstrap", port, tree))
        restarted = time.monotonic()
        newcomer = stack.enter_context(NodeProcess(work / "newcomer", *SWARM, "--peers", again.maddr, tree=tree))
        seen = _rounds_until(newcomer, lambda e: e["event"] == "round" and e["rollouts_in"] > 0, within_s + ROUND_TIMEOUT_S)
        reached_s = time.monotonic() - restarted
    rounds = [e for e in seen if e["event"] == "round"]
    reached = bool(rounds) and rounds[-1]["rollouts_in"] > 0
    behaviour = f"nodes shared in {shared} of 2 rounds without it; after its restart a newcomer through it " + (
        f"got peers' rollouts {reached_s:.0f} s later (its round {rounds[-1]['round']})" if reached
        else f"got nothing in {reached_s:.0f} s ({len(rounds)} rounds)"
    )
    return FaultOutcome(
        "bootstrap killed and restarted", behaviour, len(rounds) - int(reached), "all (the nodes' own state)",
        shared == 2 and reached and reached_s <= within_s,
        {"shared_without_bootstrap": shared, "newcomer_seconds": round(reached_s, 1), "newcomer_rounds": len(rounds)},
    )


def clock_skew(work: Path, tree: Path = ROOT, offset_s: float = 10.0) -> FaultOutcome:
    """A node whose clock is `offset_s` off the swarm's: it must not join and publish records peers refuse;
    it says so in one line, with the fix, and the swarm goes on."""
    with _founder(work, tree) as (founder, maddr):
        with NodeProcess(work / "skewed", *SWARM, "--peers", maddr, tree=tree, clock_offset_s=offset_s) as skewed:
            code, stdout, stderr = skewed.finish(timeout_s=ROUND_TIMEOUT_S)
        founder.wait_for(lambda e: e["event"] == "round", ROUND_TIMEOUT_S)
    said = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    rounds = [e for e in events(stdout) if e["event"] == "round"]
    return FaultOutcome(
        f"clock {offset_s:+g} s off the swarm's", f"exit {code}: {said}" if code else f"ran {len(rounds)} rounds",
        None, "the swarm's: nothing published", code != 0 and "clock" in said,
        {"exit_code": code, "message": said},
    )


FAULTS: dict[str, Callable[..., FaultOutcome]] = {
    "p2pd_killed": p2pd_killed,
    "sigterm_in_generate": sigterm_in_generate,
    "full_disk": full_disk,
    "bootstrap_restarted": bootstrap_restarted,
    "clock_skew": clock_skew,
}


def _never_stopping_model(directory: Path) -> Path:
    """A random-init Qwen2 with the embedded seed's tokenizer: it never emits EOS or closes an answer, so every
    completion runs to max_new_tokens (a generate phase of minutes at little memory)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from swarmnode.learn.policy import EMBEDDED_MODEL_DIR

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR)
    config = Qwen2Config(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=256, vocab_size=len(tokenizer), max_position_embeddings=2048,
                         tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _published(event: dict) -> bool:
    return event["event"] == "round" and event["published"]


@contextlib.contextmanager
def _founder(work: Path, tree: Path) -> Iterator[tuple[NodeProcess, str]]:
    """A node that founds the swarm; its first address for others to join."""
    with NodeProcess(work / "founder", *SWARM, tree=tree) as founder:
        started = founder.wait_for(lambda e: e["event"] == "started", ROUND_TIMEOUT_S)
        yield founder, started["maddrs"][0]


def _rounds_until(node: NodeProcess, done: Callable[[dict], bool], timeout_s: float = ROUND_TIMEOUT_S * 3) -> list[dict]:
    """Every event from now until `done` (or the node's exit, or the deadline)."""
    start = len(node.lines)
    with contextlib.suppress(AssertionError):
        node.wait_for(done, timeout_s)
    return events("".join(node.lines[start:]))


def _status(node: NodeProcess) -> dict:
    url = next(e for e in events("".join(node.lines)) if e["event"] == "started")["metrics_url"]
    with urllib.request.urlopen(f"{url}/status", timeout=10) as response:
        return json.loads(response.read())


def _fill(path: Path) -> None:
    """Fill the filesystem holding `path` to the last byte."""
    with open(path, "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 2**20)
            out.flush()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class _Bootstrap:
    process: subprocess.Popen
    maddr: str

    def kill(self) -> None:
        kill_family(self.process)


@contextlib.contextmanager
def _bootstrap(data_dir: Path, port: int, tree: Path) -> Iterator[_Bootstrap]:
    """`swarmnode bootstrap` on 127.0.0.1:`port` with the identity in `data_dir`; killed, with its p2pd, on exit."""
    command = [sys.executable, "-m", "swarmnode.cli", "bootstrap", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir), *SWARM]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tree,
                               env={**os.environ, "PYTHONPATH": str(tree)})
    bootstrap = _Bootstrap(process, "")
    try:
        bootstrap.maddr = process.stdout.readline().strip()
        yield bootstrap
    finally:
        bootstrap.kill()
