"""Held-out evaluation in the loop, export and `swarmnode eval`: reserved items are never trained on, the node
evaluates its base and then every N rounds across restarts, and the export is the trained model, loadable
offline by plain transformers."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swarmnode.config import ConfigError, load_config
from swarmnode.learn.evaluation import evaluate, held_out_tasks
from swarmnode.learn.intake import Intake, IntakeLimits
from swarmnode.learn.policy import Policy, SamplingSettings
from swarmnode.learn.tasks import TaskSuite
from swarmnode.node import Node
from swarmnode.ops.export import ExportError, export_model, push
from swarmnode.ops.metrics import read_records
from swarmnode.wire.rollout import HELD_OUT_SEED, HELD_OUT_SPAN, Completion, Rollout, TaskRef

FAST = ["sapo.questions_per_round=4", "sapo.completions_per_question=4", "model.max_new_tokens=12",
        "gossip.enabled=false", "metrics.port=null", "eval.questions_per_family=4", "eval.samples_per_question=2"]
CONFIG = load_config(None, FAST)
SUITE = TaskSuite.of(CONFIG.tasks)


@dataclasses.dataclass(frozen=True)
class FromPeer:
    rollout: Rollout
    signer: str = "12D3KooWpeer"
    model_id: str = "another-model"


def test_a_peers_rollout_on_a_held_out_item_is_never_trained_on_and_its_neighbours_are():
    spec = next(s for s in SUITE.families if s.name == "chain_sum")
    intake = Intake(SUITE, IntakeLimits(4, 24, 192), Policy.load(), rng=random.Random(0))

    def offered(seed: int, index: int):
        task = SUITE.task(TaskRef("chain_sum", spec.config_hash, seed, index))
        answer = task.entry["answer"]
        texts = (Completion(f"<answer>{answer}</answer>"), Completion("<answer>-1</answer>"))
        return intake.groups([FromPeer(Rollout(task.ref, texts))])

    # a reserved item named as the held-out set names it, by another (seed, index) with the same sum, and the last one
    for seed, index in ((HELD_OUT_SEED, 3), (HELD_OUT_SEED - 10, 13), (HELD_OUT_SEED + HELD_OUT_SPAN - 1, 0)):
        result = offered(seed, index)
        assert result.groups == [] and result.rejected == {"held_out": 1} and result.offenders == []
    for seed, index in ((HELD_OUT_SEED - 1, 0), (HELD_OUT_SEED + HELD_OUT_SPAN, 0)):
        assert len(offered(seed, index).groups) == 1


def test_own_training_cannot_be_configured_onto_the_held_out_items():
    with pytest.raises(ConfigError, match="tasks.seed"):
        load_config(None, [f"tasks.seed={HELD_OUT_SEED}"])


def test_the_held_out_set_is_the_same_questions_everywhere_and_evaluation_is_repeatable():
    tasks = held_out_tasks(SUITE, 4)
    assert [t.ref for t in tasks] == [t.ref for t in held_out_tasks(TaskSuite.of(CONFIG.tasks), 4)]
    assert sorted({t.ref.family for t in tasks}) == sorted(s.name for s in SUITE.families if s.weight > 0)
    policy = Policy.load()
    settings = SamplingSettings.of(CONFIG.model)
    first, second = (evaluate(policy, SUITE, tasks, settings, 2) for _ in range(2))
    assert first.families == second.families
    progress: list[tuple[int, int]] = []
    policy.sample_rows = 6  # a tight plan: 3 questions' samples at once
    chunked = evaluate(policy, SUITE, tasks, settings, 2, batch_questions=8, progress=lambda *done: progress.append(done))
    assert progress == [(0, 20), (8, 20), (16, 20), (20, 20)]  # each batch of questions once, none before it is done
    # greedy decoding draws nothing: the same answers whatever the chunks (sampled ones draw in another order)
    assert {name: score.greedy for name, score in chunked.families.items()} == {
        name: score.greedy for name, score in first.families.items()
    }
    assert all(0 <= score.greedy <= 1 and 0 <= score.sampled <= 1 for score in first.families.values())


def run_node(data_dir, rounds: int, *overrides: str) -> Node:
    node = Node(load_config(None, [*FAST, *overrides]), data_dir, lambda event: None, threading.Event())
    try:
        node.start()
        node.run(rounds)
    finally:
        node.close()
    return node


def test_the_node_evaluates_its_base_then_every_n_rounds_and_a_restart_keeps_the_base(tmp_path):
    run_node(tmp_path, 3, "eval.every_rounds=2")
    evaluated = {r.round: r.held_out["after_rounds"] for r in read_records(tmp_path / "metrics.jsonl") if r.held_out}
    assert evaluated == {1: 0, 3: 2}  # the record of round r+1 carries the evaluation after r rounds
    again = run_node(tmp_path, 2, "eval.every_rounds=2")
    evaluated = {r.round: r.held_out["after_rounds"] for r in read_records(tmp_path / "metrics.jsonl") if r.held_out}
    assert evaluated == {1: 0, 3: 2, 5: 4}
    assert again.held_out["base"]["after_rounds"] == 0 and again.status.held_out_round == 4
    assert set(again.status.held_out_base) == set(again.status.held_out_last) == {
        s.name for s in SUITE.families if s.weight > 0
    }
    records = read_records(tmp_path / "metrics.jsonl")
    assert all("evaluate" in r.seconds for r in records if r.held_out)


def test_the_export_loads_offline_in_a_fresh_process_and_scores_as_the_node_does(tmp_path):
    data_dir, out = tmp_path / "node", tmp_path / "export"
    run_node(data_dir, 4, "eval.every_rounds=2", "optimizer.learning_rate=1e-3")
    export_model(data_dir, out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    card = (out / "README.md").read_text()
    assert "| chain_sum |" in card and "4 rounds of SAPO" in card and "swarmnode-local" in card
    with pytest.raises(ExportError, match="not empty"):
        export_model(data_dir, out)
    for inside in (data_dir, tmp_path):  # --force never replaces the node's own state
        with pytest.raises(ExportError, match="is or holds the data dir"):
            export_model(data_dir, inside, force=True)
    assert any((data_dir / "checkpoints").iterdir())

    script = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "ids = t('What is 3 + 4?\\nAnswer with <answer>…</answer>.\\n', return_tensors='pt')\n"
        "out = m.generate(**ids, max_new_tokens=12)\n"
        "print(len(out[0]) > ids.input_ids.shape[1])\n"
    )
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    loaded = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, env=offline, timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "True", loaded.stderr

    command = [sys.executable, "-m", "swarmnode.cli", "eval", "swarmnode-seed", str(data_dir), str(out), "--json",
               *(arg for flag in FAST if flag.startswith("eval.") for arg in ("--set", flag))]
    scored = subprocess.run(command, capture_output=True, text=True, env=offline, timeout=300)
    assert scored.returncode == 0, scored.stderr
    base, trained, exported = json.loads(scored.stdout)
    assert trained["families"] == exported["families"]  # the export is the checkpoint's weights
    recorded = json.loads(json.dumps(read_records(data_dir / "metrics.jsonl")[0].held_out))
    assert base["families"] == recorded["families"]  # `eval` scores the base as the node did at round 0


def test_lora_runs_export_merged_or_as_an_adapter(tmp_path):
    pytest.importorskip("peft")
    lora = 'model.lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}'
    data_dir = tmp_path / "node"
    # seeded: with a random identity a 2-round run could draw groups whose rewards are all equal, and train nothing
    run_node(data_dir, 2, "eval.every_rounds=0", lora, "optimizer.learning_rate=1e-2", "seed=3", "tasks.seed=3")
    export_model(data_dir, tmp_path / "merged")
    export_model(data_dir, tmp_path / "adapter", adapter=True)
    assert (tmp_path / "merged" / "model.safetensors").exists()
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    adapted = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter")  # peft resolves the base it names
    ids = Policy.load().tokenizer("What is 3 + 4?", return_tensors="pt").input_ids
    assert (merged(ids).logits - adapted(ids).logits).abs().max() < 1e-4
    assert (merged(ids).logits - Policy.load().model(ids).logits).abs().max() > 1e-4  # training changed it
    run_node(tmp_path / "full", 1, "eval.every_rounds=0")
    with pytest.raises(ExportError, match="LoRA"):
        export_model(tmp_path / "full", tmp_path / "full-adapter", adapter=True)


def test_the_upload_makes_the_real_hub_requests_and_a_refusal_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="HF_HUB_OFFLINE"):  # the tests run offline, as a volunteer may
        push(tmp_path, "volunteer/swarm-model", token="hf_test", endpoint="http://127.0.0.1:9")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    seen: list[tuple[str, str, dict]] = []

    class Hub(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append((self.path, self.headers.get("Authorization", ""), json.loads(body or b"{}")))
            payload = json.dumps({"error": "Invalid credentials"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "README.md").write_text("card")
    try:
        with pytest.raises(ExportError, match="upload to volunteer/swarm-model failed"):
            push(tmp_path, "volunteer/swarm-model", token="hf_test", endpoint=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    path, auth, body = seen[0]
    assert path == "/api/repos/create" and auth == "Bearer hf_test"
    assert body["name"] == "swarm-model" and body["organization"] == "volunteer" and body["visibility"] == "private"
