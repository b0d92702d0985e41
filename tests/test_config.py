"""Training config: YAML + dotted overrides, typed keys, helpful errors, value checks, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from smallgpt.config.loader import (
    PRESET_DIR,
    config_to_dict,
    load_config,
    resolve_config_path,
    save_config,
    valid_keys,
)
from smallgpt.config.schema import Config, ConfigError

REPO = Path(__file__).resolve().parent.parent
DATA = ["data.text_files=[corpus.txt]"]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_override_key_names_it_and_suggests_the_valid_one():
    with pytest.raises(
        ConfigError, match=r"unknown key 'optim.learning_rate'; did you mean 'optim.lr'\?"
    ):
        load_config(None, [*DATA, "optim.learning_rate=3e-4"])
    with pytest.raises(
        ConfigError, match=r"unknown key 'train.batchsize'; did you mean 'train.batch_size'"
    ):
        load_config(None, [*DATA, "train.batchsize=4"])
    with pytest.raises(ConfigError, match=r"'lr'; did you mean 'optim.lr'"):
        load_config(None, [*DATA, "lr=1e-3"])
    with pytest.raises(ConfigError, match=r"'trian.max_steps'; did you mean 'train.max_steps'"):
        load_config(None, [*DATA, "trian.max_steps=10"])


def test_unknown_key_in_yaml_file_is_reported_with_suggestion(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"data": {"text_files": ["x"]}, "model": {"n_embd": 64}})
    with pytest.raises(ConfigError, match=r"'model.n_embd'; did you mean 'model.embed_dim'"):
        load_config(path)
    path = write_yaml(tmp_path / "d.yaml", {"optimizer": {"lr": 1.0}})
    with pytest.raises(ConfigError, match=r"unknown section 'optimizer'; did you mean 'optim'"):
        load_config(path)


def test_wrong_types_name_the_key_and_the_expected_type():
    cases = {
        "train.batch_size=abc": r"train.batch_size: expected int, got str 'abc'",
        "train.batch_size=2.5": r"train.batch_size: expected int, got float 2.5",
        "model.bias=3": r"model.bias: expected bool, got int 3",
        "optim.betas=[0.9]": r"optim.betas: expected a list of 2 values",
        "data.text_files=corpus.txt": r"data.text_files: expected a list",
        "train.precision=bf15": r"train.precision: 'bf15' is not one of .*did you mean 'bf16'",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, [*DATA, override])


def test_numbers_written_as_yaml_strings_are_accepted():
    # PyYAML reads 3e-4 (no dot) as a string; the user means the float.
    cfg = load_config(
        None, [*DATA, "optim.lr=3e-4", "train.max_steps=1e5", "optim.betas=[0.8, 0.95]"]
    )
    assert cfg.optim.lr == float("3e-4")
    assert cfg.train.max_steps == 100_000 and isinstance(cfg.train.max_steps, int)
    assert cfg.optim.betas == (0.8, 0.95)


def test_bad_values_are_all_reported_before_training():
    overrides = [
        *DATA,
        "optim.lr=-0.1",
        "train.batch_size=0",
        "model.max_seq_len=128",
        "data.seq_len=256",
        "model.embed_dim=100",
        "model.num_heads=3",
    ]
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "optim.lr must be > 0 (got -0.1)" in message
    assert "train.batch_size must be >= 1 (got 0)" in message
    assert "data.seq_len (256) exceeds model.max_seq_len (128)" in message
    assert "model.embed_dim (100) must be divisible by model.num_heads (3)" in message


def test_missing_data_source_is_an_error():
    with pytest.raises(ConfigError, match="no training data"):
        load_config(None)
    assert load_config(None, ["data.shard_dir=shards"]).data.shard_dir == "shards"


def test_section_override_and_malformed_override_are_rejected():
    with pytest.raises(ConfigError, match="'optim' is a section"):
        load_config(None, [*DATA, "optim=1"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, [*DATA, "optim.lr"])


def test_saved_resolved_config_loads_back_equal(tmp_path):
    cfg = load_config(None, [*DATA, "optim.lr=1e-3", "log.sample_prompt=ROMEO:", "train.seed=7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert config_to_dict(again)["optim"]["betas"] == [0.9, 0.999]


def test_overrides_win_over_the_file(tmp_path):
    path = write_yaml(
        tmp_path / "c.yaml", {"data": {"text_files": ["a.txt"]}, "optim": {"lr": 0.1}}
    )
    cfg = load_config(path, ["optim.lr=0.2", "data.text_files=[b.txt, c.txt]"])
    assert cfg.optim.lr == 0.2
    assert cfg.data.text_files == ["b.txt", "c.txt"]


def test_25m_preset_has_the_users_guide_hyperparameters():
    cfg = load_config("smallgpt-25m", DATA)
    m, o = cfg.model, cfg.optim
    assert (m.vocab_size, m.embed_dim, m.num_heads, m.num_layers, m.max_seq_len) == (
        10000,
        512,
        8,
        6,
        1024,
    )
    assert m.dropout == 0.1
    assert (o.lr, o.betas, o.weight_decay, o.warmup_steps, o.grad_clip) == (
        5e-4,
        (0.9, 0.999),
        0.1,
        2000,
        1.0,
    )
    assert cfg.train.max_steps == 100_000


def test_every_preset_loads_and_names_every_key():
    presets = sorted(PRESET_DIR.glob("*.yaml"))
    assert {p.stem for p in presets} >= {"smallgpt-25m", "rtx-25m", "demo-cpu"}
    for preset in presets:
        cfg = load_config(preset, DATA)
        assert isinstance(cfg, Config)
        assert resolve_config_path(preset.stem) == preset


def test_top_level_configs_are_the_packaged_presets():
    # The tests import the installed wheel, so compare contents: one copy of each preset, shipped.
    top = REPO / "configs"
    assert top.resolve() == REPO / "python" / "smallgpt" / "configs"
    shipped = {p.name: p.read_bytes() for p in PRESET_DIR.glob("*.yaml")}
    assert shipped and shipped == {p.name: p.read_bytes() for p in top.glob("*.yaml")}
    with pytest.raises(FileNotFoundError, match="packaged presets: .*demo-cpu"):
        resolve_config_path("no-such-preset")


def test_model_pad_token_id_is_no_yaml_key_it_comes_from_the_tokenizer():
    assert "model.pad_token_id" not in valid_keys()
    assert "pad_token_id" not in config_to_dict(load_config(None, DATA))["model"]
    with pytest.raises(ConfigError, match="unknown key 'model.pad_token_id'"):
        load_config(None, [*DATA, "model.pad_token_id=0"])
