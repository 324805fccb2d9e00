"""A calibrated model of the swarm's DHT traffic at 1k-100k peers, where real runs on one machine cannot go.

The routing and lookups are hivemind's own: `RoutingTable`/`KBucket`/`DHTID` hold each simulated peer's table,
`DHTNode.find_nearest_nodes` (hence `traverse_dht`) runs every lookup, under swarmnode's `DHTPeer._nearest` and
`routing.remember_failures` (peers that failed are left out for a while; a lookup leaves a slow peer behind once
others answered). Only the transport is simulated: a find is answered from the asked peer's
`RoutingTable.get_nearest_neighbors`, on an asyncio loop whose clock is virtual (seconds: a round trip takes
`rtt_s`, a request to a departed peer `rpc_timeout_s`), so "RPC rounds" (time over `rtt_s`) are measured, not
guessed. Above the transport the model follows swarmnode's code: `DHTPeer._store_all` (a lookup of the key's
neighbour, then a store on each replica, slow ones left behind), `DHTPeer._read_many`/`_ask` with `KeyRead` (quorum
reads, slow replicas left behind), `Gossip._reading_plan`/`_next_wave` (which shard keys a collect reads), the
directory and the census (v1: today's one directory key and 8 census keys per window; tiered: 2^tier buckets per
kind, docs/DESIGN.md §6.3, §8). Deadlines (publish_timeout_s, collect_timeout_s) are not applied: an operation takes
as long as it takes. Message sizes are those of hivemind's `dht_pb2` messages built with the real field sizes.

At large N only a sample of peers run their operations through lookups; see `ModelConfig.sample` for how
their load is extrapolated. No torch, no sockets.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import math
import random
import selectors
import statistics
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
from hivemind.dht.node import DEFAULT_NUM_WORKERS, DHTNode
from hivemind.dht.routing import DHTID, KBucket, RoutingTable
from hivemind.dht.storage import DictionaryDHTValue
from hivemind.proto import dht_pb2
from hivemind.utils import MSGPackSerializer

from swarmnode.config import GossipConfig, SwarmConfig
from swarmnode.net.census import BUCKETS_PER_WAVE, CENSUS_EVERY_S, CENSUS_SAMPLE, beacon_places, beacon_stood
from swarmnode.net.directory import DIRECTORY_SLACK
from swarmnode.net.gossip import NEWEST_FIRST_AFTER, Gossip, _ahead_first
from swarmnode.net.peer import DHTPeer
from swarmnode.net.replica_cache import ReplicaCache
from swarmnode.net.replicas import BATCH_QUORUM, FIND_NEIGHBOURS, REPLICAS, STORE_QUORUM, KeyRead
from swarmnode.net.routing import (
    QUIET_S,
    RecentFailures,
    ask_for_bare_neighbours,
    ping_only_the_quiet,
    remember_failures,
)
from swarmnode.net.storage import MAX_BEACONS_PER_BUCKET, MAX_DIRECTORY_ENTRIES, MAX_KEY_BYTES, RECORD_OVERHEAD_BYTES
from swarmnode.wire.keys import (
    CENSUS_PER_KEY,
    DIRECTORY_PER_KEY,
    batch_key,
    bucket_of,
    census_key,
    directory_key,
    tier_for,
    written_tiers,
)
from swarmnode.wire.rules import SwarmRules, shard_of

Layout = Literal["v1", "tiered"]
V1_CENSUS_BUCKETS = 8  # protocol v1's census keys per window
V1_NUM_SHARDS = 256  # protocol v1's default swarm.num_shards
DEPTH_MODULO = 5  # hivemind's default; swarmnode does not set it
BUCKET_SIZE = 20  # hivemind's default k; swarmnode does not set it (peer.py `_create_node`)
PEER_ID_BYTES = 38  # an Ed25519 libp2p peer id
PEER_ID_TEXT = 52  # its base58 form, the subkey of every record
ROLLOUTS_PER_BATCH = 8  # benchmarks/bench_gossip.py Workload default
BOOTSTRAP = 0  # the peer every joiner dials first
# finds sent by the lookup running in this task: a peer runs several lookups at once (its publish stores every item
# concurrently), and the tasks traverse_dht starts inherit the context of the lookup that started them
_LOOKUP_FINDS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("lookup_finds", default=None)
# the node operation (publish, collect, ...) whose requests this task sends, as bench_swarm_scale's RpcCounter counts
# them: the real and modelled finds and stores per operation compare one for one
_OPERATION: contextvars.ContextVar[str] = contextvars.ContextVar("operation", default="other")
MIN_HITS = 10  # sampled requests below which a peer's extrapolated load is taken as the mean of its group
EXTRAPOLATED = ("route", "read:batch", "read:directory", "read:census")


@dataclass(frozen=True)
class ModelConfig:
    """What one modelled swarm is. Defaults are swarmnode's and hivemind's, the workload is bench_gossip's.

    `sample`: peers whose operations run through real lookups (all of them when N <= sample). Every other peer's
    stores still land on the replicas (the key's nearest live peers, exactly, so every key's contents and every
    replica's store load are complete), but its lookups and reads are not run: the sampled peers' lookup and read
    requests are charged to the peers that serve them with weight N / sample. A peer reached by fewer than
    MIN_HITS sampled requests of a group gets, for that extrapolated part, the mean of its group (one hit times
    N / sample would be noise, not load): lookups' finds and pings over all servers, reads of a kind of key over
    the peers holding keys of that kind. Peers at hot keys are reached by many and keep their own. Per-node
    medians are over the sampled peers. Fitted parameters with a physical meaning: `table_fill`, `message_overhead_bytes`.
    """

    peers: int
    layout: Layout = "v1"
    bucket_size: int = BUCKET_SIZE
    find_neighbours: int = FIND_NEIGHBOURS  # neighbours per key in an answer to a find (routing.answer_with_fewer_neighbours)
    bare_neighbours: bool = True  # named by peer id alone (routing.ask_for_bare_neighbours; False: before 2026-12-07)
    census_every_s: float = CENSUS_EVERY_S  # a large swarm's own census (0: every window, as before 2026-12-06)
    replica_keep_s: float | None = None  # lookups remembered (ReplicaCache); None: as DHTPeer, 0: none, as before the look-ahead
    look_ahead: bool = True  # Gossip.look_ahead in each window, for the next (False: as before it)
    num_replicas: int = REPLICAS
    num_workers: int = DEFAULT_NUM_WORKERS
    table_fill: float = 1.0  # share of the peers in a bucket's range a node has met (a long-running swarm: 1)
    message_overhead_bytes: int = 0  # added to every request and response (0: protobuf bytes, as TrafficMeter counts)
    churn_per_min: float = 0.01  # share of peers leaving per minute, replaced by as many joiners
    linger_s: float = 600.0  # how long a departed peer stays in others' routing tables before a failed request drops it
    nat_signers: int = 50  # DHT clients (behind NAT): in nobody's routing table, found via the directory or probes
    gossip: bool = True
    census: bool = True
    window_s: float = 30.0
    rounds_per_window: int = 1
    rounds: int = 1  # measured rounds, after `warmup_rounds`
    warmup_rounds: int = 1
    collect_rollouts: int = 12  # J x oversample: 4 x 3
    per_peer_cap: int = 4
    shards_per_wave: int = 4
    num_shards: int | None = None  # None: the layout's default (v1 256; tiered, protocol v2: swarm.num_shards')
    max_age_windows: int = 1
    epoch_windows: int = SwarmConfig().epoch_windows  # tiered: directory and census keys change once an epoch (1: v2)
    frame_bytes: int = 7169
    presence_bytes: int = 200
    beacon_bytes: int = 230
    estimate_sigma: float = 0.3  # lognormal noise on each node's swarm-size estimate
    rtt_s: float = 0.1  # one RPC round trip
    rpc_timeout_s: float = 3.0  # what a request to a departed peer costs
    start_spread_s: float = 5.0  # look-aheads (and, without round_spread, publishes and collects) start within this long
    # a node's round (its publish, then its collect) starts at a share of its round drawn anew each round up to this,
    # as bench_swarm_scale's schedule: a collect then finds of the current window only the batches published before
    # it (0: every publish before any collect, each node's collects at one moment of the window; before 2026-12-07)
    round_spread: float = 0.8
    bootstrap_kbps: float = 10_000.0  # the bootstrap's link, both directions together
    quiet_s: float = QUIET_S  # a full bucket's least recently heard-from peer is pinged once quiet this long
    sample: int = 250
    table_cache: int = 4000  # routing tables of non-sampled peers kept built at once (they are rebuilt on demand)
    seed: int = 0

    @property
    def shards(self) -> int:
        if self.num_shards is not None:
            return self.num_shards
        return V1_NUM_SHARDS if self.layout == "v1" else SwarmConfig().num_shards

    @property
    def stale_share(self) -> float:
        """Share of routing-table entries that are departed peers, and of live peers that joined too recently to
        be in anyone's table: churn over the time a departed peer lingers."""
        return 1.0 - math.exp(-self.churn_per_min / 60.0 * self.linger_s)


@dataclass
class Quantiles:
    p50: float = 0.0
    p95: float = 0.0

    @classmethod
    def of(cls, samples: list[float]) -> Quantiles:
        if not samples:
            return cls()
        ordered = sorted(samples)
        return cls(ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)])


@dataclass
class ModelResult:
    """Per node and round unless named otherwise; KB are 1000 bytes, in + out."""

    peers: int
    layout: str
    sampled: int
    node_kb_round_median: float
    node_kb_round_mean: float
    node_kb_in_round_median: float  # in only: answers to its own requests, requests it served
    kb_by_kind: dict[str, float]  # requests of each kind and their answers, each counted once (a node total: both ends)
    find_kb_by_key: dict[str, float]  # the finds of kb_by_kind, by the kind of key looked up ("join": a joiner's own id)
    busiest_kb_window: float
    busiest_over_median: float
    busiest_is: str  # what the busiest node is a replica of
    requests_sent_round_median: float
    requests_sent_round_mean: float
    requests_served_round_median: float
    busiest_served_window: float
    bytes_in_round_mean: float
    # finds, stores and pings a sampled peer's operation sent ("publish store"; "publish lookup": the finds of its
    # lookups), per run of it; and its runs per node and round ("publish"): what requests_sent_round_mean is made of
    requests_per_operation: dict[str, float]
    operations_per_node_round: dict[str, float]
    lookup_finds_per_key: Quantiles  # find requests a lookup sent per key it looked up (pings apart)
    lookup_rounds: Quantiles
    lookup_recall: float  # share of a key's true nearest live peers (num_replicas) that its lookup returned
    publish_rounds: Quantiles
    collect_rounds: Quantiles
    publish_s: Quantiles
    collect_s: Quantiles
    replicas_reached: float  # mean replicas that accepted a batch store
    delivery: float  # rollouts collected / rollouts wanted
    signers_read: float  # share of this round's publishers whose batch some collector read
    nat_rounds_to_first_read: float | None  # expected: its own round if read then, else 1 + 1 / a round's chance
    census_seen_mean: float
    census_keys_read_mean: float
    refusals: dict[str, float]  # per window, swarm-wide
    timeouts_per_node_round: float
    bootstrap_requests_per_join: float
    bootstrap_bytes_per_join: float
    joins_per_s: float  # the churn's joins, all through one bootstrap
    bootstrap_joins_per_s_capacity: float  # joins a bootstrap on `bootstrap_kbps` serves beside its own traffic
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Message sizes: hivemind's protobuf messages built with the real field sizes


class Wire:
    """Sizes of DHT RPC messages, as `TrafficMeter` counts them (`ByteSize()` of request and response)."""

    def __init__(self, overhead: int, bare_neighbours: bool) -> None:
        self.overhead, self.bare_neighbours = overhead, bare_neighbours
        self._node = dht_pb2.NodeInfo(node_id=bytes(20))

    @lru_cache(maxsize=None)
    def find_request(self, keys: int, client: bool) -> int:
        peer = dht_pb2.NodeInfo() if client else self._node
        request = dht_pb2.FindRequest(keys=[bytes(20)] * keys, peer=peer)
        if self.bare_neighbours:
            request = ask_for_bare_neighbours(request)
        return request.ByteSize() + self.overhead

    @lru_cache(maxsize=None)
    def _result(self, value_bytes: int | None, neighbours: int) -> int:
        result = dht_pb2.FindResult(type=dht_pb2.NOT_FOUND if value_bytes is None else dht_pb2.FOUND_DICTIONARY)
        if value_bytes is not None:
            result.value, result.expiration_time = bytes(value_bytes), 1.8e9
        if not self.bare_neighbours:
            result.nearest_node_ids.extend([bytes(20)] * neighbours)
        result.nearest_peer_ids.extend([bytes(PEER_ID_BYTES)] * neighbours)
        size = result.ByteSize()
        return 1 + _varint_len(size) + size

    def find_response(self, results: list[tuple[int | None, int]]) -> int:
        """`results`: per key, the serialized dictionary's bytes (None: not found) and the neighbours listed."""
        peer = self._node.ByteSize()
        return sum(self._result(value, n) for value, n in results) + 2 + peer + self.overhead

    @lru_cache(maxsize=None)
    def store_request(self, value_sizes: tuple[int, ...], client: bool) -> int:
        """One StoreRequest carrying a record of each size (a store sends a replica every item it holds)."""
        peer = dht_pb2.NodeInfo() if client else self._node
        request = dht_pb2.StoreRequest(
            keys=[bytes(20)] * len(value_sizes), subkeys=[MSGPackSerializer.dumps("x" * PEER_ID_TEXT)] * len(value_sizes),
            values=[MSGPackSerializer.dumps(bytes(size)) for size in value_sizes],
            expiration_time=[1.8e9] * len(value_sizes), in_cache=[False] * len(value_sizes), peer=peer,
        )
        return request.ByteSize() + self.overhead

    @lru_cache(maxsize=None)
    def store_response(self, records: int) -> int:
        return dht_pb2.StoreResponse(store_ok=[True] * records, peer=self._node).ByteSize() + self.overhead

    @lru_cache(maxsize=None)
    def ping(self) -> tuple[int, int]:
        request = dht_pb2.PingRequest(peer=self._node, validate=True).ByteSize()
        response = dht_pb2.PingResponse(peer=self._node, dht_time=1.8e9, available=True).ByteSize()
        return request + self.overhead, response + self.overhead

    @staticmethod
    @lru_cache(maxsize=None)
    def _entry_cost(value_bytes: int) -> tuple[int, int]:
        """(bytes of an empty DictionaryDHTValue, bytes per entry) for entries of this size, measured."""
        sizes = []
        for count in (1, 2):
            value = DictionaryDHTValue()
            for index in range(count):
                value.store(MSGPackSerializer.dumps(f"{index:0{PEER_ID_TEXT}d}"), MSGPackSerializer.dumps(bytes(value_bytes)), 1.8e9)
            sizes.append(len(MSGPackSerializer.dumps(value)))
        per_entry = sizes[1] - sizes[0]
        return sizes[0] - per_entry, per_entry

    def dictionary(self, entry_sizes: list[int]) -> int:
        if not entry_sizes:
            return 0
        total = 0
        for size, count in Counter(entry_sizes).items():
            base, per_entry = self._entry_cost(size)
            total += per_entry * count
        return total + base


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


# ---------------------------------------------------------------------------------------------------------------
# A virtual clock for asyncio: sleeping advances time instantly, so latency is counted, never waited for


class _VirtualSelector(selectors.SelectSelector):
    now = 0.0

    def select(self, timeout: float | None = None) -> list:
        if timeout is None:
            raise RuntimeError("the simulated swarm waits on nothing: a lookup would hang")
        self.now += max(timeout, 0.0)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose time (seconds) is advanced by its own timers only."""

    def __init__(self) -> None:
        self._clock = _VirtualSelector()
        super().__init__(self._clock)

    def time(self) -> float:
        return self._clock.now


# ---------------------------------------------------------------------------------------------------------------
# Keys of the two layouts


def directory_keys(layout: Layout, swarm: str, window: int, signer: str, estimate: float) -> list[str]:
    """Where a signer's presence goes (`window`: the key's, its epoch's first for tiered): v1 one key per window;
    tiered its bucket at tiers t-1, t, t+1."""
    if layout == "v1":
        return [f"swarmnode/v1/{swarm}/{window}/directory"]
    return [directory_key(swarm, window, tier, bucket_of(signer, tier))
            for tier in written_tiers(tier_for(estimate, DIRECTORY_PER_KEY))]


def census_keys(
    layout: Layout, swarm: str, window: int, signer: str, estimate: float, standing: dict[tuple[int, int], float],
    rules: SwarmRules, offset: int,
) -> list[tuple[str, tuple[int, int]]]:
    """Where a signer's beacon of `window` goes, with each key's (window, tier): v1 under that window's key and the
    next's; tiered as `BeaconService.publish` places it (`beacon_places`; `standing`: where its earlier beacons
    stand until when; `rules` counted in windows; `offset`: its window of each epoch for the next beacon)."""
    if layout == "v1":
        bucket = shard_of(signer, V1_CENSUS_BUCKETS)
        return [(f"swarmnode/v1/{swarm}/{w}/census/{bucket}", (w, 0)) for w in (window, window + 1)]
    places = beacon_places(window, written_tiers(tier_for(estimate, CENSUS_PER_KEY)), standing, rules, offset)
    return [(census_key(swarm, w, tier, bucket_of(signer, tier)), (w, tier)) for w, tier in places]


def stood(
    standing: dict[tuple[int, int], float], window: int, placed: list[tuple[str, tuple[int, int]]], accepted: list[int],
    rules: SwarmRules,
) -> dict[tuple[int, int], float]:
    """`BeaconService.publish`'s record of where a beacon of `window` now stands (`beacon_stood`), in windows (`rules`
    counted in windows): written at its window's start, it lives `epoch_record_ttl_s`."""
    return beacon_stood(
        standing, rules.epoch_start(window), [place for _, place in placed], [count > 0 for count in accepted],
        window + rules.epoch_record_ttl_s,
    )


class FastID(DHTID):
    """A DHTID whose XOR distance skips hivemind's `isinstance(other, Iterable)` check for a single id (an ABC
    check that dominated the model's time); same values, same results."""

    def xor_distance(self, other: DHTID | list[DHTID]) -> int | list[int]:
        if isinstance(other, int):
            return int(self) ^ int(other)
        return [int(self) ^ int(node) for node in other]


@lru_cache(maxsize=1 << 18)
def key_id(key: str) -> FastID:
    return FastID(int(DHTID.generate(source=key)))


# ---------------------------------------------------------------------------------------------------------------
# The simulated swarm


@dataclass
class _Record:
    size: int  # the frame's bytes
    stored_at: float  # virtual time: replicas holding the same record agree on its expiration


@dataclass
class _Peer:
    """A peer whose operations are simulated: its routing table, blacklist and what it remembers between rounds."""

    index: int
    client: bool
    estimate: float
    weight: float  # how many peers' lookups and reads its own stand for
    node: Any = None  # the object hivemind's DHTNode.find_nearest_nodes runs on
    rng: random.Random = field(default_factory=random.Random)
    stored_window: int | None = None  # directory: the epoch (its first window) another peer holds our entry in
    beacons: dict[tuple[int, int], float] = field(default_factory=dict)  # census: where our beacon stands until when
    read_windows: set[int] = field(default_factory=set)
    listed: dict[str, int] = field(default_factory=dict)
    signers: dict[str, int] = field(default_factory=dict)
    shard_read: dict[int, int] = field(default_factory=dict)  # shard -> newest window a collect read it in
    covered: set[str] = field(default_factory=set)  # its routing table's peers at any of its directory reads
    consumed: set[str] = field(default_factory=set)  # "signer/window" of the batches it took (Gossip._taken)
    published_in: int | None = None  # the window of its last publish
    ahead_wave: tuple[int, list] | None = None  # (window, the first wave `look_ahead` drew)
    ahead_buckets: tuple[int, int, list[int]] | None = None  # (window, tier, directory buckets `look_ahead` drew)
    collect_phase: float = 0.0  # the share of a window at which its collect runs (with round_spread: this round's)


class _SimProtocol:
    """The part of hivemind's DHTProtocol that DHTNode.find_nearest_nodes uses, over the simulated transport."""

    def __init__(self, swarm: SwarmModel, peer: _Peer, table: RoutingTable) -> None:
        self.swarm, self.peer, self.routing_table = swarm, peer, table
        self.bucket_size = swarm.config.find_neighbours
        self.client_mode = peer.client

    async def call_find(self, target: int, keys: list[DHTID]) -> dict | None:
        return await self.swarm.find(self.peer, target, keys, lookup=True)


class _SimNode:
    """What DHTNode.find_nearest_nodes and DHTPeer._nearest read from `self`. Failed peers and hedged lookups are
    swarmnode's own (`routing.remember_failures`, as `DHTPeer._create_node` applies it), on the virtual clock."""

    _filter_blacklisted = DHTNode._filter_blacklisted
    find_nearest_nodes = DHTNode.find_nearest_nodes

    def __init__(self, swarm: SwarmModel, peer: _Peer, table: RoutingTable) -> None:
        self.node_id = swarm.ids[peer.index]
        self.peer_id = peer.index
        self.num_workers = swarm.config.num_workers
        self.num_replicas = swarm.config.num_replicas
        self.protocol = _SimProtocol(swarm, peer, table)
        self.blacklist: RecentFailures
        remember_failures(self, clock=swarm.loop.time)  # type: ignore[arg-type]
        keep_s = swarm.config.replica_keep_s
        self.replicas = ReplicaCache(
            swarm.rules.window_s * (swarm.rules.max_age_windows + 1) if keep_s is None else keep_s,
            swarm.config.num_replicas, clock=swarm.loop.time,
        )


class SwarmModel:
    """N DHT servers (plus `nat_signers` clients), their routing tables, the records on each replica, and counters."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.wire = Wire(config.message_overhead_bytes, config.bare_neighbours)
        epoch = 1 if config.layout == "v1" else config.epoch_windows
        self.rules = SwarmRules(
            "model", config.window_s, 2 * config.window_s, config.shards, 5.0, config.max_age_windows, epoch_windows=epoch
        )
        # `rules` counted in windows: where a beacon stands is kept in windows (`stood`)
        self.window_rules = dataclasses.replace(self.rules, window_s=1.0, record_ttl_s=2.0)
        self.gossip_config = GossipConfig(shards_per_wave=config.shards_per_wave, max_rollouts_per_peer=config.per_peer_cap)
        n, stale = config.peers, config.stale_share
        departed = round(stale * n) if n > 16 else 0
        self.servers = n
        self.total = n + departed + config.nat_signers
        # index layout: [0, n) live servers, [n, n + departed) departed (lingering in tables), then NAT clients
        self.alive = np.ones(self.total, dtype=bool)
        self.alive[n:n + departed] = False
        self.is_client = np.zeros(self.total, dtype=bool)
        self.is_client[n + departed:] = True
        self.joiners = set(self.rng.sample(range(1, n), round(stale * n))) if departed else set()
        self.peer_ids = [f"12D3KooW{self.rng.getrandbits(256):x}"[:PEER_ID_TEXT] for _ in range(self.total)]
        self.ids = [FastID(int(DHTID.generate(source=peer_id.encode()))) for peer_id in self.peer_ids]
        self.index_of = {node_id: index for index, node_id in enumerate(self.ids)}
        self.shard = [shard_of(peer_id, config.shards) for peer_id in self.peer_ids]
        self.top = np.array([int(node_id) >> 96 for node_id in self.ids], dtype=np.uint64)
        # who is in routing tables (servers that are not fresh joiners, departed ones included) and who answers
        in_tables = [i for i in range(n + departed) if i not in self.joiners]
        self._known = self._sorted(in_tables)
        self._live = self._sorted([i for i in in_tables if self.alive[i]])
        self.estimates = n * np.exp(config.estimate_sigma * np.random.default_rng(config.seed).standard_normal(self.total))
        self.storage: dict[DHTID, dict[int, dict[str, _Record]]] = {}
        self._key_windows: dict[DHTID, int] = {}
        self._held_bytes: dict[tuple[DHTID, int], int] = {}  # a replica's bytes under a key, as its storage counts them
        self._exact_stored_window: dict[int, int] = {}
        self._exact_beacons: dict[int, dict[tuple[int, int], float]] = {}  # non-sampled peers' `_Peer.beacons`
        self.kind: dict[DHTID, str] = {}
        self._tables: OrderedDict[int, RoutingTable] = OrderedDict()
        sampled = list(range(n)) if n <= config.sample else sorted(self.rng.sample(range(n), config.sample))
        weight = n / len(sampled)
        self.peers: dict[int, _Peer] = {}
        for index in [*sampled, *range(n + departed, self.total)]:
            client = bool(self.is_client[index])
            peer = _Peer(index, client, float(self.estimates[index]), 1.0 if client else weight,
                         rng=random.Random(config.seed * 1_000_003 + index))
            peer.collect_phase = peer.rng.random()
            self.peers[index] = peer
        self.loop = VirtualLoop()
        self._next_round = 0.0  # when the next round starts: rounds are window_s / rounds_per_window apart
        self.reset_counters()
        for peer in self.peers.values():
            table = self._join_table(peer) if peer.index in self.joiners else self._build_table(peer.index)
            peer.node = _SimNode(self, peer, table)

    # ----- counters

    def reset_counters(self) -> None:
        self.own = np.zeros((self.total, 5))  # sent, served(unused), bytes out, bytes in, timeouts: the peer's own requests
        self.load = np.zeros((self.total, 3))  # served, bytes in, bytes out: all requests, weighted
        # the part of `load` extrapolated from sampled peers (weight > 1), by group: lookups' finds and pings reach
        # any peer; reads reach the replicas of one kind of key
        self.extra = {group: np.zeros((self.total, 3)) for group in EXTRAPOLATED}
        self.hits = {group: np.zeros(self.total) for group in EXTRAPOLATED}  # sampled requests behind `extra`
        self.maint = np.zeros((self.total, 3))  # pings a peer sent when a bucket was full: requests, bytes out, in
        self.kind_bytes: Counter[str] = Counter()  # bytes of every request and its answer by kind, weighted
        self.find_bytes: Counter[str] = Counter()  # kind_bytes["find"] by the kind of key looked up
        self.lookups: list[tuple[float, float, float]] = []  # finds per key, seconds, share of the true nearest found
        self.publish_s: list[float] = []
        self.collect_s: list[float] = []
        self.replicas_accepted: list[int] = []
        self.wanted = self.collected = 0
        self.read_signers: Counter[tuple[str, int]] = Counter()  # (signer, rounds after its batch's) -> weighted readers
        self.refusals: Counter[str] = Counter()
        self.operation_requests: Counter[str] = Counter()  # "<operation> <find|store|ping>", sampled peers' own
        self.operation_runs: Counter[str] = Counter()
        self.census_seen: list[int] = []
        self.census_keys: list[int] = []
        self.served_kind: dict[int, Counter[str]] = {}
        self.signers_read: list[float] = []  # per round: share of publishers some collector read
        self.nat_read: list[tuple[float, float]] = []  # per round, NAT signer: chance its batch is read in its round, at all

    def _begin(self, operation: str) -> None:
        """This task's requests from here on are `operation`'s (tasks it starts inherit it)."""
        _OPERATION.set(operation)
        self.operation_runs[operation] += 1

    def _count_own(self, kind: str) -> None:
        """A find counts as "find" and, sent by a lookup (kind "find", a read's is "read:..."), also as "lookup"."""
        rpc = kind.split(":")[0]
        self.operation_requests[f"{_OPERATION.get()} {'find' if rpc == 'read' else rpc}"] += 1
        if kind == "find":
            self.operation_requests[f"{_OPERATION.get()} lookup"] += 1

    def _charge(self, origin: _Peer | None, target: int, request: int, response: int, weight: float, kind: str) -> None:
        if origin is not None:
            self.own[origin.index] += (1, 0, request, response, 0)
            self._count_own(kind)
        self.load[target] += (weight, weight * request, weight * response)
        self.kind_bytes[kind] += weight * (request + response)
        if weight != 1.0:
            group = kind if kind in EXTRAPOLATED else "route"
            self.extra[group][target] += (weight, weight * request, weight * response)
            self.hits[group][target] += 1
        self.served_kind.setdefault(target, Counter())[kind] += weight

    def _unanswered(self, peer: _Peer, request: int, weight: float, kind: str) -> None:
        """A request that went out and got no answer (its peer had left)."""
        self.own[peer.index] += (1, 0, request, 0, 1)
        self._count_own(kind)
        self.kind_bytes[kind] += weight * request

    # ----- routing tables

    def _sorted(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        order = np.array(sorted(indices, key=lambda i: int(self.top[i])), dtype=np.int64)
        return self.top[order], order

    @staticmethod
    def _range(pool: tuple[np.ndarray, np.ndarray], prefix: int, depth: int) -> tuple[int, int]:
        tops = pool[0]
        low = np.uint64(prefix << (64 - depth)) if depth else np.uint64(0)
        start = int(np.searchsorted(tops, low, "left"))
        if depth == 0 or prefix + 1 == 1 << depth:
            return start, len(tops)
        return start, int(np.searchsorted(tops, np.uint64((prefix + 1) << (64 - depth)), "left"))

    def _build_table(self, owner: int) -> RoutingTable:
        """The table a long-running peer has: hivemind's buckets (a bucket splits when it overflows and holds the
        owner's id or its depth is not a multiple of depth_modulo), each holding up to k peers drawn from the peers
        in its range that the owner has met (`table_fill`), departed ones that still linger included."""
        k, fill = self.config.bucket_size, self.config.table_fill
        rng = np.random.default_rng((self.config.seed, owner))
        own_top = int(self.top[owner])
        tops, order = self._known
        buckets: list[KBucket] = []
        position = self._position(owner)

        def known(start: int, stop: int) -> int:
            count = stop - start - int(start <= position < stop)
            return count if fill >= 1.0 else int(rng.binomial(count, fill))

        def leaf(prefix: int, depth: int, start: int, stop: int, count: int) -> None:
            bucket = KBucket(prefix << (160 - depth), (prefix + 1) << (160 - depth), k, depth)
            picks = range(stop - start) if count + 1 >= stop - start else rng.choice(stop - start, size=count + 1, replace=False)
            members = [int(order[start + j]) for j in picks if start + j != position][:count]
            bucket.nodes_to_peer_id = {self.ids[i]: i for i in members}
            buckets.append(bucket)

        def far(prefix: int, depth: int) -> None:
            start, stop = self._range(self._known, prefix, depth)
            count = known(start, stop)
            if count > k and depth % DEPTH_MODULO != 0 and depth < 64:
                far(2 * prefix, depth + 1)
                far(2 * prefix + 1, depth + 1)
            else:
                leaf(prefix, depth, start, stop, min(count, k))

        prefix = depth = 0
        while True:
            start, stop = self._range(self._known, prefix, depth)
            count = known(start, stop)
            if count <= k or depth >= 63:
                leaf(prefix, depth, start, stop, min(count, k))
                break
            bit = (own_top >> (63 - depth)) & 1
            far(2 * prefix + 1 - bit, depth + 1)
            prefix, depth = 2 * prefix + bit, depth + 1
        table = RoutingTable(self.ids[owner], k, DEPTH_MODULO)
        table.buckets = sorted(buckets, key=lambda bucket: bucket.lower)
        heard = ping_only_the_quiet(table, self.config.quiet_s, self.loop.time)
        now = self.loop.time()
        for bucket in table.buckets:
            for node_id, index in bucket.nodes_to_peer_id.items():
                table.uid_to_peer_id[node_id] = index
                table.peer_id_to_uid[index] = node_id
                if heard is not None:  # a long-running table's peers were last heard from within quiet_s, at random
                    heard[node_id] = now - float(rng.uniform(0.0, self.config.quiet_s))
        return table

    def _routing_table(self, owner: int) -> RoutingTable:
        """A joiner's empty table: hivemind's, pinging a full bucket's oldest peer only once quiet, as `DHTPeer` makes
        it (`ping_only_the_quiet`)."""
        table = RoutingTable(self.ids[owner], self.config.bucket_size, DEPTH_MODULO)
        ping_only_the_quiet(table, self.config.quiet_s, self.loop.time)
        return table

    def _position(self, index: int) -> int:
        tops, order = self._known
        start = int(np.searchsorted(tops, self.top[index], "left"))
        stop = int(np.searchsorted(tops, self.top[index], "right"))
        for position in range(start, stop):
            if order[position] == index:
                return position
        return -1

    def _join_table(self, peer: _Peer) -> RoutingTable:
        """A fresh joiner's table: the bootstrap, then whoever answered its lookup of its own id (swarmnode's `_join`,
        hivemind's defaults: k nearest with a beam of k). Counted apart as the bootstrap's join load."""
        table = self._routing_table(peer.index)
        table.add_or_update_node(self.ids[BOOTSTRAP], BOOTSTRAP)
        peer.node = _SimNode(self, peer, table)
        self._run(self._join(peer))
        return table

    async def _join(self, peer: _Peer) -> None:
        request, response = self.wire.ping()
        self._charge(peer, BOOTSTRAP, request, response, peer.weight, "join")
        await peer.node.find_nearest_nodes([peer.node.node_id], k_nearest=self.config.bucket_size)

    def table(self, index: int) -> RoutingTable:
        peer = self.peers.get(index)
        if peer is not None and peer.node is not None:
            return peer.node.protocol.routing_table
        table = self._tables.get(index)
        if table is None:
            table = self._tables[index] = self._build_table(index)
            if len(self._tables) > self.config.table_cache:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(index)
        return table

    def true_nearest(self, target: DHTID, count: int, extra: int | None = None) -> list[int]:
        """The `count` live peers in routing tables nearest to `target` (XOR), plus `extra` as a candidate: they
        all lie in the deepest subtree around the target that still holds `count` peers."""
        tops, order = self._live
        top = int(target) >> 96
        low, high = 0, 64
        while low < high:  # deepest prefix length whose subtree holds at least `count`
            middle = (low + high + 1) // 2
            start, stop = self._range(self._live, top >> (64 - middle), middle)
            low, high = (middle, high) if stop - start >= count else (low, middle - 1)
        start, stop = self._range(self._live, top >> (64 - low) if low else 0, low)
        candidates = {int(i) for i in order[start:stop]} | ({extra} if extra is not None else set())
        return sorted(candidates, key=lambda i: int(self.ids[i]) ^ int(target))[:count]

    # ----- the transport

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _wait(self, target: int) -> bool:
        """One round trip to `target`; a departed peer costs the RPC timeout instead."""
        if self.alive[target]:
            await asyncio.sleep(self.config.rtt_s)
            return True
        await asyncio.sleep(self.config.rpc_timeout_s)
        return False

    async def find(self, peer: _Peer, target: int, keys: list[DHTID], *, lookup: bool) -> dict | None:
        """hivemind's rpc_find as the asked peer runs it: each key's value if it holds one, and its k nearest
        neighbours (the asker excluded). The asker drops a peer that did not answer from its routing table, and
        adds one that did (pinging the bucket's least recent peer when the bucket is full: in the background, as
        hivemind's protocol does, so the find does not wait for it)."""
        table = peer.node.protocol.routing_table
        request = self.wire.find_request(len(keys), peer.client)
        counter = _LOOKUP_FINDS.get()
        if counter is not None and lookup:
            counter[0] += 1
        weight = peer.weight
        kind = "find" if lookup else f"read:{self.kind.get(keys[0], '?')}"
        if not await self._wait(target):
            self._unanswered(peer, request, weight, kind)
            if self.ids[target] in table:
                del table[self.ids[target]]
            return None
        served = self.table(target)
        exclude = None if peer.client else self.ids[peer.index]
        output, results = {}, []
        for key in keys:
            neighbours = served.get_nearest_neighbors(key, self.config.find_neighbours, exclude=exclude)
            value = self._value(target, key)
            results.append((self.wire.dictionary([r.size for r in value.values()]) if value else None, len(neighbours)))
            output[key] = (value, dict(neighbours))
        response = self.wire.find_response(results)
        self._charge(peer, target, request, response, weight, kind)
        if lookup:  # a lookup asks about a probe: its key's id with the last bit flipped
            self.find_bytes[self.kind.get(FastID(int(keys[0]) ^ 1), "join")] += weight * (request + response)
        self._met(peer, target, served)
        if not peer.client and not self.is_client[target]:
            to_ping = table.add_or_update_node(self.ids[target], target)
            if to_ping is not None:
                asyncio.ensure_future(self._ping(peer, to_ping[1]))
        return output

    def _met(self, peer: _Peer, target: int, table: RoutingTable) -> None:
        """hivemind's update_routing_table on the serving side: a server that asked is added to the target's table;
        a full bucket makes the target ping its least recent peer (dropped if departed, else kept; the asker then
        waits among the replacements)."""
        if peer.client:
            return
        to_ping = table.add_or_update_node(self.ids[peer.index], peer.index)
        if to_ping is None:
            return
        pinged = to_ping[1]
        request, response = self.wire.ping()
        answer = response if self.alive[pinged] else 0
        self.maint[target] += (peer.weight, peer.weight * request, peer.weight * answer)
        if peer.weight != 1.0:  # the ping's answer in, its request out
            self.extra["route"][target, 1:] += (peer.weight * answer, peer.weight * request)
        if self.alive[pinged]:
            self._charge(None, pinged, request, response, peer.weight, "ping")
            table.add_or_update_node(to_ping[0], pinged)
        else:
            self.kind_bytes["ping"] += peer.weight * request
            if to_ping[0] in table:
                del table[to_ping[0]]

    async def _ping(self, peer: _Peer, target: int) -> None:
        request, response = self.wire.ping()
        table = peer.node.protocol.routing_table
        if await self._wait(target):
            self._charge(peer, target, request, response, peer.weight, "ping")
            table.add_or_update_node(self.ids[target], target)
        else:
            self._unanswered(peer, request, peer.weight, "ping")
            if self.ids[target] in table:
                del table[self.ids[target]]

    def _value(self, target: int, key: DHTID) -> dict[str, _Record] | None:
        held = self.storage.get(key)
        return held.get(target) if held else None

    def _register(self, key: str) -> DHTID:
        """A key's id, kind and window, from its name."""
        kid = key_id(key)
        if kid not in self.kind:
            parts = key.split("/")
            self.kind[kid] = "directory" if "directory" in parts else "census" if "census" in parts else "batch"
            self._key_windows[kid] = int(parts[3])
        return kid

    def _accept(self, replica: int, key: DHTID, signer: str, size: int, now: float) -> bool:
        """swarmnode's BoundedRecordStorage as far as sizes and counts decide: directory keys hold 32 signers, census
        keys 64, any key 3 MiB with 512 bytes counted per entry (a listed signer may always refresh)."""
        kind = self.kind[key]
        held = self.storage.setdefault(key, {}).setdefault(replica, {})
        if signer not in held:
            cap = {"directory": MAX_DIRECTORY_ENTRIES, "census": MAX_BEACONS_PER_BUCKET}.get(kind)
            if cap is not None and len(held) >= cap:
                self.refusals[f"{kind}_full"] += 1
                return False
            if self._held_bytes.get((key, replica), 0) + size + RECORD_OVERHEAD_BYTES > MAX_KEY_BYTES:
                self.refusals[f"{kind}_key_bytes"] += 1
                return False
            self._held_bytes[(key, replica)] = self._held_bytes.get((key, replica), 0) + size + RECORD_OVERHEAD_BYTES
        held[signer] = _Record(size, now)
        return True

    # ----- operations, as swarmnode's DHTPeer runs them

    async def _lookup(self, peer: _Peer, probes: list[DHTID]) -> dict[DHTID, dict[DHTID, int]]:
        """`DHTPeer._store_all`/`_read_many`'s lookup, run by `DHTPeer._nearest` itself (every peer joined through
        the bootstrap, its one configured peer): hedged, from and to peers that did not fail lately."""
        finds, started = [0], self.loop.time()
        replicas = self.config.num_replicas
        token = _LOOKUP_FINDS.set(finds)
        view = SimpleNamespace(_configured_peers=() if peer.index == BOOTSTRAP else (BOOTSTRAP,), _replicas=peer.node.replicas)
        try:
            found = await DHTPeer._nearest(view, peer.node, probes)  # type: ignore[arg-type]
        finally:
            _LOOKUP_FINDS.reset(token)
        recall = statistics.fmean(
            len({self.index_of[n] for n in nearest} & set(self.true_nearest(probe, replicas, None if peer.client else peer.index)))
            / replicas for probe, nearest in found.items()
        )
        self.lookups.append((finds[0] / len(probes), self.loop.time() - started, recall))
        return found

    async def store(self, peer: _Peer, items: list[tuple[str, int]]) -> list[int]:
        """`DHTPeer._store_all` (no deadline): one lookup of every key's neighbour (last bit flipped), then one store
        request per replica carrying every item it is a replica of; a server among a key's nearest keeps a copy
        itself. It returns once `STORE_QUORUM` of each item's replicas accepted it; or, once every item has a
        replica that accepted, after the node's `slow_after_s` more, leaving the others behind as slow. Returns, per
        (key, size) item, how many other peers accepted it by then."""
        node = peer.node
        kids = [self._register(key) for key, _ in items]
        probes = [FastID(int(kid) ^ 1) for kid in kids]
        nearest = await self._lookup(peer, list(dict.fromkeys(probes)))
        by_replica: dict[int, list[int]] = {}
        enough = [0] * len(items)
        for item, probe in enumerate(probes):
            if node.node_id in nearest[probe]:
                self._accept(peer.index, kids[item], self.peer_ids[peer.index], items[item][1], self.loop.time())
            for node_id, index in nearest[probe].items():
                if node_id != node.node_id:
                    by_replica.setdefault(index, []).append(item)
                    enough[item] = min(enough[item] + 1, STORE_QUORUM)
        accepted = [0] * len(items)

        async def store_at(replica: int, held: list[int]) -> None:
            answers = await self._store_at(peer, replica, [kids[i] for i in held], [items[i][1] for i in held])
            node.blacklist.settle(replica, answers is not None)
            for item, stored in zip(held, answers or []):
                accepted[item] += stored

        storing = {asyncio.ensure_future(store_at(replica, held)): replica for replica, held in by_replica.items()}
        pending, until, quorum = set(storing), None, False
        while pending and not quorum:
            timeout = None if until is None else max(until - self.loop.time(), 0.0)
            done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            quorum = all(count >= needed for count, needed in zip(accepted, enough))
            if until is None and all(accepted):
                until = self.loop.time() + node.blacklist.slow_after_s
        for task in pending:  # finishes on its own; if late, meanwhile other operations do not wait on its peer
            if not quorum:
                node.blacklist.register_slow(storing[task])
        return list(accepted)

    async def _store_at(self, peer: _Peer, replica: int, kids: list[DHTID], sizes: list[int]) -> list[bool] | None:
        """One store request: whether the replica accepted each record, or None if it did not answer."""
        request = self.wire.store_request(tuple(sizes), peer.client)
        kind = f"store:{self.kind[kids[0]]}"
        if not await self._wait(replica):
            self._unanswered(peer, request, 1.0, kind)
            return None
        self._charge(peer, replica, request, self.wire.store_response(len(kids)), 1.0, kind)
        self._met(peer, replica, self.table(replica))
        return [self._accept(replica, kid, self.peer_ids[peer.index], size, self.loop.time()) for kid, size in zip(kids, sizes)]

    def store_exact(self, index: int, items: list[tuple[str, int]]) -> list[int]:
        """A non-sampled peer's store: on each key's true nearest live peers (its lookup is not run), one request
        per replica."""
        client = bool(self.is_client[index])
        kids = [self._register(key) for key, _ in items]
        by_replica: dict[int, list[int]] = {}
        for item, kid in enumerate(kids):
            for replica in self.true_nearest(FastID(int(kid) ^ 1), self.config.num_replicas, None if client else index):
                by_replica.setdefault(replica, []).append(item)
        accepted = [0] * len(items)
        for replica, held in by_replica.items():
            if replica != index:
                sizes = tuple(items[i][1] for i in held)
                self._charge(None, replica, self.wire.store_request(sizes, client), self.wire.store_response(len(held)),
                             1.0, f"store:{self.kind[kids[held[0]]]}")
            for i in held:
                stored = self._accept(replica, kids[i], self.peer_ids[index], items[i][1], self.loop.time())
                accepted[i] += stored if replica != index else 0
        return accepted

    async def read_many(
        self, peer: _Peer, keys: list[str], quorum: int, wanted: dict[str, frozenset[str]] | None = None
    ) -> dict[str, dict[str, _Record]]:
        """`DHTPeer._read_many`: one lookup for all keys' neighbours, then `_ask` rounds with KeyRead's quorum
        rule (one replica first for a key read for `wanted` signers); the answer is the union of what the replicas
        that answered hold."""
        ids = {key: self._register(key) for key in keys}
        probes = {FastID(int(kid) ^ 1): key for key, kid in ids.items()}
        nearest = await self._lookup(peer, list(probes))
        wanted = wanted or {}
        reads = {
            probes[probe]: KeyRead(ids[probes[probe]], dict(found), quorum, wanted.get(probes[probe], frozenset()))
            for probe, found in nearest.items()
        }
        records: dict[str, dict[str, dict[str, _Record]]] = {key: {} for key in keys}
        first = {key: read.first_round(peer.rng) for key, read in reads.items()}
        await self._ask(peer, reads, first, records, last=False)
        second = {key: read.second_round() for key, read in reads.items()}
        await self._ask(peer, reads, second, records, last=True)
        union: dict[str, dict[str, _Record]] = {}
        for key, read in reads.items():
            merged: dict[str, _Record] = {}
            for held in records[key].values():
                merged.update(held)
            union[key] = merged
        return union

    async def _ask(
        self, peer: _Peer, reads: dict[str, KeyRead], asking: dict[str, list[DHTID]], records: dict, *, last: bool
    ) -> None:
        """`DHTPeer._ask` (no deadline): one find per replica for all its keys, our own copy read directly; a replica
        still silent `slow_after_s` after the first answer (after the round began, if none came) is left behind,
        in the last round only once its keys all have answers from others (its find finishes on its own, settles
        the blacklist then and its answer still counts)."""
        node = peer.node
        by_replica: dict[DHTID, list[str]] = {}
        for key, replica_ids in asking.items():
            for replica in replica_ids:
                by_replica.setdefault(replica, []).append(key)

        def answer(replica: DHTID, keys: list[str], found: dict) -> None:
            for key in keys:
                held = found[reads[key].key_id][0] or {}
                reads[key].answers[replica] = {signer: (b"", record.stored_at) for signer, record in held.items()}
                records[key][replica] = dict(held)

        if node.node_id in by_replica:
            keys = by_replica.pop(node.node_id)
            answer(node.node_id, keys, {reads[key].key_id: (self._value(peer.index, reads[key].key_id), {}) for key in keys})

        async def find(replica: DHTID, keys: list[str]) -> None:
            target, started = reads[keys[0]].replicas[replica], self.loop.time()
            found = await self.find(peer, target, [reads[key].key_id for key in keys], lookup=False)
            node.blacklist.settle(target, found is not None)
            if found is None:
                return
            node.blacklist.answered_in(self.loop.time() - started)
            answer(replica, keys, found)

        asked = {asyncio.ensure_future(find(replica, keys)): keys for replica, keys in by_replica.items()}
        pending = set(asked)
        round_began, first_answer = self.loop.time(), None
        while pending:
            wait = None
            if first_answer is not None or not last:
                hedge = (round_began if first_answer is None else first_answer) + node.blacklist.slow_after_s
                if self.loop.time() >= hedge:
                    pending = {task for task in pending if last and not all(reads[key].answers for key in asked[task])}
                    if not pending:
                        break
                else:
                    wait = hedge - self.loop.time()
            _, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if first_answer is None and any(read.answers for read in reads.values()):
                first_answer = self.loop.time()

    # ----- a node's schedule

    def window_of(self, round_index: int) -> int:
        return 1000 + round_index // self.config.rounds_per_window

    def _directory_estimate(self, peer: _Peer) -> float:
        return max(peer.estimate, len(self._publishers(peer)) + 1.0)

    def _census_due(self, peer: _Peer, round_index: int) -> bool:
        """`BeaconService.census_due`: every window while a census is one read, else every census_every_s (to the
        nearest window), the nodes' phases spread."""
        if round_index % self.config.rounds_per_window:
            return False
        small = 2 ** tier_for(peer.estimate, CENSUS_PER_KEY) <= BUCKETS_PER_WAVE
        every = 1 if small else max(round(self.config.census_every_s / self.config.window_s), self.rules.epoch_windows)
        return (self.window_of(round_index) + peer.index) % every == 0

    def _routing_ids(self, peer: _Peer) -> set[str]:
        return {self.peer_ids[i] for i in peer.node.protocol.routing_table.peer_id_to_uid}

    def _publishers(self, peer: _Peer) -> set[str]:
        return (self._routing_ids(peer) | set(peer.signers) | set(peer.listed)) - {self.peer_ids[peer.index]}

    async def publish(self, peer: _Peer, round_index: int, delay: float) -> None:
        """`Gossip.publish`: the batch and, until another peer holds it this window, the directory entry (or
        entries), stored concurrently; the beacon goes on its own thread once a window (`BeaconService`)."""
        await asyncio.sleep(delay)
        window, started = self.window_of(round_index), self.loop.time()
        signer = self.peer_ids[peer.index]
        peer.published_in = window
        beacon = None
        if self.config.census and round_index % self.config.rounds_per_window == 0:
            beacon = asyncio.ensure_future(self._beacon(peer, window))
        if self.config.gossip:
            self._begin("publish")
            items = [(batch_key("model", window, self.shard[peer.index]), self.config.frame_bytes)]
            epoch = self.rules.epoch_start(window)
            if peer.stored_window != epoch:
                keys = directory_keys(self.config.layout, "model", epoch, signer, self._directory_estimate(peer))
                items += [(key, self.config.presence_bytes) for key in keys]
            replicas, *stored = await self.store(peer, items)
            if any(stored):
                peer.stored_window = epoch
            self.replicas_accepted.append(replicas)
            self.publish_s.append(self.loop.time() - started)
        if beacon is not None:
            await beacon

    def _offsets(self, index: int) -> tuple[int, int]:
        """A node's windows of each epoch for its directory read and its next beacon (`Directory.read_offset`,
        `BeaconService.offset`, drawn at random by a node; here spread by index)."""
        epoch = self.rules.epoch_windows
        return (1 + index % (epoch - 1) if epoch > 1 else 0), index % epoch

    async def _beacon(self, peer: _Peer, window: int) -> None:
        self._begin("beacon")
        placed = census_keys(
            self.config.layout, "model", window, self.peer_ids[peer.index], peer.estimate, peer.beacons, self.window_rules,
            self._offsets(peer.index)[1],
        )
        if placed:
            stored = await self.store(peer, [(key, self.config.beacon_bytes) for key, _ in placed])
            peer.beacons = stood(peer.beacons, window, placed, stored, self.window_rules)

    def _look_ahead(self, round_index: int) -> None:
        """Every sampled peer's look-ahead, when the next round starts a window."""
        if self.config.look_ahead and (round_index + 1) % self.config.rounds_per_window == 0:
            self._run(_gather(*[self.look_ahead(peer, round_index + 1) for peer in self.peers.values()]))
            self._run(_left_behind())

    async def look_ahead(self, peer: _Peer, round_index: int) -> None:
        """`Gossip.look_ahead` in the window before `round_index`'s, while the peer published last window: one lookup
        of that window's batch key, its directory entry's keys, the directory buckets and the first wave its first
        collect will read."""
        await asyncio.sleep(peer.rng.uniform(0, self.config.start_spread_s))
        window = self.window_of(round_index)
        if not self.config.gossip or peer.published_in is None or peer.published_in < window - 2:
            return
        self._begin("look_ahead")
        keys = [batch_key("model", window, self.shard[peer.index])]
        epoch = self.rules.epoch_start(window)
        if peer.stored_window != epoch:
            keys += directory_keys(self.config.layout, "model", epoch, self.peer_ids[peer.index], self._directory_estimate(peer))
        needed = math.ceil(self.config.collect_rollouts / self.config.per_peer_cap)
        if self._directory_due(peer, window, needed):
            keys += self._directory_keys_to_read(peer, window, needed, ahead=True)
        view = self._gossip_view(peer)
        wave = Gossip._next_wave(view, Gossip._reading_plan(view, window, newest_first=False), needed)
        peer.ahead_wave = (window, wave)
        keys += [key for key, _, _ in wave]
        await self._lookup(peer, list(dict.fromkeys(FastID(int(self._register(key)) ^ 1) for key in keys)))

    def publish_exact(self, index: int, round_index: int, stored_window: dict[int, int], steady: bool = False) -> None:
        """A peer's publish and beacon with every store on its true replicas. `steady`: the warm-up's, as a
        long-running node's (its beacon of the epoch before stands under this epoch's keys; the next epoch's waits for
        its window of the epoch)."""
        window, signer = self.window_of(round_index), self.peer_ids[index]
        estimate = float(self.estimates[index])
        if self.config.gossip:
            items = [(batch_key("model", window, self.shard[index]), self.config.frame_bytes)]
            epoch = self.rules.epoch_start(window)
            if stored_window.get(index) != epoch:
                keys = directory_keys(self.config.layout, "model", epoch, signer, estimate)
                items += [(key, self.config.presence_bytes) for key in keys]
            if sum(self.store_exact(index, items)[1:]):
                stored_window[index] = epoch
        if self.config.census and round_index % self.config.rounds_per_window == 0:
            standing = self._exact_beacons.get(index, {})
            offset = self._offsets(index)[1]
            placed = census_keys(self.config.layout, "model", window, signer, estimate, standing, self.window_rules, offset)
            if steady and window - self.rules.epoch_start(window) < offset:
                placed = [place for place in placed if place[1][0] == self.rules.epoch_start(window)]
            if placed:
                stored = self.store_exact(index, [(key, self.config.beacon_bytes) for key, _ in placed])
                self._exact_beacons[index] = stood(standing, window, placed, stored, self.window_rules)

    async def collect(self, peer: _Peer, round_index: int, delay: float) -> None:
        """`Gossip._collect`: the directory when due, then waves of shard keys from `_reading_plan`/`_next_wave`."""
        await asyncio.sleep(delay)
        self._begin("collect")
        window, started = self.window_of(round_index), self.loop.time()
        config = self.config
        wanted = config.collect_rollouts
        needed = math.ceil(wanted / config.per_peer_cap)
        if self._directory_due(peer, window, needed):
            await self._read_directory(peer, window, needed)
        gossip_view = self._gossip_view(peer)
        plan = Gossip._reading_plan(gossip_view, window, self._newest_first(peer))
        ahead = peer.ahead_wave if peer.ahead_wave is not None and peer.ahead_wave[0] == window else None
        if ahead is not None:
            peer.ahead_wave = None
            plan = _ahead_first(ahead[1], plan, peer.consumed, window)
        taken: Counter[str] = Counter()
        got = 0
        own = self.peer_ids[peer.index]
        while plan and got < wanted:
            peers_needed = math.ceil((wanted - got) / config.per_peer_cap)
            wave = Gossip._next_wave(gossip_view, plan, peers_needed)
            wanted_signers = {key: signers for key, _, signers in wave if signers}
            found = await self.read_many(peer, [key for key, _, _ in wave], BATCH_QUORUM, wanted_signers)
            for key, slot, _ in wave:
                if key in found:
                    peer.shard_read[slot.shard] = max(peer.shard_read.get(slot.shard, slot.window), slot.window)
                entries = list(found.get(key, {}).items())
                peer.rng.shuffle(entries)
                for signer, _ in entries:
                    self.read_signers[signer, window - slot.window] += peer.weight
                for signer, _ in entries:
                    if got >= wanted:
                        break
                    if signer == own or f"{signer}/{slot.window}" in peer.consumed or taken[signer] >= config.per_peer_cap:
                        continue
                    peer.consumed.add(f"{signer}/{slot.window}")
                    peer.signers[signer] = max(peer.signers.get(signer, 0), slot.window)
                    room = min(config.per_peer_cap - taken[signer], wanted - got, ROLLOUTS_PER_BATCH)
                    taken[signer] += room
                    got += room
        self.wanted += wanted
        self.collected += got
        self.collect_s.append(self.loop.time() - started)

    @staticmethod
    def _newest_first(peer: _Peer) -> bool:
        """Whether the peer's collect reads the current window first, from its moment in the window."""
        return peer.collect_phase >= NEWEST_FIRST_AFTER

    def _gossip_view(self, peer: _Peer) -> SimpleNamespace:
        """What Gossip._reading_plan and _next_wave read from `self`, for this peer."""
        return SimpleNamespace(
            _directory=SimpleNamespace(
                publishers=lambda: self._publishers(peer),
                listed=lambda: {signer: w for signer, w in peer.listed.items() if signer != self.peer_ids[peer.index]},
                met_since_read=lambda: self._routing_ids(peer) - peer.covered - set(peer.listed) - {self.peer_ids[peer.index]},
            ),
            rules=self.rules,
            config=self.gossip_config, _random=peer.rng, _shard_read=peer.shard_read, _taken=peer.consumed,
        )

    def _directory_due(self, peer: _Peer, window: int, needed: int) -> bool:
        """`Directory.read_due`: once an epoch, from its read offset on; every round while it knows too few."""
        epoch = self.rules.epoch_start(window)
        due = epoch not in peer.read_windows and window - epoch >= self._offsets(peer.index)[0]
        return due or len(self._publishers(peer)) < DIRECTORY_SLACK * needed

    def _directory_keys_to_read(self, peer: _Peer, window: int, needed: int, ahead: bool = False) -> list[str]:
        """`Directory.read`'s keys: random buckets (those `keys_ahead` drew for the window's first read, once) of
        this window's epoch and of the one before if not read yet. `ahead`: draw them for the window's first read."""
        epoch, length = self.rules.epoch_start(window), self.rules.epoch_windows
        windows = [epoch] + [epoch - length] * (epoch - length not in peer.read_windows)
        if self.config.layout == "v1":
            return [f"swarmnode/v1/model/{w}/directory" for w in windows]
        estimate = self._directory_estimate(peer)
        tier = tier_for(estimate, DIRECTORY_PER_KEY)
        per_key = max(estimate / 2**tier, 1.0)
        drawn = peer.ahead_buckets
        if drawn is not None and drawn[0] <= window and not ahead:
            peer.ahead_buckets = None
        if drawn is not None and drawn[:2] == (window, tier) and not ahead:
            buckets = drawn[2]
        else:
            buckets = peer.rng.sample(range(2**tier), min(math.ceil(DIRECTORY_SLACK * needed / per_key), 2**tier))
        if ahead:
            peer.ahead_buckets = (window, tier, buckets)
        return [directory_key("model", w, tier, bucket) for w in windows for bucket in buckets]

    async def _read_directory(self, peer: _Peer, window: int, needed: int) -> None:
        keys = self._directory_keys_to_read(peer, window, needed)
        self._take_directory(peer, window, keys, await self.read_many(peer, keys, self.config.num_replicas))

    def _take_directory(self, peer: _Peer, window: int, keys: list[str], found: dict[str, dict[str, _Record]]) -> None:
        """What `Directory.read` keeps of the entries found under `keys`: the signers listed, by window."""
        peer.read_windows.update(int(key.split("/")[3]) for key in keys)
        peer.covered |= self._routing_ids(peer)
        for key in keys:
            w = int(key.split("/")[3])
            for signer in list(found.get(key, {}))[:MAX_DIRECTORY_ENTRIES]:
                if signer != self.peer_ids[peer.index]:
                    peer.listed[signer] = max(peer.listed.get(signer, 0), w)
        oldest, previous_epoch = window - self.config.max_age_windows, self.rules.epoch_start(window) - self.rules.epoch_windows
        peer.read_windows = {w for w in peer.read_windows if w >= previous_epoch}
        peer.listed = {s: w for s, w in peer.listed.items() if w >= previous_epoch}
        peer.signers = {s: w for s, w in peer.signers.items() if w >= oldest}

    async def take_census(self, peer: _Peer, round_index: int, delay: float) -> None:
        """The node's own census (`BeaconService.sampled_census`): random buckets in waves until CENSUS_SAMPLE seen."""
        await asyncio.sleep(delay)
        self._begin("census")
        window = self.rules.epoch_start(self.window_of(round_index))
        estimate = peer.estimate
        if self.config.layout == "v1":
            total = V1_CENSUS_BUCKETS
            key_of = lambda bucket: f"swarmnode/v1/model/{window}/census/{bucket}"  # noqa: E731
        else:
            tier = tier_for(estimate, CENSUS_PER_KEY)
            total = 2**tier
            key_of = lambda bucket: census_key("model", window, tier, bucket)  # noqa: E731
        buckets = list(range(total))
        peer.rng.shuffle(buckets)
        size = min(max(math.ceil(CENSUS_SAMPLE * total / estimate), 1), total)
        seen = read = 0
        while buckets and seen < CENSUS_SAMPLE:
            wave, buckets = buckets[:size], buckets[size:]
            size = BUCKETS_PER_WAVE
            keys = [key_of(bucket) for bucket in wave]
            found = await self.read_many(peer, keys, self.config.num_replicas)
            seen += sum(min(len(entries), MAX_BEACONS_PER_BUCKET) for entries in found.values())
            read += len(wave)
        self.census_seen.append(seen)
        self.census_keys.append(read)

    def play_round(self, round_index: int, exact: bool = False) -> None:
        """Every peer publishes (sampled ones through lookups, at random moments of the start spread), then
        every sampled peer collects; its census once a window, after its beacon; then, before a new window, every
        sampled peer looks its keys up ahead. `exact`: a warm-up that only
        fills the keys (every store on its true replicas, no lookups, no reads; sampled peers take the
        directory of this window as read, its entries listed, so that their look-ahead draws a first wave as after
        a real read). Requests left running in the background end before the round does."""
        self._run(asyncio.sleep(max(self._next_round - self.loop.time(), 0.0)))
        self._next_round = self.loop.time() + self.config.window_s / self.config.rounds_per_window
        spread = self.config.start_spread_s
        start = self.loop.time()
        stored_window = self._exact_stored_window
        if exact:
            for index in [*range(self.servers), *range(self.total - self.config.nat_signers, self.total)]:
                self.publish_exact(index, round_index, stored_window, steady=True)
            window, needed = self.window_of(round_index), math.ceil(self.config.collect_rollouts / self.config.per_peer_cap)
            for peer in self.peers.values():
                peer.stored_window = stored_window.get(peer.index)
                peer.beacons = self._exact_beacons.get(peer.index, {})
                keys = self._directory_keys_to_read(peer, window, needed)
                held = [(key, (self.storage.get(self._register(key)) or {}).values()) for key in keys]
                self._take_directory(peer, window, keys, {key: {s: r for got in at for s, r in got.items()} for key, at in held})
                if self.rules.epoch_windows > 1 and window == self.rules.epoch_start(window):
                    peer.read_windows.discard(window)  # steady: an epoch's directory is read in its second window
                peer.published_in = window
            self._look_ahead(round_index)
            return
        others = [i for i in range(self.servers) if i not in self.peers]
        if self.config.round_spread > 0:
            spread = self.config.round_spread * self.config.window_s / self.config.rounds_per_window
        for index in others:
            self.loop.call_at(start + self.rng.uniform(0, spread), self.publish_exact, index, round_index, stored_window)
        if self.config.round_spread > 0:
            self._run(_gather(*[self._round(peer, round_index, self.rng.uniform(0, spread)) for peer in self.peers.values()]))
        else:
            tasks = [self.publish(peer, round_index, self.rng.uniform(0, spread)) for peer in self.peers.values()]
            self._run(_gather(*tasks, asyncio.sleep(spread + self.config.rtt_s)))
            tasks = []
            for peer in self.peers.values():
                if self.config.gossip:
                    tasks.append(self.collect(peer, round_index, self.rng.uniform(0, spread)))
                if self.config.census and self._census_due(peer, round_index):
                    tasks.append(self.take_census(peer, round_index, self.rng.uniform(0, spread)))
            self._run(_gather(*tasks))
        self._look_ahead(round_index)
        self._run(_left_behind())
        if self.config.gossip:
            self._count_reads()
        window = self.window_of(round_index)
        oldest = {"batch": window - self.config.max_age_windows - 1}  # directory and census keys: read two epochs
        epoch_oldest = self.rules.epoch_start(window) - self.rules.epoch_windows - 1
        for kid in [kid for kid in self.storage if self._key_windows[kid] < oldest.get(self.kind[kid], epoch_oldest)]:
            for replica in self.storage.pop(kid):
                self._held_bytes.pop((kid, replica), None)

    async def _round(self, peer: _Peer, round_index: int, delay: float) -> None:
        """A node's round at its moment of this one: its publish, then its collect; its census when due."""
        rounds = self.config.rounds_per_window
        peer.collect_phase = (round_index % rounds + delay / (self.config.window_s / rounds)) / rounds
        await self.publish(peer, round_index, delay)
        if self.config.gossip:
            await self.collect(peer, round_index, 0.0)
        if self.config.census and self._census_due(peer, round_index):
            await self.take_census(peer, round_index, 0.0)

    def _count_reads(self) -> None:
        """Whose batches some collector read: counted when every peer collects. A batch is read in its own round
        or, by collects that read the previous window first, in the next; in a steady swarm the previous window's
        batches read this round stand for what this round's get next round. With a sample, a signer's own count
        is mostly 0 or N / sample, so a group of signers (all; those behind NAT, whom only the directory names)
        gets the chance that at least one of N collectors read one of them, from the mean number of collectors
        that read one (Poisson)."""
        exact = all(peer.weight == 1.0 for peer in self.peers.values())
        nat = range(self.total - self.config.nat_signers, self.total)
        publishers = [*range(self.servers), *nat]

        def chances(signers: Iterable[int], *lags: int) -> list[float]:
            readers = [sum(self.read_signers.get((self.peer_ids[i], lag), 0.0) for lag in lags) for i in signers]
            if exact:
                return [float(count >= 1) for count in readers]
            return [1.0 - math.exp(-statistics.fmean(readers))] if readers else []

        self.signers_read.append(statistics.fmean(chances(publishers, 0, 1)))
        self.nat_read += list(zip(chances(nat, 0), chances(nat, 0, 1)))
        self.read_signers.clear()

    def measure_joins(self, count: int = 8) -> tuple[float, float]:
        """Requests and bytes that one join (a ping, then hivemind's lookup of the joiner's own id) costs the
        bootstrap, over a few sampled peers joining afresh; counters are reset afterwards."""
        joiners = [peer for peer in self.peers.values() if not peer.client and peer.index != BOOTSTRAP][:count]
        requests = transferred = 0.0
        for peer in joiners:
            kept = peer.node
            table = self._routing_table(peer.index)
            table.add_or_update_node(self.ids[BOOTSTRAP], BOOTSTRAP)
            peer.node = _SimNode(self, peer, table)
            before = self.load[BOOTSTRAP].copy()
            self._run(self._join(peer))
            delta = (self.load[BOOTSTRAP] - before) / peer.weight
            requests, transferred = requests + delta[0], transferred + delta[1] + delta[2]
            peer.node = kept
        self.reset_counters()
        return (requests / len(joiners), transferred / len(joiners)) if joiners else (0.0, 0.0)

    def _could_serve(self, group: str) -> np.ndarray:
        """Peers a request of this group could have reached: any server for lookups, the peers holding keys of
        that kind for reads."""
        if group == "route":
            return ~self.is_client
        kind = group.split(":")[1]
        holders = np.zeros(self.total, dtype=bool)
        for kid, held in self.storage.items():
            if self.kind[kid] == kind:
                holders[list(held)] = True
        return holders

    def result(self, join: tuple[float, float], wall_s: float) -> ModelResult:
        config = self.config
        rounds, windows = config.rounds, config.rounds / config.rounds_per_window
        servers = np.arange(self.servers)
        sampled = np.array(sorted(p.index for p in self.peers.values() if not p.client))
        own_bytes = self.own[:, 2] + self.own[:, 3]
        estimated_own = np.full(self.total, float(np.median(own_bytes[sampled])))
        estimated_own[sampled] = own_bytes[sampled]
        served = self.load[:, 0].copy()
        received = self.load[:, 1] + self.maint[:, 2]  # bytes in: requests served, answers to maintenance pings
        moved = received + self.load[:, 2] + self.maint[:, 1]
        for group, extra in self.extra.items():  # peers few sampled requests reached get the mean of their group
            ordinary = (self.hits[group] < MIN_HITS) & self._could_serve(group)
            if ordinary.any():
                for total, part in ((served, extra[:, 0]), (received, extra[:, 1]), (moved, extra[:, 1] + extra[:, 2])):
                    total[ordinary] += part[ordinary].mean() - part[ordinary]
        node_bytes = (moved + estimated_own)[servers]
        sent = self.own[:, 0] + self.maint[:, 0]
        estimated_in = np.full(self.total, float(np.median(self.own[sampled, 3])))
        estimated_in[sampled] = self.own[sampled, 3]
        node_in = received + estimated_in
        busiest = int(np.argmax(node_bytes))
        median_kb_round = float(np.median(node_bytes[sampled])) / rounds / 1000
        busiest_kb_window = float(node_bytes[busiest]) / windows / 1000
        kinds = self.served_kind.get(busiest, Counter())
        lookups_rpcs = [rpcs for rpcs, _, _ in self.lookups]
        lookups_rounds = [seconds / config.rtt_s for _, seconds, _ in self.lookups]
        in_round = statistics.fmean(chance for chance, _ in self.nat_read) if self.nat_read else 0.0
        at_all = statistics.fmean(chance for _, chance in self.nat_read) if self.nat_read else 0.0
        return ModelResult(
            peers=config.peers,
            layout=config.layout,
            sampled=len(sampled),
            node_kb_round_median=median_kb_round,
            node_kb_round_mean=float(node_bytes.mean()) / rounds / 1000,
            node_kb_in_round_median=float(np.median(node_in[sampled])) / rounds / 1000,
            kb_by_kind={kind: count / config.peers / rounds / 1000 for kind, count in self.kind_bytes.most_common()},
            find_kb_by_key={kind: count / config.peers / rounds / 1000 for kind, count in self.find_bytes.most_common()},
            busiest_kb_window=busiest_kb_window,
            busiest_over_median=busiest_kb_window / (median_kb_round * config.rounds_per_window) if median_kb_round else 0.0,
            busiest_is=", ".join(f"{kind} {count / windows:.0f}" for kind, count in kinds.most_common(3)),
            requests_sent_round_median=float(np.median(sent[sampled])) / rounds,
            requests_sent_round_mean=float(sent[sampled].mean()) / rounds,
            requests_served_round_median=float(np.median(served[sampled])) / rounds,
            busiest_served_window=float(served[servers].max()) / windows,
            bytes_in_round_mean=float(node_in[servers].mean()) / rounds,
            requests_per_operation={
                name: count / self.operation_runs[name.split()[0]] if self.operation_runs[name.split()[0]] else 0.0
                for name, count in sorted(self.operation_requests.items())
            },
            operations_per_node_round={
                name: count / len(self.peers) / rounds for name, count in sorted(self.operation_runs.items())
            },
            lookup_finds_per_key=Quantiles.of(lookups_rpcs),
            lookup_rounds=Quantiles.of(lookups_rounds),
            lookup_recall=statistics.fmean(recall for _, _, recall in self.lookups) if self.lookups else 0.0,
            publish_rounds=Quantiles.of([seconds / config.rtt_s for seconds in self.publish_s]),
            collect_rounds=Quantiles.of([seconds / config.rtt_s for seconds in self.collect_s]),
            publish_s=Quantiles.of(self.publish_s),
            collect_s=Quantiles.of(self.collect_s),
            replicas_reached=statistics.fmean(self.replicas_accepted) if self.replicas_accepted else 0.0,
            delivery=self.collected / self.wanted if self.wanted else 0.0,
            signers_read=statistics.fmean(self.signers_read) if self.signers_read else 0.0,
            nat_rounds_to_first_read=in_round + (1.0 - in_round) * (1.0 + 1.0 / at_all) if at_all > 0 else None,
            census_seen_mean=statistics.fmean(self.census_seen) if self.census_seen else 0.0,
            census_keys_read_mean=statistics.fmean(self.census_keys) if self.census_keys else 0.0,
            refusals={kind: count / windows for kind, count in sorted(self.refusals.items())},
            timeouts_per_node_round=float(self.own[sampled, 4].mean()) / rounds,
            bootstrap_requests_per_join=join[0],
            bootstrap_bytes_per_join=join[1],
            joins_per_s=config.churn_per_min * config.peers / 60.0,
            bootstrap_joins_per_s_capacity=max(
                config.bootstrap_kbps * 125.0 - median_kb_round * 1000 * config.rounds_per_window / config.window_s, 0.0
            ) / join[1] if join[1] else 0.0,
            wall_s=wall_s,
        )


async def _gather(*coroutines: Any) -> list:
    return await asyncio.gather(*coroutines)


async def _left_behind() -> None:
    """Wait for the requests operations left behind (each ends within the RPC timeout)."""
    while pending := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(pending)


def run_model(config: ModelConfig) -> ModelResult:
    """Build the swarm, measure a join, play the warm-up rounds (uncounted) and the measured ones."""
    started = time.monotonic()
    swarm = SwarmModel(config)
    join = swarm.measure_joins()
    for round_index in range(config.warmup_rounds):
        swarm.play_round(round_index, exact=config.sample < config.peers)
    swarm.reset_counters()
    for round_index in range(config.warmup_rounds, config.warmup_rounds + config.rounds):
        swarm.play_round(round_index)
    return swarm.result(join, time.monotonic() - started)
