"""Checkpoint limits and durability: the prune after a save, a re-save that cannot land, every staged file on disk
before the rename, and the error when no checkpoint can be read."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from disks import Tmpfs

from swarmnode.learn import checkpoint
from swarmnode.learn.checkpoint import Checkpointer, CheckpointError, TrainingState


def tiny_training() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small model after one AdamW step, so its optimizer has tensor state to save."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.ones(2, 4)).square().sum().backward()
    optimizer.step()
    return model, optimizer


def names(checkpointer: Checkpointer) -> list[str]:
    return [path.name for path in checkpointer.checkpoints()]


def clone_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("limit", ["keep_last", "budget"])
def test_the_limits_apply_after_a_save_so_one_that_fails_costs_no_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    """With keep_last=3, or a budget that fits exactly 3 checkpoints, 3 kept: a save that runs out of disk half-way
    leaves all 3; one that succeeds is written beside them, and only then does the oldest go."""
    model, optimizer = tiny_training()
    size = Checkpointer(tmp_path / "probe").save(model, optimizer, TrainingState(round=1)).size
    if limit == "keep_last":
        checkpointer = Checkpointer(tmp_path / "kept", keep_last=3)
    else:
        checkpointer = Checkpointer(tmp_path / "kept", keep_last=10, max_bytes=3 * size)
    for round_number in (1, 2, 3):
        assert checkpointer.save(model, optimizer, TrainingState(round=round_number)).size == size
    three = ["round-00000001", "round-00000002", "round-00000003"]
    write = checkpoint._write_tensors

    def disk_full_after_the_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
        if path.name != "model.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(path, tensors)

    monkeypatch.setattr(checkpoint, "_write_tensors", disk_full_after_the_weights)
    with pytest.raises(CheckpointError, match="No space left on device"):
        checkpointer.save(model, optimizer, TrainingState(round=4))
    assert sorted(path.name for path in (tmp_path / "kept").iterdir()) == three  # the staging directory went too

    monkeypatch.setattr(checkpoint, "_write_tensors", write)
    before_rename: list[list[str]] = []
    rename = os.rename

    def observing_rename(source: Path, destination: Path) -> None:
        before_rename.append(names(checkpointer))
        rename(source, destination)

    monkeypatch.setattr(checkpoint.os, "rename", observing_rename)
    saved = checkpointer.save(model, optimizer, TrainingState(round=4))
    assert before_rename == [three]
    assert names(checkpointer) == ["round-00000002", "round-00000003", "round-00000004"]
    assert saved.disk == 3 * size


def test_a_resave_whose_new_checkpoint_cannot_take_the_place_puts_the_old_one_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-save of a round renames the one there aside; when the new one then cannot be renamed into place, the old
    one goes back and loads: the round's checkpoint is never missing."""
    model, optimizer = tiny_training()
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(model, optimizer, TrainingState(round=1))
    saved = clone_weights(model)
    model(torch.ones(2, 4)).square().sum().backward()
    optimizer.step()
    renamed_to: list[str] = []
    rename = os.rename

    def second_rename_fails(source: Path, destination: Path) -> None:
        renamed_to.append(Path(destination).name)
        if len(renamed_to) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(destination))
        rename(source, destination)

    monkeypatch.setattr(checkpoint.os, "rename", second_rename_fails)
    with pytest.raises(CheckpointError, match="Input/output error"):
        checkpointer.save(model, optimizer, TrainingState(round=1))
    assert renamed_to == [".round-00000001.old", "round-00000001", "round-00000001"]  # aside, the new one, back
    assert sorted(path.name for path in tmp_path.iterdir()) == ["round-00000001"]
    restored = torch.nn.Linear(4, 3)
    assert checkpointer.load(restored, None).round == 1
    assert all(torch.equal(p, saved[name]) for name, p in restored.named_parameters())


def test_a_checkpoint_aside_that_cannot_be_put_back_stops_the_start_with_the_path_and_the_fix(
    tmp_path: Path, tmpfs: Tmpfs
) -> None:
    """Round 1 aside (a kill between a re-save's renames) on a disk now read-only: starting without it would resume
    from nothing, so the start says where it is and what to do."""
    disk = tmpfs.mount(tmp_path / "disk")
    model, optimizer = tiny_training()
    checkpointer = Checkpointer(disk)
    checkpointer.save(model, optimizer, TrainingState(round=1))
    os.rename(disk / "round-00000001", disk / ".round-00000001.old")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(CheckpointError) as raised:
        checkpointer.remove_stale_staging()
    assert str(raised.value) == (
        f"cannot put {disk / '.round-00000001.old'} back as {disk / 'round-00000001'}: Read-only file system; "
        f"make {disk} writable, or rename it by hand"
    )


def test_every_file_of_a_checkpoint_is_fsynced_before_its_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut right after the rename cannot leave a visible checkpoint whose files never reached the disk."""
    model, optimizer = tiny_training()
    state = TrainingState(round=7, generators={"torch": torch.get_rng_state()})  # rng.safetensors too
    synced: list[str] = []
    synced_at_rename: list[set[str]] = []
    fsync_file, fsync_dir, rename = checkpoint.fsync_file, checkpoint.fsync_dir, os.rename

    def recording_fsync_file(path: Path) -> None:
        fsync_file(path)
        synced.append(Path(path).name)

    def recording_fsync_dir(directory: Path) -> None:
        fsync_dir(directory)
        synced.append(Path(directory).name)

    def observing_rename(source: Path, destination: Path) -> None:
        synced_at_rename.append(set(synced))
        rename(source, destination)

    monkeypatch.setattr(checkpoint, "fsync_file", recording_fsync_file)
    monkeypatch.setattr(checkpoint, "fsync_dir", recording_fsync_dir)
    monkeypatch.setattr(checkpoint.os, "rename", observing_rename)
    saved = Checkpointer(tmp_path).save(model, optimizer, state)
    files = {path.name for path in saved.path.iterdir()}
    assert files == {"model.safetensors", "optimizer.json", "optimizer.safetensors", "rng.safetensors", "state.json"}
    [at_rename] = synced_at_rename
    assert files <= at_rename
    assert any(name.startswith(".round-00000007.") for name in at_rename)  # the staging directory's entries too


def test_with_every_checkpoint_unreadable_the_error_names_the_newest_ones_problem(tmp_path: Path) -> None:
    """The operator is told why the checkpoint they would resume from cannot be read, not an older one's reason."""
    model, optimizer = tiny_training()
    checkpointer = Checkpointer(tmp_path)
    for round_number in (1, 2):
        checkpointer.save(model, optimizer, TrainingState(round=round_number))
    (tmp_path / "round-00000001" / "model.safetensors").write_bytes(b"garbage")
    newest_state = tmp_path / "round-00000002" / "state.json"
    newest_state.write_text(json.dumps({**json.loads(newest_state.read_text()), "format_version": 99}))
    with pytest.raises(CheckpointError) as raised:
        checkpointer.load(model, optimizer)
    assert str(raised.value) == f"no readable checkpoint in {tmp_path}: {tmp_path / 'round-00000002'}: checkpoint format 99 is not 1"


def test_a_single_unreadable_checkpoint_gives_its_own_problem(tmp_path: Path) -> None:
    """With one checkpoint, unreadable, load raises a CheckpointError naming it and what is wrong with it."""
    model, optimizer = tiny_training()
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(model, optimizer, TrainingState(round=1))
    (tmp_path / "round-00000001" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*: .*round-00000001: unreadable checkpoint \(SafetensorError"):
        checkpointer.load(model, optimizer)
