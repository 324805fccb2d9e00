"""How a node shares its machine with the volunteer's own work (issue #27): as many compute threads as CPUs the
process may use, OpenMP threads that sleep instead of spinning while they wait, and a lower scheduling priority.

A leaf of the package that never imports torch: the CLI calls `quiet_openmp` before anything loads torch, whose
OpenMP runtime reads its settings once, when it is loaded.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import MutableMapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may run on (its affinity mask), capped by its cgroup's CPU quota; at least 1. torch's
    default follows the mask but not the quota: a container given 2 CPUs' time on a 16-core host would run 16
    threads in it, and OpenMP slows down by far more than the share it lost."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup_root, proc_cgroup)
    return max(1, min(cpus, quota) if quota is not None else cpus)


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The tightest CPU quota of this process's cgroup and its ancestors, in whole CPUs rounded up (a quota of
    1.5 CPUs keeps 2 threads busy); None without one. A service manager sets it on the service's own cgroup
    (systemd's CPUQuota=), a container runtime on the cgroup the container sees as its root."""
    return min(filter(None, map(_quota_in, _cgroup_dirs(cgroup_root, proc_cgroup))), default=None)


def _quota_in(directory: Path) -> int | None:
    text = _read(directory / "cpu.max")  # cgroup v2: "max 100000" (none) or "150000 100000"
    if text is None:  # v1: a quota of -1 is none
        text = f"{_read(directory / 'cpu.cfs_quota_us')} {_read(directory / 'cpu.cfs_period_us')}"
    quota, _, period = text.partition(" ")
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def _cgroup_dirs(cgroup_root: Path, proc_cgroup: Path) -> list[Path]:
    """Where this process's quota may be: its own cgroup and every ancestor, in the v2 tree and in v1's cpu
    controller; and those trees' roots, where a container sees its own cgroup (its /proc/self/cgroup may name
    the host's path)."""
    v1_mounts = [cgroup_root / "cpu", cgroup_root / "cpu,cpuacct"]
    found = [cgroup_root, *v1_mounts]
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or (parts[1] and "cpu" not in parts[1].split(",")):
            continue
        for top in [cgroup_root] if parts[1] == "" else v1_mounts:
            own = top / parts[2].strip("/")
            found += [own, *(parent for parent in own.parents if parent.is_relative_to(top))]
    return [directory for directory in dict.fromkeys(found) if directory.is_dir()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def quiet_openmp(environ: MutableMapping[str, str] = os.environ) -> None:
    """Make OpenMP's idle threads sleep at once (OMP_WAIT_POLICY=PASSIVE) unless the user chose a policy. By
    default GNU OpenMP spins 300,000 times before it sleeps: beside any other busy process that spinning takes
    the core the thread it waits for needs, and a 0.4 s round took 7 s beside a second node (issue #27). It
    must be in the environment before torch loads its OpenMP runtime: the runtime reads it once, at load.
    PASSIVE alone suffices: libgomp then spins 0 times (GOMP_SPINCOUNT), LLVM's and Intel's take a
    KMP_BLOCKTIME of 0; a GOMP_SPINCOUNT or KMP_BLOCKTIME the user set still wins over it."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def lower_priority(nice: int) -> None:
    """Lower this process's priority to niceness `nice`, never raise it. Linux sets it per thread and a new
    thread or process inherits its creator's: call it before any is started. Refused (a sandbox), the node runs
    on at the priority it has, which its `started` event shows."""
    current = niceness()
    if current is not None and nice > current:
        with contextlib.suppress(OSError):
            os.nice(nice - current)


def niceness() -> int | None:
    """This thread's niceness (the process's, when set before its threads started); None where there is none."""
    return os.nice(0) if hasattr(os, "nice") else None
