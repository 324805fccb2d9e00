"""No reasoning-gym scorer runs a peer's answer as code, and honest answers score as before."""

from __future__ import annotations

import fractions
import importlib
import random
import time
from pathlib import Path

import pytest

from swarmnode.learn import verifiers
from swarmnode.learn.tasks import FamilySpec, TaskSuite

SUITE = TaskSuite([FamilySpec(name, 1.0, {}, 2000) for name in sorted(verifiers.UNSAFE_FAMILIES)])


def score(family: str, answer: str, index: int = 0) -> float:
    spec = next(spec for spec in SUITE.families if spec.name == family)
    task = SUITE.task(type(SUITE.sample(random.Random(0), 1, 0)[0].ref)(family, spec.config_hash, 0, index))
    return SUITE.score(task, f"<answer>{answer}</answer>").verifier


@pytest.mark.parametrize("family", ["binary_matrix", "spiral_matrix", "string_insertion", "n_queens"])
def test_a_python_payload_in_an_answer_is_not_run_by_the_scorers_that_eval(family, tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    assert score(family, payload) == 0.0
    assert not marker.exists()


@pytest.mark.parametrize("family", sorted(verifiers.UNSAFE_FAMILIES - {"binary_matrix", "spiral_matrix",
                                                                      "string_insertion", "n_queens"}))
def test_parsing_scorers_refuse_code_power_towers_and_huge_exponents_quickly(family, tmp_path):
    marker = tmp_path / "pwned"
    for answer in (f"__import__('os').system('touch {marker}')", "9**99**99", "((9**99)**99)**99", "x.__class__",
                   "-1e309123456", "1e999999999", "1/1E+9999"):
        started = time.monotonic()
        assert score(family, answer) <= 0.05
        assert time.monotonic() - started < 2.0
    assert not marker.exists()


def unhardened(module_name: str) -> dict:
    """The module names harden() replaced, put back as reasoning-gym wrote them (returns what to restore)."""
    module = importlib.import_module(module_name)
    saved = {}
    if module_name in verifiers.EVAL_SCORERS:
        saved["eval"] = module.__dict__.pop("eval")
    elif module_name in verifiers.FRACTION_SCORERS:
        saved["Fraction"] = module.Fraction
        module.Fraction = fractions.Fraction
    elif module_name in verifiers.PARSE_EXPR_IMPORTERS:
        saved["parse_expr"] = module.parse_expr
        module.parse_expr = module.parse_expr.__closure__[0].cell_contents
    else:
        alias = verifiers.SYMPY_USERS[module_name]
        saved[alias] = getattr(module, alias)
        setattr(module, alias, saved[alias]._sympy)
    return saved


@pytest.mark.parametrize(
    "module_name",
    [*verifiers.EVAL_SCORERS, *verifiers.PARSE_EXPR_IMPORTERS, *verifiers.SYMPY_USERS, *verifiers.FRACTION_SCORERS],
)
def test_honest_answers_score_exactly_as_reasoning_gym_scores_them(module_name):
    family = Path(module_name.replace(".", "/")).name
    spec = next(spec for spec in SUITE.families if spec.name == family)
    rng = random.Random(1)
    items = [SUITE.task(type(SUITE.sample(rng, 1, 0)[0].ref)(family, spec.config_hash, 3, i)) for i in range(25)]
    answers = []
    for task in items:
        oracle = str(task.entry["answer"])
        if "Integral(" in oracle:  # sympy could not integrate: the oracle is the question (see below)
            continue
        answers += [(task, oracle), (task, oracle.replace(" ", "")), (task, f"[{oracle!r}]"), (task, "1 + 2")]
    hardened = [SUITE.score(task, f"<answer>{text}</answer>").verifier for task, text in answers]
    module = importlib.import_module(module_name)
    saved = unhardened(module_name)
    try:
        original = [SUITE.score(task, f"<answer>{text}</answer>").verifier for task, text in answers]
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
    assert hardened == original
    assert max(hardened) == 1.0  # the oracle answers do score


def test_answering_an_integral_with_the_integral_itself_earns_nothing():
    """reasoning-gym gives full marks to "Integral(f, x) + C" (its derivative is f): a reward hack, refused."""
    spec = next(spec for spec in SUITE.families if spec.name == "simple_integration")
    task = SUITE.task(type(SUITE.sample(random.Random(0), 1, 0)[0].ref)("simple_integration", spec.config_hash, 0, 0))
    metadata = task.entry["metadata"]
    hack = f"<answer>Integral({metadata['integrand']}, {metadata['variable']}) + C</answer>"
    saved = unhardened("reasoning_gym.algebra.simple_integration")
    try:
        assert SUITE.score(task, hack).verifier == 1.0  # what reasoning-gym itself says
    finally:
        module = importlib.import_module("reasoning_gym.algebra.simple_integration")
        for name, value in saved.items():
            setattr(module, name, value)
    assert SUITE.score(task, hack).verifier == 0.0


def test_the_cube_scorer_refuses_move_lists_no_solution_needs_quickly_and_scores_the_rest_as_before():
    """rubiks_cube expands "U999999" into that many moves and applies them: minutes per completion."""
    suite = TaskSuite([FamilySpec("rubiks_cube", 1.0, {}, 2000)])
    spec = suite.families[0]
    task = suite.task(type(suite.sample(random.Random(0), 1, 0)[0].ref)("rubiks_cube", spec.config_hash, 0, 1))
    cube = importlib.import_module(verifiers.CUBE_SCORER).RubiksCubeDataset
    scorer = cube.score_answer.__closure__[0]  # reasoning-gym's own scorer, behind the guard
    original, applied = scorer.cell_contents, []
    scorer.cell_contents = lambda self, answer, entry: applied.append(answer) or original(self, answer, entry)
    try:
        for answer in ("U999999", "U" + "9" * 5000, "R " * 1001):
            assert suite.score(task, f"<answer>{answer}</answer>").verifier == verifiers.CUBE_UNAPPLIABLE_SCORE
        assert applied == []  # refused without applying a single move
    finally:
        scorer.cell_contents = original
    answers = ["R U R' U'", "U2 R2 F2", "F " * 999, "", "U3 D'", task.entry["metadata"]["scramble_moves"]]
    hardened = [suite.score(task, f"<answer>{a}</answer>").verifier for a in answers]
    guarded = cube.score_answer
    cube.score_answer = guarded.__closure__[0].cell_contents
    try:
        assert [suite.score(task, f"<answer>{a}</answer>").verifier for a in answers] == hardened
    finally:
        cube.score_answer = guarded
