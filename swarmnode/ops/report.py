"""Plots of a node's run from its metrics.jsonl: reward (own vs peers'), loss, what training did (clip,
gradient norm, KL to the start, importance weights, peers' share of tokens), held-out pass rates per family,
and where round time goes."""

from __future__ import annotations

from pathlib import Path

from swarmnode.ops.dashboard import PHASES, moving_average
from swarmnode.ops.metrics import read_records

MOVING_AVERAGE = 20


class ReportError(Exception):
    """Nothing to plot; the message says where we looked."""


def write_report(data_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write rewards.png, loss.png, training.png, held_out.png (when evaluations ran) and round_time.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = Path(data_dir) / "metrics.jsonl"
    if not source.exists():
        raise ReportError(f"{source} does not exist; run `swarmnode join --data-dir {data_dir}` first")
    records = read_records(source)
    if not records:
        raise ReportError(f"{source} holds no complete round yet")
    out = Path(out_dir) if out_dir else Path(data_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    rounds = [r.round for r in records]

    figure, axis = plt.subplots(figsize=(9, 4.5))
    local = [r.reward_local for r in records]
    axis.plot(rounds, local, alpha=0.25, color="tab:green")
    axis.plot(rounds, moving_average(local, MOVING_AVERAGE), color="tab:green", label="own samples")
    external = [(r.round, r.reward_external) for r in records if r.reward_external is not None]
    if external:
        xs, ys = zip(*external)
        axis.plot(xs, ys, alpha=0.25, color="tab:blue")
        axis.plot(xs, moving_average(list(ys), MOVING_AVERAGE), color="tab:blue", label="peers' samples (rescored)")
    axis.set(xlabel="round", ylabel="mean reward", title=f"reward (moving average of {MOVING_AVERAGE})")
    axis.legend()
    axis.grid(alpha=0.3)
    paths = [_save(figure, out / "rewards.png")]

    figure, axis = plt.subplots(figsize=(9, 3.5))
    trained = [(r.round, r.loss) for r in records if not r.skipped]
    if trained:
        xs, ys = zip(*trained)
        axis.plot(xs, ys, ".", alpha=0.3, color="tab:red")
        axis.plot(xs, moving_average(list(ys), MOVING_AVERAGE), color="tab:red")
    skipped = [r.round for r in records if r.skipped]
    if skipped:
        axis.plot(skipped, [0.0] * len(skipped), "|", color="grey", label=f"skipped steps ({len(skipped)})")
        axis.legend()
    axis.set(xlabel="round", ylabel="SAPO loss", title="loss")
    axis.grid(alpha=0.3)
    paths.append(_save(figure, out / "loss.png"))

    stepped = [r for r in records if r.updates]
    figure, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    panels = [
        (axes[0][0], "clip fraction", [r.clip_fraction for r in stepped], "tab:purple"),
        (axes[0][1], "gradient norm (before clipping)", [r.grad_norm for r in stepped], "tab:orange"),
        (axes[1][0], "KL to the start (own tokens)", [r.kl_to_start for r in stepped], "tab:brown"),
        (axes[1][1], "peers' share of trained tokens", [r.external_token_share for r in stepped], "tab:blue"),
    ]
    for axis, title, values, color in panels:
        points = [(r.round, v) for r, v in zip(stepped, values) if v is not None]
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, ".", alpha=0.3, color=color)
            axis.plot(xs, moving_average(list(ys), MOVING_AVERAGE), color=color)
        else:
            axis.text(0.5, 0.5, "not tracked", ha="center", va="center", transform=axis.transAxes, color="grey")
        axis.set(title=title)
        axis.grid(alpha=0.3)
    importance = [(r.round, r.importance_mean, r.importance_max) for r in stepped if r.importance_max != 1.0]
    if importance:
        xs, means, maxima = zip(*importance)
        axes[1][1].plot(xs, maxima, "x", alpha=0.4, color="tab:red", label="importance weight max")
        axes[1][1].plot(xs, means, "+", alpha=0.4, color="tab:green", label="importance weight mean")
        axes[1][1].legend(fontsize="small")
    for axis in axes[1]:
        axis.set(xlabel="round")
    figure.suptitle("what training did (steps that ran)")
    paths.append(_save(figure, out / "training.png"))

    evaluations = [r.held_out for r in records if r.held_out]
    if evaluations:
        paths.append(_held_out_plot(evaluations, out / "held_out.png"))

    figure, axis = plt.subplots(figsize=(9, 4))
    bottom = [0.0] * len(records)
    for phase in PHASES:
        values = [r.seconds.get(phase, 0.0) for r in records]
        axis.bar(rounds, values, bottom=bottom, width=1.0, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    axis.set(xlabel="round", ylabel="seconds", title="round time by phase")
    axis.legend(ncol=len(PHASES), fontsize="small")
    paths.append(_save(figure, out / "round_time.png"))
    return paths


def _held_out_plot(evaluations: list[dict], path: Path) -> Path:
    """One panel per family: greedy and sampled pass rates on the held-out questions against rounds trained."""
    import matplotlib.pyplot as plt

    families = sorted({family for evaluation in evaluations for family in evaluation["families"]})
    columns = min(3, len(families))
    rows = -(-len(families) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False, sharey=True)
    for axis, family in zip(axes.flat, families):
        points = [(e["after_rounds"], e["families"][family]) for e in evaluations if family in e["families"]]
        xs = [x for x, _ in points]
        axis.plot(xs, [score["greedy"] for _, score in points], "o-", color="tab:blue", label="greedy")
        axis.plot(xs, [score["sampled"] for _, score in points], "s--", color="tab:orange", label="sampled")
        axis.set(title=family, xlabel="rounds trained", ylim=(-0.02, 1.02))
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(families) :]:
        axis.axis("off")
    axes[0][0].set(ylabel="pass rate")
    axes[0][0].legend(fontsize="small")
    first = evaluations[0]
    figure.suptitle(
        f"held-out pass rate ({first['questions'] // len(families)} questions per family, greedy and "
        f"{first['samples_per_question']} samples each; round 0 is the base model)"
    )
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
