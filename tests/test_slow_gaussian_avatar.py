"""Slow (`pytest -m slow`): GaussianAvatar trained on CPU on the default synthetic subject, honestly
scored (the render as drawn; only the ground truth composited with its mask), must beat the
copy-the-nearest-training-frame baseline (zoo.baseline) by at least 2 dB person-crop PSNR on the
held-out novel views, and clear 25 dB person-crop PSNR on the held-out novel poses. A model that
does not learn the subject (a broken skinning or renderer) stays far below both: the untrained
avatar scores about 11 dB."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gaussian_avatar_beats_the_baseline_and_clears_the_novel_pose_bar(tmp_path):
    sys.path.append(str(ROOT / "bench"))  # after the root: bench/train.py must not shadow train.py
    from bench_gaussian_avatar import report, run

    result = run(steps=2000, out=tmp_path / "run", data_root=tmp_path / "data")
    report(result, "GaussianAvatar")
    m, base = result["metrics"], result["baseline"]["metrics"]
    assert m["test_view"]["psnr_crop"] >= base["test_view"]["psnr_crop"] + 2.0
    assert m["test_pose"]["psnr_crop"] >= 25.0
