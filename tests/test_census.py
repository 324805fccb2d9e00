"""The census on a real DHT (p2pd peers on 127.0.0.1): nodes listed with their reachability, a node that
leaves gone within two windows, forged, oversized and too frequent beacons refused at store time, and
`swarmnode swarm` from a bare client and from a node's HTTP endpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivemind.utils import get_dht_time
from typer.testing import CliRunner

from swarmnode.cli import app
from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.net.census import BeaconService, Census, take_census, take_census_as_client
from swarmnode.net.peer import DHTPeer, StoreItem
from swarmnode.ops.metrics import Metrics, Status
from swarmnode.ops.server import serve
from swarmnode.wire.beacon import BEACON, BEACON_DOMAIN_TAG, Beacon
from swarmnode.wire.envelope import Envelope
from swarmnode.wire.identity import Identity, load_identity, save_identity
from swarmnode.wire.keys import census_key
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.rules import SwarmRules

pytestmark = pytest.mark.network

# short windows, yet long beside a loaded machine's stalls; an epoch of one window: the census of each window
SWARM = SwarmConfig(id="census-test", window_s=4.0, record_ttl_s=8.0, epoch_windows=1)
RULES = SwarmRules.of(SWARM)
EPOCHS = SwarmRules.of(SwarmConfig(id="census-epochs", window_s=4.0, record_ttl_s=8.0, epoch_windows=2))
ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Member:
    """A DHT peer that publishes beacons like a node (its thread, once a window)."""

    name: str
    identity: Identity
    dht: DHTPeer
    service: BeaconService
    censuses: list[Census]

    def close(self) -> None:
        self.service.stop()
        self.dht.close()


@contextlib.contextmanager
def members(
    tmp_path: Path, names: list[str], *, private: tuple[str, ...] = (), rules: SwarmRules = RULES
) -> Iterator[dict[str, Member]]:
    """The first member is the entry point; the ones named in `private` join as clients (behind NAT)."""
    started: dict[str, Member] = {}
    try:
        for name in names:
            key = tmp_path / f"{name}.key"
            save_identity(Identity.generate(), key)
            identity = load_identity(key)
            entry = next(iter(started.values()), None)
            network = NetworkConfig(
                initial_peers=entry.dht.advertised_maddrs() if entry else [],
                reachability="private" if name in private else "auto",
            )
            dht = DHTPeer(key, rules, network)
            dht.start()
            censuses: list[Census] = []
            source = beacon_source(name, dht, rules)
            service = BeaconService(dht, identity, rules, source, censuses.append, timeout_s=3.0)
            started[name] = Member(name, identity, dht, service, censuses)
        yield started
    finally:
        for member in started.values():
            member.close()


def beacon_source(name: str, dht: DHTPeer, rules: SwarmRules = RULES):
    def source(window: int, now: float) -> Beacon:
        return Beacon(
            rules.swarm_id, window, now, "swarmnode/test", f"model-of-{name}", round=7, reward=0.5,
            reachability=dht.reachability.reachability, rounds_per_hour=100.0, rollouts_per_hour=800.0, phase="train",
        )

    return source


def listed(census: Census) -> dict[str, Beacon]:
    return {entry.peer_id: entry.beacon for entry in census.entries}


def all_publishing(swarm: dict[str, Member], expected_nodes: float | None = None) -> None:
    """Start every member's beacon thread and wait until a census lists them all (windows are 4 s here, so
    a beacon stored once would go stale while a loaded machine starts the next step)."""
    for member in swarm.values():
        member.service.start()
    reader, deadline = next(iter(swarm.values())).dht, time.monotonic() + 30
    while len(listed(take_census(reader, RULES, timeout_s=3, expected_nodes=expected_nodes))) < len(swarm):
        assert time.monotonic() < deadline, "the beacons never all showed"
        time.sleep(0.2)


def at_window_start(rules: SwarmRules = RULES, windows: int = 1) -> None:
    """Sleep until just after a window (whose number is a multiple of `windows`) begins: two steps then fall in one
    window on a loaded machine too."""
    span = windows * rules.window_s
    time.sleep(span - get_dht_time() % span + 0.05)


def test_a_bare_client_lists_every_node_with_its_reachability(tmp_path):
    with members(tmp_path, ["entry", "a", "home"], private=("home",)) as swarm:
        all_publishing(swarm)
        census = take_census_as_client(RULES, NetworkConfig(initial_peers=swarm["entry"].dht.advertised_maddrs()), timeout_s=10)
        nodes = listed(census)
        assert set(nodes) == {member.identity.peer_id for member in swarm.values()}
        assert nodes[swarm["home"].identity.peer_id].reachability.value == "private"
        assert nodes[swarm["a"].identity.peer_id].model_id == "model-of-a"
        totals = census.totals()
        assert census.complete and (totals.nodes, totals.models, totals.rollouts_per_hour) == (3, 3, 2400.0)
        assert not census.refused


def test_a_node_that_leaves_disappears_within_two_windows_while_the_others_stay(tmp_path):
    with members(tmp_path, ["entry", "stays", "leaves"]) as swarm:
        all_publishing(swarm)
        reader = swarm["entry"].dht
        swarm["leaves"].close()
        left_at = get_dht_time()
        leaver, stayer = swarm["leaves"].identity.peer_id, swarm["stays"].identity.peer_id
        while leaver in (nodes := listed(census := take_census(reader, RULES, timeout_s=3))):
            assert stayer in nodes  # the live node is republished every window, never missing
            # judged by when the census began reading: a read that began in time may still see it
            assert census.taken_at - left_at <= 2 * RULES.window_s, "still listed two windows after leaving"
            time.sleep(0.2)
        assert stayer in nodes
        assert any(census is not None for census in swarm["stays"].censuses), "the node's own census reached its callback"


def test_a_beacon_is_read_from_its_windows_census_keys_and_the_next_windows_then_gone(tmp_path):
    """Census keys change every window (PROTOCOL.md §4.2): a beacon stored once is found by the censuses of its
    window and the next, each reading only its own window's keys, and by none after."""
    with members(tmp_path, ["entry", "a"]) as swarm:
        a, reader = swarm["a"], swarm["entry"].dht
        at_window_start()
        assert a.service.publish()
        first = take_census(reader, RULES, timeout_s=3, own=None)
        at_window_start()
        second = take_census(a.dht, RULES, timeout_s=3, own=a.identity.peer_id)
        at_window_start()
        third = take_census(reader, RULES, timeout_s=3)
        assert RULES.window_of(second.taken_at) == RULES.window_of(first.taken_at) + 1
        assert a.identity.peer_id in listed(first) and a.identity.peer_id in listed(second)
        assert not second.missing_self and second.complete
        assert a.identity.peer_id not in listed(third)


def test_a_node_publishing_every_window_leaves_its_last_beacon_standing_and_stores_under_the_next_windows_keys(tmp_path):
    """A beacon is stored under its window's census keys and the next's; the next window's beacon then leaves
    the one already standing under its window's keys in place (half the stores) and goes under the following
    window's, where the census after finds it."""
    with members(tmp_path, ["entry", "a"]) as swarm:
        a, reader = swarm["a"], swarm["entry"].dht
        at_window_start()
        first_window = RULES.window_of(get_dht_time())
        assert a.service.publish()
        at_window_start()
        assert a.service.publish()
        second = take_census(reader, RULES, timeout_s=3)
        at_window_start()
        third = take_census(reader, RULES, timeout_s=3)
        assert [RULES.window_of(census.taken_at) for census in (second, third)] == [first_window + 1, first_window + 2]
        assert listed(second)[a.identity.peer_id].window == first_window
        assert listed(third)[a.identity.peer_id].window == first_window + 1


def test_a_node_stores_its_beacon_once_an_epoch_and_each_epochs_census_finds_the_one_standing(tmp_path):
    """With epochs of two windows (PROTOCOL.md §4.2), a node's first beacon stands under its epoch's census keys and
    the next's: in the epoch's second window nothing is stored; in the next epoch one beacon goes under the epoch
    after's keys alone. A census reads only its epoch's keys and lists the beacon standing there."""
    with members(tmp_path, ["entry", "a"], rules=EPOCHS) as swarm:
        a, reader = swarm["a"], swarm["entry"].dht
        a.service.offset = 0  # its next beacon in each epoch's first window (nodes draw theirs)
        at_window_start(EPOCHS, windows=2)
        first = EPOCHS.window_of(get_dht_time())
        assert a.service.publish() and a.service.published == 1
        at_window_start(EPOCHS)
        assert a.service.publish() and a.service.published == 1  # it stands: nothing stored
        same_epoch = take_census(reader, EPOCHS, timeout_s=3)
        at_window_start(EPOCHS)
        assert a.service.publish() and a.service.published == 2
        next_epoch = take_census(reader, EPOCHS, timeout_s=3)
        at_window_start(EPOCHS, windows=2)
        epoch_after = take_census(reader, EPOCHS, timeout_s=3)
        windows = [EPOCHS.window_of(census.taken_at) for census in (same_epoch, next_epoch, epoch_after)]
        assert windows == [first + 1, first + 2, first + 4]
        assert [listed(census)[a.identity.peer_id].window for census in (same_epoch, next_epoch, epoch_after)] == [
            first, first, first + 2
        ]


def test_forged_oversized_and_repeated_beacons_are_refused_at_store_time(tmp_path):
    with members(tmp_path, ["entry", "a", "b"]) as swarm:
        a, b = swarm["a"], swarm["b"]
        at_window_start()
        now = get_dht_time()
        content = beacon_source("a", a.dht)(RULES.window_of(now), now)
        key = census_key(RULES.swarm_id, content.window, 0, 0)  # tier 0: one bucket, where a small swarm's beacons go
        # Mallory (b) signs "a is running model-of-mallory" and stores it under a's subkey
        forged = Envelope.decode(BEACON.seal(dataclasses.replace(content, model_id="model-of-mallory"), b.identity))
        forged = dataclasses.replace(forged, signer=a.identity.public_key).encode()
        huge = Envelope.sign(
            a.identity, pb.Beacon(swarm_id=RULES.swarm_id, window=content.window, timestamp=now, model_id="m" * 1500).SerializeToString(),
            domain=BEACON_DOMAIN_TAG,
        ).encode()
        expiry = RULES.expiration_of(now)
        assert b.dht.store([StoreItem(key, a.identity.peer_id, forged, expiry)], timeout_s=5)[0].remote == 0
        assert (swarm["entry"].dht.refusals() + a.dht.refusals())["bad_signature"] >= 1
        # a's own beacon lands; a second one of the same window (its signed time says so, whatever the clock now
        # reads) does not: a beacon costs its replicas one store per signer and window
        again = dataclasses.replace(content, timestamp=content.timestamp + 0.001, round=content.round + 1)
        assert RULES.window_of(again.timestamp) == RULES.window_of(content.timestamp)
        stores = [
            a.dht.store([StoreItem(key, a.identity.peer_id, BEACON.seal(beacon, a.identity), RULES.expiration_of(beacon.timestamp))],
                        timeout_s=5)[0].remote
            for beacon in (content, again)
        ]
        assert stores[0] >= 1 and stores[1] == 0
        assert (swarm["entry"].dht.refusals() + b.dht.refusals())["beacon_rate"] >= 1
        # the key now proved to hold beacons, a frame over a beacon's size is refused before it is opened
        later = RULES.expiration_of(content.timestamp + 0.002)
        assert a.dht.store([StoreItem(key, a.identity.peer_id, huge, later)], timeout_s=5)[0].remote == 0
        assert (swarm["entry"].dht.refusals() + b.dht.refusals())["too_large"] >= 1
        census = take_census(swarm["entry"].dht, RULES, timeout_s=5)
        assert listed(census)[a.identity.peer_id].model_id == "model-of-a"


def test_a_swarm_that_believes_itself_large_spreads_its_beacons_over_that_tiers_buckets(tmp_path):
    """Members whose estimate is 200 nodes store their beacons under census tiers 3, 4 and 5 (tier 4: 16 buckets of
    about 12 nodes): a census expecting 200 reads tier 4's buckets and lists them all; one at tier 0 lists none, as
    a reader whose estimate is off from the writers' by more than one tier would not."""
    with members(tmp_path, ["entry", "a", "b", "c"]) as swarm:
        for member in swarm.values():
            member.service.size.update(200.0)
        all_publishing(swarm, expected_nodes=200.0)
        reader = swarm["entry"].dht
        large = take_census(reader, RULES, timeout_s=5, expected_nodes=200.0)
        assert (large.tier, large.buckets_read) == (4, 16) and len(listed(large)) == 4 and large.complete
        small = take_census(reader, RULES, timeout_s=5, expected_nodes=10.0)
        assert small.tier == 0 and not listed(small)


def test_swarmnode_swarm_from_a_bare_client_and_from_a_nodes_endpoint(tmp_path):
    with members(tmp_path, ["entry", "a"]) as swarm:
        all_publishing(swarm)  # windows are 4 s here: the CLI process may take longer than that to start
        peers = [arg for maddr in swarm["entry"].dht.advertised_maddrs() for arg in ("--peers", maddr)]
        swarm_rules = [
            "--set", f"swarm.id={SWARM.id}", "--set", f"swarm.window_s={SWARM.window_s}",
            "--set", f"swarm.record_ttl_s={SWARM.record_ttl_s}", "--set", f"swarm.epoch_windows={SWARM.epoch_windows}",
        ]
        as_client = run_cli("swarm", *peers, *swarm_rules, "--json")
        assert {node["model_id"] for node in as_client["nodes"]} == {"model-of-entry", "model-of-a"}
        assert as_client["complete"] and as_client["totals"]["nodes"] == 2
        # another swarm's keys (a swarm id; an epoch length would name the same keys in some windows): one line says
        # which values the census read under, not just an empty list
        elsewhere = subprocess.run([sys.executable, "-m", "swarmnode.cli", "swarm", *peers, *swarm_rules[2:], "--set",
                                    "swarm.id=another-swarm"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert elsewhere.returncode == 0 and "model-of-a" not in elsewhere.stdout, elsewhere.stderr
        assert "'another-swarm'" in elsewhere.stdout and f"swarm.epoch_windows={SWARM.epoch_windows}" in elsewhere.stdout
        metrics = Metrics(None, Status())
        server = serve(metrics, "127.0.0.1", 0, census=swarm["a"].service.full_census)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            from_node = json.loads(CliRunner().invoke(app, ["swarm", "--url", url, "--json"]).stdout)
            assert {node["peer_id"] for node in from_node["nodes"]} == {m.identity.peer_id for m in swarm.values()}
            table = CliRunner().invoke(app, ["swarm", "--url", url, "--sort", "round"])
            assert table.exit_code == 0 and "model-of-entry" in table.stdout and "2 nodes" in table.stdout
        finally:
            server.shutdown()
            server.server_close()
        nobody = CliRunner().invoke(app, ["swarm", "--url", "http://127.0.0.1:9", "--timeout", "2"])
        assert nobody.exit_code == 1 and "--peers" in nobody.output


def run_cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "swarmnode.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
