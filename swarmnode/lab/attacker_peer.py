"""A hostile DHT peer for adversarial_peers.py and the tests: raw hivemind, no validator, no manners.

It crafts one kind of bad record at a time (the ATTACKS catalogue), offers it to every peer it knows and
keeps it in its own storage (so that readers who ask it are served it too), or floods one peer with
records at a set rate, from one identity or from a fresh one per record (sybils).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hivemind.dht.node import DHTNode
from hivemind.dht.routing import DHTID
from hivemind.p2p import PeerID
from hivemind.utils import MSGPackSerializer, get_dht_time
from hivemind.utils.multiaddr import Multiaddr

from swarmnode.config import TasksConfig
from swarmnode.learn.tasks import FamilySpec
from swarmnode.net.loop import LoopThread
from swarmnode.net.routing import node_id_of
from swarmnode.wire.batch import BATCH_DOMAIN_TAG, MAX_COMPLETION_BYTES, MAX_ENVELOPE_BYTES, MAX_ROLLOUTS_PER_BATCH
from swarmnode.wire.envelope import Envelope
from swarmnode.wire.identity import Identity, load_identity, peer_id_base58, public_key_of
from swarmnode.wire.keys import batch_key
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.rules import SwarmRules, shard_of

STARTUP_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0
FLOOD_RECORDS_PER_RPC = 10
FLOOD_RPC_BYTES = 3 * 2**20  # below hivemind's 4 MiB message limit
FLOOD_RPCS_IN_FLIGHT = 8
WRONG_ANSWER = "<answer>-12345</answer>"


@dataclasses.dataclass(frozen=True)
class Placed:
    """A record as sent: the key string, the subkey, the value bytes exactly as stored, the expiration."""

    key: str
    subkey: str
    value: bytes
    expiration: float


@dataclasses.dataclass
class Attacker:
    identity: Identity
    rules: SwarmRules
    node: DHTNode
    sequence: int = 0

    def batch(self, **changes: Any) -> pb.RolloutBatch:
        """A batch that is valid in every respect (an in-suite task, honest claims) until `changes` apply."""
        now = get_dht_time()
        self.sequence += 1
        family = FamilySpec.of(TasksConfig().families[0])
        batch = pb.RolloutBatch(
            swarm_id=self.rules.swarm_id, window=self.rules.window_of(now), sequence=self.sequence, timestamp=now,
            model_id="attacker", suite_version="v",
        )
        rollout = batch.rollouts.add()
        rollout.task.family, rollout.task.config_hash, rollout.task.seed, rollout.task.index = (
            family.name, family.config_hash, 7, 3,
        )
        rollout.completions.add(text="<answer>no</answer>", reward=0.0)
        for field, value in changes.items():
            if callable(value):
                value(batch)
            else:
                setattr(batch, field, value)
        return batch

    def frame(self, batch: pb.RolloutBatch, version: int = 1, signer: Identity | None = None) -> bytes:
        return Envelope.sign(signer or self.identity, batch.SerializeToString(deterministic=True), BATCH_DOMAIN_TAG, version).encode()

    def placed(self, frame: bytes, batch: pb.RolloutBatch, signer: str | None = None, **changes: Any) -> Placed:
        """Where an honest publisher `signer` (default: us) would put this frame, then `changes`."""
        signer = signer or self.identity.peer_id
        key = batch_key(batch.swarm_id, batch.window, shard_of(signer, self.rules.num_shards))
        record = Placed(key, signer, MSGPackSerializer.dumps(frame), self.rules.expiration_of(batch.timestamp))
        return dataclasses.replace(record, **changes)


def wrong_answers(claimed_reward: float, questions: int = 4, completions: int = 4) -> Callable[[pb.RolloutBatch], None]:
    """In-suite questions, each with wrong answers claimed to score `claimed_reward`: 1.0 poisons (refused as
    reward_mismatch, an offence); 0.0 is junk, valid in every respect, and no group has an advantage to learn."""

    def edit(batch: pb.RolloutBatch) -> None:
        task = batch.rollouts[0].task
        del batch.rollouts[:]
        for index in range(questions):
            rollout = batch.rollouts.add()
            rollout.task.CopyFrom(task)
            rollout.task.index = index
            rollout.completions.extend(pb.Completion(text=WRONG_ANSWER, reward=claimed_reward) for _ in range(completions))

    return edit


def _rollouts(count: int, text: str) -> Callable[[pb.RolloutBatch], None]:
    def edit(batch: pb.RolloutBatch) -> None:
        template = pb.Rollout()
        template.CopyFrom(batch.rollouts[0])
        template.completions[0].text = text
        del batch.rollouts[:]
        batch.rollouts.extend([template] * count)

    return edit


async def honest_frame(attacker: Attacker, honest: str) -> tuple[bytes, float, str] | None:
    """The honest peer's newest frame, as any reader can fetch it: (frame, expiration, key). Our own
    storage may hold a copy we replayed into a later window's key: only a frame of the key's window counts."""
    window = attacker.rules.window_of(get_dht_time())
    for read_window in (window, window - 1):
        key = batch_key(attacker.rules.swarm_id, read_window, shard_of(honest, attacker.rules.num_shards))
        found = await attacker.node.get(key, latest=True)
        if found is not None and isinstance(found.value, dict) and honest in found.value:
            frame, expiration = found.value[honest]
            if pb.RolloutBatch.FromString(Envelope.decode(frame).payload).window == read_window:
                return frame, expiration, key
    return None


async def craft(attacker: Attacker, name: str, honest: str | None) -> list[Placed]:
    """The records of one attack. See ATTACKS for what each should meet."""
    a = attacker
    if name in ("replay_same_window", "replay_later_window", "replay_extended_expiry"):
        found = await honest_frame(a, honest) if honest else None
        if found is None:
            return []
        frame, expiration, key = found
        value = MSGPackSerializer.dumps(frame)
        if name == "replay_same_window":
            return [Placed(key, honest, value, expiration)]
        if name == "replay_extended_expiry":
            return [Placed(key, honest, value, expiration + a.rules.window_s)]
        window = int(key.rsplit("/", 2)[1]) + 1
        later = batch_key(a.rules.swarm_id, window, shard_of(honest, a.rules.num_shards))
        return [Placed(later, honest, value, expiration + a.rules.window_s)]
    if name == "forged_signature":  # our signature, the honest peer's key in the signer field
        batch = a.batch()
        claimed = public_key_of(honest) if honest else Identity.generate().public_key
        forged = dataclasses.replace(Envelope.decode(a.frame(batch)), signer=claimed).encode()
        return [a.placed(forged, batch, signer=peer_id_base58(claimed))]
    if name == "wrong_subkey":
        batch = a.batch()
        victim = honest or Identity.generate().peer_id
        return [a.placed(a.frame(batch), batch, signer=victim)]
    if name == "junk":
        return [dataclasses.replace(a.placed(b"", a.batch()), value=MSGPackSerializer.dumps(b"\x00junk"))]
    if name == "length_bomb":
        batch = a.batch()
        return [dataclasses.replace(a.placed(b"", batch), value=b"\xc6\xff\xff\xff\xff" + a.frame(batch)[:64])]
    if name == "oversized":
        batch = a.batch(rollouts=_rollouts(MAX_ROLLOUTS_PER_BATCH, "x" * MAX_COMPLETION_BYTES))
        frame = a.frame(batch)
        assert len(frame) > MAX_ENVELOPE_BYTES
        return [a.placed(frame, batch)]
    if name == "unknown_version":
        batch = a.batch()
        return [a.placed(a.frame(batch, version=2), batch)]
    batch = a.batch(**SCHEMA_ATTACKS[name])
    return [a.placed(a.frame(batch), batch)]


def _set_completion(**fields: Any) -> Callable[[pb.RolloutBatch], None]:
    def edit(batch: pb.RolloutBatch) -> None:
        completion = batch.rollouts[0].completions[0]
        for name, value in fields.items():
            if name == "logprob":
                completion.token_logprobs.append(value)
            else:
                setattr(completion, name, value)

    return edit


def _set_task(**fields: Any) -> Callable[[pb.RolloutBatch], None]:
    def edit(batch: pb.RolloutBatch) -> None:
        for name, value in fields.items():
            setattr(batch.rollouts[0].task, name, value)

    return edit


# Valid signatures over content that breaks a schema rule or lies about rewards.
SCHEMA_ATTACKS: dict[str, dict[str, Any]] = {
    "nan_reward": {"rollouts": _set_completion(reward=float("nan"))},
    "nan_logprob": {"rollouts": _set_completion(logprob=float("nan"))},
    "nan_timestamp": {"timestamp": float("nan")},
    "negative_index": {"rollouts": _set_task(index=2**64 - 1)},  # -1 as a two's-complement varint
    "huge_index": {"rollouts": _set_task(index=2**40)},
    "index_beyond_dataset": {"rollouts": _set_task(index=2**31 - 1)},
    "unknown_family": {"rollouts": _set_task(family="no_such_family")},
    "overlong_completion": {"rollouts": _set_completion(text="x" * (MAX_COMPLETION_BYTES + 1))},
    "too_many_rollouts": {"rollouts": _rollouts(MAX_ROLLOUTS_PER_BATCH + 1, "x")},
    "poisoned_rewards": {"rollouts": wrong_answers(1.0)},
}

# attack -> (where it must be stopped, the reason code it must be counted under)
ATTACKS: dict[str, tuple[str, str]] = {
    "forged_signature": ("store", "bad_signature"),
    "wrong_subkey": ("store", "key_mismatch"),
    "replay_same_window": ("collect", "already_seen"),
    "replay_later_window": ("store", "key_mismatch"),
    "replay_extended_expiry": ("store", "bad_expiry"),
    "junk": ("store", "malformed"),
    "length_bomb": ("store", "malformed"),
    "oversized": ("store", "too_large"),
    "unknown_version": ("store", "bad_version"),
    "nan_reward": ("store", "bad_value"),
    "nan_logprob": ("store", "bad_value"),
    "nan_timestamp": ("store", "bad_value"),
    "negative_index": ("store", "bad_value"),
    "huge_index": ("store", "bad_value"),
    "overlong_completion": ("store", "limit_exceeded"),
    "too_many_rollouts": ("store", "limit_exceeded"),
    "unknown_family": ("learner", "unknown_task"),
    "index_beyond_dataset": ("learner", "unknown_task"),
    "poisoned_rewards": ("learner", "reward_mismatch"),
}


async def offer(node: DHTNode, records: list[Placed], peers: list[PeerID]) -> Counter[str]:
    """Keep the records in our own storage and ask each peer to store them: counts of stored / refused /
    no_answer over (record, peer) pairs."""
    outcome: Counter[str] = Counter()
    for record in records:
        key_id = DHTID.generate(source=record.key)
        node.protocol.storage.store_subkey(key_id, record.subkey, record.value, record.expiration)
        answers = await asyncio.gather(*(
            node.protocol.call_store(peer, [key_id], [record.value], [record.expiration], [record.subkey])
            for peer in peers
        ))
        for answer in answers:
            outcome["no_answer" if answer is None else "stored" if answer[0] else "refused"] += 1
    return outcome


async def flood(
    attacker: Attacker, target: PeerID, rate: float, seconds: float, mode: str, text_bytes: int, rollouts: int = 1
) -> dict:
    """Send `rate` records per second to `target` for `seconds`, FLOOD_RECORDS_PER_RPC per store request (fewer
    when that would pass FLOOD_RPC_BYTES), each record `rollouts` rollouts of a `text_bytes` completion.

    one_identity: valid frames from our key, each newer than the last (each replaces the previous);
    sybils: valid frames, each from a freshly made identity (a new subkey every time);
    forged: frames whose signature does not verify (refused, but each costs the target a verification).
    """
    text = ("<answer>1</answer>" + "x" * text_bytes)[: max(text_bytes, 1)]
    per_rpc = max(1, min(FLOOD_RECORDS_PER_RPC, FLOOD_RPC_BYTES // (rollouts * (text_bytes + 64))))
    outcome: Counter[str] = Counter()
    in_flight = asyncio.Semaphore(FLOOD_RPCS_IN_FLIGHT)
    started = time.monotonic()
    deadline = started + seconds
    sent = 0

    def one_record() -> Placed:
        signer = Identity.generate() if mode == "sybils" else attacker.identity
        batch = attacker.batch(rollouts=_rollouts(rollouts, text))
        frame = attacker.frame(batch, signer=signer)
        if mode == "forged":
            frame = frame[:-1] + bytes([frame[-1] ^ 1])
        return attacker.placed(frame, batch, signer=signer.peer_id)

    async def send(records: list[Placed]) -> None:
        try:
            answer = await attacker.node.protocol.call_store(
                target, [DHTID.generate(source=r.key) for r in records], [r.value for r in records],
                [r.expiration for r in records], [r.subkey for r in records],
            )
        finally:
            in_flight.release()
        if answer is None:
            outcome["no_answer"] += len(records)
        else:
            outcome["stored"] += sum(answer)
            outcome["refused"] += len(answer) - sum(answer)

    tasks = []
    while time.monotonic() < deadline:
        due = int((time.monotonic() - started) * rate) - sent
        if due <= 0:
            await asyncio.sleep(per_rpc / rate / 2)
            continue
        count = min(due, per_rpc)
        await in_flight.acquire()  # back-pressure: at most FLOOD_RPCS_IN_FLIGHT requests outstanding
        tasks.append(asyncio.create_task(send([one_record() for _ in range(count)])))
        sent += count
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    return {"sent": sent, "seconds": round(elapsed, 2), "achieved_rate": round(sent / elapsed, 1), **outcome}


class AttackerPeer:
    """The hostile peer on its own loop thread; every method blocks until the attack is done."""

    def __init__(self, identity_path: Path, initial_peers: list[str], rules: SwarmRules) -> None:
        self._loop = LoopThread(name="attacker")
        identity = load_identity(identity_path)
        node = self._loop.run(
            DHTNode.create(
                initial_peers=initial_peers, host_maddrs=["/ip4/127.0.0.1/tcp/0"], identity_path=str(identity_path),
                node_id=node_id_of(PeerID.from_base58(identity.peer_id)),  # honest peers route to no other id
                check_if_identity_free=False, cache_locally=False, cache_nearest=0,
            ),
            STARTUP_TIMEOUT_S,
        )
        self.attacker = Attacker(identity, rules, node, sequence=random.getrandbits(32))
        self.peer_id = node.peer_id.to_base58()

    def peers(self) -> list[PeerID]:
        return list(self.attacker.node.protocol.routing_table.uid_to_peer_id.values())

    def attack(self, name: str, honest: str | None = None) -> dict[str, Any]:
        """Craft attack `name` (against `honest`'s records where it needs a victim) and offer it to every
        peer we know; returns how many (record, peer) pairs were stored, refused or not answered."""

        async def run() -> dict[str, Any]:
            records = await craft(self.attacker, name, honest)
            outcome = await offer(self.attacker.node, records, self.peers())
            return {"attack": name, "records": len(records), "peers": len(self.peers()), **outcome}

        return self._loop.run(run(), COMMAND_TIMEOUT_S)

    def offer_batch(self, **changes: Any) -> dict[str, int]:
        """A batch of ours, valid in every respect but `changes` (as Attacker.batch takes them), offered to every
        peer we know: how many stored, refused or did not answer."""

        async def run() -> dict[str, int]:
            batch = self.attacker.batch(**changes)
            return dict(await offer(self.attacker.node, [self.attacker.placed(self.attacker.frame(batch), batch)], self.peers()))

        return self._loop.run(run(), COMMAND_TIMEOUT_S)

    def connect(self, peer_id: str, maddrs: list[str]) -> None:
        """Dial a peer directly (a flooder does not wait for the routing table to find its target)."""
        peer = PeerID.from_base58(peer_id)
        transports = [Multiaddr(m).decapsulate(Multiaddr(f"/p2p/{peer_id}")) for m in maddrs]
        coroutine = self.attacker.node.p2p._client.connect(peer, transports)
        self._loop.run(coroutine, COMMAND_TIMEOUT_S)

    def flood(
        self, target: str, rate: float, seconds: float, mode: str, text_bytes: int = 2048, rollouts: int = 1
    ) -> dict[str, Any]:
        coroutine = flood(self.attacker, PeerID.from_base58(target), rate, seconds, mode, text_bytes, rollouts)
        return self._loop.run(coroutine, seconds + COMMAND_TIMEOUT_S)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run(self.attacker.node.shutdown(), COMMAND_TIMEOUT_S)
        self._loop.stop()
