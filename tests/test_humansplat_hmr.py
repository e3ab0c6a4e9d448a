"""HumanSplatHMR: gradients reach pose and translation through the renderer (finite differences, the
depth term's sign, scale/shift invariance), refinement undoes a known pose offset, the initial poses
of every source (dataset, calibrated noise identical to the data layer's, pose file), the pose
metrics on hand-made errors, the temporal prior's value, and the refined poses written on fit end
in the zoo's pose-file format."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import zoo
from zoo import runner
from zoo.core.losses import l1_loss, mask_loss
from zoo.data.pose_files import load_pose_file, noisy_pose_file, save_pose_file, sequence_poses


@pytest.fixture(scope="module")
def tiny(tiny_subject, body_models_root):
    data_cfg = {"format": "zju_mocap", "root": str(tiny_subject), "options": {}, "batch_size": 1, "num_workers": 0,
                "cache": "auto"}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    info = runner.data_info(dm, data_cfg, str(body_models_root))
    return dm, info


def _model(info, **overrides):
    torch.manual_seed(0)
    model = zoo.create("humansplat_hmr", preset="tiny", data_info=info, **overrides)
    model.pin_step(10 ** 6)
    return model


def _batch(dm, i=0):
    loader = dm.train_dataloader()
    for j, batch in enumerate(loader):
        if j == i:
            return batch
    raise IndexError(i)


def _upscaled(batch, factor=4):
    """The same frame seen by a camera with `factor` x the pixels (targets are rendered, not read)."""
    out = dict(batch)
    H, W = batch["image"].shape[-2:]
    out["image"] = torch.zeros(1, 3, H * factor, W * factor)
    out["mask"] = torch.zeros(1, 1, H * factor, W * factor)
    K = batch["K"].clone()
    K[:, :2, :2] *= factor
    K[:, :2, 2] = (K[:, :2, 2] + 0.5) * factor - 0.5
    out["K"] = K
    return out


def test_gradients_reach_pose_and_translation_through_the_renderer(tiny):
    dm, info = tiny
    torch.manual_seed(0)  # the finite differences below depend on the texture drawn here
    model = _model(info, **{"init_poses.source": "noise"})
    model.train()
    with torch.no_grad():
        model.color_logits.normal_(0.0, 1.5)  # a textured avatar
    batch = _upscaled(_batch(dm), 2)
    bg = torch.zeros(3)
    target = _batch(dm)
    gt = torch.nn.functional.interpolate(target["image"], scale_factor=2, mode="bilinear")
    mask = torch.nn.functional.interpolate(target["mask"], scale_factor=2, mode="nearest")
    slot = int(model.frame_slot(batch))

    def loss_at(with_mask: bool = True) -> torch.Tensor:
        out = model.render_batch(batch, bg)
        loss = l1_loss(out["rgb"], gt)
        return loss + mask_loss(out["alpha"], mask) if with_mask else loss

    loss = loss_at()
    loss.backward()
    g_pose = model.pose_embed.weight.grad.coalesce().to_dense()
    g_transl = model.transl_embed.weight.grad.coalesce().to_dense()
    assert torch.isfinite(g_pose).all() and torch.isfinite(g_transl).all()
    assert g_pose[slot, :3].abs().sum() > 0 and g_pose[slot, 3:].abs().sum() > 0  # orientation and joints
    assert g_transl[slot].abs().sum() > 0
    others = [s for s in range(g_pose.shape[0]) if s != slot]
    assert g_pose[others].abs().sum() == 0  # only the batch frame's row
    # finite differences of the photometric term along its gradient, for translation and pose (the
    # alpha of the mask term has the rasterizer's early-termination steps, so it is left out here)
    model.zero_grad(set_to_none=True)
    loss_at(with_mask=False).backward()
    for weight in (model.transl_embed.weight, model.pose_embed.weight):
        grad = weight.grad.coalesce().to_dense()[slot]
        u = grad / grad.norm()
        numerics = []
        # several step sizes, the median kept: one step can straddle a Gaussian's culling or the
        # rasterizer's alpha thresholds, which are discontinuities of the loss. The 3-sigma cut-off
        # of every splat moves with it and adds to the finite difference what no analytic gradient
        # has (gsplat's too), so the two agree to ~30% here, not better (the renderer itself is
        # checked exactly against a dense oracle in tests/test_render.py)
        for h in (2e-4, 5e-4, 1e-3, 2e-3, 4e-3):
            with torch.no_grad():
                base = weight[slot].clone()
                weight[slot] = base + h * u
                up = loss_at(with_mask=False).item()
                weight[slot] = base - h * u
                down = loss_at(with_mask=False).item()
                weight[slot] = base
            numerics.append((up - down) / (2 * h))
        numeric = sorted(numerics)[len(numerics) // 2]
        assert numeric == pytest.approx(grad.norm().item(), rel=0.35), numerics


def test_depth_term_pulls_translation_along_the_view_ray_and_is_scale_shift_invariant(tiny):
    dm, info = tiny
    batch = _batch(dm)
    for relative in (False, True):
        model = _model(info, **{"init_poses.source": "dataset", "depth_relative": relative,
                                "loss.depth": 1.0})
        model.train()
        with torch.no_grad():
            out = model.render_batch(batch, torch.zeros(3))
        valid = (out["alpha"] > 0.5).float()
        b = dict(batch, mask=valid)
        if not relative:  # the person seen 10 cm farther: moving away along the ray lowers the loss
            b["depth"] = (out["depth"] + 0.1) * valid
            terms = model.loss_terms(b, model.render_batch(b, torch.zeros(3)), batch["image"])
            terms["depth"].backward()
            g = model.transl_embed.weight.grad.coalesce().to_dense()[int(model.frame_slot(b))]
            forward = batch["w2c"][0, 2, :3]  # the camera's viewing direction in world coordinates
            assert float(g @ forward) < 0 and abs(float(g @ forward)) > 0.5 * float(g.norm())
        else:  # an affine copy of the rendered depth costs nothing
            b["depth"] = (2.0 * out["depth"] + 0.3) * valid
            terms = model.loss_terms(b, model.render_batch(b, torch.zeros(3)), batch["image"])
            assert terms["depth"].item() < 1e-4


def test_refinement_undoes_a_known_pose_offset(tiny):
    """Render the avatar in a frame's pose, move the pose (5 cm, 5 degrees of global rotation), and let
    the image and mask losses alone bring the body back (measured on the joints: a yaw of the whole
    body and of the spine look alike, so the parameters need not return one by one)."""
    dm, info = tiny
    model = _model(info, **{"init_poses.source": "dataset"})
    model.eval()
    with torch.no_grad():
        model.color_logits.normal_(0.0, 1.5)
    batch = _upscaled(_batch(dm), 2)
    bg = torch.zeros(3)
    with torch.no_grad():
        target = model.render_batch(batch, bg)
    slot = int(model.frame_slot(batch))
    true_transl = model.transl_embed.weight[slot].detach().clone()

    def joints() -> torch.Tensor:
        with torch.no_grad():
            p, t = model.pose_embed.weight[slot:slot + 1], model.transl_embed.weight[slot:slot + 1]
            return model.body({"global_orient": p[:, :3], "body_pose": p[:, 3:], "transl": t, "betas": model.betas}).joints[0]

    true_joints = joints()
    with torch.no_grad():
        model.transl_embed.weight[slot] += torch.tensor([0.04, -0.03, 0.0])
        model.pose_embed.weight[slot, 1] += math.radians(5.0)
    params = [model.transl_embed.weight, model.pose_embed.weight]
    for p in model.parameters():
        p.requires_grad_(any(p is q for q in params))
    opt = torch.optim.SparseAdam(params, lr=5e-3)
    start = (joints() - true_joints).norm(dim=-1).mean().item()
    for _ in range(40):
        out = model.render_batch(batch, bg)
        loss = l1_loss(out["rgb"], target["rgb"]) + mask_loss(out["alpha"], target["alpha"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = (joints() - true_joints).norm(dim=-1).mean().item()
    assert start > 0.04
    assert end < 0.2 * start
    assert (model.transl_embed.weight[slot].detach() - true_transl).norm().item() < 0.01


def test_initial_poses_of_every_source(tiny, tmp_path):
    dm, info = tiny
    seq = dm.sequence
    noise = {"level": 1.0, "seed": 3}
    models = {
        "dataset": _model(info, **{"init_poses.source": "dataset"}),
        "noise": _model(info, **{"init_poses.source": "noise", "init_poses.noise": noise}),
    }
    # a pose file: the dataset's poses with the translation moved 5 cm along x
    clean = sequence_poses(seq)
    shifted = dict(clean.params, transl=clean.params["transl"] + np.array([0.05, 0.0, 0.0], np.float32))
    path = save_pose_file(tmp_path / "hmr.npz", clean.frame_ids, shifted)
    models["file"] = _model(info, **{"init_poses.source": "file", "init_poses.path": str(path)})
    with torch.no_grad():
        for batch in dm.train_dataloader():
            for model in models.values():
                model.frame_body(batch)
    ids = models["dataset"]._frame_ids.tolist()
    expected_noisy = noisy_pose_file(seq, noise).select(ids)  # the data layer's draw, same config
    m = models["noise"]
    assert bool(m.pose_ready.all())
    assert torch.allclose(m.init_pose[:, 3:], torch.as_tensor(expected_noisy["body_pose"]), atol=1e-5)
    assert torch.allclose(m.init_pose[:, :3], torch.as_tensor(expected_noisy["global_orient"]), atol=1e-5)
    assert torch.allclose(m.init_transl, torch.as_tensor(expected_noisy["transl"]), atol=1e-6)
    assert torch.allclose(m.ref_pose[:, 3:], torch.as_tensor(clean.select(ids)["body_pose"]))
    # pose metrics: exact poses score 0; the file's 5 cm shift is 50 mm of root translation only
    zero = models["dataset"].pose_metrics()["mean"]
    assert max(zero.values()) < 1e-3
    metrics = models["file"].pose_metrics()
    assert metrics["initial"]["transl_err"] == pytest.approx([50.0] * len(ids), abs=1e-2)
    assert metrics["mean"]["mpjpe_init"] < 1e-3 and metrics["mean"]["pa_mpjpe_init"] < 1e-3
    noisy_mean = m.pose_metrics()["mean"]
    assert noisy_mean["mpjpe_init"] > 20.0 and noisy_mean["mpjpe"] == pytest.approx(noisy_mean["mpjpe_init"])
    # errors: a file without some training frame, an unknown source, a file source without a path
    partial = save_pose_file(tmp_path / "partial.npz", clean.frame_ids[1:], {k: v[1:] for k, v in shifted.items()})
    with pytest.raises(ValueError, match="no poses for training frame ids"):
        _model(info, **{"init_poses.source": "file", "init_poses.path": str(partial)})
    with pytest.raises(ValueError, match="init_poses.source"):
        _model(info, **{"init_poses.source": "hmr"})
    with pytest.raises(ValueError, match="init_poses.path"):
        _model(info, **{"init_poses.source": "file"})
    missing = _model(info, **{"init_poses.source": "file", "init_poses.path": str(tmp_path / "nope.npz")})
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        missing.frame_body(_batch(dm))


def test_temporal_prior_is_the_squared_acceleration(tiny):
    _, info = tiny
    model = _model(info, **{"init_poses.source": "dataset"})
    model.train()
    with torch.no_grad():
        model.pose_ready[:] = True
        gen = torch.Generator().manual_seed(0)
        model.pose_embed.weight.copy_(torch.randn(model.pose_embed.weight.shape, generator=gen))
        model.transl_embed.weight.copy_(torch.randn(model.transl_embed.weight.shape, generator=gen))
    P, T = model.pose_embed.weight.detach(), model.transl_embed.weight.detach()
    pose, transl = model.temporal_prior(torch.tensor([2]))
    assert pose.item() == pytest.approx((P[1] - 2 * P[2] + P[3]).pow(2).sum().item(), rel=1e-5)
    assert transl.item() == pytest.approx((T[1] - 2 * T[2] + T[3]).pow(2).sum().item(), rel=1e-5)
    assert model.temporal_prior(torch.tensor([0]))[0].item() == 0.0  # no left neighbour
    with torch.no_grad():
        model.pose_ready[3] = False
    assert model.temporal_prior(torch.tensor([2]))[0].item() == 0.0  # neighbour not initialised yet
    # constant velocity is free
    with torch.no_grad():
        model.pose_ready[:] = True
        for s in range(model.pose_embed.weight.shape[0]):
            model.pose_embed.weight[s] = 0.01 * s
    assert model.temporal_prior(torch.tensor([2]))[0].item() < 1e-10


def test_frozen_poses_have_no_optimiser_group(tiny):
    _, info = tiny
    model = _model(info, **{"pose_opt.enabled": False})
    names = [g["name"] for g in model.param_groups()]
    assert "pose" not in names and "transl" not in names
    assert not model.pose_embed.weight.requires_grad and not model.transl_embed.weight.requires_grad


def test_fit_writes_refined_poses_and_pose_metrics(tiny_subject, body_models_root, tmp_path):
    import train as train_script
    from zoo.methods.base import load_pose_file as animation_pose_file

    run = tmp_path / "run"
    code = train_script.main(["experiment=humansplat_hmr_tiny", "data=synthetic", f"data.root={tiny_subject}",
                              "data.synthesize=null", f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "trainer.max_steps=6", "trainer.enable_progress_bar=false", "test_after_fit=false"])  # 6 = 2 val intervals: last.ckpt holds the final state
    assert code == 0
    pf = load_pose_file(run / "refined_poses.npz")  # the data layer's reader accepts the method's file
    metrics = json.loads((run / "pose_metrics.json").read_text())
    assert pf.frame_ids.tolist() == metrics["frame_ids"] and len(pf) >= 1
    assert pf.meta["source"] == "humansplat_hmr" and pf.params["betas"].shape == (len(pf), 10)
    for which in ("initial", "refined"):
        assert set(metrics[which]) == {"mpjpe", "pa_mpjpe", "transl_err"}
        assert len(metrics[which]["mpjpe"]) == len(pf)
    assert metrics["mean"]["mpjpe_init"] > 20.0  # the tiny preset trains on noised poses
    assert metrics["mean"]["mpjpe_init"] == pytest.approx(float(np.mean(metrics["initial"]["mpjpe"])))
    # the refined poses moved from the initial ones, and animation reads the same file
    model = runner.load_module(run / "checkpoints" / "last.ckpt")
    ready = model.pose_ready
    assert not torch.allclose(model.pose_embed.weight[ready], model.init_pose[ready])
    assert np.allclose(pf.params["body_pose"], model.pose_embed.weight[ready][:, 3:].detach().numpy())
    assert animation_pose_file(run / "refined_poses.npz")["body_pose"].shape == (len(pf), 69)
