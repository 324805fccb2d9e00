"""Measuring code in a process of its own: peak RSS is per process, and another checkout's swarmnode can be
measured by the same script (benchmarks compare a change against the code before it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def measure_apart(script: str, spec: dict, code: str, label: str) -> dict | None:
    """`script --one SPEC` in a fresh process (peak RSS is per process) running `code`'s swarmnode: its
    result row, or None after saying why it failed."""
    env = {**os.environ, "PYTHONPATH": code}
    done = subprocess.run([sys.executable, script, "--one", json.dumps(spec)], capture_output=True, text=True, env=env, cwd=code)
    if done.returncode != 0:
        print(f"{label}: failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])
