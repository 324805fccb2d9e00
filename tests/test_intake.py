"""The intake, the one path from peer bytes to a trainable group: peers' groups are cut to our shape,
generator failures are contained and typed, lies are caught before anything is filtered."""

from __future__ import annotations

import dataclasses
import random
import time
import types

import pytest

from swarmnode.config import load_config
from swarmnode.learn import intake as intake_module
from swarmnode.learn.intake import Intake, IntakeLimits
from swarmnode.learn.learner import Learner
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import Score, Task, TaskSuite
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import Completion, Rollout, TaskRef

CONFIG = load_config()
SUITE = TaskSuite.of(CONFIG.tasks)
POLICY = Policy.load()
CHAIN_SUM = next(spec for spec in SUITE.families if spec.name == "chain_sum")
REF = TaskRef("chain_sum", CHAIN_SUM.config_hash, 3, 7)
ANSWER = str(SUITE.task(REF).entry["answer"])
RIGHT = Completion(f"<answer>{ANSWER}</answer>")
WRONG = Completion("<answer>-1</answer>")


@dataclasses.dataclass(frozen=True)
class FromPeer:
    rollout: Rollout
    signer: str = "12D3KooWpeer"
    model_id: str = "another-model"


def intake(group_size: int = 4, max_tokens: int = 24, families: frozenset[str] | None = None) -> Intake:
    limits = IntakeLimits(group_size, max_tokens, CONFIG.model.max_prompt_tokens, families)
    return Intake(SUITE, limits, POLICY, rng=random.Random(0))


def texts(count: int) -> tuple[Completion, ...]:
    return tuple(Completion(f"<answer>{ANSWER if i % 2 else i + 100}</answer>") for i in range(count))


def test_a_peers_group_of_32_completions_is_cut_to_our_g_so_it_weighs_no_more_than_one_of_ours():
    result = intake(group_size=4).groups([FromPeer(Rollout(REF, texts(32)))])
    [group] = result.groups
    assert len(group.completion_ids) == 4 and len(group.rewards) == 4
    assert sum(len(ids) for ids in group.completion_ids) <= 4 * 24


def test_completions_longer_than_our_token_limit_are_dropped_and_a_group_left_too_small_is_refused():
    long_text = "<answer>" + " ".join(["word"] * 200) + "</answer>"
    mixed = (*texts(3), Completion(long_text))
    [group] = intake(max_tokens=24).groups([FromPeer(Rollout(REF, mixed))]).groups
    assert len(group.completion_ids) == 3 and all(len(ids) <= 24 for ids in group.completion_ids)
    refused = intake(max_tokens=24).groups([FromPeer(Rollout(REF, (texts(1)[0], Completion(long_text))))])
    assert refused.groups == [] and refused.rejected == {"too_long": 1} and refused.offenders == []


def test_a_generator_that_raises_on_a_peer_chosen_item_is_a_typed_refusal_not_the_end_of_the_run(monkeypatch):
    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a reasoning-gym bug at this index")

    monkeypatch.setattr(SUITE, "_dataset", broken)
    result = intake().groups([FromPeer(Rollout(REF, texts(4)))])
    assert result.groups == [] and result.rejected == {"task_error": 1} and result.offenders == []
    with pytest.raises(Rejected) as info:
        intake().judge(Rollout(REF, texts(2)))
    assert info.value.reason is Reason.TASK_ERROR


def test_a_slow_scorer_cannot_make_a_round_spend_more_than_its_rescore_budget_on_peers(monkeypatch):
    score = SUITE.score

    def slow(task, text):  # as knight_swap or futoshiki can be on a peer-chosen item
        time.sleep(0.05)
        return score(task, text)

    monkeypatch.setattr(SUITE, "score", slow)
    limits = IntakeLimits(4, 24, CONFIG.model.max_prompt_tokens, budget_s=0.3)
    budgeted = Intake(SUITE, limits, POLICY, rng=random.Random(0))
    result = budgeted.groups([FromPeer(Rollout(REF, texts(4))) for _ in range(20)])  # 0.2 s of scoring each
    assert 1 <= len(result.groups) <= 3  # the budget (0.3 s) is checked before each rollout: at most 2 more
    assert result.rejected["rescore_budget"] == 20 - len(result.groups)
    assert result.offenders == []  # our budget is not the sender's fault


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        (Completion(f"<answer>{ANSWER}</answer>", 0.0), "reward_mismatch"),  # a correct answer claimed 0
        (Completion("no tag at all", 1.0), "reward_mismatch"),  # no answer claimed 1
    ],
)
def test_a_claim_the_verifier_contradicts_is_an_offence_of_the_signer(completion, reason):
    result = intake().groups([FromPeer(Rollout(REF, (completion, *texts(3))))])
    assert result.groups == [] and result.rejected == {reason: 1}
    assert result.offenders == [("12D3KooWpeer", reason)]


@pytest.mark.parametrize(("claimed", "refused"), [(0.99, True), (0.998, True), (0.9995, False), (1.0, False)])
def test_a_claim_off_by_more_than_a_thousandth_is_refused_and_one_within_it_is_not(claimed, refused):
    """PROTOCOL.md §5 check 15: a correct answer (verifier 1.0) claimed at `claimed`."""
    result = intake().groups([FromPeer(Rollout(REF, (Completion(f"<answer>{ANSWER}</answer>", claimed), *texts(3))))])
    assert result.rejected == ({"reward_mismatch": 1} if refused else {})
    assert len(result.groups) == (0 if refused else 1)


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        (dataclasses.replace(REF, config_hash="0123456789abcdef"), "a config hash not ours"),
        (dataclasses.replace(REF, index=CHAIN_SUM.dataset_size), "an index at the dataset size"),
        (dataclasses.replace(REF, family="no_such_family"), "a family we do not have"),
    ],
)
def test_references_we_cannot_regenerate_are_unknown_tasks_and_no_offence(ref, why):
    result = intake().groups([FromPeer(Rollout(ref, texts(4)))])
    assert result.rejected == {"unknown_task": 1} and result.offenders == [], why


def test_a_lie_in_a_family_we_do_not_train_on_is_still_caught_before_the_family_filter():
    only_products = frozenset({"products"})
    lie = Rollout(REF, (Completion(f"<answer>{ANSWER}</answer>", 0.0), *texts(3)))
    result = intake(families=only_products).groups([FromPeer(lie), FromPeer(Rollout(REF, texts(4)))])
    assert result.rejected == {"reward_mismatch": 1, "not_sampled_here": 1}
    assert result.offenders == [("12D3KooWpeer", "reward_mismatch")]


def test_a_same_model_peers_log_probs_come_along_and_another_models_do_not():
    completions = tuple(dataclasses.replace(c, token_logprobs=(-0.5,)) for c in texts(4))
    same = intake().groups([FromPeer(Rollout(REF, completions), model_id=POLICY.model_id)]).groups[0]
    other = intake().groups([FromPeer(Rollout(REF, completions))]).groups[0]
    assert same.sender_logprobs == [(-0.5,)] * 4 and other.sender_logprobs is None


def test_fuzzing_with_peer_chosen_references_over_every_family_never_escapes_the_intake():
    """swarmnode/lab/fuzz_intake.py, bounded: every reasoning-gym family, our hashes and others, edge seeds and
    indices, junk and huge texts, honest and false claims. Every outcome is a group or a typed refusal."""
    from swarmnode.lab import fuzz_intake

    summary = fuzz_intake.run(cases=150, seed=1, size=200)
    assert summary["crashes"] == 0, summary["crash_examples"]
    assert summary["families_hit"] >= 60 and summary["groups"] > 0
    assert set(summary["refused_by_reason"]) <= {reason.value for reason in Reason} | {"too_long", "not_sampled_here"}


def test_a_transplant_node_counts_only_peers_groups_with_an_advantage_as_supplied():
    """A peer's valid but useless groups (every answer wrong: no advantage) must not cut our own sampling to I."""
    config = load_config(None, ["sapo.sampling=transplant", "sapo.questions_per_round=4", "sapo.local_groups=2",
                                "sapo.external_groups=2"])
    learner = Learner.of(config, POLICY, SUITE, seed=0, data_seed=0)
    all_wrong = Rollout(REF, tuple(Completion("<answer>-1</answer>") for _ in range(4)))
    assert learner.external_groups([FromPeer(all_wrong)]).groups  # through the intake, but uninformative
    assert not learner.peers_supplied and learner.questions_to_ask() == 4
    learner.external_groups([FromPeer(Rollout(REF, texts(4)))])  # two right, two wrong: an advantage
    assert learner.peers_supplied and learner.questions_to_ask() == 2


def limits(group_size: int = 4, budget_s: float | None = None) -> IntakeLimits:
    return IntakeLimits(group_size, 24, CONFIG.model.max_prompt_tokens, budget_s=budget_s)


def distinct(count: int) -> tuple[Completion, ...]:
    """`count` completions whose token ids tell them apart."""
    return tuple(Completion(f"<answer>{100 + i}</answer>") for i in range(count))


def test_every_rollout_left_when_the_rescore_budget_runs_out_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budget spent after two of seven rollouts: exactly the five not rescored are refused as rescore_budget."""
    clock = types.SimpleNamespace(now=0.0)
    score = SUITE.score

    def one_second_each(task: Task, text: str) -> Score:
        clock.now += 1.0
        return score(task, text)

    monkeypatch.setattr(SUITE, "score", one_second_each)
    monkeypatch.setattr(intake_module, "time", types.SimpleNamespace(monotonic=lambda: clock.now))
    budgeted = Intake(SUITE, limits(budget_s=3.0), POLICY, rng=random.Random(0))
    result = budgeted.groups([FromPeer(Rollout(REF, (RIGHT, WRONG))) for _ in range(7)])  # 2 s of scoring each
    assert len(result.groups) == 2  # checked at 0 s and 2 s; at 4 s the budget (3 s) is spent
    assert result.rejected == {"rescore_budget": 5} and result.offenders == []


def test_the_mean_reward_of_peers_groups_is_the_mean_over_all_their_completions() -> None:
    """Rewards [1, 0, 1] average to 2/3, and pooled with a group [0, 0] to 2/5; no groups, no mean."""
    one = Intake(SUITE, limits(), POLICY, rng=random.Random(0)).groups([FromPeer(Rollout(REF, (RIGHT, WRONG, RIGHT)))])
    assert [group.rewards for group in one.groups] == [[1.0, 0.0, 1.0]]
    assert one.mean_reward == pytest.approx(2 / 3)
    two = Intake(SUITE, limits(), POLICY, rng=random.Random(0)).groups(
        [FromPeer(Rollout(REF, (RIGHT, WRONG, RIGHT))), FromPeer(Rollout(REF, (WRONG, WRONG)))]
    )
    assert two.mean_reward == pytest.approx(2 / 5)
    assert Intake(SUITE, limits(), POLICY).groups([]).mean_reward is None


def test_an_oversized_group_is_cut_with_the_rng_the_intake_was_given() -> None:
    """Two intakes seeded alike keep the same completions, the very subset that seed draws."""
    completions = distinct(12)
    encoded = [POLICY.encode_completion(c.text) for c in completions]
    expected = random.Random(7).sample(encoded, 4)
    for _ in range(2):
        seeded = Intake(SUITE, limits(4), POLICY, rng=random.Random(7))
        [group] = seeded.groups([FromPeer(Rollout(REF, completions))]).groups
        assert group.completion_ids == expected


def test_an_intake_given_no_rng_still_cuts_an_oversized_group_to_our_g() -> None:
    """Without an rng of its own the intake draws from a fresh one: a 12-completion group comes out at G = 4."""
    completions = distinct(12)
    encoded = [POLICY.encode_completion(c.text) for c in completions]
    [group] = Intake(SUITE, limits(4), POLICY).groups([FromPeer(Rollout(REF, completions))]).groups
    assert len(group.completion_ids) == 4 and all(ids in encoded for ids in group.completion_ids)
