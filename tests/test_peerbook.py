"""The peer book: public peers learnt from the directory let a node rejoin when its bootstrap is gone."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import pytest
from gossip_peers import join

from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.net import peerbook
from swarmnode.net.peer import DHTPeer, swarm_scopes
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.rollout import Completion, Rollout, TaskRef
from swarmnode.wire.rules import SwarmRules

SWARM = SwarmConfig(id="peerbook-test")
PEER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


def test_only_full_tcp_join_addresses_survive_a_round_trip_and_junk_files_read_as_empty(tmp_path):
    good = f"/ip4/203.0.113.7/tcp/4001/p2p/{PEER}"
    peerbook.save(tmp_path, [good, "/ip4/203.0.113.7/tcp/4001", "/dns4/x/tcp/1/p2p/" + PEER, good, 7])
    assert peerbook.load(tmp_path) == [good]
    for junk in (b"{not json", b'{"a": 1}', b"[" + b'"x",' * 40_000 + b'"x"]'):
        (tmp_path / peerbook.PEERBOOK_FILENAME).write_bytes(junk)
        assert peerbook.load(tmp_path) == []


def test_learnt_peers_skip_ours_and_those_configured_already():
    ours = f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}"
    other = "/ip4/127.0.0.1/tcp/2/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
    network = NetworkConfig(initial_peers=[other])
    assert peerbook.learnt_peers(network, [ours, other], PEER) == []
    assert peerbook.learnt_peers(NetworkConfig(), [ours, other], PEER) == [other]


def sybil_addresses(count: int, per_peer: int) -> list[str]:
    return [
        f"/ip4/203.0.113.{index}/tcp/{4000 + port}/p2p/{str(Identity.generate().peer_id)}"
        for index in range(count) for port in range(per_peer)
    ]


def test_the_book_counts_peers_not_addresses_and_keeps_the_peers_it_knew_while_they_are_reached():
    """Four peers with many addresses each no longer fill it; newcomers (Sybils included) cannot push out the
    peers a node has long known while those still answer; a peer not reached any more leaves."""
    many = [f"/ip4/203.0.113.9/tcp/{port}/p2p/{PEER}" for port in range(1, 10)]
    assert peerbook.bounded(many) == many[: peerbook.MAX_ADDRESSES_PER_PEER]
    old = sybil_addresses(peerbook.MAX_KNOWN_PEERS - 2, 1)
    newcomers = sybil_addresses(40, 3)
    book = peerbook.updated(old, [*newcomers, *old])  # all reached, the newcomers listed first
    assert book[: len(old)] == old and len({peerbook.peer_of(a) for a in book}) == peerbook.MAX_KNOWN_PEERS
    gone = old[0]
    assert gone not in peerbook.updated(book, [a for a in book if a != gone])


@pytest.mark.parametrize(
    ("configured_hosts", "on_loopback", "scopes"),
    [
        ([None], False, {"public"}),  # a node on the internet
        (["192.168.1.5"], False, {"public", "private"}),  # a LAN swarm: its configured peers are on the LAN
        (["127.0.0.1"], True, {"public", "loopback"}),  # a swarm on one machine (tests)
    ],
)
def test_a_node_learns_addresses_of_public_scope_and_of_the_scopes_its_swarm_uses(configured_hosts, on_loopback, scopes):
    assert swarm_scopes(configured_hosts, on_loopback) == scopes


def test_addresses_of_a_scope_the_swarm_does_not_use_are_dropped_from_what_presences_teach(tmp_path):
    """A remote presence naming a LAN address must not make a node dial into its own network; one on loopback
    (tests) keeps loopback and public addresses only."""
    peers = {scope: str(Identity.generate().peer_id) for scope in ("public", "loopback", "private")}
    hosts = {"public": "1.2.3.4", "loopback": "127.0.0.1", "private": "192.168.1.5"}
    peer = DHTPeer(new_key(tmp_path, "me"), SwarmRules.of(SWARM), NetworkConfig(host="127.0.0.1"))  # never started
    peer.add_entry_peers([f"/ip4/{hosts[scope]}/tcp/4001/p2p/{peers[scope]}" for scope in peers])
    assert {peer_id.to_base58() for peer_id in peer.entry_peers} == {peers["public"], peers["loopback"]}


def new_key(directory: Path, name: str) -> Path:
    path = directory / f"{name}.key"
    save_identity(Identity.generate(), path)
    return path


def free_port_maddr() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"/ip4/127.0.0.1/tcp/{probe.getsockname()[1]}/p2p/{PEER}"


@pytest.mark.network
def test_a_node_learns_public_peers_from_the_directory_and_rejoins_through_them_without_its_bootstrap(tmp_path):
    batch = [Rollout(TaskRef("chain_sum", "0123456789abcdef", 1, 0), (Completion("<answer>1</answer>"),))]
    rules = SwarmRules.of(SWARM)
    with contextlib.ExitStack() as stack:
        bootstrap, _ = join(stack, new_key(tmp_path, "bootstrap"), rules, NetworkConfig())
        through_bootstrap = NetworkConfig(initial_peers=bootstrap.advertised_maddrs())
        public_peer, public = join(stack, new_key(tmp_path, "public"), rules, through_bootstrap)
        assert public.publish(batch, model_id="m", suite_version="v").ok
        with contextlib.ExitStack() as home_stack:
            private = through_bootstrap.model_copy(update={"reachability": "private"})
            home_peer, home = join(home_stack, new_key(tmp_path, "home"), rules, private)
            home.collect(8)
            learnt = home_peer.entry_maddrs()
        assert learnt == public_peer.advertised_maddrs()
        bootstrap.close()
        fallback = NetworkConfig(fallback_peers=[free_port_maddr()])
        with DHTPeer(new_key(tmp_path, "restarted"), rules, fallback, learnt_peers=learnt) as restarted:
            assert public.peer_id in restarted.known_peer_ids()
            assert restarted.reachability.asked == 1  # the configured peer only: learnt ones never judge it
    with DHTPeer(new_key(tmp_path, "alone"), SwarmRules.of(SWARM), NetworkConfig(fallback_peers=[free_port_maddr()])) as alone:
        assert alone.num_peers() == 0  # nobody answered: it starts alone instead of failing


def test_the_peer_book_file_is_plain_json(tmp_path):
    peerbook.save(tmp_path, [f"/ip6/::1/tcp/4001/p2p/{PEER}"])
    assert json.loads((tmp_path / peerbook.PEERBOOK_FILENAME).read_text()) == [f"/ip6/::1/tcp/4001/p2p/{PEER}"]
