"""Nodes of protocol v2 (the last commit before v3, run from its own source in another process) and of v3 in one
DHT: each version keeps sharing with its own, refuses the other's records as misplaced (an answer, never an error:
nobody is dropped or banned for it), and neither reads the other's batches. PROTOCOL.md §4, "Protocol versions"."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from swarmnode.config import NetworkConfig, SwarmConfig
from swarmnode.net.gossip import Gossip
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import PROTOCOL_VERSION
from swarmnode.wire.rollout import Completion, Rollout, TaskRef
from swarmnode.wire.rules import SwarmRules
from tests.gossip_peers import join

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "63329a1"  # main just before protocol v3 (directory and census keys of epochs)
RULES = SwarmRules.of(SwarmConfig(id="mixed-versions"))

# Runs in the v2 source: two peers join through argv[2], publish, say so, collect when told, report, leave.
OLD_NODES = """
import json, sys, tempfile
from pathlib import Path
from swarmnode.config import GossipConfig, NetworkConfig, SwarmConfig
from swarmnode.net.gossip import Gossip
from swarmnode.net.peer import DHTPeer
from swarmnode.wire.identity import Identity, load_identity, save_identity
from swarmnode.wire.rollout import Completion, Rollout, TaskRef
from swarmnode.wire.rules import SwarmRules

rules = SwarmRules.of(SwarmConfig(id=sys.argv[1]))
scratch = Path(tempfile.mkdtemp())
peers, gossips = [], []
for index in range(2):
    key = scratch / f"old-{index}.key"
    save_identity(Identity.generate(), key)
    peer = DHTPeer(key, rules, NetworkConfig(initial_peers=json.loads(sys.argv[2])))
    peer.start()
    peers.append(peer)
    gossips.append(Gossip(peer, load_identity(key), rules, GossipConfig()))
rollouts = [Rollout(TaskRef("chain_sum", "0123456789abcdef", 1, 0), (Completion("<answer>1</answer>", 1.0),))]
published = [gossip.publish(rollouts, model_id="old", suite_version="v").ok for gossip in gossips]
print(json.dumps({"peers": [gossip.peer_id for gossip in gossips], "published": published}), flush=True)
sys.stdin.readline()
collected = []
for gossip in gossips:  # up to 5 rounds until a collect finds any, as the v3 side does
    found = set()
    for _ in range(5):
        found = {item.signer for item in gossip.collect(8).rollouts}
        if found:
            break
    collected.append(sorted(found))
refusals = {}
for peer in peers:
    for reason, count in peer.refusals().items():
        refusals[reason] = refusals.get(reason, 0) + count
offences = sum(sum(gossip.stats.offences.values()) for gossip in gossips)
print(json.dumps({"collected": collected, "refusals": refusals, "offences": offences}), flush=True)
for gossip in gossips:
    gossip.close()
for peer in peers:
    peer.close()
"""


def old_source(into: Path) -> Path:
    """The `swarmnode` package of OLD_COMMIT, from this repository's history."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", OLD_COMMIT, "swarmnode"], capture_output=True, timeout=60
    )
    if archive.returncode != 0:
        pytest.skip(f"protocol v2's source needs this repository's history: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def collected_within_rounds(gossip: Gossip, rounds: int) -> set[str]:
    """Signers whose batches a collect found, collecting up to `rounds` times until one finds any (a batch stored
    an instant ago may not be on every replica yet, as in any round)."""
    for _ in range(rounds):
        if found := {item.signer for item in gossip.collect(8).rollouts}:
            return found
    return set()


@pytest.mark.network
def test_nodes_of_protocol_v2_and_v3_in_one_dht_each_share_with_their_own_version_only(tmp_path):
    assert PROTOCOL_VERSION == 3
    source = old_source(tmp_path / "v2")
    keys = []
    for name in ("a", "b"):
        keys.append(tmp_path / f"{name}.key")
        save_identity(Identity.generate(), keys[-1])
    rollouts = [Rollout(TaskRef("chain_sum", "0123456789abcdef", 2, 0), (Completion("<answer>2</answer>", 1.0),))]
    with contextlib.ExitStack() as stack:
        a_peer, a = join(stack, keys[0], RULES, NetworkConfig())
        b_peer, b = join(stack, keys[1], RULES, NetworkConfig(initial_peers=a_peer.visible_maddrs))
        old = subprocess.Popen(
            [sys.executable, "-c", OLD_NODES, RULES.swarm_id, json.dumps(a_peer.visible_maddrs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(source)}, cwd=source,
        )
        stack.callback(old.kill)
        line = old.stdout.readline()
        assert line, old.stderr.read() if old.poll() is not None else "v2 said nothing"
        started = json.loads(line) if line.startswith("{") else pytest.fail(f"v2 said {line!r}")
        assert started["published"] == [True, True]  # v2's stores land on v2 replicas (and ours refuse them)
        assert a.publish(rollouts, model_id="new", suite_version="v").ok
        assert b.publish(rollouts, model_id="new", suite_version="v").ok
        new_collected = [collected_within_rounds(gossip, 5) for gossip in (a, b)]
        old.stdin.write("collect\n")
        old.stdin.flush()
        report = json.loads(old.stdout.readline())
        assert old.wait(timeout=60) == 0
    old, new = set(started["peers"]), {a.peer_id, b.peer_id}
    assert new_collected == [{b.peer_id}, {a.peer_id}]  # our own version's batches, none of v2's
    assert [set(signers) for signers in report["collected"]] == [{started["peers"][1]}, {started["peers"][0]}]
    assert not old & set().union(*new_collected) and not new & set().union(*map(set, report["collected"]))
    # each refused the other's records as misplaced, and held nothing against their signers
    ours = a_peer.refusals() + b_peer.refusals()
    assert ours["key_mismatch"] >= 1, ours
    assert report["refusals"].get("key_mismatch", 0) + report["refusals"].get("bad_signature", 0) >= 1, report
    assert report["offences"] == 0 and not a.stats.offences and not b.stats.offences
