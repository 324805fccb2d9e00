import random

import pytest

from swarmnode.config import DEFAULT_FAMILIES, TasksConfig
from swarmnode.learn.tasks import FamilySpec, RewardMode, TaskSuite, extract_answer
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import TaskRef

SUITE = TaskSuite([FamilySpec.of(family) for family in DEFAULT_FAMILIES])


def test_a_reference_regenerates_the_same_item_in_a_fresh_suite():
    tasks = SUITE.sample(random.Random(3), 20, seed=99)
    fresh = TaskSuite([FamilySpec.of(family) for family in DEFAULT_FAMILIES])
    for task in tasks:
        again = fresh.task(task.ref)
        assert again.question == task.question and again.entry["answer"] == task.entry["answer"]


def test_config_hash_depends_on_config_size_and_family():
    base = FamilySpec("chain_sum", config={"min_terms": 2})
    assert base.config_hash != FamilySpec("chain_sum", config={"min_terms": 3}).config_hash
    assert base.config_hash != FamilySpec("chain_sum", config={"min_terms": 2}, dataset_size=10).config_hash
    assert base.config_hash == FamilySpec("chain_sum", weight=5.0, config={"min_terms": 2}).config_hash
    assert len(base.config_hash) == 16


def test_references_this_suite_cannot_regenerate_are_unknown_tasks():
    spec = SUITE.families[0]
    for ref in [
        TaskRef("chain_sum", "0000000000000000", 1, 1),
        TaskRef("products", spec.config_hash, 1, 1),
        TaskRef(spec.name, spec.config_hash, 1, spec.dataset_size),
    ]:
        with pytest.raises(Rejected) as info:
            SUITE.task(ref)
        assert info.value.reason is Reason.UNKNOWN_TASK


@pytest.mark.parametrize(
    "text, answer",
    [
        ("<answer>42</answer>", "42"),
        ("think <answer> 7 </answer> more <answer>8</answer>", "7"),
        ("<answer>unclosed", None),
        ("no tags", None),
        ("<answer>\n a\nb </answer>", "a\nb"),
    ],
)
def test_answer_extraction(text, answer):
    assert extract_answer(text) == answer


def test_rescore_uses_only_the_reference_and_the_text():
    task = SUITE.sample(random.Random(0), 1, seed=5)[0]
    gold = f"<answer>{task.entry['answer']}</answer>"
    regenerated = TaskSuite.of(TasksConfig()).task(task.ref)  # another node, from the reference alone
    assert regenerated.entry == task.entry
    assert SUITE.score(regenerated, gold).reward == 1.0
    assert SUITE.score(regenerated, "<answer>definitely wrong</answer>").reward == 0.0
    assert SUITE.score(regenerated, "no answer at all").has_answer is False


def test_a_scorer_exception_scores_zero_and_is_counted():
    suite = TaskSuite([FamilySpec("prime_factorization")])
    task = suite.sample(random.Random(0), 1, seed=1)[0]
    before = suite.scorer_errors["prime_factorization"]
    assert suite.score(task, "<answer>not a number at all</answer>").reward == 0.0
    assert suite.scorer_errors["prime_factorization"] == before + 1
    assert suite.score(task, "<answer>2</answer>").reward < 1.0  # a wrong answer the scorer parses is no error
    assert suite.scorer_errors["prime_factorization"] == before + 1


def test_gameable_families_are_refused():
    with pytest.raises(ValueError, match="excluded"):
        TaskSuite([FamilySpec("game_of_life_halting")])


def test_partial_credit_gaming_is_guarded_and_exact_mode_is_binary():
    spec = FamilySpec("chain_sum")  # reasoning-gym's default scorer: len(oracle)/len(answer) substring credit
    partial, guarded, exact = (TaskSuite([spec], mode) for mode in RewardMode)
    task = partial.sample(random.Random(1), 1, seed=3)[0]
    oracle = task.entry["answer"]
    gamed = f"<answer>{oracle}{'0' * 20}</answer>"
    assert partial.score(task, gamed).reward > 0
    assert guarded.score(task, gamed).reward == 0.0
    assert exact.score(task, gamed).reward == 0.0
    assert exact.score(task, f"<answer>{oracle}</answer>").reward == 1.0
