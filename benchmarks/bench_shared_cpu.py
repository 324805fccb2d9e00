"""A node's round time alone and beside other CPU load, before and after issue #27 (a good citizen on a shared
machine), in one run.

One `swarmnode join` per variant, as a volunteer starts it (the embedded seed model, default settings; gossip,
evaluation and the metrics endpoint off, so a round is sampling and training only): this checkout (after),
`--before`, a commit of this repository `git archive`d into a temporary directory, and with `--without-nice`
this checkout at nice=0 (what the passive waiting does without the lower priority). Once its first round is
done the node goes through four phases, each timing the rounds that begin and end in it (`--rounds` of them,
or as many as `--max-seconds` allow; where none ends, how long the one running had run is a lower bound):

  alone         nothing beside it but what else runs on the machine
  beside busy   one busy-loop process per CPU at normal priority (the volunteer's own work); the last column
                is each loop's share of a CPU with the node paused (SIGSTOP) just before, and while it ran:
                what the node took from the volunteer's work
  alone again   the baseline of the next load: on a shared machine other work comes and goes
  beside node   a second node of the same variant (two volunteers' nodes on one machine, or one started
                twice), timed once it has started (loaded its model; it trains from then on)

A load's ratio is its p50 over that of the alone phase just before it, on the same node. The variants alternate
(before, after, then after, before, ...). Children get no OMP_*/GOMP_*/KMP_* settings from this shell: each
variant runs with its own defaults. Every process started here is killed, whatever happens. Prints a table
and writes benchmarks/results/shared-cpu.json.

Usage: python benchmarks/bench_shared_cpu.py --before REV [--rounds 8] [--max-seconds 25] [--repeats 1]
       [--without-nice]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from swarmnode.lab.local_swarm import exit_on_sigterm, machine_facts, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "shared-cpu.json"
# each load is timed right after an alone phase, its baseline (other work on a shared machine comes and goes);
# the second node, slowest to start, last
PHASES = ("alone", "beside busy", "alone again", "beside node")
NODE_FLAGS = ["--headless", "--set", "gossip.enabled=false", "--set", "eval.every_rounds=0", "--set", "metrics.port=null"]
STARTUP_TIMEOUT_S = 120.0
PAUSED_BASELINE_S = 4.0
GOAL_RATIO = 2.0  # issue #27: a round beside a second node at most twice as long as alone


@dataclass
class Run:
    variant: str
    load: str
    repeat: int
    round_seconds: list[float] = field(default_factory=list)  # the measured node's rounds that began under the load
    train_seconds: list[float] = field(default_factory=list)
    other_node_seconds: list[float] = field(default_factory=list)  # beside node: the second node's, same window
    busy_cpu_paused: float | None = None  # beside busy: each loop's share of a CPU with the node paused just before
    busy_cpu_running: float | None = None  # ... and while the node ran
    window_s: float = 0.0
    unfinished_s: float = 0.0  # how long the round still running at the phase's end had run (a lower bound)
    load_1m_at_start: float = 0.0
    threads: int | None = None  # from the node's `started` event; None: it does not say (torch's default)
    nice: int = 0


def child_env(tree: Path) -> dict[str, str]:
    """This shell's environment without OpenMP tuning, running `tree`'s code."""
    tuning = ("OMP_", "GOMP_", "KMP_", "MKL_NUM_THREADS")
    env = {key: value for key, value in os.environ.items() if not key.startswith(tuning)}
    return {**env, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class Processes(contextlib.ExitStack):
    """Every child started here; on exit each is SIGKILLed with whatever it started."""

    def start(self, command: list[str], cwd: Path, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
        output = open(log, "w") if log else subprocess.DEVNULL
        if log:
            self.callback(output.close)
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        self.callback(kill_family, process)
        return process


def kill_family(process: subprocess.Popen) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)


def records(data_dir: Path) -> list[dict]:
    """metrics.jsonl's complete lines (a node may be mid-write)."""
    path = data_dir / "metrics.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            found.append(json.loads(line))
    return found


def round_span(record: dict) -> tuple[float, float]:
    """(start, seconds) of a round: its record is written at its end, with each phase's seconds."""
    seconds = sum(record["seconds"].values())
    return record["time"] - seconds, seconds


def wait_until(ready: Callable[[], object], process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"a node did not {what}; its log ends:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def started_event(log: Path) -> dict | None:
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"started"' in line:
            return json.loads(line)
    return None


@dataclass(frozen=True)
class Variant:
    label: str
    tree: Path
    flags: tuple[str, ...] = ()  # for both of its nodes


def measure(variant: Variant, repeat: int, args: argparse.Namespace, scratch: Path) -> list[Run]:
    """One node of `variant` through every load in turn, each phase timing only the rounds that begin and end in it."""
    tree, label = variant.tree, variant.label
    env = child_env(tree)
    join = [sys.executable, "-m", "swarmnode.cli", "join", *NODE_FLAGS, *variant.flags, "--data-dir"]
    name = f"node-{len(list(scratch.glob('node-*.log')))}"
    node_dir, node_log = scratch / name, scratch / f"{name}.log"
    runs = []
    with Processes() as processes:
        node = processes.start([*join, str(node_dir)], tree, env, node_log)
        wait_until(lambda: records(node_dir), node, node_log, "finish its first round")
        started = started_event(node_log) or {}
        for load in PHASES:
            run = Run(variant=label, load=load, repeat=repeat, load_1m_at_start=round(os.getloadavg()[0], 2),
                      threads=started.get("threads"), nice=psutil.Process(node.pid).nice())
            other_dir = scratch / f"{name}-other"
            with Processes() as beside:
                loops: list[psutil.Process] = []
                if load == "beside node":
                    other_log = scratch / f"{name}-other.log"
                    other = beside.start([*join, str(other_dir)], tree, env, other_log)
                    wait_until(lambda: started_event(other_log), other, other_log, "start")  # its first round is next
                elif load == "beside busy":
                    for _ in range(len(os.sched_getaffinity(0))):
                        loops.append(psutil.Process(beside.start([sys.executable, "-c", "while True: pass"], tree, env).pid))
                    node.send_signal(signal.SIGSTOP)
                    try:
                        time.sleep(1.0)  # the loops start
                        run.busy_cpu_paused = cpu_rate(loops, PAUSED_BASELINE_S) / len(loops)
                    finally:
                        node.send_signal(signal.SIGCONT)
                cpu_before = cpu_seconds(loops)
                ready = time.time()
                deadline = time.monotonic() + args.max_seconds
                while time.monotonic() < deadline and node.poll() is None:
                    if len([r for r in records(node_dir) if round_span(r)[0] >= ready]) >= args.rounds:
                        break
                    time.sleep(0.2)
                done = time.time()
                run.window_s = done - ready
                if loops:
                    run.busy_cpu_running = (cpu_seconds(loops) - cpu_before) / run.window_s / len(loops)
            if node.poll() is not None:
                raise SystemExit(f"the node exited; its log ends:\n{node_log.read_text()[-2000:]}")
            finished = [r for r in records(node_dir) if r["time"] <= done]
            timed = [r for r in finished if round_span(r)[0] >= ready]
            run.unfinished_s = done - max(ready, finished[-1]["time"])  # the round running at the phase's end, so far
            run.round_seconds = [round_span(r)[1] for r in timed]
            run.train_seconds = [r["seconds"].get("train", 0.0) for r in timed]
            run.other_node_seconds = [round_span(r)[1] for r in records(other_dir) if round_span(r)[0] >= ready]
            runs.append(run)
    return runs


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def cpu_rate(processes: list[psutil.Process], seconds: float) -> float:
    """CPU-seconds per second the processes get over the next `seconds`."""
    before, started = cpu_seconds(processes), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(processes) - before) / (time.monotonic() - started)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def describe(revision: str = "HEAD") -> str:
    arguments = ["describe", "--always", *(["--dirty"] if revision == "HEAD" else [revision])]
    return subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=True).stdout.strip()


def archive(revision: str, into: Path) -> Path:
    """The tree of `revision` in a directory of its own: a worktree's or checkout's edits never leak into it."""
    into.mkdir()
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, metavar="REV", help="the commit to compare with, e.g. dba59e7")
    parser.add_argument("--rounds", type=int, default=8, help="rounds timed per phase")
    parser.add_argument("--max-seconds", type=float, default=25.0, help="a phase stops timing after this")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--without-nice", action="store_true", help="also this checkout at nice=0: what the priority does")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    exit_on_sigterm()
    facts = machine_facts()
    started = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-shared-cpu-") as scratch:
        after = f"after ({describe()})"
        variants = [Variant(f"before ({describe(args.before)})", archive(args.before, Path(scratch) / "before")),
                    Variant(after, ROOT)]
        if args.without_nice:
            variants.append(Variant(f"{after}, nice=0", ROOT, ("--set", "nice=0")))
        for repeat in range(args.repeats):
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                for run in measure(variant, repeat, args, Path(scratch)):
                    shown = f"p50 {statistics.median(run.round_seconds):.2f} s" if run.round_seconds else "no round"
                    print(f"{variant.label:>30} {run.load:<12} {len(run.round_seconds)} rounds, {shown}", flush=True)
                    runs.append(run)
    rows = summarize(runs, [variant.label for variant in variants])
    print_table(rows, args)
    write_results(args.out, {
        "benchmark": "bench_shared_cpu", "date": time.strftime("%Y-%m-%d"), "machine": facts,
        "settings": {"rounds": args.rounds, "max_seconds": args.max_seconds, "repeats": args.repeats,
                     "node_flags": NODE_FLAGS, "busy_loops": len(os.sched_getaffinity(0))},
        "variants": {variant.label: {"code": "this checkout" if variant.tree == ROOT else f"git archive {args.before}",
                                     "flags": list(variant.flags)} for variant in variants},
        "seconds": round(time.monotonic() - started, 1),
        "load_1m_at_end": round(os.getloadavg()[0], 2), "goal_ratio_beside_node": GOAL_RATIO,
        "rows": rows, "runs": [asdict(run) for run in runs],
    })
    print(f"wrote {args.out}")


def baseline_of(run: Run, runs: list[Run]) -> Run:
    """The alone phase just before `run`, on the same node."""
    before = PHASES[PHASES.index(run.load) - 1]
    return next(other for other in runs if (other.variant, other.repeat, other.load) == (run.variant, run.repeat, before))


def summarize(runs: list[Run], labels: list[str]) -> list[dict]:
    """One row per variant and phase, every repeat's rounds pooled. A load's ratio is its p50 over the p50 of the
    alone phase just before it, on the same node (the median over repeats)."""
    rows = []
    for label in labels:
        for load in PHASES:
            mine = [run for run in runs if run.variant == label and run.load == load]
            pairs = [(run, baseline_of(run, runs)) for run in mine] if load.startswith("beside") else []
            ratios = [statistics.median(run.round_seconds) / statistics.median(base.round_seconds)
                      for run, base in pairs if run.round_seconds and base.round_seconds]
            bounds = [run.unfinished_s / statistics.median(base.round_seconds)
                      for run, base in pairs if not run.round_seconds and base.round_seconds]
            seconds = [s for run in mine for s in run.round_seconds]
            others = [s for run in mine for s in run.other_node_seconds]
            paused = [run.busy_cpu_paused for run in mine if run.busy_cpu_paused is not None]
            running = [run.busy_cpu_running for run in mine if run.busy_cpu_running is not None]
            rows.append({
                "variant": label, "load": load, "rounds": len(seconds), "window_s": round(sum(r.window_s for r in mine), 1),
                "unfinished_s": max(run.unfinished_s for run in mine),
                "p50_s": statistics.median(seconds) if seconds else None, "p95_s": p95(seconds) if seconds else None,
                "ratio_to_alone": statistics.median(ratios) if ratios else None,
                # where no round ended in the phase: the longest one had run this many times alone's p50
                "ratio_at_least": max(bounds) if bounds and not ratios else None,
                "train_share": sum(s for run in mine for s in run.train_seconds) / sum(seconds) if seconds else None,
                "other_node_p50_s": statistics.median(others) if others else None,
                "busy_cpu_paused": statistics.fmean(paused) if paused else None,
                "busy_cpu_running": statistics.fmean(running) if running else None,
                "threads": mine[0].threads, "nice": mine[0].nice,
            })
    return rows


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    table = Table(title=f"round seconds alone and beside CPU load ({args.rounds} rounds or {args.max_seconds:g} s per phase, "
                        f"{args.repeats} repeats)")
    for column in ("variant", "load", "threads / nice", "rounds", "p50 s", "p95 s", "x alone before", "train %",
                   "other node p50 s", "busy loops' CPU: node paused / running"):
        table.add_column(column, justify="left" if column in ("variant", "load") else "right")

    def number(value: float | None, digits: int = 2, suffix: str = "") -> str:
        return "—" if value is None else f"{value:.{digits}f}{suffix}"

    for row in rows:
        rounds, p50, ratio = str(row["rounds"]), number(row["p50_s"]), number(row["ratio_to_alone"], 1, "x")
        if not row["rounds"]:  # what is known: a round ran at least this long
            rounds, p50 = f"0 in {row['window_s']:.0f} s", f"> {row['unfinished_s']:.0f}"
            ratio = f"> {row['ratio_at_least']:.0f}x" if row["ratio_at_least"] else "—"
        table.add_row(
            row["variant"], row["load"], f"{row['threads'] or 'default'} / {row['nice']}",
            rounds, p50, number(row["p95_s"]), ratio,
            number(row["train_share"] and row["train_share"] * 100, 0), number(row["other_node_p50_s"]),
            "—" if row["busy_cpu_paused"] is None else f"{row['busy_cpu_paused']:.0%} / {row['busy_cpu_running']:.0%}",
        )
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
