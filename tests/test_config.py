"""Config composition: every config composes, overrides apply, bad keys fail with the valid list."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from zoo.config import ConfigError, available, compose, method_config
from zoo.methods.base import schedule_value


def test_every_group_file_composes():
    for group in ("method", "data", "trainer", "logger"):
        for name in available(group):
            cfg = compose("train", [f"{group}={name}"])
            assert cfg[group]["_name"] == name


def test_every_experiment_composes():
    for name in available("experiment"):
        cfg = compose("train", [f"experiment={name}"])
        assert "method" in cfg


def test_override_sets_typed_value():
    cfg = compose("train", ["method.uv_size=64", "trainer.max_steps=7", "method.loss.l1=0.5"])
    assert cfg.method.uv_size == 64 and isinstance(cfg.method.uv_size, int)
    assert cfg.trainer.max_steps == 7
    assert cfg.method.loss.l1 == 0.5


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        compose("train", ["method.uv_sise=64"])
    msg = str(err.value)
    assert "uv_sise" in msg and "uv_size" in msg and "valid keys" in msg


def test_unknown_group_choice_lists_files():
    with pytest.raises(ConfigError) as err:
        compose("train", ["method=no_such_method"])
    assert "gaussian_avatar" in str(err.value)


def test_malformed_argument():
    with pytest.raises(ConfigError, match="key=value"):
        compose("train", ["method.uv_size"])


def test_experiment_holds_only_existing_keys():
    cfg = compose("train", ["experiment=gaussian_avatar_tiny"])
    assert cfg.method.uv_size == 32 and cfg.trainer.max_steps == 3
    assert cfg.method.loss.l1 == 0.8  # untouched fields keep their defaults


def test_method_config_with_preset_and_overrides():
    cfg = method_config("gaussian_avatar", preset="tiny", overrides={"decoder_hidden": 12})
    assert cfg.decoder_hidden == 12 and cfg.uv_size == 32
    with pytest.raises(ConfigError):
        method_config("gaussian_avatar", overrides={"nope": 1})


def test_every_field_is_commented():
    from zoo.config import config_dir

    for path in sorted(config_dir().rglob("*.yaml")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if not text or text.startswith("#") or text.startswith("- "):
                continue
            assert "#" in line, f"{path.name}:{n} has no comment: {line!r}"


def test_schedule_value():
    assert schedule_value(0.5, 100) == 0.5
    assert schedule_value({"value": 0.2, "from_step": 10}, 9) == 0.0
    assert schedule_value({"value": 0.2, "from_step": 10}, 10) == 0.2
    assert schedule_value({"start": 10.0, "end": 1.0, "ramp_steps": 100}, 50) == pytest.approx(5.5)
    assert schedule_value({"start": 10.0, "end": 1.0, "ramp_steps": 100, "decay": "exp"}, 50) == pytest.approx(10 ** 0.5)
    assert schedule_value({"start": 10.0, "end": 1.0, "ramp_steps": 100}, 1000) == pytest.approx(1.0)


def test_loggers_build_offline_with_wandb_mode_offline(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from zoo.runner import build_logger

    monkeypatch.setenv("WANDB_MODE", "offline")  # wandb picks the mode; WANDB_MODE=offline is honoured
    cfg = compose("train", ["logger=wandb", f"data.root={tmp_path / 'absent'}"])
    cfg.run_dir = str(tmp_path)
    logger = build_logger(cfg, tmp_path)
    assert isinstance(logger, WandbLogger)
    assert logger._wandb_init["mode"] == "offline"  # nothing leaves the machine
    assert logger._wandb_init["group"] == "synthetic_seed0"  # dataset + subject (not written yet: its seed)
    assert logger._wandb_init["name"] == "gaussian_avatar" and "gaussian_avatar" in logger._wandb_init["tags"]
    assert not (tmp_path / "absent").exists()  # building the logger writes no data
    cfg = compose("train", ["logger=csv"])
    assert isinstance(build_logger(cfg, tmp_path), CSVLogger)
    bad = compose("train", ["logger=csv", "logger.kind=tensorboard"])
    with pytest.raises(ConfigError, match="wandb or csv"):
        build_logger(bad, tmp_path)


def test_malformed_override_is_one_clear_error():
    import train as train_script

    bad = "data.options.frame_ranges={train: [0, 3, 1]"  # unclosed brace
    with pytest.raises(ConfigError, match=r"malformed value for data.options.frame_ranges.*expected ',' or '}'"):
        compose("train", [bad])
    assert train_script.main([bad]) == 2
