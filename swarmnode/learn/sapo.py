"""SAPO's step: train on the selected I own + J external groups with a GRPO-style clipped objective.

Loss (per token t of completion i in a selected group): -w_i * rho_it * min(r_it * A_i, clip(r_it, 1-eps_lo,
1+eps_hi) * A_i) / B, with r = pi/pi_old, A_i = (R_i - mean R) / std R within the group, w_i the weight of
external groups, rho the truncated importance weight of a same-model sender (1 otherwise), and B a
fixed token budget, so a step's size does not depend on how many groups survived filtering.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from swarmnode.config import MemoryConfig, OptimizerConfig, SapoConfig
from swarmnode.learn.group import Source
from swarmnode.learn.interrupt import Interrupted, ShouldStop, is_out_of_memory, never, release_failed_attempt
from swarmnode.learn.memory import RUNTIME_BYTES, MemoryPlan, budget_bytes, fixed_bytes, plan_micro_batch
from swarmnode.learn.policy import Policy, keep_frozen_in
from swarmnode.learn.selection import Selection


def clipped_surrogate_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    importance: torch.Tensor,
    clip_low: float,
    clip_high: float,
    token_budget: float,
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SAPO/GRPO objective for one micro-batch, summed over tokens and divided by the token budget.

    Shapes: logprobs/mask/importance [N, T]; advantages/weights [N]. Returns (loss, statistics); with
    `ref_logprobs` the statistics carry the per-token k3 KL to the reference, in the loss only if kl_beta > 0.
    """
    ratio = torch.exp(new_logprobs - old_logprobs)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped) * importance
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None:
        delta = ref_logprobs - new_logprobs
        kl = torch.exp(delta) - delta - 1.0  # k3 estimator of KL(pi || ref), always >= 0
        if kl_beta > 0:
            per_token = per_token + kl_beta * kl
    mask_f = mask.to(per_token.dtype)
    loss = (per_token * weights[:, None] * mask_f).sum() / token_budget
    with torch.no_grad():
        outside = ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).to(mask_f.dtype) * mask_f
        stats = {
            "tokens": float(mask_f.sum()),
            "clipped": float(outside.sum()),
            "importance": float((importance * mask_f).sum()),
            "kl_per_token": kl.detach(),
        }
    return loss, stats


@dataclass
class StepStats:
    """What one round's training did, for the metrics: besides the loss, whether the clip acted (it cannot
    with one update: the ratio to the sampling policy is then 1), how large the updates were, how far the
    policy drifted from where the run started, and how much of the step peers' tokens made."""

    skipped_reason: str | None = None
    loss: float = 0.0
    own_groups: int = 0
    external_groups: int = 0
    own_tokens: int = 0
    external_tokens: int = 0
    updates: int = 0
    grad_norm: float = 0.0  # mean over updates, before clipping
    clip_fraction: float = 0.0  # share of trained tokens whose ratio left [1 - clip_low, 1 + clip_high]
    kl_to_start: float | None = None  # k3 estimate of KL(policy || policy at start) on own tokens; None if not tracked
    importance_mean: float = 1.0  # truncated importance weights of same-model peers' tokens (1 elsewhere)
    importance_max: float = 1.0
    seconds: float = 0.0
    micro_batch_size: int = 0  # rows per forward pass at the end of the step (halved after an allocation failure)
    out_of_memory: int = 0  # allocation failures absorbed by halving the micro-batch

    @property
    def external_token_share(self) -> float:
        total = self.own_tokens + self.external_tokens
        return self.external_tokens / total if total else 0.0


@dataclass
class _Sample:
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    weight: float
    source: Source
    old_logprobs: list[float] | None  # pi_old: the sampler's for own groups; for peers', ours before the round
    sender_logprobs: tuple[float, ...] | None


# A frozen copy of the policy for KL to the start costs one model of memory and a forward per micro-batch:
# tracked by default only below this size.
KL_TO_START_MAX_PARAMETERS = 100_000_000


class OutOfMemory(Exception):
    """Even a micro-batch of one row did not fit."""


def _adamw(parameters: list[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW, fused where this torch has it for the device: one pass over each tensor, and none of the
    foreach implementation's whole-model temporaries (a 0.5B model's step would take 2 GB more)."""
    options = dict(lr=config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.weight_decay)
    try:
        return torch.optim.AdamW(parameters, fused=True, **options)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(parameters, foreach=False, **options)


def _adapters_start_at_zero(model: torch.nn.Module) -> bool:
    """A LoRA model whose adapters were initialised to zero (peft's default): with them disabled it is the
    policy at start. Other inits (gaussian, PiSSA, LoftQ) change the start or the base, so they get a copy."""
    configs = getattr(model, "peft_config", None)
    return bool(configs) and all(config.init_lora_weights is True for config in configs.values())


class SapoTrainer:
    """Owns the optimizer, the loss scaler (float16) and the frozen start-of-run policy (when kl_beta > 0 or
    KL to the start is tracked) of one node's policy, and what of the memory budget they hold whatever the batch."""

    def __init__(
        self,
        policy: Policy,
        config: SapoConfig,
        optimizer: OptimizerConfig,
        memory: MemoryConfig,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        max_prompt_tokens: int = 192,
        should_stop: ShouldStop = never,
    ) -> None:
        self.policy = policy
        self.should_stop = should_stop
        self.config = config
        self.grad_clip = optimizer.grad_clip
        self.temperature = temperature
        self.token_budget = config.token_budget or (
            (config.local_groups + config.external_groups) * config.completions_per_question * max_new_tokens
        )
        trainable = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = _adamw(trainable, optimizer)
        # float16 gradients underflow without loss scaling; bfloat16 and float32 need none
        self.scaler = torch.amp.GradScaler(policy.device.type, enabled=policy.compute_dtype == torch.float16)
        track = config.kl_to_start
        if track is None:
            track = sum(p.numel() for p in trainable) <= KL_TO_START_MAX_PARAMETERS
        self.tracks_kl = config.kl_beta > 0 or track
        self.reference: torch.nn.Module | None = None  # the policy at start, for KL; zero-init LoRA: adapters off
        if self.tracks_kl and not _adapters_start_at_zero(policy.model):
            self.reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
            keep_frozen_in(self.reference, policy.compute_dtype)
        self.budget_bytes = budget_bytes(policy.device, memory.budget_gib)
        reference = self.reference
        self.fixed_bytes = fixed_bytes(  # what sampling's plan counts too: the optimizer state outlives the step
            policy.model,
            reference_bytes=sum(p.numel() * p.element_size() for p in reference.parameters()) if reference else 0,
            runtime_bytes=0 if policy.device.type == "cuda" else RUNTIME_BYTES,  # the runtime lives in host RAM
        )
        self.memory_plan: MemoryPlan | None = None
        if memory.micro_batch_size == "auto":
            self.memory_plan = plan_micro_batch(
                policy.model,
                self.budget_bytes,
                self.fixed_bytes,
                prompt_tokens=max_prompt_tokens,
                completion_tokens=max_new_tokens,
                group_size=config.completions_per_question,
                compute_dtype=policy.compute_dtype,
                chunked_logits=policy.chunked_logits,
            )
        # halved for good after an allocation failure
        self.micro_batch_size = self.memory_plan.micro_batch_size if self.memory_plan else memory.micro_batch_size
        self._failures = 0

    def step(self, selection: Selection) -> StepStats:
        """`updates_per_round` optimizer steps on the selected groups (or none, if the selection says skip).

        Each update takes an interleaved slice of the round's samples; old log-probs are fixed before the
        first, so from the second update on the ratio moves and the asymmetric clip acts.

        A stop is honoured before every micro-batch (`Interrupted`): the update being accumulated is discarded, so
        the weights and the optimizer always hold whole updates. Updates already applied in this round (with
        updates_per_round > 1) stay: a checkpoint saved at the stop holds k of n updates under the previous round's
        number, and the round replayed after a restart applies its n on top. Waiting for the round's last update
        instead could take minutes on a CPU; k extra updates are only a slightly longer training."""
        if selection.skipped_reason:
            return StepStats(skipped_reason=selection.skipped_reason)
        samples = self._samples(selection)
        updates = min(self.config.updates_per_round, len(samples))
        self._failures, grad_norms = 0, []  # allocation failures absorbed in this step
        try:
            if updates > 1:
                self._with_backoff(lambda: self._fix_old_logprobs(samples))
            self.policy.model.train()
            totals = dict.fromkeys(("loss", "tokens", "clipped", "importance", "kl", "kl_tokens", "importance_max"), 0.0)
            for update in range(updates):
                part = samples[update::updates]
                update_totals = self._with_backoff(lambda: self._accumulate(part))
                for key, value in update_totals.items():
                    totals[key] = max(totals[key], value) if key == "importance_max" else totals[key] + value
                grad_norms.append(self._apply())
        except OutOfMemory as error:
            return StepStats(
                skipped_reason=f"out of memory with a micro-batch of 1 ({error}); lower model.max_new_tokens or use LoRA",
                updates=len(grad_norms), micro_batch_size=1, out_of_memory=self._failures,
            )
        finally:  # a partial update's gradients (a stop, an allocation failure) are never applied by a later one
            self.optimizer.zero_grad(set_to_none=True)
        tokens = max(totals["tokens"], 1.0)
        importance_max = max(totals["importance_max"], 1.0)
        return StepStats(
            loss=totals["loss"],
            own_groups=len(selection.own),
            external_groups=len(selection.external),
            own_tokens=sum(len(s.completion_ids) for s in samples if s.source == "own"),
            external_tokens=sum(len(s.completion_ids) for s in samples if s.source == "external"),
            updates=updates,
            grad_norm=sum(grad_norms) / len(grad_norms),
            clip_fraction=totals["clipped"] / tokens,
            kl_to_start=totals["kl"] / totals["kl_tokens"] if self.tracks_kl and totals["kl_tokens"] else None,
            importance_mean=totals["importance"] / tokens,
            importance_max=importance_max,
            micro_batch_size=self.micro_batch_size,
            out_of_memory=self._failures,
        )

    def _accumulate(self, part: list[_Sample]) -> dict[str, float]:
        """Gradients of one update's samples, a micro-batch at a time; the update's totals for the stats."""
        self.optimizer.zero_grad(set_to_none=True)
        totals = dict.fromkeys(("loss", "tokens", "clipped", "importance", "kl", "kl_tokens", "importance_max"), 0.0)
        for start in range(0, len(part), self.micro_batch_size):
            self._stop_point()
            loss, stats = self._micro_batch_loss(part[start : start + self.micro_batch_size])
            self.scaler.scale(loss).backward()
            totals["loss"] += loss.item()
            for key in ("tokens", "clipped", "importance", "kl", "kl_tokens"):
                totals[key] += stats[key]
            totals["importance_max"] = max(totals["importance_max"], stats["importance_max"])
        return totals

    def _stop_point(self) -> None:
        if self.should_stop():
            raise Interrupted("train")

    def _apply(self) -> float:
        """One optimizer step on the accumulated gradients; the gradient norm before clipping."""
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scaler.unscale_(self.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(trainable, self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return norm

    def _with_backoff(self, work):
        """`work()`, again with half the micro-batch after each allocation failure (nothing of a failed
        attempt was applied: gradients are cleared, the optimizer has not stepped). At a micro-batch of 1
        the failure is raised as OutOfMemory, and the node skips the step instead of dying."""
        while True:
            try:
                return work()
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
                if not is_out_of_memory(error) or self.micro_batch_size == 1:
                    if is_out_of_memory(error):
                        raise OutOfMemory(str(error).splitlines()[0]) from None
                    raise
                self._failures += 1
                self.optimizer.zero_grad(set_to_none=True)
                del error
                release_failed_attempt(self.policy.device)
                self.micro_batch_size = max(1, self.micro_batch_size // 2)

    def _samples(self, selection: Selection) -> list[_Sample]:
        samples = []
        for group in selection.groups:
            weight = 1.0 if group.source == "own" else self.config.external_weight
            for i, (completion, advantage) in enumerate(zip(group.completion_ids, group.advantages())):
                if not completion:
                    continue
                samples.append(
                    _Sample(
                        prompt_ids=group.prompt_ids,
                        completion_ids=completion,
                        advantage=advantage,
                        weight=weight,
                        source=group.source,
                        old_logprobs=group.behaviour_logprobs[i] if group.behaviour_logprobs else None,
                        sender_logprobs=group.sender_logprobs[i] if group.sender_logprobs else None,
                    )
                )
        return samples

    @torch.no_grad()
    def _fix_old_logprobs(self, samples: list[_Sample]) -> None:
        """Peers' samples have no behaviour log-probs of ours: take our policy's before the round's first update."""
        missing = [s for s in samples if s.old_logprobs is None]
        self.policy.model.eval()
        for start in range(0, len(missing), self.micro_batch_size):
            self._stop_point()
            chunk = missing[start : start + self.micro_batch_size]
            logprobs, _ = self.policy.completion_logprobs(
                [s.prompt_ids for s in chunk], [s.completion_ids for s in chunk], self.temperature
            )
            for row, sample in enumerate(chunk):
                sample.old_logprobs = logprobs[row, logprobs.shape[1] - len(sample.completion_ids) :].tolist()

    def _reference_logprobs(self, chunk: list[_Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs under the policy at start: a LoRA model's base with its adapters off (LoRA starts at
        zero, so that is the start, without a second copy of the weights); else the frozen copy."""
        prompts, completions = [s.prompt_ids for s in chunk], [s.completion_ids for s in chunk]
        if self.reference is None:
            with self.policy.model.disable_adapter():
                return self.policy.completion_logprobs(prompts, completions, self.temperature)
        live, self.policy.model = self.policy.model, self.reference
        try:
            return self.policy.completion_logprobs(prompts, completions, self.temperature)
        finally:
            self.policy.model = live

    def _micro_batch_loss(self, chunk: list[_Sample]) -> tuple[torch.Tensor, dict[str, float]]:
        device = self.policy.device
        new_logprobs, mask = self.policy.completion_logprobs(
            [s.prompt_ids for s in chunk], [s.completion_ids for s in chunk], self.temperature
        )
        width = new_logprobs.shape[1]
        # Without fixed old log-probs (one update, peers' groups), pi_old is our policy before this step.
        old = new_logprobs.detach().clone()
        importance = torch.ones_like(old)
        for row, sample in enumerate(chunk):
            if sample.old_logprobs is not None:
                old[row, width - len(sample.old_logprobs) :] = torch.tensor(sample.old_logprobs, device=device)
            if (
                self.config.importance_clip is not None
                and sample.sender_logprobs is not None
                and len(sample.sender_logprobs) == len(sample.completion_ids)
            ):
                sender = torch.tensor(sample.sender_logprobs, device=device)
                ours = old[row, width - len(sender) :]
                importance[row, width - len(sender) :] = torch.exp(ours - sender).clamp(max=self.config.importance_clip)
        ref_logprobs = None
        if self.tracks_kl:
            with torch.no_grad():
                ref_logprobs, _ = self._reference_logprobs(chunk)
        loss, stats = clipped_surrogate_loss(
            new_logprobs,
            old,
            mask,
            torch.tensor([s.advantage for s in chunk], device=device),
            torch.tensor([s.weight for s in chunk], device=device),
            importance,
            self.config.clip_low,
            self.config.clip_high,
            float(self.token_budget),
            ref_logprobs,
            self.config.kl_beta,
        )
        own_rows = torch.tensor([s.source == "own" for s in chunk], device=device)[:, None] & mask
        stats["kl"] = float((stats.pop("kl_per_token") * own_rows).sum()) if ref_logprobs is not None else 0.0
        stats["kl_tokens"] = float(own_rows.sum())
        stats["importance_max"] = float(importance[mask].max()) if mask.any() else 1.0
        return loss, stats
