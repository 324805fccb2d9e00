"""The swarm's DHT peer: large records across processes, start-up errors, clean shutdown and clean-up."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivemind.utils import get_dht_time
from peer_process import PeerProcess, wait_until_gone

from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.net.daemon import SOCKET_DIR, SOCKET_TAG, clean_stale_daemons, process_alive
from swarmnode.net.peer import DHTPeer, StoreItem
from swarmnode.net.start import StartError, StartFailure
from swarmnode.wire.batch import BATCH, MAX_ENVELOPE_BYTES
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import batch_key
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import SwarmRules, shard_of

pytestmark = pytest.mark.network

SWARM = SwarmConfig(id="itest")
RULES = SwarmRules.of(SWARM)


def new_key(directory: Path, name: str) -> tuple[Identity, Path]:
    identity, path = Identity.generate(), directory / f"{name}.key"
    save_identity(identity, path)
    return identity, path


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[tuple[PeerProcess, dict]]:
    """Another swarmnode peer in its own OS process, and what it said when it started."""
    _, key = new_key(tmp_path, "helper")
    process = PeerProcess.script("swarm_peer.py", "--identity", str(key), log_dir=tmp_path)
    try:
        yield process, process.read_json()
    finally:
        process.close()


def megabyte_batch(tag: int) -> RolloutBatch:
    now = get_dht_time()
    text = "x" * 16_000
    rollouts = tuple(
        Rollout(TaskRef("chain_sum", "0123456789abcdef", tag, i), (Completion(text),)) for i in range(64)
    )
    return RolloutBatch(SWARM.id, RULES.window_of(now), 1, now, "m", "v", rollouts)


def test_a_megabyte_record_moves_between_two_processes_both_ways(tmp_path, helper):
    """Regression for hivemind.DHT's pipe bug (values from ~16 KB up were lost): 1 MB frames, both ways."""
    process, hello = helper
    identity, key = new_key(tmp_path, "here")
    with DHTPeer(key, RULES, NetworkConfig(initial_peers=hello["maddrs"])) as here:
        published = process.ask("publish", tag=1, count=64, text_bytes=16_000)
        assert published["ok"] and published["frame_bytes"] >= 1_000_000
        their_key = batch_key(SWARM.id, published["window"], shard_of(hello["peer_id"], RULES.num_shards))
        found = here.get_many([their_key], timeout_s=20).entries
        frame = found[their_key][hello["peer_id"]][0]
        assert len(frame) == published["frame_bytes"]
        assert open_frame(frame, BATCH, RULES).value.rollouts[0].task.seed == 1

        batch = megabyte_batch(tag=2)
        frame = BATCH.seal(batch, identity)
        assert 1_000_000 <= len(frame) <= MAX_ENVELOPE_BYTES
        our_key = batch_key(SWARM.id, batch.window, shard_of(identity.peer_id, RULES.num_shards))
        expiration = RULES.expiration_of(batch.timestamp)
        [stored] = here.store([StoreItem(our_key, identity.peer_id, frame, expiration)], timeout_s=20)
        assert stored.remote >= 1
        collected = process.ask("collect", max=128, timeout_s=20)
        ours = {item["tag"] for item in collected["rollouts"] if item["signer"] == identity.peer_id}
        assert ours == {2}


def test_close_leaves_no_daemon_and_no_socket_file(tmp_path):
    _, key = new_key(tmp_path, "a")
    peer = DHTPeer(key, RULES, NetworkConfig())
    peer.start()
    daemon, sockets = peer.daemon_pid(), peer.socket_paths()
    assert process_alive(daemon) and all(
        path.name.startswith(f"{SOCKET_TAG}{os.getpid()}-") for path in sockets
    )
    peer.close()
    peer.close()
    assert wait_until_gone(daemon, 5.0)
    assert not any(path.exists() for path in sockets)


def test_a_killed_owner_leaves_no_daemon_and_the_next_start_removes_its_sockets(tmp_path, helper):
    process, hello = helper
    _, key = new_key(tmp_path, "next")
    process.signal(signal.SIGKILL)
    process.process.wait(10)
    assert wait_until_gone(hello["daemon_pid"], 10.0), "p2pd outlived its SIGKILLed owner"
    with DHTPeer(key, RULES, NetworkConfig()):
        assert not any(Path(path).exists() for path in hello["sockets"])


def test_start_up_removes_sockets_and_stops_daemons_of_dead_owners(tmp_path):
    owner = dead_pid()
    stale = SOCKET_DIR / f"{SOCKET_TAG}{owner}-0a1b-p2pd-stale.sock"
    stale.touch()
    ours = SOCKET_DIR / f"{SOCKET_TAG}{os.getpid()}-0a1b-p2pclient-live.sock"
    ours.touch()
    listen = f"-listen=/unix{SOCKET_DIR}/{SOCKET_TAG}{owner}-0a1b-p2pd-orphan.sock"
    sleeper = f'exec -a "$0" {sys.executable} -c "import time; time.sleep(60)" "$@"'
    orphan = subprocess.Popen(["bash", "-c", sleeper, f"{tmp_path}/p2pd", listen])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{orphan.pid}/cmdline").read_bytes().split(b"\0")[0] != f"{tmp_path}/p2pd".encode():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cleaned = clean_stale_daemons()
        assert orphan.wait(5) == -signal.SIGTERM
        assert cleaned.daemons_stopped >= 1 and cleaned.sockets_removed >= 1
        assert not stale.exists() and ours.exists()
    finally:
        orphan.kill()
        ours.unlink()


@pytest.mark.parametrize(
    "network, reason",
    [
        (NetworkConfig(host="localhost"), StartFailure.BAD_ADDRESS),
        (NetworkConfig(initial_peers=["/ip4/127.0.0.1/tcp/1"]), StartFailure.BAD_INITIAL_PEER),
        (NetworkConfig(initial_peers=["not a multiaddr"]), StartFailure.BAD_INITIAL_PEER),
        (
            NetworkConfig(
                initial_peers=[
                    "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                ]
            ),
            StartFailure.UNREACHABLE_PEERS,
        ),
    ],
    ids=["hostname", "no_peer_id", "garbage", "nobody_listening"],
)
def test_start_up_failures_are_one_line_with_a_reason(tmp_path, network, reason):
    _, key = new_key(tmp_path, "a")
    peer = DHTPeer(key, RULES, network)
    with pytest.raises(StartError) as info:
        peer.start()
    assert info.value.reason is reason and "\n" not in str(info.value)
    assert peer.daemon_pid() is None and peer.socket_paths() == []


def test_a_port_in_use_names_the_port_and_the_fix(tmp_path):
    _, key = new_key(tmp_path, "a")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartError) as info:
            DHTPeer(key, RULES, NetworkConfig(port=port)).start()
    assert info.value.reason is StartFailure.PORT_IN_USE
    assert str(port) in str(info.value) and "--port" in str(info.value)


def test_a_missing_identity_file_is_not_replaced_by_a_new_key(tmp_path):
    with pytest.raises(StartError) as info:
        DHTPeer(tmp_path / "missing.key", RULES, NetworkConfig()).start()
    assert info.value.reason is StartFailure.NO_IDENTITY and "identity new" in str(info.value)
    assert not (tmp_path / "missing.key").exists()


def test_a_loop_that_does_not_answer_raises_the_builtin_timeout_error_on_every_python():
    """Before 3.11, concurrent.futures has its own TimeoutError; callers catch the builtin one (a stuck DHT
    loop must cost a publish, not the node)."""
    import asyncio

    from swarmnode.net.loop import LoopThread

    loop = LoopThread("test-timeout")
    try:
        with pytest.raises(TimeoutError):
            loop.run(asyncio.sleep(5), 0.1)
    finally:
        loop.stop()


def test_a_killed_daemon_is_seen_and_a_restart_rejoins_under_the_same_identity_and_port(tmp_path, helper):
    """kill -9 of p2pd: the peer says so, and a restart shares again as the same peer on the same port."""
    process, hello = helper
    identity, key = new_key(tmp_path, "here")
    with DHTPeer(key, RULES, NetworkConfig(initial_peers=hello["maddrs"])) as here:
        port, daemon, sockets = here.visible_maddrs[0].split("/tcp/")[1].split("/")[0], here.daemon_pid(), here.socket_paths()
        assert here.daemon_alive() and sockets
        os.kill(daemon, signal.SIGKILL)
        assert wait_until_gone(daemon, 5.0)
        assert not here.daemon_alive()
        here.restart()
        assert here.daemon_alive() and here.daemon_pid() != daemon
        assert here.peer_id == identity.peer_id and f"/tcp/{port}/" in here.visible_maddrs[0] + "/"
        assert not any(path.exists() for path in sockets)
        batch = megabyte_batch(tag=3)
        frame = BATCH.seal(batch, identity)
        key_ = batch_key(SWARM.id, batch.window, shard_of(identity.peer_id, RULES.num_shards))
        [stored] = here.store([StoreItem(key_, identity.peer_id, frame, RULES.expiration_of(batch.timestamp))], timeout_s=20)
        assert stored.remote >= 1
        collected = process.ask("collect", max=128, timeout_s=20)
        assert {item["tag"] for item in collected["rollouts"] if item["signer"] == identity.peer_id} == {3}
