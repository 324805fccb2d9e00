from pathlib import Path

import pytest

from swarmnode.config import ConfigError, NodeConfig, load_config

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
    path = write(tmp_path, "sapo:\n  learning_rat: 1e-4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "sapo.learning_rat" in message and "learning_rate" in message


def test_bad_enum_value_lists_the_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"tasks.reward.*'partial', 'exact' or 'guarded'"):
        load_config(write(tmp_path, "tasks:\n  reward: generous\n"))


def test_out_of_range_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"sapo.learning_rate: Input should be greater than 0 \(got -1\)"):
        load_config(write(tmp_path, "sapo:\n  learning_rate: -1\n"))


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match="line 3 is not valid YAML"):
        load_config(write(tmp_path, "sapo:\n  learning_rate: 1\n   bad: [\n"))


def test_overrides_apply_after_the_file(tmp_path):
    path = write(tmp_path, "sapo:\n  learning_rate: 1.0e-4\n")
    config = load_config(path, ["sapo.learning_rate=5e-5", "network.initial_peers=['/ip4/127.0.0.1/tcp/1/p2p/x']"])
    assert config.sapo.learning_rate == 5e-5 and config.network.initial_peers == ["/ip4/127.0.0.1/tcp/1/p2p/x"]
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["sapo.learning_rate"])


def test_a_device_that_is_no_device_is_refused_with_its_field(tmp_path):
    with pytest.raises(ConfigError, match=r"model.device: .*auto\|cpu\|mps\|cuda"):
        load_config(write(tmp_path, "model:\n  device: gpu\n"))
    assert load_config(write(tmp_path, "model:\n  device: cuda:1\n")).model.device == "cuda:1"


def test_more_questions_than_one_batch_carries_is_refused_at_load_not_at_every_publish():
    with pytest.raises(ConfigError, match="sapo.questions_per_round.*less than or equal to 64"):
        load_config(None, ["sapo.questions_per_round=65"])


def test_transplant_sampling_needs_questions_of_its_own():
    with pytest.raises(ConfigError, match="sapo.*local_groups >= 1.*or use sampling: equal"):
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
