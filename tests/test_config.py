from pathlib import Path

import pytest

from swarmnode import config as config_module
from swarmnode.config import MOVED_KEYS, ConfigError, NodeConfig, config_yaml, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    load_config(path)


def test_default_yaml_is_exactly_the_built_in_defaults():
    assert load_config(Path(CONFIGS[0].parent / "default.yaml")) == NodeConfig()


def test_the_sapo9_config_has_the_nine_families():
    config = load_config(CONFIGS[0].parent / "qwen2.5-0.5b-sapo9-gpu.yaml")
    assert len(config.tasks.families) == 9 and config.sapo.local_groups == config.sapo.external_groups == 4


def write(tmp_path, text):
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_file_the_key_and_what_is_allowed(tmp_path):
    path = write(tmp_path, "optimizer:\n  learning_rat: 1e-4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "optimizer.learning_rat" in message and "learning_rate" in message


def test_bad_enum_value_lists_the_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"tasks.reward.*'partial', 'exact' or 'guarded'"):
        load_config(write(tmp_path, "tasks:\n  reward: generous\n"))


def test_out_of_range_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer.learning_rate: Input should be greater than 0 \(got -1\)"):
        load_config(write(tmp_path, "optimizer:\n  learning_rate: -1\n"))


def test_the_bandwidth_cap_is_unlimited_unless_set_and_a_cap_of_nothing_is_refused_naming_its_key():
    assert NodeConfig().network.max_kbps is None
    assert load_config(None, ["network.max_kbps=256"]).network.max_kbps == 256
    with pytest.raises(ConfigError, match=r"network.max_kbps: Input should be greater than 0 \(got 0\)"):
        load_config(None, ["network.max_kbps=0"])


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match="line 3 is not valid YAML"):
        load_config(write(tmp_path, "optimizer:\n  learning_rate: 1\n   bad: [\n"))


def test_overrides_apply_after_the_file(tmp_path):
    path = write(tmp_path, "optimizer:\n  learning_rate: 1.0e-4\n")
    config = load_config(path, ["optimizer.learning_rate=5e-5", "network.initial_peers=['/ip4/127.0.0.1/tcp/1/p2p/x']"])
    assert config.optimizer.learning_rate == 5e-5 and config.network.initial_peers == ["/ip4/127.0.0.1/tcp/1/p2p/x"]
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["optimizer.learning_rate"])


def test_a_device_that_is_no_device_is_refused_with_its_field(tmp_path):
    with pytest.raises(ConfigError, match=r"model.device: .*auto\|cpu\|mps\|cuda"):
        load_config(write(tmp_path, "model:\n  device: gpu\n"))
    assert load_config(write(tmp_path, "model:\n  device: cuda:1\n")).model.device == "cuda:1"


def test_more_questions_than_one_batch_carries_is_refused_at_load_not_at_every_publish():
    with pytest.raises(ConfigError, match="sapo.questions_per_round.*less than or equal to 64"):
        load_config(None, ["sapo.questions_per_round=65"])


def test_transplant_sampling_needs_questions_of_its_own():
    with pytest.raises(ConfigError, match="sapo.sampling: transplant needs sapo.local_groups >= 1.*or use sapo.sampling: equal"):
        load_config(None, ["sapo.sampling=transplant", "sapo.local_groups=0", "sapo.external_groups=8"])
    assert load_config(None, ["sapo.local_groups=0", "sapo.external_groups=8"]).sapo.external_groups == 8  # equal


@pytest.mark.parametrize(
    ("sampling", "questions", "alone", "with_peers"),
    [("equal", 8, 8, 8), ("transplant", 8, 8, 2), ("transplant", 16, 16, 2), ("transplant", 1, 1, 1)],
)
def test_transplant_leaves_j_questions_to_peers_only_while_peers_supply_them(sampling, questions, alone, with_peers):
    sapo = load_config(None, [f"sapo.sampling={sampling}", f"sapo.questions_per_round={questions}",
                              "sapo.local_groups=2", "sapo.external_groups=6"]).sapo
    assert (sapo.questions_to_ask(peers_supplied=False), sapo.questions_to_ask(peers_supplied=True)) == (alone, with_peers)


def test_a_key_at_its_old_place_loads_into_its_new_section_and_says_so(tmp_path):
    """Config files and data dirs written before the sections split (sapo -> optimizer, memory, intake) still load."""
    path = write(tmp_path, "sapo:\n  learning_rate: 3.0e-5\n  micro_batch_size: 4\ngossip:\n  rescore_budget_s: 2\n")
    notices: list[str] = []
    config = load_config(path, ["sapo.collect_oversample=5"], notices)
    assert (config.optimizer.learning_rate, config.memory.micro_batch_size) == (3.0e-5, 4)
    assert (config.intake.rescore_budget_s, config.intake.collect_oversample) == (2, 5)
    assert len(notices) == 4 and all(str(path) in notice for notice in notices)
    assert any("sapo.learning_rate is now optimizer.learning_rate" in notice for notice in notices)
    assert load_config(None, ["optimizer.learning_rate=1e-5", "sapo.learning_rate=2e-5"]).optimizer.learning_rate == 1e-5


def test_every_moved_key_names_a_field_that_exists():
    for new in MOVED_KEYS.values():
        section, key = new.split(".")
        assert key in NodeConfig.model_fields[section].annotation.model_fields, new


def test_a_written_config_reads_back_the_same():
    config = load_config(None, ["model.lora={r: 4, target_modules: [q_proj]}", "memory.micro_batch_size=8"])
    assert NodeConfig.model_validate(__import__("yaml").safe_load(config_yaml(config))) == config


def test_lora_is_typed_and_a_misspelt_option_names_its_key():
    lora = load_config(None, ["model.lora={r: 4, lora_alpha: 16}"]).model.lora
    assert (lora.r, lora.lora_alpha, lora.target_modules, lora.init_lora_weights) == (4, 16, None, True)
    with pytest.raises(ConfigError, match="unknown key 'model.lora.rank'; allowed here: .*lora_alpha.*r"):
        load_config(None, ["model.lora={rank: 4}"])


def test_a_record_ttl_shorter_than_the_windows_collectors_read_is_refused_naming_the_keys():
    with pytest.raises(ConfigError, match=r"swarm.record_ttl_s \(40\) must be at least \(swarm.max_age_windows \+ 1\) x swarm.window_s = 60"):
        load_config(None, ["swarm.record_ttl_s=40"])
    assert load_config(None, ["swarm.record_ttl_s=40", "swarm.max_age_windows=0"]).swarm.record_ttl_s == 40


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many", "true"])
def test_threads_are_a_count_or_auto_and_one_line_says_so(value):
    with pytest.raises(ConfigError, match=r"model\.threads: .*a number of threads \(1 or more\) or auto"):
        load_config(None, [f"model.threads={value}"])


def test_null_threads_of_an_older_data_dirs_config_are_auto():
    assert load_config(None, ["model.threads=null"]).model.threads == "auto" == NodeConfig().model.threads
    assert load_config(None, ["model.threads=3"]).model.threads == 3


def test_a_lower_clip_of_one_or_more_is_refused():
    with pytest.raises(ConfigError, match=r"sapo.clip_low: Input should be less than 1"):
        load_config(None, ["sapo.clip_low=1.0"])


def test_config_is_a_leaf_that_imports_nothing_else_of_the_package():
    source = Path(config_module.__file__).read_text()
    assert "from swarmnode" not in source and "import swarmnode" not in source


def test_the_bounds_config_copies_are_the_wire_protocols_own():
    from swarmnode.wire import batch, rollout

    assert config_module.MAX_ROLLOUTS_PER_BATCH == batch.MAX_ROLLOUTS_PER_BATCH
    assert (config_module.HELD_OUT_SPAN, config_module.MAX_TRAINING_SEED) == (rollout.HELD_OUT_SPAN, rollout.MAX_TRAINING_SEED)
