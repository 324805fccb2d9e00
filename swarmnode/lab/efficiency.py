"""What sharing buys a volunteer (docs/DESIGN.md §4), measured the same way on a real swarm and in the
simulator: reward per round, per hour of the node's own compute and per wall-clock hour, and the compute it takes to reach the reward the silo (8/0) ends at. Compute is generate + rescore +
train: rescoring peers' groups is work only sharing costs, so it counts against sharing.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from itertools import accumulate
from pathlib import Path

from swarmnode.ops.dashboard import moving_average
from swarmnode.ops.metrics import MOVING_AVERAGE_ROUNDS, RoundRecord

SILO = "8/0"
GPU_LIKE_SHARE = 0.8  # assumed, not measured: a device where sampling dominates, as decoding usually does on a GPU
COMPUTE_PHASES = ("generate", "rescore", "train")


@dataclass(frozen=True)
class NodeRun:
    """One node of one run, per round: its own reward, its compute seconds (generate + rescore + train) and
    the round's wall seconds."""

    seed: int
    rewards: Sequence[float]
    compute_s: Sequence[float]
    wall_s: Sequence[float] | None = None  # None in the simulator, where wall time is compute
    collapses: int = 0
    held_out: float | None = None  # greedy pass rate of the node's last held-out evaluation
    generate_s: Sequence[float] | None = None  # the sampling part of compute_s

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> NodeRun:
        """From a stored trace (a result file's node entry), ignoring its other keys."""
        return cls(**{item.name: data[item.name] for item in fields(cls) if item.name in data})

    @classmethod
    def from_records(cls, seed: int, records: Sequence[RoundRecord]) -> NodeRun:
        """From a node's metrics.jsonl of one uninterrupted run: a round's wall time is the gap to the previous
        record (the first round, which has none, counts its phases); a round repeated after a kill counts once, as
        `read_records` keeps only the redone one."""
        times = [record.time for record in records]
        gaps = [sum(records[0].seconds.values())] + [b - a for a, b in zip(times, times[1:])] if records else []
        evaluated = [record.held_out for record in records if record.held_out]
        return cls(
            seed=seed,
            rewards=[record.reward_local for record in records],
            compute_s=[sum(record.seconds.get(phase, 0.0) for phase in COMPUTE_PHASES) for record in records],
            wall_s=gaps,
            collapses=sum(record.collapsed for record in records),
            held_out=evaluated[-1]["greedy"] if evaluated else None,
            generate_s=[record.seconds.get("generate", 0.0) for record in records],
        )


@dataclass
class Efficiency:
    """One configuration against the silo. Ratios are config / silo; `*_to_target` are means over the seeds
    that reached the target, with `seeds_reached` saying how many did."""

    config: str
    nodes: int
    reward_per_round: float
    reward_ratio: float
    reward_per_compute_hour: float
    compute_ratio: float  # of reward per compute hour
    reward_per_wall_hour: float | None
    wall_ratio: float | None
    compute_s_per_round: float
    seeds: int
    seeds_reached: int
    rounds_to_target: float | None
    compute_to_target_s: float | None
    compute_to_target_ratio: float | None  # below 1: the silo's final reward for less compute than the silo spent
    held_out: float | None
    collapsed_nodes: int

    def to_dict(self) -> dict:
        return asdict(self)


def as_if_generation_share(
    runs: Mapping[str, Sequence[NodeRun]], share: float, silo: str = SILO
) -> dict[str, list[NodeRun]]:
    """The same runs on a device where sampling is `share` of the silo's compute (a GPU's rollouts
    typically dominate; on a CPU training does): every generate second is scaled by one factor chosen so
    the silo's pooled compute has that share, the rest is kept. Derived from measured phases, not measured."""
    if not 0 < share < 1:
        raise ValueError(f"share must be between 0 and 1, not {share}")
    generated = sum(sum(node.generate_s) for node in runs[silo] if node.generate_s)
    if generated <= 0 or any(node.generate_s is None for nodes in runs.values() for node in nodes):
        raise ValueError("the runs carry no generate seconds to scale")
    rest = sum(sum(node.compute_s) for node in runs[silo]) - generated
    scale = share / (1 - share) * rest / generated
    return {
        config: [
            replace(node, compute_s=[c + (scale - 1) * g for c, g in zip(node.compute_s, node.generate_s or ())])
            for node in nodes
        ]
        for config, nodes in runs.items()
    }


def report(runs: Mapping[str, Sequence[NodeRun]], share: float = GPU_LIKE_SHARE) -> dict[str, list[Efficiency]]:
    """The efficiency table as measured and, when generate seconds are known, as if sampling were `share`
    of the silo's compute (derived); empty without a silo to compare with."""
    if SILO not in runs:
        return {}
    tables = {"measured": efficiency(runs)}
    if all(node.generate_s is not None for nodes in runs.values() for node in nodes):
        tables[f"generation {share:.0%} of the silo's compute (derived)"] = efficiency(as_if_generation_share(runs, share))
    return tables


def reach_round(curve: Sequence[float], target: float, window: int) -> int | None:
    """The 1-based round at which the moving average of `curve` first reaches `target`, counting only
    rounds with a full window (a lucky first round is not learning)."""
    averaged = moving_average(list(curve), window)
    return next((index + 1 for index in range(window - 1, len(averaged)) if averaged[index] >= target - 1e-12), None)


def efficiency(
    runs: Mapping[str, Sequence[NodeRun]], silo: str = SILO, window: int = MOVING_AVERAGE_ROUNDS
) -> list[Efficiency]:
    """Each configuration in `runs` against `silo` (which must be there, with the same seeds and rounds).

    The target of seed s is the silo's final moving-average reward in seed s (mean over its nodes); a
    configuration's compute to reach it is the mean node's cumulative compute at the round its own
    mean-over-nodes curve first gets there, divided by what the silo spent to get there itself.
    """
    if silo not in runs:
        raise ValueError(f"no {silo} runs to compare with (have {sorted(runs)})")
    silo_curves = _curves(runs[silo])
    silo_reward = _pooled(runs[silo], "rewards")
    silo_compute = silo_reward / _pooled(runs[silo], "compute_s")
    silo_wall = _per_wall(runs[silo])
    rows = []
    for config, nodes in runs.items():
        curves = _curves(nodes)
        ratios, rounds_needed, seconds_needed = [], [], []
        for seed, (rewards, compute) in curves.items():
            silo_rewards, silo_spent = silo_curves[seed]
            target = moving_average(silo_rewards, window)[-1]
            silo_round = reach_round(silo_rewards, target, window)
            reached = reach_round(rewards, target, window)
            if reached is None or silo_round is None:
                continue
            spent = sum(compute[:reached])
            rounds_needed.append(reached)
            seconds_needed.append(spent)
            ratios.append(spent / sum(silo_spent[:silo_round]))
        reward = _pooled(nodes, "rewards")
        wall = _per_wall(nodes)
        held_out = [node.held_out for node in nodes if node.held_out is not None]
        rows.append(Efficiency(
            config=config,
            nodes=len(nodes),
            reward_per_round=reward,
            reward_ratio=reward / silo_reward,
            reward_per_compute_hour=3600 * reward / _pooled(nodes, "compute_s"),
            compute_ratio=reward / _pooled(nodes, "compute_s") / silo_compute,
            reward_per_wall_hour=3600 * wall if wall is not None else None,
            wall_ratio=wall / silo_wall if wall is not None and silo_wall else None,
            compute_s_per_round=_pooled(nodes, "compute_s"),
            seeds=len(curves),
            seeds_reached=len(ratios),
            rounds_to_target=statistics.fmean(rounds_needed) if rounds_needed else None,
            compute_to_target_s=statistics.fmean(seconds_needed) if seconds_needed else None,
            compute_to_target_ratio=statistics.fmean(ratios) if ratios else None,
            held_out=statistics.fmean(held_out) if held_out else None,
            collapsed_nodes=sum(node.collapses > 0 for node in nodes),
        ))
    return rows


def _curves(nodes: Sequence[NodeRun]) -> dict[int, tuple[list[float], list[float]]]:
    """seed -> (reward, compute seconds) per round, each the mean over that seed's nodes."""
    by_seed: dict[int, list[NodeRun]] = {}
    for node in nodes:
        by_seed.setdefault(node.seed, []).append(node)
    return {
        seed: (
            [statistics.fmean(values) for values in zip(*(node.rewards for node in group))],
            [statistics.fmean(values) for values in zip(*(node.compute_s for node in group))],
        )
        for seed, group in sorted(by_seed.items())
    }


def _pooled(nodes: Sequence[NodeRun], field: str) -> float:
    """The per-round mean of a quantity over every round of every node."""
    values = [value for node in nodes for value in getattr(node, field)]
    return statistics.fmean(values)


def _per_wall(nodes: Sequence[NodeRun]) -> float | None:
    """Reward per wall-clock second, over every round of every node (None without wall times)."""
    if any(node.wall_s is None for node in nodes):
        return None
    seconds = sum(sum(node.wall_s or ()) for node in nodes)
    return sum(sum(node.rewards) for node in nodes) / seconds if seconds > 0 else None


def print_table(rows: Sequence[Efficiency], title: str) -> None:
    """The rows as a rich table: what a volunteer gains per round, per compute hour and to the silo's reward."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("I/J", "reward /round", "x silo", "reward /compute h", "x silo", "reward /wall h", "x silo",
                   "compute s /round", "to silo's final: rounds", "compute", "x silo's", "held-out", "collapsed"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row.config, f"{row.reward_per_round:.3f}", f"{row.reward_ratio:.3f}", f"{row.reward_per_compute_hour:.0f}",
            f"{row.compute_ratio:.3f}", _maybe(row.reward_per_wall_hour, ".0f"), _maybe(row.wall_ratio, ".3f"),
            f"{row.compute_s_per_round:.2f}",
            f"{_maybe(row.rounds_to_target, '.0f')} ({row.seeds_reached}/{row.seeds})",
            _maybe(row.compute_to_target_s, ".0f", " s"), _maybe(row.compute_to_target_ratio, ".2f"),
            _maybe(row.held_out, ".3f"), str(row.collapsed_nodes),
        )
    Console(width=180).print(table)


def _maybe(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def plot(runs: Mapping[str, Sequence[NodeRun]], title: str, path: Path, window: int = MOVING_AVERAGE_ROUNDS) -> None:
    """Reward (moving average, mean node, mean over seeds) against the mean node's cumulative own compute:
    a curve left of the silo's reaches a reward for less compute; the dotted line is the silo's final reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for index, (config, nodes) in enumerate(runs.items()):
        curves = _curves(nodes).values()
        rounds = min(len(rewards) for rewards, _ in curves)
        reward = [statistics.fmean(values) for values in zip(*(moving_average(r[:rounds], window) for r, _ in curves))]
        spent = [statistics.fmean(values) for values in zip(*(accumulate(c[:rounds]) for _, c in curves))]
        axis.plot(spent, reward, color=f"C{index}", label=config)
        if config == SILO:
            axis.axhline(reward[-1], color=f"C{index}", linestyle=":", linewidth=1)
    axis.set(xlabel="own compute, generate + rescore + train (s, mean node)",
             ylabel=f"own reward (moving average of {window})", title=title)
    axis.title.set_fontsize(9)
    axis.legend(title="I/J")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def gains(
    runs: list[dict], configs: list[str], models: list[str], share: float = GPU_LIKE_SHARE
) -> dict[str, dict[str, list[Efficiency]]]:
    """What each configuration buys a volunteer against the silo (8/0 in the same sampling mode and run): all
    nodes, and per model when models differ; measured, and derived for a device where sampling dominates."""
    groups = [None, *models] if len(models) > 1 else [None]
    return {"all" if model is None else Path(model).name: report(node_runs(runs, configs, model), share)
            for model in groups}


def node_runs(runs: list[dict], configs: list[str], model: str | None = None) -> dict[str, list[NodeRun]]:
    by_config = {
        config: [NodeRun.from_dict(node) for run in runs if run["config"] == config
                 for node in run["nodes"] if (model is None or node["model"] == model) and node["rewards"]]
        for config in configs
    }
    return {config: nodes for config, nodes in by_config.items() if nodes}
