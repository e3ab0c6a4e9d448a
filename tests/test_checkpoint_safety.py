"""A checkpoint is loaded with torch.load(weights_only=True): a planted code-running pickle is refused
by eval.py, by animate and by resuming (train.py ckpt_path=) with one clear error, and its code never
runs; a loaded model is pinned to the step it was saved at."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


class _Payload:
    """Pickles to a call of os.system: unpickling it with weights_only=False would run a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_is_refused_by_eval_and_animate(tiny_subject, body_models_root, tmp_path, capsys):
    import eval as eval_script
    import train as train_script
    from zoo.__main__ import main as zoo_main

    run = tmp_path / "run"
    assert train_script.main(["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "test_after_fit=false", "trainer.enable_progress_bar=false"]) == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["extra"] = _Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)
    assert eval_script.main([f"ckpt_path={evil}", f"out_dir={tmp_path / 'eval'}"]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "evil.ckpt" in err
    pose_file = tmp_path / "poses.npz"
    np.savez(pose_file, body_pose=np.zeros((1, 69), np.float32))
    assert zoo_main(["animate", str(evil), "--pose", str(pose_file), "--out", str(tmp_path / "frames")]) == 2
    resumed = tmp_path / "resumed"
    assert train_script.main(["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={resumed}",
                              "test_after_fit=false", "trainer.enable_progress_bar=false",
                              f"ckpt_path={evil}"]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "evil.ckpt" in err and "Traceback" not in err
    assert not marker.exists(), "the planted pickle ran"
    assert not (tmp_path / "eval" / "metrics.json").exists()
    assert not resumed.exists(), "a refused resume left output behind"
    # Lightning's own resume path loads with weights_only=True too (not only our up-front check)
    import lightning as L
    import pickle

    import pytest

    import zoo

    model = zoo.load(run / "checkpoints" / "last.ckpt", body_models=str(body_models_root))
    assert model.step == int(ckpt["global_step"]) > 0  # pinned by runner.load_module
    trainer = L.Trainer(max_steps=int(ckpt["global_step"]) + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with pytest.raises(pickle.UnpicklingError):
        trainer.fit(model, train_dataloaders=[{}], ckpt_path=str(evil), weights_only=True)
    assert not marker.exists(), "the planted pickle ran"


def test_planted_pickle_in_last_ckpt_is_refused_on_resume(tiny_subject, body_models_root, tmp_path, capsys):
    """The resume path proper: ckpt_path=<run>/checkpoints/last.ckpt (no run_dir: train.py resumes into
    <run>) with a planted pickle is refused with one line, and the run folder is left as it was."""
    import train as train_script

    run = tmp_path / "run"
    args = ["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
            f"body_models={body_models_root}", "logger=csv", "test_after_fit=false", "trainer.enable_progress_bar=false"]
    assert train_script.main([*args, f"run_dir={run}"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["extra"] = _Payload(marker)
    torch.save(ckpt, last)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    capsys.readouterr()
    assert train_script.main([*args, f"ckpt_path={last}"]) == 2
    captured = capsys.readouterr()
    assert "refusing to load" in captured.err and "last.ckpt" in captured.err and "Traceback" not in captured.err
    assert "resuming" not in captured.out
    assert not marker.exists(), "the planted pickle ran"
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before, "the refused resume changed the run"
