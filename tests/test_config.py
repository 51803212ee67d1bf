"""Tests of gym_qwen.platform.config: key=value parsing, presets, validation, serialisation, help."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import pytest
import yaml

from gym_qwen.platform import config as config_mod
from gym_qwen.platform.config import (
    MODEL_SIZES,
    ConfigError,
    DemoConfig,
    EvaluateConfig,
    InfoConfig,
    TDMPC2Config,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    describe,
    load_config,
    option,
    parse_config,
    save_config,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = (TDMPC2Config, TrainConfig, EvaluateConfig, InfoConfig, DemoConfig)


def _error(schema, argv) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(schema, argv)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def _write(tmp_path: Path, text: str, name: str = "preset.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@dataclasses.dataclass
class _ListSchema:
    """A small schema exercising list/tuple fields and Optional[float]."""

    sizes: tuple[int, ...] = option((1, 2), "Some sizes", min=1)
    widths: list[int] = option([3], "Some widths")
    scale: Optional[float] = option(None, "A scale", min=0.0, max=1.0)


# --- error paths ---------------------------------------------------------------------------------
def test_argument_without_equals():
    message = _error(TrainConfig, ["steps"])
    assert "'steps'" in message and "key=value" in message


def test_empty_key():
    assert "empty key" in _error(TrainConfig, ["=5"])


def test_unknown_key_names_key_and_lists_valid_keys():
    message = _error(TrainConfig, ["stepz=10"])
    assert "'stepz'" in message and "did you mean 'steps'" in message
    assert "valid keys:" in message
    for key in ("task", "steps", "model_size", "num_workers"):
        assert key in message.split("valid keys:")[1]
    # A key of another command is unknown to this one.
    demo_message = _error(DemoConfig, ["lr=0.1"])
    assert "'lr'" in demo_message and "episodes" in demo_message


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("steps=abc", "steps='abc' is not an int"),
        ("steps=1.5", "steps='1.5' is not an int"),
        ("steps=1e-3", "is not an int"),
        ("steps=true", "is not an int"),
        ("lr=fast", "lr='fast' is not a float"),
        ("lr=inf", "is not a float"),
        ("resume=maybe", "resume='maybe' is not a bool"),
        ("resume=2", "is not a bool"),
        ("buffer_size=lots", "buffer_size='lots' is not an int"),
    ],
)
def test_wrong_type(arg, expected):
    assert expected in _error(TrainConfig, [arg])


@pytest.mark.parametrize(
    "arg, key, bound",
    [
        ("steps=0", "steps", ">= 1"),
        ("dropout=1.5", "dropout", "[0.0, 1.0]"),
        ("num_bins=1", "num_bins", ">= 2"),
        ("num_workers=-1", "num_workers", ">= 0"),
        ("latent_dim=0", "latent_dim", ">= 1"),
    ],
)
def test_out_of_range(arg, key, bound):
    message = _error(TrainConfig, [arg])
    assert f"{key}=" in message and "out of range" in message and bound in message


def test_not_in_choices_lists_choices():
    message = _error(TrainConfig, ["model_size=3"])
    assert "model_size=3" in message and "1, 5, 19, 48, 317" in message
    message = _error(TrainConfig, ["device=tpu"])
    assert "'tpu'" in message and "auto, cpu, cuda" in message
    assert "baseline" in _error(EvaluateConfig, ["checkpoint=x.pt", "mode=speculative"])
    assert "1, 5, 19, 48, 317" in _error(DemoConfig, ["model_size=2"])


@pytest.mark.parametrize("schema", [TrainConfig, InfoConfig, DemoConfig])
def test_unknown_task_lists_valid_tasks(schema):
    message = _error(schema, ["task=walker-wlk"])
    assert "'walker-wlk'" in message and "did you mean 'walker-walk'" in message
    assert "walker-walk" in message.split("valid tasks:")[1]
    assert "cheetah-run" in message


def test_unknown_task_when_evaluating():
    message = _error(EvaluateConfig, ["checkpoint=c.pt", "task=nope"])
    assert "'nope'" in message and "valid tasks:" in message


def test_duplicate_key():
    message = _error(TrainConfig, ["steps=1", "seed=3", "steps=2"])
    assert "duplicate key 'steps'" in message
    assert "duplicate key 'config'" in _error(TrainConfig, ["config=a.yaml", "config=b.yaml"])


def test_missing_preset_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    message = _error(TrainConfig, [f"config={missing}"])
    assert "not found" in message and "nope.yaml" in message
    assert "needs the path" in _error(TrainConfig, ["config="])


def test_unreadable_preset(tmp_path):
    assert "cannot read config file" in _error(TrainConfig, [f"config={tmp_path}"])  # a directory


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_preset_not_a_mapping(tmp_path, text, kind):
    message = _error(TrainConfig, [f"config={_write(tmp_path, text)}"])
    assert "must contain a mapping" in message and kind in message


def test_preset_invalid_yaml(tmp_path):
    path = _write(tmp_path, "steps: [1, 2\nseed: 3\n")
    message = _error(TrainConfig, [f"config={path}"])
    assert "not valid YAML" in message


def test_preset_with_unknown_key(tmp_path):
    path = _write(tmp_path, "steps: 10\nlearning_rate: 0.1\n")
    message = _error(TrainConfig, [f"config={path}"])
    assert "'learning_rate'" in message and "preset.yaml" in message and "valid keys:" in message


def test_preset_with_duplicate_key(tmp_path):
    path = _write(tmp_path, "steps: 10\nsteps: 20\n")
    message = _error(TrainConfig, [f"config={path}"])
    assert "duplicate key 'steps'" in message and "line 2" in message


def test_preset_with_wrong_type(tmp_path):
    path = _write(tmp_path, "steps: [1, 2]\n")
    assert "steps=[1, 2] is not an int" in _error(TrainConfig, [f"config={path}"])
    path = _write(tmp_path, "resume: perhaps\n", "b.yaml")
    assert "resume='perhaps' is not a bool" in _error(TrainConfig, [f"config={path}"])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["num_elites=600"], "num_elites=600 must be < num_samples=512"),
        (["num_elites=512"], "num_elites=512 must be < num_samples=512 (with every sample an elite, MPPI selects nothing)"),
        (["num_pi_trajs=512"], "num_pi_trajs=512 must be < num_samples=512"),
        (["min_std=3"], "min_std=3.0 must be <= max_std=2.0"),
        (["latent_dim=100"], "latent_dim=100 must be a multiple of simnorm_dim=8"),
        (["vmin=10"], "must be < vmax"),
        (["lr=0"], "lr=0.0 must be > 0"),
    ],
)
def test_cross_field_rules(argv, expected):
    assert expected in _error(TrainConfig, argv)


def test_evaluate_requires_checkpoint():
    assert _error(EvaluateConfig, []) == "checkpoint= is required"
    assert _error(EvaluateConfig, ["checkpoint="]) == "checkpoint= is required"


# --- happy paths ---------------------------------------------------------------------------------
def test_defaults_are_valid_for_every_command():
    assert parse_config(TrainConfig, []) == TrainConfig()
    assert parse_config(InfoConfig, []) == InfoConfig()
    assert parse_config(DemoConfig, []) == DemoConfig()
    assert parse_config(TDMPC2Config, []) == TDMPC2Config()
    assert parse_config(EvaluateConfig, ["checkpoint=x.pt"]).checkpoint == "x.pt"


def test_overrides_applied_with_right_types():
    cfg = parse_config(
        TrainConfig,
        ["task=dog-run", "model_size=5", "device=cuda", "steps=100_000", "lr=1e-3", "resume=YES",
         "mlflow=0", "progress=False", "seed=7", "exp_name=42", "buffer_size=2e5", "compile=true"],
    )
    assert cfg.task == "dog-run" and cfg.model_size == 5 and cfg.device == "cuda"
    assert cfg.steps == 100_000 and type(cfg.steps) is int
    assert cfg.lr == pytest.approx(1e-3) and type(cfg.lr) is float
    assert cfg.resume is True and cfg.mlflow is False and cfg.progress is False and cfg.compile is True
    assert cfg.seed == 7 and cfg.exp_name == "42" and cfg.buffer_size == 200_000
    assert type(cfg.buffer_size) is int
    assert parse_config(TrainConfig, ["vmax=20"]).vmax == 20.0
    assert type(parse_config(TrainConfig, ["vmax=20"]).vmax) is float


def test_value_may_contain_equals_sign():
    cfg = parse_config(TrainConfig, ["exp_name=a=b"])
    assert cfg.exp_name == "a=b"


def test_optional_none_parsing():
    cfg = parse_config(TrainConfig, ["seed_steps=none", "buffer_size=NULL", "iterations=8"])
    assert cfg.seed_steps is None and cfg.buffer_size is None and cfg.iterations == 8
    cfg = parse_config(EvaluateConfig, ["checkpoint=c.pt", "task=None", "video_path=null", "output=r.json"])
    assert cfg.task is None and cfg.video_path is None and cfg.output == "r.json"
    # A plain str field keeps the literal text.
    assert parse_config(TrainConfig, ["exp_name=none"]).exp_name == "none"


def test_preset_then_override_precedence(tmp_path):
    path = _write(tmp_path, "task: cheetah-run\nsteps: 5000\nseed: 3\nbuffer_size: null\nlr: 1e-3\n")
    for argv in ([f"config={path}", "steps=7000"], ["steps=7000", f"config={path}"]):
        cfg = parse_config(TrainConfig, argv)
        assert cfg.steps == 7000  # command line wins regardless of order
        assert cfg.task == "cheetah-run" and cfg.seed == 3 and cfg.buffer_size is None
        assert cfg.lr == pytest.approx(1e-3)  # YAML reads "1e-3" as a string; parsed as float
        assert cfg.eval_freq == 10_000  # untouched default


def test_empty_preset_is_allowed(tmp_path):
    path = _write(tmp_path, "# nothing\n")
    assert parse_config(TrainConfig, [f"config={path}"]) == TrainConfig()


def test_repository_presets():
    cfg = parse_config(TrainConfig, [f"config={REPO / 'configs' / 'walker-walk.yaml'}", "device=cpu"])
    assert (cfg.task, cfg.model_size, cfg.steps, cfg.device) == ("walker-walk", 1, 100_000, "cpu")
    demo = parse_config(DemoConfig, [f"config={REPO / 'configs' / 'demo-cartpole.yaml'}", "steps=2000"])
    assert demo.task == "cartpole-balance" and demo.steps == 2000


def test_model_size_arch_resolution():
    assert TDMPC2Config().arch() == MODEL_SIZES[1]
    cfg = parse_config(TrainConfig, ["model_size=5"])
    arch = cfg.arch()
    assert arch["latent_dim"] == 512 and arch["num_q"] == 5 and arch["mlp_dim"] == 512
    assert cfg.latent_dim is None  # the field itself stays "from model_size"
    cfg = parse_config(TrainConfig, ["model_size=5", "latent_dim=64", "num_q=3"])
    assert cfg.arch() == dict(MODEL_SIZES[5], latent_dim=64, num_q=3)
    assert parse_config(TrainConfig, ["model_size=317"]).arch()["latent_dim"] == 1376
    for size, dims in MODEL_SIZES.items():
        assert set(dims) == set(config_mod.ARCH_KEYS) and dims["latent_dim"] % 8 == 0, size


def test_list_fields_and_optional_float():
    cfg = parse_config(_ListSchema, ["sizes=4,5,6", "widths=[7, 8]", "scale=0.5"])
    assert cfg.sizes == (4, 5, 6) and cfg.widths == [7, 8] and cfg.scale == 0.5
    assert parse_config(_ListSchema, ["sizes=", "scale=none"]).sizes == ()
    assert "sizes='1,x' is not a list of ints" in _error(_ListSchema, ["sizes=1,x"])
    assert "out of range" in _error(_ListSchema, ["sizes=1,0"])
    assert "out of range" in _error(_ListSchema, ["scale=2"])
    assert config_to_dict(cfg) == {"sizes": [4, 5, 6], "widths": [7, 8], "scale": 0.5}
    assert config_from_dict(_ListSchema, config_to_dict(cfg)) == cfg


def test_dict_round_trip_is_json_serialisable():
    cfg = parse_config(TrainConfig, ["task=dog-run", "model_size=19", "lr=1e-4", "seed_steps=2000"])
    d = config_to_dict(cfg)
    assert list(d) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert d["task"] == "dog-run" and d["seed_steps"] == 2000 and d["buffer_size"] is None
    assert config_from_dict(TrainConfig, json.loads(json.dumps(d))) == cfg
    # Missing keys take defaults (configs saved before a field was added still load).
    assert config_from_dict(TrainConfig, {"steps": 50}) == TrainConfig(steps=50)


def test_config_from_dict_is_strict():
    d = config_to_dict(TrainConfig())
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        config_from_dict(TrainConfig, dict(d, bogus=1))
    with pytest.raises(ConfigError, match="steps='x' is not an int"):
        config_from_dict(TrainConfig, dict(d, steps="x"))
    with pytest.raises(ConfigError, match="out of range"):
        config_from_dict(TrainConfig, dict(d, steps=0))
    with pytest.raises(ConfigError, match="must be a mapping"):
        config_from_dict(TrainConfig, [1, 2])  # type: ignore[arg-type]
    # An evaluate-only key is unknown to train.
    with pytest.raises(ConfigError, match="unknown key 'checkpoint'"):
        config_from_dict(TrainConfig, dict(d, checkpoint="x.pt"))


def test_save_config_writes_yaml_atomically(tmp_path, monkeypatch):
    cfg = parse_config(TrainConfig, ["task=cheetah-run", "steps=5000", "buffer_size=none", "lr=1e-3"])
    target = tmp_path / "run" / "config.yaml"
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        assert Path(src).parent == Path(dst).parent  # temp file in the same directory
        assert yaml.safe_load(Path(src).read_text()) == config_to_dict(cfg)  # complete before the swap
        real_replace(src, dst)

    monkeypatch.setattr(config_mod.os, "replace", spy_replace)
    save_config(cfg, target)
    assert replaced and replaced[0][1] == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.yaml"]  # no temp left over
    assert yaml.safe_load(target.read_text()) == config_to_dict(cfg)
    assert config_from_dict(TrainConfig, yaml.safe_load(target.read_text())) == cfg
    assert load_config(TrainConfig, target) == cfg
    # The saved file is itself a valid preset.
    assert parse_config(TrainConfig, [f"config={target}"]) == cfg


def test_save_config_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    save_config(DemoConfig(steps=10), target)
    before = target.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(config_mod.os, "replace", boom)
    with pytest.raises(OSError):
        save_config(DemoConfig(steps=20), target)
    assert target.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_describe_mentions_every_field(schema):
    text = describe(schema)
    assert text.count("\n") > len(dataclasses.fields(schema))
    for field in dataclasses.fields(schema):
        line = next(ln for ln in text.splitlines() if ln.split()[:1] == [field.name])
        assert field.metadata["doc"] in line
    assert schema.command in text


def test_describe_shows_types_defaults_and_constraints():
    lines = {ln.split()[0]: ln for ln in describe(TrainConfig).splitlines() if ln.startswith("  ")}
    assert "int" in lines["steps"] and "100000" in lines["steps"] and ">= 1" in lines["steps"]
    assert "1, 5, 19, 48, 317" in lines["model_size"]
    assert "auto, cpu, cuda" in lines["device"]
    assert "0.0..1.0" in lines["dropout"] and "float" in lines["dropout"]
    assert "int|none" in lines["seed_steps"] and "none" in lines["seed_steps"]
    assert "bool" in lines["resume"] and "false" in lines["resume"]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_field_has_a_one_line_doc(schema):
    for field in dataclasses.fields(schema):
        doc = field.metadata.get("doc")
        assert doc and "\n" not in doc, field.name
