"""Hostile DHT servers that stand next to a key, for benchmarks/bench_dht_attacks.py and tests/test_dht_attacks.py.

A peer's DHT id is derived from its peer id (`net/routing.py`), so standing next to a key takes grinding: make
identities until one's id is nearer the key than every honest peer's (`grind`). Such a server is among the key's
nearest peers: stores of the key are sent to it and readers ask it. For its target keys it acknowledges every
store and keeps nothing, and answers every find with a dictionary of its choosing (`Answer`: empty, or valid
beacons of Sybils it signed, `SybilBeacons`) that it claims expires far in the future; every other key it serves
as an honest peer does, so what is measured is the lie at the target alone. Where `attacker_peer.py` offers bad
records to honest storage, this peer lies about what the DHT holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hivemind.dht.node import DHTNode
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.dht.storage import DictionaryDHTValue
from hivemind.p2p import P2P, P2PContext, PeerID
from hivemind.proto import dht_pb2
from hivemind.utils import MSGPackSerializer, get_dht_time
from hivemind.utils.multiaddr import Multiaddr

from swarmnode.net.loop import LoopThread
from swarmnode.net.routing import node_id_of
from swarmnode.wire.address import Reachability
from swarmnode.wire.beacon import BEACON, Beacon
from swarmnode.wire.identity import Identity, save_identity
from swarmnode.wire.keys import bucket_of
from swarmnode.wire.rules import SwarmRules

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 10.0
FAR_FUTURE_S = 365 * 86400.0  # what a lie claims of its answer's expiration: newer than anything honest
MAX_GRIND_TRIES = 1_000_000  # a bound on grinding: ~20 tries per attacker against 20 honest peers on average
SYBILS_PER_BUCKET = 64  # what an honest census key holds at most (net/storage.MAX_BEACONS_PER_BUCKET)

Answer = Callable[[], DictionaryDHTValue]  # what a hostile server says a target key holds, asked now

# hivemind lists a servicer's handlers on first use, in place and without a lock: peers started on several threads
# at once may each see a list another is still filling (and register half their handlers). Listed here, once.
DHTProtocol._collect_rpc_handlers()


def key_id(key: str) -> DHTID:
    """Where hivemind stores `key` (SHA-1 of its msgpack)."""
    return DHTID.generate(source=key)


def grind(key: str, honest: Sequence[DHTID], count: int) -> list[Identity]:
    """`count` fresh identities whose DHT ids (derived, as honest peers insist) are nearer `key` than every id in
    `honest`: the key's nearest peers, whatever honest peer joins or leaves."""
    target = key_id(key)
    bound = min(node.xor_distance(target) for node in honest)
    found: list[Identity] = []
    for _ in range(MAX_GRIND_TRIES):
        identity = Identity.generate()
        if node_id_of(PeerID.from_base58(identity.peer_id)).xor_distance(target) < bound:
            found.append(identity)
            if len(found) == count:
                return found
    raise RuntimeError(f"no identity next to {key!r} in {MAX_GRIND_TRIES} tries")


def empty() -> DictionaryDHTValue:
    """The key holds nothing."""
    return DictionaryDHTValue()


class SybilBeacons:
    """The key holds valid beacons of `count` identities of `bucket` of `tier`, all ours, signed for the window asked
    in (so that readers keep them as live): a census replaced by Sybils, as large as an honest key may be. (Before
    protocol v2 a census bucket was shard(peer) mod 8: the buckets of tier 3.)"""

    def __init__(self, rules: SwarmRules, bucket: int, count: int = SYBILS_PER_BUCKET, *, tier: int) -> None:
        self.rules = rules
        self.identities: list[Identity] = []
        while len(self.identities) < count:  # one identity in 2^tier lands in the bucket
            identity = Identity.generate()
            if bucket_of(identity.peer_id, tier) == bucket:
                self.identities.append(identity)
        self._signed: tuple[int, DictionaryDHTValue] | None = None

    @property
    def peer_ids(self) -> set[str]:
        return {identity.peer_id for identity in self.identities}

    def __call__(self) -> DictionaryDHTValue:
        now = get_dht_time()
        window = self.rules.window_of(now)
        if self._signed is None or self._signed[0] != window:
            beacons = DictionaryDHTValue()
            for identity in self.identities:
                beacon = Beacon(self.rules.swarm_id, window, now, "swarmnode/0.1.0", "sybil", round=1,
                                reachability=Reachability.PUBLIC, phase="train")
                frame = MSGPackSerializer.dumps(BEACON.seal(beacon, identity))
                beacons.store(identity.peer_id, frame, BEACON.expiration(beacon, self.rules))
            self._signed = (window, beacons)
        return self._signed[1]


class HostileProtocol(DHTProtocol):
    """hivemind's DHT protocol, lying about the keys in `answers` (set on the instance); honest about the rest."""

    answers: dict[DHTID, Answer]
    dropped: int  # stores of target keys acknowledged and thrown away
    lies: int  # finds of target keys answered with our dictionary

    @classmethod
    def _get_handle_name(cls, namespace: str | None, method_name: str) -> str:
        """Peers call the handlers by DHTProtocol's names."""
        return DHTProtocol._get_handle_name(namespace, method_name)

    async def rpc_store(self, request: dht_pb2.StoreRequest, context: P2PContext) -> dht_pb2.StoreResponse:
        targeted = [DHTID.from_bytes(key) in self.answers for key in request.keys]
        honest = dht_pb2.StoreRequest(peer=request.peer)
        for name in ("keys", "subkeys", "values", "expiration_time", "in_cache"):
            getattr(honest, name).extend(item for item, hit in zip(getattr(request, name), targeted) if not hit)
        stored = iter((await super().rpc_store(honest, context)).store_ok)
        self.dropped += sum(targeted)
        return dht_pb2.StoreResponse(store_ok=[hit or next(stored) for hit in targeted], peer=self.node_info)

    async def rpc_find(self, request: dht_pb2.FindRequest, context: P2PContext) -> dht_pb2.FindResponse:
        response = await super().rpc_find(request, context)
        for key, result in zip(request.keys, response.results):
            answer = self.answers.get(DHTID.from_bytes(key))
            if answer is not None:
                result.type = dht_pb2.FOUND_DICTIONARY
                result.value = self.serializer.dumps(answer())
                result.expiration_time = get_dht_time() + FAR_FUTURE_S
                self.lies += 1
        return response


class HostilePeer:
    """One hostile DHT server with its own p2pd on 127.0.0.1, on its own loop thread (as `AttackerPeer`)."""

    def __init__(self, identity: Identity, identity_path: Path, initial_peers: Sequence[str],
                 answers: Mapping[str, Answer]) -> None:
        save_identity(identity, identity_path, overwrite=True)
        self.peer_id = identity.peer_id
        self._loop: LoopThread | None = LoopThread(name=f"hostile-{self.peer_id[-6:]}")
        self._p2p: P2P | None = None
        self._node: DHTNode | None = None
        try:
            self._loop.run(self._start(identity_path, list(initial_peers), answers), STARTUP_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    async def _start(self, identity_path: Path, initial_peers: list[str], answers: Mapping[str, Answer]) -> None:
        self._p2p = await P2P.create(
            initial_peers=initial_peers, host_maddrs=["/ip4/127.0.0.1/tcp/0"], identity_path=str(identity_path),
            check_if_identity_free=False,
        )
        self._node = await DHTNode.create(
            p2p=self._p2p, node_id=node_id_of(self._p2p.peer_id), cache_locally=False, cache_nearest=0,
            cache_on_store=False,
        )
        # hivemind registers the protocol's handlers as it creates it: re-register them as the hostile class's
        protocol = self._node.protocol
        await protocol.remove_p2p_handlers(self._p2p)
        protocol.__class__ = HostileProtocol
        protocol.answers = {key_id(key): answer for key, answer in answers.items()}
        protocol.dropped = protocol.lies = 0
        await protocol.add_p2p_handlers(self._p2p)
        # join as an honest peer does, then greet everyone we learnt of, so that every routing table holds us
        for maddr in initial_peers:
            await protocol.call_ping(PeerID.from_base58(Multiaddr(maddr)["p2p"]))
        await self._node.find_nearest_nodes([self._node.node_id])
        await asyncio.gather(*(protocol.call_ping(peer) for peer in list(protocol.routing_table.uid_to_peer_id.values())))

    @property
    def daemon_pid(self) -> int | None:
        return self._p2p._child.pid if self._p2p is not None and self._p2p._child is not None else None

    def counts(self) -> dict[str, int]:
        protocol = self._node.protocol if self._node is not None else None
        return {"dropped": getattr(protocol, "dropped", 0), "lies": getattr(protocol, "lies", 0)}

    def close(self) -> None:
        """Stop the node and its p2pd (killed if it does not exit in time); idempotent."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        node, p2p, self._node, self._p2p = self._node, self._p2p, None, None

        async def shutdown() -> None:
            if node is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.shutdown(), SHUTDOWN_TIMEOUT_S)
            if p2p is not None:
                try:
                    await asyncio.wait_for(p2p.shutdown(), SHUTDOWN_TIMEOUT_S)
                except Exception:
                    if p2p._child is not None and p2p._child.returncode is None:
                        p2p._child.kill()

        with contextlib.suppress(Exception):
            loop.run(shutdown(), 3 * SHUTDOWN_TIMEOUT_S)
        loop.stop()
