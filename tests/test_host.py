"""A good citizen on a shared machine (issue #27): threads from the CPUs the process may use (affinity, cgroup
quota), OpenMP threads that sleep while they wait, and a `join` that runs at a lower priority."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarmnode.host import cpu_quota, quiet_openmp, usable_cpus
from swarmnode.lab.node_process import NodeProcess

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="affinity, cgroups and /proc are Linux's")


def cgroup_tree(tmp_path: Path, files: dict[str, str], own: str = "0::/") -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup holding `files` (relative path -> content) and a /proc/self/cgroup naming `own`."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(own + "\n")
    return root, proc


@pytest.mark.parametrize(("cpu_max", "cpus"), [
    ("max 100000", None), ("150000 100000", 2), ("200000 100000", 2), ("50000 100000", 1), ("1000 100000", 1),
    ("400000 50000", 8), ("garbage", None), ("", None),
])
def test_a_cgroup_v2_quota_is_counted_in_whole_cpus_rounded_up(tmp_path, cpu_max, cpus):
    assert cpu_quota(*cgroup_tree(tmp_path, {"cpu.max": cpu_max})) == cpus


def test_no_cgroup_files_is_no_quota(tmp_path):
    assert cpu_quota(*cgroup_tree(tmp_path, {})) is None
    assert cpu_quota(tmp_path / "absent", tmp_path / "absent-too") is None


def test_the_tightest_quota_of_the_own_cgroup_and_its_ancestors_counts(tmp_path):
    """systemd's CPUQuota= is set on the service's cgroup, not the root; a parent slice may be tighter still."""
    own = "system.slice/swarmnode.service"
    root, proc = cgroup_tree(tmp_path, {"cpu.max": "max 100000", f"{own}/cpu.max": "300000 100000"}, own=f"0::/{own}")
    assert cpu_quota(root, proc) == 3
    (root / "system.slice" / "cpu.max").write_text("100000 100000\n")
    assert cpu_quota(root, proc) == 1


@pytest.mark.parametrize(("quota_us", "cpus"), [("-1", None), ("300000", 3), ("150000", 2)])
def test_a_cgroup_v1_quota_is_read_from_the_cpu_controller(tmp_path, quota_us, cpus):
    files = {"cpu/cpu.cfs_quota_us": quota_us, "cpu/cpu.cfs_period_us": "100000"}
    assert cpu_quota(*cgroup_tree(tmp_path, files, own="4:memory:/x\n1:cpu:/")) == cpus


def test_a_v1_container_that_sees_the_hosts_path_reads_its_own_root(tmp_path):
    """Without a cgroup namespace /proc/self/cgroup names the host's path, which does not exist inside."""
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "200000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}
    assert cpu_quota(*cgroup_tree(tmp_path, files, own="3:cpu,cpuacct:/docker/0123abcd")) == 2


@linux_only
def test_threads_are_the_cpus_of_the_affinity_mask_capped_by_the_quota(tmp_path):
    mask = os.sched_getaffinity(0)
    no_quota = cgroup_tree(tmp_path, {"cpu.max": "max 100000"})
    assert usable_cpus(*no_quota) == len(mask)
    try:
        os.sched_setaffinity(0, {min(mask)})
        assert usable_cpus(*no_quota) == 1
    finally:
        os.sched_setaffinity(0, mask)
    (tmp_path / "cgroup" / "cpu.max").write_text("100000 100000\n")
    assert usable_cpus(*no_quota) == 1
    (tmp_path / "cgroup" / "cpu.max").write_text(f"{len(mask) * 200000} 100000\n")
    assert usable_cpus(*no_quota) == len(mask)  # a quota above the mask's CPUs gives no more threads than it


def test_openmp_waits_passively_unless_the_user_chose_a_policy():
    environ: dict[str, str] = {}
    quiet_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    quiet_openmp(chosen)
    assert chosen == {"OMP_WAIT_POLICY": "ACTIVE"}


@linux_only
def test_priority_is_only_ever_lowered():
    """In a child: a niceness once lowered is not raised again by a smaller setting (nor could it be, unprivileged)."""
    code = ("import os; from swarmnode.host import lower_priority, niceness\n"
            "lower_priority(12); first = niceness(); lower_priority(5); print(first, niceness(), os.getpriority(os.PRIO_PROCESS, 0))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    expected = max(12, os.nice(0))
    assert done.stdout.split() == [str(expected)] * 3


def task_niceness(pid: int) -> dict[int, int]:
    """Thread id -> niceness of every thread of `pid` (/proc/PID/task/TID/stat, field 19)."""
    nice = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rpartition(")")[2].split()
        nice[int(task.name)] = int(fields[16])
    return nice


@linux_only
def test_join_waits_passively_runs_niced_and_reports_its_threads(tmp_path):
    """The real command: torch's OpenMP runtime was loaded with a spin count of 0 (it prints its settings with
    OMP_DISPLAY_ENV), every thread of the node runs at niceness 10, and `started` says how many threads."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    with NodeProcess(tmp_path / "node", "--set", "model.threads=auto", "--set", "gossip.enabled=false", env=env) as node:
        started = node.wait_for(lambda event: event["event"] == "started", timeout_s=120)
        node.wait_for(lambda event: event["event"] == "round", timeout_s=120)
        nice = task_niceness(node.pid)
        stderr = node.stderr_text()
    assert started["threads"] == usable_cpus()
    assert started["nice"] == max(10, os.nice(0))
    assert len(nice) > 1 and set(nice.values()) == {started["nice"]}, nice
    if "OPENMP DISPLAY ENVIRONMENT" not in stderr:
        pytest.skip("this torch's OpenMP runtime does not print its settings (not GNU OpenMP)")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in stderr and "GOMP_SPINCOUNT = '0'" in stderr, stderr[-2000:]
