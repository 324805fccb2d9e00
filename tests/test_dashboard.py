import contextlib
import dataclasses
import io
import json

import pytest
from prometheus_client import generate_latest
from rich.console import Console
from rich.live_render import LiveRender
from typer.testing import CliRunner

from swarmnode.cli import app
from swarmnode.net.census import Census, CensusEntry
from swarmnode.ops.dashboard import census_title, moving_average, render, sparkline
from swarmnode.ops.metrics import Metrics, RoundRecord, Status, read_records
from swarmnode.ops.report import write_report
from swarmnode.ops.server import serve
from swarmnode.wire.address import Reachability
from swarmnode.wire.beacon import Beacon
from swarmnode.wire.keys import PROTOCOL_VERSION


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
    census = Census("demo", 99.0, [CensusEntry(f"12D3KooWpeer{k}", beacon) for k, beacon in enumerate(beacons)], buckets_read=4, buckets_total=8)
    metrics.set_census(census)
    screen = text_of(render(metrics.status, now=100.0))
    assert "≈6 nodes (3 seen: 2 private, 1 public), 3 models" in screen and "4 of 8 buckets read" in screen
    assert screen.index("model-2") < screen.index("model-1") < screen.index("model-0")  # best reward first
    assert "5 s ago" in screen and "traffic" in screen and "61.2 KB/s in" in screen  # 60 KB in a 0.98 s round
    assert "traffic cap" not in screen
    metrics.status.max_kbps = 256.0
    assert "traffic cap 32.0 KB/s in + out" in text_of(render(metrics.status, now=100.0))  # network.max_kbps
    exposition = generate_latest(metrics.registry).decode()
    assert 'swarmnode_swarm{quantity="nodes"} 6.0' in exposition
    assert 'swarmnode_swarm_nodes_by_reachability{state="private"} 2.0' in exposition
    assert "swarmnode_swarm_census_complete 0.0" in exposition
    assert "model-1" not in exposition  # no label comes from a peer


def test_the_header_says_where_the_model_runs_and_how_much_of_it_trains(tmp_path):
    status = Status(model_id="Qwen/Qwen2.5-0.5B", device="cuda:0", dtype="bfloat16", parameters=494_000_000,
                    trainable_parameters=4_400_000)
    assert "Qwen/Qwen2.5-0.5B (494.0M (4.4M trained), cuda:0, bfloat16)" in text_of(render(status, now=0.0))
    on_cpu = dataclasses.replace(status, device="cpu", dtype="float32", trainable_parameters=494_000_000, threads=2)
    assert "Qwen/Qwen2.5-0.5B (494.0M, cpu, float32, 2 threads)" in text_of(render(on_cpu, now=0.0))
    assert "1 thread)" in text_of(render(dataclasses.replace(on_cpu, threads=1), now=0.0))


ME = "12D3KooWQm4uVJ5tDq8cWmFz3tB1kYJ9xRrN2hP7sLwE6vGdA1Zk"
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
INVITE = f"/ip4/203.0.113.7/tcp/31337/p2p/{ME}"  # 83 characters: wider than an 80-column terminal


def first_hour(tmp_path, others: int = 2) -> Status:
    """A volunteer's node at round 55 in its first census window: its own beacon there is from round 0; events
    with checkpoints, a problem and a held-out score; an address others can join with."""
    metrics = Metrics(tmp_path / "metrics.jsonl", Status(peer_id=ME, swarm_id="demo", model_id=QWEN, started_at=0.0))
    metrics.set_reachability("public", "public", "server", "off", [INVITE])
    for i in range(1, 56):
        metrics.record(record(i, 0.3))
        if i % 20 == 0:
            metrics.set_checkpoint(f"round-{i:06d}.pt", 988_000_000, 3.1, 1_976_000_000)
    metrics.set_held_out(evaluation(0, 0.25), evaluation(50, 0.5))
    metrics.problem("publish_failed", "publish failed: no other peer stored the batch within 10 s")
    metrics.set_checkpoint("round-000055.pt", 988_000_000, 3.2, 1_976_000_000)
    nodes = [(ME, Beacon("demo", 1, 80.0, "swarmnode/0.1.0", QWEN, round=0, phase="starting"))]
    nodes += [
        (f"12D3KooWpeer{k}", Beacon("demo", 1, 90.0, "swarmnode/0.1.0", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                    round=100 * k, reward=0.5, reachability=Reachability.PRIVATE, phase="train"))
        for k in range(1, others + 1)
    ]
    metrics.set_census(Census("demo", 95.0, [CensusEntry(peer, beacon) for peer, beacon in nodes], buckets_read=8, buckets_total=8))
    metrics.set_phase("generate")
    return metrics.status


def screen(status: Status, width: int, height: int) -> list[str]:
    """What a terminal of width x height shows of the dashboard: rich's Live (`swarmnode join`, `swarmnode
    dashboard`) draws it so, cutting what is taller than the screen to a last line of "..."."""
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    console.print(LiveRender(render(status, now=100.0), vertical_overflow="ellipsis"))
    return console.file.getvalue().splitlines()


def words_of(lines: list[str], first_word: str) -> list[str]:
    """The words of the first line whose first word (inside a panel's border) is `first_word`; [] if none."""
    return next((words for line in lines if (words := line.strip("│ ").split()) and words[0] == first_word), [])


@pytest.mark.parametrize("width, height", [(80, 24), (120, 40), (100, 16), (60, 12), (80, 10), (200, 60)])
def test_the_dashboard_fits_the_screen_and_its_events_are_always_shown_whole(tmp_path, width, height):
    lines = screen(first_hour(tmp_path), width, height)
    assert len(lines) <= height and lines[-1].startswith("╰")  # nothing cut off at the bottom
    assert any(line.startswith("╭") and " events " in line for line in lines)
    text = " ".join(line.strip("│ ") for line in lines)
    assert "checkpoint round-000055.pt (988.0 MB in 3.2 s; 2.0 GB kept in all)" in text  # the latest event, whole


def test_at_80_columns_the_census_keeps_peer_model_round_reward_and_reach_readable(tmp_path):
    lines = screen(first_hour(tmp_path), 80, 24)
    assert words_of(lines, "peer") == ["peer", "model", "round", "reward", "reach"]
    assert words_of(lines, "this") == ["this", "node", QWEN, "55", "0.300", "public"]
    smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert words_of(lines, "2D3KooWpeer2") == ["2D3KooWpeer2", smol, "200", "0.500", "private"]
    assert any("publish failed" in line for line in lines)  # the problem, in the events panel


def test_at_120_by_40_everything_shows_with_the_census_columns_that_fit(tmp_path):
    lines = screen(first_hour(tmp_path), 120, 40)
    assert words_of(lines, "peer")[:6] == ["peer", "model", "round", "reward", "held-out", "shared"]
    assert any("held-out pass rate (after round 50)" in line for line in lines)
    assert any("publish failed" in line for line in lines) and any("round-000020.pt" in line for line in lines)


def test_a_census_longer_than_the_panel_lists_the_best_and_says_how_many_more_under_its_columns(tmp_path):
    lines = screen(first_hour(tmp_path, others=11), 120, 40)
    assert words_of(lines, "peer")[:6] == ["peer", "model", "round", "reward", "held-out", "shared"]
    more = [words for line in lines if "more:" in (words := line.strip("│ ").split())]
    assert len(more) == 1 and more[0][0] == "…" and more[0][2:] == ["more:", "swarmnode", "swarm"]


def test_the_invite_is_a_whole_command_on_a_line_of_its_own_or_its_address_is(tmp_path):
    status = first_hour(tmp_path)
    assert f"swarmnode join --peers {INVITE}" in [line.strip() for line in screen(status, 120, 40)]
    assert INVITE in [line.strip() for line in screen(status, 100, 30)]  # the command is wider than the screen
    narrow = screen(status, 80, 24)  # the address is too: folded, and said so
    at = next(i for i, line in enumerate(narrow) if line.startswith(INVITE[:40]))
    assert narrow[at] + narrow[at + 1] == INVITE and "folded: widen the terminal to copy" in narrow[at - 1]


def test_this_nodes_census_row_is_its_live_status_not_its_beacon_of_the_first_window(tmp_path):
    lines = screen(first_hour(tmp_path), 120, 40)
    assert words_of(lines, "this")[:5] == ["this", "node", QWEN, "55", "0.300"]
    assert "generate" in words_of(lines, "this") and not any("starting" in line for line in lines)
    totals = "3 nodes (2 private, 1 public), 2 models, 3,673 rounds/h"  # this node's 10 rounds in 9.8 s; not 1 unknown
    assert any(totals in line for line in lines)


def test_the_swarm_count_names_this_node_and_unknown_reachability_so_that_neither_reads_as_another_node(tmp_path):
    alone = first_hour(tmp_path, others=0)
    assert any(f"swarm demo (protocol v{PROTOCOL_VERSION}): 1 node: this one, 1 model" in line for line in screen(alone, 120, 40))
    beacons = [Beacon("demo", 1, 90.0, "s", "m", reachability=reach) for reach in Reachability]
    entries = [CensusEntry(f"12D3KooWpeer{k}", beacon) for k, beacon in enumerate(beacons)]
    census = Census("demo", 95.0, entries, buckets_read=8, buckets_total=8)
    assert "3 nodes (1 private, 1 public, 1 of unknown reachability), 1 model," in census_title(census)


@pytest.mark.network
def test_the_join_command_others_copy_is_one_unbroken_line_in_an_80_column_terminal(tmp_path):
    """A real `swarmnode join` in a pseudo-terminal 80 columns wide: the invite's command is written as one line
    (the terminal may wrap it on screen; a copy still gives the whole command), not split by the program."""
    import fcntl
    import os
    import pty
    import re
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "swarmnode", "join", "--rounds", "1", "--data-dir", str(tmp_path / "node"),
         "--metrics-port", "0", "--set", "network.port=0"],
        stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True,
    )
    os.close(follower)
    screen, deadline = b"", time.monotonic() + 240
    try:
        while process.poll() is None and time.monotonic() < deadline and b"swarmnode dashboard --url" not in screen:
            if select.select([leader], [], [], 1.0)[0]:
                with contextlib.suppress(OSError):
                    screen += os.read(leader, 65536)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(leader)
    lines = screen.decode(errors="replace").replace("\r", "").splitlines()
    invites = [line.strip() for line in lines if line.startswith("swarmnode join --peers")]
    assert invites, "\n".join(lines[-20:])
    assert all(re.fullmatch(r"swarmnode join --peers /ip4/127\.0\.0\.1/tcp/\d+/p2p/\w{40,}", line) for line in invites), invites
