"""Test helper: run a script in its own OS process and talk to it with JSON lines, always bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from swarmnode.net.daemon import process_alive

TESTS = Path(__file__).resolve().parent
READY_TIMEOUT_S = 90.0  # imports (torch via hivemind) + p2pd + join, on a loaded 2-core machine


class PeerProcess:
    """A helper script (tests/*.py or `-m module`) in a child process; `close()` always reaps it."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=TESTS.parent,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    @classmethod
    def script(cls, name: str, *args: str, log_dir: Path) -> PeerProcess:
        return cls([str(TESTS / name), *args], log_dir / f"{Path(name).stem}-{time.monotonic_ns()}.log")

    def _pump(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def read_line(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no output within {timeout_s:g} s; log:\n{self.log_tail()}") from None
        if line is None:
            raise EOFError(f"process exited ({self.process.poll()}); log:\n{self.log_tail()}")
        return line.rstrip("\n")

    def read_json(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        return json.loads(self.read_line(timeout_s))

    def ask(self, op: str, timeout_s: float = 60.0, **fields: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        return self.read_json(timeout_s)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.process.pid, signum)

    def close(self, timeout_s: float = 15.0) -> int:
        """Ask politely (quit / SIGTERM), then kill; returns the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
            try:
                self.process.wait(timeout_s / 2)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout_s / 2)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    return not process_alive(pid)
