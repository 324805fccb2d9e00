"""The `swarmnode` command: parses arguments, loads config, and hands over to the module that does the work."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console

from swarmnode.config import ConfigError, load_config
from swarmnode.envelope import MAX_ENVELOPE_BYTES, Rejected, ReplayGuard, Slot, SwarmRules, open_envelope, seal
from swarmnode.identity import (
    IDENTITY_FILENAME,
    Identity,
    IdentityError,
    load_identity,
    load_or_create_identity,
    save_identity,
)
from swarmnode.rollout import RolloutBatch
from swarmnode.tasks import known_family_rejection

app = typer.Typer(help="A decentralized swarm post-training node (SAPO over a signed hivemind DHT).", no_args_is_help=True)
identity_app = typer.Typer(help="Create and inspect the node's Ed25519 identity.", no_args_is_help=True)
protocol_app = typer.Typer(help="Check and make wire-protocol frames (see protocol/PROTOCOL.md).", no_args_is_help=True)
app.add_typer(identity_app, name="identity")
app.add_typer(protocol_app, name="protocol")

console = Console()
err_console = Console(stderr=True)


def default_data_dir() -> Path:
    return Path(os.environ.get("SWARMNODE_HOME", Path.home() / ".swarmnode"))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line a person can act on, then exit non-zero (no traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


PathOption = Annotated[Optional[Path], typer.Option("--path", help="identity file (default: DATA_DIR/identity.key)")]


@identity_app.command("new")
def identity_new(
    path: PathOption = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing key (its peer id is lost)")] = False,
) -> None:
    """Create a new Ed25519 identity file (mode 0600) and print its peer id."""
    path = path or default_data_dir() / IDENTITY_FILENAME
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
def identity_show(path: PathOption = None) -> None:
    """Print the peer id (base58, as hivemind prints it) and the public key (hex)."""
    path = path or default_data_dir() / IDENTITY_FILENAME
    try:
        identity = load_identity(path)
    except IdentityError as error:
        raise fail(str(error))
    _print_identity(identity)


def _print_identity(identity: Identity) -> None:
    console.print(f"peer_id    {identity.peer_id}", highlight=False)
    console.print(f"public_key {identity.public_key.hex()}", highlight=False)


@protocol_app.command("check")
def protocol_check(
    files: Annotated[list[Path], typer.Argument(help="files holding one encoded envelope (a frame) each")],
    swarm: Annotated[Optional[str], typer.Option(help="check that batches belong to this swarm")] = None,
    now: Annotated[Optional[float], typer.Option(help="DHT time (Unix seconds) for the freshness checks")] = None,
    window_s: Annotated[float, typer.Option(help="the swarm's window length in seconds")] = 30.0,
    num_shards: Annotated[int, typer.Option(help="the swarm's shard count")] = 16,
    slot: Annotated[
        Optional[str], typer.Option(help="WINDOW/SHARD/SUBKEY the frames were read from, for the key checks")
    ] = None,
    families: Annotated[
        Optional[str], typer.Option(help="comma-separated task families this receiver knows (default: reasoning-gym's)")
    ] = None,
) -> None:
    """Print `accept` or `reject: <reason_code>` per file, for any content at all; exit 1 if any is rejected.

    Files are checked in order through one replay guard, so a frame given twice is a replay.
    """
    rules = SwarmRules(swarm_id=swarm, window_s=window_s, num_shards=num_shards) if swarm else None
    try:
        read_slot = _parse_slot(slot) if slot else None
    except ValueError:
        raise fail("--slot must look like WINDOW/SHARD/SUBKEY, e.g. 12345/3/12D3KooW...", code=2)
    known = families.split(",") if families else None
    guard = ReplayGuard()
    rejected_any = False
    for file in files:
        try:
            with open(file, "rb") as handle:
                frame = handle.read(MAX_ENVELOPE_BYTES + 1)
        except OSError as error:
            raise fail(f"{file}: cannot read ({error.strerror})", code=2)
        prefix = f"{file}: " if len(files) > 1 else ""
        try:
            signed = open_envelope(frame, rules, now=now, slot=read_slot, replay_guard=guard)
            for rollout in signed.batch.rollouts:
                known_family_rejection(rollout.task, known)
        except Rejected as rejected:
            rejected_any = True
            typer.echo(f"{prefix}reject: {rejected.reason.value}")
            if rejected.detail:
                err_console.print(f"  ({rejected.detail})", highlight=False)
            continue
        typer.echo(f"{prefix}accept")
    if rejected_any:
        raise typer.Exit(1)


def _parse_slot(text: str) -> Slot:
    window, shard, subkey = text.split("/", 2)
    return Slot(int(window), int(shard), subkey)


@protocol_app.command("sign")
def protocol_sign(
    batch_json: Annotated[Path, typer.Argument(help="JSON description of a RolloutBatch (see PROTOCOL.md)")],
    key: Annotated[Path, typer.Option("--key", help="identity file of the signer")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the frame")],
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
    frame = seal(batch, identity)
    out.write_bytes(frame)
    console.print(f"wrote {out} ({len(frame)} bytes, signer {identity.peer_id})", highlight=False)


@app.command("bootstrap")
def bootstrap(
    port: Annotated[Optional[int], typer.Option(help="TCP port (default: network.port; 0 = any)")] = None,
    host: Annotated[
        Optional[str], typer.Option(help="listen address (default: network.host = 127.0.0.1)")
    ] = None,
    identity: Annotated[
        Optional[Path], typer.Option(help="identity file, made if missing (default: DATA_DIR/identity.key)")
    ] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML config file")] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", help="override a config key, e.g. --set swarm.id=demo")
    ] = None,
) -> None:
    """Run a DHT-only peer for nodes to join; print its multiaddrs (one per line), serve until Ctrl-C/SIGTERM.

    It stores and serves records for the swarm and refuses any record that is not a valid signed frame.
    """
    from swarmnode.dht import DHTPeer, GossipStartError  # hivemind imports torch (~3 s); only this needs it

    flags = list(overrides or [])
    if port is not None:
        flags.append(f"network.port={port}")
    if host is not None:
        flags.append(f"network.host={host}")
    try:
        settings = load_config(config, flags)
        identity_path = identity or (settings.data_dir or default_data_dir()) / IDENTITY_FILENAME
        load_or_create_identity(identity_path)
    except (ConfigError, IdentityError) as error:
        raise fail(str(error))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    peer = DHTPeer(identity_path, settings.swarm.rules(), settings.network)
    try:
        peer.start()
    except GossipStartError as error:
        raise fail(str(error))
    try:
        for maddr in peer.visible_maddrs:
            typer.echo(maddr)
        ready = f"bootstrap peer of swarm {settings.swarm.id!r} up; Ctrl-C stops it"
        err_console.print(ready, highlight=False)
        while not stop.wait(1.0):
            pass
    finally:
        peer.close()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
