"""A network lab on one machine: hosts in network namespaces (netns), a bridge as "the internet", homes
behind routers that masquerade their LAN and let only replies back in, random loss and bandwidth caps;
real `swarmnode bootstrap` / `join` processes inside; everything torn down, also on Ctrl-C or a failure.

Needs root, iproute2 and iptables (`apt-get install -y iptables`). It uses only addresses inside the
namespaces it creates: the internet is 10.77.0.0/24 with no route out (nothing can leave the machine),
home k's LAN is 192.168.k.0/24. This kernel has no netem: loss comes from `iptables -m statistic`,
bandwidth from `tc tbf`; there is no latency emulation (none of tbf, htb or iptables can delay packets).

Usage: python -m swarmnode.lab.netlab SCENARIO [--rounds 12] [--dir runs/netlab] [--set key=value ...]
       scenarios: two-public, default-host, homes-and-public, homes-alone, lossy-capped, port-forward
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarmnode.lab.local_swarm import ROOT, LocalSwarm, NodeSpec, SwarmResult, exit_on_sigterm, seeded_overrides

NAMESPACE_PREFIX = "snlab"
INTERNET = "10.77.0"  # the "internet" /24; public host k is .(10+k), home k's router .(100+k)
NODE_PORT = 31337  # every lab node listens on this port (so a router can forward it)
BOOTSTRAP_PORT = 4001
FAST = ("sapo.questions_per_round=4", "sapo.completions_per_question=4", "model.max_new_tokens=12", "eval.every_rounds=0")
_OWNED = re.compile(rf"^{NAMESPACE_PREFIX}(\d+)-")


class LabUnavailable(Exception):
    """This machine cannot run the lab (not root, no network namespaces, no iptables); one line says why."""


@dataclass(frozen=True)
class Host:
    """A machine of the lab. A home sits behind its own masquerading router; loss and rate apply to the
    host's access link in both directions; `port_forward` makes a home's router forward NODE_PORT to it."""

    name: str
    home: bool = False
    loss: float = 0.0
    rate: str | None = None  # tc tbf rate, e.g. "1mbit"
    port_forward: bool = False


@dataclass
class _Built:
    host: Host
    namespace: str
    address: str  # the host's own address
    public_address: str  # where the internet sees it: its own (public) or its router's (home)
    router: str | None = None


def lab_unavailable_reason() -> str | None:
    """None if the lab can run here, else one line saying what is missing."""
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, veth, iptables)"
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return f"the network lab needs `{tool}` (apt-get install -y iproute2 iptables)"
    probe = f"{NAMESPACE_PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        nat = _run_quiet(["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-L", "-n"])
        if nat is not None:
            return f"iptables NAT does not work in a namespace here: {nat}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run_quiet(argv: Sequence[str]) -> str | None:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def sweep_stale_namespaces() -> list[str]:
    """Delete namespaces an earlier lab left behind (its owner process is gone), killing what runs in them."""
    removed = []
    for name in _namespaces():
        match = _OWNED.match(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _delete_namespace(name)
            removed.append(name)
    return removed


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _delete_namespace(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    for _ in range(50):  # a namespace goes once its last process has been reaped
        if not subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
            break
        time.sleep(0.1)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


class NetLab:
    """Build the hosts, run commands on them, tear everything down (namespaces take their links, routes,
    iptables rules and qdiscs with them). Use as a context manager."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        if len({host.name for host in hosts}) != len(hosts):
            raise ValueError("host names must be distinct")
        self.hosts = list(hosts)
        self.tag = f"{NAMESPACE_PREFIX}{os.getpid()}"
        self._built: dict[str, _Built] = {}
        self._namespaces: list[str] = []

    def __enter__(self) -> NetLab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        reason = lab_unavailable_reason()
        if reason is not None:
            raise LabUnavailable(reason)
        sweep_stale_namespaces()
        internet = self._namespace("inet")
        self._ip(internet, "link", "add", "inet0", "type", "bridge")
        self._ip(internet, "link", "set", "inet0", "up")
        for index, host in enumerate(self.hosts, start=1):
            self._built[host.name] = self._home(index, host, internet) if host.home else self._public(index, host, internet)

    def _public(self, index: int, host: Host, internet: str) -> _Built:
        namespace = self._namespace(host.name)
        address = f"{INTERNET}.{10 + index}"
        self._link(namespace, "eth0", internet, f"p{index}", f"{address}/24", bridge=True)
        self._shape(namespace, "eth0", internet, f"p{index}", host)
        return _Built(host, namespace, address, address)

    def _home(self, index: int, host: Host, internet: str) -> _Built:
        router, namespace = self._namespace(f"{host.name}-gw"), self._namespace(host.name)
        wan, lan, address = f"{INTERNET}.{100 + index}", f"192.168.{index}.1", f"192.168.{index}.2"
        self._link(router, "wan0", internet, f"r{index}", f"{wan}/24", bridge=True)
        self._link(namespace, "eth0", router, "lan0", f"{address}/24", peer_address=f"{lan}/24")
        self._ip(namespace, "route", "add", "default", "via", lan)
        self._exec(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = [
            ["-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"],
            ["-A", "FORWARD", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ]
        if host.port_forward:
            rules += [
                ["-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-p", "tcp", "--dport", str(NODE_PORT),
                 "-j", "DNAT", "--to-destination", f"{address}:{NODE_PORT}"],
                ["-A", "FORWARD", "-i", "wan0", "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"],
            ]
        rules.append(["-A", "FORWARD", "-i", "wan0", "-j", "DROP"])  # nothing new gets in from outside
        for rule in rules:
            self._exec(router, "iptables", *rule)
        self._shape(namespace, "eth0", router, "lan0", host)
        return _Built(host, namespace, address, wan, router)

    def _shape(self, namespace: str, device: str, peer_namespace: str, peer_device: str, host: Host) -> None:
        """Loss on the host, both directions; the rate cap on both ends of its access link."""
        if host.loss > 0:
            for chain in ("INPUT", "OUTPUT"):
                self._exec(namespace, "iptables", "-A", chain, "-m", "statistic", "--mode", "random",
                           "--probability", f"{host.loss}", "-j", "DROP")
        if host.rate:
            for ns, dev in ((namespace, device), (peer_namespace, peer_device)):
                self._exec(ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", host.rate,
                           "burst", "32kbit", "latency", "400ms")

    def _namespace(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self._namespaces.append(name)
        self._ip(name, "link", "set", "lo", "up")
        return name

    def _link(
        self, namespace: str, device: str, peer_namespace: str, peer_device: str, address: str,
        *, bridge: bool = False, peer_address: str | None = None,
    ) -> None:
        """A veth pair made directly inside the two namespaces (nothing touches the root namespace)."""
        subprocess.run(
            ["ip", "link", "add", device, "netns", namespace, "type", "veth", "peer", "name", peer_device,
             "netns", peer_namespace],
            check=True, capture_output=True,
        )
        self._ip(namespace, "addr", "add", address, "dev", device)
        self._ip(namespace, "link", "set", device, "up")
        if bridge:
            self._ip(peer_namespace, "link", "set", peer_device, "master", "inet0")
        if peer_address:
            self._ip(peer_namespace, "addr", "add", peer_address, "dev", peer_device)
        self._ip(peer_namespace, "link", "set", peer_device, "up")

    def _ip(self, namespace: str, *argv: str) -> None:
        subprocess.run(["ip", "-n", namespace, *argv], check=True, capture_output=True)

    def _exec(self, namespace: str, *argv: str) -> None:
        done = subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {namespace}: {done.stderr.strip()}")

    def prefix(self, host: str) -> tuple[str, ...]:
        """What to put before a command to run it on `host`."""
        return ("ip", "netns", "exec", self._built[host].namespace)

    def address(self, host: str) -> str:
        return self._built[host].address

    def public_address(self, host: str) -> str:
        return self._built[host].public_address

    def wire_bytes(self, host: str) -> int:
        """Bytes received plus sent on the host's link so far (its eth0 counters)."""
        shown = subprocess.run(
            ["ip", "-n", self._built[host].namespace, "-j", "-s", "link", "show", "dev", "eth0"],
            capture_output=True, text=True, check=True,
        )
        stats = json.loads(shown.stdout)[0]["stats64"]
        return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])

    def run(self, host: str, argv: Sequence[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(host), *argv], capture_output=True, text=True, timeout=timeout_s)

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def close(self) -> None:
        """Kill every process left in our namespaces and delete them; idempotent."""
        for name in reversed(self._namespaces):
            _delete_namespace(name)
        self._namespaces = []


# ---------------------------------------------------------------------------------------------------------
# Scenarios: a lab, a bootstrap on a public host, nodes placed on hosts.


@dataclass(frozen=True)
class Placement:
    """A node on a host; `overrides` beyond the lab's (e.g. network.host=127.0.0.1 for a node left on the
    default host); "{public}" in them stands for the address the internet sees the host at."""

    node: str
    host: str
    overrides: tuple[str, ...] = ()

    def settings(self, lab: NetLab) -> tuple[str, ...]:
        return tuple(override.replace("{public}", lab.public_address(self.host)) for override in self.overrides)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    hosts: tuple[Host, ...]
    nodes: tuple[Placement, ...]
    bootstrap_host: str = "boot"


BOOT = Host("boot")
SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "two-public", "two public hosts",
            (BOOT, Host("pub1"), Host("pub2")),
            (Placement("pub1", "pub1"), Placement("pub2", "pub2")),
        ),
        Scenario(
            "default-host", "a node left on the default host (127.0.0.1) beside a public one",
            (BOOT, Host("pub1"), Host("pub2")),
            (Placement("pub1", "pub1"), Placement("loop", "pub2", ("network.host=127.0.0.1",))),
        ),
        Scenario(
            "homes-and-public", "two homes behind NAT plus one public node",
            (BOOT, Host("pub1"), Host("home1", home=True), Host("home2", home=True)),
            (Placement("pub1", "pub1"), Placement("home1", "home1"), Placement("home2", "home2")),
        ),
        Scenario(
            "homes-alone", "two homes behind NAT with only a bootstrap",
            (BOOT, Host("home1", home=True), Host("home2", home=True)),
            (Placement("home1", "home1"), Placement("home2", "home2")),
        ),
        Scenario(
            "lossy-capped", "a public host with 3% loss and a 1 Mbit/s cap, a public and a home node",
            (BOOT, Host("pub1"), Host("lossy", loss=0.03, rate="1mbit"), Host("home1", home=True)),
            (Placement("pub1", "pub1"), Placement("lossy", "lossy"), Placement("home1", "home1")),
        ),
        Scenario(
            "port-forward", "a home whose router forwards the node's port, and a home without",
            (BOOT, Host("fwd", home=True, port_forward=True), Host("home2", home=True)),
            (Placement("fwd", "fwd", (f"network.announce_maddrs=['/ip4/{{public}}/tcp/{NODE_PORT}']",)),
             Placement("home2", "home2")),
        ),
    )
}


def lab_swarm(
    lab: NetLab,
    scenario: Scenario,
    base_dir: Path,
    rounds: int,
    overrides: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 1800.0,
    fast: bool = True,
    code_dir: Path = ROOT,
) -> LocalSwarm:
    """A LocalSwarm whose bootstrap and nodes run on the lab's hosts, each listening on the any-address;
    `fast` shrinks rounds (4 questions x 4 completions, 12 tokens) for tests."""
    bootstrap = NodeSpec(
        "bootstrap",
        (f"network.host={lab.address(scenario.bootstrap_host)}", f"network.port={BOOTSTRAP_PORT}"),
        prefix=lab.prefix(scenario.bootstrap_host),
    )
    nodes = [
        NodeSpec(
            placement.node,
            (*seeded_overrides(index, seed=0), "network.host=0.0.0.0", f"network.port={NODE_PORT}",
             "metrics.port=null", *placement.settings(lab)),
            rounds,
            prefix=lab.prefix(placement.host),
        )
        for index, placement in enumerate(scenario.nodes)
    ]
    return LocalSwarm(nodes, base_dir, f"lab-{scenario.name}", [*(FAST if fast else ()), *overrides],
                      timeout_s=timeout_s, bootstrap=bootstrap, env=env, code_dir=code_dir)


@dataclass
class NodeReport:
    """One node's view of a lab run."""

    name: str
    kind: str  # public | home | loopback
    rounds: int
    reachability: str
    dht_mode: str
    advertised: list[str]
    rollouts_in_by_source: dict[str, list[int]]  # sender name -> rollouts received per round
    publish_s: list[float]
    collect_s: list[float]
    published: int
    problems: dict[str, int]
    doctor: str = ""
    peer_id: str = ""
    exit_code: int | None = None
    stderr_tail: str = ""

    wire_bytes: int = 0  # bytes in + out on the host's link during the run (libp2p, TLS, TCP/IP included)
    collect_started: list[float] = field(default_factory=list)  # wall time each round's collect began
    published_at: list[float] = field(default_factory=list)  # wall time of each batch another peer stored

    def delivery(self, sender: str, skip: int = 2) -> float | None:
        """Share of this node's rounds (after its first `skip`) with at least one rollout from `sender`."""
        counts = self.rollouts_in_by_source.get(sender, [])[skip:]
        return sum(1 for count in counts if count > 0) / len(counts) if counts else None

    def fresh_delivery(self, sender: NodeReport, skip: int = 2) -> float | None:
        """Of this node's rounds (after its first `skip`) in which `sender` had stored a new batch since our
        previous collect, the share in which we got rollouts from it: a sender slower than us cannot feed
        every one of our rounds, and a batch is never taken twice."""
        counts = self.rollouts_in_by_source.get(sender.name, [])
        fresh = got = 0
        for index in range(max(skip, 1), len(self.collect_started)):
            since, until = self.collect_started[index - 1], self.collect_started[index]
            if any(since < moment <= until for moment in sender.published_at):
                fresh += 1
                got += int(counts[index] > 0)
        return got / fresh if fresh else None


@dataclass
class LabRun:
    scenario: str
    seconds: float
    nodes: list[NodeReport]
    ok: bool
    failures: str = ""
    namespaces_left: list[str] = field(default_factory=list)
    census: dict | None = None  # `swarmnode swarm --json` from the bootstrap's host while the nodes ran


def report(result: SwarmResult, scenario: Scenario, lab: NetLab) -> list[NodeReport]:
    """Per node: rounds, rollouts in per round by sender, phase times, what it said about itself."""
    kinds = {host.name: "home" if host.home else "public" for host in scenario.hosts}
    placements = {placement.node: placement for placement in scenario.nodes}
    names = {node.peer_id: node.name for node in result.nodes if node.peer_id}
    # every node is live until the first one finishes its rounds and leaves; later rounds are not compared
    cutoff = min((node.records[-1].time for node in result.nodes if node.records), default=0.0)
    reports = []
    for node in result.nodes:
        node.records = [record for record in node.records if record.time <= cutoff]
        placement = placements[node.name]
        started = _started_event(node.data_dir)
        kind = "loopback" if "network.host=127.0.0.1" in placement.overrides else kinds[placement.host]
        by_source: dict[str, list[int]] = {name: [] for name in placements if name != node.name}
        problems: dict[str, int] = {}
        for record in node.records:
            received = {names.get(peer, peer): count for peer, count in record.rollouts_in_by_peer.items()}
            if not record.rollouts_in_by_peer and len(by_source) == 1:  # older nodes record no senders
                received = {next(iter(by_source)): record.rollouts_in}
            for sender in by_source:
                by_source[sender].append(received.get(sender, 0))
        for event in _events(node.data_dir):
            if event.get("event") in ("publish_failed", "collect_timed_out", "collect_failed", "network_warning"):
                problems[event["event"]] = problems.get(event["event"], 0) + 1
        # a record is written right after training: collect began (and publish ended) before collect, rescore, train
        collect_started = [
            r.time - sum(r.seconds.get(phase, 0.0) for phase in ("collect", "rescore", "train")) for r in node.records
        ]
        reports.append(NodeReport(
            node.name, kind, len(node.records), started.get("reachability", "?"), started.get("dht_mode", "?"),
            list(started.get("maddrs", [])), by_source,
            [r.seconds.get("publish", 0.0) for r in node.records], [r.seconds.get("collect", 0.0) for r in node.records],
            sum(1 for r in node.records if r.published), problems, peer_id=node.peer_id or "",
            exit_code=node.returncode, stderr_tail=node.stderr_tail,
            collect_started=collect_started,
            published_at=[moment for moment, r in zip(collect_started, node.records) if r.published],
        ))
    return reports


def _events(data_dir: Path) -> Iterator[dict]:
    path = data_dir / "stdout.log"
    if not path.exists():
        return
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            yield json.loads(line)


def _started_event(data_dir: Path) -> dict:
    return next((event for event in _events(data_dir) if event.get("event") == "started"), {})


def doctor_verdict(lab: NetLab, host: str, initial_peer: str, overrides: Sequence[str] = ()) -> str:
    """What `swarmnode doctor` says about reachability on `host`, joining through `initial_peer`."""
    flags = [part for flag in ["network.host=0.0.0.0", f"network.port={NODE_PORT}", *overrides,
                               f"network.initial_peers=['{initial_peer}']"] for part in ("--set", flag)]
    done = subprocess.run(
        [*lab.prefix(host), sys.executable, "-m", "swarmnode.cli", "doctor", "--check", "reachability", "--json", *flags],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    with contextlib.suppress(json.JSONDecodeError, StopIteration, KeyError):
        row = next(row for row in json.loads(done.stdout) if row["name"] == "reachability")
        return f"{row['outcome']}: {row['detail']}" + (f" (fix: {row['fix']})" if row["fix"] else "")
    return f"doctor failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"


def lab_census(
    lab: NetLab, host: str, initial_peer: str, swarm_id: str, nodes: int, overrides: Sequence[str] = (), attempts: int = 4
) -> dict | None:
    """`swarmnode swarm --json` on `host`: a bare DHT client joins through `initial_peer` and reads the census;
    again (up to `attempts` times) until it lists `nodes` nodes, e.g. while a node's first beacon is on its way."""
    flags = [part for flag in (f"swarm.id={swarm_id}", *(o for o in overrides if o.startswith("swarm."))) for part in ("--set", flag)]
    census = None
    for _ in range(attempts):
        done = subprocess.run(
            [*lab.prefix(host), sys.executable, "-m", "swarmnode.cli", "swarm", "--peers", initial_peer, *flags, "--json"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )
        with contextlib.suppress(json.JSONDecodeError):
            census = json.loads(done.stdout)
        if census is not None and len(census["nodes"]) >= nodes:
            break
    return census


def run_scenario(
    scenario: Scenario,
    base_dir: Path,
    rounds: int,
    overrides: Sequence[str] = (),
    with_doctor: bool = True,
    fast: bool = True,
    code_dir: Path = ROOT,
) -> LabRun:
    """Build the lab, start the swarm, ask doctor on each node's host and take a census from the bootstrap's
    host while the swarm runs, wait until every node has done `rounds`, report (with each host's bytes on the
    wire), tear down."""
    started = time.monotonic()
    with NetLab(scenario.hosts) as lab:
        swarm = lab_swarm(lab, scenario, base_dir, rounds, overrides, fast=fast, code_dir=code_dir)
        wire_before = {placement.node: lab.wire_bytes(placement.host) for placement in scenario.nodes}
        with swarm:
            verdicts = {}
            if with_doctor:
                for placement in scenario.nodes:
                    verdicts[placement.node] = doctor_verdict(
                        lab, placement.host, swarm.bootstrap_maddr, placement.settings(lab)
                    )
            deadline = time.monotonic() + 300  # the census mid-run, when every node has rounds to report
            while min(swarm.rounds_done().values()) < rounds // 2 and time.monotonic() < deadline:
                time.sleep(1.0)
            census = lab_census(
                lab, scenario.bootstrap_host, swarm.bootstrap_maddr, swarm.swarm_id, len(scenario.nodes), overrides
            )
            result = swarm.wait()
        nodes = report(result, scenario, lab)
        placements = {placement.node: placement for placement in scenario.nodes}
        for node in nodes:
            node.doctor = verdicts.get(node.name, "")
            after = lab.wire_bytes(placements[node.name].host)
            node.wire_bytes = after - wire_before[node.name]
        namespaces = lab.namespaces
    left = [name for name in _namespaces() if name in namespaces]
    return LabRun(scenario.name, time.monotonic() - started, nodes, result.ok, result.failures(), left, census)


def print_run(run: LabRun) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{run.scenario} ({run.seconds:.0f} s){'' if run.ok else ' — FAILED'}")
    for column in ("node", "kind", "reach", "DHT", "rounds",
                   "from each peer after round 2: rounds with rollouts / fresh batches received (rollouts per round)",
                   "publish p50/max s", "collect p50/max s", "doctor"):
        table.add_column(column, overflow="fold")
    by_name = {node.name: node for node in run.nodes}
    for node in run.nodes:
        sources = ", ".join(
            f"{sender} {_share(node.delivery(sender))} / {_share(node.fresh_delivery(by_name[sender]))} "
            f"({sum(counts[2:]) / max(len(counts[2:]), 1):.1f})"
            for sender, counts in node.rollouts_in_by_source.items()
        )
        table.add_row(
            node.name, node.kind, node.reachability, node.dht_mode, str(node.rounds), sources,
            _p50_max(node.publish_s), _p50_max(node.collect_s), node.doctor,
        )
    console = Console(width=200)
    console.print(table)
    if run.census is not None:
        from swarmnode.net.census import Census
        from swarmnode.ops.dashboard import census_table, census_title

        census = Census.from_json(run.census)
        console.print(Text(f"swarmnode swarm on {run.scenario}'s bootstrap host: {census_title(census)}"),
                      census_table(census, census.taken_at))
    if not run.ok:
        print(run.failures)


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _p50_max(values: list[float]) -> str:
    if not values:
        return "—"
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.2f}/{ordered[-1]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "netlab")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    exit_on_sigterm()
    reason = lab_unavailable_reason()
    if reason is not None:
        sys.exit(reason)
    try:
        run = run_scenario(SCENARIOS[args.scenario], args.dir / args.scenario, args.rounds, args.overrides)
    except KeyboardInterrupt:
        sys.exit("interrupted: the lab is torn down; logs are in " + str(args.dir))
    print_run(run)
    if not run.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
