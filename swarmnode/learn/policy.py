"""The node's language-model policy: loading, fast group sampling, and log-probs for training.

Any causal LM loads through one `from_pretrained` path (hub id, local directory, or the embedded seed
model). The sampler encodes each prompt once for its G samples and drops finished rows as it goes.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel
from transformers.utils import logging as transformers_logging

from swarmnode.config import LoraConfig, ModelConfig
from swarmnode.host import usable_cpus
from swarmnode.learn.interrupt import Interrupted, ShouldStop, is_out_of_memory, never, release_failed_attempt
from swarmnode.learn.tasks import ANSWER_CLOSE

EMBEDDED_MODEL_NAME = "swarmnode-seed"
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "seed_model"


class PolicyLoadError(Exception):
    """The model could not be loaded; the message says where we looked and what to do."""


class DeviceError(PolicyLoadError):
    """The configured device or dtype cannot be used here; the message says why and what to set instead."""


@dataclass(frozen=True)
class SampledCompletion:
    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # behaviour log-probs of completion_ids, same temperature as training
    text: str  # decoded, cut just after </answer>, without special tokens
    finish_reason: str  # "stop" (</answer>), "eos", or "length"


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 48
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    max_prompt_tokens: int = 256

    @classmethod
    def of(cls, model: ModelConfig) -> SamplingSettings:
        """The node's sampling as configured (training, evaluation and export use the same)."""
        return cls(model.max_new_tokens, model.temperature, model.top_p, model.max_prompt_tokens)


def use_threads(threads: int | Literal["auto"]) -> None:
    """Compute on `threads` threads (auto: the CPUs this process may use) and on one inter-op thread: a node runs
    one op at a time (nothing forks), so more inter-op threads would only add to those competing for the cores."""
    torch.set_num_threads(usable_cpus() if threads == "auto" else threads)
    if torch.get_num_interop_threads() != 1:
        with contextlib.suppress(RuntimeError):  # settable once per process, before its first inter-op work
            torch.set_num_interop_threads(1)


HUB_PROBE_TIMEOUT_S = 3.0


def resolve_model_path(name: str) -> str:
    """The embedded seed model by name, a local directory, or a hub id transformers may fetch. A name that is
    none of these fails here, in a second and with the names it might have meant, instead of after the
    hub client's minute of retries offline."""
    if name == EMBEDDED_MODEL_NAME:
        return str(EMBEDDED_MODEL_DIR)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        what = "is a file, not a model directory" if path.exists() else "no such directory"
        raise PolicyLoadError(f"model {name!r}: {what}; pass a directory holding config.json, the weights and the "
                              f"tokenizer files{_did_you_mean(name)}")
    if _in_hub_cache(name):
        return name
    offline = _hub_unreachable()
    if offline:
        raise PolicyLoadError(
            f"model {name!r} is not the embedded {EMBEDDED_MODEL_NAME}, a local directory or a downloaded hub model, "
            f"and the hub cannot be reached ({offline}); download it where you have network "
            f"(huggingface-cli download {name}) and pass the local directory{_did_you_mean(name)}"
        )
    return name


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not even a valid repo id
        return False


def _hub_unreachable() -> str | None:
    """Why the model hub cannot be asked (offline mode, no name resolution, no route), or None: one quick
    connection, where transformers would retry for a minute before saying the same."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as error:
        return f"{endpoint.hostname}:{port}: {error.strerror or type(error).__name__}"
    return None


def _did_you_mean(name: str) -> str:
    """The known model names closest to a mistyped one: the embedded model, downloaded hub models and model
    directories here."""
    from huggingface_hub import scan_cache_dir

    known = [EMBEDDED_MODEL_NAME]
    with contextlib.suppress(OSError):
        known += [child.name for child in Path.cwd().iterdir() if (child / "config.json").is_file()]
    with contextlib.suppress(Exception):  # no cache yet, or one the hub client cannot read: nothing to suggest
        known += [repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "model"]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f". Did you mean {' or '.join(repr(match) for match in close)}?" if close else ""


def pick_device(requested: str = "auto") -> torch.device:
    """The configured device, or the best one present for `auto`; a device this torch cannot use is one
    PolicyLoadError saying why (a CPU-only build, no GPU visible, no such GPU index), never a silent CPU."""
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                why = (
                    "this torch is a CPU-only build" if torch.version.cuda is None
                    else "torch sees no CUDA GPU (check the driver with nvidia-smi, and CUDA_VISIBLE_DEVICES)"
                )
                raise DeviceError(
                    f"model.device={requested!r} but {why} (torch {torch.__version__}); set model.device=auto "
                    f"(a GPU when there is one) or cpu, or install a CUDA build of torch"
                )
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise DeviceError(
                    f"model.device={requested!r} but only {torch.cuda.device_count()} CUDA GPU(s) are visible"
                )
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(
                f"model.device={requested!r} but MPS is not available here (it needs Apple silicon and a torch "
                f"built with MPS); set model.device=auto or cpu"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with native support (avx512_bf16 / amx); elsewhere they are emulated."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# Below this size, autocast's casts cost more than bf16 matmuls save on a CPU (measured: a 5.5M model
# trains 1.4x faster in float32; a 30M one 1.45x faster and a 104M one 2.4x faster in bf16).
CPU_BF16_MIN_PARAMETERS = 20_000_000


def pick_compute_dtype(requested: str, device: torch.device, parameters: int) -> torch.dtype:
    """The configured compute dtype, or for `auto` the fastest sound one on `device`. float16 trains with a
    loss scaler (sapo.Trainer); bfloat16 on a GPU without it is refused rather than emulated."""
    if requested == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            "model.dtype=bfloat16 but this GPU has no bfloat16 (compute capability below 8.0); "
            "set model.dtype=float16 (trained with loss scaling) or auto"
        )
    if requested != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16() and parameters >= CPU_BF16_MIN_PARAMETERS:
        return torch.bfloat16
    return torch.float32


def _cache_keyword(model: Any) -> str:
    """Recent transformers name the KV-cache argument `cache` and warn on every `past_key_values` call
    (a stray line in a headless node's JSON log); earlier 5.x releases only know `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class Policy:
    """A causal LM plus its tokenizer. Trained weights stay float32 (Adam's updates at a learning rate of
    1e-6 vanish in bfloat16's 8-bit mantissa), frozen ones are kept in `compute_dtype`; the forward passes of
    sampling and training run under autocast in `compute_dtype` (bf16 where the hardware has it)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        model_id: str,
        device: torch.device,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.compute_dtype = compute_dtype
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = _eos_ids(model, tokenizer)
        self._closing_token_ids = _tokens_containing(tokenizer, ">")
        self._closing_tail_tokens = len(tokenizer(ANSWER_CLOSE, add_special_tokens=False).input_ids) + 1
        self._cache_keyword = _cache_keyword(model)
        with self.autocast():
            self.chunked_logits = _splits_at_head(model)  # else the whole-model path, full logits
        self.sample_rows: int | None = None  # rows decoded at once (memory.SamplingPlan); None: all of a call's
        self.should_stop: ShouldStop = never  # asked before every decode step

    @classmethod
    def load(
        cls,
        name: str = EMBEDDED_MODEL_NAME,
        *,
        device: str = "auto",
        dtype: str = "auto",
        lora: LoraConfig | None = None,
        threads: int | Literal["auto"] | None = None,
    ) -> Policy:
        """Load `name` (hub id, local dir, or the embedded seed) through the same from_pretrained path; `threads`
        (model.threads) sets torch's, None leaves them as they are."""
        if threads is not None:
            use_threads(threads)
        transformers_logging.disable_progress_bar()  # a node's logs are JSON lines or a dashboard, not bars
        path = resolve_model_path(name)
        torch_device = pick_device(device)  # before loading: a device we cannot use fails in a second, not after
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except OSError as error:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = (
                "download it where you have network (huggingface-cli download) and pass the local directory"
                if offline or not Path(path).exists()
                else "check that the directory holds config.json, the weights and the tokenizer files"
            )
            raise PolicyLoadError(f"cannot load model {name!r}: {str(error).splitlines()[0]}; {hint}") from None
        if lora:
            model = _with_lora(model, lora)
        parameters = sum(p.numel() for p in model.parameters())
        compute_dtype = pick_compute_dtype(dtype, torch_device, parameters)
        keep_frozen_in(model, compute_dtype)
        model.to(torch_device)
        model.config.use_cache = True
        model_id = name if not Path(name).exists() else Path(name).resolve().name
        return cls(model, tokenizer, model_id, torch_device, compute_dtype)

    @property
    def threads(self) -> int:
        """The CPU threads its computations use: torch's setting, which is the process's."""
        return torch.get_num_threads()

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def encode_prompts(self, prompts: list[str], max_prompt_tokens: int) -> list[list[int]]:
        """Token ids per prompt. A chat template already writes the special tokens it wants (a BOS among
        them): adding them again would double it. An over-long prompt keeps its first half (the system
        header, the start of the question) and its end (the question's end and the assistant's turn)."""
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        ids = self.tokenizer(prompts, add_special_tokens=not templated).input_ids
        head = max_prompt_tokens // 2
        return [row if len(row) <= max_prompt_tokens else row[:head] + row[len(row) - (max_prompt_tokens - head) :] for row in ids]

    def encode_completion(self, text: str) -> list[int]:
        """A peer's completion text in our own tokenization (peers may run other tokenizers)."""
        return self.tokenizer(text, add_special_tokens=False).input_ids

    @torch.inference_mode()
    def sample(
        self,
        prompts: list[str],
        group_size: int,
        settings: SamplingSettings,
        generator: torch.Generator | None = None,
    ) -> list[list[SampledCompletion]]:
        """`group_size` completions per prompt: prompt encoded once per group, finished rows dropped, at most
        `sample_rows` rows (whole groups, at least one) decoded at once. An allocation failure halves
        `sample_rows` for good and redoes the chunk from the generator state it started at; a group of one prompt
        that does not fit is raised. A stop requested (`should_stop`) raises Interrupted before the next step.
        The chunks draw from `generator` in turn, so the same seed samples the same completions only under the same
        chunking: where the plan binds (a budget from the free memory at start) two runs can differ."""
        self.model.eval()
        sampled: list[list[SampledCompletion]] = []
        with self.autocast():  # one region for all decode steps: float32 weights are cast once, not per token
            while len(sampled) < len(prompts):
                rows = self.sample_rows or group_size * len(prompts)
                chunk = prompts[len(sampled) : len(sampled) + max(1, rows // group_size)]
                start_state = generator.get_state() if generator is not None else None
                try:
                    sampled += self._sample(chunk, group_size, settings, generator)
                    continue
                except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
                    if not is_out_of_memory(error) or len(chunk) == 1:
                        raise
                release_failed_attempt(self.device)  # past the handler: the failed attempt's frames are gone
                self.sample_rows = len(chunk) // 2 * group_size
                if generator is not None:
                    generator.set_state(start_state)
        return sampled

    def _sample(
        self,
        prompts: list[str],
        group_size: int,
        settings: SamplingSettings,
        generator: torch.Generator | None,
    ) -> list[list[SampledCompletion]]:
        prompt_ids = self.encode_prompts(prompts, settings.max_prompt_tokens)
        input_ids, attention_mask = _pad(prompt_ids, self.tokenizer.pad_token_id, self.device)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            **{self._cache_keyword: cache},
            use_cache=True,
            logits_to_keep=_last_position(input_ids),
        )
        logits = out.logits[:, -1, :].float().repeat_interleave(group_size, dim=0)
        cache.batch_repeat_interleave(group_size)
        attention_mask = attention_mask.repeat_interleave(group_size, dim=0)
        next_position = positions[:, -1:].repeat_interleave(group_size, dim=0) + 1

        rows = group_size * len(prompts)
        active = torch.arange(rows, device=self.device)
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        reasons = ["length"] * rows
        eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        for step in range(settings.max_new_tokens):
            if self.should_stop():
                raise Interrupted("sample")
            token, token_logprob = _sample_tokens(logits, settings, generator)
            finished = torch.isin(token, eos)
            token_list, logprob_list, finished_list = token.tolist(), token_logprob.tolist(), finished.tolist()
            for i, row in enumerate(active.tolist()):
                tokens[row].append(token_list[i])
                logprobs[row].append(logprob_list[i])
                if finished_list[i]:
                    reasons[row] = "eos"
                elif token_list[i] in self._closing_token_ids and self._closed_answer(tokens[row]):
                    reasons[row] = "stop"
                    finished_list[i] = True
            if step == settings.max_new_tokens - 1:
                break
            keep = torch.tensor([not done for done in finished_list], device=self.device)
            if not keep.any():
                break
            if not keep.all():
                kept = keep.nonzero().squeeze(-1)
                cache.batch_select_indices(kept)
                active, token = active[kept], token[kept]
                attention_mask, next_position = attention_mask[kept], next_position[kept]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(active), 1)], dim=1)
            out = self.model(
                input_ids=token[:, None],
                attention_mask=attention_mask,
                position_ids=next_position,
                **{self._cache_keyword: cache},
                use_cache=True,
            )
            logits = out.logits[:, -1, :].float()
            next_position = next_position + 1

        completions = [
            SampledCompletion(tuple(tokens[row]), tuple(logprobs[row]), self._visible_text(tokens[row]), reasons[row])
            for row in range(rows)
        ]
        return [completions[i * group_size : (i + 1) * group_size] for i in range(len(prompts))]

    def completion_logprobs(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of each completion given its prompt, as [N, T] plus a [N, T] mask, with
        every completion right-aligned (it ends at column T-1).

        Rows that share a prompt (a GRPO group) share one forward pass of it: the prompt's key/value
        cache is computed once, with gradients, and gathered per row, so a group of G costs one prompt
        plus G short completions instead of G full sequences. The vocabulary projection runs a chunk of
        tokens at a time (110 at Qwen's 152k vocabulary), recomputed in the backward pass (`_token_logprobs`):
        the [N, T, vocabulary] logits, 2.5 GB in float32 for 8 x 512 tokens of a 152k vocabulary, never exist.
        """
        slots: dict[tuple[int, ...], int] = {}
        row_prompt = [slots.setdefault(tuple(p), len(slots)) for p in prompt_ids]
        prompt_batch, prompt_mask = _pad([list(p) for p in slots], self.tokenizer.pad_token_id, self.device)
        prompt_positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        rows = torch.tensor(row_prompt, device=self.device)
        completions, completion_mask = _pad(completion_ids, self.tokenizer.pad_token_id, self.device, side="right")
        width = completions.shape[1]
        trunk, head = _trunk_and_head(self.model) if self.chunked_logits else (self.model, torch.nn.Identity())
        output = "last_hidden_state" if self.chunked_logits else "logits"
        keep = {} if self.chunked_logits else {"logits_to_keep": _last_position(prompt_batch)}
        cache_keyword = _cache_keyword(trunk)
        cache = DynamicCache()
        with self.autocast():
            first = getattr(trunk(
                input_ids=prompt_batch,
                attention_mask=prompt_mask,
                position_ids=prompt_positions,
                **{cache_keyword: cache},
                use_cache=True,
                **keep,
            ), output)[:, -1, :]
            cache.batch_select_indices(rows)
            rest = getattr(trunk(
                input_ids=completions,
                attention_mask=torch.cat([prompt_mask[rows], completion_mask], dim=1),
                position_ids=prompt_positions[rows, -1:] + 1 + torch.arange(width, device=self.device)[None, :],
                **{cache_keyword: cache},
                use_cache=True,
            ), output)[:, :-1, :]
            states = torch.cat([first[rows, None, :], rest], dim=1)
            left_aligned = _token_logprobs(head, states, completions, completion_mask.bool(), temperature)
        shift = width - completion_mask.sum(dim=1, keepdim=True)
        source = torch.arange(width, device=self.device)[None, :] - shift
        mask = source >= 0
        right_aligned = torch.gather(left_aligned, 1, source.clamp(min=0)) * mask
        return right_aligned, mask

    def _closed_answer(self, row_tokens: list[int]) -> bool:
        tail = self.tokenizer.decode(row_tokens[-self._closing_tail_tokens :], skip_special_tokens=True)
        return ANSWER_CLOSE in tail

    def _visible_text(self, row_tokens: list[int]) -> str:
        text = self.tokenizer.decode(row_tokens, skip_special_tokens=True)
        end = text.find(ANSWER_CLOSE)
        return text[: end + len(ANSWER_CLOSE)] if end >= 0 else text


def _last_position(ids: torch.Tensor) -> torch.Tensor:
    """`logits_to_keep` for the last position only, as an index rather than the int 1. With 1 transformers slices
    the hidden states to a non-contiguous [rows, 1, hidden] view, and torch's CPU bfloat16 linear takes such an
    input down a path that copies the vocabulary projection once per row: 272 MB a row at Qwen2.5-0.5B's
    151,936 x 896 (8.7 GB for evaluation's 32 prompts) and 200x slower (measured, torch 2.13). An index gathers
    a contiguous copy of the rows' last states instead."""
    return torch.tensor([ids.shape[1] - 1], device=ids.device)


def _sample_tokens(
    logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A token per row and its log-probability under the distribution it was drawn from: with top_p < 1
    the nucleus renormalised, so that the recorded behaviour log-probs are the behaviour policy's. Temperature
    0 is greedy (evaluation): the argmax, with log-probability 0 under that point mass."""
    if settings.temperature == 0:
        token = logits.argmax(dim=-1)
        return token, torch.zeros_like(token, dtype=logits.dtype)
    log_probs = F.log_softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_logp, order = log_probs.sort(dim=-1, descending=True)
        cumulative = sorted_logp.exp().cumsum(-1)
        drop_sorted = cumulative - sorted_logp.exp() > settings.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        log_probs = F.log_softmax(log_probs.masked_fill(drop, float("-inf")), dim=-1)
    token = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
    return token, log_probs.gather(-1, token[:, None]).squeeze(-1)


LOGIT_CHUNK_BYTES = 64 * 2**20  # float32 logits of one chunk of tokens: 110 tokens of a 152k vocabulary


def _trunk_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body (hidden states out) and the vocabulary projection of a causal LM, LoRA or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def _splits_at_head(model: PreTrainedModel) -> bool:
    """Whether logits are exactly head(trunk(ids)): some architectures scale or cap logits after the head,
    and those keep the whole-model path (correct, only without the chunked projection's memory saving)."""
    try:
        trunk, head = _trunk_and_head(model)
    except AttributeError:
        return False
    if not isinstance(trunk, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return False
    device = next(model.parameters()).device
    ids = torch.arange(1, 5, device=device)[None, :]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            whole = model(input_ids=ids, use_cache=False).logits.float()
            split = head(trunk(input_ids=ids, use_cache=False).last_hidden_state).float()
    except torch.OutOfMemoryError:
        raise
    except (TypeError, AttributeError, RuntimeError):
        return False
    finally:
        model.train(training)
    return whole.shape == split.shape and torch.allclose(whole, split, rtol=1e-4, atol=1e-4)


def _chunk_logprobs(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = head(states).float() / temperature
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _token_logprobs(
    head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log p(target) at each masked position of [N, T] hidden states, zero elsewhere. Only masked positions
    are projected, a chunk of LOGIT_CHUNK_BYTES of logits at a time; with gradients each chunk's logits are
    recomputed in the backward pass instead of kept, so training holds one chunk's logits, not N x T of them."""
    positions = mask.flatten().nonzero().squeeze(-1)
    flat_states = states.reshape(-1, states.shape[-1])[positions]
    flat_targets = targets.flatten()[positions]
    vocabulary = head.weight.shape[0] if isinstance(getattr(head, "weight", None), torch.Tensor) else states.shape[-1]
    chunk = max(1, LOGIT_CHUNK_BYTES // (4 * vocabulary))
    pieces = []
    for start in range(0, len(positions), chunk):
        args = (head, flat_states[start : start + chunk], flat_targets[start : start + chunk], temperature)
        if torch.is_grad_enabled():
            pieces.append(torch.utils.checkpoint.checkpoint(_chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(*args))
    values = torch.cat(pieces) if pieces else flat_states.new_zeros(0, dtype=torch.float32)
    return values.new_zeros(mask.numel()).index_put((positions,), values).view(mask.shape)


def _pad(
    rows: list[list[int]], pad_id: int, device: torch.device, side: str = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask of a batch of rows, padded on `side`."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def _eos_ids(model: PreTrainedModel, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return ids


def _tokens_containing(tokenizer: Any, fragment: str) -> set[int]:
    """Ids whose text contains `fragment`: only after one of these can </answer> have just closed."""
    vocab_size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(vocab_size)])
    return {i for i, text in enumerate(texts) if fragment in text}


def keep_frozen_in(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Weights training never changes (a LoRA model's base) are kept in the compute dtype: half the memory
    in bfloat16, and no cast per forward pass. Trained weights stay float32 masters (docs/DESIGN.md §9)."""
    if dtype == torch.float32:
        return
    for parameter in model.parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(dtype)


def _with_lora(model: PreTrainedModel, lora: LoraConfig) -> PreTrainedModel:
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError:
        raise PolicyLoadError("model.lora needs peft: pip install 'swarmnode[lora]'") from None
    with warnings.catch_warnings():
        # peft (0.21) asks the model `is_gradient_checkpointing`, which transformers 5 deprecated for
        # `is_activation_checkpointing` with a FutureWarning: a line of peft's on a volunteer's stderr at every
        # start, nothing this node can act on. Only that warning is silenced, only here.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, PeftLoraConfig(task_type="CAUSAL_LM", **lora.model_dump()))
