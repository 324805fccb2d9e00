"""Fuzz the receive path: generated frames through `open_frame` and the DHT record validator.

Every frame is judged twice, by the implementation and by an independent oracle (protocol_oracle.py);
the implementation accepting what the oracle refuses is an *accepted invalid* frame, any exception other
than Rejected is a *crash*. Generators: random bytes, truncations, bit flips, length bombs, deeply nested
unknown fields, valid-but-mutated batches re-signed with a valid key (field level and wire level), and
valid batches. Reports per generator, rejection-time percentiles and memory growth; writes JSON.

Usage: python -m swarmnode.lab.fuzz_envelope [--frames 100000] [--seed 0] [--max-seconds 900] [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import statistics
import struct
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import msgpack
import psutil
from hivemind.dht.validation import DHTRecord
from rich.console import Console
from rich.table import Table

from swarmnode.lab.protocol_oracle import ACCEPT, Context, judge_frame, judge_record, read_varint
from swarmnode.net.validator import check_record, key_id
from swarmnode.wire.batch import BATCH, BATCH_DOMAIN_TAG, MAX_COMPLETION_BYTES, MAX_ENVELOPE_BYTES, MAX_TOKEN_LOGPROBS
from swarmnode.wire.envelope import Envelope
from swarmnode.wire.identity import Identity
from swarmnode.wire.keys import batch_key
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Rejected
from swarmnode.wire.rules import SwarmRules, shard_of

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the lab runs from one
RULES = SwarmRules("fuzz", window_s=30.0, record_ttl_s=60.0, num_shards=16, clock_skew_s=5.0, max_age_windows=1)
NOW = 1_800_000_020.0
ORACLE_CONTEXT = Context(swarm_id=RULES.swarm_id, now=NOW)
KEYS = [Identity.from_seed(bytes([index]) * 32) for index in range(1, 5)]
ALPHABET = "0123456789 abcxyz+-*/=<>_.\n\t" + "<answer>" + "</answer>" + "éß€😀\u200b\x00"
UNKNOWN_FIELD = 15  # no message of protocol version 1 has a field 15
SAMPLE_EVERY = 500
EXAMPLES_KEPT = 5


@dataclasses.dataclass
class Case:
    """One generated frame, and who (if anyone) should have signed it: the record is placed for that key."""

    kind: str
    frame: bytes
    signer: Identity
    timestamp: float


# ---------------------------------------------------------------------------------------------------------
# Valid material


def random_text(rng: random.Random, max_chars: int = 120) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_chars)))


def valid_batch(rng: random.Random) -> pb.RolloutBatch:
    """A batch that passes every check at time NOW (in this window or the previous one)."""
    timestamp = NOW - rng.uniform(0.0, 40.0)
    batch = pb.RolloutBatch(
        swarm_id=RULES.swarm_id,
        window=RULES.window_of(timestamp),
        sequence=rng.getrandbits(rng.choice([1, 8, 64])),
        timestamp=timestamp,
        model_id=rng.choice(["swarmnode/seed", "Qwen/Qwen2.5-0.5B-Instruct", "m"]),
        suite_version=rng.choice(["", "reasoning-gym-0.1.25+abc"]),
    )
    for _ in range(rng.randint(1, 6)):
        rollout = batch.rollouts.add()
        rollout.task.family = rng.choice(["chain_sum", "gcd", "products", "no_such_family_but_well_formed"])
        rollout.task.config_hash = f"{rng.getrandbits(64):016x}"
        rollout.task.seed = rng.getrandbits(rng.choice([0, 8, 63]))
        rollout.task.index = rng.getrandbits(rng.choice([0, 10, 31]))
        for _ in range(rng.randint(1, 8)):
            completion = rollout.completions.add(text=random_text(rng))
            if rng.random() < 0.6:
                completion.reward = rng.choice([0.0, 0.25, 1.0, rng.random()])
            if rng.random() < 0.3:
                completion.token_logprobs.extend(-rng.random() * 20 for _ in range(rng.randint(0, 30)))
    return batch


def payload_of(batch: pb.RolloutBatch) -> bytes:
    return batch.SerializeToString(deterministic=True)


def signed(rng: random.Random, payload: bytes, version: int = 1) -> tuple[bytes, Identity]:
    identity = rng.choice(KEYS)
    return Envelope.sign(identity, payload, BATCH_DOMAIN_TAG, version).encode(), identity


def valid_case(rng: random.Random, kind: str = "valid") -> Case:
    batch = valid_batch(rng)
    frame, identity = signed(rng, payload_of(batch))
    return Case(kind, frame, identity, batch.timestamp)


def large_valid_case(rng: random.Random) -> Case:
    """Close to the limits: up to 64 rollouts of up to 16 KiB completions, near MAX_ENVELOPE_BYTES."""
    batch = valid_batch(rng)
    del batch.rollouts[:]
    rollouts = rng.choice([8, 32, 63, 64])
    text = "x" * (MAX_ENVELOPE_BYTES // rollouts - rng.randint(120, 400))
    for index in range(rollouts):
        rollout = batch.rollouts.add()
        rollout.task.family, rollout.task.config_hash, rollout.task.index = "chain_sum", "0" * 16, index
        rollout.completions.add(text=text[:MAX_COMPLETION_BYTES])
    frame, identity = signed(rng, payload_of(batch))
    return Case("large_valid", frame, identity, batch.timestamp)


# ---------------------------------------------------------------------------------------------------------
# Hostile generators


def random_bytes(rng: random.Random) -> Case:
    size = int(2 ** rng.uniform(0, 17)) if rng.random() > 0.002 else rng.randint(MAX_ENVELOPE_BYTES, 2 * MAX_ENVELOPE_BYTES)
    return Case("random", rng.randbytes(size), rng.choice(KEYS), NOW)


def truncated(rng: random.Random) -> Case:
    case = valid_case(rng, "truncated")
    case.frame = case.frame[: rng.randrange(len(case.frame))]
    return case


def bit_flipped(rng: random.Random) -> Case:
    case = valid_case(rng, "bit_flip")
    frame = bytearray(case.frame)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
    case.frame = bytes(frame)
    return case


def varint(value: int, padding: int = 0) -> bytes:
    """Protobuf varint; `padding` > 0 writes it that many bytes longer than needed (not canonical)."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    if padding:
        return bytes(out) + bytes([value | 0x80]) + b"\x80" * (padding - 1) + b"\x00"
    return bytes(out) + bytes([value])


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


HUGE_LENGTHS = (MAX_ENVELOPE_BYTES + 1, 2**31 - 1, 2**32, 2**62, 2**64 - 1)


def length_bomb(rng: random.Random) -> Case:
    """Length prefixes that claim far more bytes than follow, at every nesting level, and over-long varints."""
    case = valid_case(rng, "length_bomb")
    envelope = Envelope.decode(case.frame)
    huge = rng.choice(HUGE_LENGTHS)
    choice = rng.randrange(6)
    if choice == 0:  # the envelope's payload field
        case.frame = tag(1, 0) + varint(1) + tag(2, 2) + varint(32) + envelope.signer + tag(3, 2) + varint(huge) + envelope.payload[:64]
    elif choice == 1:  # a rollout inside a validly signed payload
        payload = tag(1, 2) + varint(4) + b"fuzz" + tag(7, 2) + varint(huge) + b"\x0a\x00"
        case.frame, case.signer = signed(rng, payload)
    elif choice == 2:  # packed log-probs claiming a huge count
        payload = tag(7, 2) + varint(8) + tag(2, 2) + varint(6) + tag(3, 2) + varint(huge) + b"\x00" * 4
        case.frame, case.signer = signed(rng, payload)
    elif choice == 3:  # a varint longer than 10 bytes
        case.frame = tag(1, 0) + b"\xff" * rng.randint(10, 64) + b"\x01"
    elif choice == 4:  # just over the size limit
        case.frame = case.frame + b"\x00" * (MAX_ENVELOPE_BYTES + 1 - len(case.frame))
    else:  # an unknown length-delimited field claiming a huge length
        case.frame = case.frame + tag(UNKNOWN_FIELD, 2) + varint(huge)
    return case


def deeply_nested(rng: random.Random) -> Case:
    """Unknown groups or messages nested up to 100,000 deep: after the frame, after a signed payload's
    fields, or as the whole signed payload."""
    depth = rng.choice([64, 101, 1_000, 10_000, 100_000])
    if rng.random() < 0.5:
        blob = tag(UNKNOWN_FIELD, 3) * depth + tag(UNKNOWN_FIELD, 4) * depth
    else:
        blob = b""
        for _ in range(min(depth, 5_000)):
            blob = tag(UNKNOWN_FIELD, 2) + varint(len(blob)) + blob
    case = valid_case(rng, "nested")
    placement = rng.randrange(3)
    if placement == 0:
        case.frame = case.frame + blob
    else:
        payload = payload_of(valid_batch(rng)) + blob if placement == 1 else blob
        case.frame, case.signer = signed(rng, payload)
    return case


def _field_mutations(rng: random.Random) -> list[Callable[[pb.RolloutBatch], None]]:
    """Edits of one field each, mostly to edge and out-of-range values (some of them still valid)."""

    def some_rollout(batch: pb.RolloutBatch) -> pb.Rollout:
        return rng.choice(batch.rollouts) if batch.rollouts else batch.rollouts.add()

    def some_completion(batch: pb.RolloutBatch) -> pb.Completion:
        rollout = some_rollout(batch)
        return rng.choice(rollout.completions) if rollout.completions else rollout.completions.add(text="x")

    def set_timestamp(batch: pb.RolloutBatch) -> None:
        batch.timestamp = rng.choice(
            [math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 5e-324, 1e308, NOW + 6, NOW + 1000, NOW - 61, NOW - 1e6]
        )
        if rng.random() < 0.7 and math.isfinite(batch.timestamp) and 0 <= batch.timestamp < 1e19:
            batch.window = RULES.window_of(batch.timestamp)  # reach the checks behind the window check

    def set_text(batch: pb.RolloutBatch) -> None:
        limit = MAX_COMPLETION_BYTES
        some_completion(batch).text = rng.choice(["", "é" * (limit // 2), "é" * (limit // 2) + "x", "x" * limit + "x"])

    def many_completions(batch: pb.RolloutBatch) -> None:
        rollout = some_rollout(batch)
        del rollout.completions[:]
        rollout.completions.extend(pb.Completion(text=str(i)) for i in range(rng.choice([0, 1, 32, 33, 100])))

    def many_rollouts(batch: pb.RolloutBatch) -> None:
        template = some_rollout(batch)
        del batch.rollouts[:]
        batch.rollouts.extend([template] * rng.choice([0, 64, 65, 500]))

    def set_logprobs(batch: pb.RolloutBatch) -> None:
        completion = some_completion(batch)
        del completion.token_logprobs[:]
        count = rng.choice([1, MAX_TOKEN_LOGPROBS, MAX_TOKEN_LOGPROBS + 1])
        value = rng.choice([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-9, -1000.0, -1000.1, -1.0])
        completion.token_logprobs.extend([value] * count)

    def set_task(batch: pb.RolloutBatch) -> None:
        task = some_rollout(batch).task
        what = rng.randrange(5)
        if what == 0:
            task.family = rng.choice(["", "Chain_sum", "chain-sum", "a" * 64, "a" * 65, "ünï", "gcd"])
        elif what == 1:
            task.config_hash = rng.choice(["", "0" * 15, "0" * 17, "ABCDEF0123456789", "g" * 16, "0123456789abcdef"])
        elif what == 2:
            task.seed = rng.choice([0, 2**63 - 1, 2**63, 2**64 - 1])
        elif what == 3:
            task.index = rng.choice([0, 2**31 - 1, 2**31, 2**63, 2**64 - 1])  # 2**64 - 1 is -1 as int64
        else:
            task.Clear()

    return [
        lambda b: setattr(b, "swarm_id", rng.choice(["", "Fuzz", "other", "f" * 64, "f" * 65, "fü", ".fuzz", "fuzz"])),
        lambda b: setattr(b, "window", RULES.window_of(NOW) + rng.choice([-2, 1, -RULES.window_of(NOW), 2**63])),
        lambda b: setattr(b, "sequence", rng.getrandbits(64)),
        set_timestamp,
        lambda b: setattr(b, "model_id", rng.choice(["", "m" * 200, "m" * 201, "模型"])),
        lambda b: setattr(b, "suite_version", rng.choice(["", "v" * 64, "v" * 65])),
        many_rollouts,
        set_task,
        many_completions,
        set_text,
        lambda b: setattr(some_completion(b), "reward", rng.choice(
            [math.nan, math.inf, -math.inf, -0.0, -1e-9, 0.0, 1.0, 1.0000001, 2.0, 0.5])),
        lambda b: some_completion(b).ClearField("reward"),
        set_logprobs,
    ]


def field_mutated(rng: random.Random) -> Case:
    """A valid batch with 1-3 fields edited, then signed with a valid key: a valid signature over content
    that may break any schema rule (or still be valid)."""
    batch = valid_batch(rng)
    mutations = _field_mutations(rng)
    for _ in range(rng.choice([1, 1, 2, 3])):
        rng.choice(mutations)(batch)
    version = 1 if rng.random() < 0.9 else rng.choice([0, 2, 2**32 - 1])
    frame, identity = signed(rng, payload_of(batch), version)
    if rng.random() < 0.05:  # someone else's key in the signer field
        envelope = Envelope.decode(frame)
        frame = dataclasses.replace(envelope, signer=rng.choice(KEYS).public_key).encode()
    return Case("field_mutated", frame, identity, batch.timestamp)


def fields_of(data: bytes) -> list[bytes]:
    """The raw top-level fields (tag and value) of a canonical message."""
    fields, pos = [], 0
    while pos < len(data):
        start = pos
        key, pos = read_varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            length, pos = read_varint(data, pos)
            pos += length
        fields.append(data[start:pos])
    return fields


def wire_mutated(rng: random.Random) -> Case:
    """A valid payload edited at the wire level (so it stays parseable but is not canonical), re-signed."""
    batch = valid_batch(rng)
    fields = fields_of(payload_of(batch))
    position = rng.randrange(len(fields) + 1)
    what = rng.randrange(8)
    if what == 0:  # an unknown field of any wire type
        wire = rng.choice([0, 1, 2, 5])
        body = {0: varint(rng.getrandbits(20)), 1: bytes(8), 2: varint(3) + b"abc", 5: bytes(4)}[wire]
        fields.insert(position, tag(rng.choice([UNKNOWN_FIELD, 8, 99, 2**29 - 1]), wire) + body)
    elif what == 1 and fields:  # a field twice
        fields.insert(position, rng.choice(fields))
    elif what == 2 and len(fields) > 1:  # two fields swapped
        i, j = rng.sample(range(len(fields)), 2)
        fields[i], fields[j] = fields[j], fields[i]
    elif what == 3:  # a default value written out
        fields.insert(0, rng.choice([tag(2, 0) + b"\x00", tag(6, 2) + b"\x00", tag(4, 1) + bytes(8)]))
    elif what == 4:  # a non-shortest varint for the window
        fields = [f for f in fields if f[:1] != tag(2, 0)]
        fields.insert(1 if fields[:1] and fields[0][:1] == tag(1, 2) else 0, tag(2, 0) + varint(batch.window, 1))
    elif what == 5:  # a scalar field with the wrong wire type
        fields.insert(0, tag(rng.choice([1, 2, 3, 4, 7]), rng.choice([0, 1, 2, 5])) + b"\x00" * 8)
    elif what == 6:  # log-probs unpacked (each float a field of its own)
        completion = batch.rollouts[0].completions[0]
        completion.ClearField("token_logprobs")
        completion.MergeFromString(b"".join(tag(3, 5) + struct.pack("<f", -0.5) for _ in range(3)))
        fields = fields_of(payload_of(batch))
    else:  # invalid UTF-8 in a string
        fields.insert(0, tag(1, 2) + varint(3) + rng.choice([b"\xed\xa0\x80", b"\xc0\x80x", b"\xff\xfe\xfd"]))
    frame, identity = signed(rng, b"".join(fields))
    return Case("wire_mutated", frame, identity, batch.timestamp)


GENERATORS: dict[str, tuple[float, Callable[[random.Random], Case]]] = {
    "random": (0.14, random_bytes),
    "truncated": (0.12, truncated),
    "bit_flip": (0.14, bit_flipped),
    "length_bomb": (0.10, length_bomb),
    "nested": (0.05, deeply_nested),
    "field_mutated": (0.22, field_mutated),
    "wire_mutated": (0.12, wire_mutated),
    "valid": (0.10, valid_case),
    "large_valid": (0.01, large_valid_case),
}


# ---------------------------------------------------------------------------------------------------------
# Records (what a DHT peer is asked to store)


def record_for(case: Case, rng: random.Random) -> tuple[str, DHTRecord]:
    """The case's frame placed where its intended signer would put it, then (sometimes) one record field
    edited: key, subkey, expiration or the msgpack header around the frame."""
    peer = case.signer.peer_id
    window = RULES.window_of(case.timestamp) if math.isfinite(case.timestamp) else 0
    key = key_id(batch_key(RULES.swarm_id, window, shard_of(peer, RULES.num_shards)))
    subkey = msgpack.packb(peer)
    value = msgpack.packb(case.frame)
    expiration = RULES.expiration_of(case.timestamp)
    if rng.random() < 0.6:
        return "placed", DHTRecord(key, subkey, value, expiration)
    what = rng.randrange(4)
    if what == 0:
        key = rng.choice([
            key_id(batch_key(RULES.swarm_id, window + 1, shard_of(peer, RULES.num_shards))),
            key_id(batch_key(RULES.swarm_id, window, (shard_of(peer, RULES.num_shards) + 1) % RULES.num_shards)),
            rng.randbytes(20), b"",
        ])
        return "key", DHTRecord(key, subkey, value, expiration)
    if what == 1:
        raw = peer.encode()
        subkey = rng.choice([
            msgpack.packb(rng.choice(KEYS).peer_id), b"\xda" + len(raw).to_bytes(2, "big") + raw, msgpack.packb(raw),
            subkey[:-1], subkey + b"x", b"\xa3\xff\xfe\xfd", b"", msgpack.packb(7),
        ])
        return "subkey", DHTRecord(key, subkey, value, expiration)
    if what == 2:
        expiration = rng.choice([math.nan, math.inf, -math.inf, expiration + 5e-4, expiration - 0.01, 0.0, NOW - 10])
        return "expiration", DHTRecord(key, subkey, value, expiration)
    frame = case.frame
    value = rng.choice([
        b"\xc6" + len(frame).to_bytes(4, "big") + frame,  # bin32 for a short frame: allowed
        b"\xc6\xff\xff\xff\xff" + frame[:64],  # claims 4 GiB
        b"\xc5" + ((len(frame) + 1) % 65_536).to_bytes(2, "big") + frame,  # bin16 header one byte too long
        value + b"\x00", value[:-1], msgpack.packb(frame.hex()), b"\xc4",
        b"\xc6" + (MAX_ENVELOPE_BYTES + 1).to_bytes(4, "big") + bytes(MAX_ENVELOPE_BYTES + 1),
    ])
    return "value", DHTRecord(key, subkey, value, expiration)


# ---------------------------------------------------------------------------------------------------------
# Running and judging


@dataclasses.dataclass
class Tally:
    """Outcomes of one generator (or one record mutation) under the implementation and the oracle."""

    cases: int = 0
    accepted: int = 0
    oracle_accepted: int = 0
    accepted_invalid: int = 0
    rejected_valid: int = 0
    reason_mismatch: int = 0
    crashes: int = 0
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    reject_ns: list[int] = dataclasses.field(default_factory=list)  # wall clock per rejection
    reject_cpu_ns: list[int] = dataclasses.field(default_factory=list)  # this thread's CPU time per rejection
    examples: list[dict] = dataclasses.field(default_factory=list)

    def add(self, verdict: str, oracle: str, elapsed_ns: tuple[int, int], sample: bytes) -> None:
        self.cases += 1
        self.reasons[verdict] += 1
        self.accepted += verdict == ACCEPT
        self.oracle_accepted += oracle == ACCEPT
        if verdict.startswith("crash:"):
            self.crashes += 1
        elif verdict == ACCEPT and oracle != ACCEPT:
            self.accepted_invalid += 1
        elif verdict != ACCEPT and oracle == ACCEPT:
            self.rejected_valid += 1
        elif verdict != oracle:
            self.reason_mismatch += 1
        if verdict != ACCEPT:
            self.reject_ns.append(elapsed_ns[0])
            self.reject_cpu_ns.append(elapsed_ns[1])
        if verdict != oracle and len(self.examples) < EXAMPLES_KEPT:
            self.examples.append({"implementation": verdict, "oracle": oracle, "bytes": len(sample),
                                  "head_hex": sample[:96].hex()})

    def summary(self) -> dict:
        timings = ("reject_ns", "reject_cpu_ns", "reasons")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in timings} | {
            "reasons": dict(self.reasons.most_common()), "reject_us": _percentiles_us(self.reject_ns),
            "reject_cpu_us": _percentiles_us(self.reject_cpu_ns),
        }


def _percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    if len(samples_ns) < 2:
        return {}
    cuts = statistics.quantiles(samples_ns, n=100, method="inclusive")
    return {"p50": cuts[49] / 1e3, "p99": cuts[98] / 1e3, "max": max(samples_ns) / 1e3}


def implementation_verdict(judge: Callable[[], object]) -> tuple[str, tuple[int, int]]:
    """The implementation's verdict, with the wall-clock and CPU time it took (the machine may be busy)."""
    started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
    try:
        judge()
        verdict = ACCEPT
    except Rejected as rejected:
        verdict = rejected.reason.value
    except Exception as error:  # anything else is exactly what the fuzzer looks for
        verdict = f"crash:{type(error).__name__}"
    return verdict, (time.perf_counter_ns() - started, time.thread_time_ns() - started_cpu)


def judge_case(case: Case, rng: random.Random, frames: dict[str, Tally], records: dict[str, Tally]) -> None:
    verdict, elapsed = implementation_verdict(lambda: open_frame(case.frame, BATCH, RULES, now=NOW))
    frames[case.kind].add(verdict, judge_frame(case.frame, ORACLE_CONTEXT), elapsed, case.frame)
    record_kind, record = record_for(case, rng)
    verdict, elapsed = implementation_verdict(lambda: check_record(record, RULES, NOW))
    oracle = judge_record(record.key, record.subkey, record.value, record.expiration_time, ORACLE_CONTEXT)
    records[record_kind].add(verdict, oracle, elapsed, record.value)


def generate(rng: random.Random) -> Case:
    kinds = list(GENERATORS)
    kind = rng.choices(kinds, weights=[GENERATORS[k][0] for k in kinds])[0]
    return GENERATORS[kind][1](rng)


def run(frames_wanted: int, seed: int, max_seconds: float, progress: Callable[[int], None] | None = None) -> dict:
    rng = random.Random(seed)
    process = psutil.Process()
    frames: dict[str, Tally] = defaultdict(Tally)
    records: dict[str, Tally] = defaultdict(Tally)
    for _ in range(200):  # warm-up: imports, caches, protobuf arenas; not counted
        judge_case(generate(rng), rng, defaultdict(Tally), defaultdict(Tally))
    rss_start = rss_peak = process.memory_info().rss
    maxrss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.monotonic()
    done = 0
    while done < frames_wanted and time.monotonic() - started < max_seconds:
        judge_case(generate(rng), rng, frames, records)
        done += 1
        if done % SAMPLE_EVERY == 0:
            rss_peak = max(rss_peak, process.memory_info().rss)
            if progress is not None and done % 10_000 == 0:
                progress(done)
    seconds = time.monotonic() - started
    rss_end = process.memory_info().rss
    total = Tally()
    for tally in frames.values():
        for name in ("cases", "accepted", "oracle_accepted", "accepted_invalid", "rejected_valid", "reason_mismatch",
                     "crashes"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        total.reject_ns += tally.reject_ns
        total.reject_cpu_ns += tally.reject_cpu_ns
    record_ns = [ns for tally in records.values() for ns in tally.reject_ns]
    record_cpu_ns = [ns for tally in records.values() for ns in tally.reject_cpu_ns]
    return {
        "frames": done, "seed": seed, "seconds": round(seconds, 1), "stopped_by_time": done < frames_wanted,
        "frames_per_s": round(done / seconds, 1),
        "totals": {k: v for k, v in total.summary().items() if k not in ("examples", "reasons")},
        "record_totals": {
            name: sum(getattr(t, name) for t in records.values())
            for name in ("cases", "accepted", "accepted_invalid", "rejected_valid", "reason_mismatch", "crashes")
        } | {"reject_us": _percentiles_us(record_ns), "reject_cpu_us": _percentiles_us(record_cpu_ns)},
        "by_generator": {kind: tally.summary() for kind, tally in sorted(frames.items())},
        "records_by_mutation": {kind: tally.summary() for kind, tally in sorted(records.items())},
        "memory": {
            "rss_start_mb": round(rss_start / 2**20, 1), "rss_peak_mb": round(rss_peak / 2**20, 1),
            "rss_end_mb": round(rss_end / 2**20, 1), "growth_mb": round((rss_end - rss_start) / 2**20, 1),
            "peak_growth_mb": round((rss_peak - rss_start) / 2**20, 1),
            "maxrss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - maxrss_start) / 2**20, 1),
        },
        "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)},
    }


def print_report(report: dict, console: Console) -> None:
    for title, rows in (("frames through open_frame", report["by_generator"]),
                        ("records through the DHT validator", report["records_by_mutation"])):
        table = Table(title=title)
        for column in ("generator", "cases", "accepted", "oracle accepted", "accepted invalid", "rejected valid",
                       "reason mismatch", "crashes", "reject p50 µs", "reject p99 µs", "reject max µs", "p99 CPU µs"):
            table.add_column(column, justify="right")
        for kind, row in rows.items():
            reject = row["reject_us"]
            table.add_row(
                kind, str(row["cases"]), str(row["accepted"]), str(row["oracle_accepted"]), str(row["accepted_invalid"]),
                str(row["rejected_valid"]), str(row["reason_mismatch"]), str(row["crashes"]),
                *(f"{reject[k]:.0f}" if reject else "—" for k in ("p50", "p99", "max")),
                f"{row['reject_cpu_us']['p99']:.0f}" if row["reject_cpu_us"] else "—",
            )
        console.print(table)
    totals, memory = report["totals"], report["memory"]
    console.print(
        f"{report['frames']} frames (+ as many records) in {report['seconds']} s ({report['frames_per_s']}/s, "
        f"load {report['machine']['load_1m']} on {report['machine']['cpus']} cores): "
        f"crashes {totals['crashes']} + {report['record_totals']['crashes']}, "
        f"accepted invalid {totals['accepted_invalid']} + {report['record_totals']['accepted_invalid']}, "
        f"rejection p99 wall/CPU {totals['reject_us'].get('p99', 0):.0f}/{totals['reject_cpu_us'].get('p99', 0):.0f} µs "
        f"(frames), {report['record_totals']['reject_us'].get('p99', 0):.0f}/"
        f"{report['record_totals']['reject_cpu_us'].get('p99', 0):.0f} µs (records); "
        f"RSS {memory['rss_start_mb']} -> {memory['rss_end_mb']} MB (peak +{memory['peak_growth_mb']} MB)",
        highlight=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop early (and say so) after this long")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    args = parser.parse_args()
    console = Console(width=160)
    report = run(args.frames, args.seed, args.max_seconds, lambda done: console.print(f"{done} frames", highlight=False))
    report["command"] = " ".join(["python", "-m", "swarmnode.lab.fuzz_envelope", *sys.argv[1:]])
    print_report(report, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    console.print(f"wrote {args.out}", highlight=False)
    failed = report["totals"]["crashes"] + report["totals"]["accepted_invalid"]
    failed += report["record_totals"]["crashes"] + report["record_totals"]["accepted_invalid"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
