"""The committed test vectors are the protocol's executable spec: every one gives its listed result.

Cases without a "kind" are rollout batches (PROTOCOL.md §5); `"kind": "presence"` marks directory entries
(§4.1), judged by `open_frame`, by `swarmnode protocol check --kind presence` and by the oracle;
`"kind": "beacon"` census beacons (§4.2), judged by `open_frame`, by `--kind beacon` and by the oracle. The
receiver's rules are the manifest's, with a case's own `epoch_windows` where it names one (§4: epochs).
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hivemind.dht.validation import DHTRecord
from typer.testing import CliRunner

from swarmnode.cli import app
from swarmnode.config import NodeConfig
from swarmnode.lab import protocol_oracle
from swarmnode.lab.protocol_oracle import Context, context_of, judge_beacon, judge_presence, slot_of
from swarmnode.learn.intake import Intake
from swarmnode.learn.tasks import FamilySpec, TaskSuite
from swarmnode.net.validator import check_record
from swarmnode.wire.batch import BATCH
from swarmnode.wire.beacon import BEACON
from swarmnode.wire.check import Checker
from swarmnode.wire.keys import PROTOCOL_VERSION
from swarmnode.wire.presence import PRESENCE as PRESENCE_KIND
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import TaskRef
from swarmnode.wire.rules import SwarmRules

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "protocol" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
CASES = MANIFEST["vectors"]
PRESENCE = [case for case in CASES if case.get("kind") == "presence"]
BEACONS = [case for case in CASES if case.get("kind") == "beacon"]


def epoch_windows_of(case: dict) -> int:
    return case.get("epoch_windows", MANIFEST["rules"]["epoch_windows"])


def check_args(case: dict) -> list[str]:
    rules = MANIFEST["rules"]
    args = [str(VECTORS / name) for name in case["frames"]]
    args += ["--set", f"swarm.epoch_windows={epoch_windows_of(case)}"]  # the config's default is the node's, not 1
    if "swarm" in case:
        args += ["--swarm", case["swarm"], "--window-s", str(rules["window_s"]), "--num-shards", str(rules["num_shards"])]
    if "now" in case:
        args += ["--now", repr(case["now"])]
    if "slot" in case:
        args += ["--slot", case["slot"]]
    args += ["--kind", case.get("kind", "batch")]  # cases without a kind are batches (presence_as_batch included)
    return args


SUITE = MANIFEST["suite"]


def rules_of(case: dict) -> SwarmRules:
    """The receiver's rules; without a swarm in the case, a receiver of any swarm (checks 9-11 skipped)."""
    rules = MANIFEST["rules"]
    return SwarmRules(
        case.get("swarm"), window_s=rules["window_s"], num_shards=rules["num_shards"],
        max_age_windows=rules["max_age_windows"], clock_skew_s=rules["clock_skew_s"], epoch_windows=epoch_windows_of(case),
    )


def receiver_suite() -> TaskSuite:
    return TaskSuite([FamilySpec(f["family"], 1.0, f["config"], f["size"]) for f in SUITE["families"]])


def test_the_manifest_names_the_receivers_families_and_their_config_hashes_are_reproducible():
    defaults = [FamilySpec.of(f) for f in NodeConfig().tasks.families]  # swarmnode protocol check's default receiver
    assert [(f["family"], f["config_hash"]) for f in SUITE["families"]] == [(s.name, s.config_hash) for s in defaults]
    for family in SUITE["families"]:
        assert protocol_oracle.config_hash(family["family"], family["config"], family["size"], SUITE["generator"]) \
            == family["config_hash"]


def test_there_is_a_vector_for_every_frame_level_reason_and_enough_of_them():
    assert {case.get("kind", "batch") for case in CASES} == {"batch", "presence", "beacon"}
    assert (MANIFEST["protocol_version"], MANIFEST["envelope_version"]) == (3, 1)
    assert MANIFEST["key_prefix"] == "swarmnode/v3/" and MANIFEST["tier_max"] == 12
    assert MANIFEST["key_prefix"] == f"swarmnode/v{PROTOCOL_VERSION}/" == protocol_oracle.KEY_PREFIX
    expected = {case["expect"] for case in CASES if "kind" not in case}
    # task_error needs a generator that fails on a valid reference: none does on the default families; banned
    # and not_allowed are a receiver's own policy (its bans, its closed swarm's allowlist), not the frame's
    frame_reasons = {reason.value for reason in Reason} - {"bad_expiry", "banned", "not_allowed", "task_error"}
    assert frame_reasons <= expected
    assert len(CASES) - len(PRESENCE) - len(BEACONS) >= 12
    # A presence is judged by P1-P9 (PROTOCOL.md §4.1): no replay, no per-rollout checks.
    presence_reasons = frame_reasons - {"replay", "unknown_task", "reward_mismatch"}
    assert presence_reasons | {"accept"} == {case["expect"] for case in PRESENCE}
    # A beacon by B1-B9 (§4.2): the same codes as a presence.
    assert presence_reasons | {"accept"} == {case["expect"] for case in BEACONS}
    # Epochs of several windows (§4): placement and freshness of each kind, batches unchanged by them.
    assert MANIFEST["rules"]["epoch_windows"] == 1
    epochs = {(case.get("kind", "batch"), case["expect"]) for case in CASES if epoch_windows_of(case) > 1}
    assert epochs == {("batch", "stale"), ("batch", "key_mismatch")} | {
        (kind, expect) for kind in ("presence", "beacon") for expect in ("accept", "key_mismatch", "stale")
    }


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_vector_gives_its_expected_result(case):
    """The node's own receiving path (`open_frame`; for a batch the intake judges its rollouts), as one receiver
    of the case's frames in order."""
    kind = case.get("kind", "batch")
    checker = Checker(
        rules_of(case), kind=kind, now=case.get("now"), slot=case.get("slot"), judge=Intake(receiver_suite()).judge
    )
    results = [checker.check((VECTORS / name).read_bytes()) for name in case["frames"]]
    last = results[-1]
    assert (last.rejected.reason.value if last.rejected else "accept") == case["expect"]
    assert last.kind.name == kind


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_cli_check_prints_the_result_and_exit_code(case):
    outcome = CliRunner().invoke(app, ["protocol", "check", *check_args(case)])
    last_line = outcome.stdout.strip().splitlines()[-1]
    if case["expect"] == "accept":
        assert outcome.exit_code == 0 and last_line.endswith("accept")
    else:
        assert outcome.exit_code == 1 and last_line.endswith(f"reject: {case['expect']}")


@pytest.mark.parametrize("case", PRESENCE, ids=[case["name"] for case in PRESENCE])
def test_the_independent_oracle_gives_every_presence_vector_its_expected_result(case):
    """swarmnode/lab/protocol_oracle.py, written from PROTOCOL.md §4.1 alone, agrees with every presence vector."""
    if "slot" in case:
        assert case["slot"].split("/")[1] == "directory"
    context = context_of(MANIFEST["rules"], case)  # the slot as (window, bucket, subkey, tier)
    assert context.epoch_windows == epoch_windows_of(case)
    assert judge_presence((VECTORS / case["frames"][0]).read_bytes(), context) == case["expect"]


@pytest.mark.parametrize("case", BEACONS, ids=[case["name"] for case in BEACONS])
def test_the_independent_oracle_gives_every_beacon_vector_its_expected_result(case):
    """swarmnode/lab/protocol_oracle.py, written from PROTOCOL.md §4.2 alone, agrees with every beacon vector."""
    if "slot" in case:
        assert case["slot"].split("/")[1] == "census"
    context = context_of(MANIFEST["rules"], case)  # the slot as (window, bucket, subkey, tier)
    assert context.epoch_windows == epoch_windows_of(case)
    assert judge_beacon((VECTORS / case["frames"][0]).read_bytes(), context) == case["expect"]


@pytest.mark.parametrize(
    "name", ["beacon_stale", "beacon_epoch_stale", "presence_stale", "presence_epoch_stale"]
)
def test_a_beacon_or_presence_is_stale_two_epochs_on_whatever_max_age_windows(name):
    """PROTOCOL.md §4.1-4.2, P9 and B9: readers take entries and beacons of the current and the previous epoch
    only; with epochs of one window, the current and the previous window. beacon_epoch_stale and
    presence_epoch_stale are 5 windows old: max_age_windows 5 would keep a batch that old."""
    case = next(case for case in CASES if case["name"] == name)
    frame = (VECTORS / case["frames"][0]).read_bytes()
    rules, epoch_windows = MANIFEST["rules"], epoch_windows_of(case)
    kind, judge = {"beacon": (BEACON, judge_beacon), "presence": (PRESENCE_KIND, judge_presence)}[case["kind"]]
    swarm = SwarmRules(case["swarm"], window_s=rules["window_s"], max_age_windows=5, epoch_windows=epoch_windows)
    with pytest.raises(Rejected) as rejected:
        open_frame(frame, kind, swarm, now=case["now"])
    assert rejected.value.reason is Reason.STALE
    context = Context(case["swarm"], rules["window_s"], max_age_windows=5, now=case["now"], epoch_windows=epoch_windows)
    assert judge(frame, context) == "stale"


# Records a peer is asked to store (PROTOCOL.md §5.1, D5-D6) around vector frames, with epochs of 4 windows or 1:
# (frame's case, epoch_windows, the key string after the prefix, expiration - timestamp, expected)
TTL, EPOCH_TTL = 60.0, 60.0 + 2 * 3 * 30.0  # record_ttl_s; and + 2 (E - 1) window_s with E = 4
RECORDS = [
    ("presence_epoch_valid_in_slot", 4, "vectors/60000000/directory/3/{b3}", EPOCH_TTL, "accept"),
    ("presence_epoch_valid_in_slot", 4, "vectors/60000000/directory/0/0", EPOCH_TTL, "accept"),
    ("presence_epoch_valid_in_slot", 4, "vectors/60000000/directory/3/{b3}", TTL, "bad_expiry"),
    ("presence_epoch_valid_in_slot", 4, "vectors/60000002/directory/3/{b3}", EPOCH_TTL, "key_mismatch"),
    ("presence_epoch_valid_in_slot", 4, "vectors/60000004/directory/3/{b3}", EPOCH_TTL, "key_mismatch"),
    ("presence_epoch_valid_in_slot", 4, "vectors/60000000/census/3/{b3}", EPOCH_TTL, "key_mismatch"),
    ("beacon_epoch_valid_in_slot", 4, "vectors/60000000/census/3/{b3}", EPOCH_TTL, "accept"),
    ("beacon_epoch_valid_in_slot", 4, "vectors/60000004/census/12/{b12}", EPOCH_TTL, "accept"),
    ("beacon_epoch_valid_in_slot", 4, "vectors/60000004/census/3/{b3}", TTL, "bad_expiry"),
    ("beacon_epoch_valid_in_slot", 4, "vectors/60000002/census/3/{b3}", EPOCH_TTL, "key_mismatch"),
    ("beacon_epoch_valid_in_slot", 4, "vectors/60000003/census/3/{b3}", EPOCH_TTL, "key_mismatch"),
    ("beacon_epoch_valid_in_slot", 4, "vectors/60000008/census/3/{b3}", EPOCH_TTL, "key_mismatch"),
    ("presence_valid_minimal", 1, "vectors/60000000/directory/3/{b3}", TTL, "accept"),
    ("presence_valid_minimal", 1, "vectors/60000000/directory/3/{b3}", EPOCH_TTL, "bad_expiry"),
    ("beacon_valid_minimal", 1, "vectors/60000001/census/3/{b3}", TTL, "accept"),
    ("beacon_valid_minimal", 1, "vectors/60000004/census/3/{b3}", TTL, "key_mismatch"),
    ("key_mismatch_epoch_window", 4, "vectors/60000002/{shard}", TTL, "accept"),  # a batch: as before epochs
    ("key_mismatch_epoch_window", 4, "vectors/60000002/{shard}", EPOCH_TTL, "bad_expiry"),
]


@pytest.mark.parametrize("name, epoch_windows, key, lives_s, expect", RECORDS)
def test_a_stored_records_key_and_expiration_follow_its_kind_and_epoch_in_the_node_and_the_oracle(
    name, epoch_windows, key, lives_s, expect
):
    """D5-D6 (PROTOCOL.md §5.1): a presence under its epoch's directory keys, a beacon under its epoch's and the
    next epoch's census keys, both expiring record_ttl_s + 2 (E - 1) window_s after their timestamp; a batch as
    before. The node's validator and the oracle agree."""
    case = next(case for case in CASES if case["name"] == name)
    frame, alice = (VECTORS / case["frames"][0]).read_bytes(), MANIFEST["keys"]["alice"]
    rules = MANIFEST["rules"]
    places = {"b3": protocol_oracle.bucket(alice, 3), "b12": protocol_oracle.bucket(alice, 12),
              "shard": protocol_oracle.shard(alice, rules["num_shards"])}
    key_id = hashlib.sha1(msgpack.packb(MANIFEST["key_prefix"] + key.format(**places))).digest()
    kind = {"presence": PRESENCE_KIND, "beacon": BEACON}.get(case.get("kind"))
    signed = open_frame(frame, kind or BATCH, SwarmRules(None))
    now, timestamp = case["now"], signed.kind.timestamp(signed.value)
    record = DHTRecord(key_id, msgpack.packb(alice), msgpack.packb(frame), timestamp + lives_s)
    swarm = SwarmRules("vectors", window_s=rules["window_s"], record_ttl_s=TTL, num_shards=rules["num_shards"],
                       epoch_windows=epoch_windows)
    try:
        check_record(record, swarm, now)
        verdict = "accept"
    except Rejected as rejected:
        verdict = rejected.reason.value
    context = Context("vectors", rules["window_s"], rules["num_shards"], record_ttl_s=TTL, now=now,
                      epoch_windows=epoch_windows)
    assert (verdict, protocol_oracle.judge_record(record.key, record.subkey, record.value, record.expiration_time,
                                                  context)) == (expect, expect)


NOT_BUCKET_SLOTS = [
    "60000000/3/x", "1/{place}/3/8/x", "1/{place}/0/1/x", "1/{place}/13/0/x", "1/{place}/-1/0/x", "1/{place}/3/-1/x",
    "1/{place}/3/x", "1/{place}/3/2", "1/{place}/3/2/", "{place}/3/2/x", "1/{place}/a/2/x", "1/{place}/3/b/x",
    "+1/{place}/3/2/x", "1/{place}/+3/2/x", "1/{place}/03/2/x", "1/{place}/3/ 2/x", "1_0/{place}/3/2/x",
    "1/{place}/\u0663/2/x",  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
]


@pytest.mark.parametrize("slot", NOT_BUCKET_SLOTS)
def test_cli_check_refuses_a_beacon_slot_that_is_not_a_census_key(slot):
    """A census key is WINDOW/census/TIER/BUCKET: TIER in 0-12, BUCKET below 2^TIER (PROTOCOL.md §4.2)."""
    frame = str(VECTORS / "beacon_valid_minimal.bin")
    outcome = CliRunner().invoke(app, ["protocol", "check", frame, "--kind", "beacon", "--slot", slot.format(place="census")])
    assert outcome.exit_code == 2 and "WINDOW/census/TIER/BUCKET/SUBKEY" in outcome.output


@pytest.mark.parametrize("slot", [*NOT_BUCKET_SLOTS, "60000000/directory/x", "1/census/0/0/x"])
def test_cli_check_refuses_a_presence_slot_that_is_not_a_directory_key(slot):
    """A directory key is WINDOW/directory/TIER/BUCKET, as a census key (PROTOCOL.md §4.1)."""
    frame = str(VECTORS / "presence_valid_minimal.bin")
    outcome = CliRunner().invoke(
        app, ["protocol", "check", frame, "--kind", "presence", "--slot", slot.format(place="directory")]
    )
    assert outcome.exit_code == 2 and "WINDOW/directory/TIER/BUCKET/SUBKEY" in outcome.output


@pytest.mark.parametrize("slot", [slot.format(place=place) for slot in NOT_BUCKET_SLOTS[1:]
                                  for place in ("directory", "census")])
def test_the_oracle_reads_the_same_slots_as_the_cli(slot):
    """Bucket slots the CLI refuses, the oracle's `slot_of` refuses too (a batch slot is another shape)."""
    with pytest.raises(ValueError):
        slot_of(slot)


@pytest.mark.parametrize("slot", ["+1/3/x", "1/+3/x", "01/3/x", "1/03/x", "1_0/3/x", " 1/3/x", "\u0661/3/x"])
def test_a_batch_slot_whose_numbers_are_not_written_as_keys_write_them_is_refused_by_the_cli_and_the_oracle(slot):
    """Keys write numbers in ASCII base 10 without sign or leading zero (PROTOCOL.md §4); Python's int() would also
    read "+1", "1_0", " 1" or other scripts' digits, and a slot read so would name a key nobody writes."""
    with pytest.raises(ValueError):
        slot_of(slot)
    outcome = CliRunner().invoke(app, ["protocol", "check", str(VECTORS / "valid_minimal.bin"), "--kind", "batch",
                                       "--slot", slot])
    assert outcome.exit_code == 2 and "WINDOW/SHARD/SUBKEY" in outcome.output


@pytest.mark.parametrize("kind", ["batch", "presence", "beacon"])
def test_cli_check_never_prints_a_traceback(tmp_path, kind):
    """One process per kind (each start imports torch and reasoning-gym), every junk frame in it."""
    paths = []
    for number, content in enumerate([b"", b"\x00", b"\xff" * 3, bytes(range(256)) * 10]):
        paths.append(tmp_path / f"frame{number}.bin")
        paths[-1].write_bytes(content)
    outcome = subprocess.run(
        [sys.executable, "-m", "swarmnode.cli", "protocol", "check", *map(str, paths), "--kind", kind],
        capture_output=True, text=True,
    )
    assert outcome.returncode == 1
    lines = outcome.stdout.splitlines()
    assert len(lines) == len(paths) and all(": reject: " in line for line in lines), outcome.stdout
    assert "Traceback" not in outcome.stderr


def test_vectors_are_reproduced_byte_for_byte_by_the_generator(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_vectors.py"), str(tmp_path)], check=True, capture_output=True)
    for path in VECTORS.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_sign_command_makes_a_frame_that_check_accepts(tmp_path):
    runner = CliRunner()
    key = tmp_path / "key"
    assert runner.invoke(app, ["identity", "new", "--path", str(key)]).exit_code == 0
    chain_sum = next(f for f in SUITE["families"] if f["family"] == "chain_sum")
    reference = {"family": "chain_sum", "config_hash": chain_sum["config_hash"], "seed": 1, "index": 2}
    suite = receiver_suite()
    task = suite.task(TaskRef(**reference))
    text = f"<answer>{task.entry['answer']}</answer>"
    description = {
        "swarm_id": "demo", "window": 60000000, "sequence": 1, "timestamp": 1800000015.0,
        "model_id": "m", "suite_version": "v",
        "rollouts": [{"task": reference, "completions": [{"text": text, "reward": suite.score(task, text).verifier}]}],
    }
    batch_json = tmp_path / "batch.json"
    batch_json.write_text(json.dumps(description))
    frame = tmp_path / "frame.bin"
    signed = runner.invoke(app, ["protocol", "sign", str(batch_json), "--key", str(key), "--out", str(frame)])
    assert signed.exit_code == 0, signed.output
    checked = runner.invoke(app, ["protocol", "check", str(frame), "--swarm", "demo", "--now", "1800000020"])
    assert checked.exit_code == 0 and checked.stdout.strip() == "accept"
    batch_json.write_text(json.dumps({**description, "window": "soon"}))
    refused = runner.invoke(app, ["protocol", "sign", str(batch_json), "--key", str(key), "--out", str(frame)])
    assert refused.exit_code == 1 and "window" in refused.output


@pytest.mark.parametrize(
    "options",
    [["--now", "nan"], ["--now", "inf"], ["--window-s", "0"], ["--window-s", "nan"], ["--num-shards", "0"],
     ["--num-shards", "-1"], ["--swarm", "Not A Swarm"]],
)
def test_cli_check_refuses_impossible_options_as_a_usage_error_not_a_traceback_or_a_verdict(options):
    outcome = CliRunner().invoke(app, ["protocol", "check", str(VECTORS / "valid_minimal.bin"), *options])
    assert outcome.exit_code == 2, outcome.output
    assert "Traceback" not in outcome.output and "accept" not in outcome.output


def test_cli_check_judges_the_future_without_a_swarm_and_defaults_to_the_protocols_shard_count():
    case = next(case for case in CASES if case["name"] == "future")
    outcome = CliRunner().invoke(app, ["protocol", "check", str(VECTORS / case["frames"][0]), "--now", repr(case["now"])])
    assert outcome.exit_code == 1 and outcome.stdout.strip() == "reject: future"
    slotted = next(case for case in CASES if case["name"] == "valid_in_slot")  # its slot counts 16 shards
    args = [str(VECTORS / slotted["frames"][0]), "--swarm", slotted["swarm"], "--now", repr(slotted["now"]),
            "--slot", slotted["slot"]]
    assert CliRunner().invoke(app, ["protocol", "check", *args, "--num-shards", "16"]).exit_code == 0
    by_default = CliRunner().invoke(app, ["protocol", "check", *args])  # 65,536 shards: another shard
    assert by_default.exit_code == 1 and by_default.stdout.strip() == "reject: key_mismatch"
