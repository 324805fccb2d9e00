"""Checkpoints: everything a node needs to resume exactly where it was, written so a crash cannot tear one.

A checkpoint is a directory `round-NNNNNNNN/` (weights as safetensors, optimizer state, RNG states,
JSON state), assembled under a temporary name, fsynced, then renamed into place; the last K are kept.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from swarmnode.files import fsync_dir, fsync_file

_NAME = re.compile(r"^round-(\d{8})$")
FORMAT_VERSION = 1


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


class Checkpointer:
    def __init__(self, directory: Path, keep_last: int = 3) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState) -> Path:
        """Write a complete checkpoint or nothing (the previous ones stay intact on any error)."""
        final = self.directory / f"round-{state.round:08d}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.directory))
        except OSError as error:
            raise CheckpointError(self._write_hint(error)) from None
        try:
            save_file(_trainable_tensors(model), staging / "model.safetensors")
            buffer = io.BytesIO()
            torch.save(optimizer.state_dict(), buffer)
            (staging / "optimizer.pt").write_bytes(buffer.getvalue())
            if state.generators:
                save_file({k: v.contiguous() for k, v in state.generators.items()}, staging / "rng.safetensors")
            meta = {k: v for k, v in asdict(state).items() if k != "generators"}
            meta["format_version"] = FORMAT_VERSION
            (staging / "state.json").write_text(json.dumps(meta, indent=1))
            for path in staging.iterdir():
                fsync_file(path)
            fsync_dir(staging)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
            fsync_dir(self.directory)
        except (OSError, SafetensorError) as error:  # safetensors reports ENOSPC as its own error type
            shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointError(self._write_hint(error)) from None
        self._prune()
        return final

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name) and (p / "state.json").exists()]
        return sorted(found, key=lambda p: p.name)

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
        """Drop directories left by a save that was killed half-way; they were never visible as checkpoints."""
        if not self.directory.is_dir():
            return 0
        stale = [p for p in self.directory.iterdir() if p.name.startswith(".round-") and p.name.endswith(".tmp")]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return len(stale)

    def _prune(self) -> None:
        for old in self.checkpoints()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def _write_hint(self, error: Exception) -> str:
        return (
            f"cannot write a checkpoint in {self.directory}: {getattr(error, 'strerror', None) or error}; "
            "free disk space or point --data-dir at a writable directory (the previous checkpoint is intact)"
        )


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> TrainingState:
    try:
        meta = json.loads((path / "state.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
        tensors = load_file(path / "model.safetensors", device=str(next(model.parameters()).device))
        _load_trainable(model, tensors, path)
        if optimizer is not None:
            optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
            optimizer.load_state_dict(optimizer_state)
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


def _trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that training changes (tied weights appear once; with LoRA, only the adapters)."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


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

