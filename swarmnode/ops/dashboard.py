"""The terminal dashboard: renders a `Status` snapshot with rich, whether it comes from the node in this
process or from a headless node's /status endpoint. Rendering is a pure function of the snapshot.
"""

from __future__ import annotations

import json
import time
import unicodedata
import urllib.error
import urllib.request

from rich.console import Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from swarmnode.net.census import Census
from swarmnode.ops.client import fetch_status
from swarmnode.ops.metrics import MOVING_AVERAGE_ROUNDS, Status

SPARK = "▁▂▃▄▅▆▇█"
PHASES = ("evaluate", "generate", "publish", "collect", "rescore", "train", "checkpoint")
PANEL_NODES = 8  # rows of the dashboard's swarm table; `swarmnode swarm` lists every node
REACHABILITY_STYLE = {"public": "green", "private": "yellow"}


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


def render(status: Status, now: float | None = None) -> RenderableType:
    now = time.time() if now is None else now
    header = Text.assemble(
        ("swarmnode ", "bold cyan"),
        f"round {status.round}  ",
        ("phase ", "dim"), (status.phase, "bold yellow"),
        ("  peer ", "dim"), status.peer_id[:16] + ("…" if len(status.peer_id) > 16 else ""),
        ("  swarm ", "dim"), status.swarm_id,
        ("  model ", "dim"), status.model_id, _model_detail(status),
        ("  up ", "dim"), _duration(now - status.started_at),
    )
    body = Table.grid(expand=True)
    body.add_column(ratio=1)
    body.add_column(ratio=1)
    body.add_row(_learning(status), _swarm(status))
    parts: list[RenderableType] = [Panel(header), body]
    census = _census_of(status)
    if census is not None:
        parts.append(_census(census, now))
    if status.held_out_last:
        parts.append(_held_out(status))
    return Group(*parts, _events(status))


def census_title(census: Census) -> str:
    """The swarm's totals in one line; `≈` and the buckets read when the census saw only part of the swarm."""
    totals = census.totals()
    about = "≈" if totals.estimated else ""
    reach = ", ".join(f"{count} {state}" for state, count in sorted(totals.reachability.items()))
    seen = f"{len(census.entries)} seen: " if totals.estimated else ""  # the breakdown is of the nodes seen
    return (
        f"swarm {peer_text(census.swarm_id).plain}: {about}{totals.nodes:.0f} nodes ({seen}{reach or 'none'}), "
        f"{totals.models} models, {about}{totals.rounds_per_hour:,.0f} rounds/h, "
        f"{about}{totals.rollouts_per_hour:,.0f} rollouts/h"
    )


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


def census_table(census: Census, now: float, *, sort: str = "reward", limit: int | None = None) -> Table:
    """The live nodes, best first. Every text in it comes from a peer: shown through `peer_text`."""
    table = Table(box=None, padding=(0, 1), header_style="dim")
    for name, justify in (
        ("peer", "left"), ("model", "left"), ("round", "right"), ("reward", "right"), ("held-out", "right"),
        ("shared", "right"), ("received", "right"), ("reach", "left"), ("seen", "right"), ("up", "right"),
        ("phase", "left"), ("software", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "model", overflow="ellipsis")
    entries = census.sorted(sort)
    for entry in entries[:limit]:
        beacon = entry.beacon
        table.add_row(
            peer_text(entry.peer_id[-12:]), peer_text(beacon.model_id), f"{beacon.round:,}",
            "—" if beacon.reward is None else f"{beacon.reward:.3f}",
            "—" if beacon.held_out is None else f"{beacon.held_out:.3f} @{beacon.held_out_round}",
            f"{beacon.rollouts_shared:,}", f"{beacon.rollouts_received:,}",
            Text(beacon.reachability.value, style=REACHABILITY_STYLE.get(beacon.reachability.value, "dim")),
            f"{max(now - beacon.timestamp, 0.0):.0f} s ago", _duration(beacon.uptime_s), peer_text(beacon.phase),
            peer_text(beacon.software),
        )
    if limit is not None and len(entries) > limit:
        table.add_row(Text(f"… {len(entries) - limit} more: swarmnode swarm", style="dim"))
    return table


def _census_of(status: Status) -> Census | None:
    """The node's latest census; None before the first, or from a node whose /status has another shape."""
    try:
        return Census.from_json(status.census) if status.census is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def _census(census: Census, now: float) -> Panel:
    return Panel(
        census_table(census, now, limit=PANEL_NODES), title=Text(census_title(census)),
        subtitle=peer_text(census_notes(census)) or None, border_style="cyan",
    )


def _model_detail(status: Status) -> str:
    """" (5.5M, cpu, float32)", with the trainable share under LoRA; empty for an older node's /status."""
    if not status.parameters:
        return ""
    lora = f" ({status.trainable_parameters / 1e6:.1f}M trained)" if status.trainable_parameters < status.parameters else ""
    return f" ({status.parameters / 1e6:.1f}M{lora}, {status.device}, {status.dtype})"


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


def _base_to_now(base: float | None, now: float) -> Text:
    if base is None:
        return Text(f"— → {now:.2f}")
    style = "green" if now > base else "red" if now < base else ""
    return Text(f"{base:.2f} → {now:.2f}", style=style)


def _learning(status: Status) -> Panel:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", justify="right")
    table.add_column()
    averaged = moving_average(status.rewards)
    last = status.rewards[-1] if status.rewards else None
    table.add_row("reward", f"{last:.3f} (MA{MOVING_AVERAGE_ROUNDS} {averaged[-1]:.3f})" if last is not None else "—")
    table.add_row("trend", Text(sparkline(averaged), style="green"))
    external = [r for r in status.external_rewards if r is not None]
    table.add_row("peers' reward", f"{external[-1]:.3f}" if external else "—")
    table.add_row("loss", f"{status.losses[-1]:+.4f}" if status.losses else "—")
    asked = f"{status.questions[-1]} questions, " if status.questions else ""
    table.add_row("sampling", f"{asked}{status.tokens_per_s:,.0f} tok/s")
    if status.round_seconds:
        recent = status.round_seconds[-MOVING_AVERAGE_ROUNDS:]
        table.add_row("round time", f"{sum(recent) / len(recent):.2f} s")
    total = sum(status.last_phase_seconds.values()) or 1.0
    phases = "  ".join(
        f"{name} {100 * status.last_phase_seconds[name] / total:.0f}%" for name in PHASES if name in status.last_phase_seconds
    )
    table.add_row("phases", phases or "—")
    table.add_row("collapses", str(status.collapses))
    return Panel(table, title="learning", border_style="green")


def _swarm(status: Status) -> Panel:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", justify="right")
    table.add_column()
    table.add_row("gossip", "on" if status.gossip_enabled else "off (silo)")
    if status.gossip_enabled:
        style = {"public": "green", "private": "yellow"}.get(status.reachability, "dim")
        table.add_row("reachability", Text(f"{status.reachability} (DHT {status.dht_mode})", style=style))
        table.add_row("port mapping", status.port_mapping)
    table.add_row("peers", str(status.peers))
    table.add_row("rollouts out", f"{status.rollouts_out_total:,}")
    table.add_row("rollouts in", f"{status.rollouts_in_total:,}")
    table.add_row("peer groups trained", f"{status.trained_external_groups_total:,}")
    rejected = sorted(status.rejected_total.items(), key=lambda item: -item[1])
    table.add_row("rejected", ", ".join(f"{reason} {count}" for reason, count in rejected) or "none")
    if status.thin_reads_total:
        table.add_row("thin reads", Text(f"{status.thin_reads_total:,} keys answered by too few replicas (records may be hidden)",
                                         style="yellow"))
    problems = sorted(status.problems_total.items(), key=lambda item: -item[1])
    table.add_row("problems", Text(", ".join(f"{kind} {count}" for kind, count in problems) or "none",
                                   style="yellow" if problems else ""))
    if status.traffic_in_per_s:
        total = [i + o for i, o in zip(status.traffic_in_per_s, status.traffic_out_per_s)]
        table.add_row("traffic", Text(sparkline(moving_average(total)), style="blue"))
        table.add_row("", f"{_bytes(status.traffic_in_per_s[-1])}/s in, {_bytes(status.traffic_out_per_s[-1])}/s out")
    for maddr in status.maddrs[:2]:
        table.add_row("join with", Text(maddr, overflow="fold"))
    return Panel(table, title="swarm", border_style="blue")


def _bytes(count: float) -> str:
    if count < 1e3:
        return f"{count:.0f} B"
    return f"{count / 1e3:.1f} KB" if count < 1e6 else f"{count / 1e6:.1f} MB"


def _events(status: Status) -> Panel:
    lines = status.events[-10:] or ["(no events yet)"]
    return Panel(Group(*(Text(line, overflow="ellipsis", no_wrap=True) for line in lines)), title="events")


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
