"""A model of the swarm at scale: per-node and busiest-node DHT load, lookups and delivery at N peers, for today's
key layout (v1) and the tiered one, with hivemind's own routing tables and lookups over a simulated transport
(`swarmnode.lab.swarm_model`). `--calibrate FILE...` runs the model on the settings of real runs and prints
measured against modelled, flagging ratios outside ±25%.

Usage: python benchmarks/model_swarm.py [--sizes 16,64,128,256,1000,10000,100000] [--layouts v1,tiered]
       [--sample 1000] [--churn-per-min 0.01] [--table-fill 1.0] [--overhead-bytes 0] [--rtt-ms 100]
       [--find-neighbours 7] [--census-every-s 120] [--full-neighbours] [--round-spread 0.8] [--calibrate FILE ...] [--fit] [--out benchmarks/results/swarm-model.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from swarmnode.lab.swarm_model import ModelConfig, ModelResult, run_model

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.25
FIT_FILLS = (0.5, 0.75, 1.0)  # routing-table fill: the share of a bucket's range a peer has met


@dataclass(frozen=True)
class Measured:
    """One real run's row: the settings the model must reproduce and the numbers to compare."""

    source: str
    peers: int
    settings: dict[str, Any]
    values: dict[str, float]


# measured name -> what the model says for it (per node and round for gossip runs, per window for census runs)
GOSSIP_METRICS: dict[str, Callable[[ModelResult, ModelConfig], float]] = {
    "requests_per_node_round": lambda r, c: r.requests_sent_round_mean,
    "bytes_in_per_node_round": lambda r, c: r.bytes_in_round_mean,
    "busiest_node_bytes_per_round": lambda r, c: r.busiest_kb_window * 1000 / c.rounds_per_window,
    "busiest_node_requests_served_per_round": lambda r, c: r.busiest_served_window / c.rounds_per_window,
}
CENSUS_METRICS: dict[str, Callable[[ModelResult, ModelConfig], float]] = {
    "ours_requests_per_node_window": lambda r, c: r.requests_sent_round_mean,
    "ours_bytes_in_per_node_window": lambda r, c: r.bytes_in_round_mean,
    "ours_busiest_bytes_per_window": lambda r, c: r.busiest_kb_window * 1000,
    "ours_busiest_served_per_window": lambda r, c: r.busiest_served_window,
    "ours_nodes_seen_mean": lambda r, c: r.census_seen_mean,
    "ours_buckets_read_mean": lambda r, c: r.census_keys_read_mean,
}
# benchmarks/results/swarm-scale*.json (bench_swarm_scale.py): per node or busiest node and window, counts
SCALE_METRICS: dict[str, Callable[[ModelResult, ModelConfig], float]] = {
    "sent_per_node_window": lambda r, c: r.requests_sent_round_mean * c.rounds_per_window,
    "bytes_per_node_window": lambda r, c: r.node_kb_round_mean * 1000 * c.rounds_per_window,
    "busiest_bytes_per_window": lambda r, c: r.busiest_kb_window * 1000,
    "served_busiest_window": lambda r, c: r.busiest_served_window,
    "directory_full_per_window": lambda r, c: r.refusals.get("directory_full", 0.0),
    "census_full_per_window": lambda r, c: r.refusals.get("census_full", 0.0),
}
# the same rows' requests per run of each operation (bench_swarm_scale's RpcCounter): which ones the model misses
OPERATION_METRICS = {
    "finds_per_publish": "publish find", "stores_per_publish": "publish store", "finds_per_collect": "collect find",
    "finds_per_look_ahead": "look_ahead find", "finds_per_beacon": "beacon find", "finds_per_census": "census find",
    "lookup_finds_per_publish": "publish lookup", "lookup_finds_per_collect": "collect lookup",
    "lookup_finds_per_beacon": "beacon lookup", "lookup_finds_per_census": "census lookup",
}
SCALE_METRICS.update({
    name: (lambda operation: lambda r, c: r.requests_per_operation.get(operation, 0.0))(operation)
    for name, operation in OPERATION_METRICS.items()
})


def measured_rows(path: Path) -> list[Measured]:
    """The rows of a real run's JSON, with the settings the model needs to run the same workload."""
    data = json.loads(path.read_text())
    common = {"churn_per_min": 0.0, "nat_signers": 0, "warmup_rounds": 1}
    if "gossip" in data and isinstance(data["gossip"], dict) and "HEAD" in data["gossip"]:  # layout-before-after.json
        rows, workload = data["gossip"]["HEAD"]["rows"], {"collect": 4, "per_peer_cap": 2, "frame_bytes": 7169, "rounds": 4}
        return [_gossip_row(f"{path.name} (HEAD)", row, workload, common) for row in rows]
    if "workload" in data:  # bench_gossip.py
        return [_gossip_row(path.name, row, data["workload"], common) for row in data["results"]]
    if "beacon_bytes" in data:  # bench_census.py
        settings = {**common, "gossip": False, "census": True, "beacon_bytes": data["beacon_bytes"],
                    "rounds": data.get("windows", 2), "rounds_per_window": 1}
        return [Measured(path.name, row["peers"], settings, {k: row[k] for k in CENSUS_METRICS if k in row})
                for row in data["results"]]
    return [_scale_row(path.name, row, common) for row in data.get("rows", []) if row.get("kept_up")]


def _scale_row(source: str, row: dict, common: dict) -> Measured:
    """A bench_swarm_scale row that kept up: its schedule, and its counts per node and window. A protocol v1 tree
    ran the v1 layout, a v2 one the tiered one (rows from before the protocol was recorded: the `--before` tree
    was v1). A tree that looked keys up ahead (its rows count some `look_aheads`) also remembered lookups; older
    ones did neither."""
    config = row["config"]
    rounds_per_window = max(round(config["window_s"] / config["round_s"]), 1)
    windows = config["windows"]
    protocol = row.get("protocol", 1 if row.get("tree") == "before" else 2)
    settings = {
        **common, "layout": "v1" if protocol == 1 else "tiered", "window_s": config["window_s"],
        "rounds_per_window": rounds_per_window, "rounds": windows * rounds_per_window, "nat_signers": config["nat"],
        "collect_rollouts": config["collect"], "frame_bytes": row.get("frame_bytes", 7169),
        "look_ahead": bool(row.get("look_aheads")), "replica_keep_s": None if row.get("look_aheads") else 0.0,
        "epoch_windows": row.get("epoch_windows", 1),  # rows from before protocol v3 name none: keys of a window
    }
    values = {
        "sent_per_node_window": row["sent_per_node_window"],
        "bytes_per_node_window": row["in_per_node_window"] + row["out_per_node_window"],
        "busiest_bytes_per_window": max(row["in_busiest_window"] + row["out_busiest_window"], 1.0),
        "served_busiest_window": row["served_busiest_window"],
        **{f"{reason}_per_window": count / windows for reason, count in row.get("refusals", {}).items()
           if reason in ("directory_full", "census_full")},
        **{name: row[name] for name in OPERATION_METRICS if isinstance(row.get(name), (int, float)) and not math.isnan(row[name])},
    }
    return Measured(f"{source} ({row.get('tree', 'this')})", row["peers"], settings, values)


def _gossip_row(source: str, row: dict, workload: dict, common: dict) -> Measured:
    rounds = workload.get("rounds", 4)
    settings = {
        **common, "gossip": True, "census": False, "collect_rollouts": workload["collect"],
        "per_peer_cap": workload["per_peer_cap"], "frame_bytes": workload["frame_bytes"], "rounds": rounds,
        # bench_gossip's default window (3600 s) holds the warm-up and every measured round
        "rounds_per_window": rounds + 1 if row.get("window_s", 3600.0) >= 60 else 1,
        "num_shards": row.get("shards") or 256,
    }
    return Measured(source, row["peers"], settings, {k: row[k] for k in GOSSIP_METRICS if k in row})


def metrics_for(measured: Measured) -> dict[str, Callable[[ModelResult, ModelConfig], float]]:
    for table in (GOSSIP_METRICS, CENSUS_METRICS, SCALE_METRICS):
        if set(measured.values) <= set(table):
            return table
    return SCALE_METRICS


def calibrate(rows: list[Measured], base: ModelConfig) -> list[dict[str, Any]]:
    """Model each measured row with its settings; per metric, measured, modelled and their ratio."""
    compared = []
    for row in rows:
        config = dataclasses.replace(base, peers=row.peers, **row.settings)
        result = run_model(config)
        for name, value in row.values.items():
            modelled = metrics_for(row)[name](result, config)
            ratio = modelled / value if value else math.nan
            compared.append({
                "source": row.source, "peers": row.peers, "metric": name, "measured": value, "modelled": modelled,
                "ratio": ratio, "outside": not (1 - TOLERANCE <= ratio <= 1 + TOLERANCE),
            })
    return compared


def fit_table_fill(rows: list[Measured], base: ModelConfig) -> tuple[float, dict[float, float]]:
    """The routing-table fill (of FIT_FILLS) whose modelled numbers are nearest the measured ones (mean |log ratio|)."""
    errors = {}
    for fill in FIT_FILLS:
        compared = calibrate(rows, dataclasses.replace(base, table_fill=fill))
        errors[fill] = sum(abs(math.log(c["ratio"])) for c in compared if c["ratio"] > 0) / max(len(compared), 1)
    return min(errors, key=errors.get), errors


def render_model(results: list[ModelResult]) -> Table:
    table = Table(title="The swarm modelled (per node and round unless said; KB = 1000 bytes, in + out)")
    for column in (
        "N", "layout", "sampled", "KB/node median (in)", "busiest KB/window", "busiest/median",
        "busiest serves", "req sent / served", "lookup finds/key p50/p95", "lookup rounds p50/p95",
        "publish rounds p50/p95", "collect rounds p50/p95 (s p95)", "delivery", "signers read", "NAT: rounds to 1st read",
        "refusals/window", "timeouts", "bootstrap req/join, joins/s capacity",
    ):
        table.add_column(column, justify="right")
    for r in results:
        refusals = ", ".join(f"{kind} {count:,.0f}" for kind, count in r.refusals.items()) or "-"
        table.add_row(
            f"{r.peers:,}", r.layout, f"{r.sampled:,}", f"{r.node_kb_round_median:,.1f} ({r.node_kb_in_round_median:,.1f})",
            f"{r.busiest_kb_window:,.0f}", f"{r.busiest_over_median:,.1f}", r.busiest_is,
            f"{r.requests_sent_round_median:.0f} / {r.requests_served_round_median:.0f}",
            f"{r.lookup_finds_per_key.p50:.1f} / {r.lookup_finds_per_key.p95:.1f}",
            f"{r.lookup_rounds.p50:.0f} / {r.lookup_rounds.p95:.0f}", f"{r.publish_rounds.p50:.0f} / {r.publish_rounds.p95:.0f}",
            f"{r.collect_rounds.p50:.0f} / {r.collect_rounds.p95:.0f} ({r.collect_s.p95:.1f})", f"{r.delivery:.0%}",
            f"{r.signers_read:.0%}",
            "never" if r.nat_rounds_to_first_read is None else f"{r.nat_rounds_to_first_read:.1f}", refusals,
            f"{r.timeouts_per_node_round:.2f}",
            f"{r.bootstrap_requests_per_join:.0f}, {r.bootstrap_joins_per_s_capacity:,.0f} (churn: {r.joins_per_s:,.1f})",
        )
    return table


def render_kinds(results: list[ModelResult]) -> Table:
    kinds = sorted({kind for r in results for kind in r.kb_by_kind}, key=lambda k: -sum(r.kb_by_kind.get(k, 0.0) for r in results))
    table = Table(title="KB moved per node and round by request kind (each request once: request + answer)")
    for column in ("N", "layout", *kinds, "all", "find by key looked up"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(f"{r.peers:,}", r.layout, *(f"{r.kb_by_kind.get(kind, 0.0):,.1f}" for kind in kinds),
                      f"{sum(r.kb_by_kind.values()):,.1f}", ", ".join(f"{key} {kb:,.1f}" for key, kb in r.find_kb_by_key.items()))
    return table


def render_calibration(compared: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Measured against modelled (flagged: outside ±{TOLERANCE:.0%})")
    for column in ("source", "N", "metric", "measured", "modelled", "ratio", ""):
        table.add_column(column, justify="right")
    for c in compared:
        table.add_row(c["source"], str(c["peers"]), c["metric"], f"{c['measured']:,.1f}", f"{c['modelled']:,.1f}",
                      f"{c['ratio']:.2f}", "[bold red]outside[/]" if c["outside"] else "")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,128,256,1000,10000,100000")
    parser.add_argument("--layouts", default="v1,tiered")
    parser.add_argument("--sample", type=int, default=ModelConfig.sample, help="peers run through lookups at large N")
    parser.add_argument("--churn-per-min", type=float, default=ModelConfig.churn_per_min)
    parser.add_argument("--linger-s", type=float, default=ModelConfig.linger_s)
    parser.add_argument("--table-fill", type=float, default=ModelConfig.table_fill)
    parser.add_argument("--overhead-bytes", type=int, default=ModelConfig.message_overhead_bytes)
    parser.add_argument("--sigma", type=float, default=ModelConfig.estimate_sigma, help="size estimates' lognormal noise")
    parser.add_argument("--rtt-ms", type=float, default=ModelConfig.rtt_s * 1000)
    parser.add_argument("--rounds", type=int, default=ModelConfig.rounds)
    parser.add_argument("--warmup-rounds", type=int, default=ModelConfig.warmup_rounds,
                        help="rounds played before the measured ones (every node starts at once: the first are a cold start)")
    parser.add_argument("--rounds-per-window", type=int, default=ModelConfig.rounds_per_window)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--find-neighbours", type=int, default=ModelConfig.find_neighbours,
                        help="neighbours a find's answer names per key (20: hivemind's, before 2026-12-06)")
    parser.add_argument("--quiet-s", type=float, default=ModelConfig.quiet_s,
                        help="a full bucket's oldest peer is pinged once it has been quiet this long (routing.QUIET_S)")
    parser.add_argument("--epoch-windows", type=int, default=ModelConfig.epoch_windows,
                        help="windows a directory or census key lasts (swarm.epoch_windows; 1: protocol v2)")
    parser.add_argument("--census-every-s", type=float, default=ModelConfig.census_every_s,
                        help="a large swarm's own census (0: every window, before 2026-12-06)")
    parser.add_argument("--full-neighbours", dest="bare_neighbours", action="store_false",
                        help="finds' neighbours with their node ids, as hivemind names them (before 2026-12-07)")
    parser.add_argument("--replica-keep-s", type=float, default=ModelConfig.replica_keep_s,
                        help="how long lookups are remembered (default: as DHTPeer; 0: not at all, as before the look-ahead)")
    parser.add_argument("--no-look-ahead", dest="look_ahead", action="store_false",
                        help="no Gossip.look_ahead at window starts (as before it)")
    parser.add_argument("--round-spread", type=float, default=ModelConfig.round_spread,
                        help="a round starts at a random share of it up to this (0: every publish before any collect)")
    parser.add_argument("--nat-signers", type=int, default=ModelConfig.nat_signers,
                        help="signers behind NAT (DHT clients, named only by the directory) besides the N peers")
    parser.add_argument("--calibrate", type=Path, nargs="*", default=[], help="real runs' JSON to compare with")
    parser.add_argument("--fit", action="store_true", help="fit the routing-table fill to the --calibrate runs first")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "swarm-model.json")
    args = parser.parse_args()
    console = Console(width=250)
    base = ModelConfig(
        peers=0, sample=args.sample, churn_per_min=args.churn_per_min, linger_s=args.linger_s, table_fill=args.table_fill,
        message_overhead_bytes=args.overhead_bytes, estimate_sigma=args.sigma, rtt_s=args.rtt_ms / 1000,
        rounds=args.rounds, warmup_rounds=args.warmup_rounds, rounds_per_window=args.rounds_per_window, seed=args.seed,
        find_neighbours=args.find_neighbours, census_every_s=args.census_every_s, quiet_s=args.quiet_s,
        replica_keep_s=args.replica_keep_s, look_ahead=args.look_ahead, nat_signers=args.nat_signers,
        epoch_windows=args.epoch_windows, round_spread=args.round_spread, bare_neighbours=args.bare_neighbours,
    )
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_1m_at_start": os.getloadavg()[0], "python": platform.python_version()},
    }
    rows = [row for path in args.calibrate for row in measured_rows(path)]
    if rows and args.fit:
        fill, errors = fit_table_fill(rows, base)
        base = dataclasses.replace(base, table_fill=fill)
        out["fit"] = {"table_fill": fill, "mean_abs_log_ratio": errors}
        console.print(f"fitted table_fill = {fill} (mean |log ratio| by fill: {errors})", highlight=False)
    if rows:
        compared = calibrate(rows, base)
        out["calibration"] = compared
        console.print(render_calibration(compared))
    results = []
    for size in [int(text) for text in args.sizes.split(",") if text]:
        for layout in args.layouts.split(","):
            started = time.monotonic()
            result = run_model(dataclasses.replace(base, peers=size, layout=layout))
            results.append(result)
            console.print(f"N={size:,} {layout}: {time.monotonic() - started:.0f} s", highlight=False)
    out["config"] = dataclasses.asdict(base)
    out["results"] = [result.to_json() for result in results]
    if results:
        console.print(render_model(results))
        console.print(render_kinds(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {args.out}", highlight=False)


if __name__ == "__main__":
    main()
