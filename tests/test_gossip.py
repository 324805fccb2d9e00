"""Gossip as a specification: signed batches travel between peers, bad records never arrive, churn passes."""

from __future__ import annotations

import contextlib
import contextvars
import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from gossip_peers import join
from hivemind.dht.node import DHTNode
from hivemind.dht.protocol import DHTProtocol
from hivemind.utils import get_dht_time
from peer_process import PeerProcess, wait_until_gone

from swarmnode.config import GossipConfig, NetworkConfig, SwarmConfig
from swarmnode.net.directory import Directory
from swarmnode.net.gossip import Gossip
from swarmnode.net.peer import StoreItem
from swarmnode.net.replicas import Read
from swarmnode.net.reputation import Reputation
from swarmnode.net.swarm_size import SwarmSize
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import batch_key, directory_key
from swarmnode.wire.presence import PRESENCE, Presence
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Reason
from swarmnode.wire.rollout import Completion, Rollout, TaskRef
from swarmnode.wire.rules import Slot, SwarmRules, shard_of

SWARM = SwarmConfig(id="itest")
RULES = SwarmRules.of(SWARM)
FORGED_TAG = 666


def rollouts(tag: int, count: int = 2) -> list[Rollout]:
    return [
        Rollout(TaskRef("chain_sum", "0123456789abcdef", tag, i), (Completion("<answer>1</answer>", 1.0),))
        for i in range(count)
    ]


def new_key(directory: Path, name: str) -> Path:
    path = directory / f"{name}.key"
    save_identity(Identity.generate(), path)
    return path


# ---------------------------------------------------------------------------------------------------------
# Separate OS processes: one bootstrap (`swarmnode bootstrap`) and three nodes.


@dataclass
class Swarm:
    directory: Path
    bootstrap: PeerProcess
    bootstrap_maddrs: list[str]
    nodes: dict[str, PeerProcess]
    hello: dict[str, dict]

    def start_node(self, name: str, key: Path, *extra: str) -> PeerProcess:
        node = PeerProcess.script(
            "swarm_peer.py",
            "--identity",
            str(key),
            "--initial-peer",
            self.bootstrap_maddrs[0],
            *extra,
            log_dir=self.directory,
        )
        self.nodes[name] = node
        return node

    def peer_id(self, name: str) -> str:
        return self.hello[name]["peer_id"]

    def restart(self, name: str, *extra: str) -> dict:
        """Kill node `name` (whatever state a test left it in) and start it again with the same identity, so
        every test finds all three nodes running, in any order."""
        old = self.nodes[name]
        old.signal(signal.SIGKILL)
        old.close()
        assert wait_until_gone(self.hello[name]["daemon_pid"], 10.0)
        hello = self.start_node(name, self.directory / f"{name}.key", *extra).read_json()
        self.hello[f"{name}-{len(self.hello)}"] = self.hello[name]  # its p2pd and sockets are checked at teardown
        self.hello[name] = hello
        return hello

    def key_of(self, name: str, window: int) -> str:
        return batch_key(SWARM.id, window, shard_of(self.peer_id(name), RULES.num_shards))


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    directory = tmp_path_factory.mktemp("swarm")
    bootstrap_key = new_key(directory, "bootstrap")
    bootstrap = PeerProcess(
        [
            "-m",
            "swarmnode.cli",
            "bootstrap",
            "--identity",
            str(bootstrap_key),
            "--set",
            f"swarm.id={SWARM.id}",
        ],
        directory / "bootstrap.log",
    )
    swarm = Swarm(directory, bootstrap, [], {}, {})
    try:
        swarm.bootstrap_maddrs = [bootstrap.read_line()]
        for name in "abc":
            swarm.start_node(name, new_key(directory, name))
        for name in "abc":
            swarm.hello[name] = swarm.nodes[name].read_json()
        yield swarm
    finally:
        for node in swarm.nodes.values():
            node.close()
        bootstrap.signal(signal.SIGINT)
        assert bootstrap.close() == 0, bootstrap.log_tail()
        for name, hello in swarm.hello.items():
            assert wait_until_gone(hello["daemon_pid"], 10.0), f"p2pd of {name} outlived its node"
            assert not any(Path(path).exists() for path in hello["sockets"]), f"{name} left a socket file"


@pytest.mark.network
def test_three_nodes_in_separate_processes_exchange_signed_batches(swarm):
    for tag, name in enumerate("abc", start=1):
        published = swarm.nodes[name].ask("publish", tag=tag)
        assert published["ok"], published
    for name in "abc":
        collected = swarm.nodes[name].ask("collect", max=20)
        received = {(item["signer"], item["tag"]) for item in collected["rollouts"] if item["tag"] in (1, 2, 3)}
        others = {
            (swarm.peer_id(other), other_tag)
            for other_tag, other in enumerate("abc", start=1)
            if other != name
        }
        assert received == others, collected
        assert collected["rejected"] == {} and collected["skipped"].get("own", 0) <= 1  # if our shard was read


@pytest.mark.network
def test_forged_tampered_and_junk_records_are_refused_by_honest_peers_and_never_delivered(swarm):
    published = swarm.nodes["a"].ask("publish", tag=10)
    key = swarm.key_of("a", published["window"])
    forger = PeerProcess.script(
        "forger_peer.py",
        "--identity",
        str(new_key(swarm.directory, "forger")),
        "--initial-peer",
        swarm.bootstrap_maddrs[0],
        log_dir=swarm.directory,
    )
    try:
        forger.read_json()
        honest = {swarm.peer_id(name) for name in "abc"}
        for attack in ("tamper", "forge", "junk"):
            results = forger.ask(attack, key=key, victim=swarm.peer_id("a"))
            answered = {peer: stored for peer, stored in results.items() if stored is not None}
            assert len(answered) >= 3 and not any(answered.values()), (attack, results)
        # The forger keeps its bad records and serves them to anyone who asks it: readers still refuse them.
        for name in "bc":
            collected = swarm.nodes[name].ask("collect", max=50)
            from_a = [item for item in collected["rollouts"] if item["signer"] == swarm.peer_id("a")]
            assert [item["tag"] for item in from_a if item["tag"] == 10] == [10, 10], collected
            assert all(
                item["signer"] in honest and item["tag"] != FORGED_TAG for item in collected["rollouts"]
            )
        refused = [swarm.nodes[name].ask("stats")["refused_records"] for name in "abc"]
        assert any(r.get("bad_signature") for r in refused) and any(r.get("key_mismatch") for r in refused)
        assert any(r.get("malformed") for r in refused)
    finally:
        forger.close()


@pytest.mark.network
def test_a_stock_hivemind_client_reads_the_swarm_but_cannot_store_junk(swarm):
    published = swarm.nodes["b"].ask("publish", tag=20)
    key = swarm.key_of("b", published["window"])
    client = PeerProcess.script(
        "stock_hivemind_client.py",
        "--initial-peer",
        swarm.bootstrap_maddrs[0],
        "--key",
        key,
        "--subkey",
        swarm.peer_id("b"),
        log_dir=swarm.directory,
    )
    try:
        report = client.read_json()
    finally:
        client.close()
    frame = bytes.fromhex(report["read"][swarm.peer_id("b")])
    assert open_frame(frame, BATCH, RULES).value.rollouts[0].task.seed == 20
    assert report["stored"] is False
    collected = swarm.nodes["c"].ask("collect", max=50)
    assert 20 in {item["tag"] for item in collected["rollouts"] if item["signer"] == swarm.peer_id("b")}


@pytest.mark.network
def test_a_peer_that_stops_mid_window_does_not_stall_the_others(swarm):
    swarm.nodes["c"].signal(signal.SIGSTOP)  # hung: its daemon still accepts connections, nobody answers
    try:
        for tag, name in ((30, "a"), (31, "b")):
            published = swarm.nodes[name].ask("publish", tag=tag)
            assert published["ok"] and published["latency_s"] < GossipConfig().publish_timeout_s + 1
        started = time.monotonic()
        collected = swarm.nodes["a"].ask("collect", max=50, timeout_s=6.0)
        assert time.monotonic() - started < 6.0 + 3.0
        assert 31 in {item["tag"] for item in collected["rollouts"]}
    finally:
        swarm.restart("c")


@pytest.mark.network
def test_a_restarted_peer_with_the_same_identity_rejoins(swarm):
    assert swarm.nodes["a"].ask("publish", tag=41)["ok"]
    peer_id = swarm.peer_id("c")
    hello = swarm.restart("c", "--sequence", "100")
    assert hello["peer_id"] == peer_id
    node = swarm.nodes["c"]
    assert node.ask("publish", tag=40)["ok"]
    collected = swarm.nodes["a"].ask("collect", max=50)
    from_c = {
        (item["tag"], item["sequence"])
        for item in collected["rollouts"]
        if item["signer"] == hello["peer_id"]
    }
    assert from_c == {(40, 100)}
    assert 41 in {item["tag"] for item in node.ask("collect", max=50)["rollouts"]}


# ---------------------------------------------------------------------------------------------------------
# In-process peers: collect's policy (caps, dedup, replays, bans) against a real DHT.


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[Gossip]]:
    config = GossipConfig(max_rollouts_per_peer=2, collect_timeout_s=5.0, ban_after_offences=2)
    with contextlib.ExitStack() as stack:
        first, gossips = None, []
        for index in range(3):
            network = NetworkConfig(initial_peers=first.visible_maddrs if first else [])
            peer, gossip = join(stack, new_key(tmp_path, str(index)), RULES, network, config)
            first = first or peer
            gossips.append(gossip)
        yield gossips


@pytest.mark.network
def test_collect_caps_rollouts_per_peer_and_consumes_each_batch_once(trio):
    a, b, _ = trio
    assert a.publish(rollouts(1, count=8), model_id="m", suite_version="v").ok
    first = b.collect(100)
    assert [item.signer for item in first.rollouts] == [a.peer_id] * 2
    again = b.collect(100)
    assert again.rollouts == [] and again.skipped["already_seen"] == 1 and not again.rejected


@pytest.mark.network
def test_a_reused_sequence_number_is_a_replay(trio):
    a, b, _ = trio
    a.next_sequence = 5
    assert a.publish(rollouts(1), model_id="m", suite_version="v").ok
    assert len(b.collect(100).rollouts) == 2
    a.next_sequence = 5  # e.g. restored from an old checkpoint: same sequence, new bytes
    assert a.publish(rollouts(2), model_id="m", suite_version="v").ok
    replayed = b.collect(100)
    assert replayed.rollouts == [] and replayed.rejected == {Reason.REPLAY.value: 1}


@pytest.mark.network
def test_reported_offences_ban_a_signer_and_its_batches_are_skipped(trio):
    a, b, c = trio
    for _ in range(2):
        b.report_offence(a.peer_id, Reason.REWARD_MISMATCH)
    assert a.publish(rollouts(1), model_id="m", suite_version="v").ok
    assert c.publish(rollouts(2), model_id="m", suite_version="v").ok
    collected = b.collect(100)
    assert {item.signer for item in collected.rollouts} == {c.peer_id}
    assert collected.rejected == {Reason.BANNED.value: 1}
    assert b.stats.banned_peers == 1 and b.stats.offences == {"reward_mismatch": 2}


@pytest.mark.network
def test_publish_refuses_a_batch_peers_would_refuse_and_counts_it(trio):
    a = trio[0]
    result = a.publish([], model_id="m", suite_version="v")
    assert not result.ok and "bad_value" in result.error
    assert a.stats.publish_failures == 1 and a.stats.published == 0


_PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("phase", default="")


@pytest.mark.network
def test_keys_looked_up_ahead_are_not_looked_up_again_by_the_next_windows_round(tmp_path, monkeypatch):
    """A node that publishes every window finds the next window's replicas beforehand: its publish there sends
    stores and no lookup, and its first collect asks replicas for the keys drawn ahead without looking any up, also
    when the look-ahead to the window after came first (a round at another moment of the window)."""
    finds: list[tuple[str, list[int]]] = []  # (phase, ids asked) of every find any peer sent
    lookups: list[str] = []  # the phase of every lookup any peer ran
    original, find_nearest_nodes = DHTProtocol.call_find, DHTNode.find_nearest_nodes

    async def call_find(protocol, peer, keys):  # noqa: ANN001, ANN202
        finds.append((_PHASE.get(), [int(key) for key in keys]))
        return await original(protocol, peer, keys)

    async def look_up(node, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        lookups.append(_PHASE.get())
        return await find_nearest_nodes(node, *args, **kwargs)

    monkeypatch.setattr(DHTProtocol, "call_find", call_find)  # before the peers bind it
    monkeypatch.setattr(DHTNode, "find_nearest_nodes", look_up)
    swarm = SwarmConfig(id="itest-ahead", window_s=10.0, record_ttl_s=20.0)
    rules = SwarmRules.of(swarm)
    with contextlib.ExitStack() as stack:
        first, gossips = None, []
        for index in range(7):  # more than a key's 5 replicas: only a full set of them is remembered
            network = NetworkConfig(initial_peers=first.visible_maddrs if first else [])
            peer, gossip = join(stack, new_key(tmp_path, f"n{index}"), rules, network)
            first, gossips = first or peer, [*gossips, gossip]
        node = gossips[-1]
        if get_dht_time() % rules.window_s > 3.0:  # the round and the look-ahead fall inside one window
            time.sleep(rules.window_s - get_dht_time() % rules.window_s)
        for index, gossip in enumerate(gossips):  # batches of 4: a collect of 8 reads two signers, in one wave
            assert gossip.publish(rollouts(index, count=4), model_id="m", suite_version="v").ok
        node.collect(8)
        _PHASE.set("ahead")
        next_window = rules.window_of(get_dht_time()) + 1
        assert node.look_ahead() > 0
        looked_up = {key for phase, keys in finds if phase == "ahead" for key in keys}
        time.sleep(max(next_window * rules.window_s - get_dht_time(), 0.0) + 0.1)
        _PHASE.set("ahead again")
        assert node.look_ahead() > 0
        _PHASE.set("publish")
        published = node.publish(rollouts(9), model_id="m", suite_version="v")
        _PHASE.set("collect")
        collected = node.collect(8)
        _PHASE.set("")
    assert published.window == next_window
    assert published.ok and published.replicas >= 1
    assert not [keys for phase, keys in finds if phase == "publish"]  # stores only
    asked = [key for phase, keys in finds if phase == "collect" for key in keys]
    assert collected.rollouts and not looked_up & set(asked)
    assert {probe ^ 1 for probe in looked_up} & set(asked)  # the replicas found ahead were asked for their keys
    assert "collect" not in lookups and "ahead again" in lookups


@pytest.mark.network
def test_a_failed_publish_is_retried_by_the_next_refresh_in_the_same_window(tmp_path):
    """No peer took the batch (alone at first): the next refresh stores it again at once, in the same window,
    instead of waiting until the windows collectors read have passed."""
    swarm = SwarmConfig(id="itest-retry", window_s=120.0, record_ttl_s=300.0)
    rules = SwarmRules.of(swarm)
    if (get_dht_time() % swarm.window_s) > swarm.window_s - 20:  # the test's seconds fall inside one window
        time.sleep(swarm.window_s - get_dht_time() % swarm.window_s)
    with contextlib.ExitStack() as stack:
        alone, lonely = join(stack, new_key(tmp_path, "lonely"), rules, NetworkConfig(), GossipConfig(refresh_for_s=60.0))
        failed = lonely.publish(rollouts(5), model_id="m", suite_version="v")
        assert not failed.ok
        _, reader = join(stack, new_key(tmp_path, "reader"), rules, NetworkConfig(initial_peers=alone.visible_maddrs))
        retried = lonely.refresh()
        assert retried is not None and retried.ok and retried.window == failed.window
        assert lonely.refresh() is None  # taken: nothing to redo in this window
        assert [item.rollout.task.seed for item in reader.collect(100).rollouts] == [5, 5]
        assert lonely.stats.refreshed == 1 and lonely.stats.publish_failures == 1


@pytest.mark.network
def test_a_batch_refreshed_each_window_outlives_its_record_ttl_and_is_taken_once(tmp_path):
    """A slow node's round outlasts record_ttl_s: its refreshed batch is still read, a plain one is gone."""
    swarm = SwarmConfig(id="itest-slow", window_s=1.0, record_ttl_s=2.0, clock_skew_s=1.0)
    refreshing = GossipConfig(max_rollouts_per_peer=8, collect_timeout_s=5.0, refresh_for_s=60.0)
    rules = SwarmRules.of(swarm)
    with contextlib.ExitStack() as stack:
        first, peers = None, {}
        for name in ("slow", "plain", "early", "late"):
            config = refreshing if name != "plain" else refreshing.model_copy(update={"refresh_for_s": 0.0})
            network = NetworkConfig(initial_peers=first.visible_maddrs if first else [])
            peer, peers[name] = join(stack, new_key(tmp_path, name), rules, network, config)
            first = first or peer
            peers[name].start_each_window()
        slow, plain, early, late = peers.values()
        published = slow.publish(rollouts(1), model_id="m", suite_version="v")
        assert published.ok
        assert plain.publish(rollouts(2), model_id="m", suite_version="v").ok
        assert {item.signer for item in early.collect(100).rollouts} == {slow.peer_id, plain.peer_id}
        time.sleep(swarm.record_ttl_s + swarm.window_s)  # a round longer than records live: both first copies expired
        deadline, collected = time.monotonic() + 30, late.collect(100)
        while not collected.rollouts:  # a refresh lands early in a window; until it does there is nothing to read
            assert time.monotonic() < deadline, "no refreshed batch within 30 s"
            collected = late.collect(100)
        assert {(item.signer, item.rollout.task.seed) for item in collected.rollouts} == {(slow.peer_id, 1)}
        assert all(item.window > published.window and item.sequence == published.sequence for item in collected.rollouts)
        deadline, again = time.monotonic() + 30, early.collect(100)
        while not again.rollouts and not again.skipped["already_seen"]:  # read between a copy's expiry and its refresh
            assert time.monotonic() < deadline, "the refreshed batch was not read again within 30 s"
            again = early.collect(100)
        assert again.rollouts == [] and again.skipped["already_seen"] >= 1 and not again.rejected
        assert slow.stats.refreshed >= 1 and plain.stats.refreshed == 0


@pytest.mark.network
def test_nodes_nobody_can_dial_find_each_others_batches_through_the_directory(tmp_path):
    """Two DHT clients (as behind NAT) are in no routing table; the window's directory names them."""
    with contextlib.ExitStack() as stack:
        entry_peer, entry = join(stack, new_key(tmp_path, "entry"), RULES, NetworkConfig())
        private = NetworkConfig(initial_peers=entry_peer.advertised_maddrs(), reachability="private")
        (peer1, home1), (peer2, home2) = (join(stack, new_key(tmp_path, name), RULES, private) for name in ("home1", "home2"))
        assert peer1.client_mode and peer2.client_mode
        assert not {home1.peer_id, home2.peer_id} & set(entry_peer.known_peer_ids() + peer2.known_peer_ids())
        published = home1.publish(rollouts(1), model_id="m", suite_version="v")
        assert published.ok and published.replicas == 1 and not published.stored_locally
        collected = home2.collect(8)
        assert {item.signer for item in collected.rollouts} == {home1.peer_id}
        assert collected.directory_entries == 1 and not collected.rejected
        assert {item.signer for item in entry.collect(8).rollouts} == {home1.peer_id}


@pytest.mark.network
def test_directory_entries_of_signers_that_publish_nothing_are_dropped_once_their_shards_were_read(trio):
    """Sybil entries (valid presences of fresh keys that never publish) make their shards "known", read before
    the probes; once a collect has read a shard empty of its listed signer, that signer is no longer listed."""
    sybil, reader = trio[1], trio[0]
    now = get_dht_time()
    window = RULES.window_of(now)
    fakes = [Identity.generate() for _ in range(12)]
    entry = Presence(RULES.swarm_id, window, now)
    items = [
        StoreItem(directory_key(RULES.swarm_id, RULES.epoch_start(window), 0, 0), fake.peer_id,  # tier 0: one bucket
                  PRESENCE.seal(entry, fake), PRESENCE.expiration(entry, RULES))
        for fake in fakes
    ]
    assert all(outcome.remote >= 1 for outcome in sybil._peer.store(items, timeout_s=10))
    first = reader.collect(8)
    assert first.directory_entries == len(fakes) and first.listed_not_found == len(fakes)
    second = reader.collect(8)
    assert second.keys_read <= GossipConfig().shards_per_wave + 2 * (RULES.max_age_windows + 1)  # probes, own peers
    assert second.directory_entries == len(fakes) and second.listed_not_found == 0  # read again, not listed again


def test_the_directory_is_written_and_read_once_an_epoch_and_read_every_round_while_too_few_publishers_are_known():
    """With epochs of four windows (PROTOCOL.md §4.1), an entry is stored with the epoch's first batch and the
    directory read once an epoch, in a window of it each node draws after the first (in the first, the publishers'
    entries are being stored; nodes' reads spread over the others), together with the epoch before's if that was
    not read; a node that knows too few publishers reads it every round."""
    rules = SwarmRules.of(SwarmConfig(id="epochs", epoch_windows=4))
    known = [Identity.generate().peer_id for _ in range(8)]
    empty = Read({}, False)
    peer = SimpleNamespace(
        known_peer_ids=lambda: known, estimated_swarm_size=lambda: 9.0, verified=None,
        get_many=lambda keys, timeout_s, quorum: empty,
    )
    assert {Directory(peer, Identity.generate(), rules, SwarmSize()).read_offset for _ in range(100)} == {1, 2, 3}
    directory = Directory(peer, Identity.generate(), rules, SwarmSize())
    start, offset = 1_000, directory.read_offset  # an epoch's first window; this node's window of each epoch
    assert directory.entry_due(start)
    directory.entry_stored(start + 1)
    assert [directory.entry_due(w) for w in (start, start + 3, start + 4)] == [False, False, True]
    assert [directory.read_due(start + k, peers_needed=3) for k in range(4)] == [k >= offset for k in range(4)]
    assert directory.keys_ahead(start + offset - 1, peers_needed=3) == []
    first = directory.read(start + offset, now=0.0, deadline=time.monotonic() + 1, peers_needed=3)
    assert [directory.read_due(start + k, peers_needed=3) for k in range(offset + 1, 4 + offset)] == [False] * 3
    assert directory.read_due(start + 4 + offset, peers_needed=3)
    second = directory.read(start + 4 + offset, now=0.0, deadline=time.monotonic() + 1, peers_needed=3)
    assert first.keys_read == 2 * second.keys_read  # the epoch before, once; then only the new one
    assert all(directory.read_due(w, peers_needed=5) for w in range(start + 5 + offset, start + 9))  # 8 known < 2 x 5


def test_a_directory_read_takes_the_buckets_drawn_for_its_window_after_a_look_ahead_to_the_next():
    """A look-ahead to the next window may come before this window's collect: the buckets drawn for this window's
    read stay for it (they were looked up), and the next window's draw waits for its own read."""
    rules = SwarmRules.of(SwarmConfig(id="ahead", epoch_windows=4))
    asked: list[list[str]] = []
    peer = SimpleNamespace(
        known_peer_ids=lambda: [], estimated_swarm_size=lambda: 1.0, verified=None,
        get_many=lambda keys, timeout_s, quorum: asked.append(sorted(keys)) or Read({}, False),
    )
    size = SwarmSize()
    size.update(100_000.0)  # many buckets: two draws differ
    directory = Directory(peer, Identity.generate(), rules, size)  # knows nobody: a read is due every window
    window = 1_001
    buckets = lambda keys: {key.rsplit("/", 1)[1] for key in keys}  # noqa: E731
    drawn = {w: buckets(directory.keys_ahead(w, peers_needed=3)) for w in (window, window + 1)}
    assert drawn[window] != drawn[window + 1]
    for w in (window, window + 1):
        directory.read(w, now=0.0, deadline=time.monotonic() + 1, peers_needed=3)
    assert [buckets(keys) for keys in asked] == [drawn[window], drawn[window + 1]]


@pytest.mark.network
def test_a_node_that_joins_after_a_directory_read_is_read_in_the_next_collect(tmp_path):
    """The directory is read once an epoch, and a joiner's entry waits for the next read; it is in the routing
    table at once, and the first wave of every collect reads the shard of one peer that none of our directory reads
    found in our routing table (protocol v2 read the directory every window: a joiner was read at once)."""
    rules = SwarmRules.of(SwarmConfig(id="itest-join", max_age_windows=0, epoch_windows=8))
    config = GossipConfig(max_rollouts_per_peer=2, collect_timeout_s=5.0)
    with contextlib.ExitStack() as stack:
        first, gossips = None, []
        for name in ("reader", "b", "c"):
            network = NetworkConfig(initial_peers=first.visible_maddrs if first else [])
            peer, gossip = join(stack, new_key(tmp_path, name), rules, network, config)
            first = first or peer
            gossips.append(gossip)
        reader, b, c = gossips
        assert b.publish(rollouts(1), model_id="m", suite_version="v").ok
        assert c.publish(rollouts(2), model_id="m", suite_version="v").ok
        reader._directory.read_offset = 0  # this epoch's read is due now, not in a later window
        listed = reader.collect(2)
        assert listed.directory_entries == 2 and {item.signer for item in listed.rollouts} <= {b.peer_id, c.peer_id}
        reader._directory.read_offset = rules.epoch_windows - 1  # and the next epoch's minutes from now
        _, joiner = join(stack, new_key(tmp_path, "joiner"), rules, NetworkConfig(initial_peers=first.visible_maddrs))
        assert joiner.publish(rollouts(3), model_id="m", suite_version="v").ok
        deadline = time.monotonic() + 10
        while joiner.peer_id not in first.known_peer_ids():
            assert time.monotonic() < deadline, "the joiner never entered the reader's routing table"
            time.sleep(0.1)
        collected = reader.collect(2)
        assert collected.directory_keys_read == 0  # read once this epoch already
        assert {item.signer for item in collected.rollouts} == {joiner.peer_id}


def test_a_peer_counts_as_met_since_the_directory_read_only_if_no_read_of_ours_found_it_in_our_routing_table():
    """A joiner is new to every table; a peer that dropped out of ours and came back (a timeout, a restart) is not,
    so a busy routing table does not keep taking the listed signers' places in first waves."""
    table = ["a", "b"]
    peer = SimpleNamespace(
        known_peer_ids=lambda: list(table), estimated_swarm_size=lambda: 3.0, verified=None,
        get_many=lambda keys, timeout_s, quorum: Read({}, False),
    )
    directory = Directory(peer, Identity.generate(), RULES, SwarmSize())
    directory.read(1_000, now=0.0, deadline=time.monotonic() + 1, peers_needed=1)
    table[:] = ["b", "c"]  # a dropped out, c met
    assert directory.met_since_read() == {"c"}
    directory.read(1_004, now=0.0, deadline=time.monotonic() + 1, peers_needed=1)
    table[:] = ["a", "b", "c", "d"]  # a back, d new
    assert directory.met_since_read() == {"d"}


def test_a_listed_signer_is_dropped_once_the_window_it_was_listed_in_is_read_without_it():
    """A forged entry costs one read: its shard read in another window proves nothing (a signer's batch of the window
    it was listed in is where its entry says), read in its own window and empty, the signer is no longer listed."""
    directory = Directory(SimpleNamespace(known_peer_ids=list), Identity.generate(), RULES, SwarmSize())
    fake = Identity.generate().peer_id
    shard = shard_of(fake, RULES.num_shards)
    directory._listed[fake] = 1_000
    assert directory.not_found({(999, shard)}, set()) == 0 and directory.listed() == {fake: 1_000}
    assert directory.not_found({(1_000, shard)}, set()) == 1 and directory.listed() == {}


def test_every_wave_of_a_collect_probes_a_shard_no_known_peer_publishes_to():
    """However many signers are listed, unknown shards are read from the first waves on, never after them all."""
    known = [(f"known{i}", Slot(1, i, ""), frozenset({f"signer{i}"})) for i in range(10)]
    unknown = [(f"unknown{i}", Slot(1, 100 + i, ""), frozenset()) for i in range(3)]
    plan = known + unknown
    gossip = SimpleNamespace(config=GossipConfig(shards_per_wave=4))
    waves = []
    while plan:
        waves.append(Gossip._next_wave(gossip, plan, peers_needed=1))
    assert all(any(not signers for _, _, signers in wave) for wave in waves[: len(unknown)])
    assert sorted(key for wave in waves for key, _, _ in wave) == sorted(key for key, _, _ in known + unknown)  # once
    assert all(1 <= len(wave) <= 4 for wave in waves)


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_collect_reads_one_window_of_every_known_shard_before_any_other(newest_first):
    """The previous window first early in a window (most have not published in the current one yet), the current
    one late (fresher); signers the directory listed (public or behind NAT alike) before the others, in the window
    it listed them in if newer, but for one shard of a peer met since the last directory read (a node that joined
    since), the one read least lately: a collect that finds enough in its first waves reads one key a signer, not two."""
    window = 1_000
    public = [Identity.generate().peer_id for _ in range(6)]
    listed = {Identity.generate().peer_id: window - index % 2 for index in range(3)}
    public_shards = {shard_of(peer, RULES.num_shards) for peer in public}
    joiner = shard_of(public[4], RULES.num_shards)
    gossip = SimpleNamespace(
        _directory=SimpleNamespace(publishers=lambda: set(public) | set(listed), listed=lambda: dict(listed),
                                   met_since_read=lambda: set(public[3:])),
        rules=RULES, config=GossipConfig(shards_per_wave=5), _random=random.Random(0),
        _shard_read={shard: window - 1 for shard in public_shards - {joiner}},  # public[3] and [5] read, [4] not
        _taken=set(),
    )
    first, other = (window, window - 1) if newest_first else (window - 1, window)
    plan = Gossip._reading_plan(gossip, window, newest_first)
    known = [slot for _, slot, signers in plan if signers]
    listed_slots = {(max(listed_in, first), shard_of(peer, RULES.num_shards)) for peer, listed_in in listed.items()}
    assert (known[0].window, known[0].shard) == (first, joiner)
    assert {(slot.window, slot.shard) for slot in known[1:4]} == listed_slots
    assert {(slot.window, slot.shard) for slot in known[4:9]} == {(first, shard) for shard in public_shards - {joiner}}
    assert [slot.window for slot in known[12:]] == [other] * 6 and len(known) == 18  # every key once
    wave = Gossip._next_wave(gossip, plan, peers_needed=4)
    assert {(slot.window, slot.shard) for _, slot, signers in wave if signers} == {(first, joiner)} | listed_slots
    assert {signer for _, _, signers in wave for signer in signers} == set(listed) | {public[4]}  # each read's signers


def test_keys_whose_batches_a_collect_already_opened_are_read_last():
    """A node whose rounds come at another moment of each window reads the window before's batches in one collect
    (late in that window, the current one) and again in the next (early: the previous one), and skips them as
    seen: a second wave for nothing. Keys of a past window whose batch of every signer known there a collect opened
    come after all others; the current window's stay where they are (a signer may have published again)."""
    window, peers = 1_000, []
    while len(peers) < 4:  # four signers, each alone in its shard
        peer = Identity.generate().peer_id
        if shard_of(peer, RULES.num_shards) not in {shard_of(p, RULES.num_shards) for p in peers}:
            peers.append(peer)
    opened = {f"{peer}/{window - 1}" for peer in peers[:2]}
    gossip = SimpleNamespace(
        _directory=SimpleNamespace(publishers=lambda: set(peers), listed=dict, met_since_read=set),
        rules=RULES, config=GossipConfig(shards_per_wave=4), _random=random.Random(0), _shard_read={}, _taken=opened,
    )
    plan = Gossip._reading_plan(gossip, window, newest_first=False)
    slots = [(slot.window, next(iter(signers))) for _, slot, signers in plan if signers]
    assert set(slots[:2]) == {(window - 1, peer) for peer in peers[2:]}  # the window before first, less the opened
    assert set(slots[2:6]) == {(window, peer) for peer in peers}
    assert set(slots[6:]) == {(window - 1, peer) for peer in peers[:2]} and plan[-1][2]  # last of all, probes too
    wave = Gossip._next_wave(gossip, plan, peers_needed=2)
    assert {next(iter(signers)) for _, _, signers in wave if signers} == set(peers[2:])
    opened.update(f"{peer}/{window}" for peer in peers)  # the current window's may hold a newer batch: order kept
    assert Gossip._reading_plan(gossip, window, newest_first=True)[0][1].window == window


@pytest.mark.network
def test_a_collect_reads_only_one_wave_of_shards_no_known_peer_publishes_to(tmp_path):
    with contextlib.ExitStack() as stack:
        _, alone = join(stack, new_key(tmp_path, "alone"), RULES, NetworkConfig())
        assert [alone.collect(8).keys_read for _ in range(3)] == [GossipConfig().shards_per_wave] * 3


@pytest.mark.network
def test_alone_a_batch_is_only_kept_locally_not_published_and_collect_returns_quickly(tmp_path):
    few_shards = SwarmRules.of(SWARM.model_copy(update={"num_shards": 16}))
    every_key_at_once = GossipConfig(shards_per_wave=2 * few_shards.num_shards)  # our own shard is read too
    with contextlib.ExitStack() as stack:
        _, alone = join(stack, new_key(tmp_path, "alone"), few_shards, NetworkConfig(), every_key_at_once)
        published = alone.publish(rollouts(1), model_id="m", suite_version="v")
        assert not published.ok and published.replicas == 0 and published.stored_locally
        assert "kept only locally" in published.error
        result = alone.collect(8, timeout_s=60.0)
        assert result.rollouts == [] and result.skipped == {"own": 1}
        assert not result.timed_out and result.elapsed_s < 60.0  # read every key and stopped, no wait for the deadline
        stats = alone.stats
        assert (stats.published, stats.publish_failures, stats.published_local_only) == (0, 1, 1)
        assert stats.get_latency.count >= 1


# ---------------------------------------------------------------------------------------------------------
# The reputation policy on its own (a fake clock).


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_enough_offences_within_the_window_ban_a_signer_for_the_ban_duration():
    clock = Clock()
    reputation = Reputation(ban_after_offences=3, ban_window_s=10.0, ban_duration_s=60.0, clock=clock)
    assert not reputation.record_offence("p", Reason.BAD_VALUE)
    clock.now = 11.0  # the first offence has left the window
    assert not reputation.record_offence("p", Reason.BAD_VALUE)
    assert not reputation.record_offence("p", Reason.LIMIT_EXCEEDED)
    assert reputation.record_offence("p", Reason.REWARD_MISMATCH)
    assert reputation.is_banned("p") and not reputation.is_banned("q")
    clock.now = 11.0 + 60.0
    assert not reputation.is_banned("p") and reputation.banned_peers() == []


@pytest.mark.parametrize("reason", [Reason.STALE, Reason.REPLAY, Reason.BANNED, Reason.UNKNOWN_TASK])
def test_stale_replayed_banned_or_foreign_task_frames_are_not_offences(reason):
    reputation = Reputation(ban_after_offences=1, ban_window_s=10.0, ban_duration_s=60.0)
    assert not reputation.record_offence("p", reason)
    assert not reputation.is_banned("p")


def test_memory_is_bounded_by_max_peers_forgetting_the_oldest_offender():
    reputation = Reputation(ban_after_offences=2, ban_window_s=10.0, ban_duration_s=60.0, max_peers=4)
    for index in range(100):
        reputation.record_offence(f"p{index}", Reason.BAD_VALUE)
    assert not reputation.record_offence("p0", Reason.BAD_VALUE)  # forgotten: this is its first offence again
    assert reputation.record_offence("p99", Reason.BAD_VALUE)


@pytest.mark.network
def test_stats_can_be_read_from_another_thread_while_collecting(tmp_path):
    """The metrics server reads `stats` on its own thread while the node's thread collects."""
    with contextlib.ExitStack() as stack:
        _, gossip = join(stack, new_key(tmp_path, "solo"), RULES, NetworkConfig())
        with ThreadPoolExecutor(2) as pool:
            collecting = pool.submit(lambda: [gossip.collect(4) for _ in range(5)])
            snapshots = [pool.submit(lambda: gossip.stats) for _ in range(50)]
            assert len(collecting.result(timeout=30)) == 5
            assert all(snapshot.result(timeout=30).collected == 0 for snapshot in snapshots)


def test_what_gossip_remembers_of_signers_and_frames_is_bounded_and_keeps_the_latest():
    """A node runs for days: the signers it counts and the frames it skips are the most recent, never all."""
    from swarmnode.net.recent_set import RecentSet

    recent = RecentSet(3)
    recent.update(["a", "b", "c"])
    recent.add("a")  # seen again: the latest now
    recent.update(["d", "e"])
    assert len(recent) == 3 and "a" in recent and "d" in recent and "e" in recent
    assert "b" not in recent and "c" not in recent
