"""`swarmnode doctor`: checks everything a node needs before it runs, each with a fix when it fails.

A check returns (status, detail, fix); one failing check never stops the others.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import psutil

from swarmnode.config import ConfigError, NodeConfig, load_config
from swarmnode.files import DataDirError, prepare_data_dir
from swarmnode.wire.identity import IDENTITY_FILENAME, IdentityError, load_identity
from swarmnode.wire.rules import SwarmRules

MIN_FREE_DISK_BYTES = 1 << 30
PEER_CONNECT_TIMEOUT_S = 3.0


class Outcome(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    detail: str
    fix: str = ""


@dataclass
class DoctorContext:
    config_path: Path | None
    overrides: list[str]
    data_dir: Path
    config: NodeConfig | None = None


def run_checks(context: DoctorContext, only: Sequence[str] = ()) -> list[CheckResult]:
    """Every check, or those named in `only` (the config is always loaded first: the others read it)."""
    unknown = set(only) - {name for name, _ in CHECKS}
    if unknown:
        raise ValueError(f"unknown check {sorted(unknown)[0]!r}; choose from {', '.join(name for name, _ in CHECKS)}")
    results = []
    for name, check in CHECKS:
        if only and name not in only and name != "config":
            continue
        if context.config is None and name in NEEDS_CONFIG:
            results.append(CheckResult(name, Outcome.SKIP, "not checked: the config could not be read"))
            continue
        try:
            outcome, detail, fix = check(context)
        except Exception as error:  # a broken check is a finding, not a crash of the doctor
            outcome, detail, fix = Outcome.FAIL, f"{type(error).__name__}: {error}", "report this as a bug"
        results.append(CheckResult(name, outcome, detail, fix))
    return results


def check_python(_: DoctorContext):
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 10):
        return Outcome.FAIL, f"Python {version}", "install Python 3.10 or newer"
    return Outcome.PASS, f"Python {version}", ""


def check_packages(_: DoctorContext):
    wanted = ["torch", "transformers", "hivemind", "reasoning-gym", "protobuf", "cryptography"]
    found, missing = [], []
    for package in wanted:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        return Outcome.FAIL, "missing: " + ", ".join(missing), "pip install -e . (or ./scripts/swarmnode)"
    return Outcome.PASS, ", ".join(found), ""


def check_config(context: DoctorContext):
    try:
        context.config = load_config(context.config_path, context.overrides)
    except ConfigError as error:
        return Outcome.FAIL, str(error), "fix the key named above (configs/default.yaml lists them all)"
    source = context.config_path or "built-in defaults"
    return Outcome.PASS, f"{source}: swarm {context.config.swarm.id}, model {context.config.model.name}", ""


def check_data_dir(context: DoctorContext):
    directory = context.data_dir
    try:
        prepare_data_dir(directory)
    except DataDirError as error:
        return Outcome.FAIL, str(error), "pass a writable --data-dir"
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_DISK_BYTES:
        return Outcome.WARN, f"{directory}: {free / 2**30:.2f} GiB free", "free disk space: checkpoints need room"
    return Outcome.PASS, f"{directory}: writable, {free / 2**30:.0f} GiB free", ""


def check_identity(context: DoctorContext):
    path = context.data_dir / IDENTITY_FILENAME
    if not path.exists():
        return Outcome.WARN, f"{path}: none yet", "none needed: `swarmnode join` creates one (mode 0600)"
    try:
        identity = load_identity(path)
    except IdentityError as error:
        return Outcome.FAIL, str(error), f"restore the key from a backup, or move {path} aside and join as a new peer"
    return Outcome.PASS, f"{path}: peer id {identity.peer_id}", ""


def check_memory(context: DoctorContext):
    available = psutil.virtual_memory().available
    need = 4 << 30 if context.config.model.name != "swarmnode-seed" else 1 << 30
    detail = f"{available / 2**30:.1f} GiB available"
    if available < need:
        return Outcome.WARN, detail, f"the model may need ~{need >> 30} GiB: close other programs or use a smaller model"
    return Outcome.PASS, detail, ""


def check_p2pd(context: DoctorContext):
    from swarmnode.net.peer import DHTPeer
    from swarmnode.net.start import StartError
    from swarmnode.wire.identity import Identity, save_identity

    config = context.config
    with tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "doctor.key"
        save_identity(Identity.generate(), key)
        network = config.network.model_copy(update={"initial_peers": [], "port": 0})
        peer = DHTPeer(key, SwarmRules.of(config.swarm), network)
        try:
            peer.start()
        except StartError as error:
            return Outcome.FAIL, str(error), "reinstall hivemind>=1.1.12 (its wheel ships p2pd)"
        try:
            return Outcome.PASS, f"p2pd started and stopped on {network.host}", ""
        finally:
            peer.close()


def check_ports(context: DoctorContext):
    config = context.config
    busy = []
    for what, host, port in [("network.port", config.network.host, config.network.port),
                             ("metrics.port", config.metrics.host, config.metrics.port)]:
        if port and not _port_free(host, port):
            busy.append(f"{what} {host}:{port}")
    if busy:
        return Outcome.FAIL, "in use: " + ", ".join(busy), "stop the other process or choose another port"
    return Outcome.PASS, "configured ports are free", ""


def check_initial_peers(context: DoctorContext):
    from hivemind.utils.multiaddr import Multiaddr

    import swarmnode.net  # noqa: F401  hivemind's address parser, without the torch its package imports

    peers = context.config.network.initial_peers
    if not peers:
        return Outcome.PASS, "no initial peers: this node starts a new swarm", ""
    unreachable = []
    for text in peers:
        try:
            address = Multiaddr(text)
            host = address.value_for_protocol("ip4") if "ip4" in text else address.value_for_protocol("ip6")
            port = int(address.value_for_protocol("tcp"))
            with socket.create_connection((host, port), timeout=PEER_CONNECT_TIMEOUT_S):
                pass
        except Exception as error:
            unreachable.append(f"{text} ({type(error).__name__})")
    if unreachable:
        return Outcome.FAIL, "unreachable: " + "; ".join(unreachable), "check the address and that the peer runs"
    return Outcome.PASS, f"{len(peers)} reachable over TCP", ""


def check_reachability(context: DoctorContext):
    """Start a throwaway peer as the node would (same host, same port if free) and ask the initial peers to
    dial it back: public, private (NAT, firewall, loopback listener) or unknown, with the fix."""
    from swarmnode.net.peer import DHTPeer
    from swarmnode.net.start import StartError
    from swarmnode.wire.address import Reachability
    from swarmnode.wire.identity import Identity, save_identity

    config = context.config
    network = config.network
    if not network.initial_peers:
        return Outcome.WARN, "no initial peers to ask whether others can dial this node", "pass --set network.initial_peers=[MADDR] to check"
    port = network.port if network.port and _port_free(network.host, network.port) else 0
    with tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "doctor.key"
        save_identity(Identity.generate(), key)
        # a client: a peer that served the DHT for a few seconds and left would stall others' lookups
        probe_network = network.model_copy(update={"port": port, "reachability": "auto"})
        peer = DHTPeer(key, SwarmRules.of(config.swarm), probe_network, serve=False)
        try:
            peer.start()
        except StartError as error:
            return Outcome.FAIL, str(error), "if the p2pd check passed, network.host or network.port is at fault: --set network.port=0 takes any free port"
        try:
            report, mapping, ports = peer.reachability, peer.port_mapping, peer.listen_ports
        finally:
            peer.close()
    on = f"port {port}" if port else f"a free port ({network.port} is taken, e.g. by a running node)"
    detail = f"{report.describe()}; checked on {on}; UPnP/NAT-PMP: {mapping}"
    if report.reachability is Reachability.PUBLIC:
        return Outcome.PASS, f"{detail}; others join with {', '.join(report.dialable)}", ""
    if report.reachability is Reachability.UNKNOWN:
        return Outcome.WARN, detail, "none of the initial peers answered the dial-back check: are they swarmnode >= 0.2 and running?"
    return Outcome.WARN, detail, _private_fix(network.host, report.observed_hosts, ports)


def _private_fix(host: str, observed: Sequence[str], ports: Sequence[int]) -> str:
    port = ports[0] if ports else "PORT"
    if ipaddress.ip_address(host).is_loopback:
        return f"network.host is {host}: set network.host=0.0.0.0 (or this machine's address) so peers can dial it"
    local = {address.address for addresses in psutil.net_if_addrs().values() for address in addresses}
    outside = [address for address in observed if address not in local]
    if outside:
        return (
            f"behind NAT (peers see {outside[0]}): the node still trains and shares as a DHT client. To serve, "
            f"forward TCP port {port} on your router to this machine, fix it with network.port={port}, and set "
            f"network.announce_maddrs=['/ip4/{outside[0]}/tcp/{port}']"
        )
    return f"a firewall blocks incoming TCP on port {port}: open it (the node works as a DHT client meanwhile)"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_model(context: DoctorContext):
    from swarmnode.learn.policy import DeviceError, Policy, PolicyLoadError

    config = context.config
    try:
        policy = Policy.load(config.model.name, device=config.model.device, dtype=config.model.dtype)
    except PolicyLoadError as error:
        if isinstance(error, DeviceError):
            return Outcome.FAIL, str(error), "set model.device / model.dtype as the message says"
        return Outcome.FAIL, str(error), "set model.name to a local directory or the embedded swarmnode-seed"
    return Outcome.PASS, f"{policy.model_id}: {policy.parameters / 1e6:.1f}M parameters on {policy.device}, {policy.compute_dtype}", ""


CHECKS: list[tuple[str, Callable[[DoctorContext], tuple[Outcome, str, str]]]] = [
    ("python", check_python),
    ("packages", check_packages),
    ("config", check_config),
    ("data dir", check_data_dir),
    ("identity", check_identity),
    ("memory", check_memory),
    ("p2pd", check_p2pd),
    ("ports", check_ports),
    ("initial peers", check_initial_peers),
    ("reachability", check_reachability),
    ("model", check_model),
]
NEEDS_CONFIG = {"memory", "p2pd", "ports", "initial peers", "reachability", "model"}

