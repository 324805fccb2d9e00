"""Export: a node's trained policy as a model directory that transformers loads offline, with a model card.

The directory holds safetensors weights, config, tokenizer and generation config (LoRA merged into the
weights, or kept as a peft adapter on the base), plus README.md: base model, swarm, rounds, configuration
and held-out pass rates per family before and after. `push` uploads it to a model hub (opt-in).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from transformers import GenerationConfig

from swarmnode.config import CONFIG_FILENAME, NodeConfig, load_config
from swarmnode.files import fsync_dir, fsync_file
from swarmnode.learn.checkpoint import Checkpointer, CheckpointError
from swarmnode.learn.evaluation import EvalResult, evaluate, held_out_tasks
from swarmnode.learn.policy import Policy, SamplingSettings, resolve_model_path
from swarmnode.learn.tasks import SYSTEM_PROMPT, TaskSuite
from swarmnode.ops.metrics import read_records


class ExportError(Exception):
    """The export cannot be made; the message names the path and the fix."""


@dataclass
class Trained:
    """A data dir's policy at its newest checkpoint, with the config it ran with."""

    config: NodeConfig
    policy: Policy
    rounds: int
    held_out: dict[str, Any]  # "base" and "last" evaluations the node recorded


def is_data_dir(path: Path) -> bool:
    return (Path(path) / CONFIG_FILENAME).is_file() and (Path(path) / "checkpoints").is_dir()


def load_trained(data_dir: Path, config: NodeConfig | None = None) -> Trained:
    """Rebuild the node's model from its config and load the newest checkpoint's weights (no optimizer)."""
    data_dir = Path(data_dir)
    if config is None:
        if not (data_dir / CONFIG_FILENAME).is_file():
            raise ExportError(
                f"{data_dir / CONFIG_FILENAME} does not exist: is {data_dir} a node's data dir? "
                "(nodes write it at start; for an older data dir pass the config it ran with: --config FILE)"
            )
        config = load_config(data_dir / CONFIG_FILENAME)
    model = config.model
    policy = Policy.load(model.name, device="cpu", dtype=model.dtype, lora=model.lora, threads=model.threads)
    try:
        state = Checkpointer(data_dir / "checkpoints").load(policy.model, None)
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    if state is None:
        raise ExportError(f"{data_dir / 'checkpoints'} holds no checkpoint: run the node for a few rounds first")
    policy.model_id = f"{policy.model_id}@{data_dir.resolve().name}:round-{state.round}"
    return Trained(config, policy, state.round, dict(state.held_out))


def held_out_before_after(trained: Trained) -> tuple[EvalResult | None, EvalResult]:
    """The base model's recorded evaluation and one of the exported weights (recorded if the node evaluated
    at the checkpoint's round, else run now on the same questions)."""
    base = trained.held_out.get("base")
    last = trained.held_out.get("last")
    if last is not None and last["after_rounds"] == trained.rounds:
        return (EvalResult.from_dict(base) if base else None), EvalResult.from_dict(last)
    config = trained.config
    suite = TaskSuite.of(config.tasks)
    result = evaluate(
        trained.policy, suite, held_out_tasks(suite, config.eval.questions_per_family),
        SamplingSettings.of(config.model), config.eval.samples_per_question,
    )
    return (EvalResult.from_dict(base) if base else None), replace(result, after_rounds=trained.rounds)


def export_model(data_dir: Path, out: Path, *, adapter: bool = False, force: bool = False,
                 config: NodeConfig | None = None) -> Path:
    """Write the export to `out` (assembled beside it and renamed into place: never half-written)."""
    out = Path(out)
    data, target = Path(data_dir).resolve(), out.resolve()
    if target == data or target in data.parents:
        raise ExportError(f"{out} is or holds the data dir {data_dir}: replacing it would delete the node's "
                          f"checkpoints; export to another directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty: choose another directory or pass --force")
    trained = load_trained(data_dir, config)
    if adapter and not trained.config.model.lora:
        raise ExportError("--adapter needs a LoRA run (model.lora in the config); this run trained every weight")
    before, after = held_out_before_after(trained)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_model(trained, staging, adapter)
        (staging / "README.md").write_text(model_card(trained, before, after, adapter, Path(data_dir)))
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_file(path)
        fsync_dir(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_model(trained: Trained, directory: Path, adapter: bool) -> None:
    policy, model_config = trained.policy, trained.config.model
    model = policy.model
    if model_config.lora and not adapter:
        model = model.float().merge_and_unload()  # a bfloat16 base would round the trained delta away
    if adapter:
        model.peft_config["default"].base_model_name_or_path = resolve_model_path(model_config.name)
    model.save_pretrained(directory, safe_serialization=True)
    policy.tokenizer.save_pretrained(directory)
    settings = SamplingSettings.of(model_config)
    GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=sorted(policy.eos_ids),
        pad_token_id=policy.tokenizer.pad_token_id,
    ).save_pretrained(directory)


def model_card(trained: Trained, before: EvalResult | None, after: EvalResult, adapter: bool, data_dir: Path) -> str:
    config = trained.config
    base = config.model.name
    metadata = {
        "library_name": "peft" if adapter else "transformers",
        "base_model": base if not Path(base).exists() and base != "swarmnode-seed" else None,
        "tags": ["swarmnode", "sapo", "reinforcement-learning", "reasoning-gym"],
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}
    families = sorted(after.families)
    rows = [
        f"| {family} | {_rate(before, family, 'greedy')} → {after.families[family].greedy:.3f} "
        f"| {_rate(before, family, 'sampled')} → {after.families[family].sampled:.3f} |"
        for family in families
    ]
    rows.append(
        f"| **mean** | {f'{before.greedy:.3f}' if before else '—'} → {after.greedy:.3f} "
        f"| {f'{before.sampled:.3f}' if before else '—'} → {after.sampled:.3f} |"
    )
    records = read_records(data_dir / "metrics.jsonl") if (data_dir / "metrics.jsonl").exists() else []
    peer_groups = sum(r.groups_external for r in records)
    counted = [r.questions for r in records if r.questions]  # lines written before the count existed have 0
    asked = sum(counted) / len(counted) if counted else config.sapo.questions_per_round
    sapo = config.sapo
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# {data_dir.resolve().name}: {base} post-trained with SAPO

Trained by a swarmnode node: {trained.rounds} rounds of SAPO (Swarm sAmpling Policy
Optimization) in swarm `{config.swarm.id}` on reasoning-gym tasks with verifiable rewards. Each round the node
sampled {asked:.3g} questions × {sapo.completions_per_question} completions ({sapo.sampling} sampling) and trained on
up to {sapo.local_groups} own + {sapo.external_groups} peers' groups (clipped GRPO-style loss, ε {sapo.clip_low}/{sapo.clip_high},
no KL, learning rate {config.optimizer.learning_rate}). Groups from peers trained on: {peer_groups} (in {len(records)} recorded rounds).

- Base model: `{base}`{" (the embedded seed policy of swarmnode)" if base == "swarmnode-seed" else ""}
- Weights: {"a LoRA adapter on the base (peft)" if adapter else "LoRA merged into the weights" if config.model.lora else "full fine-tune"}
- Task families (weight): {", ".join(f"{f.name} ({f.weight:g})" for f in config.tasks.families)}; reward `{config.tasks.reward.value}`

## Held-out pass rate

Reserved reasoning-gym items no swarmnode node trains on ({after.questions} questions,
{after.samples_per_question} samples each at temperature {config.model.temperature}; greedy is one argmax completion).
Before is the base model at round 0, after is this export.

| family | greedy: before → after | sampled: before → after |
|---|---|---|
{chr(10).join(rows)}

## Use

The model was trained on this prompt: {"the tokenizer's chat template with the system prompt below" if getattr(trained.policy.tokenizer, "chat_template", None) else "the question, then a line `Answer with <answer>…</answer>.`"}.

> {SYSTEM_PROMPT}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```

## Configuration

```json
{json.dumps(config.model_dump(mode="json", include={"model", "sapo", "tasks", "swarm"}), indent=1)}
```
"""


def _rate(result: EvalResult | None, family: str, mode: str) -> str:
    if result is None or family not in result.families:
        return "—"
    return f"{getattr(result.families[family], mode):.3f}"


def push(directory: Path, repo_id: str, *, private: bool = True, token: str | None = None,
         endpoint: str | None = None) -> str:
    """Upload an export to a model hub (huggingface_hub); returns the repo URL. Needs the network and a token
    (HF_TOKEN or `huggingface-cli login`)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        raise ExportError("HF_HUB_OFFLINE=1 is set: uploading needs the network; unset it for this command")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model",
                          commit_message="swarmnode export")
    except HfHubHTTPError as error:
        raise ExportError(f"upload to {repo_id} failed: {str(error).splitlines()[0]}") from None
    except OSError as error:  # huggingface_hub's transport errors are OSErrors
        raise ExportError(f"upload to {repo_id} failed: {error} (is the hub reachable from here?)") from None
    return str(url)
