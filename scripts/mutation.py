"""Mutation testing of the safety checks (cosmic-ray): every check a peer's bytes, a replica's storage, a
checkpoint or a reachability verdict depends on is mutated one operator at a time, in a copy of this tree, and
the tests that cover its module run against each mutant. A mutant no test fails is a check nothing guards.

cosmic-ray edits the copy's files on disk, so tests that start `swarmnode` or a helper in a subprocess run the
mutant too (PYTHONPATH points every process at the copy; no bytecode is cached). Mutants of what is not a
safety check (log text, a dataclass's repr, helpers for people) are skipped by naming the checked definitions;
a mutant that cannot change behaviour is listed in EQUIVALENT with the reason, and both stay under 5%.

Usage: python scripts/mutation.py [--modules wire/receive,net/storage] [--workers 2] [--sample N] [--out FILE]
       python scripts/mutation.py --list        (what would be mutated, and by which tests)
A full pass takes hours on 2 CPU cores (a mutant of learn/ costs about a minute: its tests load models), so
`--sample N` runs a seeded random N of each module's mutants and says so in the results; it is not part of
./scripts/test.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"
OUT_OF_SCOPE, ANNOTATION = "not a safety check", "an annotation"  # why a mutant is skipped, as the session records it


@dataclass(frozen=True)
class Target:
    """A module's safety checks: the definitions mutated (None: the whole module, constants included) and the
    test files that cover them, fastest and most telling first (each mutant stops at the first failure)."""

    definitions: tuple[str, ...] | None
    tests: tuple[str, ...]


WIRE_TESTS = ("tests/test_envelope.py", "tests/test_signature.py", "tests/test_record.py", "tests/test_presence.py",
              "tests/test_beacon.py", "tests/test_vectors.py")
TARGETS = {
    "wire/identity.py": Target(
        ("peer_id_bytes", "canonical_point", "small_order_point", "verify_signature", "from_libp2p_bytes",
         "load_identity", "save_identity"),
        ("tests/test_wire_limits.py", "tests/test_signature.py", "tests/test_identity.py", "tests/test_envelope.py"),
    ),
    "wire/envelope.py": Target(None, ("tests/test_wire_limits.py", *WIRE_TESTS)),
    "wire/rejection.py": Target(
        ("is_offence", "offender"), ("tests/test_receive_checks.py", "tests/test_envelope.py", "tests/test_gossip.py")
    ),
    "wire/rules.py": Target(
        ("shard_of", "window_of", "expiration_of", "check_swarm_and_window", "check_freshness"), WIRE_TESTS
    ),
    "wire/receive.py": Target(
        ("open_frame", "_open_content", "get", "put", "first_sighting"), ("tests/test_receive_checks.py", *WIRE_TESTS)
    ),
    "wire/batch.py": Target(None, ("tests/test_wire_limits.py", *WIRE_TESTS)),
    "wire/presence.py": Target(None, ("tests/test_wire_limits.py", "tests/test_presence.py", "tests/test_vectors.py")),
    "wire/beacon.py": Target(None, ("tests/test_wire_limits.py", "tests/test_beacon.py", "tests/test_vectors.py")),
    "wire/address.py": Target(
        ("canonical_host", "is_tcp_address", "tcp_address"),
        ("tests/test_wire_limits.py", "tests/test_presence.py", "tests/test_reachability.py", "tests/test_vectors.py"),
    ),
    "net/validator.py": Target(
        ("key_id", "unpack_bin", "unpack_str", "_unpack", "check_record", "kind_of", "validate"),
        ("tests/test_validator_limits.py", "tests/test_record.py", "tests/test_presence.py", "tests/test_beacon.py"),
    ),
    "net/storage.py": Target(
        ("store", "store_subkey", "_same_window", "_recount_if_due", "_compact"),
        ("tests/test_storage_limits.py", "tests/test_record.py", "tests/test_presence.py", "tests/test_beacon.py"),
    ),
    "net/reachability.py": Target(("verdict", "tcp_address", "probe_listener", "_handle"),
                                  ("tests/test_reachability_limits.py", "tests/test_reachability.py")),
    "net/peer.py": Target(("client_mode_for",), ("tests/test_reachability.py",)),
    "net/census.py": Target(("complete", "totals", "take_census"), ("tests/test_census_accounting.py", "tests/test_census.py")),
    "learn/intake.py": Target(None, ("tests/test_intake.py", "tests/test_evaluation.py")),
    "learn/checkpoint.py": Target(
        ("save", "checkpoints", "latest", "load", "remove_stale_staging", "_move_into_place", "_prune", "load_checkpoint",
         "_split_optimizer_state", "_read_optimizer_state", "_load_optimizer", "_load_trainable"),
        ("tests/test_checkpoint_limits.py", "tests/test_checkpoint.py"),
    ),
    "learn/sapo.py": Target(("_with_backoff",), ("tests/test_memory.py",)),
    "learn/interrupt.py": Target(("is_out_of_memory", "release_failed_attempt"), ("tests/test_memory.py",)),
}

# Mutants that cannot change what the code does, each with the reason: (module, operator, line before, line after).
_DIGEST_SIZE = ("the digest only names a frame in this node's own verified-frames memory and nothing else computes that "
                "key: 15 or 17 bytes of BLAKE2b tell frames apart as surely as 16")
_SMALL_INT = ("CPython keeps one object for each int from -5 to 256, and a length or a version is an int: compared with "
              "`is not` against 32, 64, 68 or 1 it is the same test as `!=`")
_NO_MAP_FIELDS = ("deterministic serialization only orders map entries, and no message of the wire protocol has a map "
                  "field: the bytes are the same either way")
_PREFIX_PLUS_64 = "len(_ED25519_PRIVATE_PREFIX) is 4, and 4 | 64 == 4 ^ 64 == 4 + 64 == 68"
_NO_RUN_YET = ("best_start is read only through `best_start < 0` when no run of zeros was found, and any negative "
               "start says so alike")
_UINT32_PORTS = ("DialBackRequest.ports is a repeated uint32: a port is an int >= 0 (a negative varint decodes as "
                 "4294967295, which `< 65536` drops), and for those `0 != port` is `0 < port`")
_MEMBER_OF_STR_ENUM = ("report.reachability is always a member of Reachability(str, Enum), whose values are distinct: "
                       "`==` holds exactly when `is` does")
EQUIVALENT: dict[tuple[str, str, str, str], str] = {
    ("wire/receive.py", "core/NumberReplacer",
     "key = kind.domain + hashlib.blake2b(frame, digest_size=16).digest()",
     "key = kind.domain + hashlib.blake2b(frame, digest_size= 17).digest()"): _DIGEST_SIZE,
    ("wire/receive.py", "core/NumberReplacer",
     "key = kind.domain + hashlib.blake2b(frame, digest_size=16).digest()",
     "key = kind.domain + hashlib.blake2b(frame, digest_size= 15).digest()"): _DIGEST_SIZE,
    ("wire/envelope.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if len(message.signer) != PUBLIC_KEY_BYTES or len(message.signature) != SIGNATURE_BYTES:",
     "if len(message.signer) is not PUBLIC_KEY_BYTES or len(message.signature) != SIGNATURE_BYTES:"): _SMALL_INT,
    ("wire/envelope.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if len(message.signer) != PUBLIC_KEY_BYTES or len(message.signature) != SIGNATURE_BYTES:",
     "if len(message.signer) != PUBLIC_KEY_BYTES or len(message.signature) is not SIGNATURE_BYTES:"): _SMALL_INT,
    ("wire/envelope.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if envelope.version != PROTOCOL_VERSION:", "if envelope.version is not PROTOCOL_VERSION:"): _SMALL_INT,
    ("wire/envelope.py", "core/ReplaceTrueWithFalse",
     "return message.SerializeToString(deterministic=True)",
     "return message.SerializeToString(deterministic=False)"): _NO_MAP_FIELDS,
    ("wire/envelope.py", "core/ReplaceTrueWithFalse",
     "if message.SerializeToString(deterministic=True) != data:",
     "if message.SerializeToString(deterministic=False) != data:"): _NO_MAP_FIELDS,
    ("wire/identity.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if len(public_key) != PUBLIC_KEY_BYTES:", "if len(public_key) is not PUBLIC_KEY_BYTES:"): _SMALL_INT,
    ("wire/identity.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:",
     "if len(public_key) is not PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:"): _SMALL_INT,
    ("wire/identity.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:",
     "if len(public_key) != PUBLIC_KEY_BYTES or len(signature) is not SIGNATURE_BYTES:"): _SMALL_INT,
    ("wire/identity.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if len(data) != len(_ED25519_PRIVATE_PREFIX) + 64 or not data.startswith(_ED25519_PRIVATE_PREFIX):",
     "if len(data) is not len(_ED25519_PRIVATE_PREFIX) + 64 or not data.startswith(_ED25519_PRIVATE_PREFIX):"): _SMALL_INT,
    ("wire/identity.py", "core/ReplaceBinaryOperator_Add_BitOr",
     "if len(data) != len(_ED25519_PRIVATE_PREFIX) + 64 or not data.startswith(_ED25519_PRIVATE_PREFIX):",
     "if len(data) != len(_ED25519_PRIVATE_PREFIX) | 64 or not data.startswith(_ED25519_PRIVATE_PREFIX):"): _PREFIX_PLUS_64,
    ("wire/identity.py", "core/ReplaceBinaryOperator_Add_BitXor",
     "if len(data) != len(_ED25519_PRIVATE_PREFIX) + 64 or not data.startswith(_ED25519_PRIVATE_PREFIX):",
     "if len(data) != len(_ED25519_PRIVATE_PREFIX) ^ 64 or not data.startswith(_ED25519_PRIVATE_PREFIX):"): _PREFIX_PLUS_64,
    ("wire/identity.py", "core/NumberReplacer",
     "r, s = signature[:32], signature[32:]", "r, s = signature[: 33], signature[32:]"):
        "r is only read by canonical_point (its low 255 bits) and small_order_point (its first 32 bytes), and the "
        "library verifies the whole signature: a 33rd byte in r changes nothing",
    ("learn/intake.py", "core/ReplaceComparisonOperator_Lt_IsNot",
     "if 0 < len(ids := policy.encode_completion(completion.text)) <= limits.max_completion_tokens",
     "if 0 is not len(ids := policy.encode_completion(completion.text)) <= limits.max_completion_tokens"):
        "a length is never negative, so `0 < n` is `n != 0`; CPython keeps one object for each small int, so `0 is "
        "not n` is the same test",
    ("learn/checkpoint.py", "core/NumberReplacer",
     "self._prune(slots=1, room=_disk_size(newest) if newest else 0)",
     "self._prune(slots=1, room=_disk_size(newest) if newest else 1)"):
        "newest is None only when there is no checkpoint, and then _prune finds none to keep or drop: room is never "
        "read (one directory has one writer)",
    ("net/census.py", "core/ReplaceComparisonOperator_IsNot_NotEq",
     "if rejected.reason is not Reason.STALE:", "if rejected.reason != Reason.STALE:"):
        "rejected.reason is always a member of Reason(str, Enum), whose values are distinct: `!=` holds exactly when "
        "`is not` does",
    ("net/census.py", "core/ReplaceComparisonOperator_Eq_LtE",
     "self.buckets_read == self.buckets_total and not self.timed_out and self.thin_buckets == 0",
     "self.buckets_read == self.buckets_total and not self.timed_out and self.thin_buckets <= 0"):
        "thin_buckets only grows from 0: it is never negative",
    ("net/census.py", "core/ReplaceComparisonOperator_Eq_LtE",
     "and not self.missing_self and self.full_buckets == 0", "and not self.missing_self and self.full_buckets <= 0"):
        "full_buckets only grows from 0: it is never negative",
    ("net/census.py", "core/ReplaceComparisonOperator_Eq_GtE",
     "self.buckets_read == self.buckets_total and not self.timed_out and self.thin_buckets == 0",
     "self.buckets_read >= self.buckets_total and not self.timed_out and self.thin_buckets == 0"):
        "waves split the buckets and a cut wave counts only the keys it asked: buckets_read <= buckets_total",
    ("net/census.py", "core/NumberReplacer",
     "scale = self.buckets_total / self.buckets_read if self.buckets_read else 0.0",
     "scale = self.buckets_total / self.buckets_read if self.buckets_read else 1.0"):
        "with no bucket read there is no entry, and every total is 0 * scale: 0 * 1.0 is the same +0.0 as 0 * 0.0",
    ("wire/address.py", "core/NumberReplacer",
     'groups = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 16, 2)]',
     'groups = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 15, 2)]'):
        "the stop is exclusive and 15 is odd: range(0, 15, 2) and range(0, 16, 2) are both 0, 2, ..., 14",
    ("wire/address.py", "core/NumberReplacer",
     "best_start, best_length, start = -1, 1, None", "best_start, best_length, start = - 2, 1, None"): _NO_RUN_YET,
    ("wire/address.py", "core/ReplaceUnaryOperator_USub_Invert",
     "best_start, best_length, start = -1, 1, None", "best_start, best_length, start = ~1, 1, None"): _NO_RUN_YET,
    ("wire/address.py", "core/ReplaceComparisonOperator_Eq_GtE",
     "return 1 <= int(port) <= 65535 and port == str(int(port))",
     "return 1 <= int(port) <= 65535 and port >= str(int(port))"):
        "PORT is 1-5 ASCII digits (the pattern), so a port text other than its canonical form has a leading zero, "
        "and '0' sorts below every other digit: `>=` holds exactly when `==` does",
    ("wire/beacon.py", "core/NumberReplacer",
     "(0x3000, 0x3000), (0x3164, 0x3164), (0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xFEFF, 0xFEFF),",
     "(0x3000, 0x3000), (0x3164, 0x3164), (0xD800, 0xDFFF), ( 57343, 0xF8FF), (0xFEFF, 0xFEFF),"):
        "the range would start one code point earlier, at U+DFFF, which the surrogate range before it already holds",
    ("wire/presence.py", "core/ReplaceComparisonOperator_NotEq_IsNot",
     "if len(set(message.addresses)) != len(message.addresses):",
     "if len(set(message.addresses)) is not len(message.addresses):"):
        "the count check before it refuses more than MAX_ADDRESSES (4), so both lengths are 0..4; " + _SMALL_INT,
    ("net/reachability.py", "core/ReplaceComparisonOperator_Lt_NotEq",
     "ports = sorted({port for port in request.ports if 0 < port < 65536})",
     "ports = sorted({port for port in request.ports if 0 != port < 65536})"): _UINT32_PORTS,
    ("net/reachability.py", "core/ReplaceComparisonOperator_Lt_IsNot",
     "ports = sorted({port for port in request.ports if 0 < port < 65536})",
     "ports = sorted({port for port in request.ports if 0 is not port < 65536})"): _UINT32_PORTS + "; " + _SMALL_INT,
    ("net/peer.py", "core/ReplaceComparisonOperator_Is_Eq",
     "return not self.serve or report.reachability is Reachability.PRIVATE",
     "return not self.serve or report.reachability == Reachability.PRIVATE"): _MEMBER_OF_STR_ENUM,
    ("net/peer.py", "core/ReplaceComparisonOperator_Is_LtE",
     "return not self.serve or report.reachability is Reachability.PRIVATE",
     "return not self.serve or report.reachability <= Reachability.PRIVATE"):
        _MEMBER_OF_STR_ENUM + "; and of 'public', 'private' and 'unknown' only 'private' is <= 'private'",
    ("wire/identity.py", "core/NumberReplacer",
     "seed, public_key = data[4:36], data[36:68]", "seed, public_key = data[4:36], data[36: 69]"):
        "data has exactly 68 bytes here (checked just above), so data[36:69] is data[36:68]",
}


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    return listed.stdout.splitlines()


def copy_tree(destination: Path) -> None:
    """A copy of the tracked files: the mutants' playground, never this checkout."""
    for name in tracked_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def test_command(target: Target, timeout_s: int) -> str:
    tests = " ".join(target.tests)
    return (f"{sys.executable} -m pytest -x -q -p no:cacheprovider -o addopts= -m 'not slow' "
            f"--timeout {timeout_s} {tests}")


def annotation_spans(source: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the module's annotations are: under `from __future__ import annotations` they are never evaluated,
    so a mutant there changes nothing."""
    spans = []
    for node in ast.walk(ast.parse(source.read_text())):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            annotations = [a.annotation for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                                   arguments.vararg, arguments.kwarg] if a is not None]
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in annotations if a is not None]
    return spans


def session_of(module: str, work: Path) -> Path:
    return work / f"{module.replace('/', '-')}.sqlite"


def execute(module: str, tree: Path, session: Path, timeout_s: int, command: str) -> None:
    """cosmic-ray `init` or `exec` of the module's session, mutating `tree`'s copy of the module."""
    missing = [test for test in TARGETS[module].tests if not (tree / test).exists()]
    if missing:  # pytest would fail on every mutant, and each would count as killed
        raise SystemExit(f"{module}: {', '.join(missing)} not in the tree (tracked files only: commit them first)")
    config = session.with_name(f"{session.stem}-{tree.name}.toml")
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{tree / "swarmnode" / module}"\n'
        f"timeout = {float(timeout_s * 2)}\n"
        "excluded-modules = []\n"
        f'test-command = "{test_command(TARGETS[module], timeout_s)}"\n'
        "\n[cosmic-ray.distributor]\nname = \"local\"\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", command, str(config), str(session)], check=True,
                   cwd=tree, env=env, capture_output=True)


def run_module(module: str, tree: Path, work: Path, timeout_s: int, sample: int | None) -> dict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    target = TARGETS[module]
    session = session_of(module, work)
    session.unlink(missing_ok=True)
    execute(module, tree, session, timeout_s, "init")
    annotations = annotation_spans(tree / "swarmnode" / module)
    with use_db(str(session), WorkDB.Mode.open) as db:
        items = list(db.pending_work_items)
        out_of_scope = [
            item.job_id for item in items
            if target.definitions is not None and item.mutations[0].definition_name not in target.definitions
        ]
        never_run = [
            item.job_id for item in items if item.job_id not in out_of_scope
            and any(start <= item.mutations[0].start_pos < end for start, end in annotations)
        ]
        db.set_multiple_results(out_of_scope, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=OUT_OF_SCOPE))
        db.set_multiple_results(never_run, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=ANNOTATION))
        # in the order of the mutations, not of their random job ids: the same seed draws the same sample every run
        in_scope = [item.job_id for item in sorted(items, key=lambda item: mutation_order(item.mutations[0]))
                    if item.job_id not in out_of_scope and item.job_id not in never_run]
        if sample is not None and sample < len(in_scope):
            chosen = set(random.Random(module).sample(in_scope, sample))
            outside = [job for job in in_scope if job not in chosen]
            db.set_multiple_results(outside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="outside the sample"))
    started = time.monotonic()
    execute(module, tree, session, timeout_s, "exec")
    return {**summarise(module, session, time.monotonic() - started), "in_scope": len(in_scope)}


def mutation_order(mutation) -> tuple:
    return mutation.start_pos, mutation.end_pos, mutation.operator_name, mutation.occurrence


def rerun_survivors(module: str, tree: Path, work: Path, timeout_s: int) -> dict:
    """The survivors of an earlier run in `work`, again, against the tests as they are now (new tests copied
    into the tree): the same mutants, so the score before and after the new tests compare one to one."""
    import sqlite3

    session = session_of(module, work)
    before = summarise(module, session, 0.0)
    copy_tree(tree)
    with sqlite3.connect(session) as database:
        survivors = [row[0] for row in database.execute(
            "SELECT job_id FROM work_results WHERE worker_outcome = 'NORMAL' AND test_outcome = 'SURVIVED'")]
        in_scope = database.execute(
            "SELECT count(*) FROM work_results WHERE NOT (worker_outcome = 'SKIPPED' AND output IN (?, ?))",
            (OUT_OF_SCOPE, ANNOTATION)).fetchone()[0]
        database.executemany("DELETE FROM work_results WHERE job_id = ?", [(job,) for job in survivors])
        # each mutant names the file it edits: this tree's copy, never the tree of the first run
        database.execute("UPDATE mutation_specs SET module_path = ?", (str(tree / "swarmnode" / module),))
    started = time.monotonic()
    execute(module, tree, session, timeout_s, "exec")
    after = summarise(module, session, time.monotonic() - started)
    return {**after, "in_scope": in_scope, "before": {key: before[key] for key in ("killed", "survived", "score")},
            "killed_since": [s for s in before["survivors"] if s not in after["survivors"]]}


def summarise(module: str, session: Path, seconds: float) -> dict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts = {"killed": 0, "survived": 0, "equivalent": 0, "incompetent": 0, "errors": 0, "not_made": 0}
    survivors, equivalents, not_made = [], [], []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome is WorkerOutcome.SKIPPED:
                continue
            mutation = item.mutations[0]
            where = {"line": mutation.start_pos[0], "definition": mutation.definition_name or "<module>",
                     "operator": mutation.operator_name, "diff": changed_lines(result.diff)}
            if result.worker_outcome is WorkerOutcome.EXCEPTION and "cosmic_ray/operators/" in (result.output or ""):
                counts["not_made"] += 1  # the tool's operator failed on this line: no mutant existed to test
                not_made.append({**where, "error": (result.output or "").strip().splitlines()[-1]})
            elif result.worker_outcome is not WorkerOutcome.NORMAL:
                counts["errors"] += 1
                survivors.append({**where, "outcome": result.worker_outcome.value})
            elif result.test_outcome is TestOutcome.INCOMPETENT:
                counts["incompetent"] += 1  # the mutant does not even import: killed before any test
            elif result.test_outcome is TestOutcome.KILLED:
                counts["killed"] += 1
            elif (reason := EQUIVALENT.get((module, mutation.operator_name, *where["diff"]))) is not None:
                counts["equivalent"] += 1
                equivalents.append({**where, "reason": reason})
            else:
                counts["survived"] += 1
                survivors.append({**where, "outcome": "survived"})
    counted = counts["killed"] + counts["incompetent"] + counts["survived"] + counts["errors"]
    return {
        "module": module, **counts, "mutants": counted + counts["equivalent"],
        "score": (counts["killed"] + counts["incompetent"]) / counted if counted else 1.0,
        "seconds": round(seconds, 1), "survivors": survivors, "equivalents": equivalents, "not_made": not_made,
    }


def changed_lines(diff: str | None) -> tuple[str, str]:
    """(the line before, the line after) of a one-line mutation, stripped: how EQUIVALENT names a mutant."""
    lines = (diff or "").splitlines()
    before = next((line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")), "")
    after = next((line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")), "")
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default=",".join(TARGETS), help="comma-separated, e.g. wire/receive,net/storage")
    parser.add_argument("--workers", type=int, default=2, help="copies of the tree mutated at once")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test (a mutant that hangs is killed)")
    parser.add_argument("--sample", type=int, default=None, help="run a seeded random N of each module's mutants")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=None, help="where the copies live (default: a temp dir)")
    parser.add_argument("--list", action="store_true", help="show the targets and their tests, run nothing")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="with --work of an earlier run: run its survivors again against the tests as they are now")
    parser.add_argument("--summarise", action="store_true",
                        help="with --work of earlier runs: print and write their results (equivalents as listed now)")
    args = parser.parse_args()
    modules = [name if name.endswith(".py") else f"{name}.py" for name in args.modules.split(",")]
    if args.list:
        for module in modules:
            target = TARGETS[module]
            print(f"{module}: {', '.join(target.definitions) if target.definitions else 'the whole module'}")
            print(f"    {test_command(target, args.timeout)}")
        return
    if args.summarise:
        results = [summarise(module, session_of(module, args.work), 0.0) for module in modules]
        print_table(results)
        args.out.write_text(json.dumps({"tool": "cosmic-ray", "results": results}, indent=1))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="swarmnode-mutation-"))
    prefix = "rerun-" + "-".join(module.replace("/", "-").removesuffix(".py") for module in modules) if args.rerun_survivors else "tree"
    trees = [work / f"{prefix}{index}" for index in range(args.workers)]  # a rerun never shares a tree with another run
    for tree in trees:
        if not tree.exists():
            copy_tree(tree)
    free = list(trees)

    def one(module: str) -> dict:
        tree = free.pop()
        try:
            result = (rerun_survivors(module, tree, work, args.timeout) if args.rerun_survivors
                      else run_module(module, tree, work, args.timeout, args.sample))
        finally:
            free.append(tree)
        print(f"{module}: {result['killed'] + result['incompetent']} killed, {result['survived']} survived, "
              f"{result['equivalent']} equivalent of {result['mutants']} run, {result['in_scope']} in scope "
              f"({result['seconds']:.0f} s)", flush=True)
        return result

    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(one, modules))
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"tool": "cosmic-ray", "results": results}, indent=1))
    print(f"wrote {args.out}")


def print_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mutation testing of the safety checks")
    for column in ("module", "mutants", "killed", "survived", "equivalent", "score"):
        table.add_column(column, justify="right" if column != "module" else "left")
    for row in results:
        table.add_row(row["module"], str(row["mutants"]), str(row["killed"] + row["incompetent"]), str(row["survived"]),
                      str(row["equivalent"]), f"{row['score']:.1%}")
    Console(width=120).print(table)
    for row in results:
        for survivor in row["survivors"]:
            before, after = survivor["diff"]
            print(f"  {row['module']}:{survivor['line']} {survivor['definition']}: {before!r} -> {after!r} "
                  f"({survivor['operator']}, {survivor['outcome']})")


if __name__ == "__main__":
    main()
