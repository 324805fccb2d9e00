"""A closed swarm (swarmnode/wire/allowlist.py): the operator's signed list is checked as members check it, and on
real p2pd peers an unlisted peer stores nothing, is served nothing and gets no place in a member's routing."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from gossip_peers import join
from hivemind.utils import get_dht_time
from test_gossip import new_key, rollouts
from typer.testing import CliRunner

from swarmnode.cli import app
from swarmnode.config import ConfigError, NetworkConfig, SwarmConfig, load_config
from swarmnode.lab.attacker_peer import AttackerPeer
from swarmnode.net.peer import StoreItem
from swarmnode.wire.allowlist import AllowlistError, load_allowlist, write_allowlist
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import Identity, load_identity
from swarmnode.wire.keys import batch_key
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import RolloutBatch
from swarmnode.wire.rules import SwarmRules, shard_of

OPERATOR = Identity.from_seed(b"\x51" * 32)
MEMBER, STRANGER = Identity.from_seed(b"\x52" * 32), Identity.from_seed(b"\x53" * 32)


def closed(tmp_path: Path, members: list[str], swarm_id: str = "closed-test") -> SwarmRules:
    path = tmp_path / "allowlist.json"
    write_allowlist(path, OPERATOR, swarm_id, members)
    return SwarmRules.of(SwarmConfig(id=swarm_id, allowlist=path, operator=OPERATOR.peer_id))


def test_a_signed_allowlist_loads_and_any_change_or_other_signer_or_swarm_is_refused_naming_the_file(tmp_path):
    rules = closed(tmp_path, [MEMBER.peer_id])
    assert rules.admits(MEMBER.peer_id) and not rules.admits(STRANGER.peer_id)
    assert SwarmRules("open").admits(STRANGER.peer_id)
    path = tmp_path / "allowlist.json"
    document = json.loads(path.read_text())
    document["peers"].append(STRANGER.peer_id)  # a member adding itself a friend
    path.write_text(json.dumps(document))
    for swarm_id, operator, wanted in [
        ("closed-test", OPERATOR.peer_id, "not signed by swarm.operator"),
        ("another", OPERATOR.peer_id, "signed for swarm 'closed-test'"),
        ("closed-test", "not-a-peer-id", "swarm.operator"),
    ]:
        with pytest.raises(AllowlistError) as error:
            load_allowlist(path, swarm_id, operator)
        assert wanted in str(error.value)
    with pytest.raises(AllowlistError, match=r"missing\.json: cannot read the allowlist .*swarmnode allowlist sign"):
        load_allowlist(tmp_path / "missing.json", "closed-test", OPERATOR.peer_id)
    with pytest.raises(ConfigError, match="swarm.allowlist and swarm.operator go together"):
        load_config(None, [f"swarm.allowlist={path}"])


def test_a_frame_signed_by_an_unlisted_key_is_refused_right_after_its_signature(tmp_path):
    rules = closed(tmp_path, [MEMBER.peer_id])
    batch = RolloutBatch(rules.swarm_id, 0, 1, 1.0, "m", "v", tuple(rollouts(1)))
    assert open_frame(BATCH.seal(batch, MEMBER), BATCH, rules).signer == MEMBER.peer_id
    with pytest.raises(Rejected) as refused:
        open_frame(BATCH.seal(batch, STRANGER), BATCH, rules)
    assert refused.value.reason is Reason.NOT_ALLOWED and refused.value.offender is None


def test_the_cli_signs_an_allowlist_members_can_check(tmp_path):
    key = tmp_path / "operator.key"
    assert CliRunner().invoke(app, ["identity", "new", "--path", str(key)]).exit_code == 0
    out = tmp_path / "members.json"
    signed = CliRunner().invoke(app, ["allowlist", "sign", MEMBER.peer_id, "--swarm", "s1", "--out", str(out), "--path", str(key)])
    assert signed.exit_code == 0, signed.output
    operator = load_identity(key).peer_id
    shown = CliRunner().invoke(app, ["allowlist", "show", str(out), "--swarm", "s1", "--operator", operator])
    assert shown.exit_code == 0 and MEMBER.peer_id in shown.output
    wrong = CliRunner().invoke(app, ["allowlist", "show", str(out), "--swarm", "s1", "--operator", MEMBER.peer_id])
    assert wrong.exit_code != 0 and "not signed by swarm.operator" in wrong.output
    bad = CliRunner().invoke(app, ["allowlist", "sign", "nonsense", "--swarm", "s1", "--out", str(out), "--path", str(key)])
    assert bad.exit_code != 0 and "peer id" in bad.output


@pytest.mark.network
def test_in_a_closed_swarm_an_unlisted_peer_stores_nothing_is_served_nothing_and_is_routed_to_by_nobody(tmp_path):
    keys = {name: new_key(tmp_path, name) for name in ("entry", "member", "stranger")}
    peer_ids = {name: load_identity(key).peer_id for name, key in keys.items()}
    rules = closed(tmp_path, [peer_ids["entry"], peer_ids["member"]])
    with contextlib.ExitStack() as stack:
        entry, _ = join(stack, keys["entry"], rules, NetworkConfig())
        member_peer, member = join(stack, keys["member"], rules, NetworkConfig(initial_peers=entry.advertised_maddrs()))
        stranger = AttackerPeer(keys["stranger"], [], rules)
        stack.callback(stranger.close)
        stranger.connect(entry.peer_id, entry.advertised_maddrs())
        flood = stranger.flood(entry.peer_id, rate=50.0, seconds=1.0, mode="one_identity", text_bytes=64)
        assert flood.get("stored", 0) == 0 and flood["no_answer"] == flood["sent"] > 0  # every request refused
        assert entry.refusals()["request_not_allowed"] >= 1 and not list(entry.storage.items())
        # a member relaying a frame the stranger signed: refused by every replica as not_allowed
        now = get_dht_time()
        batch = RolloutBatch(rules.swarm_id, rules.window_of(now), 1, now, "m", "v", tuple(rollouts(1)))
        stranger_identity = load_identity(keys["stranger"])
        key = batch_key(rules.swarm_id, batch.window, shard_of(stranger_identity.peer_id, rules.num_shards))
        item = StoreItem(key, stranger_identity.peer_id, BATCH.seal(batch, stranger_identity), rules.expiration_of(now))
        assert member_peer.store([item], timeout_s=5)[0].remote == 0
        assert entry.refusals()[Reason.NOT_ALLOWED.value] >= 1
        assert member.publish(rollouts(2), model_id="m", suite_version="v").ok  # members share as ever
        assert stranger.peer_id not in entry.known_peer_ids()
