"""`swarmnode join` as a test or the fault bench runs it: a real process whose JSON-lines stdout is read by a
thread (every wait has a deadline and fails loudly), whose stderr goes to a file (a full pipe can never stall
it), and which is killed, with its p2pd, whatever the caller does."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

FAST = ["--set", "sapo.questions_per_round=4", "--set", "sapo.completions_per_question=4",
        "--set", "model.max_new_tokens=12", "--set", "model.threads=1", "--set", "eval.every_rounds=0"]


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# The process's wall clock set off by an offset before anything reads it (hivemind binds time.time at import):
# clock skew between nodes on one host, where stepping the host clock would move every process alike.
_SKEWED = (
    "import runpy, sys, time; _real, _offset = time.time, float(sys.argv.pop(1)); "
    "time.time = lambda: _real() + _offset; "
    "runpy.run_module('swarmnode.cli', run_name='__main__', alter_sys=True)"
)


def kill_family(process: subprocess.Popen) -> None:
    """SIGKILL a process and its descendants (a p2pd in a session of its own among them), and reap it."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for member in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)


class NodeProcess:
    """One `swarmnode join --headless` on `data_dir`; use it as a context manager. `tree`: the checkout whose
    code runs (default: the one imported here); `clock_offset_s`: how far its clock is off."""

    def __init__(
        self, data_dir: Path, *args: str, fast: bool = True, tree: Path | None = None, clock_offset_s: float = 0.0,
        **popen: object,
    ) -> None:
        descriptor, name = tempfile.mkstemp(prefix="swarmnode-join-", suffix=".stderr")
        self.stderr_path = Path(name)
        self._stderr = os.fdopen(descriptor, "w")
        entry = ["-c", _SKEWED, str(clock_offset_s)] if clock_offset_s else ["-m", "swarmnode.cli"]
        command = [sys.executable, *entry, "join", "--data-dir", str(data_dir), "--headless",
                   "--metrics-port", "0", *(FAST if fast else []), *args]
        if tree is not None:
            popen.setdefault("cwd", tree)
            popen["env"] = {**dict(popen.get("env") or os.environ), "PYTHONPATH": str(tree)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True, **popen)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, predicate: Callable[[dict], bool], timeout_s: float) -> dict:
        """The first JSON event (from now on) that satisfies `predicate`; AssertionError at the deadline or exit."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the node exited ({self.process.wait()}) first; stderr:\n{self.stderr_tail()}")
            self.lines.append(line)
            if line.startswith("{") and predicate(event := json.loads(line)):
                return event
        raise AssertionError(f"no such event within {timeout_s:g} s; stderr:\n{self.stderr_tail()}")

    def finish(self, timeout_s: float) -> tuple[int, str, str]:
        """Wait for the exit (AssertionError, and a kill, past the deadline): (exit code, all stdout, stderr)."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the node did not exit within {timeout_s:g} s; stderr:\n{self.stderr_tail()}") from None
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        self._queue.put(None)
        return self.process.returncode, "".join(self.lines), self.stderr_text()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    def daemon(self) -> psutil.Process | None:
        """The node's p2pd (a child in a session of its own), if it runs."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                if child.name() == "p2pd":
                    return child
        return None

    def kill(self) -> None:
        """SIGKILL the node and whatever it started (p2pd runs in a session of its own), if still there."""
        kill_family(self.process)
        self._stderr.close()
        self.stderr_path.unlink(missing_ok=True)

    def stderr_text(self) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])
