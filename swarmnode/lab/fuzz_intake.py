"""Fuzz the intake with peer-chosen task references over every reasoning-gym family.

A receiver that can verify every family (each with reasoning-gym's default config) gets rollouts whose
references a peer chose: our config hashes and others, seeds and indices at and beyond the edges, texts
from empty to 16 KB with answers right, wrong and missing, claims honest, false and absent. Nothing may
escape `Intake.groups` but counted refusals: a crash is any exception. Writes a JSON summary.

Usage: python -m swarmnode.lab.fuzz_intake [--cases 2000] [--seed 0] [--size 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from reasoning_gym.factory import DATASETS

from swarmnode.learn.intake import Intake, IntakeLimits
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import EXCLUDED_FAMILIES, FamilySpec, TaskSuite
from swarmnode.wire.batch import MAX_COMPLETION_BYTES, MAX_COMPLETIONS_PER_ROLLOUT, MAX_INDEX, MAX_SEED
from swarmnode.wire.rollout import Completion, Rollout, TaskRef

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the lab runs from one
SEEDS_PER_FAMILY = (0, 1, 7, MAX_SEED)  # few seeds, so datasets are built once each and cached
JUNK = ["", " ", "\x00", "</answer><answer>", "<answer></answer>", "<answer>" * 40, "é∂ƒ😀", "NaN", "-1e309", "[1, 2",
        "1e999999999", "9" * 5000, "9**9**9**9", "[" * 5000]


@dataclasses.dataclass(frozen=True)
class FromPeer:
    rollout: Rollout
    signer: str
    model_id: str


def all_families(size: int) -> list[FamilySpec]:
    return [FamilySpec(name, 1.0, {}, size) for name in sorted(DATASETS) if name not in EXCLUDED_FAMILIES]


def reference(rng: random.Random, spec: FamilySpec, specs: list[FamilySpec]) -> TaskRef:
    roll = rng.random()
    config_hash = spec.config_hash if roll < 0.85 else rng.choice(specs).config_hash if roll < 0.93 else f"{rng.getrandbits(64):016x}"
    edges = [0, spec.dataset_size - 1, spec.dataset_size, MAX_INDEX]
    index = rng.randrange(spec.dataset_size) if rng.random() < 0.8 else rng.choice(edges)
    return TaskRef(spec.name, config_hash, rng.choice(SEEDS_PER_FAMILY), index)


def completion(rng: random.Random, answer: str | None, claims: str, truth) -> Completion:
    kind = rng.random()
    if kind < 0.3 and answer is not None:
        text = f"thinking... <answer>{answer}</answer>"
    elif kind < 0.55:
        text = f"<answer>{rng.choice(JUNK)}{rng.randrange(10**6)}</answer>"
    elif kind < 0.75:
        text = rng.choice(JUNK)
    elif kind < 0.85:
        text = "<answer>" + "x" * (MAX_COMPLETION_BYTES - 20) + "</answer>"
    else:
        text = "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 200)))
    claim = {"none": None, "honest": truth(text), "random": rng.choice([0.0, 1.0, rng.random()])}[claims]
    return Completion(text, claim, tuple(-rng.random() for _ in range(rng.randrange(0, 4))))


def run(cases: int, seed: int, size: int) -> dict:
    rng = random.Random(seed)
    specs = all_families(size)
    suite = TaskSuite(specs)
    policy = Policy.load(dtype="float32")
    limits = IntakeLimits(group_size=8, max_completion_tokens=24, max_prompt_tokens=192)
    intake = Intake(suite, limits, policy, rng=random.Random(seed))
    refused: Counter[str] = Counter()
    families_hit: Counter[str] = Counter()
    crashes: list[str] = []
    groups = 0
    slowest: list[tuple[float, str]] = []
    started = time.monotonic()
    for case in range(cases):
        if case % 500 == 0:
            print(f"case {case}/{cases}, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        spec = rng.choice(specs)
        ref = reference(rng, spec, specs)
        try:
            task = suite.task(ref)
            answer = str(task.entry.get("answer")) if rng.random() < 0.5 else None
        except Exception:  # the reference does not regenerate: whatever the intake says of it is what counts
            task, answer = None, None

        def truth(text: str) -> float | None:  # an honest sender claims what the verifier says
            return suite.score(task, text).verifier if task is not None else None

        claims = rng.choices(["none", "honest", "random"], weights=[4, 4, 2])[0]
        count = rng.randrange(1, MAX_COMPLETIONS_PER_ROLLOUT + 1)
        texts = tuple(completion(rng, answer, claims, truth) for _ in range(count))
        item = FromPeer(Rollout(ref, texts), "12D3KooWfuzz", rng.choice([policy.model_id, "other"]))
        families_hit[spec.name] += 1
        case_started = time.monotonic()
        try:
            result = intake.groups([item])
        except Exception:  # the one thing the intake must never do
            crashes.append(f"{ref}: {traceback.format_exc(limit=3)}")
            continue
        slowest = sorted([*slowest, (time.monotonic() - case_started, spec.name)], reverse=True)[:5]
        refused.update(result.rejected)
        groups += len(result.groups)
    return {
        "cases": cases, "seed": seed, "dataset_size": size, "families": len(specs),
        "families_hit": len(families_hit), "groups": groups, "crashes": len(crashes),
        "crash_examples": crashes[:5], "refused_by_reason": dict(sorted(refused.items())),
        "scorer_errors_by_family": dict(sorted(suite.scorer_errors.items())),
        "slowest_cases": [{"family": family, "seconds": round(seconds, 2)} for seconds, family in slowest],
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=1000, help="dataset size of every family in the receiver's suite")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz-intake.json")
    args = parser.parse_args()
    summary = run(args.cases, args.seed, args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "crash_examples"}, indent=1))
    print(f"wrote {args.out}")
    if summary["crashes"]:
        raise SystemExit(f"{summary['crashes']} crashes; first: {summary['crash_examples'][0]}")


if __name__ == "__main__":
    main()
