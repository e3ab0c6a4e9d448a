"""Reliability: a non-finite loss or gradient skips the step (parameters and checkpoints stay finite)
and K in a row stop the run naming the loss term and the frames; bad input (a NaN pose, a truncated
image, a mask of the wrong size) is refused before the first step with one line naming the file."""
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
    # the up-front validation refuses such a file (next test); here the NaN appears after it
    dm, info = _dm(tiny_subject, body_models_root)
    for rec in dm.sequence.records:
        if rec.frame_id == 3:
            rec.body = dict(rec.body, body_pose=np.where(np.arange(rec.body["body_pose"].size) == 5, np.nan,
                                                         rec.body["body_pose"]))
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


def test_a_nan_pose_file_is_refused_before_the_first_step(tiny_subject, body_models_root, tmp_path, capsys):
    import train as train_script

    root = tmp_path / "subject"
    shutil.copytree(tiny_subject / "..", root, dirs_exist_ok=True)
    subject = root / tiny_subject.name
    _poison(subject, [2])
    run = tmp_path / "run"
    code = train_script.main(["experiment=gaussian_avatar_tiny", "data=zju_mocap", f"data.root={subject}",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "trainer.max_steps=20", "trainer.val_check_interval=20",
                              "trainer.enable_progress_bar=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "body parameter 'body_pose' of frame 2 is not finite" in err and "Traceback" not in err
    assert not run.exists()


@pytest.mark.parametrize("damage", ["truncated_image", "mask_size"])
def test_bad_frames_are_refused_before_the_first_step(damage, tiny_subject, body_models_root, tmp_path, capsys):
    """A truncated image, or a mask whose size differs from its image, fails at setup with one line
    naming the file (exit 2), not when a training step reaches the frame."""
    import train as train_script
    from PIL import Image

    root = tmp_path / "subject"
    shutil.copytree(tiny_subject / "..", root, dirs_exist_ok=True)
    subject = root / tiny_subject.name
    if damage == "truncated_image":
        target = subject / "Camera_B1" / "000005.jpg"
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:
        target = next((subject / "mask_cihp" / "Camera_B1").glob("000005.png"), None) or \
            next((subject / "mask" / "Camera_B1").glob("000005.png"))
        Image.fromarray(np.zeros((20, 17), np.uint8)).save(target)
    run = tmp_path / "run"
    code = train_script.main(["experiment=gaussian_avatar_tiny", "data=zju_mocap", f"data.root={subject}",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "trainer.enable_progress_bar=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(target) in err and "Traceback" not in err
    assert not run.exists()
