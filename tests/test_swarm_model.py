"""The swarm model (swarmnode.lab.swarm_model): its routing tables are the ones hivemind would build, its lookups find
the true nearest peers in a small swarm, the virtual clock never waits, and the loads it reports have the shape the
code implies (the v1 directory key's replicas serve every publisher; the tiered layout spreads them)."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest
from hivemind.dht.routing import RoutingTable
from hivemind.proto import dht_pb2

from swarmnode.lab import swarm_model
from swarmnode.lab.swarm_model import (
    DEPTH_MODULO,
    FastID,
    ModelConfig,
    SwarmModel,
    VirtualLoop,
    Wire,
    key_id,
    run_model,
)
from swarmnode.net.routing import FAILED_MAX_BAN_S, SLOW_TIMES_TYPICAL, ask_for_bare_neighbours, leave_out_node_ids


def test_a_built_table_has_the_buckets_hivemind_would_split_into() -> None:
    """Filled directly (fast at 100k peers), a table must still be the one inserting every peer would give."""
    swarm = SwarmModel(ModelConfig(peers=300, churn_per_min=0, nat_signers=0, sample=1))
    for owner in (3, 150, 299):
        built = swarm.table(owner)
        inserted = RoutingTable(swarm.ids[owner], 20, DEPTH_MODULO)
        others = [i for i in range(300) if i != owner]
        random.Random(owner).shuffle(others)
        for index in others:
            inserted.add_or_update_node(swarm.ids[index], index)
        assert [(b.lower, b.depth, len(b.nodes_to_peer_id)) for b in built.buckets] == [
            (b.lower, b.depth, len(b.nodes_to_peer_id)) for b in inserted.buckets
        ]


def test_lookups_in_a_small_swarm_reach_the_true_nearest_peers() -> None:
    swarm = SwarmModel(ModelConfig(peers=64, churn_per_min=0, nat_signers=0))
    peer = swarm.peers[5]
    probes = [FastID(int(key_id(f"key-{i}")) ^ 1) for i in range(20)]
    found = swarm._run(swarm._lookup(peer, probes))
    for probe in probes:
        assert [swarm.index_of[node] for node in found[probe]] == swarm.true_nearest(probe, 5, peer.index)
    assert all(recall == 1.0 for _, _, recall in swarm.lookups)


def test_the_virtual_clock_counts_round_trips_without_waiting() -> None:
    loop = VirtualLoop()
    started = time.monotonic()
    loop.run_until_complete(asyncio.sleep(1000.0))
    assert loop.time() == 1000.0 and time.monotonic() - started < 1.0
    loop.close()


def test_message_sizes_are_those_of_hiveminds_protobufs() -> None:
    """A find and its answer as hivemind sends them, and as swarmnode's peers send them to each other: neighbours
    by peer id alone (PROTOCOL.md §5.4)."""
    result = dht_pb2.FindResult(type=dht_pb2.NOT_FOUND)
    result.nearest_node_ids.extend([bytes(20)] * 20)
    result.nearest_peer_ids.extend([bytes(38)] * 20)
    response = dht_pb2.FindResponse(results=[result], peer=dht_pb2.NodeInfo(node_id=bytes(20)))
    request = dht_pb2.FindRequest(keys=[bytes(20)] * 2, peer=dht_pb2.NodeInfo(node_id=bytes(20)))
    full, bare = Wire(0, bare_neighbours=False), Wire(0, bare_neighbours=True)
    assert full.find_response([(None, 20)]) == response.ByteSize()
    assert full.find_request(2, False) == request.ByteSize()
    leave_out_node_ids(response)
    assert bare.find_response([(None, 20)]) == response.ByteSize() < 0.7 * full.find_response([(None, 20)])
    assert bare.find_request(2, False) == ask_for_bare_neighbours(request).ByteSize() == request.ByteSize() + 3


def test_v1_makes_a_directory_replica_the_busiest_and_tiered_spreads_it() -> None:
    """Every publisher stores its entry under the window's one directory key (and retries while it is full), so
    its replicas carry the swarm; the tiered layout gives each key about 12 signers."""
    common = {"peers": 1000, "sample": 12, "census": False, "churn_per_min": 0.0, "nat_signers": 0}
    v1 = run_model(ModelConfig(layout="v1", **common))
    tiered = run_model(ModelConfig(layout="tiered", **common))
    assert "store:directory" in v1.busiest_is
    assert v1.busiest_served_window >= 1000  # at least one store of every publisher's entry
    assert v1.refusals["directory_full"] > 0 and "directory_full" not in tiered.refusals
    assert tiered.busiest_over_median < v1.busiest_over_median / 3


def test_a_nodes_own_cost_stays_flat_while_the_v1_directory_replica_grows() -> None:
    small = run_model(ModelConfig(peers=64, sample=12, census=False, churn_per_min=0.0, nat_signers=0))
    large = run_model(ModelConfig(peers=512, sample=12, census=False, churn_per_min=0.0, nat_signers=0))
    assert large.requests_sent_round_median < 2 * small.requests_sent_round_median
    assert large.busiest_served_window > 4 * small.busiest_served_window


def test_bytes_by_kind_count_each_request_once_and_sum_to_the_total() -> None:
    """Every peer sampled, none departed: each request is counted at both ends in a node's total, once by kind."""
    result = run_model(ModelConfig(peers=48, layout="tiered", churn_per_min=0.0, nat_signers=0))
    assert {"find", "store:batch", "read:batch", "read:census"} <= set(result.kb_by_kind)
    assert math.isclose(2 * sum(result.kb_by_kind.values()), result.node_kb_round_mean, rel_tol=1e-9)
    assert 0.3 * result.node_kb_round_median < result.node_kb_in_round_median < 0.7 * result.node_kb_round_median


def test_with_churn_a_departed_peer_no_longer_costs_a_whole_rpc_timeout() -> None:
    """1%/min churn leaves 6 departed peers among 64 in routing tables. Lookups and reads leave a silent peer behind
    once others answered, a store once every item has a replica, and a peer that failed is left out for a while."""
    config = ModelConfig(peers=64, layout="tiered", census=False, nat_signers=0)
    result = run_model(config)
    timeout_rounds = config.rpc_timeout_s / config.rtt_s
    assert result.timeouts_per_node_round > 0
    assert result.publish_rounds.p95 < timeout_rounds / 2
    assert result.collect_rounds.p95 < 2 * timeout_rounds  # a collect is several reads in a row
    assert math.isclose(result.publish_s.p95, result.publish_rounds.p95 * config.rtt_s)


def test_failed_requests_settle_each_nodes_recent_failures_on_the_virtual_clock() -> None:
    """Bans and answer times run on the model's clock, not the machine's: at 0.2 s a round trip, a peer waits 0.8 s
    before leaving a slow one behind, and a ban ends when virtual time has passed it."""
    swarm = SwarmModel(ModelConfig(peers=64, layout="tiered", census=False, nat_signers=0, rtt_s=0.2))
    swarm.play_round(0)
    nodes = [peer.node for peer in swarm.peers.values()]
    barred = {index for node in nodes for index in range(swarm.total) if index in node.blacklist}
    assert barred and not any(swarm.alive[index] for index in barred)  # the departed, and no live peer left slow
    assert all(math.isclose(node.blacklist.slow_after_s, SLOW_TIMES_TYPICAL * 0.2) for node in nodes)  # answers: 0.2 s
    swarm._run(asyncio.sleep(FAILED_MAX_BAN_S))
    assert not any(index in node.blacklist for node in nodes for index in barred)


def test_a_signer_behind_nat_is_read_within_a_few_rounds_like_a_public_one() -> None:
    """Only the directory names a signer behind NAT; collectors read the signers it listed before those of their
    routing tables (all public), or signers behind NAT wait about 9 rounds here for a first reader."""
    result = run_model(ModelConfig(peers=300, sample=40, nat_signers=30, layout="tiered", census=False, rounds=2))
    assert result.nat_rounds_to_first_read is not None and result.nat_rounds_to_first_read < 4  # 2.9 here
    assert result.signers_read > 0.9


def test_looking_a_windows_keys_up_ahead_leaves_a_publish_one_round_of_stores() -> None:
    """From the second window on, every node looks its keys up when the window starts (`Gossip.look_ahead`): the
    publish stores at once and the first collect wave reads at once, for no more bytes than the lookups it moved."""
    common = dict(peers=300, sample=40, layout="tiered", census=False, nat_signers=0, churn_per_min=0.0, rounds=2)
    before = run_model(ModelConfig(look_ahead=False, replica_keep_s=0.0, **common))
    ahead = run_model(ModelConfig(**common))
    assert ahead.publish_rounds.p95 <= 2 < before.publish_rounds.p50  # a lookup is 2 rounds at its fastest
    assert ahead.collect_rounds.p50 < before.collect_rounds.p50
    assert ahead.node_kb_round_median < 1.1 * before.node_kb_round_median


def test_with_churn_a_look_ahead_still_leaves_a_publish_and_a_collect_their_rounds_of_requests_alone() -> None:
    """A departed peer lingers in others' routing tables and among a key's nearest: a look-ahead that stopped at
    the 3 live ones it found would remember too few, and the publish would look the key up again (p95 7 rounds
    here); it searches again, wider. A collect reads the directory, then the first wave its look-ahead drew."""
    result = run_model(ModelConfig(peers=300, sample=40, layout="tiered", census=False, nat_signers=0, rounds=2))
    assert result.timeouts_per_node_round > 0  # peers did depart
    assert result.publish_rounds.p95 <= 2
    assert result.collect_rounds.p95 <= 3


def test_a_long_running_swarm_pings_only_quiet_peers_and_stores_a_beacon_under_the_next_windows_keys_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pinging a full bucket's oldest peer at every stranger's contact (hivemind's rule, `quiet_s=0`) cost a node
    more than its beacons; with `QUIET_S` a peer heard from lately is kept without one. A beacon whose predecessor
    stands under this window's census keys goes under the next window's alone: half the stores of a beacon under
    both windows' keys. Neither changes a publish's or a collect's rounds. (Epochs of one window: a beacon a window.)"""
    common = dict(peers=600, sample=30, layout="tiered", nat_signers=0, rounds=2, epoch_windows=1)  # 300 fill no bucket
    quiet = run_model(ModelConfig(**common))
    every = run_model(ModelConfig(quiet_s=0.0, **common))
    assert quiet.kb_by_kind.get("ping", 0.0) < every.kb_by_kind["ping"] / 4
    assert quiet.requests_sent_round_median < every.requests_sent_round_median
    monkeypatch.setattr(swarm_model, "beacon_places", lambda window, tiers, standing, rules, offset=0: [
        (key_window, tier) for key_window in (window, window + 1) for tier in tiers])
    both = run_model(ModelConfig(**common))
    assert 0.4 < quiet.kb_by_kind["store:census"] / both.kb_by_kind["store:census"] < 0.6
    for other in (every, both):
        assert (quiet.publish_rounds.p95, quiet.collect_rounds.p95) == (other.publish_rounds.p95, other.collect_rounds.p95)


def test_epochs_cut_the_directorys_and_the_census_stores_lookups_and_reads_and_leave_rounds_and_delivery_alone() -> None:
    """Directory and census keys of epochs of four windows (protocol v3): a node stores its entry and its beacon and
    reads the directory once an epoch, not every window. Over a whole epoch (four rounds) those bytes fall to a
    fraction, with the same publish and collect rounds and every wanted rollout collected."""
    common = dict(peers=300, sample=30, layout="tiered", rounds=4)
    windows = run_model(ModelConfig(epoch_windows=1, **common))
    epochs = run_model(ModelConfig(epoch_windows=4, **common))
    for kind in ("store:directory", "read:directory", "store:census"):
        assert epochs.kb_by_kind[kind] < windows.kb_by_kind[kind] / 2, kind
    assert epochs.find_kb_by_key["directory"] < windows.find_kb_by_key["directory"] / 2
    assert epochs.find_kb_by_key["census"] < 0.8 * windows.find_kb_by_key["census"]  # its reads stay once an epoch
    assert epochs.node_kb_in_round_median < 0.85 * windows.node_kb_in_round_median
    assert epochs.publish_rounds.p95 <= windows.publish_rounds.p95 and epochs.collect_rounds.p95 <= windows.collect_rounds.p95
    assert epochs.delivery == windows.delivery == 1.0
