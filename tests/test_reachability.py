"""Reachability: the verdict from peers' dial-backs, the probe of a libp2p listener, the bounded service,
and what a node does with the verdict (DHT mode, advertised addresses). Homes behind real NAT are in
tests/test_netlab.py."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest
from hivemind.utils import get_dht_time

from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.net.peer import DHTPeer, StoreItem
from swarmnode.net.reachability import MULTISTREAM_HEADER, network_warnings, probe_listener, verdict
from swarmnode.wire.address import Reachability
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity, load_identity, save_identity
from swarmnode.wire.keys import batch_key
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import SwarmRules, shard_of

RULES = SwarmRules.of(SwarmConfig(id="reach-test"))


def answer(host: str, *ports: int) -> pb.DialBackResponse:
    return pb.DialBackResponse(observed_host=host, reached_ports=list(ports))


def test_public_when_at_least_half_of_the_answers_reached_us_and_only_those_addresses_are_advertised():
    report = verdict([answer("203.0.113.7", 4001), answer("203.0.113.7"), None], [4001])
    assert report.reachability is Reachability.PUBLIC
    assert (report.asked, report.answered, report.reached) == (3, 2, 1)
    assert report.dialable == ("/ip4/203.0.113.7/tcp/4001",)


def test_private_when_most_answers_could_not_dial_us_and_unknown_without_answers():
    assert verdict([answer("203.0.113.7"), answer("203.0.113.7"), answer("203.0.113.7", 4001)], [4001]).reachability \
        is Reachability.PRIVATE
    assert verdict([None, None], [4001]).reachability is Reachability.UNKNOWN
    assert verdict([], [4001]).reachability is Reachability.UNKNOWN


def test_a_port_we_did_not_ask_about_does_not_count():
    assert verdict([answer("203.0.113.7", 22)], [4001]).reachability is Reachability.PRIVATE


def test_an_announced_address_peers_cannot_confirm_makes_us_private():
    wrong = verdict([answer("203.0.113.7", 4001)], [4001], announced_hosts=["198.51.100.1"])
    assert wrong.reachability is Reachability.PRIVATE and "cannot confirm" in wrong.describe()
    right = verdict([answer("203.0.113.7", 4001)], [4001], announced_hosts=["203.0.113.7"])
    assert right.reachability is Reachability.PUBLIC


def serve_once(greeting: bytes | None) -> tuple[int, threading.Thread]:
    """A TCP listener on 127.0.0.1 that accepts one connection and sends `greeting` (or nothing)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def run() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                if greeting is not None:
                    connection.sendall(greeting)
                connection.recv(1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize(("greeting", "reached"), [(MULTISTREAM_HEADER, True), (b"SSH-2.0-OpenSSH\r\n", False), (None, False)])
def test_the_probe_needs_a_libp2p_greeting_not_just_an_open_port(greeting, reached):
    port, thread = serve_once(greeting)
    assert asyncio.run(probe_listener("127.0.0.1", port)) is reached
    thread.join(5)


def test_the_probe_of_a_closed_port_fails_fast():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert asyncio.run(probe_listener("127.0.0.1", port)) is False


def test_a_loopback_listener_with_peers_on_other_hosts_is_warned_about():
    peer = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    [warning] = network_warnings("127.0.0.1", [peer])
    assert "network.host=" in warning  # the fix names the key to set
    assert network_warnings("127.0.0.1", [peer.replace("203.0.113.7", "127.0.0.1")]) == []


def new_key(directory: Path, name: str) -> Path:
    path = directory / f"{name}.key"
    save_identity(Identity.generate(), path)
    return path


@pytest.mark.network
def test_peers_dial_a_node_back_and_it_serves_the_dht_or_joins_as_a_client_when_told_it_is_private(tmp_path):
    with DHTPeer(new_key(tmp_path, "entry"), RULES, NetworkConfig()) as entry:
        assert entry.reachability.reachability is Reachability.UNKNOWN and not entry.client_mode  # nobody to ask
        join = NetworkConfig(initial_peers=entry.advertised_maddrs())
        with DHTPeer(new_key(tmp_path, "node"), RULES, join) as node:
            report = node.reachability
            assert report.reachability is Reachability.PUBLIC and not node.client_mode
            assert report.dialable == tuple(f"/ip4/127.0.0.1/tcp/{port}" for port in node.listen_ports)
            assert node.advertised_maddrs() == [f"{address}/p2p/{node.peer_id}" for address in report.dialable]
            assert node.check_reachability_now().reachability is Reachability.PUBLIC  # a refused re-ask keeps it
            assert entry.num_peers() >= 1
        private = join.model_copy(update={"reachability": "private"})
        with DHTPeer(new_key(tmp_path, "client"), RULES, private) as client:
            assert client.client_mode and client.advertised_maddrs() == []
            assert client.num_peers() >= 1  # it knows the entry peer ...
            assert client.peer_id not in entry.known_peer_ids()  # ... which never routes to it


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.network
def test_a_node_the_check_finds_undiallable_joins_as_a_client_though_its_config_says_auto(tmp_path):
    """The verdict, not only network.reachability, decides the DHT mode: a node that announces a port nobody
    listens on is not reached when peers dial it back, so it must not serve (peers would dial it and wait)."""
    with DHTPeer(new_key(tmp_path, "entry"), RULES, NetworkConfig()) as entry:
        network = NetworkConfig(
            initial_peers=entry.advertised_maddrs(), announce_maddrs=[f"/ip4/127.0.0.1/tcp/{unused_port()}"]
        )
        assert network.reachability == "auto"
        with DHTPeer(new_key(tmp_path, "node"), RULES, network) as node:
            assert node.reachability.reachability is Reachability.PRIVATE and node.reachability.answered == 1
            assert node.client_mode
            assert node.peer_id not in entry.known_peer_ids()


@pytest.mark.network
def test_a_recheck_asks_peers_that_answer_now_when_the_configured_ones_are_gone(tmp_path):
    """Configured peers come and go (a bootstrap restarts, fallback addresses rot): a re-check that asked only
    them would find nobody and keep a stale verdict for good. It asks routing-table peers first."""
    with DHTPeer(new_key(tmp_path, "entry"), RULES, NetworkConfig()) as entry:
        gone = [f"/ip4/127.0.0.1/tcp/{unused_port()}/p2p/{Identity.generate().peer_id}" for _ in range(2)]
        network = NetworkConfig(initial_peers=entry.advertised_maddrs(), fallback_peers=gone)
        with DHTPeer(new_key(tmp_path, "other"), RULES, NetworkConfig(initial_peers=entry.advertised_maddrs())) as other:
            with DHTPeer(new_key(tmp_path, "node"), RULES, network) as node:
                assert other.peer_id in node.known_peer_ids()
                entry.close()
                served = other._dial_back.served
                report = node.check_reachability_now()
                assert other._dial_back.served == served + 1
                assert report.reachability is Reachability.PUBLIC and report.answered == 1


@pytest.mark.network
def test_a_node_that_turns_private_drops_the_records_it_held_as_a_replica(tmp_path):
    """Stale records must not answer lookups from a node that no longer serves: its own reads look locally first."""
    with DHTPeer(new_key(tmp_path, "entry"), RULES, NetworkConfig()) as entry:
        join = NetworkConfig(initial_peers=entry.advertised_maddrs())
        with DHTPeer(new_key(tmp_path, "node"), RULES, join) as node:
            key = new_key(tmp_path, "writer")
            with DHTPeer(key, RULES, join) as writer:
                signer, now = load_identity(key), get_dht_time()
                batch = RolloutBatch(RULES.swarm_id, RULES.window_of(now), 0, now, "m", "v",
                                     (Rollout(TaskRef("chain_sum", "0123456789abcdef", 1, 0), (Completion("x"),)),))
                item = StoreItem(batch_key(RULES.swarm_id, batch.window, shard_of(signer.peer_id, RULES.num_shards)),
                                 signer.peer_id, BATCH.seal(batch, signer), RULES.expiration_of(now))
                assert writer.store([item], timeout_s=10)[0].remote == 2
            assert node.storage.stored_bytes > 0 and not node.client_mode
            node._require_loop().run(node._switch_mode(True), 20)  # what a re-check that finds it private does
            assert node.client_mode and node.storage.stored_bytes == 0 and len(node.storage) == 0
            assert entry.storage.stored_bytes > 0  # the public replica keeps its copy
