"""Write protocol/vectors/: frames for every rejection code plus valid ones, and manifest.json.

Deterministic (fixed keys, timestamps and Ed25519's deterministic signatures), so re-running it
reproduces the committed files byte for byte; tests/test_vectors.py checks that.
Usage: python scripts/make_vectors.py [OUT_DIR]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from swarmnode.envelope import MAX_ENVELOPE_BYTES, MAX_INDEX, PROTOCOL_VERSION, Envelope, encode_batch, shard_of
from swarmnode.identity import Identity
from swarmnode.proto import swarmnode_pb2 as pb
from swarmnode.rollout import Completion, Rollout, RolloutBatch, TaskRef

SWARM = "vectors"
WINDOW_S = 30.0
NUM_SHARDS = 16
T0 = 1_800_000_015.0  # inside window 60_000_000
NOW = T0 + 10.0
ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
REF = TaskRef("basic_arithmetic", "00112233445566aa", 7, 42)


def batch(**changes) -> RolloutBatch:
    base = RolloutBatch(
        swarm_id=SWARM,
        window=int(T0 // WINDOW_S),
        sequence=1,
        timestamp=T0,
        model_id="swarmnode/seed",
        suite_version="reasoning-gym-0.1.25+000000000000",
        rollouts=(Rollout(REF, (Completion("<answer>4</answer>"), Completion("<answer>5</answer>"))),),
    )
    return dataclasses.replace(base, **changes)


def frame(identity: Identity, value: RolloutBatch, version: int = PROTOCOL_VERSION) -> bytes:
    return Envelope.sign(identity, encode_batch(value), version).encode()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    valid = frame(ALICE, batch())
    full = batch(
        sequence=9,
        rollouts=tuple(
            Rollout(
                TaskRef(family, "0123456789abcdef", 1000 + i, i),
                tuple(Completion(f"step {j} <answer>{j}</answer>", j / 8, (-0.5, -1.25, -0.0)) for j in range(8)),
            )
            for i, family in enumerate(["basic_arithmetic", "chain_sum", "base_conversion"])
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

    def add(name: str, data: bytes | list[bytes], expect: str, note: str, **context) -> None:
        frames = data if isinstance(data, list) else [data]
        files = []
        for i, content in enumerate(frames):
            filename = f"{name}.bin" if len(frames) == 1 else f"{name}.{i}.bin"
            (out / filename).write_bytes(content)
            files.append(filename)
        vectors.append({"name": name, "frames": files, "expect": expect, "note": note, **context})

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
        Envelope.sign(ALICE, unknown_in_payload.SerializeToString(deterministic=True)).encode(),
        "malformed",
        "validly signed payload with an unknown field inside a completion",
        **ctx,
    )
    add("bad_version", frame(ALICE, batch(), version=2), "bad_version", "validly signed as version 2", **ctx)
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

    manifest = {
        "protocol_version": PROTOCOL_VERSION,
        "rules": {"window_s": WINDOW_S, "num_shards": NUM_SHARDS, "max_age_windows": 1, "clock_skew_s": 5.0},
        "keys": {"alice": ALICE.peer_id, "bob": BOB.peer_id},
        "vectors": vectors,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "protocol" / "vectors")
