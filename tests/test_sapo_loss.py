import math
import random

import pytest
import torch

from swarmnode.config import SapoConfig
from swarmnode.learn.group import Group
from swarmnode.learn.sapo import clipped_surrogate_loss
from swarmnode.learn.selection import select_groups
from swarmnode.learn.tasks import Task
from swarmnode.wire.rollout import TaskRef


def test_loss_matches_a_hand_computation():
    new = torch.log(torch.tensor([[0.5, 0.4], [0.3, 0.2]]))
    old = torch.log(torch.tensor([[0.25, 0.4], [0.3, 0.5]]))
    mask = torch.tensor([[True, True], [False, True]])
    advantages = torch.tensor([1.0, -2.0])
    weights = torch.tensor([1.0, 0.5])
    loss, stats = clipped_surrogate_loss(
        new, old, mask, advantages, weights, torch.ones(2, 2), clip_low=0.2, clip_high=0.28, token_budget=10.0
    )
    # row 0: ratios 2.0 (clipped to 1.28 for A>0) and 1.0 -> -(1.28 + 1.0); row 1: only token 2 counts,
    # ratio 0.4 with A<0: min(0.4*-2, 0.8*-2) = -1.6 -> +1.6, weighted 0.5.
    expected = (-(1.28 + 1.0) + 0.5 * 1.6) / 10.0
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert stats["tokens"] == 3 and stats["clipped"] == 2


def test_loss_gradient_raises_good_and_lowers_bad_completions():
    logits = torch.zeros(2, 3, requires_grad=True)
    new = torch.log_softmax(logits, -1)[:, :1]
    loss, _ = clipped_surrogate_loss(
        new, new.detach(), torch.ones(2, 1, dtype=torch.bool), torch.tensor([1.0, -1.0]), torch.ones(2),
        torch.ones(2, 1), 0.2, 0.28, 1.0,
    )
    loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[1, 0]  # descent raises token 0 in row 0, lowers it in row 1


def test_kl_term_is_zero_at_the_reference_and_positive_away_from_it():
    new = torch.log(torch.tensor([[0.5]]))
    args = (torch.ones(1, 1, dtype=torch.bool), torch.tensor([0.0]), torch.ones(1), torch.ones(1, 1), 0.2, 0.28, 1.0)
    at_ref, _ = clipped_surrogate_loss(new, new, *args, ref_logprobs=new, kl_beta=0.1)
    away, _ = clipped_surrogate_loss(new, new, *args, ref_logprobs=torch.log(torch.tensor([[0.25]])), kl_beta=0.1)
    assert at_ref.item() == 0.0 and away.item() > 0.0


def group(rewards, source="own"):
    task = Task(TaskRef("chain_sum", "0" * 16, 0, len(rewards)), "q", {})
    return Group(task, [1], [[2]] * len(rewards), list(rewards), source)


def test_advantages_are_group_normalised_and_constant_groups_are_uninformative():
    informative = group([1.0, 0.0, 0.0, 1.0])
    assert [round(a, 4) for a in informative.advantages()] == [1.0, -1.0, -1.0, 1.0]
    assert not group([0.3, 0.3, 0.3]).informative


def test_selection_drops_zero_advantage_groups_and_respects_i_and_j():
    config = SapoConfig(local_groups=2, external_groups=2, min_own_groups=1, own_first=False)
    own = [group([1, 0]), group([0, 0]), group([1, 0]), group([0, 1])]
    external = [group([1, 0], "external"), group([1, 1], "external"), group([0, 1], "external"), group([1, 0], "external")]
    picked = select_groups(own, external, config, random.Random(0))
    assert len(picked.own) == 2 and len(picked.external) == 2
    assert all(g.informative for g in picked.groups)


def test_missing_external_groups_are_replaced_by_own_but_never_the_reverse():
    config = SapoConfig(local_groups=2, external_groups=2, min_own_groups=1)
    own = [group([1, 0]) for _ in range(5)]
    silo = select_groups(own, [], config, random.Random(0))
    assert len(silo.own) == 4 and not silo.external
    few_own = select_groups([group([1, 0])], [group([1, 0], "external") for _ in range(6)], config, random.Random(0))
    assert len(few_own.own) == 1 and len(few_own.external) == 2


@pytest.mark.parametrize(("own_first", "expected"), [(False, (4, 4)), (True, (5, 3))])
def test_own_first_keeps_every_own_group_and_lets_peers_fill_only_the_rest(own_first, expected):
    config = SapoConfig(local_groups=4, external_groups=4, own_first=own_first)
    own = [group([1, 0]) for _ in range(5)] + [group([1, 1])]
    external = [group([1, 0], "external") for _ in range(6)]
    picked = select_groups(own, external, config, random.Random(0))
    assert (len(picked.own), len(picked.external)) == expected
    crowded = select_groups([group([0, 1]) for _ in range(9)], external, config, random.Random(0))
    assert len(crowded.own) == (8 if own_first else 4)


def test_a_step_without_enough_own_signal_is_skipped():
    config = SapoConfig(local_groups=4, external_groups=4, min_own_groups=1)
    picked = select_groups([group([0, 0])], [group([1, 0], "external") for _ in range(6)], config, random.Random(0))
    assert picked.skipped_reason and not picked.groups


def test_learnability_selection_prefers_high_variance_groups():
    config = SapoConfig(local_groups=1, external_groups=0, selection="learnability")
    balanced, lopsided = group([1, 0, 1, 0]), group([1, 0, 0, 0, 0, 0, 0, 0])
    wins = sum(select_groups([balanced, lopsided], [], config, random.Random(seed)).own[0] is balanced for seed in range(200))
    assert wins > 110
