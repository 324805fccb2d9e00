"""A node that runs out of memory while training halves its micro-batch and goes on, on a real CPU allocator
failure (an address-space limit, tests/oom_probe.py); when not even one row fits it skips the step. Never dies."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parent / "oom_probe.py"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_allocation_failure_halves_the_micro_batch_and_when_one_row_does_not_fit_the_step_is_skipped():
    # both probes at once: each is a process of its own (the limit is per process)
    probes = {
        name: subprocess.Popen([sys.executable, str(PROBE), str(micro_batch), str(headroom_mib)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, micro_batch, headroom_mib in (("halves", 16, 500), ("skips", 4, 1))
    }
    stats = {}
    for name, probe in probes.items():
        stdout, stderr = probe.communicate(timeout=300)
        assert probe.returncode == 0, stderr[-2000:]
        stats[name] = json.loads(stdout.strip().splitlines()[-1])
    halves, skips = stats["halves"], stats["skips"]
    assert halves["out_of_memory"] >= 1 and halves["micro_batch_size"] < 16
    assert halves["skipped_reason"] is None and halves["updates"] == 1 and halves["weights_changed"]
    assert skips["micro_batch_size"] == 1 and skips["out_of_memory"] >= 2
    assert "out of memory with a micro-batch of 1" in skips["skipped_reason"] and not skips["weights_changed"]
