"""The p2pd daemon of a DHT peer: its sockets named so that a dead owner's leftovers can be found and removed,
a session of its own (a terminal's Ctrl-C must not kill it before the node has checkpointed), every RPC
through it metered (`swarmnode.net.traffic`) and held to the volunteer's bandwidth cap, if any
(`swarmnode.net.bandwidth`), every peer's store requests held to a rate (`swarmnode.net.store_rate`), and
finds' neighbours named by peer id alone where both ends are swarmnode's (`routing.ask_for_bare_neighbours`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivemind.p2p import P2P, PeerID
from hivemind.proto import dht_pb2

from swarmnode.net.bandwidth import BandwidthCap, OverCap
from swarmnode.net.routing import ask_for_bare_neighbours, asks_for_bare_neighbours, derive_node_ids, leave_out_node_ids
from swarmnode.net.store_rate import StoreRate
from swarmnode.net.traffic import TrafficMeter

# p2pd's unix sockets live here (hivemind hard-codes /tmp; a long TMPDIR would overflow sun_path).
SOCKET_DIR = Path("/tmp")
SOCKET_TAG = "hivemind-swarmnode-"
_SOCKET_NAME = re.compile(rf"^{re.escape(SOCKET_TAG)}(\d+)-[0-9a-f]+-p2p(?:d|client)-[A-Za-z0-9_-]+\.sock$")
_DAEMON_LISTEN = re.compile(rf"^-listen=/unix{re.escape(str(SOCKET_DIR))}/{re.escape(SOCKET_TAG)}(\d+)-")

class SwarmP2P(P2P):
    """hivemind's P2P with its sockets named by a prefix we choose (owner pid + a per-peer token, so that
    orphans and a failed start's leftovers can be found), with metered RPCs, and store requests beyond their
    sender's rate answered "not stored" before any record in them is looked at. In a closed swarm, requests
    from peers its allowlist does not name are refused (libp2p authenticated their peer id). Under a bandwidth
    cap our requests wait for it (or are not sent, counted per peer in `unasked`: the peer did not fail to
    answer), and requests we are asked to serve are refused while it is in deficit."""

    traffic: TrafficMeter
    store_rate: StoreRate
    bandwidth: BandwidthCap | None
    unasked: Counter[PeerID]
    admits: Callable[[str], bool]
    refused: Counter[str]

    @classmethod
    async def create(
        cls, *args: Any, socket_prefix: str, traffic: TrafficMeter, store_rate: StoreRate,
        bandwidth: BandwidthCap | None, unasked: Counter[PeerID], admits: Callable[[str], bool], refused: Counter[str],
        **kwargs: Any,
    ) -> SwarmP2P:
        # hivemind reads the prefix from a class attribute; a class per peer keeps concurrent starts apart.
        named = type(
            cls.__name__, (cls,),
            {
                "_UNIX_SOCKET_PREFIX": f"/unix{socket_prefix}", "traffic": traffic, "store_rate": store_rate,
                "bandwidth": bandwidth, "unasked": unasked, "admits": staticmethod(admits), "refused": refused,
            },
        )
        # p2pd gets a session of its own: a terminal's Ctrl-C reaches the whole foreground process group,
        # and p2pd must outlive the node's first SIGINT so the node can still publish, checkpoint and
        # close it cleanly (it still exits by itself when its owner dies: its control socket closes).
        spawn = asyncio.subprocess.create_subprocess_exec
        asyncio.subprocess.create_subprocess_exec = functools.partial(spawn, start_new_session=True)
        try:
            return await super(SwarmP2P, named).create(*args, **kwargs)
        finally:
            asyncio.subprocess.create_subprocess_exec = spawn

    async def _call_unary_protobuf_handler(self, peer_id, handle_name, input, output_protobuf_type):  # noqa: A002
        finding = handle_name.endswith(".rpc_find")
        if finding:
            input = ask_for_bare_neighbours(input)  # noqa: A001
        size = input.ByteSize()
        if self.bandwidth is not None and not await self.bandwidth.send(size):
            self.unasked[peer_id] += 1
            raise OverCap("not sent: this node is over its network.max_kbps")
        self.traffic.add(sent=1, bytes_out=size)
        response = await super()._call_unary_protobuf_handler(
            peer_id, handle_name, input, output_protobuf_type
        )
        self.unasked.pop(peer_id, None)
        self._spent(bytes_in=response.ByteSize())
        if finding:
            derive_node_ids(response)
        return response

    async def _add_protobuf_unary_handler(self, handle_name, handler, input_protobuf_type, balanced=False):
        storing, finding = handle_name.endswith(".rpc_store"), handle_name.endswith(".rpc_find")
        capped = not handle_name.endswith(".rpc_ping")  # a ping is a few bytes, and one unanswered drops us

        async def metered(request, context):
            size = request.ByteSize()
            sender = context.remote_id.to_base58()
            if not self.admits(sender):
                self.refused["request_not_allowed"] += 1
                self.traffic.add(refused=1, bytes_refused=size)
                raise PermissionError("not on this swarm's allowlist")
            if capped and self.bandwidth is not None and not self.bandwidth.admit(size):
                self.traffic.add(refused=1, bytes_refused=size)
                if refusal := _declined(request, storing, finding):
                    return refusal  # an answer, not an error: hivemind drops peers whose requests fail
                raise OverCap("over its network.max_kbps: ask another replica, or this one later")
            if storing and not self.store_rate.allow(sender, size):
                response = _declined(request, storing, finding)
            else:
                response = await handler(request, context)
                if finding and asks_for_bare_neighbours(request):
                    leave_out_node_ids(response)
            self.traffic.add(served=1, bytes_in=size)
            self._spent(bytes_out=response.ByteSize())
            return response

        await super()._add_protobuf_unary_handler(handle_name, metered, input_protobuf_type, balanced)

    def _spent(self, *, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """A response's bytes, known only once it exists: metered, and charged to the cap after the fact."""
        if self.bandwidth is not None:
            self.bandwidth.charge(bytes_in + bytes_out)
        self.traffic.add(bytes_in=bytes_in, bytes_out=bytes_out)


def _declined(request, storing: bool, finding: bool):
    """What we answer a DHT request we will not serve (over the bandwidth cap, or a store over the sender's rate):
    nothing stored, nothing found. A raised error would make the asker drop us from its routing table and bar us
    from its lookups, and with us the records we replicate; this way it only asks another replica."""
    if storing:
        return dht_pb2.StoreResponse(store_ok=[False] * len(request.keys))
    if finding:
        return dht_pb2.FindResponse(results=[dht_pb2.FindResult(type=dht_pb2.NOT_FOUND) for _ in request.keys])
    return None


@dataclass(frozen=True)
class Cleanup:
    sockets_removed: int
    daemons_stopped: int


def clean_stale_daemons() -> Cleanup:
    """Remove our sockets, and stop our p2pd daemons, whose owning process is gone.

    hivemind's p2pd exits by itself when its owner's control connection closes (the kernel closes it
    even when the owner is SIGKILLed), but the socket files stay behind; a daemon whose owner hangs
    dead in some other way is stopped here too.
    """
    removed = 0
    for path in SOCKET_DIR.glob(f"{SOCKET_TAG}*.sock"):
        match = _SOCKET_NAME.match(path.name)
        if match and not process_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    stopped = 0
    for pid in _orphaned_daemons():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
    return Cleanup(removed, stopped)


def _orphaned_daemons() -> list[int]:
    orphans: list[int] = []
    if not Path("/proc/self").exists():
        return orphans
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            arguments = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not arguments or not arguments[0].endswith("p2pd"):
            continue
        for argument in arguments:
            match = _DAEMON_LISTEN.match(argument)
            if match and not process_alive(int(match.group(1))):
                orphans.append(int(entry.name))
    return orphans


def process_alive(pid: int) -> bool:
    """Whether a process runs; a zombie (dead, not yet reaped by its parent) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _signalable(pid)
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
