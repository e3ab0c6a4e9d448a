"""train.py / eval.py failure modes: one clear line, non-zero exit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env=None):
    import os

    e = dict(os.environ)
    e.update(env or {})
    e["WANDB_MODE"] = "disabled"
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=e, timeout=300)


def test_unknown_override_exits_with_one_line():
    r = _run("train.py", "method.not_a_key=1")
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "not_a_key" in lines[0] and "valid keys" in lines[0]


def test_missing_data_root_exits_with_one_line(tmp_path):
    r = _run("train.py", "data=people_snapshot", f"data.root={tmp_path / 'absent'}")
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "absent" in lines[0]


def test_missing_body_model_exits_with_one_line(tiny_subject, tmp_path):
    empty = tmp_path / "no_models"
    empty.mkdir()
    r = _run("train.py", "experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
             f"body_models={empty}", "logger=csv", f"run_dir={tmp_path / 'run'}", env={"ZOO_BODY_MODELS": str(empty)})
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "ZOO_BODY_MODELS" in lines[0]


def test_eval_requires_checkpoint():
    r = _run("eval.py")
    assert r.returncode != 0
    assert "ckpt_path" in r.stderr
