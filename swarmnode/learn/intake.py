"""Intake: the one path from a peer's verified rollout to a group this node trains on (PROTOCOL.md §5, 14-15).

Its frame was opened by the network layer (`swarmnode.wire.receive`, checks 1-13). Each rollout: task
reference (family and config hash in our suite, index below its size: check 14) -> regenerate (any exception
of the generator is a typed refusal, `task_error`) -> rescore with our verifier and judge the sender's claim
(check 15) (`judge`) -> family filter -> trim to this node's G and token limit (`group`). Items reserved for
held-out evaluation are never trained on (`held_out`, before any work), and judging stops when a round's
budget is spent (`rescore_budget`: some reasoning-gym scorers take seconds). What the signer alone can have
caused counts against it (`rejection.is_offence`).

The node's rescore, the in-process simulator and `swarmnode protocol check` all judge through here, so that
what the spec says, what the tools check and what a node trains on are one thing.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from swarmnode.learn.group import Group
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import Score, Task, TaskSuite, format_prompt
from swarmnode.wire.rejection import Reason, Rejected, is_offence
from swarmnode.wire.rollout import Completion, PeerRollout, Rollout, is_held_out

REWARD_CLAIM_TOLERANCE = 1e-3
MIN_GROUP_SIZE = 2  # one completion carries no advantage


@dataclass(frozen=True)
class Judged:
    """A rollout that passed checks 14-15: the regenerated task and our verifier's scores."""

    task: Task
    completions: tuple[Completion, ...]
    scores: tuple[Score, ...]


@dataclass(frozen=True)
class IntakeLimits:
    """This node's shape for peers' groups: at most `group_size` completions (our G) of at most
    `max_completion_tokens` tokens each (our sampling limit), so that no peer group outweighs one of our own
    under the fixed token budget; `train_families` (None: any family of the suite) filters what we train on."""

    group_size: int
    max_completion_tokens: int
    max_prompt_tokens: int
    train_families: frozenset[str] | None = None
    budget_s: float | None = None  # judging stops after this long per call; the rest is refused (rescore_budget)


@dataclass
class IntakeResult:
    groups: list[Group] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    offenders: list[tuple[str, str]] = field(default_factory=list)  # (peer id, reason)

    @property
    def mean_reward(self) -> float | None:
        rewards = [r for g in self.groups for r in g.rewards]
        return sum(rewards) / len(rewards) if rewards else None


class Intake:
    """The receiving side of one node. Without a policy rollouts can be judged but not turned into groups
    (what `swarmnode protocol check` needs)."""

    def __init__(
        self,
        suite: TaskSuite,
        limits: IntakeLimits | None = None,
        policy: Policy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.suite = suite
        self.limits = limits
        self.policy = policy
        self.rng = rng or random.Random()

    def judge(self, rollout: Rollout) -> Judged:
        """Checks 14-15: regenerate the task from its reference, score every completion with our verifier,
        refuse the rollout if a claimed score disagrees. Raises Rejected; nothing else escapes."""
        try:
            task = self.suite.task(rollout.task)
            scores = tuple(self.suite.score(task, completion.text) for completion in rollout.completions)
        except Rejected:
            raise
        except Exception as error:  # a generator or verifier bug on a peer-chosen item: typed, contained
            raise Rejected(Reason.TASK_ERROR, f"{rollout.task.family}: {type(error).__name__}: {error}") from None
        for completion, score in zip(rollout.completions, scores):
            if completion.reward is not None and abs(completion.reward - score.verifier) > REWARD_CLAIM_TOLERANCE:
                raise Rejected(
                    Reason.REWARD_MISMATCH, f"claimed {completion.reward:.3f}, verifier says {score.verifier:.3f}"
                )
        return Judged(task, rollout.completions, scores)

    def group(self, judged: Judged, signer: str, same_model: bool) -> Group:
        """A judged rollout as a group of ours: completions re-tokenized by our tokenizer, those longer than
        our token limit dropped, at most our G kept (a random subset), the prompt as we would write it. A
        group left with fewer than 2 completions is returned as is; `groups` refuses it (too_long)."""
        if self.policy is None or self.limits is None:
            raise ValueError("making groups needs a policy and limits")
        limits, policy = self.limits, self.policy
        kept = [
            (ids, completion, score)
            for completion, score in zip(judged.completions, judged.scores)
            if 0 < len(ids := policy.encode_completion(completion.text)) <= limits.max_completion_tokens
        ]
        if len(kept) > limits.group_size:
            kept = self.rng.sample(kept, limits.group_size)
        prompt_ids = policy.encode_prompts([format_prompt(judged.task.question, policy.tokenizer)], limits.max_prompt_tokens)[0]
        return Group(
            task=judged.task,
            prompt_ids=prompt_ids,
            completion_ids=[ids for ids, _, _ in kept],
            rewards=[score.reward for _, _, score in kept],
            source="external",
            sender_logprobs=[c.token_logprobs for _, c, _ in kept] if same_model else None,
            signer=signer,
        )

    def groups(self, peer_rollouts: Sequence[PeerRollout]) -> IntakeResult:
        """Peers' rollouts (already out of verified frames) to groups, with every refusal counted by reason
        and the offences attributed to their signer."""
        result = IntakeResult()
        model_id = self.policy.model_id if self.policy is not None else None
        families = self.limits.train_families if self.limits is not None else None
        budget_s = self.limits.budget_s if self.limits is not None else None
        started = time.monotonic()
        for position, item in enumerate(peer_rollouts):
            if budget_s is not None and time.monotonic() - started > budget_s:
                # a scorer can take seconds on a peer-chosen item: the work a round spends on peers is bounded
                result.rejected["rescore_budget"] += len(peer_rollouts) - position
                break
            if is_held_out(item.rollout.task):
                result.rejected["held_out"] += 1  # reserved for evaluation (PROTOCOL.md §2.5): never trained on
                continue
            try:
                judged = self.judge(item.rollout)
            except Rejected as rejected:
                result.rejected[rejected.reason.value] += 1
                if is_offence(rejected.reason):
                    result.offenders.append((item.signer, rejected.reason.value))
                continue
            if families is not None and judged.task.ref.family not in families:
                result.rejected["not_sampled_here"] += 1  # verified (a lie would have been caught), not trained on
                continue
            group = self.group(judged, item.signer, item.model_id == model_id)
            if len(group.completion_ids) < MIN_GROUP_SIZE:
                result.rejected["too_long"] += 1
                continue
            result.groups.append(group)
        return result
