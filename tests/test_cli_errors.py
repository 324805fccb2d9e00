"""A volunteer's first hour through the real `swarmnode` command: every error names the path, key, address or
model at fault and the fix, fails fast, and leaves nothing behind; help and doctor read as written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from peer_process import PeerProcess

ROOT = Path(__file__).resolve().parents[1]
COMMAND_TIMEOUT_S = 180.0


def swarmnode(*args: str, env: dict[str, str] | None = None, columns: int = 100) -> subprocess.CompletedProcess:
    """The command as a user runs it, in its own process, bounded in time."""
    environment = {**os.environ, "COLUMNS": str(columns), **(env or {})}
    return subprocess.run([sys.executable, "-m", "swarmnode", *args], capture_output=True, text=True, cwd=ROOT,
                          env=environment, timeout=COMMAND_TIMEOUT_S)


def test_a_data_dir_under_a_file_is_named_with_the_cause_not_blamed_on_the_metrics_port(tmp_path):
    """`--data-dir FILE/sub` says which path is a file and how to fix it, and says nothing of ports."""
    blocker = tmp_path / "afile"
    blocker.write_text("hi")
    result = swarmnode("join", "--headless", "--rounds", "1", "--data-dir", str(blocker / "sub"))
    assert result.returncode == 1
    assert f"{blocker} is a file, not a directory" in result.stderr
    assert "--data-dir" in result.stderr and "metrics-port" not in result.stderr


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs (root only), unmounted also when the test fails."""
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mountpoint)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_a_read_only_data_dir_is_named_with_the_cause(read_only_dir):
    result = swarmnode("join", "--headless", "--rounds", "1", "--data-dir", str(read_only_dir / "node"))
    assert result.returncode == 1
    assert f"data dir {read_only_dir / 'node'}" in result.stderr and "Read-only file system" in result.stderr


def test_a_mistyped_model_fails_at_once_with_did_you_mean_and_leaves_no_data_dir(tmp_path):
    """Offline, a near miss of a known name is answered with that name; the hub client's retries never start,
    and the failed first start writes no identity, config or lock."""
    data_dir = tmp_path / "fresh" / "node"
    result = swarmnode("join", "--headless", "--rounds", "1", "--data-dir", str(data_dir), "--set", "model.name=swarmnode-sed")
    assert result.returncode == 1
    assert "Did you mean 'swarmnode-seed'?" in result.stderr
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "fresh").exists()


def test_an_unreachable_hub_is_named_after_one_attempt(tmp_path):
    """Online mode with a hub nobody answers (a closed loopback port): the error names the address and why."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = swarmnode("eval", "someone/some-model",
                       env={"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert result.returncode == 1
    assert f"the hub cannot be reached (127.0.0.1:{port}: Connection refused)" in result.stderr.replace("\n", " ")
    assert "Retrying" not in result.stderr


def test_eval_of_a_missing_directory_says_no_such_directory():
    result = swarmnode("eval", "/nonexistent/model-dir")
    assert result.returncode == 1
    assert "model '/nonexistent/model-dir': no such directory" in result.stderr
    assert "Repo id" not in result.stderr


def test_a_busy_metrics_port_is_named_as_such(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = swarmnode("join", "--headless", "--rounds", "1", "--data-dir", str(tmp_path / "node"),
                           "--metrics-port", str(port), "--set", "gossip.enabled=false")
    assert result.returncode == 1
    assert f"metrics endpoint 127.0.0.1:{port}" in result.stderr and "--metrics-port" in result.stderr


def test_a_value_with_brackets_is_printed_as_given_not_read_as_markup():
    """The pattern and the value in a config error keep their [brackets] (rich markup once ate them)."""
    result = swarmnode("doctor", "--check", "config", "--set", "swarm.id=a[b]")
    assert "'^[a-z0-9][a-z0-9._-]*$'" in result.stdout and "(got 'a[b]')" in result.stdout


def test_doctor_never_passes_what_it_could_not_read_and_names_the_list_fix(tmp_path):
    """A config that does not load fails; every check that needs it says skip, never pass."""
    result = swarmnode("doctor", "--json", "--data-dir", str(tmp_path / "node"), "--set",
                       "network.initial_peers=/ip4/127.0.0.1/tcp/1")
    outcomes = {row["name"]: row for row in json.loads(result.stdout)}
    assert result.returncode == 1
    assert outcomes["config"]["outcome"] == "fail"
    assert "network.initial_peers=[/ip4/127.0.0.1/tcp/1]" in outcomes["config"]["detail"]
    for name in ("memory", "p2pd", "ports", "initial peers", "reachability", "model"):
        assert outcomes[name]["outcome"] == "skip", name


def test_doctor_takes_peers_and_never_splits_a_path(tmp_path):
    """`--peers` reaches the initial-peers check; at 60 columns a long path is on one line, not folded."""
    data_dir = tmp_path / "a-rather-long-directory-name-for-a-volunteer" / "node"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = swarmnode("doctor", "--data-dir", str(data_dir), "--peers", f"/ip4/127.0.0.1/tcp/{port}",
                       "--check", "initial peers", "--check", "identity", columns=60)
    assert f"unreachable: /ip4/127.0.0.1/tcp/{port}" in result.stdout
    assert str(data_dir / "identity.key") in result.stdout


def test_identity_show_reads_the_data_dir_it_is_given(tmp_path):
    made = swarmnode("identity", "new", "--data-dir", str(tmp_path / "node"))
    peer_id = next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("peer_id"))
    shown = swarmnode("identity", "show", "--data-dir", str(tmp_path / "node"))
    assert f"peer_id    {peer_id}" in shown.stdout and str(tmp_path / "node" / "identity.key") in shown.stdout
    default = swarmnode("identity", "show")
    assert peer_id not in default.stdout


@pytest.mark.network
def test_a_bootstrap_keeps_its_own_identity_and_a_second_one_on_it_is_refused(tmp_path, monkeypatch):
    """By default a bootstrap is not the default node (its own key under SWARMNODE_HOME/bootstrap), and two
    processes never run one identity."""
    home = tmp_path / "home"
    monkeypatch.setenv("SWARMNODE_HOME", str(home))
    first = PeerProcess(["-m", "swarmnode", "bootstrap", "--port", "0"], tmp_path / "first.log")
    try:
        assert first.read_line().startswith("/ip4/127.0.0.1/tcp/")
        second = swarmnode("bootstrap", "--port", "0", "--data-dir", str(home / "bootstrap"))
    finally:
        first.close()
    assert (home / "bootstrap" / "identity.key").exists() and not (home / "identity.key").exists()
    assert second.returncode == 1 and "another swarmnode (pid" in second.stderr


def test_help_shows_placeholders_a_person_reads():
    """No `<bool>`, `<list[str]>` or `{data_dir}`: metavars name what to type."""
    for command in (["join", "--help"], ["report", "--help"], ["doctor", "--help"], ["bootstrap", "--help"]):
        text = swarmnode(*command).stdout
        assert "<bool>" not in text and "<list[str]>" not in text and "{data_dir}" not in text, command
    assert "--peers MULTIADDR" in swarmnode("join", "--help").stdout
    assert "held-out pass rate" in swarmnode("report", "--help").stdout
