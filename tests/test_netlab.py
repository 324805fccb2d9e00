"""The network lab (swarmnode/lab/netlab.py): hosts in network namespaces (netns), homes behind masquerading
routers. These tests need root, iproute2 and iptables; without them they skip with one line saying why."""

from __future__ import annotations

import subprocess
import sys

import pytest

from swarmnode.lab import netlab

REASON = netlab.lab_unavailable_reason()
pytestmark = [pytest.mark.netlab, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

LISTEN = "import socket,sys; s=socket.socket(); s.bind(('0.0.0.0', 9000)); s.listen(); print('up', flush=True); " \
         "c, a = s.accept(); print(a[0], flush=True)"
CONNECT = "import socket,sys; socket.create_connection((sys.argv[1], 9000), timeout=2); print('connected')"


def connects(lab: netlab.NetLab, source: str, target_address: str) -> bool:
    return lab.run(source, [sys.executable, "-c", CONNECT, target_address], timeout_s=30).returncode == 0


def test_a_home_reaches_out_through_its_router_and_nothing_reaches_in_and_all_of_it_is_removed():
    hosts = [netlab.Host("pub"), netlab.Host("home", home=True), netlab.Host("slow", loss=0.5, rate="1mbit")]
    with netlab.NetLab(hosts) as lab:
        server = subprocess.Popen([*lab.prefix("pub"), sys.executable, "-c", LISTEN], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "up"
        assert connects(lab, "home", lab.address("pub"))
        assert server.stdout.readline().strip() == lab.public_address("home")  # masqueraded as its router
        server.wait(10)
        home_listener = subprocess.Popen([*lab.prefix("home"), sys.executable, "-c", LISTEN], stdout=subprocess.PIPE, text=True)
        assert home_listener.stdout.readline().strip() == "up"
        assert not connects(lab, "pub", lab.public_address("home"))  # the router lets only replies in
        assert not connects(lab, "pub", lab.address("home"))  # a private address is not routed
        rules = lab.run("slow", ["iptables", "-S"]).stdout
        assert rules.count("--probability 0.5") == 2
        assert "tbf" in lab.run("slow", ["tc", "qdisc", "show"]).stdout
        namespaces = lab.namespaces
    assert home_listener.wait(10) is not None  # killed with its namespace
    assert not set(namespaces) & set(netlab._namespaces())


def test_a_failure_inside_the_lab_still_removes_every_namespace():
    with pytest.raises(RuntimeError, match="a node failed"):
        with netlab.NetLab([netlab.Host("pub"), netlab.Host("home", home=True)]) as lab:
            namespaces = lab.namespaces
            subprocess.Popen([*lab.prefix("home"), "sleep", "600"])
            raise RuntimeError("a node failed")
    assert not set(namespaces) & set(netlab._namespaces())


@pytest.mark.network
def test_two_homes_behind_nat_share_through_a_bootstrap_and_never_wait_on_each_other(tmp_path):
    run = netlab.run_scenario(netlab.SCENARIOS["homes-alone"], tmp_path, rounds=10)
    assert run.ok, run.failures
    assert run.namespaces_left == []
    home1, home2 = run.nodes
    for node, other in ((home1, home2), (home2, home1)):
        assert (node.reachability, node.dht_mode, node.advertised) == ("private", "client", [])
        assert node.doctor.startswith("warn: private") and "seen as 10.77.0." in node.doctor
        assert sum(node.rollouts_in_by_source[other.name]) > 0
        assert node.fresh_delivery(other) >= 0.75, node.rollouts_in_by_source
        assert max(node.publish_s) < 1.0 and max(node.collect_s) < 1.0  # no wait on a dial to a private address
    # `swarmnode swarm` from the bootstrap's host lists both homes, behind NAT, with their reachability
    listed = {node["peer_id"]: node["reachability"] for node in run.census["nodes"]}
    assert listed == {node.peer_id: "private" for node in run.nodes}


@pytest.mark.network
def test_a_node_left_on_loopback_beside_remote_peers_is_warned_and_joins_as_a_client(tmp_path):
    run = netlab.run_scenario(netlab.SCENARIOS["default-host"], tmp_path, rounds=6)
    assert run.ok, run.failures
    public, loop = run.nodes
    assert (public.reachability, public.dht_mode) == ("public", "server")
    assert public.advertised == [a for a in public.advertised if a.startswith(f"/ip4/{netlab.INTERNET}.")] != []
    assert (loop.reachability, loop.dht_mode, loop.advertised) == ("private", "client", [])
    assert loop.problems.get("network_warning") == 1
    assert loop.doctor.startswith("warn: private") and "set network.host=0.0.0.0" in loop.doctor
    assert sum(loop.rollouts_in_by_source["pub1"]) > 0 and sum(public.rollouts_in_by_source["loop"]) > 0
