"""The in-process simulator runs the node's own transplant rule (the benchmarks' breadth depends on it)."""

from __future__ import annotations

from swarmnode.config import load_config
from swarmnode.lab.simulation import SimulatedNode, simulate

SMALL = ["sapo.completions_per_question=4", "model.max_new_tokens=8", "gossip.enabled=false", "eval.every_rounds=0"]


def test_a_transplant_node_asks_all_q_in_round_one_then_i_while_peers_supply_groups():
    config = load_config(None, [*SMALL, "sapo.sampling=transplant", "sapo.questions_per_round=4",
                                "sapo.local_groups=2", "sapo.external_groups=2"])
    silo = load_config(None, [*SMALL, "sapo.questions_per_round=4", "sapo.local_groups=4", "sapo.external_groups=0"])
    traces = simulate([SimulatedNode(config, "swarmnode-seed")] * 2 + [SimulatedNode(silo, "swarmnode-seed")], rounds=3, seed=0)
    assert [trace.questions for trace in traces] == [[4, 2, 2], [4, 2, 2], [4, 4, 4]]
    assert all(len(trace.compute_s) == 3 and min(trace.compute_s) > 0 for trace in traces)
