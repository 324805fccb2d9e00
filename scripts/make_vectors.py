"""Write protocol/vectors/: frames for every rejection code plus valid ones, and manifest.json.

Three kinds of frame: rollout batches (PROTOCOL.md §5; manifest cases without a "kind"), presence
entries of the directory (§4.1; `"kind": "presence"`, judged by the checks P1-P9) and beacons
of the census (§4.2; `"kind": "beacon"`, judged by the checks B1-B9). Slots are those of `swarmnode protocol check
--slot` (§5): `WINDOW/SHARD/SUBKEY`, `WINDOW/directory/TIER/BUCKET/SUBKEY`, `WINDOW/census/TIER/BUCKET/SUBKEY`. The
receiver of the batch vectors has swarmnode's default task families (listed in the manifest with their
config hashes): task references, indices and claimed scores are judged against them (checks 14-15). The receiver's
swarm rules are the manifest's "rules", whose epochs are one window (`epoch_windows` 1: a key per window); the
cases of epochs (`add_epoch_vectors`) name their own `"epoch_windows": 4`.

Deterministic (fixed keys, timestamps and Ed25519's deterministic signatures), so re-running it
reproduces the committed files byte for byte; tests/test_vectors.py checks that.
Usage: python scripts/make_vectors.py [OUT_DIR]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from swarmnode.config import NodeConfig
from swarmnode.learn.tasks import GENERATOR, FamilySpec, TaskSuite
from swarmnode.wire.address import Reachability
from swarmnode.wire.batch import BATCH_DOMAIN_TAG, MAX_ENVELOPE_BYTES, MAX_INDEX, encode_batch
from swarmnode.wire.beacon import BEACON, BEACON_DOMAIN_TAG, MAX_BEACON_BYTES, MAX_UPTIME_S, Beacon
from swarmnode.wire.envelope import ENVELOPE_VERSION, Envelope
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import KEY_PREFIX, PROTOCOL_VERSION, TIER_MAX, bucket_of
from swarmnode.wire.presence import MAX_PRESENCE_BYTES, PRESENCE, PRESENCE_DOMAIN_TAG, Presence
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import shard_of

SWARM = "vectors"
WINDOW_S = 30.0
NUM_SHARDS = 16
T0 = 1_800_000_015.0  # inside window 60_000_000
NOW = T0 + 10.0
ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
FAMILIES = [FamilySpec.of(family) for family in NodeConfig().tasks.families]  # the receiver's: the node defaults
SUITE = TaskSuite(FAMILIES)
HASHES = {spec.name: spec.config_hash for spec in FAMILIES}
REF = TaskRef("chain_sum", HASHES["chain_sum"], 7, 42)
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
IDENTITY_POINT = bytes([1]) + bytes(31)
TIER = 3  # the tier of most directory and census slots: 8 buckets
EPOCH = 4  # epoch_windows of the epoch cases (the node's default); the other cases' epochs are one window
assert int(T0 // WINDOW_S) % EPOCH == 0  # T0's window is the first of its epoch


def bucket_slot(place: str, window: int, tier: int, bucket: int, subkey: str) -> str:
    """A slot of a directory or census key: WINDOW/directory/TIER/BUCKET/SUBKEY or WINDOW/census/TIER/BUCKET/SUBKEY."""
    return f"{window}/{place}/{tier}/{bucket}/{subkey}"


def other_tiers_bucket(peer_id: str) -> tuple[int, int]:
    """A tier above TIER and the signer's bucket of the tier below it, where the two differ: its bucket of the wrong
    tier (what a reader one tier above a writer would read if buckets did not carry their tier)."""
    tier = next(t for t in range(TIER + 1, TIER_MAX + 1) if bucket_of(peer_id, t) != bucket_of(peer_id, t - 1))
    return tier, bucket_of(peer_id, tier - 1)


def oracle_answer(ref: TaskRef) -> str:
    return str(SUITE.task(ref).entry["answer"])


def honest(ref: TaskRef, *texts: str) -> Rollout:
    """Completions whose claimed score is what the receiver's verifier says."""
    task = SUITE.task(ref)
    return Rollout(ref, tuple(Completion(text, SUITE.score(task, text).verifier) for text in texts))


def raw_frame(version: int, signer: bytes, payload: bytes, signature: bytes) -> bytes:
    """An envelope around any signer and signature bytes (for the strict-signature cases)."""
    return pb.Envelope(version=version, signer=signer, payload=payload, signature=signature).SerializeToString()


def batch(**changes) -> RolloutBatch:
    base = RolloutBatch(
        swarm_id=SWARM,
        window=int(T0 // WINDOW_S),
        sequence=1,
        timestamp=T0,
        model_id="swarmnode/seed",
        suite_version="reasoning-gym-0.1.25+000000000000",
        rollouts=(Rollout(REF, (Completion(f"<answer>{oracle_answer(REF)}</answer>"), Completion("<answer>-1</answer>"))),),
    )
    return dataclasses.replace(base, **changes)


def frame(identity: Identity, value: RolloutBatch, version: int = ENVELOPE_VERSION) -> bytes:
    return Envelope.sign(identity, encode_batch(value), BATCH_DOMAIN_TAG, version).encode()


def presence(**changes) -> Presence:
    base = Presence(swarm_id=SWARM, window=int(T0 // WINDOW_S), timestamp=T0)
    return dataclasses.replace(base, **changes)


def public(*addresses: str) -> Presence:
    return presence(reachability=Reachability.PUBLIC, addresses=addresses)


def presence_payload(value: Presence) -> bytes:
    return Envelope.decode(PRESENCE.seal(value, ALICE)).payload


def presence_frame(
    identity: Identity, payload: bytes, version: int = ENVELOPE_VERSION, domain: bytes = PRESENCE_DOMAIN_TAG
) -> bytes:
    """A frame around any payload bytes, signed under the presence domain tag unless told otherwise."""
    return Envelope.sign(identity, payload, domain, version).encode()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    valid = frame(ALICE, batch())
    full = batch(
        sequence=9,
        rollouts=tuple(
            dataclasses.replace(
                rollout,
                completions=tuple(dataclasses.replace(c, token_logprobs=(-0.5, -1.25, -0.0)) for c in rollout.completions),
            )
            for rollout in (
                honest(TaskRef(family, HASHES[family], 1000 + i, i), *(f"step {j} <answer>{j}</answer>" for j in range(8)))
                for i, family in enumerate(["chain_sum", "products", "count_bits"])
            )
        ),
    )
    flipped = bytearray(valid)
    flipped[-70] ^= 0x01  # a payload byte: the signature no longer matches
    non_canonical = (
        pb.Envelope(signature=Envelope.decode(valid).signature).SerializeToString()
        + pb.Envelope(version=1, signer=ALICE.public_key, payload=Envelope.decode(valid).payload).SerializeToString()
    )
    # Field 15, varint 1: unknown to version 1. Appended to the frame (outside the signature) or inside a
    # completion of a payload the signer signed; protobuf libraries keep and re-emit such fields verbatim.
    unknown_field = bytes([15 << 3, 1])
    unknown_in_payload = pb.RolloutBatch.FromString(encode_batch(batch()))
    unknown_in_payload.rollouts[0].completions[0].MergeFromString(unknown_field)
    nan_reward = batch(rollouts=(Rollout(REF, (Completion("x", float("nan")),)),))
    too_many = batch(rollouts=(Rollout(REF, tuple(Completion(str(i)) for i in range(33))),))
    alice_slot = f"{int(T0 // WINDOW_S)}/{shard_of(ALICE.peer_id, NUM_SHARDS)}/{ALICE.peer_id}"

    vectors: list[dict] = []

    def add(name: str, data: bytes | list[bytes], expect: str, note: str, kind: str | None = None, **context) -> None:
        frames = data if isinstance(data, list) else [data]
        files = []
        for i, content in enumerate(frames):
            filename = f"{name}.bin" if len(frames) == 1 else f"{name}.{i}.bin"
            (out / filename).write_bytes(content)
            files.append(filename)
        kind_field = {"kind": kind} if kind is not None else {}  # no kind: a batch
        vectors.append({"name": name, **kind_field, "frames": files, "expect": expect, "note": note, **context})

    ctx = {"swarm": SWARM, "now": NOW}
    add("valid_minimal", valid, "accept", "one rollout, two completions, no optional fields", **ctx)
    add("valid_full", frame(BOB, full), "accept", "claimed rewards and token log-probs", **ctx)
    add("valid_in_slot", valid, "accept", "read from its DHT slot", slot=alice_slot, **ctx)
    add("valid_without_context", valid, "accept", "no swarm given: only signature and schema checks")
    add("too_large", bytes(MAX_ENVELOPE_BYTES + 1), "too_large", "one byte over the limit", **ctx)
    add("malformed_empty", b"", "malformed", "empty file", **ctx)
    add("malformed_truncated", valid[:-1], "malformed", "last signature byte missing", **ctx)
    add("malformed_noncanonical", non_canonical, "malformed", "signature field first", **ctx)
    add("malformed_unknown_field", valid + unknown_field, "malformed", "an unknown field after the signature", **ctx)
    add(
        "malformed_unknown_payload_field",
        Envelope.sign(ALICE, unknown_in_payload.SerializeToString(deterministic=True), BATCH_DOMAIN_TAG).encode(),
        "malformed",
        "validly signed payload with an unknown field inside a completion",
        **ctx,
    )
    add("bad_version", frame(ALICE, batch(), version=2), "bad_version",
        f"validly signed as envelope version 2 (frames are version 1 in protocol version {PROTOCOL_VERSION})", **ctx)
    add("bad_signature", bytes(flipped), "bad_signature", "one payload bit flipped", **ctx)
    add(
        "key_mismatch_subkey",
        valid,
        "key_mismatch",
        "stored under Bob's subkey",
        slot=f"{int(T0 // WINDOW_S)}/{shard_of(ALICE.peer_id, NUM_SHARDS)}/{BOB.peer_id}",
        **ctx,
    )
    add(
        "key_mismatch_window",
        valid,
        "key_mismatch",
        "copied into a later window's key",
        slot=f"{int(T0 // WINDOW_S) + 1}/{shard_of(ALICE.peer_id, NUM_SHARDS)}/{ALICE.peer_id}",
        swarm=SWARM,
        now=NOW + WINDOW_S,
    )
    add("limit_exceeded", frame(ALICE, too_many), "limit_exceeded", "33 completions in one rollout", **ctx)
    add("bad_value_nan", frame(ALICE, nan_reward), "bad_value", "reward is NaN", **ctx)
    add(
        "bad_value_index",
        frame(ALICE, batch(rollouts=(Rollout(dataclasses.replace(REF, index=MAX_INDEX + 1), (Completion("x"),)),))),
        "bad_value",
        "task index 2^31",
        **ctx,
    )
    add("bad_value_window", frame(ALICE, batch(window=5)), "bad_value", "window disagrees with timestamp", **ctx)
    add("wrong_swarm", frame(ALICE, batch(swarm_id="elsewhere")), "wrong_swarm", "another swarm's batch", **ctx)
    add("stale", valid, "stale", "read two windows later", swarm=SWARM, now=T0 + 2 * WINDOW_S)
    add("future", valid, "future", "signed 60 s ahead of the receiver's clock", swarm=SWARM, now=T0 - 60)
    add("replay", [valid, valid], "replay", "the same batch twice: the second is refused", **ctx)
    unknown = batch(rollouts=(Rollout(dataclasses.replace(REF, family="no_such_family"), (Completion("x"),)),))
    add("unknown_task", frame(ALICE, unknown), "unknown_task", "a family reasoning-gym does not have", **ctx)
    foreign = batch(rollouts=(Rollout(dataclasses.replace(REF, config_hash="0123456789abcdef"), (Completion("x"),)),))
    add("unknown_task_config", frame(ALICE, foreign), "unknown_task", "chain_sum with a config hash not the receiver's", **ctx)
    beyond = batch(rollouts=(Rollout(dataclasses.replace(REF, index=MAX_INDEX), (Completion("x"),)),))
    add("unknown_task_index", frame(ALICE, beyond), "unknown_task", "index 2^31-1: within the limit, beyond the dataset size", **ctx)
    second = batch(rollouts=(batch().rollouts[0], Rollout(dataclasses.replace(REF, family="no_such_family"), (Completion("x"),))))
    add("unknown_task_second_rollout", frame(ALICE, second), "unknown_task", "the first rollout passes, the second does not", **ctx)
    right = f"<answer>{oracle_answer(REF)}</answer>"
    lie_low = batch(rollouts=(Rollout(REF, (Completion(right, 0.0),)),))
    add("reward_mismatch_low", frame(ALICE, lie_low), "reward_mismatch", "a correct answer claimed to score 0", **ctx)
    lie_high = batch(rollouts=(Rollout(REF, (Completion("no answer tag", 1.0),)),))
    add("reward_mismatch_high", frame(ALICE, lie_high), "reward_mismatch", "a completion without <answer> claimed 1", **ctx)
    add("valid_honest_claims", frame(ALICE, batch(rollouts=(honest(REF, right, "<answer>-1</answer>", "none"),))),
        "accept", "claims equal to the receiver's verifier scores", **ctx)
    # Strict Ed25519 (§2.2): the universal forgery under a small-order key, non-canonical A and R, S >= L.
    payload = encode_batch(batch())
    add("bad_signature_small_order_key", raw_frame(1, IDENTITY_POINT, payload, IDENTITY_POINT + bytes(32)),
        "bad_signature", "key = the identity point, R = identity, S = 0: verifies for any message without the check", **ctx)
    add("bad_signature_noncanonical_key", raw_frame(1, (P + 1).to_bytes(32, "little"), payload, IDENTITY_POINT + bytes(32)),
        "bad_signature", "key y = p + 1, an unreduced encoding of the identity point", **ctx)
    honest_signature = Envelope.decode(valid).signature
    s_value = int.from_bytes(honest_signature[32:], "little")
    add("bad_signature_s_unreduced", raw_frame(1, ALICE.public_key, Envelope.decode(valid).payload,
                                               honest_signature[:32] + (s_value + L).to_bytes(32, "little")),
        "bad_signature", "a valid signature with S + L in place of S", **ctx)
    add("bad_signature_noncanonical_r", raw_frame(1, ALICE.public_key, Envelope.decode(valid).payload,
                                                  (P + 1).to_bytes(32, "little") + honest_signature[32:]),
        "bad_signature", "R with y = p + 1", **ctx)

    add_presence_vectors(add, ctx, valid)
    add_beacon_vectors(add, ctx, valid)
    add_epoch_vectors(add)

    manifest = {
        "protocol_version": PROTOCOL_VERSION,  # in every DHT key's prefix (PROTOCOL.md §4)
        "envelope_version": ENVELOPE_VERSION,  # Envelope.version, check 3
        "key_prefix": KEY_PREFIX,
        "tier_max": TIER_MAX,
        "rules": {
            "window_s": WINDOW_S, "num_shards": NUM_SHARDS, "max_age_windows": 1, "clock_skew_s": 5.0,
            "epoch_windows": 1,  # a case's own "epoch_windows" replaces it
        },
        "suite": {
            "generator": GENERATOR,
            "families": [
                {"family": spec.name, "config": dict(spec.config), "size": spec.dataset_size, "config_hash": spec.config_hash}
                for spec in FAMILIES
            ],
        },
        "keys": {"alice": ALICE.peer_id, "bob": BOB.peer_id},
        "vectors": vectors,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {out}")


def add_presence_vectors(add, ctx: dict, valid_batch: bytes) -> None:
    """Presence entries (PROTOCOL.md §4.1), appended after the batch vectors so those stay as they were."""
    window = int(T0 // WINDOW_S)
    bucket = bucket_of(ALICE.peer_id, TIER)
    minimal = PRESENCE.seal(presence(), ALICE)
    private = PRESENCE.seal(presence(reachability=Reachability.PRIVATE), ALICE)
    unknown_field = bytes([15 << 3, 1])
    # Reachability 7: not one of the three values. Open proto3 enums keep it, so the payload is canonical.
    unknown_reachability = pb.Presence.FromString(presence_payload(presence()))
    unknown_reachability.reachability = 7
    # Reachability UNKNOWN (0) written out: a default value, which canonical form omits.
    default_written = presence_payload(presence()) + bytes([4 << 3, 0])
    addresses = [f"/ip4/203.0.113.{i}/tcp/4001" for i in range(1, 6)]

    def add_p(name: str, data: bytes, expect: str, note: str, **context) -> None:
        add(name, data, expect, note, kind="presence", **context)

    add_p("presence_valid_minimal", minimal, "accept", "reachability UNKNOWN, no addresses: the payload has 3 fields", **ctx)
    add_p(
        "presence_valid_public",
        PRESENCE.seal(public("/ip4/203.0.113.7/tcp/4001", "/ip6/2001:db8::7/tcp/4001"), BOB),
        "accept",
        "PUBLIC, one IPv4 and one IPv6 address",
        **ctx,
    )
    add_p(
        "presence_valid_in_slot",
        private,
        "accept",
        "PRIVATE, read from its signer's bucket of the directory's tier 0 (one bucket) under its subkey",
        slot=bucket_slot("directory", window, 0, 0, ALICE.peer_id),
        **ctx,
    )
    add_p(
        "presence_valid_in_tier_slot",
        private,
        "accept",
        f"read from its signer's bucket ({bucket}) of tier {TIER}",
        slot=bucket_slot("directory", window, TIER, bucket, ALICE.peer_id),
        **ctx,
    )
    add_p(
        "presence_valid_in_top_tier_slot",
        private,
        "accept",
        f"read from its signer's bucket ({bucket_of(ALICE.peer_id, TIER_MAX)}) of tier {TIER_MAX}, the highest",
        slot=bucket_slot("directory", window, TIER_MAX, bucket_of(ALICE.peer_id, TIER_MAX), ALICE.peer_id),
        **ctx,
    )
    add_p("presence_valid_without_context", minimal, "accept", "no swarm given: only signature and schema checks")
    add_p("presence_too_large", bytes(MAX_PRESENCE_BYTES + 1), "too_large", "one byte over MAX_PRESENCE_BYTES", **ctx)
    add_p("presence_malformed_truncated", minimal[:-1], "malformed", "last signature byte missing", **ctx)
    add_p(
        "presence_malformed_unknown_field", minimal + unknown_field, "malformed", "an unknown field after the signature",
        **ctx,
    )
    add_p(
        "presence_malformed_unknown_payload_field",
        presence_frame(ALICE, presence_payload(presence()) + unknown_field),
        "malformed",
        "validly signed Presence payload with an unknown field 15",
        **ctx,
    )
    add_p(
        "presence_malformed_default_written",
        presence_frame(ALICE, default_written),
        "malformed",
        "validly signed Presence payload that writes reachability UNKNOWN (0) explicitly",
        **ctx,
    )
    add_p(
        "presence_bad_version",
        presence_frame(ALICE, presence_payload(presence()), version=2),
        "bad_version",
        "validly signed as envelope version 2",
        **ctx,
    )
    add_p(
        "presence_bad_signature",
        presence_frame(ALICE, presence_payload(presence()), domain=BATCH_DOMAIN_TAG),
        "bad_signature",
        "a Presence payload signed under the batch domain tag",
        **ctx,
    )
    add_p(
        "presence_batch_frame",
        valid_batch,
        "bad_signature",
        "a valid batch frame (valid_minimal) read as a presence",
        **ctx,
    )
    add_p(
        "presence_key_mismatch_subkey",
        minimal,
        "key_mismatch",
        "stored under Bob's subkey of Alice's bucket",
        slot=bucket_slot("directory", window, TIER, bucket, BOB.peer_id),
        **ctx,
    )
    add_p(
        "presence_key_mismatch_window",
        minimal,
        "key_mismatch",
        "copied into its bucket's key of the next window's directory",
        slot=bucket_slot("directory", window + 1, TIER, bucket, ALICE.peer_id),
        **ctx,
    )
    add_p(
        "presence_key_mismatch_bucket",
        minimal,
        "key_mismatch",
        f"copied into another bucket ({(bucket + 1) % 2**TIER}) of its tier ({TIER})",
        slot=bucket_slot("directory", window, TIER, (bucket + 1) % 2**TIER, ALICE.peer_id),
        **ctx,
    )
    wrong_tier, lower_bucket = other_tiers_bucket(ALICE.peer_id)
    add_p(
        "presence_key_mismatch_other_tiers_bucket",
        minimal,
        "key_mismatch",
        f"read from tier {wrong_tier}'s bucket {lower_bucket}: its bucket of tier {wrong_tier - 1}, not of tier "
        f"{wrong_tier} ({bucket_of(ALICE.peer_id, wrong_tier)})",
        slot=bucket_slot("directory", window, wrong_tier, lower_bucket, ALICE.peer_id),
        **ctx,
    )
    add_p("presence_limit_exceeded", PRESENCE.seal(public(*addresses), ALICE), "limit_exceeded", "5 addresses", **ctx)
    add_p(
        "presence_bad_value_not_public",
        PRESENCE.seal(presence(reachability=Reachability.PRIVATE, addresses=("/ip4/203.0.113.7/tcp/4001",)), ALICE),
        "bad_value",
        "a PRIVATE entry listing an address",
        **ctx,
    )
    add_p(
        "presence_bad_value_duplicate",
        PRESENCE.seal(public("/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/tcp/4001"), ALICE),
        "bad_value",
        "the same address twice",
        **ctx,
    )
    add_p(
        "presence_bad_value_zone",
        PRESENCE.seal(public("/ip6/fe80::1%eth0/tcp/4001"), ALICE),
        "bad_value",
        "an IPv6 address with a zone id",
        **ctx,
    )
    add_p(
        "presence_bad_value_mixed_ip6",
        PRESENCE.seal(public("/ip6/::ffff:1.2.3.4/tcp/4001"), ALICE),
        "bad_value",
        "an IPv4-mapped IPv6 address in mixed notation (canonical: ::ffff:102:304)",
        **ctx,
    )
    with_peer_id = f"/ip4/203.0.113.7/tcp/4001/p2p/{ALICE.peer_id}"
    add_p(
        "presence_limit_exceeded_address_bytes",
        PRESENCE.seal(public(with_peer_id), ALICE),
        "limit_exceeded",
        f"an address of {len(with_peer_id)} bytes (it has a /p2p/ part): the length limit comes before the form",
        **ctx,
    )
    add_p(
        "presence_bad_value_address",
        PRESENCE.seal(public("/ip4/010.0.0.1/tcp/1"), ALICE),
        "bad_value",
        "IPv4 address with a leading zero: not its canonical text form",
        **ctx,
    )
    add_p(
        "presence_bad_value_ip6",
        PRESENCE.seal(public("/ip6/2001:db8:0:0:0:0:0:7/tcp/4001"), ALICE),
        "bad_value",
        "IPv6 address without the :: compression: not its canonical text form (that is 2001:db8::7)",
        **ctx,
    )
    add_p(
        "presence_bad_value_port",
        PRESENCE.seal(public("/ip4/203.0.113.7/tcp/0"), ALICE),
        "bad_value",
        "port 0",
        **ctx,
    )
    add_p(
        "presence_bad_value_dns",
        PRESENCE.seal(public("/dns4/example.com/tcp/4001"), ALICE),
        "bad_value",
        "a DNS name instead of an IP address",
        **ctx,
    )
    add_p(
        "presence_bad_value_reachability",
        presence_frame(ALICE, unknown_reachability.SerializeToString(deterministic=True)),
        "bad_value",
        "reachability 7: none of the three values",
        **ctx,
    )
    add_p(
        "presence_bad_value_window",
        PRESENCE.seal(presence(window=5), ALICE),
        "bad_value",
        "window disagrees with timestamp",
        **ctx,
    )
    add_p(
        "presence_wrong_swarm",
        PRESENCE.seal(presence(swarm_id="elsewhere"), ALICE),
        "wrong_swarm",
        "another swarm's entry",
        **ctx,
    )
    add_p("presence_stale", minimal, "stale", "read two windows later", swarm=SWARM, now=T0 + 2 * WINDOW_S)
    add_p("presence_future", minimal, "future", "signed 60 s ahead of the receiver's clock", swarm=SWARM, now=T0 - 60)
    # A batch-kind case: a valid presence frame never passes as a batch (another domain tag).
    add("presence_as_batch", minimal, "bad_signature", "a valid presence frame read as a batch", **ctx)


def beacon(**changes) -> Beacon:
    base = Beacon(
        swarm_id=SWARM, window=int(T0 // WINDOW_S), timestamp=T0, software="swarmnode/0.1.0", model_id="swarmnode/seed"
    )
    return dataclasses.replace(base, **changes)


def beacon_payload(value: Beacon) -> bytes:
    return Envelope.decode(BEACON.seal(value, ALICE)).payload


def add_beacon_vectors(add, ctx: dict, valid_batch: bytes) -> None:
    """Beacons of the census (PROTOCOL.md §4.2), appended after the presence vectors so those stay as they were."""
    bucket = bucket_of(ALICE.peer_id, TIER)
    window = beacon().window
    sealed = BEACON.seal(beacon(), ALICE)
    minimal = BEACON.seal(beacon(software="", model_id=""), ALICE)
    unknown_field = bytes([15 << 3, 1])
    unknown_payload_field = bytes([0x90, 0x01, 1])  # field 18, varint 1: unknown to version 1
    # rounds_per_hour +0.0 written out (field 15, fixed32): a default value of a field without explicit presence
    default_written = beacon_payload(beacon()) + bytes([15 << 3 | 5]) + bytes(4)
    unknown_reachability = pb.Beacon.FromString(beacon_payload(beacon()))
    unknown_reachability.reachability = 7  # open proto3 enum: kept, so the payload is canonical
    presence_minimal = PRESENCE.seal(presence(), ALICE)

    def add_b(name: str, data: bytes, expect: str, note: str, **context) -> None:
        add(name, data, expect, note, kind="beacon", **context)

    add_b("beacon_valid_minimal", minimal, "accept", "software and model_id empty: the payload has 3 fields", **ctx)
    full = beacon(
        model_id="Qwen/Qwen2.5-0.5B-Instruct", round=120, reward=0.625, held_out=0.375, held_out_round=100,
        rollouts_shared=960, rollouts_received=2400, peer_groups_trained=300, reachability=Reachability.PUBLIC,
        uptime_s=3600.5, rounds_per_hour=30.0, rollouts_per_hour=240.0, phase="train",
    )
    add_b("beacon_valid_full", BEACON.seal(full, BOB), "accept", "every field set", **ctx)
    bounds = beacon(
        software="swarmnode/0.1.0 (test build)", model_id="modèle d'essai 模型 ✓", reward=0.0, held_out=1.0,
        reachability=Reachability.PRIVATE, uptime_s=MAX_UPTIME_S, rounds_per_hour=1e7, rollouts_per_hour=1e7, phase="_",
    )
    add_b(
        "beacon_valid_bounds", BEACON.seal(bounds, ALICE), "accept",
        "reward 0 written (explicit presence), held_out 1, uptime 100 years, rates 1e7, non-ASCII text with spaces",
        **ctx,
    )
    add_b(
        "beacon_valid_in_slot", sealed, "accept", f"read from its signer's census bucket of tier {TIER} under its subkey",
        slot=bucket_slot("census", window, TIER, bucket, ALICE.peer_id), **ctx,
    )
    add_b(
        "beacon_valid_in_next_window_slot", sealed, "accept", "read from its bucket's census key of the next window",
        slot=bucket_slot("census", window + 1, TIER, bucket, ALICE.peer_id), **ctx,
    )
    add_b(
        "beacon_valid_in_tier_0_slot", sealed, "accept", "read from the one census key of tier 0",
        slot=bucket_slot("census", window, 0, 0, ALICE.peer_id), **ctx,
    )
    add_b(
        "beacon_valid_in_top_tier_slot", sealed, "accept",
        f"read from its signer's bucket ({bucket_of(ALICE.peer_id, TIER_MAX)}) of tier {TIER_MAX}, the highest",
        slot=bucket_slot("census", window, TIER_MAX, bucket_of(ALICE.peer_id, TIER_MAX), ALICE.peer_id), **ctx,
    )
    add_b("beacon_valid_without_context", sealed, "accept", "no swarm given: only signature and schema checks")
    add_b(
        "beacon_valid_previous_window", sealed, "accept", "read one window later: still shown",
        swarm=SWARM, now=T0 + WINDOW_S,
    )
    add_b("beacon_too_large", bytes(MAX_BEACON_BYTES + 1), "too_large", "one byte over MAX_BEACON_BYTES", **ctx)
    add_b("beacon_malformed_truncated", sealed[:-1], "malformed", "last signature byte missing", **ctx)
    add_b(
        "beacon_malformed_unknown_field", sealed + unknown_field, "malformed", "an unknown field after the signature",
        **ctx,
    )
    add_b(
        "beacon_malformed_unknown_payload_field",
        presence_frame(ALICE, beacon_payload(beacon()) + unknown_payload_field, domain=BEACON_DOMAIN_TAG),
        "malformed",
        "validly signed Beacon payload with an unknown field 18",
        **ctx,
    )
    add_b(
        "beacon_malformed_default_written",
        presence_frame(ALICE, default_written, domain=BEACON_DOMAIN_TAG),
        "malformed",
        "validly signed Beacon payload that writes rounds_per_hour +0.0 explicitly (no explicit presence)",
        **ctx,
    )
    add_b(
        "beacon_bad_version",
        presence_frame(ALICE, beacon_payload(beacon()), version=2, domain=BEACON_DOMAIN_TAG),
        "bad_version",
        "validly signed as envelope version 2",
        **ctx,
    )
    add_b(
        "beacon_bad_signature_batch_tag",
        presence_frame(ALICE, beacon_payload(beacon()), domain=BATCH_DOMAIN_TAG),
        "bad_signature",
        "a Beacon payload signed under the batch domain tag",
        **ctx,
    )
    add_b(
        "beacon_bad_signature_presence_tag",
        presence_frame(ALICE, beacon_payload(beacon())),
        "bad_signature",
        "a Beacon payload signed under the presence domain tag",
        **ctx,
    )
    add_b(
        "beacon_presence_frame", presence_minimal, "bad_signature",
        "a valid presence frame (presence_valid_minimal) read as a beacon", **ctx,
    )
    add_b(
        "beacon_batch_frame", valid_batch, "bad_signature", "a valid batch frame (valid_minimal) read as a beacon",
        **ctx,
    )
    add_b(
        "beacon_key_mismatch_subkey", sealed, "key_mismatch", "stored under Bob's subkey of Alice's bucket",
        slot=bucket_slot("census", window, TIER, bucket, BOB.peer_id), **ctx,
    )
    add_b(
        "beacon_key_mismatch_bucket", sealed, "key_mismatch",
        f"copied into another census bucket ({(bucket + 1) % 2**TIER}) of its tier ({TIER})",
        slot=bucket_slot("census", window, TIER, (bucket + 1) % 2**TIER, ALICE.peer_id), **ctx,
    )
    wrong_tier, lower_bucket = other_tiers_bucket(ALICE.peer_id)
    add_b(
        "beacon_key_mismatch_other_tiers_bucket", sealed, "key_mismatch",
        f"read from tier {wrong_tier}'s bucket {lower_bucket}: its bucket of tier {wrong_tier - 1}, not of tier "
        f"{wrong_tier} ({bucket_of(ALICE.peer_id, wrong_tier)})",
        slot=bucket_slot("census", window, wrong_tier, lower_bucket, ALICE.peer_id), **ctx,
    )
    for name, slot_window, note in [
        ("beacon_key_mismatch_window_before", window - 1, "read from its bucket's census key of the previous window"),
        ("beacon_key_mismatch_window_after", window + 2, "read from its bucket's census key two windows on"),
    ]:
        add_b(name, sealed, "key_mismatch", note, slot=bucket_slot("census", slot_window, TIER, bucket, ALICE.peer_id), **ctx)
    reachability_7 = presence_frame(
        ALICE, unknown_reachability.SerializeToString(deterministic=True), domain=BEACON_DOMAIN_TAG
    )
    for name, value, expect, note in [
        ("beacon_limit_exceeded_swarm_id", beacon(swarm_id="s" * 65), "limit_exceeded", "swarm_id of 65 bytes"),
        ("beacon_limit_exceeded_software", beacon(software="x" * 65), "limit_exceeded", "software of 65 bytes"),
        ("beacon_limit_exceeded_model_id", beacon(model_id="é" * 101), "limit_exceeded", "model_id of 202 bytes"),
        ("beacon_limit_exceeded_phase", beacon(phase="a" * 17), "limit_exceeded", "phase of 17 bytes"),
        (
            "beacon_bad_value_escape", beacon(model_id="\x1b[2J\x1b[31mswarmnode/seed"), "bad_value",
            "model_id holds an escape sequence (ESC [2J: clear the screen)",
        ),
        (
            "beacon_bad_value_bidi", beacon(software="swarmnode/0.1.0\u202e"), "bad_value",
            "software holds U+202E RIGHT-TO-LEFT OVERRIDE (in U+2028-202F)",
        ),
        (
            "beacon_bad_value_nbsp", beacon(model_id="swarmnode\u00a0seed"), "bad_value",
            "model_id holds U+00A0 NO-BREAK SPACE (in U+007F-00A0)",
        ),
        ("beacon_bad_value_phase", beacon(phase="Train"), "bad_value", "phase with an uppercase letter"),
        ("beacon_bad_value_reward", beacon(reward=1.5), "bad_value", "reward 1.5"),
        ("beacon_bad_value_nan_reward", beacon(reward=float("nan")), "bad_value", "reward is NaN"),
        ("beacon_bad_value_uptime", beacon(uptime_s=-1.0), "bad_value", "uptime_s -1"),
        ("beacon_bad_value_rate", beacon(rollouts_per_hour=2e7), "bad_value", "rollouts_per_hour 2e7"),
        ("beacon_bad_value_reachability", reachability_7, "bad_value", "reachability 7: none of the three values"),
        (
            "beacon_bad_value_swarm_id", beacon(swarm_id="Vectors"), "bad_value",
            "swarm_id with an uppercase letter: bad_value, before the swarm is compared",
        ),
        ("beacon_bad_value_window", beacon(window=5), "bad_value", "window disagrees with timestamp"),
        ("beacon_wrong_swarm", beacon(swarm_id="elsewhere"), "wrong_swarm", "another swarm's beacon"),
    ]:
        add_b(name, value if isinstance(value, bytes) else BEACON.seal(value, ALICE), expect, note, **ctx)
    add_b("beacon_stale", sealed, "stale", "read two windows later", swarm=SWARM, now=T0 + 2 * WINDOW_S)
    add_b("beacon_future", sealed, "future", "signed 60 s ahead of the receiver's clock", swarm=SWARM, now=T0 - 60)
    # A beacon never passes as a batch or a presence (another domain tag).
    add("beacon_as_batch", sealed, "bad_signature", "a valid beacon frame read as a batch", **ctx)
    add("beacon_as_presence", sealed, "bad_signature", "a valid beacon frame read as a presence", "presence", **ctx)


def add_epoch_vectors(add) -> None:
    """Epochs of EPOCH windows (PROTOCOL.md §4): directory and census keys named by the epoch's first window,
    presence entries and beacons live in their epoch and the next; batches as before. Appended after the beacon
    vectors so those stay as they were. Most frames are signed in the epoch's third window."""
    first = int(T0 // WINDOW_S)  # the epoch's first window
    signed_at = T0 + 2 * WINDOW_S  # its third window
    window = first + 2
    epochs = {"swarm": SWARM, "epoch_windows": EPOCH}
    ctx = {**epochs, "now": signed_at + 10.0}
    later = {**epochs, "now": T0 + 7 * WINDOW_S}  # the last window of the next epoch
    two_on = {**epochs, "now": T0 + 8 * WINDOW_S}  # the first window of the epoch after the next

    mid_batch = frame(ALICE, batch(window=window, timestamp=signed_at))
    add("stale_in_epochs", frame(ALICE, batch()), "stale",
        f"read two windows later with epochs of {EPOCH} windows: a batch's freshness ignores epochs",
        **{**epochs, "now": T0 + 2 * WINDOW_S})
    add("key_mismatch_epoch_window", mid_batch, "key_mismatch",
        f"a batch of window {window} read from its shard's key of its epoch's first window ({first}): a batch's key "
        "names its own window", slot=f"{first}/{shard_of(ALICE.peer_id, NUM_SHARDS)}/{ALICE.peer_id}", **ctx)

    bucket = bucket_of(ALICE.peer_id, TIER)
    placements = {
        "presence": ("directory", "still live", [
            ("valid_in_slot", first, "accept", "read from its bucket's key of its epoch (its first window)"),
            ("key_mismatch_own_window", window, "key_mismatch",
             "read from its bucket's key of its own window, not its epoch's first"),
            ("key_mismatch_next_epoch", first + EPOCH, "key_mismatch", "read from its bucket's key of the next epoch"),
            ("key_mismatch_previous_epoch", first - EPOCH, "key_mismatch",
             "read from its bucket's key of the previous epoch"),
        ]),
        "beacon": ("census", "still shown", [
            ("valid_in_slot", first, "accept", "read from its bucket's census key of its epoch"),
            ("valid_in_next_epoch_slot", first + EPOCH, "accept", "read from its bucket's census key of the next epoch"),
            ("key_mismatch_own_window", window, "key_mismatch",
             "read from its bucket's census key of its own window, not its epoch's first"),
            ("key_mismatch_next_window", window + 1, "key_mismatch",
             "read from its bucket's census key of the next window, not the next epoch's first"),
            ("key_mismatch_epoch_after", first + 2 * EPOCH, "key_mismatch",
             "read from its bucket's census key of the epoch after the next"),
            ("key_mismatch_previous_epoch", first - EPOCH, "key_mismatch",
             "read from its bucket's census key of the previous epoch"),
        ]),
    }
    for kind, (seal, value) in {"presence": (PRESENCE, presence), "beacon": (BEACON, beacon)}.items():
        key_kind, live, cases = placements[kind]
        mid = seal.seal(value(window=window, timestamp=signed_at), ALICE)
        for name, key_window, expect, note in cases:
            add(f"{kind}_epoch_{name}", mid, expect, f"signed in window {window}, its epoch's third: {note}", kind,
                slot=bucket_slot(key_kind, key_window, TIER, bucket, ALICE.peer_id), **ctx)
        add(f"{kind}_epoch_live_previous_epoch", seal.seal(value(), ALICE), "accept",
            f"signed in its epoch's first window, read 7 windows later, in the next epoch's last: {live}", kind, **later)
        add(f"{kind}_epoch_stale", seal.seal(value(window=first + 3, timestamp=T0 + 3 * WINDOW_S), ALICE),
            "stale", "signed in its epoch's last window, read 5 windows later, in the epoch after the next", kind,
            **two_on)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "protocol" / "vectors")
