"""The receive path under generated hostile input: never a crash, never an invalid frame accepted.

Each generator of swarmnode/lab/fuzz_envelope.py runs a bounded number of hypothesis-chosen seeds through
`open_frame` and the DHT record validator; an independent implementation of PROTOCOL.md
(swarmnode/lab/protocol_oracle.py) is the judge of what should have been accepted, and with which code.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmnode.lab import fuzz_envelope as fuzz
from swarmnode.lab.protocol_oracle import context_of, judge_beacon, judge_frame, judge_presence
from swarmnode.wire.batch import BATCH
from swarmnode.wire.receive import open_frame
from swarmnode.wire.rejection import Reason, Rejected

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "protocol" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
# Replay needs receiver state: the oracle judges frames alone.
STATELESS = [case for case in MANIFEST["vectors"] if case["expect"] != "replay"]
SUITE = {
    (family["family"], family["config_hash"]): (family["config"], family["size"])
    for family in MANIFEST["suite"]["families"]
}
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@pytest.mark.parametrize("case", STATELESS, ids=[case["name"] for case in STATELESS])
def test_the_independent_oracle_gives_every_committed_vector_its_expected_result(case):
    """PROTOCOL.md promises that an implementation written from its text alone agrees with the vectors."""
    context = context_of(MANIFEST["rules"], case, suite=SUITE)  # its slot: a shard's, or a directory or census bucket's
    judge = {"presence": judge_presence, "beacon": judge_beacon}.get(case.get("kind"), judge_frame)
    assert judge((VECTORS / case["frames"][-1]).read_bytes(), context) == case["expect"]


@pytest.mark.parametrize("kind", list(fuzz.GENERATORS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS)
def test_generated_frames_and_records_are_judged_exactly_as_the_oracle_judges_them(kind, seed):
    rng = random.Random(seed)
    frames, records = defaultdict(fuzz.Tally), defaultdict(fuzz.Tally)
    fuzz.judge_case(fuzz.GENERATORS[kind][1](rng), rng, frames, records)
    for tally in [*frames.values(), *records.values()]:
        assert (tally.crashes, tally.accepted_invalid, tally.rejected_valid, tally.reason_mismatch) == (0, 0, 0, 0), (
            tally.examples
        )


@pytest.mark.parametrize("depth", [101, 10_000, 100_000])
def test_deeply_nested_unknown_groups_are_malformed_not_a_recursion_error(depth):
    valid = fuzz.valid_case(random.Random(depth)).frame
    nested = fuzz.tag(fuzz.UNKNOWN_FIELD, 3) * depth + fuzz.tag(fuzz.UNKNOWN_FIELD, 4) * depth
    for frame in (valid + nested, nested):
        with pytest.raises(Rejected) as info:
            open_frame(frame, BATCH, fuzz.RULES, now=fuzz.NOW)
        assert info.value.reason is Reason.MALFORMED


@pytest.mark.parametrize("claimed", fuzz.HUGE_LENGTHS)
def test_a_length_prefix_claiming_more_than_follows_is_malformed(claimed):
    frame = fuzz.tag(3, 2) + fuzz.varint(claimed) + b"\x00" * 16
    with pytest.raises(Rejected) as info:
        open_frame(frame, BATCH, fuzz.RULES, now=fuzz.NOW)
    assert info.value.reason is Reason.MALFORMED


def test_a_valid_signature_over_a_payload_with_an_unknown_field_is_still_malformed():
    payload = fuzz.payload_of(fuzz.valid_batch(random.Random(1))) + fuzz.tag(fuzz.UNKNOWN_FIELD, 0) + b"\x01"
    frame, _ = fuzz.signed(random.Random(1), payload)
    assert judge_frame(frame, fuzz.ORACLE_CONTEXT) == "malformed"
    with pytest.raises(Rejected) as info:
        open_frame(frame, BATCH, fuzz.RULES, now=fuzz.NOW)
    assert info.value.reason is Reason.MALFORMED


def test_the_fuzz_script_reports_no_crash_and_no_accepted_invalid_frame(tmp_path):
    out = tmp_path / "fuzz.json"
    result = subprocess.run(
        [sys.executable, "-m", "swarmnode.lab.fuzz_envelope", "--frames", "400", "--seed", "7", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["frames"] == 400 and report["totals"]["crashes"] == 0 == report["totals"]["accepted_invalid"]
    assert report["totals"]["accepted"] == report["totals"]["oracle_accepted"] > 0
    assert report["record_totals"]["crashes"] == 0 == report["record_totals"]["accepted_invalid"]
    assert set(report["by_generator"]) >= {"random", "truncated", "bit_flip", "length_bomb", "field_mutated"}
    assert {"rss_start_mb", "peak_growth_mb"} <= set(report["memory"]) and "p99" in report["totals"]["reject_us"]
