"""Smoke tests of the benchmarks: bench/render.py --quick prints its ratio table, and bench/train.py
trains a tiny preset and reads the bar / time-to-clear from the run's files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench_train():
    """bench/train.py as a module (loaded by path: bench/ stays off sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train_under_test", ROOT / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _rows(text: str):
    """Table rows of bench/render.py as lists of cells."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| scene")]


def test_render_bench_quick_prints_ratios_to_torch():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "render.py"), "--quick"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| scene | pass | renderer | seconds (median) | peak MiB | time / torch | memory / torch |" in out
    assert "peak memory:" in out and ("CUDA: False" in out or "CUDA: True" in out)
    rows = _rows(out)
    by = {(r[0], r[1], r[2]): r for r in rows}
    for scene in ("200@32", "2k@32"):
        for p in ("fwd", "fwd+bwd"):
            torch_row = by[(scene, p, "torch")]
            assert float(torch_row[3]) > 0 and torch_row[5] == "1.00"
    # the dense reference runs at the small scene, as a ratio to the torch backend (slower: one
    # Python step per Gaussian), and is skipped with a note above --dense-max-gaussians
    dense = by[("200@32", "fwd+bwd", "dense")]
    assert float(dense[5]) > 1.0 and float(dense[3]) > 0
    assert "dense skipped" in by[("2k@32", "fwd", "dense")][-1]
    if "CUDA: False" in out:
        assert "gsplat and torch-cuda skipped: CUDA is not available" in out


def test_train_bench_bar_and_time_to_clear(tmp_path):
    bt = _bench_train()
    summarize, val_curve = bt.summarize, bt.val_curve

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,step,test_view/psnr_crop,val/psnr_crop\n"
        "0,24,,18.5\n0,49,,21.9\n0,74,,22.4\n1,99,,23.0\n1,100,22.7,\n"
    )
    result = {"steps": 100, "fit_seconds": 50.0, "peak_rss_mib": 700.0,
              "metrics": {"test_view": {"psnr_crop": 22.7}},
              "baseline": {"metrics": {"test_view": {"psnr_crop": 20.25}}}}
    assert val_curve(run / "metrics.csv") == [(24, 18.5), (49, 21.9), (74, 22.4), (99, 23.0)]
    row = summarize("gaussian_avatar", result, run)
    # bar = baseline + 2 dB = 22.25: first reached at step 74, at 0.5 s/step
    assert row["bar"] == {"test_view": pytest.approx(22.25)} and row["passes_bar"]
    assert row["clear_step"] == 74 and row["clear_seconds"] == pytest.approx(37.0)
    assert row["s_per_step"] == pytest.approx(0.5)
    result["metrics"]["test_view"]["psnr_crop"] = 21.0
    (run / "metrics.csv").write_text("epoch,step,val/psnr_crop\n0,49,21.9\n")
    row = summarize("gaussian_avatar", result, run)
    assert row["clear_step"] is None and not row["passes_bar"]
    with pytest.raises(ValueError, match="test_pose"):
        summarize("exavatar", result, run)  # its bar split is missing: one clear error


def test_train_bench_runs_a_tiny_preset(tmp_path, tiny_subject, body_models_root):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "bench" / "train.py"), "--methods", "gaussian_avatar", "--preset", "tiny",
           "--steps", "2", "--device", "cpu", "--out", str(out), "--json", str(tmp_path / "rows.json"), "--",
           f"data.root={tiny_subject}", "data.synthesize=null", f"body_models={body_models_root}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| `gaussian_avatar` | 2 |" in proc.stdout
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert row["steps"] == 2 and row["s_per_step"] > 0 and row["peak_rss_mib"] > 50
    assert set(row["bar"]) == {"test_view"} and row["bar"]["test_view"] == pytest.approx(row["baseline_crop"]["test_view"] + 2.0)
    assert (out / "gaussian_avatar" / "metrics.json").exists()


def test_bench_scripts_import_the_root_train_py():
    """Run as scripts (bench/ first on sys.path) or imported by the slow tests (bench/ appended), every
    bench module leaves `import train` meaning the repository's train.py, never bench/train.py."""
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        probe = (f"import sys, importlib.util; sys.path.insert(0, 'bench'); import {script.stem}; "
                 "print(importlib.util.find_spec('train').origin)")
        proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert Path(proc.stdout.strip().splitlines()[-1]) == ROOT / "train.py", script.name
