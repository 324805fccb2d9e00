"""Plots of a node's run from its metrics.jsonl: reward (own vs peers'), loss, what training did (clip,
gradient norm, KL to the start, importance weights, peers' share of tokens), held-out pass rates per family,
and where round time goes. Every plot is of the surviving history (`read_records`), on whole rounds, with a
dotted line where the node restarted."""

from __future__ import annotations

from collections.abc import Sequence
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
    first, last = rounds[0], rounds[-1]
    restarts = [r.resumed_from for r in records if r.resumed_from is not None]

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
    _round_axis(axis, first, last, restarts)
    _y_span(axis, local + [y for _, y in external], high=1.0)  # rewards are scores in 0..1
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
    axis.set(xlabel="round", ylabel="SAPO loss", title="loss")
    _round_axis(axis, first, last, restarts)
    if skipped or restarts:
        axis.legend()
    axis.grid(alpha=0.3)
    paths.append(_save(figure, out / "loss.png"))

    stepped = [r for r in records if r.updates]
    figure, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    panels = [  # (axis, title, values, color, bound): all four are never negative; a share is at most 1
        (axes[0][0], "clip fraction", [r.clip_fraction for r in stepped], "tab:purple", None),
        (axes[0][1], "gradient norm (before clipping)", [r.grad_norm for r in stepped], "tab:orange", None),
        (axes[1][0], "KL to the start (own tokens)", [r.kl_to_start for r in stepped], "tab:brown", None),
        (axes[1][1], "peers' share of trained tokens", [r.external_token_share for r in stepped], "tab:blue", 1.0),
    ]
    for axis, title, values, color, bound in panels:
        points = [(r.round, v) for r, v in zip(stepped, values) if v is not None]
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, ".", alpha=0.3, color=color)
            axis.plot(xs, moving_average(list(ys), MOVING_AVERAGE), color=color)
            _y_span(axis, ys, bound)
        else:
            axis.text(0.5, 0.5, "not tracked", ha="center", va="center", transform=axis.transAxes, color="grey")
        axis.set(title=title)
        _round_axis(axis, first, last, restarts)
        axis.grid(alpha=0.3)
    importance = [(r.round, r.importance_mean, r.importance_max) for r in stepped if r.importance_max != 1.0]
    if importance:
        xs, means, maxima = zip(*importance)
        axes[1][1].plot(xs, maxima, "x", alpha=0.4, color="tab:red", label="importance weight max")
        axes[1][1].plot(xs, means, "+", alpha=0.4, color="tab:green", label="importance weight mean")
        axes[1][1].legend(fontsize="small")
        _y_span(axes[1][1], maxima, high=1.0)  # the weights share the panel, up to importance_clip
    for axis in axes[1]:
        axis.set(xlabel="round")
    figure.suptitle("what training did (steps that ran)")
    paths.append(_save(figure, out / "training.png"))

    evaluations = [r.held_out for r in records if r.held_out]
    if evaluations:
        paths.append(_held_out_plot(evaluations, max(last, evaluations[-1]["after_rounds"]), out / "held_out.png"))

    figure, axis = plt.subplots(figsize=(10, 4))
    bottom = [0.0] * len(records)
    for phase in PHASES:
        values = [r.seconds.get(phase, 0.0) for r in records]
        axis.bar(rounds, values, bottom=bottom, width=1.0, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    axis.set(xlabel="round", ylabel="seconds", title="round time by phase")
    _round_axis(axis, first, last, restarts)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the bars, never over them
    paths.append(_save(figure, out / "round_time.png"))
    return paths


def _round_axis(axis, first: int, last: int, restarts: Sequence[int] = ()) -> None:
    """Whole rounds from `first` to `last` (one round alone still gets an axis around it), and a dotted line after
    each round a restart resumed from: the rounds after it replace the ones the restart lost."""
    from matplotlib.ticker import MaxNLocator

    axis.set_xlim(first - 0.5, last + 0.5)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for index, resumed_from in enumerate(restarts):
        label = "restarted from a checkpoint" if index == 0 else None
        axis.axvline(resumed_from + 0.5, color="grey", linestyle=":", linewidth=1.2, label=label)


def _y_span(axis, values: Sequence[float], high: float | None = None) -> None:
    """The y axis of a quantity that is never negative: from 0 to `high` (its bound, for scores and shares) or to
    its largest value. A constant series, e.g. a short run's zero clip fraction, spans 0 to twice its value (0..1
    at zero) instead of matplotlib's ±0.05 around it, which shows values the quantity cannot take."""
    top = max(values, default=0.0)
    if high is not None:
        top = max(top, high)
    elif top == min(values, default=0.0):
        top = 2 * top or 1.0
    axis.set_ylim(-0.04 * top, 1.04 * top)


def _held_out_plot(evaluations: list[dict], last: int, path: Path) -> Path:
    """One panel per family: greedy and sampled pass rates on the held-out questions against rounds trained,
    over the whole run (0..`last`), so the base model's point alone sits at the start of the run's axis."""
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
        _round_axis(axis, 0, last)
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
