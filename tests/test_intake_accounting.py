"""The intake's bookkeeping: what a round's rescore budget refuses is counted rollout by rollout, the reward
reported for peers' groups is their plain mean, and the subset kept of an oversized group is drawn from the
rng the intake was given (or its own when given none)."""

from __future__ import annotations

import dataclasses
import random
import types

import pytest

from swarmnode.config import load_config
from swarmnode.learn import intake as intake_module
from swarmnode.learn.intake import Intake, IntakeLimits
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import Score, Task, TaskSuite
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
