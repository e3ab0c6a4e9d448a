"""Slow (`pytest -m slow`): GaussianAvatar trained on CPU on the default synthetic subject must
reach 25 dB person-crop PSNR on held-out novel views and 23 dB on held-out novel poses. A model that
does not learn the subject (e.g. a broken skinning or renderer) stays far below: the untrained
avatar scores about 11 dB."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gaussian_avatar_reaches_the_psnr_bars(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_gaussian_avatar import run

    result = run(steps=2000, out=tmp_path / "run", data_root=tmp_path / "data")
    m = result["metrics"]
    print(f"\nGaussianAvatar: {m} in {result['wall_seconds']} s")
    assert m["test_view"]["psnr_crop"] >= 25.0
    assert m["test_pose"]["psnr_crop"] >= 23.0
