"""The swarm's DHT peer: a hivemind DHTNode and its p2pd daemon, on an asyncio loop in a background thread.

Joins (retrying its entry peers), stores and reads records, decides by asking peers to dial it back whether it
serves the DHT or only uses it, and shuts down leaving no daemon and no socket file behind. Start-up errors
are in `start`, the daemon in `daemon`, the loop in `loop`, traffic in `traffic`, validation in `validator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from hivemind.dht.node import DHTNode
from hivemind.dht.routing import DHTID, RoutingTable
from hivemind.dht.validation import DHTRecord
from hivemind.p2p import PeerID
from hivemind.utils.multiaddr import Multiaddr

from swarmnode.config import NetworkConfig
from swarmnode.net.bandwidth import BandwidthCap
from swarmnode.net.daemon import SOCKET_DIR, SOCKET_TAG, SwarmP2P, clean_stale_daemons, process_alive
from swarmnode.net.loop import LoopThread
from swarmnode.net.reachability import (
    ASK_TIMEOUT_S,
    MAX_DIAL_BACK_PORTS,
    DialBackService,
    ReachabilityReport,
    check_reachability,
    observed_host,
    verdict,
)
from swarmnode.net.replica_cache import ReplicaCache
from swarmnode.net.replicas import FIND_NEIGHBOURS, LOOKUP_START, READ_QUORUM, REPLICAS, STORE_QUORUM, KeyRead, Read
from swarmnode.net.routing import (
    answer_with_fewer_neighbours,
    bind_node_ids,
    hedged_lookup,
    node_id_of,
    ping_only_the_quiet,
    remember_failures,
    spare_unasked,
)
from swarmnode.net.start import StartError, StartFailure, check_initial_peer, explain, listen_maddr
from swarmnode.net.storage import BoundedRecordStorage
from swarmnode.net.store_rate import StoreRate
from swarmnode.net.traffic import TrafficMeter, TrafficSnapshot
from swarmnode.net.validator import SwarmRecordValidator, reading_records
from swarmnode.wire.address import Reachability, scope
from swarmnode.wire.rules import SwarmRules

logger = logging.getLogger(__name__)

# DHT tuning. Caching is off: a cached dictionary would hide records published after it was cached. Reads do
# not use hivemind's search, which ends at the first answer: see `_read_many` and `swarmnode.net.replicas`.
RPC_TIMEOUT_S = 3.0
REJOIN_INTERVAL_S = 10.0
ENTRY_RECHECK_S = 30.0  # how often configured peers missing from the routing table are pinged again
UNKNOWN_RECHECK_S = 60.0  # with no verdict yet (e.g. no peer answered), ask again this soon
DIAL_BACK_PEERS = 3
MAX_ENTRY_PEERS = 16
JOIN_RETRY_S = 0.5
JOIN_FANOUT = 2  # entry peers a join pings at once, at random among the configured ones and the peer book's
ENTRY_PINGERS = 32  # about how many nodes of a swarm re-ping a configured peer missing from their routing table
LOOP_SLACK_S = 1.0  # a call waits this much longer than its own deadline for the loop to answer
CAP_WAIT_S = RPC_TIMEOUT_S / 2  # the longest a request waits for network.max_kbps; the other half is the RPC's
DAEMON_EXIT_TIMEOUT_S = 5.0
_LOOP_SHUTDOWN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StoreItem:
    key: str
    subkey: str
    value: bytes
    expiration_time: float


@dataclass(frozen=True)
class StoreOutcome:
    """`remote`: other peers that accepted the record in time; `local`: whether we hold a copy. Only a
    remote copy is published: a local one is gone when we are."""

    remote: int
    local: bool


def swarm_scopes(configured_hosts: Sequence[str | None], listens_on_loopback: bool) -> set[str]:
    """The scopes of addresses a node may learn from peers' presences: public ones; those of its configured peers'
    scopes (a LAN swarm); loopback if it listens there only."""
    scopes = {"public"} | {scope(host) for host in configured_hosts if host is not None}
    return scopes | ({"loopback"} if listens_on_loopback else set())


class DHTPeer:
    """One hivemind DHT peer with our Ed25519 identity; every public method is safe to call from any thread.

    Not hivemind.DHT: that runs the node in a forked process behind a pipe which loses messages from
    ~16 KB up (docs/DESIGN.md §3); here the node lives on our own loop thread and nothing crosses a pipe.
    """

    def __init__(
        self,
        identity_path: Path,
        rules: SwarmRules,
        network: NetworkConfig,
        *,
        validator: SwarmRecordValidator | None = None,
        serve: bool = True,
        learnt_peers: Sequence[str] = (),
    ) -> None:
        """`learnt_peers`: join addresses from the peer book, dialled after the configured ones to join through;
        never asked whether we are reachable (a liar among them could make a public node a client)."""
        self.identity_path = Path(identity_path)
        self.rules = rules
        self.network = network
        self.learnt_peers = list(learnt_peers)
        self._configured_peers: dict[PeerID, list[Multiaddr]] = {}  # initial and fallback peers, once started
        self.serve = serve  # False: a DHT client whatever its reachability (a probe such as doctor's must not serve)
        self.validator = validator if validator is not None else SwarmRecordValidator(rules)
        self.verified = self.validator.verified  # frames our lookups returned: opened once, by the validator
        self.storage = BoundedRecordStorage(kinds=self.validator.kinds)
        self.validator.precheck = self.storage.precheck
        self.store_rate = StoreRate()
        self.bandwidth = (
            BandwidthCap(network.max_kbps, max_wait_s=CAP_WAIT_S) if network.max_kbps is not None else None
        )
        self._unasked: Counter[PeerID] = Counter()  # requests our cap did not send, per peer: not its silence
        self._loop: LoopThread | None = None
        self._p2p: SwarmP2P | None = None
        self._node: DHTNode | None = None
        self._rejoin_task: asyncio.Task[None] | None = None
        self._socket_prefix = ""
        self._traffic = TrafficMeter()
        self._dial_back: DialBackService | None = None
        self._initial_peers: dict[PeerID, list[Multiaddr]] = {}
        self.peer_id = ""
        self.visible_maddrs: list[str] = []
        self.reachability = ReachabilityReport(Reachability.UNKNOWN)
        self.port_mapping = "off"
        self.entry_peers: dict[PeerID, list[Multiaddr]] = {}  # public peers learnt from the directory
        self._random = random.Random()  # which replicas a read asks first
        self._replicas = ReplicaCache(rules.window_s * (rules.max_age_windows + 1), REPLICAS)  # as long as a key is read
        self._peer_refusals: Counter[str] = Counter()  # peers refused a place in our routing or an answer

    def __enter__(self) -> DHTPeer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def started(self) -> bool:
        return self._node is not None

    def start(self) -> None:
        """Start p2pd and join the swarm; raise StartError (one line, with the fix) on failure."""
        if self.started:
            return
        if not self.identity_path.is_file():
            raise StartError(
                StartFailure.NO_IDENTITY,
                f"{self.identity_path}: no identity file; create one with "
                f"`swarmnode identity new --path {self.identity_path}`",
            )
        host_maddrs = [listen_maddr(self.network.host, self.network.port)]
        for peer in [*self.network.initial_peers, *self.network.fallback_peers, *self.learnt_peers]:
            check_initial_peer(peer)
        cleaned = clean_stale_daemons()
        if cleaned.sockets_removed or cleaned.daemons_stopped:
            logger.info(
                "removed %d stale p2pd sockets, stopped %d orphaned p2pd",
                cleaned.sockets_removed,
                cleaned.daemons_stopped,
            )
        self._socket_prefix = _socket_prefix()
        self._loop = LoopThread(name="swarmnode-dht")
        try:
            self._loop.run(self._start(host_maddrs), self._start_timeout_s)
        except Exception as error:
            logger.debug("the DHT peer failed to start", exc_info=error)
            self.close()
            raise explain(error, self.network) from None
        except BaseException:
            self.close()
            raise

    @property
    def _start_timeout_s(self) -> float:
        return 2 * self.network.startup_timeout_s + 2 * RPC_TIMEOUT_S

    async def _start(self, host_maddrs: list[str], joined_before: bool = False) -> None:
        """`joined_before`: a restart, which rejoins through any peer it knew and may find none of them."""
        self._configured_peers = _peer_addresses([*self.network.initial_peers, *self.network.fallback_peers])
        self._initial_peers = {**self._configured_peers, **_peer_addresses(self.learnt_peers)}
        # UPnP/NAT-PMP discovery sends traffic to the LAN and its gateway: only when asked for, and never
        # from a node that listens on loopback only. AutoNAT is off: our own dial-back check replaces it.
        self._p2p = await SwarmP2P.create(
            socket_prefix=self._socket_prefix,
            traffic=self._traffic,
            store_rate=self.store_rate,
            bandwidth=self.bandwidth,
            unasked=self._unasked,
            admits=self.rules.admits,
            refused=self._peer_refusals,
            initial_peers=None,  # p2pd would dial every configured peer, and fail when those are down; _join dials
            host_maddrs=host_maddrs,
            announce_maddrs=list(self.network.announce_maddrs) or None,
            identity_path=str(self.identity_path),
            check_if_identity_free=False,
            startup_timeout=self.network.startup_timeout_s,
            nat_port_map=self.network.nat_port_map and not self.listens_on_loopback,
            auto_nat=False,
            use_relay=self.network.relay,
        )
        self.peer_id = self._p2p.peer_id.to_base58()
        self.visible_maddrs = [str(maddr) for maddr in await self._p2p.get_visible_maddrs()]
        self._dial_back = DialBackService(self._p2p)
        await self._dial_back.serve()
        judges = self._random.sample(list(self._configured_peers), min(DIAL_BACK_PEERS, len(self._configured_peers)))
        await self._connect({peer: self._configured_peers[peer] for peer in judges})
        self.reachability = await self._check_reachability(judges)
        self._node = await self._create_node(client_mode=self.client_mode_for(self.reachability))
        entry = {**self.entry_peers, **self._initial_peers} if joined_before else self._initial_peers
        if entry:
            await self._join(self._node, entry, required=bool(self.network.initial_peers) and not joined_before)
        self._rejoin_task = asyncio.create_task(self._keep_joined())

    async def _create_node(self, client_mode: bool) -> DHTNode:
        """A DHT node on our daemon and storage; a client drops the records it held as a replica (after a switch
        or a restart: they would answer our own lookups, stale, until they expired)."""
        if client_mode:
            self.storage.clear()
        self._replicas.clear()
        node = await DHTNode.create(
            p2p=self._p2p,
            node_id=node_id_of(self._p2p.peer_id),
            num_replicas=REPLICAS,
            record_validator=self.validator,
            wait_timeout=RPC_TIMEOUT_S,
            cache_locally=False,
            cache_nearest=0,
            cache_on_store=False,
            client_mode=client_mode,
        )
        # hivemind's storage is unbounded; ours has a byte budget. We never cache, so we hold nothing a
        # peer asks us to cache (a second, unbounded store otherwise).
        node.protocol.storage = self.storage
        node.protocol.cache = BoundedRecordStorage(max_key_bytes=0, max_total_bytes=0)
        bind_node_ids(node.protocol, self._peer_refusals, self.rules.admits)
        remember_failures(node)
        answer_with_fewer_neighbours(node, FIND_NEIGHBOURS)
        ping_only_the_quiet(node.protocol.routing_table)
        spare_unasked(node, self._unasked)
        return node

    @property
    def listens_on_loopback(self) -> bool:
        return ipaddress.ip_address(self.network.host).is_loopback

    def client_mode_for(self, report: ReachabilityReport) -> bool:
        """A node nobody can dial serves no DHT requests and is in nobody's routing table: peers that
        learnt its address would dial it and wait. Unknown reachability keeps today's default, a server."""
        return not self.serve or report.reachability is Reachability.PRIVATE

    @property
    def client_mode(self) -> bool:
        node = self._node
        return node is not None and node.protocol.client_mode

    async def _connect(self, peers: dict[PeerID, list[Multiaddr]], ping: bool = False) -> None:
        """Open connections to `peers`, each within RPC_TIMEOUT_S (best effort; whoever does not answer is handled
        by the join); `ping`: and ping each, so a server that answers is in our routing table and we in its."""

        async def connect(peer_id: PeerID, maddrs: list[Multiaddr]) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._p2p._client.connect(peer_id, maddrs), RPC_TIMEOUT_S)
                if ping:
                    await self._node.protocol.call_ping(peer_id)

        await asyncio.gather(*(connect(peer_id, maddrs) for peer_id, maddrs in peers.items()))

    async def _check_reachability(self, peers: list[PeerID]) -> ReachabilityReport:
        """Ask up to DIAL_BACK_PEERS of `peers` to dial us back, unless network.reachability says what we are."""
        self.port_mapping = await self._port_mapping()
        if self.network.reachability != "auto":
            return ReachabilityReport(Reachability(self.network.reachability), forced=True)
        ports, announced = self.listen_ports, self.announced_hosts
        if peers and ports:
            return await check_reachability(self._p2p, peers[:DIAL_BACK_PEERS], ports, announced)
        return verdict([], ports, announced)

    @property
    def listen_ports(self) -> list[int]:
        """Ports peers could dial: those we announce (a router may forward another port), else those we
        listen on."""
        return _tcp_ports(self.network.announce_maddrs or self.visible_maddrs)[:MAX_DIAL_BACK_PORTS]

    @property
    def announced_hosts(self) -> list[str]:
        return [host for text in self.network.announce_maddrs if (host := observed_host([Multiaddr(text)]))]

    async def _port_mapping(self) -> str:
        """What UPnP/NAT-PMP achieved: a mapped address appears among p2pd's addresses that is on no local
        interface (mapping runs in the background; this is its state when asked)."""
        if not self.network.nat_port_map or self.listens_on_loopback:
            return "off"
        local = {address.address for addresses in psutil.net_if_addrs().values() for address in addresses}
        local.update(self.announced_hosts)  # p2pd lists announced addresses too: not a mapping
        for maddr in await self._p2p.get_visible_maddrs(latest=True):
            host = observed_host([maddr])
            if host is not None and host not in local:
                return f"mapped: {maddr}"
        return "on, no mapping (no UPnP/NAT-PMP gateway answered)"

    def advertised_maddrs(self) -> list[str]:
        """Full multiaddrs others can join with: announced ones; else where peers dialled us back; else, with
        no verdict yet, our listen addresses (loopback ones only for a loopback node). None when private."""
        suffix = f"/p2p/{self.peer_id}"
        if self.network.announce_maddrs:
            return [m if "/p2p/" in m else m + suffix for m in self.network.announce_maddrs]
        report = self.reachability
        if report.reachability is Reachability.PRIVATE:
            return []
        if report.dialable:
            return [address + suffix for address in report.dialable]
        loopback = self.listens_on_loopback
        return [m for m in self.visible_maddrs if _is_loopback(m) == loopback]

    async def _join(
        self, node: DHTNode, initial_peers: dict[PeerID, list[Multiaddr]], required: bool = True
    ) -> None:
        """Ping JOIN_FANOUT of the entry peers, chosen at random, then twice as many others at a time while none
        answered, until one answers; then look up our own id, and a random id in each bucket of our routing table
        that our id is not in, to fill the table beyond our own neighbourhood (Kademlia's join).

        Thousands of nodes start through the same few addresses: each pings a couple of them, not all, so their
        load spreads over the configured peers and those of the peer book. hivemind's own bootstrap gives up
        after a single ping (3 s), which a loaded machine misses; we go round again until the start-up deadline.
        A clock too far off fails at once: retrying cannot fix it. When only fallback peers were given
        (`required` false), none answering means starting alone.
        """
        deadline = time.monotonic() + self.network.startup_timeout_s
        order = list(initial_peers)
        self._random.shuffle(order)
        tried, fanout = 0, JOIN_FANOUT
        while True:
            batch = order[tried % len(order):][:fanout]
            tried, fanout = tried + len(batch), 2 * fanout  # the more failed, the more at once
            await self._connect({peer: initial_peers[peer] for peer in batch if initial_peers[peer]})
            outcomes = await asyncio.gather(
                *(node.protocol.call_ping(peer_id, validate=True, strict=True) for peer_id in batch),
                return_exceptions=True,
            )
            if any(isinstance(outcome, DHTID) for outcome in outcomes):
                break
            problems = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
            clock = [problem for problem in problems if "local time" in str(problem)]
            if clock or time.monotonic() >= deadline:
                if not required and not clock:
                    logger.info("none of the fallback peers answered; starting alone")
                    return
                raise (clock or problems or [RuntimeError("none of the initial_peers responded")])[0]
            left = len(order) - tried % len(order) if tried % len(order) else 0
            if left and tried <= len(order):  # the first pass says who failed while others are left; a start
                logger.warning(  # that fails in the end says it in its one error line
                    "joining: entry peer(s) %s did not answer (down, or too busy); trying %d other(s)",
                    ", ".join(peer.to_base58() for peer in batch), min(left, fanout),
                )
            if not left:
                await asyncio.sleep(JOIN_RETRY_S)
        await node.find_nearest_nodes([node.node_id], k_nearest=node.protocol.routing_table.bucket_size)
        await self._refresh_buckets(node)

    async def _refresh_buckets(self, node: DHTNode) -> None:
        """Look up a random id in each bucket our own id is not in, so that far buckets hold peers there and
        not only the entry peers we came through (best effort, within the RPC timeout)."""
        table = node.protocol.routing_table
        ids = [DHTID(self._random.randint(bucket.lower, bucket.upper - 1))
               for bucket in table.buckets if not bucket.has_in_range(node.node_id)]
        if ids:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nearest(node, ids), RPC_TIMEOUT_S)

    def daemon_alive(self) -> bool:
        """Whether our p2pd still runs: without it the node is alone however full its routing table looks."""
        child = self._p2p._child if self._p2p is not None else None  # reaped: returncode set (its pid may be reused)
        return child is not None and child.returncode is None and process_alive(child.pid)

    def restart(self) -> None:
        """After p2pd died: a new daemon and DHT node under the same identity, keeping the records we hold, our
        counters and the peers we knew; on the configured port, or else the one it had if still free (peers know
        it), else any. Raise StartError if it fails, leaving no half-started peer behind."""
        loop = self._require_loop()
        ports = [self.network.port] if self.network.port else [*_tcp_ports(self.visible_maddrs)[:1], 0]
        for index, port in enumerate(ports):
            try:
                loop.run(self._restart(port), DAEMON_EXIT_TIMEOUT_S + RPC_TIMEOUT_S + self._start_timeout_s)
                return
            except Exception as error:
                logger.debug("the DHT peer failed to restart on port %d", port, exc_info=error)
                failure = explain(error, self.network)
                if failure.reason is not StartFailure.PORT_IN_USE or index == len(ports) - 1:
                    raise failure from None

    async def _restart(self, port: int) -> None:
        await self._stop_daemon()
        self._socket_prefix = _socket_prefix()
        try:
            await self._start([listen_maddr(self.network.host, port)], joined_before=True)
        except BaseException:
            await self._stop_daemon()
            raise

    async def _stop_daemon(self) -> None:
        with contextlib.suppress(Exception):
            await self._shutdown()
        self._forget_daemon()

    def _forget_daemon(self) -> None:
        """After a shutdown (or a daemon that died): no socket file and no handle of it left."""
        for path in self.socket_paths():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._node = self._p2p = None

    def close(self) -> None:
        """Stop the node and its daemon; idempotent. Afterwards no p2pd and no socket file of ours remain."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        with contextlib.suppress(Exception):
            loop.run(self._shutdown(), DAEMON_EXIT_TIMEOUT_S + RPC_TIMEOUT_S)
        loop.stop()
        self._forget_daemon()

    async def _shutdown(self) -> None:
        if self._rejoin_task is not None:
            self._rejoin_task.cancel()
        if self._node is not None:
            self._node.is_alive = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._node.protocol.shutdown(), RPC_TIMEOUT_S)
        if self._p2p is not None:
            try:
                await asyncio.wait_for(self._p2p.shutdown(), DAEMON_EXIT_TIMEOUT_S)
            except asyncio.TimeoutError:
                if self._p2p._child is not None:
                    self._p2p._child.kill()
                    await self._p2p._child.wait()

    def daemon_pid(self) -> int | None:
        return self._p2p._child.pid if self._p2p is not None and self._p2p._child is not None else None

    def socket_paths(self) -> list[Path]:
        """Socket files of this peer's daemon and client (also those a failed start left behind)."""
        if not self._socket_prefix:
            return []
        directory, prefix = os.path.split(self._socket_prefix)
        return sorted(Path(directory).glob(f"{prefix}*.sock"))

    def refusals(self) -> Counter[str]:
        """Records refused by reason: by the validator (invalid), by the storage budget (key/storage full) or by
        the sender's store rate (store_rate: requests, not records); peers refused a place in our routing
        (forged_node_id); and requests over network.max_kbps: peers' we did not serve (bandwidth_cap) and our
        own we did not send (bandwidth_cap_unsent)."""
        capped = self.bandwidth.refusals() if self.bandwidth is not None else Counter()
        return (
            self.validator.refusals() + self.storage.refusals() + self.store_rate.refusals()
            + Counter(self._peer_refusals) + capped
        )

    def traffic(self) -> TrafficSnapshot:
        """Cumulative DHT RPC traffic since this object was made (across restarts)."""
        return self._traffic.snapshot()

    def num_peers(self) -> int:
        """DHT peers in our routing table (the peers we can reach without asking anyone)."""
        node = self._node
        return len(node.protocol.routing_table.uid_to_peer_id) if node is not None else 0

    def estimated_swarm_size(self) -> float:
        """The swarm's size as our routing table suggests it (`swarm_size_estimate`); 1 while we know nobody."""
        node = self._node
        if node is None:
            return 1.0
        try:
            return swarm_size_estimate(node.protocol.routing_table)
        except RuntimeError:  # the loop thread changed the table while we read it: the peers we know will do
            return float(self.num_peers() + 1)

    def known_peer_ids(self) -> list[str]:
        """Peer ids (base58) in our routing table."""
        node = self._node
        if node is None:
            return []
        return [peer_id.to_base58() for peer_id in list(node.protocol.routing_table.uid_to_peer_id.values())]

    def store(self, items: Sequence[StoreItem], *, timeout_s: float) -> list[StoreOutcome]:
        """Store each item under (key, subkey) on its key's nearest peers, concurrently; per item, how many
        other peers accepted it before the deadline and whether we keep a copy ourselves."""
        storing = self._store_all(self._require_node(), list(items), timeout_s)
        try:
            return self._require_loop().run(storing, timeout_s + LOOP_SLACK_S)
        except TimeoutError:  # the loop itself is stuck; the stores were cancelled
            return [StoreOutcome(0, False) for _ in items]

    async def _store_all(self, node: DHTNode, items: list[StoreItem], timeout_s: float) -> list[StoreOutcome]:
        """hivemind's store, minus the records, and in one piece: a single lookup of every key's nearest peers,
        then one store request per replica carrying every item it is a replica of (a publish with its directory
        entries, a beacon under six keys). hivemind's own lookup asks each peer for the key, and they answer with
        every record of the shard; we look up a neighbour of each key instead (last bit flipped: the same nearest
        peers, by XOR distance) under which nothing is stored. Peers that did not answer the lookup are skipped,
        and replicas that accept before the deadline count. The store returns once every item was accepted by
        `STORE_QUORUM` of the peers it went to (or all of them, if fewer), the others' stores finishing in the
        background; or, once every item has one, after the hedge a read gives a silent replica (`slow_after_s`),
        which leaves the silent ones behind as slow. A DHT client is never a replica itself."""
        deadline = time.monotonic() + timeout_s
        key_ids = [DHTID.generate(source=item.key) for item in items]
        probes = [_probe(key_id) for key_id in key_ids]
        try:
            nearest = await asyncio.wait_for(self._nearest(node, list(dict.fromkeys(probes))), timeout_s)
        except asyncio.TimeoutError:
            return [StoreOutcome(0, False) for _ in items]
        protocol = node.protocol
        values = [protocol.serializer.dumps(item.value) for item in items]
        local, accepted = [False] * len(items), [0] * len(items)
        for index, (item, key_id, probe) in enumerate(zip(items, key_ids, probes)):
            if node.node_id in nearest[probe]:
                record = DHTRecord(key_id.to_bytes(), protocol.serializer.dumps(item.subkey), values[index], item.expiration_time)
                local[index] = protocol.record_validator.validate(record) and protocol.storage.store(
                    key_id, values[index], item.expiration_time, subkey=item.subkey
                )
        by_peer: dict[PeerID, list[int]] = {}
        enough = [0] * len(items)  # acceptances that end the wait for an item
        for index, probe in enumerate(probes):
            for node_id, peer in nearest[probe].items():  # _nearest left out the peers that failed lately
                if node_id != node.node_id:
                    by_peer.setdefault(peer, []).append(index)
                    enough[index] = min(enough[index] + 1, STORE_QUORUM)

        async def store_at(peer_id: PeerID, indices: list[int]) -> None:
            answers = await protocol.call_store(
                peer_id, [key_ids[i] for i in indices], [values[i] for i in indices],
                [items[i].expiration_time for i in indices], [items[i].subkey for i in indices],
            )
            node.blacklist.settle(peer_id, answers is not None)
            for index, stored in zip(indices, answers or []):
                accepted[index] += bool(stored)

        storing = {asyncio.create_task(store_at(peer, indices)): peer for peer, indices in by_peer.items()}
        pending, hedge, quorum = set(storing), None, False
        while pending and not quorum:
            until = deadline if hedge is None else hedge
            done, pending = await asyncio.wait(
                pending, timeout=max(until - time.monotonic(), 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            quorum = all(count >= needed for count, needed in zip(accepted, enough))
            if hedge is None and all(accepted):  # every item has a replica: the rest get the hedge, as reads do
                hedge = min(deadline, time.monotonic() + node.blacklist.slow_after_s)
        for task in pending:  # left to finish or fail on their own (each bounded by the RPC timeout)
            task.add_done_callback(_retrieve_exception)
            if not quorum:  # late, not merely not waited for: meanwhile other stores and reads do not wait on them
                node.blacklist.register_slow(storing[task])
        return [StoreOutcome(count, kept) for count, kept in zip(accepted, local)]

    def look_ahead(self, keys: Sequence[str], *, timeout_s: float) -> bool:
        """Find the nearest peers of keys a store or read will need soon, so that it need not (`ReplicaCache`);
        whether that finished in time."""
        probes = list(dict.fromkeys(_probe(DHTID.generate(source=key)) for key in keys))
        try:
            self._require_loop().run(
                asyncio.wait_for(self._nearest(self._require_node(), probes), timeout_s), timeout_s + LOOP_SLACK_S
            )
        except (TimeoutError, asyncio.TimeoutError):
            return False
        return True

    def get_many(
        self, keys: Sequence[str], *, timeout_s: float, quorum: int = READ_QUORUM,
        wanted: Mapping[str, frozenset[str]] | None = None,
    ) -> Read:
        """Read dictionary keys: each key's entries merged from `quorum` or more of its replicas (or, for a key
        with `wanted` signers, from one replica that holds them all), with what each key's read covered. Keys
        whose read has not finished by the deadline are left out, not waited for."""
        reading = self._read_many(self._require_node(), list(keys), timeout_s, quorum, wanted or {})
        try:
            return self._require_loop().run(reading, timeout_s + LOOP_SLACK_S)
        except TimeoutError:  # the loop itself is stuck; the reads were cancelled
            return Read({}, True, {})

    async def _read_many(
        self, node: DHTNode, keys: list[str], timeout_s: float, quorum: int, wanted: Mapping[str, frozenset[str]]
    ) -> Read:
        """No single replica decides what we read (a liar could answer with an empty or partial dictionary and
        claim it is the newest): find each key's nearest peers without fetching anything (a neighbour of the key,
        as a store does), ask `quorum` of them chosen at random (one, for a key read for signers we know), and
        when their answers differ, too few answered or a wanted signer is missing, ask others too. Every entry
        arrives through the validator; the union of what the replicas hold is the answer."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        ids = {key: DHTID.generate(source=key) for key in keys}
        probes = {_probe(key_id): key for key, key_id in ids.items()}
        with reading_records():
            try:
                nearest = await asyncio.wait_for(self._nearest(node, list(probes)), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                return Read({}, True, {})
            replicas = {probes[probe]: dict(found) for probe, found in nearest.items()}
            reads = {
                key: KeyRead(ids[key], replicas.get(key, {}), quorum, wanted.get(key, frozenset())) for key in keys
            }
            first = {key: read.first_round(self._random) for key, read in reads.items()}
            await self._ask(node, reads, first, deadline, last=False)
            second = {key: read.second_round() for key, read in reads.items()}
            await self._ask(node, reads, second, deadline, last=True)
        return Read(
            {key: key_read.entries() for key, key_read in reads.items() if key_read.answers},
            time.monotonic() > deadline,
            {key: key_read.coverage() for key, key_read in reads.items()},
        )

    async def _nearest(self, node: DHTNode, probes: list[DHTID]) -> dict[DHTID, dict[DHTID, PeerID]]:
        """Each probe's num_replicas nearest peers: remembered from a recent lookup (`ReplicaCache`), or found by a
        lookup of its own that leaves slow peers behind once others answered (`routing.hedged_lookup`) and starts
        from the LOOKUP_START nearest peers in our routing table other than our configured ones while we know enough
        others (a bootstrap is in every joiner's table: it would otherwise be a first hop of a share of everyone's
        lookups); peers that failed to answer are left out. One lookup a probe: hivemind's lookup of several keys
        starts each from the nearest peers of all and asks peers about keys they are far from (in the model,
        a look-ahead's ten keys looked up together cost 2.6 times the find bytes). A departed peer stays among a
        key's nearest in others' tables for minutes: a lookup that found fewer live peers than a remembered answer
        needs searches again from those, FIND_NEIGHBOURS wide, and keeps the nearest `num_replicas` that have not
        failed (in the model at 1,000 peers, 15% of publishes found a key's look-ahead answer too short to remember,
        3 live, and looked it up again; always that wide, a 64-peer swarm on this machine sent 37% more finds)."""
        beam, wide = node.num_replicas, max(node.num_replicas, FIND_NEIGHBOURS)
        table = node.protocol.routing_table
        found: dict[DHTID, dict[DHTID, PeerID]] = {}
        for probe in probes:
            if probe not in self._replicas:
                continue
            known = (node_id for node_id, peer in table.get_nearest_neighbors(probe, beam, exclude=node.node_id)
                     if peer not in node.blacklist)  # a failed peer still in our table was left out on purpose
            if (nearest := self._replicas.get(probe, node.blacklist, known)) is not None:
                found[probe] = nearest

        async def search(probe: DHTID, start: dict[DHTID, PeerID], width: int) -> dict[DHTID, PeerID]:
            with hedged_lookup():
                looked_up = await node.find_nearest_nodes(
                    [probe], k_nearest=width, beam_size=width, exclude_self=node.protocol.client_mode, node_to_peer_id=start
                )
            return looked_up[probe]

        async def look_up(probe: DHTID) -> None:
            known = [(node_id, peer) for node_id, peer in table.get_nearest_neighbors(
                probe, beam + len(self._configured_peers), exclude=node.node_id) if peer not in node.blacklist]
            others = [(node_id, peer) for node_id, peer in known if peer not in self._configured_peers]
            start = others if len(others) >= LOOKUP_START else known
            nearest = await search(probe, dict(start[:LOOKUP_START]), beam)
            live = {node_id: peer for node_id, peer in nearest.items() if peer not in node.blacklist}
            if len(nearest) >= beam and len(live) < self._replicas.enough:  # departed peers among the nearest
                nearest = await search(probe, live or dict(list(nearest.items())[:beam]), wide)
                live = dict([(node_id, peer) for node_id, peer in nearest.items() if peer not in node.blacklist][:beam])
            self._replicas.put(probe, live)
            found[probe] = live or dict(list(nearest.items())[:beam])

        await asyncio.gather(*[look_up(probe) for probe in probes if probe not in found])

        def kept(found: dict[DHTID, PeerID]) -> dict[DHTID, PeerID]:  # none other left: try them anyway
            answering = {node_id: peer for node_id, peer in found.items() if peer not in node.blacklist}
            return answering if any(node_id != node.node_id for node_id in answering) else found

        return {probe: kept(found[probe]) for probe in probes}

    async def _ask(
        self, node: DHTNode, reads: dict[str, KeyRead], asking: dict[str, list[DHTID]], deadline: float, *, last: bool
    ) -> None:
        """One round of finds: each replica asked once for every key it is asked about (our own storage read
        directly); what did not answer by the deadline counts as not answered, and so does a replica still silent
        `slow_after_s` (0.5 s, longer with far or loaded peers) after the first answer came (after the round
        began, if none came): in a first round always, since the next round asks the key's other replicas, in
        the last once every key it was asked for has an answer from another replica. Its find finishes in the
        background, and an answer it brings still counts: nobody waits the whole RPC timeout for a peer that may
        have left."""
        by_replica: dict[DHTID, list[str]] = {}
        for key, replica_ids in asking.items():
            for replica in replica_ids:
                by_replica.setdefault(replica, []).append(key)
        if node.node_id in by_replica:
            for key in by_replica.pop(node.node_id):
                reads[key].answer(node.node_id, self.storage.get(reads[key].key_id))

        asked: dict[asyncio.Task, list[str]] = {}

        async def find(replica: DHTID, keys: list[str]) -> None:
            peer = reads[keys[0]].replicas[replica]
            started = time.monotonic()
            answer = await node.protocol.call_find(peer, [reads[key].key_id for key in keys])
            node.blacklist.settle(peer, answer is not None)
            if answer is None:
                return
            node.blacklist.answered_in(time.monotonic() - started)
            for key in keys:
                value, _ = answer.get(reads[key].key_id, (None, {}))
                reads[key].answer(replica, value)

        for replica, keys in by_replica.items():
            asked[asyncio.create_task(find(replica, keys))] = keys
        pending = set(asked)
        round_began, first_answer = time.monotonic(), None  # when the round began, and when the first replica answered
        while pending:
            now = time.monotonic()
            if now >= deadline:
                break
            wake = deadline
            if first_answer is not None or not last:
                hedge = (round_began if first_answer is None else first_answer) + node.blacklist.slow_after_s
                if now >= hedge:  # left behind: in the last round, finds for keys another replica answered already
                    covered = {task for task in pending if not last or all(reads[key].answers for key in asked[task])}
                    for task in covered:  # finishes within the RPC timeout, its outcome registered then
                        task.add_done_callback(_retrieve_exception)
                    pending -= covered
                    if not pending:
                        break
                else:
                    wake = hedge
            _, pending = await asyncio.wait(pending, timeout=wake - now, return_when=asyncio.FIRST_COMPLETED)
            if first_answer is None and any(read.answers for read in reads.values()):
                first_answer = time.monotonic()
        for task in pending:
            task.cancel()

    async def _keep_joined(self) -> None:
        """Re-dial the initial and other known entry peers whenever the routing table runs empty, and the
        configured peers missing from it every ENTRY_RECHECK_S (a restarted bootstrap knows nobody: newcomers
        joining through it would find an empty swarm until someone pings it): in a swarm of more than
        ENTRY_PINGERS nodes, each node does so with probability ENTRY_PINGERS / (the swarm's size, estimated), so
        a bootstrap gets about ENTRY_PINGERS such pings per ENTRY_RECHECK_S however large the swarm; re-check
        reachability now and then, switching DHT mode when it changed."""
        checked = time.monotonic()
        while True:
            await asyncio.sleep(REJOIN_INTERVAL_S)
            if self.num_peers() == 0:
                await self._connect({**self.entry_peers, **self._initial_peers}, ping=True)
            elif time.monotonic() - checked >= ENTRY_RECHECK_S:
                checked = time.monotonic()
                table = self._node.protocol.routing_table
                if self._random.random() < ENTRY_PINGERS / swarm_size_estimate(table):
                    missing = {peer: maddrs for peer, maddrs in self._configured_peers.items() if peer not in table.peer_id_to_uid}
                    await self._connect(missing, ping=True)
            if self._recheck_due():
                with contextlib.suppress(Exception):  # a failed check leaves the last verdict in place
                    await self._recheck()

    def check_reachability_now(self) -> ReachabilityReport:
        """Ask peers to dial us back now (as the periodic re-check does) and return the verdict in force."""
        self._require_loop().run(self._recheck(), ASK_TIMEOUT_S + 2 * RPC_TIMEOUT_S)
        return self.reachability

    def _recheck_due(self) -> bool:
        if self.network.reachability != "auto":
            return False
        interval = self.network.reachability_recheck_s
        if self.reachability.reachability is Reachability.UNKNOWN:
            interval = min(interval, UNKNOWN_RECHECK_S)
        return time.time() - self.reachability.checked_at >= interval

    async def _recheck(self) -> None:
        """Ask peers that answer us now (routing-table peers, at random) and one configured peer: the configured
        ones alone may all be gone, and a changed network must not keep an old verdict for good."""
        routing = list(self._node.protocol.routing_table.peer_id_to_uid)
        configured = [peer for peer in self._configured_peers if peer not in routing][:1]
        sampled = random.sample(routing, min(len(routing), DIAL_BACK_PEERS - len(configured)))
        report = await self._check_reachability([*sampled, *configured])
        if report.reachability is Reachability.UNKNOWN and self.reachability.reachability is not Reachability.UNKNOWN:
            report = dataclasses.replace(self.reachability, checked_at=report.checked_at)  # keep the verdict
        self.reachability = report
        if self.client_mode_for(report) != self.client_mode:
            await self._switch_mode(self.client_mode_for(report))

    async def _switch_mode(self, client_mode: bool) -> None:
        """Replace the DHT node by one in the other mode on the same daemon and storage, and rejoin."""
        old = self._node
        contacts = {peer_id: [] for peer_id in old.protocol.routing_table.peer_id_to_uid}
        old.is_alive = False
        await old.protocol.shutdown()
        self._node = await self._create_node(client_mode)
        logger.info("reachability %s: the DHT now runs as a %s", self.reachability.reachability.value,
                    "client" if client_mode else "server")
        with contextlib.suppress(Exception):
            await self._join(self._node, {**contacts, **self._initial_peers})

    def add_entry_peers(self, maddrs: Sequence[str]) -> None:
        """Remember public peers' addresses (from their presence entries) to rejoin through when the
        initial peers are gone; the most recent MAX_ENTRY_PEERS are kept. An address of a scope our swarm does
        not use (a loopback or LAN address where the swarm is public) is dropped: a peer's word must not make
        us dial into our own machine or network."""
        own = self._p2p.peer_id if self._p2p is not None else None
        scopes = self._swarm_scopes()
        entries = dict(self.entry_peers)
        for peer_id, addresses in _peer_addresses(maddrs).items():
            kept = [address for address in addresses if (host := observed_host([address])) and scope(host) in scopes]
            if peer_id != own and kept:
                entries.pop(peer_id, None)
                entries[peer_id] = kept
        self.entry_peers = dict(list(entries.items())[-MAX_ENTRY_PEERS:])

    def _swarm_scopes(self) -> set[str]:
        return swarm_scopes([observed_host(maddrs) for maddrs in self._configured_peers.values()], self.listens_on_loopback)

    def entry_maddrs(self) -> list[str]:
        """The remembered public peers that we reached as DHT servers (in our routing table now) as full
        multiaddrs: what a presence claims is not enough to be joined through after a restart."""
        node = self._node
        routing = set(node.protocol.routing_table.peer_id_to_uid) if node is not None else set()
        return [
            f"{maddr}/p2p/{peer_id.to_base58()}"
            for peer_id, maddrs in self.entry_peers.items() if peer_id in routing for maddr in maddrs
        ]

    def _require_node(self) -> DHTNode:
        if self._node is None:
            raise RuntimeError("the DHT peer is not started; call start() first")
        return self._node

    def _require_loop(self) -> LoopThread:
        if self._loop is None:
            raise RuntimeError("the DHT peer is closed")
        return self._loop


def swarm_size_estimate(table: RoutingTable) -> float:
    """Nodes in the swarm, from how close our bucket-size (k) nearest known peers are (ids are uniform: N peers
    leave about 2^160 / N between neighbours); at least the peers we know and ourselves. With fewer than k known,
    no bucket was ever full, so no peer that reached us was turned away: we know them all. (The 5 nearest of a
    12-node swarm said 85 to 100 for nodes whose ids shared a prefix: they wrote their beacons under census tiers
    the others never read.)"""
    known = len(table.uid_to_peer_id) + 1
    neighbours = table.get_nearest_neighbors(table.node_id, table.bucket_size)
    if len(neighbours) < table.bucket_size:
        return float(known)
    farthest = table.node_id.xor_distance(neighbours[-1][0])
    return max(float(known), table.bucket_size * 2.0 ** (8 * DHTID.HASH_NBYTES) / max(farthest, 1))


def _probe(key_id: DHTID) -> DHTID:
    """What a lookup searches for a key: a neighbour of it (last bit flipped), whose nearest peers are the key's and
    under which nothing is stored, so that peers answer with neighbours, not with the key's records."""
    return DHTID(int(key_id) ^ 1)


def _tcp_ports(maddrs: Sequence[str]) -> list[int]:
    ports = []
    for text in maddrs:
        with contextlib.suppress(Exception):
            ports.append(int(Multiaddr(text).value_for_protocol("tcp")))
    return sorted(set(ports))


def _socket_prefix() -> str:
    """Socket file names of one daemon: unique per process and start, so a restart never meets the dead one's."""
    return f"{SOCKET_DIR}/{SOCKET_TAG}{os.getpid()}-{secrets.token_hex(4)}-"


def _retrieve_exception(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _is_loopback(maddr: str) -> bool:
    host = observed_host([Multiaddr(maddr)])
    return host is not None and ipaddress.ip_address(host).is_loopback


def _peer_addresses(initial_peers: Sequence[str]) -> dict[PeerID, list[Multiaddr]]:
    """Initial peers by peer id, each with its transport addresses (the /p2p/ part removed)."""
    addresses: dict[PeerID, list[Multiaddr]] = {}
    for text in initial_peers:
        maddr = Multiaddr(text)
        peer_part = Multiaddr(f"/p2p/{maddr['p2p']}")
        addresses.setdefault(PeerID.from_base58(maddr["p2p"]), []).append(maddr.decapsulate(peer_part))
    return addresses


