"""Checkpoints: everything a node needs to resume exactly where it was, written so a crash cannot tear one.

A checkpoint is a directory `round-NNNNNNNN/`: trainable weights (model.safetensors), the optimizer's
tensors (optimizer.safetensors) and hyperparameters (optimizer.json), RNG states (rng.safetensors) and JSON
state (state.json), assembled under a temporary name, fsynced, then renamed into place. Tensors go to disk
from their own memory, so a save on a CPU holds no copy of the state (a 0.5B model's AdamW state is 4 GB).
Only once a new one is in place do the oldest go, down to the last `keep_last` within a disk budget (never the
newest): a save that fails, on a full disk say, leaves every earlier checkpoint, and needs room for one more
than those kept. A re-save of a round renames the one there aside (`.round-NNNNNNNN.old`) until the new one is
in place, so a kill at any instant leaves a checkpoint of that round (`remove_stale_staging` settles it).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from swarmnode.files import fsync_dir, fsync_file

_NAME = re.compile(r"^round-(\d{8})$")
_ASIDE = re.compile(r"^\.(round-\d{8})\.old$")  # a checkpoint renamed aside while a re-save of its round lands
# kept at 1 when optimizer.pt gave way to optimizer.safetensors + optimizer.json: the files tell the two apart,
# and an older swarmnode still exports (reads the weights of) a newer checkpoint
FORMAT_VERSION = 1
# the keys of an optimizer's param group that are lists; its other sequences (AdamW's betas) are tuples
_LIST_KEYS = ("params", "param_names")


class CheckpointError(Exception):
    """A checkpoint could not be written or read; the message names the path and the fix."""


@dataclass
class TrainingState:
    """The non-tensor part of a node's progress. `rng` holds random.Random states by name."""

    round: int = 0
    sequence: int = 0
    rng: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    generators: dict[str, torch.Tensor] = field(default_factory=dict)  # torch RNG states by name
    health: dict[str, Any] = field(default_factory=dict)  # the collapse monitor's moving averages
    held_out: dict[str, Any] = field(default_factory=dict)  # "base" and "last" evaluations (EvalResult.to_dict)


def random_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def random_state_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


@dataclass(frozen=True)
class SavedCheckpoint:
    """What a save wrote and cost, for the node's metrics and its event line."""

    path: Path
    size: int  # bytes of this checkpoint
    seconds: float  # the whole save: write, fsync, rename, prune
    disk: int  # bytes of all checkpoints kept after it


class Checkpointer:
    def __init__(self, directory: Path, keep_last: int = 3, max_bytes: float = math.inf) -> None:
        """After each save keep the newest `keep_last` checkpoints, fewer where they would take more than
        `max_bytes`; the newest complete checkpoint is never removed."""
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.max_bytes = max_bytes

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState) -> SavedCheckpoint:
        """Write a complete checkpoint or nothing: on any error every checkpoint there was is intact, as those
        beyond keep_last or the disk budget go only once this one is in place."""
        started = time.perf_counter()
        final = self.path(state.round)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.directory))
        except OSError as error:
            raise CheckpointError(self._write_hint(error)) from None
        try:
            _write_tensors(staging / "model.safetensors", _trainable_tensors(model))
            optimizer_tensors, optimizer_meta = _split_optimizer_state(optimizer.state_dict())
            _write_tensors(staging / "optimizer.safetensors", optimizer_tensors)
            (staging / "optimizer.json").write_text(json.dumps(optimizer_meta, indent=1))
            if state.generators:
                _write_tensors(staging / "rng.safetensors", state.generators)
            meta = {k: v for k, v in asdict(state).items() if k != "generators"}
            meta["format_version"] = FORMAT_VERSION
            (staging / "state.json").write_text(json.dumps(meta, indent=1))
            for path in staging.iterdir():
                fsync_file(path)
            fsync_dir(staging)
            self._move_into_place(staging, final)
        except (OSError, SafetensorError) as error:  # safetensors reports ENOSPC as its own error type
            shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointError(self._write_hint(error)) from None
        disk = self._prune()
        return SavedCheckpoint(final, _disk_size(final), time.perf_counter() - started, disk)

    def path(self, round: int) -> Path:
        """Where the checkpoint after `round` rounds is (or would be) kept."""
        return self.directory / f"round-{round:08d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first; a checkpoint renamed aside whose round is missing (a re-save was
        killed between its renames) counts, at its aside path, for readers that must not repair the directory
        (export, without the node's lock)."""
        if not self.directory.is_dir():
            return []
        found = {}
        for path in self.directory.iterdir():
            aside = _ASIDE.match(path.name)
            name = aside[1] if aside else path.name
            if _NAME.match(name) and (path / "state.json").exists() and (name not in found or not aside):
                found[name] = path
        return [found[name] for name in sorted(found)]

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> TrainingState | None:
        """Restore the newest readable checkpoint (falling back to older ones), or None if there is none."""
        errors = []
        for path in reversed(self.checkpoints()):
            try:
                return load_checkpoint(path, model, optimizer)
            except CheckpointError as error:
                errors.append(str(error))
        if errors:
            raise CheckpointError(f"no readable checkpoint in {self.directory}: {errors[0]}")
        return None

    def remove_stale_staging(self) -> int:
        """Settle what saves killed half-way left (at start, before `load`, the data dir locked): their staging
        directories, never visible as checkpoints, go; a checkpoint renamed aside for a re-save of its round goes
        back into place if the new one never took it, else goes. Returns how many leftovers it settled."""
        if not self.directory.is_dir():
            return 0
        settled = 0
        for path in list(self.directory.iterdir()):
            aside = _ASIDE.match(path.name)
            if aside and not (self.directory / aside[1]).exists():
                try:
                    os.rename(path, self.directory / aside[1])
                    fsync_dir(self.directory)
                except OSError as error:
                    raise CheckpointError(
                        f"cannot put {path} back as {self.directory / aside[1]}: {error.strerror or error}; "
                        f"make {self.directory} writable, or rename it by hand"
                    ) from None
            elif aside or (path.name.startswith(".round-") and path.name.endswith(".tmp")):
                shutil.rmtree(path, ignore_errors=True)
            else:
                continue
            settled += 1
        return settled

    def _move_into_place(self, staging: Path, final: Path) -> None:
        """Rename `staging` to `final`. A checkpoint of the same round there is renamed aside first and deleted
        only once the new one is in place: a kill at any instant leaves one of the two."""
        aside = final.with_name(f".{final.name}.old")
        replacing = final.exists()
        if replacing:
            os.rename(final, aside)
        try:
            os.rename(staging, final)
        except OSError:
            if replacing:
                os.rename(aside, final)
            raise
        fsync_dir(self.directory)
        if replacing:
            shutil.rmtree(aside, ignore_errors=True)

    def _prune(self) -> int:
        """Drop the oldest checkpoints until at most keep_last remain within max_bytes; never the newest.
        Returns the bytes of those kept."""
        kept = [(path, _disk_size(path)) for path in self.checkpoints()]
        while len(kept) > 1 and (len(kept) > self.keep_last or sum(size for _, size in kept) > self.max_bytes):
            shutil.rmtree(kept.pop(0)[0], ignore_errors=True)
        return sum(size for _, size in kept)

    def _write_hint(self, error: Exception) -> str:
        return (
            f"cannot write a checkpoint in {self.directory}: {getattr(error, 'strerror', None) or error}; "
            "free disk space (a save needs room for one checkpoint more than those kept) or point --data-dir at a "
            "writable directory"
        )


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> TrainingState:
    try:
        meta = json.loads((path / "state.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
        tensors = load_file(path / "model.safetensors", device=str(next(model.parameters()).device))
        _load_trainable(model, tensors, path)
        if optimizer is not None:
            _load_optimizer(optimizer, _read_optimizer_state(path))
        generators = load_file(path / "rng.safetensors") if (path / "rng.safetensors").exists() else {}
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    return TrainingState(
        round=meta["round"],
        sequence=meta["sequence"],
        rng=meta["rng"],
        counters=meta["counters"],
        generators=generators,
        health=meta.get("health", {}),  # checkpoints before 2026-11-30 have none: the monitor starts afresh
        held_out=meta.get("held_out", {}),
    )


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors straight from the tensors' memory on a CPU (no copy of a contiguous CPU tensor); from a GPU
    one host copy of the state, freed after the write."""
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, path)


def _split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as tensors named `index.key` (AdamW: step, exp_avg, exp_avg_sq per
    parameter) and JSON (param groups, any non-tensor state): no pickle, no copy."""
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                other.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": other}


def _read_optimizer_state(path: Path) -> dict[str, Any]:
    """The optimizer's state dict. Older checkpoints hold it as optimizer.pt (torch.save), read here without
    unpickling code (weights_only), so a node upgraded in place resumes."""
    if not (path / "optimizer.safetensors").exists():
        return torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    meta = json.loads((path / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {int(index): dict(entries) for index, entries in meta["state"].items()}
    for name, tensor in load_file(path / "optimizer.safetensors").items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    groups = [
        {key: tuple(value) if isinstance(value, list) and key not in _LIST_KEYS else value for key, value in group.items()}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The saved state, with this run's implementation flags: a checkpoint from a device with fused AdamW
    resumes on one without it (load_state_dict would take the saved `fused` and fail at the first step)."""
    implementation = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, implementation):
        group.update(flags)


def _disk_size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.iterdir())


def _trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that training changes (tied weights appear once; with LoRA, only the adapters)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        raise CheckpointError(f"{path}: weights do not match this model (was the model changed in the config?)")
    with torch.no_grad():
        parameters = dict(model.named_parameters())
        for name, value in tensors.items():
            if parameters[name].shape != value.shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, model wants {tuple(parameters[name].shape)}")
            parameters[name].copy_(value)

