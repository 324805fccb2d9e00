"""The `swarmnode` command: parses arguments, loads config, and hands over to the module that does the work."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.live import Live
from rich.text import Text

from swarmnode.config import CONFIG_FILENAME, ConfigError, NodeConfig, load_config
from swarmnode.host import lower_priority, quiet_openmp
from swarmnode.wire.allowlist import AllowlistError, load_allowlist, write_allowlist
from swarmnode.wire.batch import BATCH
from swarmnode.wire.identity import (
    IDENTITY_FILENAME,
    Identity,
    IdentityError,
    load_identity,
    load_or_create_identity,
    save_identity,
)
from swarmnode.wire.keys import PROTOCOL_VERSION
from swarmnode.wire.rollout import RolloutBatch
from swarmnode.wire.rules import SwarmRules

if TYPE_CHECKING:
    from swarmnode.learn.intake import Intake

quiet_openmp()  # before any command loads torch, whose OpenMP runtime reads it once (tests/test_host.py checks)

app = typer.Typer(help="A decentralized swarm post-training node (SAPO over a signed hivemind DHT).", no_args_is_help=True, rich_markup_mode=None)
identity_app = typer.Typer(help="Create and inspect the node's Ed25519 identity.", no_args_is_help=True)
protocol_app = typer.Typer(help="Check and make wire-protocol frames (see protocol/PROTOCOL.md).", no_args_is_help=True)
allowlist_app = typer.Typer(help="Close a swarm to the peers its operator lists.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")
app.add_typer(allowlist_app, name="allowlist")
app.add_typer(protocol_app, name="protocol")

console = Console()
err_console = Console(stderr=True)


def default_data_dir() -> Path:
    return Path(os.environ.get("SWARMNODE_HOME", Path.home() / ".swarmnode"))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line a person can act on, then exit non-zero (no traceback)."""
    _say(err_console, "error:", "bold red", message)
    return typer.Exit(code)


def _say(where: Console, label: str, style: str, message: str) -> None:
    """A labelled line whose message is printed as written: a path, a regex or a value holding [brackets] is
    not read as rich markup, and a long token wraps only where the terminal wraps it."""
    where.print(Text.assemble((label, style), " ", message), highlight=False, soft_wrap=True)


PathOption = Annotated[Optional[Path], typer.Option("--path", metavar="FILE", help="identity file (default: DATA_DIR/identity.key)")]
DataDirOption = Annotated[
    Optional[Path], typer.Option("--data-dir", metavar="DIR", help="the node's state directory (default: ~/.swarmnode or SWARMNODE_HOME)")
]


def identity_path_of(path: Optional[Path], data_dir: Optional[Path]) -> Path:
    """The identity file a command means: --path, else the one in --data-dir, else the default node's."""
    return path or (data_dir or default_data_dir()) / IDENTITY_FILENAME


@identity_app.command("new")
def identity_new(
    path: PathOption = None,
    data_dir: DataDirOption = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing key (its peer id is lost)")] = False,
) -> None:
    """Create a new Ed25519 identity file (mode 0600) and print its peer id."""
    path = identity_path_of(path, data_dir)
    identity = Identity.generate()
    try:
        save_identity(identity, path, overwrite=force)
    except IdentityError as error:
        raise fail(str(error))
    except OSError as error:
        raise fail(f"{path}: cannot write the identity file ({error.strerror})")
    console.print(f"created {path}")
    _print_identity(identity)


@identity_app.command("show")
def identity_show(path: PathOption = None, data_dir: DataDirOption = None) -> None:
    """Print the peer id (base58, as hivemind prints it) and the public key (hex) of the identity file."""
    path = identity_path_of(path, data_dir)
    try:
        identity = load_identity(path)
    except IdentityError as error:
        raise fail(str(error))
    console.print(f"identity   {path}", highlight=False)
    _print_identity(identity)


@allowlist_app.command("sign")
def allowlist_sign(
    peers: Annotated[list[str], typer.Argument(metavar="PEER_ID", help="peer ids of the members (`swarmnode identity show`)")],
    swarm: Annotated[str, typer.Option(metavar="SWARM_ID", help="the swarm's id (swarm.id)")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="PATH", help="where to write the signed allowlist")],
    path: PathOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Sign the list of peers that may store and serve in a closed swarm with the operator's identity; members
    set swarm.allowlist to the file and swarm.operator to the peer id printed here (docs/DESIGN.md §6.7)."""
    path = identity_path_of(path, data_dir)
    try:
        written = write_allowlist(out, load_identity(path), swarm, peers)
    except IdentityError as error:
        raise fail(str(error))
    except ValueError as error:
        raise fail(f"{error}; list peer ids as `swarmnode identity show` prints them")
    except OSError as error:
        raise fail(f"{out}: cannot write the allowlist ({error.strerror})")
    console.print(f"wrote {out}: {len(written.peers)} peers of swarm {swarm}", highlight=False)
    console.print(f"operator {written.operator}", highlight=False)


@allowlist_app.command("show")
def allowlist_show(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="the signed allowlist")],
    swarm: Annotated[str, typer.Option(metavar="SWARM_ID", help="the swarm's id (swarm.id)")],
    operator: Annotated[str, typer.Option(metavar="PEER_ID", help="the operator's peer id (swarm.operator)")],
) -> None:
    """Check an allowlist's signature as a member would, and list its peers."""
    try:
        allowlist = load_allowlist(file, swarm, operator)
    except AllowlistError as error:
        raise fail(str(error))
    for peer in sorted(allowlist.peers):
        console.print(peer, highlight=False)


def _print_identity(identity: Identity) -> None:
    console.print(f"peer_id    {identity.peer_id}", highlight=False)
    console.print(f"public_key {identity.public_key.hex()}", highlight=False)


@protocol_app.command("check")
def protocol_check(
    files: Annotated[list[Path], typer.Argument(metavar="FRAME_FILE", help="files holding one encoded envelope (a frame) each")],
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", metavar="FILE", help="the receiver's config: swarm rules and task families")
    ] = None,
    swarm: Annotated[Optional[str], typer.Option(metavar="SWARM_ID", help="the receiver's swarm id (default: --config's, else any swarm)")] = None,
    now: Annotated[Optional[float], typer.Option(metavar="SECONDS", help="DHT time (Unix seconds) for the stale and future checks")] = None,
    window_s: Annotated[Optional[float], typer.Option(metavar="SECONDS", help="the swarm's window length (default: the config's)")] = None,
    num_shards: Annotated[Optional[int], typer.Option(metavar="N", help="the swarm's shard count (default: the config's)")] = None,
    slot: Annotated[
        Optional[str],
        typer.Option(
            metavar="SLOT", help="where the frames were read from, for the key checks: WINDOW/SHARD/SUBKEY for a batch, "
            "WINDOW/directory/TIER/BUCKET/SUBKEY for a presence, WINDOW/census/TIER/BUCKET/SUBKEY for a beacon "
            "(TIER 0-12, BUCKET below 2^TIER)"
        ),
    ] = None,
    kind: Annotated[
        Optional[Literal["batch", "presence", "beacon"]],
        typer.Option(
            help="what the frames hold: a rollout batch, a directory presence entry (PROTOCOL.md §4.1) or a census "
            "beacon (§4.2); default: told by --slot's key, else by each frame's signature"
        ),
    ] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="override a config key, as for join")] = None,
) -> None:
    """Print `accept` or `reject: <reason_code>` per file, for any content at all; exit 1 if any is
    rejected, 2 on a usage error. A batch goes through the node's own checks (PROTOCOL.md §5, checks 1-15:
    its task references against the receiver's task families, rescored, claims judged); checks whose
    context is not given (swarm, --now, --slot) are skipped. Files are checked in order, as one receiver:
    a batch given twice is a replay.
    """
    from swarmnode.wire.check import SLOT_SHAPES, Checker, kind_of_slot

    settings = _check_settings(config, swarm, window_s, num_shards, overrides or [])
    if now is not None and not math.isfinite(now):
        raise fail(f"--now must be a finite number of seconds, not {now}", code=2)
    rules = SwarmRules.of(settings.swarm)
    if swarm is None and config is None:
        rules = dataclasses.replace(rules, swarm_id=None)  # any swarm: checks 9-11 need to know which

    @functools.cache
    def receiver() -> Intake:  # torch and reasoning-gym load only once a batch has rollouts to judge
        from swarmnode.learn.intake import Intake
        from swarmnode.learn.tasks import TaskSuite

        return Intake(TaskSuite.of(settings.tasks))

    try:
        checker = Checker(rules, kind=kind, now=now, slot=slot, judge=lambda rollout: receiver().judge(rollout))
    except ValueError:
        shape = SLOT_SHAPES[kind or kind_of_slot(slot or "")]
        raise fail(f"--slot must look like {shape}", code=2)
    rejected_any = False
    for file in files:
        try:
            with open(file, "rb") as handle:
                frame = handle.read(checker.largest_frame())
        except OSError as error:
            raise fail(f"{file}: cannot read ({error.strerror})", code=2)
        prefix = f"{file}: " if len(files) > 1 else ""
        verdict = checker.check(frame)
        if verdict.detected and verdict.kind.name != "batch":
            err_console.print(f"  (read as a {verdict.kind.name}: its signature is of that kind)", highlight=False)
        if verdict.accepted:
            typer.echo(f"{prefix}accept")
            continue
        rejected_any = True
        typer.echo(f"{prefix}reject: {verdict.rejected.reason.value}")
        if verdict.rejected.detail:
            err_console.print(f"  ({verdict.rejected.detail})", highlight=False)
        if verdict.detected and verdict.rejected.signer is None:
            err_console.print("  (no kind's signature verifies: read as a batch; pass --kind to read it as another)", highlight=False)
    if rejected_any:
        raise typer.Exit(1)


def _check_settings(
    config: Optional[Path], swarm: Optional[str], window_s: Optional[float], num_shards: Optional[int], overrides: list[str]
) -> NodeConfig:
    """The receiver's config with the command's swarm options as overrides, validated like a node's."""
    flags = list(overrides)
    for key, value in (("swarm.id", swarm), ("swarm.window_s", window_s), ("swarm.num_shards", num_shards)):
        if value is not None:
            flags.append(f"{key}={value}")
    return _load(config, flags, code=2)


@protocol_app.command("sign")
def protocol_sign(
    batch_json: Annotated[Path, typer.Argument(metavar="BATCH_JSON", help="JSON description of a RolloutBatch (see PROTOCOL.md)")],
    key: Annotated[Path, typer.Option("--key", metavar="FILE", help="identity file of the signer")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="PATH", help="where to write the frame")],
) -> None:
    """Sign a batch described in JSON and write the encoded envelope; nothing is validated (vectors need that)."""
    try:
        identity = load_identity(key)
        batch = TypeAdapter(RolloutBatch).validate_json(batch_json.read_bytes())
    except IdentityError as error:
        raise fail(str(error))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise fail(f"{batch_json}: field {where}: {first['msg']}")
    except OSError as error:
        raise fail(f"{batch_json}: cannot read ({error.strerror})")
    frame = BATCH.seal(batch, identity)
    out.write_bytes(frame)
    console.print(f"wrote {out} ({len(frame)} bytes, signer {identity.peer_id})", highlight=False)


@app.command("bootstrap")
def bootstrap(
    port: Annotated[Optional[int], typer.Option(metavar="PORT", help="TCP port (default: network.port; 0 = any)")] = None,
    host: Annotated[
        Optional[str], typer.Option(metavar="ADDRESS", help="listen address (default: network.host = 127.0.0.1)")
    ] = None,
    identity: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="identity file, made if missing (default: DATA_DIR/identity.key)")
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option("--data-dir", metavar="DIR", help="the bootstrap's own state directory (default: ~/.swarmnode/bootstrap)"),
    ] = None,
    config: Annotated[Optional[Path], typer.Option(metavar="FILE", help="YAML config file")] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="override a config key, e.g. --set swarm.id=demo")
    ] = None,
) -> None:
    """Run a DHT-only peer for nodes to join; print its multiaddrs (one per line), serve until Ctrl-C/SIGTERM.

    It stores and serves records for the swarm and refuses any record that is not a valid signed frame. It
    keeps its own identity and lock, so a node on the same host is another peer.
    """
    from swarmnode.files import DataDirBusy, DataDirError, DataDirLock, prepare_data_dir
    from swarmnode.net.peer import DHTPeer
    from swarmnode.net.reachability import network_warnings
    from swarmnode.net.start import StartError

    flags = list(overrides or [])
    if port is not None:
        flags.append(f"network.port={port}")
    if host is not None:
        flags.append(f"network.host={host}")
    settings = _load(config, flags)
    identity_path = identity or (data_dir or (settings.data_dir or default_data_dir()) / "bootstrap") / IDENTITY_FILENAME
    lock = DataDirLock(identity_path.parent)  # one process per identity: a node using this key is refused
    try:
        prepare_data_dir(identity_path.parent)
        lock.acquire()
        load_or_create_identity(identity_path)
    except (IdentityError, DataDirError, DataDirBusy) as error:
        raise fail(str(error))
    stop = threading.Event()
    _handle_signals(stop)
    peer = DHTPeer(identity_path, SwarmRules.of(settings.swarm), settings.network)
    try:
        peer.start()
    except StartError as error:
        lock.release()
        raise fail(str(error))
    try:
        for warning in network_warnings(settings.network.host, settings.network.initial_peers):
            _say(err_console, "warning:", "yellow", warning)
        for maddr in peer.advertised_maddrs():
            typer.echo(maddr)
        mode = "DHT client" if peer.client_mode else "DHT server"
        ready = f"bootstrap peer of swarm {settings.swarm.id!r} (protocol v{PROTOCOL_VERSION}) up ({mode}, {peer.reachability.describe()}); Ctrl-C stops it"
        err_console.print(ready, highlight=False)
        while not stop.wait(1.0):
            if not peer.daemon_alive():  # a bootstrap alone in its swarm for good helps nobody: restart p2pd
                err_console.print("p2pd died; restarting it", highlight=False)
                peer.restart()
    except StartError as error:
        raise fail(f"p2pd died and could not be restarted: {error}")
    finally:
        peer.close()
        lock.release()


def _load(config: Optional[Path], overrides: list[str], code: int = 1) -> NodeConfig:
    """The config, or one line naming the file and key at fault; keys read from their old place are named too."""
    notices: list[str] = []
    try:
        loaded = load_config(config, overrides, notices)
    except ConfigError as error:
        raise fail(str(error), code=code)
    for notice in notices:
        _say(err_console, "config:", "yellow", notice)
    return loaded


@app.command()
def join(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE", help="YAML config (see configs/)")] = None,
    peers: Annotated[Optional[list[str]], typer.Option("--peers", metavar="MULTIADDR", help="multiaddr of a peer to join (repeatable)")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", metavar="DIR", help="state directory (default ~/.swarmnode)")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, metavar="N", help="stop after this many rounds")] = None,
    headless: Annotated[bool, typer.Option("--headless", help="JSON-lines logs, no dashboard (default without a TTY)")] = False,
    metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", metavar="PORT", help="/metrics and /status port; 0 = any")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="override a config key: --set optimizer.learning_rate=1e-4")] = None,
) -> None:
    """Join a swarm (or start one) and train: sample, share, collect, rescore, train, checkpoint; repeat."""
    extra = list(overrides or [])
    if peers:
        extra.append(f"network.initial_peers={json.dumps(peers)}")
    if metrics_port is not None:
        extra.append(f"metrics.port={metrics_port}")
    node_config = _load(config, extra)  # before the imports below (seconds of torch): a typo is told at once
    lower_priority(node_config.nice)  # before torch, hivemind and p2pd start threads: they inherit it
    directory = data_dir or node_config.data_dir or default_data_dir()
    headless = headless or not sys.stdout.isatty()
    if not headless:
        console.print(f"starting swarmnode in {directory} …", highlight=False)

    from swarmnode.files import DataDirBusy, DataDirError
    from swarmnode.learn.checkpoint import CheckpointError
    from swarmnode.learn.policy import PolicyLoadError
    from swarmnode.net.start import StartError
    from swarmnode.node import DaemonLost, Node
    from swarmnode.ops.dashboard import render
    from swarmnode.ops.server import EndpointError

    stop = threading.Event()
    signals = _handle_signals(stop)
    log = _json_log if headless else _quiet_log
    node = Node(node_config, directory, log, stop)
    try:
        node.start()
    except (IdentityError, PolicyLoadError, StartError, DataDirBusy, DataDirError, EndpointError, CheckpointError,
            ConfigError) as error:
        raise fail(str(error))
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise fail(f"cannot start: {error.strerror or error}{where}")
    error: str | None = None
    try:
        if headless:
            node.run(rounds)
        else:
            _print_join_hint(node)
            with Live(get_renderable=lambda: render(node.status), refresh_per_second=2, console=console):
                node.run(rounds)
    except DaemonLost as failure:
        error = str(failure)
        raise fail(error)
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
        raise
    finally:
        node.close()
        # why it ended, for a service manager's log: an error, else a signal, else --rounds were done
        log({
            "event": "stopped", "round": node.round, "reason": "error" if error else "signal" if signals else "rounds_done",
            "signal": signals[0] if signals else None, "error": error,
            "checkpoint": str(node.checkpoint) if node.checkpoint else None,
        })
    if not headless:
        console.print(f"stopped after round {node.round}; checkpoint in {directory / 'checkpoints'}", highlight=False)


def _handle_signals(stop: threading.Event) -> list[str]:
    """First SIGINT/SIGTERM: finish or abandon the current phase, checkpoint, leave. Second: exit now.
    Returns the names of the signals received, filled in as they arrive."""
    received: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return received


def _json_log(event: dict) -> None:
    sys.stdout.write(json.dumps({"ts": round(time.time(), 3), **event}, default=str) + "\n")
    sys.stdout.flush()


def _quiet_log(event: dict) -> None:
    """In dashboard mode the dashboard shows rounds; only start-up facts go to the terminal."""


def _print_join_hint(node) -> None:
    status = node.status
    console.print(f"peer id  {node.identity.peer_id}", highlight=False)
    if status.gossip_enabled:
        console.print(
            f"protocol v{PROTOCOL_VERSION}: nodes of another protocol version are another swarm to this one",
            highlight=False,
        )
    for warning in node.warnings:
        _say(console, "warning:", "yellow", warning)
    if status.gossip_enabled:
        console.print(f"reachability  {status.reachability_detail} (DHT {status.dht_mode})", highlight=False)
    if status.maddrs:  # the command alone on its line, wrapped by the terminal only: a copy is one line
        console.print("others join with:", highlight=False)
    for maddr in status.maddrs:
        console.print(f"swarmnode join --peers {maddr}", highlight=False, soft_wrap=True, markup=False)
    if status.gossip_enabled and not status.maddrs:
        console.print(
            "others cannot dial this node, so they join through a public peer; it trains and shares all the same. "
            "To serve, forward network.port on your router and set network.announce_maddrs.",
            highlight=False,
        )
    if node.metrics_url:
        console.print("dashboard from another terminal:", highlight=False)
        console.print(f"swarmnode dashboard --url {node.metrics_url}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def dashboard(
    url: Annotated[str, typer.Option(metavar="URL", help="base URL of a node's metrics endpoint")] = "http://127.0.0.1:9480",
) -> None:
    """Attach a live dashboard to a running (e.g. headless) node."""
    from swarmnode.ops.dashboard import attach

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one leaves the dashboard
        attach(url)


@app.command()
def status(
    url: Annotated[str, typer.Option(metavar="URL", help="base URL of a node's metrics endpoint")] = "http://127.0.0.1:9480",
) -> None:
    """Print a one-shot summary of a running node."""
    from swarmnode.ops.client import fetch_status
    from swarmnode.ops.dashboard import render

    try:
        snapshot = fetch_status(url)
    except OSError as error:
        raise fail(f"no node answers at {url}/status ({error}); is it running with --metrics-port?")
    except (ValueError, KeyError, TypeError) as error:
        raise fail(f"{url}/status is not a swarmnode status ({type(error).__name__}: {error}); is --url a node's endpoint?")
    console.print(render(snapshot), height=30)


@app.command()
def swarm(
    url: Annotated[str, typer.Option(metavar="URL", help="base URL of a running node's metrics endpoint (it takes the census)")] = "http://127.0.0.1:9480",
    peers: Annotated[Optional[list[str]], typer.Option("--peers", metavar="MULTIADDR", help="instead: join through this multiaddr as a bare DHT client (repeatable)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE", help="with --peers: the swarm's config (swarm.id, window_s)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="with --peers: config override, e.g. --set swarm.id=demo")] = None,
    sort: Annotated[str, typer.Option(metavar="COLUMN", help="reward, held_out, round, model, last_seen or peer")] = "reward",
    timeout: Annotated[float, typer.Option(min=0.1, metavar="SECONDS", help="seconds to wait for the census")] = 20.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the census as JSON")] = False,
) -> None:
    """The swarm's live nodes from their signed beacons (PROTOCOL.md §4.2): model, round, reward, held-out
    score, rollouts shared, reachability, last seen; with totals. No central server: any node, or a bare
    DHT client, reads every census bucket."""

    from swarmnode.net.census import SORT_KEYS, take_census_as_client
    from swarmnode.net.start import StartError
    from swarmnode.ops.client import fetch_census
    from swarmnode.ops.dashboard import census_notes, census_table, census_title, peer_text

    if sort not in SORT_KEYS:
        raise fail(f"--sort {sort!r}: choose one of {', '.join(SORT_KEYS)}", code=2)
    if peers:
        settings = _load(config, [*(overrides or []), f"network.initial_peers={json.dumps(peers)}"])
        try:
            census = take_census_as_client(SwarmRules.of(settings.swarm), settings.network, timeout_s=timeout)
        except StartError as error:
            raise fail(str(error))
    else:
        try:
            census = fetch_census(url, timeout_s=timeout)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise fail(
                f"no census from {url}/census ({error}); is a node running there with gossip and beacons on? "
                f"Or ask the swarm directly: --peers MULTIADDR"
            )
    if as_json:
        typer.echo(json.dumps(census.to_json()))
        return
    now = time.time()
    wide = console if console.is_terminal else Console(width=200)  # piped: keep every column
    wide.print(Text(census_title(census)))
    if census.entries:
        wide.print(census_table(census, now, sort=sort))
    if census_notes(census):
        wide.print(peer_text(census_notes(census)), style="yellow")
    if peers and not census.entries and not census.timed_out:
        rules = settings.swarm
        wide.print(
            f"no beacon under swarm {rules.id!r}'s keys (protocol v{census.protocol}, swarm.window_s={rules.window_s:g}, "
            f"swarm.epoch_windows={rules.epoch_windows}); the keys of a swarm with other values are elsewhere: pass "
            "its own with --set (e.g. --set swarm.epoch_windows=N)", style="yellow", highlight=False,
        )


@app.command()
def report(
    data_dir: Annotated[Path, typer.Argument(metavar="DATA_DIR", help="a node's data directory (holds metrics.jsonl)")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="PATH", help="where to write PNGs (default DATA_DIR/report)")] = None,
) -> None:
    """Write PNG plots of a run: reward (own vs peers'), loss, what training did (clip, gradient norm),
    held-out pass rate (when evaluations ran) and round time by phase."""
    from swarmnode.ops.report import ReportError, write_report

    try:
        paths = write_report(data_dir, out)
    except ReportError as error:
        raise fail(str(error))
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


@app.command()
def export(
    data_dir: Annotated[Path, typer.Argument(metavar="DATA_DIR", help="a node's data directory (its config.yaml and checkpoints)")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="directory to write (transformers' from_pretrained loads it)")],
    adapter: Annotated[bool, typer.Option("--adapter", help="LoRA runs: save the adapter (peft) instead of merging it")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace OUT if it exists")] = False,
    push: Annotated[Optional[str], typer.Option("--push", metavar="REPO_ID", help="also upload to this hub repo (needs network and a token)")] = None,
    public: Annotated[bool, typer.Option("--public", help="with --push: make the repo public (default private)")] = False,
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", metavar="URL", help="with --push: hub URL (default: huggingface.co or HF_ENDPOINT)")] = None,
) -> None:
    """Write the trained model (safetensors, config, tokenizer, generation config) and a model card with the
    held-out pass rates before and after; optionally upload it."""
    from swarmnode.learn.policy import PolicyLoadError
    from swarmnode.ops.export import ExportError, export_model
    from swarmnode.ops.export import push as push_to_hub

    try:
        written = export_model(data_dir, out, adapter=adapter, force=force)
        console.print(f"wrote {written} (model card: {written / 'README.md'})", highlight=False)
        if push:
            console.print(f"uploaded: {push_to_hub(written, push, private=not public, endpoint=endpoint)}", highlight=False)
    except (ExportError, PolicyLoadError, ConfigError) as error:
        raise fail(str(error))


@app.command("eval")
def eval_models(
    models: Annotated[list[str], typer.Argument(metavar="MODEL", help="model names, model directories or node data dirs, compared side by side")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE", help="task families and sampling (default: the first data dir's, else built-in)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="config override, e.g. --set eval.questions_per_family=64")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Score models on the held-out questions (the same reserved items the nodes evaluate): greedy and sampled
    pass rate per family, side by side (e.g. the base model vs a trained data dir or an export)."""
    from rich.table import Table

    from swarmnode.learn.evaluation import evaluate, held_out_tasks
    from swarmnode.learn.policy import Policy, PolicyLoadError, SamplingSettings
    from swarmnode.learn.tasks import TaskSuite
    from swarmnode.ops.export import ExportError, is_data_dir, load_trained

    first_data_dir = next((Path(m) for m in models if is_data_dir(Path(m))), None)
    if config is None and first_data_dir is not None:
        config = first_data_dir / CONFIG_FILENAME
    settings = _load(config, list(overrides or []))
    suite = TaskSuite.of(settings.tasks)
    tasks = held_out_tasks(suite, settings.eval.questions_per_family)
    results = []
    for name in models:
        try:
            if is_data_dir(Path(name)):
                policy = load_trained(Path(name)).policy
            else:
                policy = Policy.load(name, device=settings.model.device, dtype=settings.model.dtype, threads=settings.model.threads)
        except (ExportError, PolicyLoadError, ConfigError) as error:
            raise fail(str(error))
        if not as_json:
            err_console.print(f"evaluating {name} on {len(tasks)} questions …", highlight=False)
        result = evaluate(policy, suite, tasks, SamplingSettings.of(settings.model), settings.eval.samples_per_question)
        results.append((name, result))
    if as_json:
        typer.echo(json.dumps([{"model": name, **result.to_dict()} for name, result in results]))
        return
    table = Table(title=f"held-out pass rate: greedy / sampled ({settings.eval.questions_per_family} questions per family, "
                        f"{settings.eval.samples_per_question} samples each)")
    table.add_column("family")
    for name, _ in results:
        table.add_column(Path(name).name or name, justify="right")
    for family in sorted({family for _, result in results for family in result.families}):
        cells = [result.families.get(family) for _, result in results]
        table.add_row(family, *(f"{c.greedy:.3f} / {c.sampled:.3f}" if c else "—" for c in cells))
    table.add_row("[bold]mean[/]", *(f"[bold]{r.greedy:.3f} / {r.sampled:.3f}[/]" for _, r in results))
    wide = console if console.is_terminal else Console(width=max(80, 20 + 18 * len(results)))  # piped: 80 columns cut names
    wide.print(table)


@app.command()
def doctor(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE", help="YAML config to check")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", metavar="DIR", help="state directory to check")] = None,
    peers: Annotated[Optional[list[str]], typer.Option("--peers", metavar="MULTIADDR", help="multiaddr of a peer to check, as for join (repeatable)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="config override, as for join")] = None,
    check: Annotated[Optional[list[str]], typer.Option("--check", metavar="CHECK", help="run only this check (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Check versions, p2pd, identity, data dir, config, ports, peers, reachability, memory and the model;
    exit 1 on a failure. Checks that need the config are skipped, not passed, when it cannot be read."""
    from swarmnode.ops.doctor import DoctorContext, Outcome, run_checks

    flags = [*(overrides or []), *([f"network.initial_peers={json.dumps(peers)}"] if peers else [])]
    try:
        results = run_checks(DoctorContext(config, flags, data_dir or default_data_dir()), check or ())
    except ValueError as error:
        raise fail(str(error), code=2)
    if as_json:
        typer.echo(json.dumps([{**result.__dict__, "outcome": result.outcome.value} for result in results]))
        raise typer.Exit(1 if any(result.outcome is Outcome.FAIL for result in results) else 0)
    styles = {Outcome.PASS: "green", Outcome.WARN: "yellow", Outcome.FAIL: "bold red", Outcome.SKIP: "dim"}
    width = max(len(result.name) for result in results)
    for result in results:  # lines, not a table: a path or an address in a detail is never split mid-token
        _say(console, f"{result.outcome.value:<4}", styles[result.outcome], f"{result.name:<{width}}  {result.detail}")
        if result.fix:
            console.print(f"{'':<{width + 7}}fix: {result.fix}", highlight=False, soft_wrap=True, markup=False)
    if any(result.outcome is Outcome.FAIL for result in results):
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
