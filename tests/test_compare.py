"""`python eval.py compare RUN_DIR...`: one table (markdown + CSV) and one bar chart across runs."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

PROTOCOL = {"name": "synthetic", "crop": "full", "background": [0.0, 0.0, 0.0]}


def _run(folder, method, view, pose, base_view=20.0, base_pose=18.0, protocol=PROTOCOL, subject="CoreView_900"):
    folder.mkdir(parents=True)
    metrics = {"test_view": {"psnr": view, "ssim": 0.9, "lpips": 0.05, "psnr_crop": view - 5},
               "test_pose": {"psnr": pose, "ssim": 0.8, "lpips": 0.07, "psnr_crop": pose - 5}}
    (folder / "metrics.json").write_text(json.dumps({
        "method": method, "subject": subject, "protocol": protocol, "metrics": metrics,
        "model_selection": "best val/psnr over 4 held-out validation items",
        "baseline": {"method": "nearest", "metrics": {"test_view": {"psnr": base_view, "frames": 70.0},
                                                      "test_pose": {"psnr": base_pose, "frames": 21.0}}}}))
    return folder


def test_compare_writes_table_csv_and_chart(tmp_path, capsys):
    import eval as eval_script

    a = _run(tmp_path / "runs" / "ga", "gaussian_avatar", 32.5, 30.25)
    b = _run(tmp_path / "runs" / "hs", "humansplat_hmr", 27.0, 24.0)
    out = tmp_path / "cmp"
    assert eval_script.main(["compare", str(a), str(b / "metrics.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| gaussian_avatar (ga) |" in printed and "compare.png" in printed

    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    assert [(r["method"], r["split"]) for r in rows] == [
        ("gaussian_avatar", "test_view"), ("gaussian_avatar", "test_pose"),
        ("humansplat_hmr", "test_view"), ("humansplat_hmr", "test_pose")]
    # the protocol's headline keys (full-image crop -> psnr, not psnr_crop), the baseline and the gain
    assert float(rows[1]["psnr"]) == 30.25 and float(rows[1]["baseline_psnr"]) == 18.0
    assert float(rows[1]["gain_db"]) == pytest.approx(12.25)
    assert float(rows[3]["gain_db"]) == pytest.approx(6.0)
    assert "psnr_crop" not in rows[0]
    md = (out / "compare.md").read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 5 and "30.25" in md and "note:" not in md

    img = np.asarray(Image.open(out / "compare.png").convert("RGB")).astype(int)
    assert img.shape[0] > 100 and img.shape[1] > 100
    # bars are drawn: the image is not blank, and there are several distinct non-grey colours
    colourful = img[(img.max(axis=2) - img.min(axis=2)) > 60]
    assert len(colourful) > 500
    assert len({tuple(c) for c in colourful[::10]}) >= 3
    assert not list(out.glob(".*"))  # no temporary file left


def test_compare_bars_scale_with_psnr(tmp_path):
    """The PIL chart (matplotlib absent) draws a taller bar for a higher PSNR."""
    from zoo.compare import _PALETTE, bar_chart, compare_rows, load_run

    runs = [load_run(_run(tmp_path / "a", "gaussian_avatar", 30.0, 30.0)),
            load_run(_run(tmp_path / "b", "humansplat_hmr", 15.0, 15.0))]
    _, rows = compare_rows(runs)
    png = tmp_path / "bars.png"
    backend = bar_chart(rows, png)
    if backend != "PIL":
        pytest.skip("matplotlib drew the chart; bar heights are checked on the PIL drawing")
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)

    def bar_height(colour):
        hit = np.all(np.abs(img - np.array(colour)) < 3, axis=2)
        cols = hit.sum(axis=0)
        return int(cols.max())

    first, second = bar_height(_PALETTE[0]), bar_height(_PALETTE[1])
    assert second > 0 and first / second == pytest.approx(2.0, rel=0.1)


def test_compare_flags_different_subjects_and_bad_input(tmp_path, capsys):
    import eval as eval_script

    a = _run(tmp_path / "a", "gaussian_avatar", 30.0, 29.0)
    b = _run(tmp_path / "b", "gaussian_avatar", 25.0, 24.0, subject="other")
    assert eval_script.main(["compare", str(a), str(b), "--out", str(tmp_path / "o")]) == 0
    assert "note: the runs were scored on different subjects" in (tmp_path / "o" / "compare.md").read_text()
    capsys.readouterr()
    assert eval_script.main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.json").write_text(json.dumps({"method": "x", "metrics": {}}))
    assert eval_script.main(["compare", str(empty), "--out", str(tmp_path / "o3")]) == 2
    assert "'metrics' must be a non-empty mapping" in capsys.readouterr().err


def test_compare_logs_a_table_to_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from zoo.compare import compare

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    a = _run(tmp_path / "a", "gaussian_avatar", 30.0, 29.0)
    result = compare([a], tmp_path / "o", wandb_log=True)
    assert result["png"].is_file()
    runs = list((tmp_path / "o" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
