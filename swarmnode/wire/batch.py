"""A rollout batch on the wire (PROTOCOL.md §2-§3): a signer's rollouts of one round, stored under its shard
key of the window its timestamp falls in."""

from __future__ import annotations

import re

from swarmnode.wire.envelope import (
    MAX_MODEL_ID_BYTES,
    MAX_SWARM_ID_BYTES,
    check_swarm_id,
    check_timestamp,
    parse_canonical,
    text_limit,
)
from swarmnode.wire.keys import batch_key
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.record import Kind
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import Slot, SwarmRules, check_freshness, check_swarm_and_window, shard_of

BATCH_DOMAIN_TAG = b"swarmnode/envelope\x00"

# Hard limits of protocol version 1 (PROTOCOL.md, "Limits"). Sizes are in bytes of UTF-8.
MAX_ENVELOPE_BYTES = 1_048_576
MAX_ROLLOUTS_PER_BATCH = 64
MAX_COMPLETIONS_PER_ROLLOUT = 32
MAX_COMPLETION_BYTES = 16_384
MAX_TOKEN_LOGPROBS = 4_096
MAX_SUITE_VERSION_BYTES = 64
MAX_FAMILY_BYTES = 64
MAX_SEED = 2**63 - 1
MAX_INDEX = 2**31 - 1
MIN_TOKEN_LOGPROB = -1000.0

FAMILY_PATTERN = re.compile(r"[a-z0-9_]+")
CONFIG_HASH_PATTERN = re.compile(r"[0-9a-f]{16}")


class BatchKind(Kind[RolloutBatch]):
    name = "batch"
    domain = BATCH_DOMAIN_TAG
    max_frame_bytes = MAX_ENVELOPE_BYTES

    def encode(self, value: RolloutBatch) -> bytes:
        return encode_batch(value)

    def parse(self, payload: bytes) -> RolloutBatch:
        message = parse_canonical(pb.RolloutBatch, payload, "payload")
        _check_limits(message)
        return _to_batch(message)

    def check(
        self, value: RolloutBatch, signer: str, rules: SwarmRules, slot: Slot | None, now: float | None, reading: bool = False
    ) -> None:
        check_swarm_and_window(value.swarm_id, value.window, value.timestamp, rules)
        if rules.swarm_id is not None and slot is not None:
            if slot.window not in (None, value.window) or slot.shard not in (None, shard_of(signer, rules.num_shards)):
                raise Rejected(Reason.KEY_MISMATCH, "stored under another window or shard")
        if now is not None:
            check_freshness(value.window, value.timestamp, rules, now, reading=reading)

    def keys(self, value: RolloutBatch, signer: str, rules: SwarmRules) -> tuple[str, ...]:
        return (batch_key(value.swarm_id, value.window, shard_of(signer, rules.num_shards)),)

    def timestamp(self, value: RolloutBatch) -> float:
        return value.timestamp


BATCH = BatchKind()


def encode_batch(batch: RolloutBatch) -> bytes:
    message = pb.RolloutBatch(
        swarm_id=batch.swarm_id,
        window=batch.window,
        sequence=batch.sequence,
        timestamp=batch.timestamp,
        model_id=batch.model_id,
        suite_version=batch.suite_version,
        rollouts=[
            pb.Rollout(
                task=pb.TaskRef(
                    family=r.task.family, config_hash=r.task.config_hash, seed=r.task.seed, index=r.task.index
                ),
                completions=[
                    pb.Completion(text=c.text, reward=c.reward, token_logprobs=c.token_logprobs)
                    for c in r.completions
                ],
            )
            for r in batch.rollouts
        ],
    )
    return message.SerializeToString(deterministic=True)


def _check_limits(message: pb.RolloutBatch) -> None:
    text_limit(message.swarm_id, MAX_SWARM_ID_BYTES, "swarm_id")
    text_limit(message.model_id, MAX_MODEL_ID_BYTES, "model_id")
    text_limit(message.suite_version, MAX_SUITE_VERSION_BYTES, "suite_version")
    if len(message.rollouts) > MAX_ROLLOUTS_PER_BATCH:
        raise Rejected(Reason.LIMIT_EXCEEDED, f"{len(message.rollouts)} rollouts > {MAX_ROLLOUTS_PER_BATCH}")
    for rollout in message.rollouts:
        text_limit(rollout.task.family, MAX_FAMILY_BYTES, "family")
        if len(rollout.completions) > MAX_COMPLETIONS_PER_ROLLOUT:
            raise Rejected(Reason.LIMIT_EXCEEDED, f"{len(rollout.completions)} completions in one rollout")
        for completion in rollout.completions:
            text_limit(completion.text, MAX_COMPLETION_BYTES, "completion")
            if len(completion.token_logprobs) > MAX_TOKEN_LOGPROBS:
                raise Rejected(Reason.LIMIT_EXCEEDED, "too many token log-probs")


def _to_batch(message: pb.RolloutBatch) -> RolloutBatch:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_VALUE, detail)

    check_swarm_id(message.swarm_id)
    if not message.model_id:
        raise bad("model_id is empty")
    check_timestamp(message.timestamp)
    if not message.rollouts:
        raise bad("a batch holds at least one rollout")
    rollouts = []
    for rollout in message.rollouts:
        task = rollout.task
        if not FAMILY_PATTERN.fullmatch(task.family):
            raise bad("family must match [a-z0-9_]+")
        if not CONFIG_HASH_PATTERN.fullmatch(task.config_hash):
            raise bad("config_hash must be 16 lowercase hex characters")
        if task.seed > MAX_SEED or task.index > MAX_INDEX:
            raise bad("seed or index out of range")
        if not rollout.completions:
            raise bad("a rollout holds at least one completion")
        completions = []
        for completion in rollout.completions:
            reward = completion.reward if completion.HasField("reward") else None
            if reward is not None and not (0.0 <= reward <= 1.0):
                raise bad("reward must lie in [0, 1]")
            logprobs = tuple(completion.token_logprobs)
            if any(not (MIN_TOKEN_LOGPROB <= value <= 0.0) for value in logprobs):
                raise bad(f"token log-probs must lie in [{MIN_TOKEN_LOGPROB}, 0]")
            completions.append(Completion(completion.text, reward, logprobs))
        rollouts.append(
            Rollout(TaskRef(task.family, task.config_hash, task.seed, task.index), tuple(completions))
        )
    return RolloutBatch(
        swarm_id=message.swarm_id,
        window=message.window,
        sequence=message.sequence,
        timestamp=message.timestamp,
        model_id=message.model_id,
        suite_version=message.suite_version,
        rollouts=tuple(rollouts),
    )
