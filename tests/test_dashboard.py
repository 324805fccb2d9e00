import dataclasses
import io
import json

import pytest
from prometheus_client import generate_latest
from rich.console import Console
from typer.testing import CliRunner

from swarmnode.cli import app
from swarmnode.net.census import Census, CensusEntry
from swarmnode.ops.dashboard import moving_average, render, sparkline
from swarmnode.ops.metrics import Metrics, RoundRecord, Status, read_records
from swarmnode.ops.report import write_report
from swarmnode.ops.server import serve
from swarmnode.wire.address import Reachability
from swarmnode.wire.beacon import Beacon


def record(round_number: int, reward: float) -> RoundRecord:
    return RoundRecord(
        round=round_number, time=1.0, reward_local=reward, reward_external=reward / 2, answer_rate=1.0,
        loss=-0.01, skipped=None if round_number % 5 else "no informative groups", groups_own=4,
        groups_external=2, tokens_trained=100, tokens_generated=200, tokens_per_s=400.0,
        seconds={"generate": 0.5, "publish": 0.01, "collect": 0.05, "rescore": 0.02, "train": 0.4, "checkpoint": 0.0},
        peers=3, rollouts_out=8, rollouts_in=6, rejected={"bad_signature": 1} if round_number == 3 else {},
        published=True, questions=4, updates=0 if round_number % 5 == 0 else 2, clip_fraction=0.01 * (round_number % 3),
        grad_norm=0.5, kl_to_start=0.001 * round_number, importance_mean=0.9, importance_max=1.8,
        external_token_share=0.25, bytes_in=2000 * round_number, bytes_out=1000,
    )


def fed_metrics(tmp_path, rounds: int = 30) -> Metrics:
    metrics = Metrics(tmp_path / "metrics.jsonl", Status(peer_id="12D3KooWabcdefghijklmnop", swarm_id="demo", model_id="m"))
    for i in range(1, rounds + 1):
        metrics.record(record(i, 0.1 + i / 100))
    metrics.event("collapse detected at round 7")
    return metrics


def text_of(renderable) -> str:
    console = Console(file=io.StringIO(), width=120, height=40, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_the_dashboard_shows_round_reward_trend_peers_and_rejections(tmp_path):
    screen = text_of(render(fed_metrics(tmp_path).status, now=100.0))
    assert "round 30" in screen and "phase" in screen
    assert "0.400" in screen  # last reward
    assert "4 questions, 400 tok/s" in screen  # what the last round asked (transplant asks I while peers supply J)
    assert any(block in screen for block in "▁▂▃▄▅▆▇█")
    assert "bad_signature 1" in screen and "peers" in screen and "collapse detected" in screen


def test_keys_read_from_too_few_replicas_are_counted_shown_and_exported(tmp_path):
    metrics = fed_metrics(tmp_path, rounds=3)
    assert "thin reads" not in text_of(render(metrics.status, now=100.0))  # nothing to say while reads are full
    metrics.record(dataclasses.replace(record(4, 0.5), thin_reads=2))
    metrics.record(dataclasses.replace(record(5, 0.5), thin_reads=1))
    assert "3 keys answered by too few replicas" in text_of(render(metrics.status, now=100.0))
    assert "swarmnode_thin_reads_total 3.0" in generate_latest(metrics.registry).decode()
    assert Status.from_json(json.loads(json.dumps(dataclasses.asdict(metrics.status)))).thin_reads_total == 3


def test_sparkline_and_moving_average():
    assert moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    assert sparkline([0, 1]) == "▁█" and sparkline([]) == ""


def test_metrics_file_round_trips_and_a_torn_last_line_is_skipped(tmp_path):
    fed_metrics(tmp_path, rounds=5)
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"round": 6, "time"')  # a crash mid-write
    assert [r.round for r in read_records(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_status_and_metrics_are_served_over_http_and_status_command_prints_them(tmp_path):
    metrics = fed_metrics(tmp_path)
    server = serve(metrics, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        import urllib.request

        body = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        assert "swarmnode_rounds_total 30.0" in body and 'swarmnode_rejected_total{reason="bad_signature"} 1.0' in body
        assert json.loads(urllib.request.urlopen(f"{url}/status", timeout=5).read())["round"] == 30
        shown = CliRunner().invoke(app, ["status", "--url", url])
        assert shown.exit_code == 0 and "round 30" in shown.stdout
    finally:
        server.shutdown()
        server.server_close()


def test_status_without_a_node_is_one_line_and_exit_1():
    shown = CliRunner().invoke(app, ["status", "--url", "http://127.0.0.1:9"])
    assert shown.exit_code == 1 and "no node answers" in shown.output


def test_report_writes_four_pngs_and_prometheus_has_the_training_diagnostics(tmp_path):
    metrics = fed_metrics(tmp_path)
    paths = write_report(tmp_path)
    assert [p.name for p in paths] == ["rewards.png", "loss.png", "training.png", "round_time.png"]
    from prometheus_client import generate_latest

    exposed = generate_latest(metrics.registry).decode()
    assert 'swarmnode_training{quantity="kl_to_start"} 0.029' in exposed
    assert 'swarmnode_training{quantity="external_token_share"} 0.25' in exposed
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 5000 for p in paths)


def test_a_restart_replaces_the_rounds_it_lost_so_the_history_only_goes_forward(tmp_path):
    metrics = fed_metrics(tmp_path, rounds=4)  # killed after round 4; its last checkpoint was after round 2
    metrics.record(dataclasses.replace(record(3, 0.9), resumed_from=2))
    metrics.record(record(4, 0.9))
    records = read_records(tmp_path / "metrics.jsonl")
    assert [(r.round, r.resumed_from) for r in records] == [(1, None), (2, None), (3, 2), (4, None)]
    assert [r.reward_local for r in records[2:]] == [0.9, 0.9]  # the redone rounds, not the lost ones
    older = tmp_path / "older"  # a file written before restarts were marked reads the same
    older.mkdir()
    lines = (tmp_path / "metrics.jsonl").read_text().replace(',"resumed_from":2', "").replace(',"resumed_from":null', "")
    (older / "metrics.jsonl").write_text(lines)
    unmarked = read_records(older / "metrics.jsonl")
    assert [r.round for r in unmarked] == [1, 2, 3, 4] and [r.reward_local for r in unmarked[2:]] == [0.9, 0.9]


def report_figures(data_dir, monkeypatch) -> dict:
    """The figures write_report draws, by file name (the PNGs are written all the same)."""
    from swarmnode.ops import report

    figures, save = {}, report._save

    def keep(figure, path):
        figures[path.name] = figure
        return save(figure, path)

    monkeypatch.setattr(report, "_save", keep)
    report.write_report(data_dir)
    return figures


def visible(ticks, limits) -> list[float]:
    low, high = sorted(limits)
    return [tick for tick in ticks if low <= tick <= high]


def test_the_report_of_a_resumed_run_draws_each_round_once_and_marks_the_restart(tmp_path, monkeypatch):
    metrics = fed_metrics(tmp_path, rounds=5)
    metrics.record(dataclasses.replace(record(4, 0.9), resumed_from=3))
    for i in (5, 6):
        metrics.record(record(i, 0.9))
    figures = report_figures(tmp_path, monkeypatch)
    for name, figure in figures.items():
        for axis in figure.axes:
            for line in axis.get_lines():
                xs = list(line.get_xdata())
                if len(set(xs)) > 1:  # a restart's mark is vertical
                    assert xs == sorted(set(xs)), (name, axis.get_title(), xs)  # no round drawn twice, none backwards
    marks = [line for line in figures["rewards.png"].axes[0].get_lines() if len(set(line.get_xdata())) == 1]
    assert [(line.get_xdata()[0], line.get_label()) for line in marks] == [(3.5, "restarted from a checkpoint")]


@pytest.mark.parametrize("rounds", [1, 3])
def test_a_short_runs_report_reads_on_whole_rounds_with_axes_that_hold_what_the_quantity_can_be(
    tmp_path, monkeypatch, rounds
):
    metrics = Metrics(tmp_path / "metrics.jsonl", Status())
    for i in range(1, rounds + 1):  # a node alone: nothing clipped, no peers' tokens; the base model evaluated first
        seconds = {"evaluate": 20.0, "generate": 1.0, "train": 2.0} if i == 1 else {"generate": 1.0, "train": 2.0}
        metrics.record(dataclasses.replace(
            record(i, 0.25), seconds=seconds, skipped=None, updates=1, clip_fraction=0.0, external_token_share=0.0,
            importance_max=1.0, held_out=evaluation(0, 0.3) if i == 1 else None,
        ))
    figures = report_figures(tmp_path, monkeypatch)
    assert sorted(figures) == ["held_out.png", "loss.png", "rewards.png", "round_time.png", "training.png"]
    for name, figure in figures.items():
        for axis in figure.axes:
            ticks = visible(axis.get_xticks(), axis.get_xlim())
            assert ticks and all(tick == int(tick) for tick in ticks), (name, axis.get_title(), ticks)
    reward = figures["rewards.png"].axes[0]
    assert reward.get_ylim()[0] <= 0 and reward.get_ylim()[1] >= 1  # a reward is a score in 0..1
    for axis in figures["training.png"].axes:  # clip fraction, gradient norm, KL, peers' share: never negative
        assert min(visible(axis.get_yticks(), axis.get_ylim())) == 0, axis.get_title()
    for axis in figures["held_out.png"].axes:  # the base model's point at the start of the run's rounds
        if axis.get_title():
            assert axis.get_xlim()[0] < 0 and axis.get_xlim()[1] > rounds
    timing = figures["round_time.png"].axes[0]
    legend = timing.get_legend().get_window_extent()
    assert not any(bar.get_window_extent().overlaps(legend) for bar in timing.patches)


def evaluation(after_rounds: int, greedy: float) -> dict:
    families = {
        family: {"greedy": greedy, "sampled": greedy / 2, "mean_reward": greedy / 2, "answer_rate": 1.0}
        for family in ("chain_sum", "gcd")
    }
    return {"families": families, "questions": 32, "samples_per_question": 2, "seconds": 3.0,
            "after_rounds": after_rounds, "model": "m", "greedy": greedy, "sampled": greedy / 2}


def test_held_out_pass_rates_show_base_to_now_in_the_dashboard_prometheus_and_the_report(tmp_path):
    import dataclasses

    metrics = Metrics(tmp_path / "metrics.jsonl", Status(peer_id="12D3KooWabcdefghijklmnop", swarm_id="demo", model_id="m"))
    for i in range(1, 31):
        held_out = evaluation(i - 1, 0.25 + (i - 1) / 40) if i % 10 == 1 else None
        metrics.record(dataclasses.replace(record(i, 0.2), held_out=held_out))
    metrics.set_held_out(evaluation(0, 0.25), evaluation(20, 0.75))
    screen = text_of(render(metrics.status, now=100.0))
    assert "held-out pass rate (after round 20)" in screen
    assert "chain_sum" in screen and "0.25 → 0.75" in screen and "0.12 → 0.38" in screen
    from prometheus_client import generate_latest

    exposed = generate_latest(metrics.registry).decode()
    assert 'swarmnode_held_out_pass_rate{at="base",family="gcd",mode="greedy"} 0.25' in exposed
    assert 'swarmnode_held_out_pass_rate{at="last",family="gcd",mode="sampled"} 0.375' in exposed
    paths = write_report(tmp_path)
    assert "held_out.png" in [p.name for p in paths]
    assert [r.held_out["after_rounds"] for r in read_records(tmp_path / "metrics.jsonl") if r.held_out] == [0, 10, 20]


def test_the_swarm_panel_traffic_sparkline_and_swarm_gauges_show_the_latest_census(tmp_path):
    metrics = fed_metrics(tmp_path)
    beacons = [
        Beacon("demo", 1, 95.0, "swarmnode/0.1.0", f"model-{k}", round=10 * k, reward=0.1 * k,
               reachability=Reachability.PRIVATE if k else Reachability.PUBLIC, rounds_per_hour=60.0, rollouts_per_hour=480.0)
        for k in range(3)
    ]
    census = Census("demo", 99.0, [CensusEntry(f"12D3KooWpeer{k}", beacon) for k, beacon in enumerate(beacons)], buckets_read=4)
    metrics.set_census(census)
    screen = text_of(render(metrics.status, now=100.0))
    assert "≈6 nodes (3 seen: 2 private, 1 public), 3 models" in screen and "4 of 8 buckets read" in screen
    assert screen.index("model-2") < screen.index("model-1") < screen.index("model-0")  # best reward first
    assert "5 s ago" in screen and "traffic" in screen and "61.2 KB/s in" in screen  # 60 KB in a 0.98 s round
    exposition = generate_latest(metrics.registry).decode()
    assert 'swarmnode_swarm{quantity="nodes"} 6.0' in exposition
    assert 'swarmnode_swarm_nodes_by_reachability{state="private"} 2.0' in exposition
    assert "swarmnode_swarm_census_complete 0.0" in exposition
    assert "model-1" not in exposition  # no label comes from a peer


def test_the_header_says_where_the_model_runs_and_how_much_of_it_trains(tmp_path):
    status = Status(model_id="Qwen/Qwen2.5-0.5B", device="cuda:0", dtype="bfloat16", parameters=494_000_000,
                    trainable_parameters=4_400_000)
    assert "Qwen/Qwen2.5-0.5B (494.0M (4.4M trained), cuda:0, bfloat16)" in text_of(render(status, now=0.0))
