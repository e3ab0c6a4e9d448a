"""GaussianAvatar specifics: UV-space Gaussians, two stages, per-frame pose corrections, novel poses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo import runner


@pytest.fixture(scope="module")
def setup(tiny_subject, body_models_root):
    data_cfg = {"format": "zju_mocap", "root": str(tiny_subject), "options": {}}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    info = runner.data_info(dm, data_cfg, str(body_models_root))
    batch = next(iter(dm.train_dataloader()))
    return info, batch


def test_one_gaussian_per_covered_texel(setup):
    info, _ = setup
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info)
    from zoo.core.mesh import uv_rasterize

    vt, ft = model.body.uv()
    face, _ = uv_rasterize(vt, ft, model.cfg.uv_size)
    assert model.num_gaussians == int((face >= 0).sum())
    # texel weights are convex combinations of the body's vertex weights
    w = model.texel_weights
    assert torch.allclose(w.sum(-1), torch.ones(len(w)), atol=1e-5) and (w >= -1e-6).all()
    # canonical texel points lie on the canonical surface: within the body's bounding box
    canon = model.body.canonical(model.cfg.canonical, model.betas).vertices[0]
    lo, hi = canon.min(0).values, canon.max(0).values
    assert ((model.canon_points >= lo - 1e-5) & (model.canon_points <= hi + 1e-5)).all()


def test_stages_switch_and_pose_encoder_only_in_stage_two(setup):
    info, batch = setup
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info, stage1_steps=10)
    model.train()
    model.pin_step(0)
    assert model.stage == 1
    out = model.render_batch(batch, torch.zeros(3))
    out["rgb"].mean().backward()
    assert all(p.grad is None for p in model.pose_encoder.parameters())
    model.zero_grad()
    model.pin_step(10)
    assert model.stage == 2
    out = model.render_batch(batch, torch.zeros(3))
    out["rgb"].mean().backward()
    assert all(p.grad is not None for p in model.pose_encoder.parameters())
    only2 = zoo.create("gaussian_avatar", preset="tiny", data_info=info, stage1=False)
    only2.pin_step(0)
    assert only2.stage == 2


def test_pose_corrections_wait_for_their_start_step(setup):
    info, batch = setup
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info, **{"pose_opt.start_step": 5})
    model.train()
    with torch.no_grad():
        model.pose_delta.weight.add_(0.3)
    model.pin_step(0)
    before = model.frame_body(batch)
    assert torch.equal(before["body_pose"], batch["body"]["body_pose"].float())
    model.pin_step(5)
    after = model.frame_body(batch)
    assert torch.allclose(after["body_pose"] - batch["body"]["body_pose"].float(), torch.full_like(after["body_pose"], 0.3))
    # a frame the model never saw (novel pose) gets no correction
    unseen = dict(batch, frame_id=torch.tensor([10 ** 6]))
    assert torch.equal(model.frame_body(unseen)["body_pose"], batch["body"]["body_pose"].float())


def test_scale_warmup_ramp(setup):
    info, _ = setup
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info, scale_warmup_steps=100, scale_warmup_start=0.5)
    model.train()
    model.pin_step(0)
    assert model._scale_ramp() == pytest.approx(0.5)
    model.pin_step(50)
    assert model._scale_ramp() == pytest.approx(0.75)
    model.pin_step(100)
    assert model._scale_ramp() == pytest.approx(1.0)
    model.eval()
    model.pin_step(0)
    assert model._scale_ramp() == 1.0


@pytest.mark.parametrize("stage", [1, 2])
def test_novel_pose_rendering_after_either_stage(setup, stage):
    info, batch = setup
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info, stage1_steps=10)
    model.pin_step(0 if stage == 1 else 10)
    assert model.stage == stage
    body = batch["body"]
    poses = {"global_orient": body["global_orient"].repeat(2, 1).numpy(),
             "body_pose": (body["body_pose"].repeat(2, 1) + torch.tensor([[0.0], [0.3]])).numpy(),
             "transl": body["transl"].repeat(2, 1).numpy()}
    imgs = model.render_poses(poses, batch["K"][0], batch["w2c"][0], 32, 32, background=(1.0, 1.0, 1.0))
    assert imgs.shape == (2, 3, 32, 32)
    assert (imgs < 0.99).any(), "the avatar must be visible"
    assert not torch.equal(imgs[0], imgs[1]), "a different pose must render differently"


def test_missing_uv_template_is_a_clear_error(setup, tmp_path, body_models_root):
    """A SMPL file without vt/ft and no smpl_uv template: the error says what to provide."""
    import pickle
    import shutil

    info, _ = setup
    root = tmp_path / "models"
    shutil.copytree(body_models_root, root)
    for path in (root / "smpl").glob("SMPL_*.pkl"):
        with open(path, "rb") as fh:
            data = pickle.load(fh)
        data.pop("vt", None), data.pop("ft", None)
        with open(path, "wb") as fh:
            pickle.dump(data, fh)
    for path in (root / "smpl").glob("SMPL_*.npz"):
        path.unlink()
    info = dict(info, body_models=str(root))
    with pytest.raises(FileNotFoundError, match="(?i)uv"):
        zoo.create("gaussian_avatar", preset="tiny", data_info=info)


def test_animate_command_renders_a_pose_file(tiny_subject, body_models_root, tmp_path):
    import train as train_script
    from zoo.__main__ import main as zoo_main

    run = tmp_path / "run"
    assert train_script.main(["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "test_after_fit=false", "trainer.enable_progress_bar=false"]) == 0
    rng = np.random.default_rng(0)
    pose_file = tmp_path / "poses.npz"
    np.savez(pose_file, body_pose=rng.normal(0, 0.1, (3, 69)).astype(np.float32),
             global_orient=np.zeros((3, 3), np.float32), transl=np.zeros((3, 3), np.float32))
    out = tmp_path / "frames"
    assert zoo_main(["animate", str(run / "checkpoints" / "last.ckpt"), "--pose", str(pose_file), "--out", str(out),
                     "--res", "32"]) == 0
    frames = sorted(out.glob("frame*.png"))
    assert len(frames) == 3
    from PIL import Image

    img = np.asarray(Image.open(frames[0]))
    assert img.shape == (32, 32, 3) and (img < 250).any()
    assert zoo_main(["animate", str(run / "checkpoints" / "last.ckpt"), "--pose", str(tmp_path / "nope.npz"),
                     "--out", str(out)]) == 2


def test_smplx_subject_position_maps(tmp_path, body_models_root):
    """GaussianAvatar on an SMPL-X subject (X-Humans layout): the UV pipeline and the pose encoder's
    posed position map work for SMPL-X as for SMPL (a complaint about the original code)."""
    from zoo.data.synthetic import ensure_synthetic

    subject = ensure_synthetic(tmp_path / "xh", format="x_humans", subjects=1, frames=4, res=32, seed=1,
                               body_models=body_models_root)
    data_cfg = {"format": "x_humans", "root": str(subject), "options": {}}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    info = runner.data_info(dm, data_cfg, str(body_models_root))
    assert info["model_type"] == "smplx"
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info)
    assert model.body.num_joints == 55
    model.train()
    model.pin_step(10 ** 6)
    batch = next(iter(dm.train_dataloader()))
    out = model.render_batch(batch, torch.zeros(3))
    assert out["rgb"].shape[-2:] == batch["image"].shape[-2:]
    out["rgb"].mean().backward()
    assert all(p.grad is not None for p in model.pose_encoder.parameters())
    assert model.pose_delta.weight.shape[1] == 3 + 63  # root + SMPL-X body joints
