import re
import signal
import subprocess
import sys

import pytest
import torch

from swarmnode.config import load_config
from swarmnode.learn import checkpoint
from swarmnode.learn.checkpoint import Checkpointer, CheckpointError, TrainingState
from swarmnode.learn.learner import Learner
from swarmnode.learn.policy import Policy
from swarmnode.learn.tasks import TaskSuite
from swarmnode.ops.metrics import Metrics, Status

CONFIG = load_config(
    None,
    ["sapo.questions_per_round=3", "sapo.completions_per_question=4", "model.max_new_tokens=8",
     "sapo.local_groups=3", "sapo.external_groups=0", "sapo.min_own_groups=0", "model.dtype=float32"],
)


def fresh_learner() -> Learner:
    torch.manual_seed(0)
    suite = TaskSuite.of(CONFIG.tasks)
    return Learner.of(CONFIG, Policy.load(dtype="float32"), suite, seed=5, data_seed=9)


def run_rounds(learner: Learner, rounds: int) -> list[float]:
    rewards = []
    for _ in range(rounds):
        own = learner.sample_round()
        learner.train(own.groups, [])
        rewards.append(own.mean_reward)
    return rewards


def save(learner: Learner, directory, round_number: int) -> None:
    state = learner.capture(TrainingState(round=round_number, sequence=round_number * 10, counters={"rounds": round_number}))
    Checkpointer(directory).save(learner.policy.model, learner.trainer.optimizer, state)


@pytest.fixture
def single_thread():
    """Multi-threaded CPU kernels may sum in a different order run to run; one thread makes bits repeatable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resume_continues_exactly_like_an_unbroken_run(tmp_path, single_thread):
    unbroken = fresh_learner()
    expected = run_rounds(unbroken, 4)

    first = fresh_learner()
    observed = run_rounds(first, 2)
    save(first, tmp_path, 2)
    resumed = fresh_learner()
    state = Checkpointer(tmp_path).load(resumed.policy.model, resumed.trainer.optimizer)
    resumed.restore(state)
    assert (state.round, state.sequence, state.counters) == (2, 20, {"rounds": 2})
    observed += run_rounds(resumed, 2)

    assert observed == expected
    for a, b in zip(unbroken.policy.model.parameters(), resumed.policy.model.parameters()):
        assert torch.equal(a, b)


def test_only_the_last_k_are_kept_and_a_half_written_one_is_invisible(tmp_path):
    learner = fresh_learner()
    checkpointer = Checkpointer(tmp_path, keep_last=2)
    for round_number in (1, 2, 3):
        state = learner.capture(TrainingState(round=round_number))
        checkpointer.save(learner.policy.model, learner.trainer.optimizer, state)
    assert [p.name for p in checkpointer.checkpoints()] == ["round-00000002", "round-00000003"]
    (tmp_path / ".round-00000004.abc.tmp").mkdir()  # a save killed before its rename
    assert checkpointer.latest().name == "round-00000003"
    assert checkpointer.remove_stale_staging() == 1


def killed_save_weights() -> dict[str, dict[str, torch.Tensor]]:
    """The weights KILLED_SAVE saves as round 1 ("first") and then tries to save ("second")."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    weights = {"first": {name: p.detach().clone() for name, p in model.named_parameters()}}
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    weights["second"] = {name: p.detach().clone() for name, p in model.named_parameters()}
    return weights


KILLED_SAVE = """
import os, shutil, signal, sys
import torch
from swarmnode.learn import checkpoint
from swarmnode.learn.checkpoint import Checkpointer, TrainingState

directory, round_number, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters())
Checkpointer(directory).save(model, optimizer, TrainingState(round=1))
model(torch.ones(1, 4)).sum().backward()
optimizer.step()
steps = 0

def step():
    global steps
    steps += 1
    if steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

write, rename, rmtree = checkpoint._write_tensors, os.rename, shutil.rmtree
checkpoint._write_tensors = lambda *args: (write(*args), step())
os.rename = lambda *args: (step(), rename(*args))
shutil.rmtree = lambda *args, **kwargs: (step(), rmtree(*args, **kwargs))
Checkpointer(directory).save(model, optimizer, TrainingState(round=round_number))
"""


@pytest.mark.parametrize(
    ("round_number", "kill_at", "left", "resumes"),
    [
        (2, 1, ["round-00000001"], "first"),
        (2, 2, ["round-00000001"], "first"),
        (2, 3, ["round-00000001"], "first"),
        (1, 4, [".round-00000001.old"], "first"),  # the only checkpoint of round 1 is aside
        (1, 5, [".round-00000001.old", "round-00000001"], "second"),
    ],
    ids=["after-weights", "after-optimizer", "before-rename", "resave-between-renames", "resave-before-dropping-the-old"],
)
def test_a_save_killed_at_any_step_leaves_a_complete_checkpoint_of_round_1(tmp_path, round_number, kill_at, left, resumes):
    """A real SIGKILL in the middle of saving round 2, or re-saving round 1 (a stop right after a periodic save),
    round 1 saved: after the restart's clean-up the directory holds round 1 and nothing else, and it loads the
    weights of the save that last completed its rename."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(tmp_path), str(round_number), str(kill_at)], capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".tmp")) == left
    expected = killed_save_weights()[resumes]
    checkpointer = Checkpointer(tmp_path)
    reader = torch.nn.Linear(4, 4)  # what export reads, before (without) the node's repair
    assert [path.name for path in checkpointer.checkpoints()] == [left[-1]]
    assert checkpointer.load(reader, None).round == 1
    assert all(torch.equal(p, expected[name]) for name, p in reader.named_parameters())
    checkpointer.remove_stale_staging()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["round-00000001"]
    model = torch.nn.Linear(4, 4)
    assert checkpointer.load(model, torch.optim.AdamW(model.parameters())).round == 1
    assert all(torch.equal(p, expected[name]) for name, p in model.named_parameters())


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    learner = fresh_learner()
    checkpointer = Checkpointer(tmp_path, keep_last=3)
    for round_number in (1, 2):
        checkpointer.save(learner.policy.model, learner.trainer.optimizer, learner.capture(TrainingState(round=round_number)))
    (tmp_path / "round-00000002" / "model.safetensors").write_bytes(b"garbage")
    state = checkpointer.load(learner.policy.model, learner.trainer.optimizer)
    assert state.round == 1


def test_a_full_disk_fails_the_save_costs_no_checkpoint_and_a_save_with_room_again_succeeds(tmp_path, tmpfs):
    """keep_last=2, and a disk with room for the two kept but not a third: saving round 3, or re-saving round 2, runs
    out of space half-way through; rounds 1 and 2 stay as they were (the fallback too) and nothing half-written
    does. Once there is room, round 3 saves; on a read-only disk a save fails as clearly."""
    disk = tmpfs.mount(tmp_path / "disk")
    checkpointer = Checkpointer(disk, keep_last=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(1024, 512)  # a 6 MB checkpoint: 2 MB of weights, then 4 MB of AdamW moments
    optimizer = torch.optim.AdamW(model.parameters())

    def train_step() -> None:
        optimizer.zero_grad()
        model(torch.ones(2, 1024)).square().sum().backward()
        optimizer.step()

    for round_number in (1, 2):
        train_step()
        size = checkpointer.save(model, optimizer, TrainingState(round=round_number)).size
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_step()
    tmpfs.leave_free(disk, size // 2)  # the weights fit, the moments do not
    for round_number in (3, 2):
        with pytest.raises(CheckpointError, match=rf"in {re.escape(str(disk))}: .*No space left on device.*; free disk space"):
            checkpointer.save(model, optimizer, TrainingState(round=round_number))
        assert sorted(p.name for p in disk.iterdir()) == ["round-00000001", "round-00000002"]  # nothing else
    resumed = torch.nn.Linear(1024, 512)
    assert checkpointer.load(resumed, None).round == 2
    assert all(torch.equal(p, weights[name]) for name, p in resumed.named_parameters())

    tmpfs.leave_free(disk, 2 * size)
    assert checkpointer.save(model, optimizer, TrainingState(round=3)).path == disk / "round-00000003"
    assert checkpointer.load(resumed, None).round == 3
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), model.parameters()))
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(CheckpointError, match="writable directory"):
        checkpointer.save(model, optimizer, TrainingState(round=4))
    assert sorted(p.name for p in disk.iterdir()) == ["round-00000002", "round-00000003"]


def tiny_training(steps: int, seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small model after `steps` AdamW steps; its last layer never gets a gradient, so has no optimizer state."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)
    for _ in range(steps):
        tiny_step(model, optimizer)
    return model, optimizer


def tiny_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    model[:3](torch.linspace(-1, 1, 24).reshape(4, 6)).square().sum().backward()
    optimizer.step()


def directory_bytes(directory) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


@pytest.mark.parametrize("layout", ["optimizer.safetensors", "optimizer.pt"])
def test_the_optimizer_state_round_trips_exactly_and_training_goes_on_as_if_never_saved(tmp_path, layout):
    model, optimizer = tiny_training(steps=2)
    saved = Checkpointer(tmp_path).save(model, optimizer, TrainingState(round=2))
    assert sorted(p.name for p in saved.path.iterdir()) == [
        "model.safetensors", "optimizer.json", "optimizer.safetensors", "state.json"
    ]
    if layout == "optimizer.pt":  # what a node wrote before this layout: its checkpoints must still resume
        (saved.path / "optimizer.safetensors").unlink()
        (saved.path / "optimizer.json").unlink()
        torch.save(optimizer.state_dict(), saved.path / "optimizer.pt")

    resumed, resumed_optimizer = tiny_training(steps=0, seed=1)
    assert Checkpointer(tmp_path).load(resumed, resumed_optimizer).round == 2
    expected, observed = optimizer.state_dict(), resumed_optimizer.state_dict()
    assert observed["param_groups"] == expected["param_groups"]  # betas a tuple again, as AdamW made it
    assert sorted(observed["state"]) == sorted(expected["state"]) == [0, 1, 2, 3]
    for index, entries in expected["state"].items():
        assert sorted(observed["state"][index]) == sorted(entries) == ["exp_avg", "exp_avg_sq", "step"]
        for key, value in entries.items():
            assert torch.equal(observed["state"][index][key], value)

    tiny_step(model, optimizer)
    tiny_step(resumed, resumed_optimizer)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_a_save_reports_its_size_and_seconds(tmp_path):
    model, optimizer = tiny_training(steps=1)
    checkpointer = Checkpointer(tmp_path)
    first = checkpointer.save(model, optimizer, TrainingState(round=1))
    second = checkpointer.save(model, optimizer, TrainingState(round=2))
    assert second.size == directory_bytes(second.path)
    assert second.disk == first.size + second.size == directory_bytes(tmp_path)
    assert 0 < second.seconds < 60


def test_the_disk_budget_keeps_the_newest_and_holds_between_saves(tmp_path, monkeypatch):
    model, optimizer = tiny_training(steps=1)
    size = Checkpointer(tmp_path / "probe").save(model, optimizer, TrainingState(round=1)).size
    used_while_writing = []
    fsync_dir = checkpoint.fsync_dir

    def measuring_fsync_dir(directory) -> None:  # called with the new checkpoint complete, before and after its rename
        used_while_writing.append(directory_bytes(tmp_path / "budget"))
        fsync_dir(directory)

    monkeypatch.setattr(checkpoint, "fsync_dir", measuring_fsync_dir)
    checkpointer = Checkpointer(tmp_path / "budget", keep_last=5, max_bytes=2.5 * size)
    for round_number in range(1, 5):
        saved = checkpointer.save(model, optimizer, TrainingState(round=round_number))
    assert [p.name for p in checkpointer.checkpoints()] == ["round-00000003", "round-00000004"]
    assert saved.disk == 2 * size
    assert max(used_while_writing) == 3 * size  # the two kept stay until the new one is in place

    alone = Checkpointer(tmp_path / "budget", keep_last=5, max_bytes=size / 2)  # smaller than one checkpoint
    saved = alone.save(model, optimizer, TrainingState(round=5))
    assert [p.name for p in alone.checkpoints()] == ["round-00000005"] and saved.disk == size
    assert used_while_writing[-2:] == [3 * size, 3 * size]  # rounds 3 and 4 stayed until round 5 was in place


def test_the_metrics_and_the_event_carry_a_saves_size_and_seconds():
    metrics = Metrics(None, Status())
    metrics.set_checkpoint("round-00000020", 5_930_000_000, 41.23, 11_860_000_000)
    value = metrics.registry.get_sample_value
    assert value("swarmnode_checkpoint_bytes") == 5_930_000_000
    assert value("swarmnode_checkpoint_seconds") == 41.23
    assert value("swarmnode_checkpoints_disk_bytes") == 11_860_000_000
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d checkpoint round-00000020 \(5\.9 GB in 41\.2 s; 11\.9 GB kept in all\)", metrics.status.events[-1]
    )
    metrics.set_checkpoint("round-00000021", 12_400_000, 0.31, 37_200_000)  # LoRA: MB, not 0.0 GB
    assert metrics.status.events[-1].endswith("checkpoint round-00000021 (12.4 MB in 0.3 s; 37.2 MB kept in all)")


def test_a_resave_of_the_same_round_keeps_the_checkpoint_to_fall_back_to(tmp_path):
    learner = fresh_learner()
    keeper = Checkpointer(tmp_path, keep_last=2)
    for round_number in (1, 2, 2):  # e.g. a save on exit right after the periodic one
        state = learner.capture(TrainingState(round=round_number))
        keeper.save(learner.policy.model, learner.trainer.optimizer, state)
    assert [path.name for path in keeper.checkpoints()] == ["round-00000001", "round-00000002"]


def test_a_checkpoint_from_a_fused_optimizer_resumes_on_one_without_it(tmp_path):
    learner = fresh_learner()
    run_rounds(learner, 1)
    assert learner.trainer.optimizer.param_groups[0]["fused"]
    save(learner, tmp_path, 1)
    plain = torch.optim.AdamW(learner.policy.model.parameters(), foreach=False)
    checkpoint.load_checkpoint(tmp_path / "round-00000001", learner.policy.model, plain)
    assert not plain.param_groups[0]["fused"] and plain.param_groups[0]["foreach"] is False
    assert plain.state and plain.param_groups[0]["lr"] == learner.trainer.optimizer.param_groups[0]["lr"]
