"""A non-finite loss or gradient skips the step (parameters and checkpoints stay finite) and K in a
row stop the run with a message naming the loss term and the frames."""
from __future__ import annotations

import shutil

import lightning as L
import numpy as np
import pytest
import torch

import zoo
from zoo import runner
from zoo.methods.base import NonFiniteError


def _dm(root, body_models_root):
    data_cfg = {"format": "zju_mocap", "root": str(root), "options": {}, "cache": False}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    return dm, runner.data_info(dm, data_cfg, str(body_models_root))


def _poison(root, frames):
    for f in frames:
        path = root / "new_params" / f"{f}.npy"
        params = np.load(path, allow_pickle=True).item()
        params["poses"] = params["poses"].copy()
        params["poses"][0, 5] = np.nan
        np.save(path, params)


def test_a_nan_pose_in_one_frame_skips_its_steps(tiny_subject, body_models_root, tmp_path):
    root = tmp_path / "subject"
    shutil.copytree(tiny_subject, root)
    _poison(root, [3])
    dm, info = _dm(root, body_models_root)
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info, stage1_steps=100)
    trainer = L.Trainer(max_steps=14, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    with pytest.warns(UserWarning, match=r"non-finite (loss term|gradient).*frame 3 camera 0"):
        trainer.fit(model, datamodule=dm)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    path = tmp_path / "after.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_non_finite_gradients_are_dropped():
    from zoo.methods.base import AvatarModule

    class Tiny(AvatarModule):
        def __init__(self):
            super().__init__({"name": "t", "max_nonfinite_steps": 2})
            self.w = torch.nn.Parameter(torch.ones(2))

        def render_batch(self, batch, background):
            raise NotImplementedError

        def loss_terms(self, batch, out, gt):
            raise NotImplementedError

        def param_groups(self):
            return [{"params": [self.w], "lr": 1.0}]

    m = Tiny()
    batch = {"frame_id": torch.tensor([7]), "camera_id": torch.tensor([1])}
    m._guard_batch = batch
    m.w.grad = torch.tensor([1.0, float("inf")])
    with pytest.warns(UserWarning, match="gradient of w .*frame 7 camera 1"):
        m.on_after_backward()
    assert m.w.grad is None
    m.w.grad = torch.tensor([1.0, float("nan")])
    with pytest.raises(NonFiniteError, match="2 steps in a row"):
        m.on_after_backward()
    m._nonfinite_streak = 0
    m.w.grad = torch.ones(2)
    m.on_after_backward()
    assert m.w.grad is not None and m._nonfinite_streak == 0


def test_every_frame_non_finite_stops_train_py(tiny_subject, body_models_root, tmp_path, capsys):
    import train as train_script

    root = tmp_path / "subject"
    shutil.copytree(tiny_subject / "..", root, dirs_exist_ok=True)
    subject = root / tiny_subject.name
    _poison(subject, range(8))
    run = tmp_path / "run"
    code = train_script.main(["experiment=gaussian_avatar_tiny", "data=zju_mocap", f"data.root={subject}",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "trainer.max_steps=20", "trainer.val_check_interval=20",
                              "trainer.enable_progress_bar=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "5 steps in a row" in err and "non-finite" in err and "frame" in err
    assert not (run / "metrics.json").exists()
