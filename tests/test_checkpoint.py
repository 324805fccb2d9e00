import contextlib
import subprocess

import pytest
import torch

from swarmnode.checkpoint import Checkpointer, CheckpointError, TrainingState
from swarmnode.config import load_config
from swarmnode.learner import Learner
from swarmnode.policy import Policy
from swarmnode.tasks import TaskSuite

CONFIG = load_config(
    None,
    ["sapo.questions_per_round=3", "sapo.completions_per_question=4", "model.max_new_tokens=8",
     "sapo.local_groups=3", "sapo.external_groups=0", "sapo.min_own_groups=0", "model.dtype=float32"],
)


def fresh_learner() -> Learner:
    torch.manual_seed(0)
    suite = TaskSuite([f.spec() for f in CONFIG.tasks.families], CONFIG.tasks.reward)
    return Learner(CONFIG, Policy.load(dtype="float32"), suite, seed=5, data_seed=9)


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


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    learner = fresh_learner()
    checkpointer = Checkpointer(tmp_path, keep_last=3)
    for round_number in (1, 2):
        checkpointer.save(learner.policy.model, learner.trainer.optimizer, learner.capture(TrainingState(round=round_number)))
    (tmp_path / "round-00000002" / "model.safetensors").write_bytes(b"garbage")
    state = checkpointer.load(learner.policy.model, learner.trainer.optimizer)
    assert state.round == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs of our own (needs root, as in CI here); skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_or_read_only_disk_gives_a_clear_error_and_never_a_half_written_checkpoint(small_disk):
    learner = fresh_learner()
    checkpointer = Checkpointer(small_disk / "checkpoints")
    checkpointer.save(learner.policy.model, learner.trainer.optimizer, learner.capture(TrainingState(round=1)))
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:  # fill the disk to the last byte
        with contextlib.suppress(OSError):
            while True:
                handle.write(bytes(1 << 20))
                handle.flush()
    with pytest.raises(CheckpointError, match="free disk space"):
        checkpointer.save(learner.policy.model, learner.trainer.optimizer, learner.capture(TrainingState(round=2)))
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(CheckpointError, match="writable directory"):
        checkpointer.save(learner.policy.model, learner.trainer.optimizer, learner.capture(TrainingState(round=3)))
    assert [p.name for p in (small_disk / "checkpoints").iterdir()] == ["round-00000001"]
    assert Checkpointer(small_disk / "checkpoints").load(learner.policy.model, None).round == 1
