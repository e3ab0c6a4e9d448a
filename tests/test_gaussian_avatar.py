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
    from zoo.synthetic.subject import ensure_synthetic

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


def test_pose_unet_has_the_official_shape():
    from zoo.methods.gaussian_avatar import PoseEncoder

    enc = PoseEncoder(128, 128, nf=4, out_channels=6, depth=5)
    assert enc.bottleneck_size == 4
    sizes = []
    x = torch.zeros(1, 3, 128, 128)
    for layer in enc.down:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(4, 64, 64), (8, 32, 32), (16, 16, 16), (32, 8, 8), (32, 4, 4)]
    convs = [m for m in enc.down.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in enc.up.modules()) == 5
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules()) == 3 + 4
    assert enc(torch.rand(2, 3, 128, 128)).shape == (2, 6, 128, 128)
    assert PoseEncoder(64, 32, 4, 6, 5)(torch.rand(1, 3, 64, 64)).shape == (1, 6, 32, 32)
    with pytest.raises(ValueError, match="divisible"):
        PoseEncoder(100, 32, 4, 6, 5)


def test_decoder_takes_uv_and_has_official_depth():
    from zoo.methods.gaussian_avatar import TexelDecoder

    dec = TexelDecoder(in_dim=10, hidden=16, trunk_layers=5, head_layers=3)
    linears = [m for m in dec.trunk.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.in_features for lin in linears] == [10, 16, 16, 16, 16 + 10]  # skip into layer 5
    for head, out in ((dec.offset_head, 3), (dec.scale_head, 1), (dec.color_head, 3)):
        layers = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        assert len(layers) == 3 and layers[-1].out_features == out
    assert any(isinstance(m, torch.nn.Softplus) for m in dec.modules())


def test_uv_coordinates_reach_the_decoder(setup):
    info, batch = setup
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info)
    assert model.decoder.trunk[0][0].in_features == model.cfg.feature_channels + 2
    uv = model.texel_uv
    assert uv.shape == (model.num_gaussians, 2) and float(uv.min()) > 0 and float(uv.max()) < 1


def test_stage_two_freezes_features_and_poses_and_adds_the_pose_feature_term(setup):
    info, batch = setup
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info, stage1_steps=2)
    model.train()
    model.pin_step(2)
    out = model.render_batch(batch, torch.zeros(3))
    terms = model.loss_terms(batch, out, batch["image"])
    assert "pose_feature" in terms and "scale" not in terms and "feature" not in terms
    assert terms["pose_feature"] > 0
    terms["pose_feature"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.pose_encoder.parameters() if p.requires_grad)
    assert not model.feature_tensor.requires_grad and not model.pose_delta.weight.requires_grad
    model.pin_step(0)
    model.render_batch(batch, torch.zeros(3))
    assert model.feature_tensor.requires_grad and model.pose_delta.weight.requires_grad
    assert "pose_feature" not in model.loss_terms(batch, model.render_batch(batch, torch.zeros(3)), batch["image"])


def test_stage_two_training_steps_leave_features_and_poses_unchanged(tiny_subject, body_models_root, tmp_path):
    """Real Lightning steps across the switch: stage 1 moves the feature tensor and the pose
    corrections, stage 2 (fresh Adam state, decoder at x0.1) leaves both exactly as they were."""
    import lightning as L

    data_cfg = {"format": "zju_mocap", "root": str(tiny_subject), "options": {}}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    info = runner.data_info(dm, data_cfg, str(body_models_root))
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=info, stage1_steps=2, max_steps=5)
    initial = model.feature_tensor.detach().clone()
    seen = {}

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen[trainer.global_step] = {
                "feature": module.feature_tensor.detach().clone(),
                "pose": module.pose_delta.weight.detach().clone(),
                "decoder": next(module.decoder.parameters()).detach().clone(),
                "adam_steps": [float(s["step"]) for s in trainer.optimizers[0].state.values() if "step" in s],
                "lrs": [g["lr"] for g in trainer.optimizers[0].param_groups],
            }

    trainer = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Probe()])
    trainer.fit(model, datamodule=dm)
    assert not torch.equal(seen[2]["feature"], initial)  # stage 1 trained it
    assert seen[2]["pose"].abs().sum() > 0                  # and the corrections
    assert torch.equal(seen[4]["feature"], seen[2]["feature"])
    assert torch.equal(model.feature_tensor.detach(), seen[2]["feature"])
    assert torch.equal(model.pose_delta.weight.detach(), seen[2]["pose"])
    assert not torch.equal(seen[4]["decoder"], seen[2]["decoder"])  # the networks still train
    # fresh optimizer at the switch: Adam step counts restart (2 stage-2 steps by step 4)
    assert max(seen[4]["adam_steps"]) == 2.0
    lr_net = float(model.cfg.optim.lr_net)
    names = [g["name"] for g in trainer.optimizers[0].param_groups]
    lrs1, lrs2 = dict(zip(names, seen[0]["lrs"])), dict(zip(names, seen[2]["lrs"]))  # first step of each stage
    assert lrs1["pose_encoder"] == 0.0 and lrs1["decoder"] == pytest.approx(lr_net)
    assert lrs2["decoder"] == pytest.approx(0.1 * lr_net) and lrs2["pose_encoder"] == pytest.approx(lr_net)
    assert lrs2["feature_tensor"] == 0.0
    # the step decay restarts with stage 2: milestones at 0.6 / 0.85 of its 3 steps -> 1 and 2
    lrs3 = dict(zip(names, seen[3]["lrs"]))
    assert lrs3["decoder"] == pytest.approx(0.1 * lr_net * float(model.cfg.optim.gamma))
