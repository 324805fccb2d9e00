"""What sharing buys a volunteer, on traces whose answer is known by construction."""

from __future__ import annotations

import pytest

from swarmnode.lab.efficiency import NodeRun, as_if_generation_share, efficiency, reach_round, report
from swarmnode.ops.metrics import RoundRecord


def ramp(rounds: int, slope: float) -> list[float]:
    return [min(1.0, slope * r) for r in range(1, rounds + 1)]


def test_reaching_counts_only_full_windows():
    lucky_start = [1.0] + [0.0] * 9 + [0.5] * 10
    assert reach_round(lucky_start, 0.5, window=5) == 15  # not round 1, whose one-round "average" is 1.0
    assert reach_round([0.1] * 20, 0.5, window=5) is None


def test_a_config_learning_twice_as_fast_on_less_compute_reaches_the_silo_for_less_than_half_its_compute():
    rounds = 40
    silo = [NodeRun(seed, ramp(rounds, 0.01), [2.0] * rounds, [3.0] * rounds) for seed in (0, 1) for _ in range(2)]
    fast = [NodeRun(seed, ramp(rounds, 0.02), [1.5] * rounds, [2.0] * rounds) for seed in (0, 1) for _ in range(2)]
    rows = {row.config: row for row in efficiency({"8/0": silo, "4/4": fast}, window=4)}
    # the silo's final 4-round average is 0.385, which it first has at round 40; twice the slope at 21 (0.02 x 19.5 = 0.39)
    assert rows["8/0"].rounds_to_target == 40 and rows["8/0"].compute_to_target_ratio == pytest.approx(1.0)
    assert rows["4/4"].rounds_to_target == 21 and rows["4/4"].seeds_reached == 2
    assert rows["4/4"].compute_to_target_ratio == pytest.approx(21 * 1.5 / (40 * 2.0))
    reward_ratio = sum(ramp(rounds, 0.02)) / sum(ramp(rounds, 0.01))
    assert rows["4/4"].reward_ratio == pytest.approx(reward_ratio)
    assert rows["4/4"].compute_ratio == pytest.approx(reward_ratio * 2.0 / 1.5)
    assert rows["4/4"].wall_ratio == pytest.approx(reward_ratio * 3.0 / 2.0)


def test_a_config_that_never_gets_there_says_so_and_a_collapsed_node_is_counted():
    rounds = 30
    silo = [NodeRun(0, ramp(rounds, 0.01), [1.0] * rounds)]
    flat = [NodeRun(0, [0.05] * rounds, [1.0] * rounds, collapses=2)]
    rows = {row.config: row for row in efficiency({"8/0": silo, "2/6": flat}, window=5)}
    assert rows["2/6"].seeds_reached == 0 and rows["2/6"].compute_to_target_ratio is None
    assert rows["2/6"].collapsed_nodes == 1 and rows["8/0"].collapsed_nodes == 0
    assert rows["2/6"].wall_ratio is None  # the simulator has no wall clock of its own
    with pytest.raises(ValueError, match="no 8/0 runs"):
        efficiency({"2/6": flat})


def test_a_node_trace_from_its_metrics_counts_generate_rescore_and_train_as_compute_and_gaps_as_wall_time():
    def record(number: int, at: float, held_out: dict | None = None) -> RoundRecord:
        return RoundRecord(
            round=number, time=at, reward_local=0.1 * number, reward_external=None, answer_rate=1.0, loss=0.0,
            skipped=None, groups_own=4, groups_external=0, tokens_trained=0, tokens_generated=0, tokens_per_s=0.0,
            seconds={"generate": 1.0, "publish": 0.5, "rescore": 0.25, "train": 2.0, "evaluate": 9.0}, peers=1, rollouts_out=0,
            rollouts_in=0, rejected={}, published=True, held_out=held_out,
        )

    run = NodeRun.from_records(3, [record(1, 100.0, {"greedy": 0.2}), record(2, 104.0), record(3, 110.0, {"greedy": 0.3})])
    assert run.seed == 3 and run.rewards == pytest.approx([0.1, 0.2, 0.3])
    assert run.compute_s == [3.25, 3.25, 3.25]  # an evaluation or a publish is not the node's learning compute
    assert run.wall_s == pytest.approx([12.75, 4.0, 6.0])
    assert run.held_out == 0.3


def test_the_derived_gpu_like_table_gives_the_silo_the_asked_sampling_share_and_keeps_training_seconds():
    silo = [NodeRun(0, [0.1] * 4, compute_s=[3.0] * 4, generate_s=[1.0] * 4)]  # sampling is 1/3 of the silo's
    half = [NodeRun(0, [0.1] * 4, compute_s=[2.5] * 4, generate_s=[0.5] * 4)]  # half the sampling, as much training
    derived = as_if_generation_share({"8/0": silo, "4/4": half}, 0.8)
    assert derived["8/0"][0].compute_s == pytest.approx([10.0] * 4)  # 8 s sampling + 2 s training
    assert derived["4/4"][0].compute_s == pytest.approx([6.0] * 4)  # 4 s sampling + 2 s training
    tables = report({"8/0": silo, "4/4": half})
    assert [row.compute_ratio for row in tables["measured"]] == pytest.approx([1.0, 3.0 / 2.5])
    assert [row.compute_ratio for row in tables["generation 80% of the silo's compute (derived)"]] == pytest.approx([1.0, 10 / 6])
    assert report({"4/4": half}) == {}
