"""`python eval.py sweep=pose_noise methods=[...] data=...`: every method on one subject at increasing
zoo.core.pose_noise levels; one table (markdown + CSV) and one plot; level 0 is a plain eval."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _table(out: Path):
    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    return rows, {(r["method"], float(r["level"]), r["split"]): r for r in rows}


def test_train_mode_tiny_two_methods_two_levels(tiny_subject, body_models_root, tmp_path, capsys):
    """The default mode: each method trained per level on that level's noisy training poses."""
    import eval as eval_script

    out = tmp_path / "sweep"
    assert eval_script.main(["sweep=pose_noise", "methods=[gaussian_avatar,humansplat_hmr]", "data=synthetic",
                             f"data.root={tiny_subject}", "data.synthesize=null", f"body_models={body_models_root}",
                             "pose_noise.levels=[0,2]", "pose_noise.preset=tiny", f"out_dir={out}",
                             "trainer.enable_progress_bar=false"]) == 0
    printed = capsys.readouterr().out
    assert "| gaussian_avatar | 2.00 | test_pose |" in printed and "sweep.png" in printed
    rows, by = _table(out)
    assert len(rows) == 2 * 2 * 2  # methods x levels x splits
    assert list(rows[0]) == ["method", "level", "split", "psnr", "ssim", "lpips", "d_psnr"]
    assert all(np.isfinite(float(r["psnr"])) for r in rows)
    assert float(by[("humansplat_hmr", 0.0, "test_view")]["d_psnr"]) == 0.0
    md = (out / "sweep.md").read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 9 and "train mode" in md
    png = np.asarray(Image.open(out / "sweep.png").convert("RGB")).astype(int)
    assert png.shape[0] > 100 and len(png[(png.max(axis=2) - png.min(axis=2)) > 60]) > 100  # coloured lines
    assert not list(out.glob(".*"))  # no temporary files

    # level 0 = a plain eval.py of the same checkpoint
    ckpt = out / "level_0" / "gaussian_avatar" / "checkpoints" / "last.ckpt"
    assert eval_script.main([f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'plain'}", "save_images=false",
                             "baseline=false", "trainer.enable_progress_bar=false"]) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())["metrics"]
    for split in ("test_view", "test_pose"):
        for key in ("psnr", "ssim", "lpips"):
            assert float(by[("gaussian_avatar", 0.0, split)][key]) == pytest.approx(plain[split][key], rel=1e-9)

    # level 2 trained on the noisy training poses (HumanSplatHMR starting from them, not its own noise)
    from zoo.data.pose_files import load_pose_file

    noisy = load_pose_file(out / "level_2" / "poses.npz")
    assert noisy.meta["level"] == 2.0 and noisy.meta["split"] == "train"
    import yaml

    for method in ("gaussian_avatar", "humansplat_hmr"):
        cfg = yaml.safe_load((out / "level_2" / method / "config.yaml").read_text())
        assert cfg["data"]["poses"] == str(out / "level_2" / "poses.npz")
        assert not (out / "level_0" / method / "config.yaml").read_text().count("poses.npz")
    hs = yaml.safe_load((out / "level_2" / "humansplat_hmr" / "config.yaml").read_text())
    assert hs["method"]["init_poses"]["source"] == "dataset"


def test_target_mode_shipped_checkpoints_lose_psnr_with_noise(tmp_path):
    """Trained avatars (the shipped synthetic_s0 checkpoints) on a small re-render of their subject:
    at a large noise level every method loses PSNR on both splits; level 0 = the plain score."""
    from zoo.sweep import run_sweep, score

    data = {"format": "zju_mocap", "root": str(tmp_path / "data"), "_name": "synthetic",
            "synthesize": {"format": "zju_mocap", "subjects": 1, "frames": 10, "res": 64, "cameras": 2, "seed": 0},
            "options": {"test_every": 5, "eval_protocol": "synthetic"}, "protocol": {"background": [0.0, 0.0, 0.0]},
            "batch_size": 1}
    ckpts = {m: str(ROOT / "checkpoints" / f"{m}.synthetic_s0.ckpt") for m in ("gaussian_avatar", "gs_avatar")}
    result = run_sweep(list(ckpts), data, tmp_path / "out", [0, 4], mode="target", ckpts=ckpts)
    by = {(r["method"], r["level"], r["split"]): r for r in result["rows"]}
    assert len(result["rows"]) == 8
    for method in ckpts:
        for split in ("test_view", "test_pose"):
            clean, noisy = by[(method, 0.0, split)]["psnr"], by[(method, 4.0, split)]["psnr"]
            assert clean > 24.0, (method, split, clean)  # trained avatars, not blank renders
            assert noisy < clean - 1.0, (method, split, clean, noisy)
            assert by[(method, 4.0, split)]["d_psnr"] == pytest.approx(noisy - clean)
    plain = score(Path(ckpts["gaussian_avatar"]), data, {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
                  ["test_pose"], tmp_path / "plain")
    assert by[("gaussian_avatar", 0.0, "test_pose")]["psnr"] == pytest.approx(plain["test_pose"]["psnr"], rel=1e-9)
    assert "target mode" in result["markdown"].read_text()


def test_sweep_user_errors_are_one_line(capsys, tmp_path):
    import eval as eval_script

    assert eval_script.main(["sweep=pose_noise", "data=synthetic", f"out_dir={tmp_path / 'o'}"]) == 2
    assert "needs methods=" in capsys.readouterr().err
    assert eval_script.main(["sweep=pose_noise", "methods=[nopo_avatar]", "data=synthetic"]) == 2
    assert "without any pose" in capsys.readouterr().err
    assert eval_script.main(["sweep=pose_noise", "methods=[gaussian_avatar]", "data=synthetic",
                             "pose_noise.mode=bogus"]) == 2
    assert "pose_noise.mode must be one of" in capsys.readouterr().err
    assert eval_script.main(["sweep=pose_noise", "methods=[gaussian_avatar]"]) == 2
    assert "needs data=" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
