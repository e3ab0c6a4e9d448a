"""The Hydra command line of train.py / eval.py (zoo.config.run_app) and `python -m zoo data synth`'s
body_models pointer: every Hydra habit works in-process, and user errors stay one line with exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from zoo.config import ConfigError, available, compose


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.strip().splitlines() if line.startswith("error:")]


def _tiny_args(tiny_subject, body_models_root, *extra):
    return ["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
            f"body_models={body_models_root}", "logger=csv", "test_after_fit=false",
            "trainer.enable_progress_bar=false", "trainer.max_steps=2", *extra]


# --------------------------------------------------------------------------------------------- flags
def test_help_lists_every_group_and_its_options(capsys):
    import eval as eval_script
    import train as train_script

    assert train_script.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "== Configuration groups ==" in out
    for group in ("method", "data", "trainer", "logger", "experiment"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{group}: "))
        assert line[len(group) + 2:].split(", ") == available(group)
    assert "python train.py -m" in out  # the header's examples
    assert eval_script.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("eval.py: score a checkpoint") and "data: " in out and "ckpt_path: null" in out


def test_cfg_job_prints_the_config_and_trains_nothing(capsys, tmp_path):
    import train as train_script

    run = tmp_path / "run"
    assert train_script.main(["experiment=gaussian_avatar_tiny", "method.uv_size=24", f"run_dir={run}",
                              "--cfg", "job"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["method"]["uv_size"] == 24 and cfg["method"]["decoder_hidden"] == 16  # preset + command line
    assert cfg["trainer"]["max_steps"] == 3 and "hydra" not in cfg
    assert not run.exists()
    assert train_script.main(["experiment=gaussian_avatar_tiny", "--cfg", "job", "--resolve"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["method"]["_name"] == "gaussian_avatar" and cfg["data"]["_name"] == "synthetic"


def test_plus_adds_and_tilde_removes_keys(capsys):
    import train as train_script

    cfg = compose("train", ["+method.note=hello", "~data.options.test_every", "++logger.tags=[a,b]"])
    assert cfg.method.note == "hello"
    assert "test_every" not in cfg.data.options and cfg.data.options.eval_protocol == "synthetic"
    assert list(cfg.logger.tags) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"\+seed: the key exists already; set it with seed=VALUE"):
        compose("train", ["+seed=3"])
    with pytest.raises(ConfigError, match=r"data.options has no 'nope'; valid keys: eval_protocol, test_every"):
        compose("train", ["~data.options.nope"])
    with pytest.raises(ConfigError, match="null, which Hydra treats as absent"):
        compose("train", ["~ckpt_path"])
    # on the command line: one error line, exit 2
    assert train_script.main(["~method.nope"]) == 2
    (line,) = _errors(capsys)
    assert "method has no 'nope'; valid keys:" in line and "uv_size" in line


def test_unknown_keys_sweeps_without_m_and_bad_values_are_one_line(capsys):
    import eval as eval_script
    import train as train_script

    cases = [
        (["method.uv_sise=3"], "method has no 'uv_sise'; valid keys:"),
        (["seed=0,1"], "is a sweep: add -m"),
        (["method=nope"], "unknown method 'nope'; choose one of: exavatar, gaussian_avatar"),
        (["seed=[1,2"], "malformed value for seed"),
        (["-m", "method=gaussian_avatar,nope"], "unknown method 'nope'"),  # every sweep value is checked first
        (["hydra/launcher=submitit_slurm"], "unknown hydra/launcher 'submitit_slurm'"),
        (["-m", "seed=0,1", "--cfg", "job"], "-m and --cfg do not go together"),
    ]
    for argv, needle in cases:
        assert train_script.main(argv) == 2, argv
        (line,) = _errors(capsys)
        assert needle in line, (argv, line)
    assert eval_script.main(["splitz=[test_view]"]) == 2
    (line,) = _errors(capsys)
    assert "<root> has no 'splitz'" in line and "splits" in line


def test_group_null_drops_the_section():
    assert "logger" not in compose("train", ["logger=null"]) and "logger" not in compose("train", ["~logger"])
    assert "data" not in compose("eval", []) and compose("eval", ["data=zju_mocap"]).data._name == "zju_mocap"


def test_run_dir_is_hydra_run_dir():
    assert compose("train", ["run_dir=/tmp/a/b"]).run_dir == "/tmp/a/b"
    assert compose("train", ["hydra.run.dir=/tmp/c"]).run_dir == "/tmp/c"
    default = compose("train", ["method=gs_avatar", "data=zju_mocap"]).run_dir
    assert default.startswith("runs/gs_avatar_zju_mocap_") and default[-6:].isdigit()


# --------------------------------------------------------------------------------------------- presets
def test_experiment_preset_chooses_its_groups_and_the_command_line_wins():
    cfg = compose("train", ["experiment=gaussian_avatar_people_snapshot"])
    assert (cfg.method._name, cfg.data._name, cfg.trainer._name) == ("gaussian_avatar", "people_snapshot", "gpu")
    assert cfg.data.format == "people_snapshot" and cfg.data.options.downscale == 2
    assert cfg.trainer.max_steps == 22000 and cfg.method.uv_size == 512 and cfg.data.batch_size == 2
    mine = compose("train", ["experiment=gaussian_avatar_people_snapshot", "trainer=cpu", "data=zju_mocap"])
    assert (mine.data._name, mine.trainer._name, mine.trainer.accelerator) == ("zju_mocap", "cpu", "cpu")
    assert mine.trainer.max_steps == 22000  # the preset's deltas still land on the chosen files
    nopo = compose("train", ["experiment=nopo_avatar_tiny"])
    assert (nopo.method._name, nopo.data._name) == ("nopo_avatar", "synthetic_multi")


def test_every_preset_is_a_global_package_choosing_groups_by_override():
    from zoo.config import config_dir

    for path in sorted((config_dir() / "experiment").glob("*.yaml")):
        text = path.read_text()
        assert text.splitlines()[0] == "# @package _global_", path.name
        picks = yaml.safe_load(text)["defaults"]
        assert picks and all(isinstance(p, dict) and next(iter(p)).startswith("override /") for p in picks), path.name


# --------------------------------------------------------------------------------------------- sweeps
def test_multirun_sweep_runs_every_job(capsys, tmp_path, tiny_subject, body_models_root):
    import train as train_script

    sweep = tmp_path / "sweep"
    code = train_script.main(["-m", *_tiny_args(tiny_subject, body_models_root), "seed=0,1", f"run_dir={sweep}"])
    assert code == 0
    out = capsys.readouterr().out
    assert "[sweep job 0]" in out and "[sweep job 1]" in out
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0_gaussian_avatar_synthetic_seed0", "1_gaussian_avatar_synthetic_seed1"]
    for seed, job in enumerate(jobs):
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["steps"] == 2 and Path(metrics["checkpoint"]).is_file()
        assert yaml.safe_load((job / "config.yaml").read_text())["seed"] == seed
        assert (job / ".hydra" / "overrides.yaml").is_file()  # Hydra's record of the job
    assert (sweep / "multirun.yaml").is_file()


def test_failed_run_leaves_no_folder(capsys, tmp_path, tiny_subject, body_models_root):
    import train as train_script

    run = tmp_path / "run"
    assert train_script.main(_tiny_args(tmp_path / "missing", body_models_root, f"run_dir={run}")) == 2
    (line,) = _errors(capsys)
    assert "data root not found" in line
    assert not run.exists()


# --------------------------------------------------------------------------------------------- data synth
def test_data_synth_prints_the_root_and_training_needs_no_env_var(capsys, tmp_path, monkeypatch, body_models_root):
    import train as train_script
    from zoo.__main__ import main as zoo_main

    out = tmp_path / "ps"
    assert zoo_main(["data", "synth", "--format", "people_snapshot", "--out", str(out), "--frames", "6",
                     "--res", "64", "--body-models", str(body_models_root), "--quiet"]) == 0
    printed = capsys.readouterr().out
    roots = [line.split("=", 1)[1] for line in printed.splitlines() if line.startswith("data.root=")]
    assert len(roots) == 1 and Path(roots[0]).parent == out.resolve() and Path(roots[0]).is_dir()
    for pointer in (out / "body_models", Path(roots[0]) / "body_models"):
        assert pointer.read_text().strip() == str(body_models_root.resolve())
    monkeypatch.delenv("ZOO_BODY_MODELS", raising=False)
    run = tmp_path / "run"
    code = train_script.main(["experiment=gaussian_avatar_tiny", "data=people_snapshot", f"data.root={roots[0]}",
                              "data.num_workers=0", "trainer.max_steps=2", "logger=csv", f"run_dir={run}",
                              "trainer.enable_progress_bar=false", "test_after_fit=false"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2
    # a pointer to a folder that is gone: one error line naming the pointer file, nothing written
    (Path(roots[0]) / "body_models").write_text(str(tmp_path / "gone") + "\n")
    capsys.readouterr()
    assert train_script.main(["experiment=gaussian_avatar_tiny", "data=people_snapshot", f"data.root={roots[0]}",
                              "logger=csv", f"run_dir={tmp_path / 'run2'}"]) == 2
    (line,) = _errors(capsys)
    assert "body_models points to" in line and "gone" in line
    assert not (tmp_path / "run2").exists()


def test_find_pointer_forms(tmp_path, body_models_root):
    from zoo.data.body_files import find_pointer, write_pointer

    subject = tmp_path / "dataset" / "subject"
    subject.mkdir(parents=True)
    assert find_pointer(subject) is None
    write_pointer(subject.parent, body_models_root)  # the dataset folder's pointer serves its subjects
    assert find_pointer(subject) == body_models_root.resolve()
    (subject / "body_models").write_text("../../models\n")  # relative to the pointer's folder
    (tmp_path / "models").mkdir()
    assert find_pointer(subject).resolve() == (tmp_path / "models").resolve()
    (subject / "body_models").write_text("")
    with pytest.raises(ValueError, match="expected one line"):
        find_pointer(subject)
    (subject / "body_models").unlink()
    (subject / "body_models").mkdir()  # a folder of that name holds the models itself
    assert find_pointer(subject) == subject / "body_models"
