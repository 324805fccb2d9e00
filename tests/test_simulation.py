"""The in-process simulator runs the node's own transplant rule (the benchmarks' breadth depends on it)."""

from __future__ import annotations

from swarmnode.config import load_config
from swarmnode.lab.simulation import SimulatedNode, simulate

SMALL = ["sapo.completions_per_question=4", "model.max_new_tokens=8", "gossip.enabled=false", "eval.every_rounds=0"]


def test_a_transplant_node_asks_all_q_in_round_one_then_i_while_peers_supply_groups():
    config = load_config(None, [*SMALL, "sapo.sampling=transplant", "sapo.questions_per_round=4",
                                "sapo.local_groups=2", "sapo.external_groups=2"])
    silo = load_config(None, [*SMALL, "sapo.questions_per_round=4", "sapo.local_groups=4", "sapo.external_groups=0"])
    runs = simulate([SimulatedNode(config, "swarmnode-seed")] * 2 + [SimulatedNode(silo, "swarmnode-seed")], rounds=3, seed=0)
    assert [[record.questions for record in run.records] for run in runs] == [[4, 2, 2], [4, 2, 2], [4, 4, 4]]
    assert all(len(run.series()["compute_s"]) == 3 and min(run.series()["compute_s"]) > 0 for run in runs)


def test_the_same_seed_is_the_same_run_whatever_the_threads_do():
    """Nodes play on threads of their own; every random choice is a node's or the dealer's, so two runs agree."""
    config = load_config(None, [*SMALL, "sapo.questions_per_round=4", "sapo.local_groups=2", "sapo.external_groups=2"])
    first, second = (simulate([SimulatedNode(config, "swarmnode-seed")] * 3, rounds=2, seed=5) for _ in range(2))
    rewards = [[record.reward_local for record in run.records] for run in first]
    assert rewards == [[record.reward_local for record in run.records] for run in second]
    assert all(record.groups_external <= 2 for run in first for record in run.records)
