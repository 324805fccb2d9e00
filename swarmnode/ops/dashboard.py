"""The terminal dashboard: renders a `Status` snapshot with rich, whether it comes from the node in this
process or from a headless node's /status endpoint. Rendering is a pure function of the snapshot and the size
of the screen: a short or narrow screen shortens the panels, and the events always stay.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import statistics
import time
import unicodedata
import urllib.error
import urllib.request
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from swarmnode.net.bandwidth import BYTES_PER_KBIT
from swarmnode.net.census import Census, CensusEntry
from swarmnode.ops.client import fetch_status
from swarmnode.ops.metrics import MOVING_AVERAGE_ROUNDS, Status

SPARK = "▁▂▃▄▅▆▇█"
PHASES = ("evaluate", "generate", "publish", "collect", "rescore", "train", "checkpoint")
PANEL_NODES = 8  # rows of the dashboard's swarm table; `swarmnode swarm` lists every node
REACHABILITY_STYLE = {"public": "green", "private": "yellow"}
REACHABILITY_WORDS = {"unknown": "of unknown reachability"}  # "1 unknown" reads as an unknown node
CENSUS_COLUMNS = (
    "peer", "model", "round", "reward", "held-out", "shared", "received", "reach", "seen", "up", "phase", "software",
)
LEFT_ALIGNED = frozenset({"peer", "model", "reach", "phase", "software"})
# the census columns the dashboard shows, most telling first: the first KEPT_COLUMNS always, the others while they fit
DASHBOARD_COLUMNS = (
    "peer", "model", "round", "reward", "reach", "held-out", "phase", "seen", "shared", "received", "up", "software",
)
KEPT_COLUMNS = 5
MODEL_MIN_WIDTH = 12  # a model column cut to fewer cells no longer names the model
JOIN_COMMAND = "swarmnode join --peers"
EVENTS_SHOWN = 10
EVENTS_KEPT = 3  # everything else gives way before the dashboard shows fewer of the latest events


@dataclass(frozen=True)
class Fit:
    """How much of each part of the dashboard a screen has room for."""

    header_panel: bool = True  # else the header is a bare line
    rank: int = 4  # rows of the learning and swarm panels up to this rank (1: kept longest); 0: no such panels
    held_out_panel: bool = True  # else one row of the learning panel
    invites: int = 2  # addresses others can join with, on the shortest screens none
    census_rows: int | None = PANEL_NODES  # 0: the swarm's totals alone; None: not even those


# what gives way when the screen is short, one step at a time: the first fit that leaves room for the events is drawn
# (each step only shortens the dashboard, so the fits are searched by bisection once the full one does not fit)
SHRINK_STEPS = (
    ("census_rows", 5), ("held_out_panel", False), ("invites", 1), ("rank", 3), ("header_panel", False),
    ("census_rows", 3), ("rank", 2), ("rank", 1), ("census_rows", 0), ("census_rows", None), ("rank", 0),
    ("invites", 0),
)
FITS = tuple(
    itertools.accumulate(SHRINK_STEPS, lambda fit, step: dataclasses.replace(fit, **{step[0]: step[1]}), initial=Fit())
)
Row = tuple[int, str, RenderableType]  # a panel row: its rank (1: kept on the shortest screens), label, value


def moving_average(values: list[float], window: int = MOVING_AVERAGE_ROUNDS) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def sparkline(values: list[float], width: int = 48) -> str:
    if not values:
        return ""
    points = values[-width:]
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in points)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def render(status: Status, now: float | None = None) -> Dashboard:
    """The dashboard of `status` at `now` (default: the clock's), laid out for whatever screen draws it."""
    return Dashboard(status, time.time() if now is None else now)


@dataclass(frozen=True)
class Dashboard:
    """A snapshot's dashboard, laid out when rich draws it and so knows the screen's size (a Live asks each frame)."""

    status: Status
    now: float

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The richest fit that leaves room for EVENTS_KEPT events, then as many of the latest events as fit."""
        height = options.height or options.max_height
        options = options.update(height=None)  # each part as tall as its content

        def lines(part: RenderableType) -> int:
            return len(console.render_lines(part, options, pad=False))

        status, census = self.status, _census_of(self.status, self.now)
        kept = lines(_events(status, EVENTS_KEPT))

        def room(fit: Fit) -> bool:
            return sum(map(lines, _parts(status, census, self.now, fit, options.max_width))) + kept <= height

        fit = FITS[0] if room(FITS[0]) else FITS[min(bisect.bisect_left(FITS, True, lo=1, key=room), len(FITS) - 1)]
        parts = _parts(status, census, self.now, fit, options.max_width)
        used = sum(map(lines, parts))
        room_for = (count for count in range(EVENTS_SHOWN, 1, -1) if used + lines(_events(status, count)) <= height)
        shown = next(room_for, 1)
        yield from parts
        yield _events(status, shown)


def _parts(status: Status, census: Census | None, now: float, fit: Fit, width: int) -> list[RenderableType]:
    """Everything above the events, as much of it as `fit` keeps, for a screen `width` cells wide."""
    header = Text.assemble(
        ("swarmnode ", "bold cyan"),
        f"round {status.round}  ",
        ("phase ", "dim"), (status.phase, "bold yellow"), f" {status.phase_progress}" if status.phase_progress else "",
        ("  peer ", "dim"), status.peer_id[:16] + ("…" if len(status.peer_id) > 16 else ""),
        ("  swarm ", "dim"), status.swarm_id,
        ("  model ", "dim"), status.model_id, _model_detail(status),
        ("  up ", "dim"), _duration(now - status.started_at),
    )
    parts: list[RenderableType] = [Panel(header) if fit.header_panel else header]
    if fit.rank:
        body = Table.grid(expand=True)
        body.add_column(ratio=1)
        body.add_column(ratio=1)
        body.add_row(_learning(status, fit), _swarm(status, fit))
        parts.append(body)
    if status.maddrs and fit.invites:
        parts.append(_invite(status.maddrs[:fit.invites], width))
    if census is not None and fit.census_rows is not None:
        parts.append(_census(census, now, fit.census_rows, width, own=status.peer_id))
    if status.held_out_last and fit.held_out_panel:
        parts.append(_held_out(status))
    return parts


def census_title(census: Census, own: str | None = None) -> str:
    """The swarm's totals in one line; `≈` and the buckets read when the census saw only part of the swarm, and
    "this one" when the only node seen is `own` (this node)."""
    totals = census.totals()
    about = "≈" if totals.estimated else ""
    if not totals.estimated and [entry.peer_id for entry in census.entries] == [own]:
        nodes = "1 node: this one"
    else:
        reach = ", ".join(
            f"{count} {REACHABILITY_WORDS.get(state, state)}" for state, count in sorted(totals.reachability.items())
        )
        seen = f"{len(census.entries)} seen: " if totals.estimated else ""  # the breakdown is of the nodes seen
        nodes = f"{about}{_counted(totals.nodes, 'node')} ({seen}{reach or 'none'})"
    return (
        f"swarm {peer_text(census.swarm_id).plain} (protocol v{census.protocol}): {nodes}, "
        f"{_counted(totals.models, 'model')}, "
        f"{about}{totals.rounds_per_hour:,.0f} rounds/h, {about}{totals.rollouts_per_hour:,.0f} rollouts/h"
    )


def _counted(count: float, noun: str) -> str:
    return f"{count:,.0f} {noun}{'' if round(count) == 1 else 's'}"


def census_notes(census: Census) -> str:
    """What a census missed: buckets not read (a sample, or cut by its deadline) and refused beacons."""
    notes = [] if census.complete else [f"{census.buckets_read} of {census.buckets_total} buckets read"]
    if census.timed_out:
        notes.append("cut by its deadline")
    if census.thin_buckets:
        notes.append(f"{census.thin_buckets} buckets answered by too few replicas (nodes may be hidden)")
    if census.full_buckets:
        notes.append(f"{census.full_buckets} buckets held more signers than a census opens (nodes may be left out)")
    if census.missing_self:
        notes.append("this node's own beacon was not in its bucket's answers (a replica withholds entries?)")
    notes += [f"{count} beacons refused: {reason}" for reason, count in sorted(census.refused.items())]
    return "; ".join(notes)


def peer_text(text: str) -> Text:
    """A peer's text as plain Text (never markup), with what this Python's Unicode database calls a control,
    format, private-use or separator character blanked (U+FFFD): beacons are checked against a fixed list."""
    return Text("".join(
        "\ufffd" if char != " " and unicodedata.category(char)[0] in "CZ" and unicodedata.category(char) != "Cn" else char
        for char in text
    ))


def census_table(
    census: Census, now: float, *, sort: str = "reward", limit: int | None = None,
    columns: tuple[str, ...] = CENSUS_COLUMNS, own: str | None = None, model_width: int | None = None,
) -> Table:
    """The live nodes, best first; `own` (this node) is named so. The model column wraps, or is cut with … to
    `model_width`. Every text in it comes from a peer: shown through `peer_text`."""
    table = Table(box=None, padding=(0, 1), header_style="dim")
    for name in columns:
        model = name == "model"
        table.add_column(
            name, justify="left" if name in LEFT_ALIGNED else "right", no_wrap=not model or model_width is not None,
            overflow="ellipsis", max_width=model_width if model else None,
        )
    entries = census.sorted(sort)
    for entry in entries[:limit]:
        cells = _census_cells(entry, now, own)
        table.add_row(*(cells[name] for name in columns))
    if limit is not None and len(entries) > limit:  # under the table, not in a column it would widen
        table.caption = Text(f"… {len(entries) - limit} more: swarmnode swarm", style="dim", justify="left")
    return table


def _census_cells(entry: CensusEntry, now: float, own: str | None) -> dict[str, Text]:
    beacon = entry.beacon
    return {
        "peer": Text("this node", style="bold") if entry.peer_id == own else peer_text(entry.peer_id[-12:]),
        "model": peer_text(beacon.model_id),
        "round": Text(f"{beacon.round:,}"),
        "reward": Text("—" if beacon.reward is None else f"{beacon.reward:.3f}"),
        "held-out": Text("—" if beacon.held_out is None else f"{beacon.held_out:.3f} @{beacon.held_out_round}"),
        "shared": Text(f"{beacon.rollouts_shared:,}"),
        "received": Text(f"{beacon.rollouts_received:,}"),
        "reach": Text(beacon.reachability.value, style=REACHABILITY_STYLE.get(beacon.reachability.value, "dim")),
        "seen": Text(f"{max(now - beacon.timestamp, 0.0):.0f} s ago"),
        "up": Text(_duration(beacon.uptime_s)),
        "phase": peer_text(beacon.phase),
        "software": peer_text(beacon.software),
    }


def _census_of(status: Status, now: float) -> Census | None:
    """The node's latest census with this node's row as of `now`: its beacon there is up to a window old (round 0
    all through the first window). None before the first census, or from a node whose /status has another shape."""
    try:
        census = Census.from_json(status.census) if status.census is not None else None
        live = status.beacon_fields(now)
    except (KeyError, TypeError, ValueError):
        return None
    if census is None:
        return None
    entries = [
        CensusEntry(entry.peer_id, dataclasses.replace(entry.beacon, timestamp=now, **live))
        if entry.peer_id == status.peer_id else entry
        for entry in census.entries
    ]
    return dataclasses.replace(census, entries=entries)


def _census(census: Census, now: float, rows: int, width: int, own: str) -> RenderableType:
    """The census panel for a screen `width` cells wide: its totals in the border when they fit there, and the
    columns that fit (DASHBOARD_COLUMNS); with no rows, its totals alone."""
    title = Text(census_title(census, own))
    if not rows:
        return title
    cells = [_census_cells(entry, now, own) for entry in census.entries]
    needed = {name: 2 + max([cell_len(name), *(row[name].cell_len for row in cells)]) for name in DASHBOARD_COLUMNS}
    inside = width - 4  # the panel's border and padding
    shown = list(DASHBOARD_COLUMNS[:KEPT_COLUMNS])
    for name in DASHBOARD_COLUMNS[KEPT_COLUMNS:]:
        if sum(needed[column] for column in shown) + needed[name] <= inside:
            shown.append(name)
    model_width = max(MODEL_MIN_WIDTH, inside - sum(needed[column] for column in shown if column != "model") - 2)
    table = census_table(
        census, now, limit=rows, columns=tuple(name for name in CENSUS_COLUMNS if name in shown), own=own,
        model_width=model_width,
    )
    in_border = title.cell_len <= width - 6
    return Panel(
        table if in_border else Group(title, table), title=title if in_border else "swarm",
        subtitle=peer_text(census_notes(census)) or None, border_style="cyan",
    )


def _invite(maddrs: list[str], width: int) -> Group:
    """How others join: each address on a line of its own, never broken, so that it can be copied; in the whole
    command when that fits. Only a screen narrower than an address folds it (a Live would cut it), and says so."""
    if all(cell_len(f"{JOIN_COMMAND} {maddr}") <= width for maddr in maddrs):
        label, lines = "others join with:", [f"{JOIN_COMMAND} {maddr}" for maddr in maddrs]
    else:
        folded = any(cell_len(maddr) > width for maddr in maddrs)
        label = f"others join with: {JOIN_COMMAND}" + (" (folded: widen the terminal to copy)" if folded else "")
        lines = maddrs
    return Group(Text(label, style="dim"), *(Text(line, style="bold", overflow="fold") for line in lines))


def _model_detail(status: Status) -> str:
    """" (5.5M, cpu, float32, 2 threads)", with the trainable share under LoRA; empty for an older node's
    /status, and without the threads for one that did not report them."""
    if not status.parameters:
        return ""
    lora = f" ({status.trainable_parameters / 1e6:.1f}M trained)" if status.trainable_parameters < status.parameters else ""
    threads = f", {status.threads} thread{'s' if status.threads > 1 else ''}" if status.threads else ""
    return f" ({status.parameters / 1e6:.1f}M{lora}, {status.device}, {status.dtype}{threads})"


def _held_out(status: Status) -> Panel:
    """Pass rates on the held-out questions, base model -> latest evaluation, per family."""
    table = Table(box=None, padding=(0, 2), header_style="dim")
    table.add_column("family")
    table.add_column("greedy: base → now", justify="right")
    table.add_column("sampled: base → now", justify="right")
    for family, now in sorted(status.held_out_last.items()):
        base = status.held_out_base.get(family)
        table.add_row(family, *(_base_to_now(base and base[mode], now[mode]) for mode in ("greedy", "sampled")))
    return Panel(table, title=f"held-out pass rate (after round {status.held_out_round})", border_style="magenta")


def _held_out_row(status: Status) -> Text:
    """The held-out panel in one row: the greedy pass rate, mean over the families, base -> now."""
    families = status.held_out_last
    bases = [status.held_out_base[family]["greedy"] for family in families if family in status.held_out_base]
    now = statistics.fmean(score["greedy"] for score in families.values())
    shown = _base_to_now(statistics.fmean(bases) if len(bases) == len(families) else None, now)
    return shown.append(f" greedy @{status.held_out_round}", style="dim")


def _base_to_now(base: float | None, now: float) -> Text:
    if base is None:
        return Text(f"— → {now:.2f}")
    style = "green" if now > base else "red" if now < base else ""
    return Text(f"{base:.2f} → {now:.2f}", style=style)


def _rows(title: str, border_style: str, rows: list[Row], rank: int) -> Panel:
    """A panel of the rows of `rank` or below: the shorter the screen, the lower the rank."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", justify="right")
    table.add_column()
    for row_rank, label, value in rows:
        if row_rank <= rank:
            table.add_row(label, value)
    return Panel(table, title=title, border_style=border_style)


def _learning(status: Status, fit: Fit) -> Panel:
    averaged = moving_average(status.rewards)
    last = status.rewards[-1] if status.rewards else None
    external = [r for r in status.external_rewards if r is not None]
    asked = f"{status.questions[-1]} questions, " if status.questions else ""
    rows: list[Row] = [
        (1, "reward", f"{last:.3f} (MA{MOVING_AVERAGE_ROUNDS} {averaged[-1]:.3f})" if last is not None else "—"),
        (3, "trend", Text(sparkline(averaged), style="green")),
        (2, "peers' reward", f"{external[-1]:.3f}" if external else "—"),
        (2, "loss", f"{status.losses[-1]:+.4f}" if status.losses else "—"),
        (3, "sampling", f"{asked}{status.tokens_per_s:,.0f} tok/s"),
    ]
    if status.held_out_last and not fit.held_out_panel:
        rows.append((2, "held-out", _held_out_row(status)))
    if status.round_seconds:
        recent = status.round_seconds[-MOVING_AVERAGE_ROUNDS:]
        rows.append((1, "round time", f"{sum(recent) / len(recent):.2f} s"))
    total = sum(status.last_phase_seconds.values()) or 1.0
    phases = "  ".join(
        f"{name} {100 * status.last_phase_seconds[name] / total:.0f}%" for name in PHASES if name in status.last_phase_seconds
    )
    rows += [(4, "phases", phases or "—"), (2, "collapses", str(status.collapses))]
    return _rows("learning", "green", rows, fit.rank)


def _swarm(status: Status, fit: Fit) -> Panel:
    rows: list[Row] = [(4, "gossip", "on")] if status.gossip_enabled else [(1, "gossip", "off (silo)")]
    if status.gossip_enabled:
        style = REACHABILITY_STYLE.get(status.reachability, "dim")
        rows += [
            (1, "reachability", Text(f"{status.reachability} (DHT {status.dht_mode})", style=style)),
            (4, "port mapping", status.port_mapping),
        ]
    rejected = sorted(status.rejected_total.items(), key=lambda item: -item[1])
    rows += [
        (1, "peers", str(status.peers)),
        (2, "rollouts out", f"{status.rollouts_out_total:,}"),
        (2, "rollouts in", f"{status.rollouts_in_total:,}"),
        (3, "peer groups trained", f"{status.trained_external_groups_total:,}"),
        (2, "rejected", ", ".join(f"{reason} {count}" for reason, count in rejected) or "none"),
    ]
    if status.thin_reads_total:
        rows.append((1, "thin reads", Text(
            f"{status.thin_reads_total:,} keys answered by too few replicas (records may be hidden)", style="yellow",
        )))
    problems = sorted(status.problems_total.items(), key=lambda item: -item[1])
    rows.append((1, "problems", Text(", ".join(f"{kind} {count}" for kind, count in problems) or "none",
                                     style="yellow" if problems else "")))
    if status.traffic_in_per_s:
        total = [i + o for i, o in zip(status.traffic_in_per_s, status.traffic_out_per_s)]
        rows += [
            (3, "traffic", f"{_bytes(status.traffic_in_per_s[-1])}/s in, {_bytes(status.traffic_out_per_s[-1])}/s out"),
            (4, "", Text(sparkline(moving_average(total)), style="blue")),
        ]
    if status.max_kbps is not None:
        rows.append((3, "traffic cap", f"{_bytes(status.max_kbps * BYTES_PER_KBIT)}/s in + out"))
    return _rows("swarm", "blue", rows, fit.rank)


def _bytes(count: float) -> str:
    if count < 1e3:
        return f"{count:.0f} B"
    return f"{count / 1e3:.1f} KB" if count < 1e6 else f"{count / 1e6:.1f} MB"


def _events(status: Status, count: int) -> Panel:
    """The latest `count` events, each whole (wrapped, never cut): problems and checkpoints are told here."""
    lines = status.events[-count:] or ["(no events yet)"]
    return Panel(Group(*(Text(line) for line in lines)), title="events")


def attach(url: str, refresh_s: float = 1.0, max_seconds: float | None = None) -> None:
    """Follow a running node's /status until interrupted (or for max_seconds)."""
    started = time.monotonic()
    waiting = Panel(Text(f"waiting for a node at {url} …", style="yellow"))
    with Live(waiting, refresh_per_second=4, screen=False) as live:
        while max_seconds is None or time.monotonic() - started < max_seconds:
            try:
                live.update(render(fetch_status(url)))
            except (OSError, urllib.error.URLError, json.JSONDecodeError, ValueError) as error:
                live.update(Panel(Text(f"cannot reach {url}/status ({error}); retrying …", style="yellow")))
            time.sleep(refresh_s)
