"""NoPo-Avatar (zoo/methods/nopo_avatar.py, nopo_backbone.py): pose-free inference (garbage context
poses and cameras change nothing), context views treated as a set, exact LBS of the template
branch, the projection loss's geometry, skinning supervision, external weights behind a sha256,
test-time pose alignment, the optimiser schedule, animation / export helpers and the CLI path
(train.py experiment=nopo_avatar_tiny, eval.py on its checkpoint)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import zoo
from zoo import runner
from zoo.core.mesh import interpolate, render_mesh_attributes
from zoo.core.skinning import lbs_points


@pytest.fixture(scope="module")
def multi(tmp_path_factory, body_models_root):
    """Four tiny synthetic subjects and their multi-subject datamodule + data_info."""
    from zoo.synthetic.subject import synthesize

    root = tmp_path_factory.mktemp("nopo_multi")
    synthesize("zju_mocap", root, subjects=4, frames=5, res=32, seed=11, cameras=3, body_models=body_models_root)
    cfg = {"format": "zju_mocap", "root": str(root), "options": {"eval_protocol": "synthetic"},
           "protocol": {"background": [0.0, 0.0, 0.0]},
           "multi_subject": {"test_subjects": 1, "context_res": 32, "max_test_targets": 4, "num_target": 2},
           "batch_size": 1}
    dm = runner.build_datamodule(cfg, str(body_models_root))
    dm.setup()
    info = runner.data_info(dm, cfg, str(body_models_root))
    return root, cfg, dm, info


def _model(info, **overrides):
    torch.manual_seed(0)
    return zoo.create("nopo_avatar", preset="tiny", data_info=info, **overrides)


def _randomise_heads(model, std=0.05):
    """Give the (near-zero initialised) output layers real values, so outputs depend on the input."""
    with torch.no_grad():
        for head in (model.pixel_head, model.template_head):
            head.out[-1].weight.normal_(0.0, std)


def test_context_pose_and_camera_are_never_read(multi):
    _, _, dm, info = multi
    model = _model(info)
    _randomise_heads(model)
    model.eval()
    batch = next(iter(dm.test_dataloader()[0]))
    with torch.no_grad():
        a = model(batch)["rgb"]
        ctx = batch["context"]
        ctx["K"] = torch.full_like(ctx["K"], float("nan"))
        ctx["w2c"] = torch.randn_like(ctx["w2c"]) * 1e3
        ctx["body"] = {k: torch.full_like(v, float("nan")) for k, v in ctx["body"].items()}
        b = model(batch)["rgb"]
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    assert torch.equal(a, b)


def test_context_views_are_a_set_and_images_matter(multi):
    _, _, dm, info = multi
    model = _model(info)
    _randomise_heads(model)
    model.eval()
    batch = next(iter(dm.test_dataloader()[0]))
    with torch.no_grad():
        a = model(batch)["rgb"]
        perm = dict(batch)
        perm["context"] = {**batch["context"], "image": batch["context"]["image"][:, [2, 0, 1]],
                           "mask": batch["context"]["mask"][:, [2, 0, 1]]}
        b = model(perm)["rgb"]
        other = dict(batch)
        other["context"] = {**batch["context"], "image": batch["context"]["image"].flip(-1),
                            "mask": batch["context"]["mask"].flip(-1)}
        c = model(other)["rgb"]
    assert torch.allclose(a, b, atol=1e-4)
    assert (a - c).abs().max() > 1e-3


def test_template_branch_lbs_matches_the_posed_body(multi):
    _, _, dm, info = multi
    model = _model(info)
    with torch.no_grad():
        model.template_head.out[-1].weight.zero_()
        model.template_head.out[-1].bias.zero_()
    model.eval()
    body = {"betas": torch.zeros(1, 10), "global_orient": torch.tensor([[0.2, -0.4, 0.1]]),
            "body_pose": torch.randn(1, 69) * 0.3, "transl": torch.tensor([[0.1, 0.9, -0.2]])}
    transforms, out = model.bone_transforms(body)
    B = model.body
    tex_face, tex_bary = _texels(model)
    with torch.no_grad():
        g = model.encode(torch.zeros(1, 3, 3, 32, 32), torch.zeros(1, 3, 1, 32, 32))[0]
        posed = model.pose(g, transforms).means[g["num_pixel"]:]
        # the oracle: each texel's point on the (zero-shape) rest body, skinned by the body model's own
        # rest -> posed transforms with the texel's interpolated weights (canonical T-pose = rest pose)
        rest = (out.v_shaped[0][B.faces[tex_face]] * tex_bary[..., None]).sum(1)
        expected = lbs_points(rest, model.texel_weights, out.transforms)[0]
    assert torch.allclose(posed, expected, atol=1e-4)
    # and it lies on the posed mesh up to the pose correctives and the blend across each face (< 2 cm)
    with torch.no_grad():
        mesh = (out.vertices[0][B.faces[tex_face]] * tex_bary[..., None]).sum(1)
    assert (posed - mesh).norm(dim=-1).max() < 0.02
    # another shape: each bone is carried to the subject's rest joint (texels on one bone move rigidly with it)
    betas = torch.zeros(1, 10)
    betas[0, 0] = 2.0
    zero = {"betas": betas, "body_pose": torch.zeros(1, 69)}
    transforms2, out2 = model.bone_transforms(zero)
    with torch.no_grad():
        moved = model.pose(g, transforms2).means[g["num_pixel"]:]
    rigid = model.texel_weights.max(dim=1).values > 0.999
    bone = model.texel_weights.argmax(dim=1)
    shift = out2.rest_joints[0] - model.rest_joints0
    assert rigid.sum() > 20
    assert torch.allclose(moved[rigid], model.texel_pos[rigid] + shift[bone[rigid]], atol=1e-4)


def _texels(model):
    from zoo.core.mesh import uv_rasterize

    vt, ft = model.body.uv()
    face, bary = uv_rasterize(vt, ft, int(model.cfg.template.uv_size))
    valid = face >= 0
    return face[valid], bary[valid].float()


def test_projection_and_skinning_losses_vanish_for_the_true_surface(multi):
    """Pixel Gaussians placed at the canonical surface point their pixel sees, with that point's
    skinning weights, project back onto their pixels (projection ~ 0) and match the rasterized
    weights (cross-entropy = the weights' entropy); shifted points cost a clear projection loss."""
    _, _, dm, info = multi
    model = _model(info)
    batch = next(iter(dm.train_dataloader()))
    c = batch["context"]
    geo = {"K": c["K"][0], "w2c": c["w2c"][0], "body": {k: v[0] for k, v in c["body"].items()}}
    R = model.context_res
    transforms, out = model.bone_transforms(geo["body"])
    B = model.body
    means, logits, src = [], [], []
    for v in range(3):
        K = geo["K"][v].clone()
        K[0, 2] += 0.5
        K[1, 2] += 0.5
        r = render_mesh_attributes(out.vertices[v], B.faces, K, geo["w2c"][v], R, R)
        hit = torch.nonzero(r["mask"])
        f, bary = r["face_index"][r["mask"]], r["bary"][r["mask"]]
        w = (B.lbs_weights[B.faces[f]] * bary[..., None]).sum(1)
        # the canonical point that the posed-body LBS maps onto this surface point (invert the blend)
        posed = (out.vertices[v][B.faces[f]] * bary[..., None]).sum(1)
        blend = torch.einsum("nj,jab->nab", w, transforms[v])
        canon = torch.linalg.solve(blend[:, :3, :3], (posed - blend[:, :3, 3])[..., None])[..., 0]
        means.append(canon)
        logits.append(torch.log(w.clamp_min(1e-8)))
        src.append(torch.cat([torch.full((len(hit), 1), v), hit], dim=1))
    group = {"means": torch.cat(means), "logits": torch.cat(logits), "pixel_src": torch.cat(src),
             "num_pixel": sum(len(m) for m in means)}
    proj, lbs = model._context_losses(group, geo, c["mask"][0])
    assert float(proj) < 1e-6
    w = torch.softmax(group["logits"], -1)
    entropy = -(w * torch.log(w.clamp_min(1e-12))).sum(-1).mean()
    assert float(lbs) == pytest.approx(float(entropy), rel=0.05, abs=1e-3)
    group["means"] = group["means"] + torch.tensor([0.05, 0.0, 0.0])
    proj2, _ = model._context_losses(group, geo, c["mask"][0])
    assert float(proj2) > 1e-4


def test_every_parameter_gets_a_gradient_on_multi_subject_batches(multi):
    _, _, dm, info = multi
    model = _model(info)
    model.train()
    model.pin_step(100)
    batch = next(iter(dm.train_dataloader()))
    bg = model.background_color(training=True)
    out = model.render_batch(batch, bg)
    gt = batch["image"] * batch["mask"]
    terms = model.loss_terms(batch, out, gt)
    assert {"mse", "lpips", "chamfer", "projection", "lbs", "lbs_template"} <= set(terms)
    sum(terms.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_pretrained_backbone_weights_need_their_sha256(multi, tmp_path):
    from zoo.methods.nopo_backbone import sha256_of

    _, _, _, info = multi
    donor = _model(info)
    with torch.no_grad():
        for p in donor.backbone.parameters():
            p.add_(0.5)
    path = tmp_path / "vit.pt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in donor.backbone.state_dict().items()}}, path)
    digest = sha256_of(path)
    model = _model(info, **{"backbone.pretrained.path": str(path), "backbone.pretrained.sha256": digest,
                            "backbone.pretrained.prefix": "backbone."})
    for (name, a), b in zip(donor.backbone.state_dict().items(), model.backbone.state_dict().values()):
        assert torch.equal(a, b), name
    lrs = {g["name"]: g["lr"] for g in model.param_groups()}
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["heads"])
    with pytest.raises(ValueError, match="sha256 .* does not match"):
        _model(info, **{"backbone.pretrained.path": str(path), "backbone.pretrained.sha256": "ab" * 32})
    with pytest.raises(ValueError, match="sha256 is required"):
        _model(info, **{"backbone.pretrained.path": str(path)})
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        _model(info, **{"backbone.pretrained.path": str(tmp_path / "missing.pt"), "backbone.pretrained.sha256": digest})


def test_pose_alignment_recovers_a_shifted_camera_with_the_network_frozen(multi):
    _, _, dm, info = multi
    model = _model(info, **{"pose_align.enabled": True, "pose_align.steps": 40, "pose_align.body": False,
                            "pose_align.lpips": 0.0, "pose_align.lr_camera": 0.01})
    _randomise_heads(model)
    model.eval()
    batch = next(iter(dm.test_dataloader()[0]))
    bg = model.background_color(training=False)
    with torch.no_grad():
        truth = model.render_batch(batch, bg)["rgb"]
    shifted = dict(batch)
    w2c = batch["w2c"].clone()
    w2c[:, 0, 3] += 0.06  # 6 cm sideways
    shifted["w2c"] = w2c
    shifted["image"], shifted["mask"] = truth, torch.ones_like(truth[:, :1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        err0 = (model.render_batch(shifted, bg)["rgb"] - truth).pow(2).mean()
    aligned = model.align_pose(shifted, bg)
    with torch.no_grad():
        err1 = (model.render_batch(aligned, bg)["rgb"] - truth).pow(2).mean()
    assert float(err1) < 0.5 * float(err0)
    assert abs(float(aligned["w2c"][0, 0, 3] - batch["w2c"][0, 0, 3])) < 0.03
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # and through Lightning's test loop, which runs under torch.inference_mode (eval.py's path)
    import lightning as L

    model.cfg.pose_align.steps = 2
    model.test_split_names = dm.test_split_names
    model.test_results = {}
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_test_batches=1, enable_checkpointing=False)
    trainer.test(model, datamodule=dm, verbose=False)
    assert set(model.test_results) == set(dm.test_split_names)
    assert all(v["psnr"] > 0 for v in model.test_results.values())


def test_schedule_warms_up_then_decays(multi):
    _, _, _, info = multi
    model = _model(info, **{"max_steps": 100, "optim.warmup_fraction": 0.1, "optim.final_ratio": 0.1})
    sched = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    f = sched.lr_lambdas[0]
    assert f(0) == pytest.approx(0.1) and f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert isinstance(sched.optimizer, torch.optim.AdamW)


def test_gaussians_render_poses_and_stored_avatar(multi):
    _, _, dm, info = multi
    model = _model(info)
    _randomise_heads(model)
    avatar = dm.avatar_context()
    model.set_avatar(avatar["image"], avatar["mask"], avatar["betas"])
    pose = {"body_pose": torch.zeros(69), "global_orient": torch.zeros(3), "transl": torch.zeros(3)}
    bent = dict(pose, body_pose=torch.randn(69) * 0.4)
    canon = model.gaussians(pose, canonical=True)
    posed = model.gaussians(bent)
    assert len(canon) == len(posed) > 100 and not torch.allclose(canon.means, posed.means, atol=1e-3)
    K = torch.tensor([[40.0, 0.0, 15.5], [0.0, 40.0, 15.5], [0.0, 0.0, 1.0]])
    w2c = torch.eye(4)
    w2c[2, 3] = 3.0
    w2c[1, 3] = 0.3
    w2c[:3, :3] = torch.diag(torch.tensor([-1.0, -1.0, 1.0])) @ torch.diag(torch.tensor([-1.0, 1.0, -1.0]))
    frames = model.render_poses({k: v[None].numpy() for k, v in bent.items()}, K, w2c, 32, 32)
    assert frames.shape == (1, 3, 32, 32) and torch.isfinite(frames).all()
    with pytest.raises(ValueError, match="set_avatar: expected"):
        model.set_avatar(torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 32, 32))


def test_train_then_eval_on_held_out_subjects(multi, body_models_root, tmp_path):
    import eval as eval_script
    import train as train_script

    root, _, dm, _ = multi
    run = tmp_path / "run"
    code = train_script.main(["experiment=nopo_avatar_tiny", f"data.root={root}", "data.synthesize=null",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "data.multi_subject.test_subjects=1", "trainer.enable_progress_bar=false"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and set(metrics["metrics"]) == {"test_view", "test_pose"}
    assert set(metrics["baseline"]["metrics"]) == {"test_view", "test_pose"}
    ckpt = run / "checkpoints" / "last.ckpt"
    model = runner.load_module(ckpt)
    assert model.data_info["test_subjects"] == [dm.subjects[-1]] and int(model.avatar_filled) == 3
    out = tmp_path / "eval"
    assert eval_script.main([f"ckpt_path={ckpt}", f"out_dir={out}"]) == 0
    scores = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(scores) == {"test_view", "test_pose"} and all(0 < v["psnr_crop"] < 60 for v in scores.values())
    assert any((out / "test_view" / dm.subjects[-1]).glob("*.png"))
    # test-time pose alignment from eval.py: a scoring-time change of the checkpoint's method config
    aligned = tmp_path / "eval_aligned"
    assert eval_script.main([f"ckpt_path={ckpt}", f"out_dir={aligned}", "+method.pose_align.enabled=true",
                             "+method.pose_align.steps=2", "save_images=false"]) == 0
    record = json.loads((aligned / "metrics.json").read_text())
    assert record["method_changes"] == {"pose_align.enabled": True, "pose_align.steps": 2}
    assert set(record["metrics"]) == {"test_view", "test_pose"}
    assert record["metrics"]["test_view"]["psnr"] != scores["test_view"]["psnr"]  # the poses moved
    assert eval_script.main([f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'bad'}", "+method.pose_align.stepz=2"]) == 2
    assert not (tmp_path / "bad").exists()


def test_animate_and_export_the_shipped_avatar(tmp_path, capsys, monkeypatch):
    """`python -m zoo animate` and `export` work for NoPo-Avatar as for the others: the shipped
    checkpoint's stored avatar (a held-out subject, from its context views) rendered in a pose file,
    one PNG per frame, and written as a PLY."""
    from PIL import Image

    from zoo import checkpoints
    from zoo.__main__ import main

    monkeypatch.setattr(checkpoints, "cache_dir", lambda: tmp_path / "cache")
    ckpt = checkpoints.download("nopo_avatar.synthetic_multi_s0", progress=False)
    rng = np.random.default_rng(0)
    T = 3
    motion = tmp_path / "motion.npz"
    np.savez(motion, body_pose=rng.normal(0, 0.2, (T, 69)).astype(np.float32),
             global_orient=np.zeros((T, 3), np.float32), transl=np.zeros((T, 3), np.float32))
    out = tmp_path / "frames"
    assert main(["animate", str(ckpt), "--motion", str(motion), "--out", str(out), "--res", "48", "--quiet"]) == 0
    frames = sorted(out.glob("*.png"))
    assert len(frames) == T
    imgs = [np.asarray(Image.open(f).convert("RGB"), dtype=np.int64) for f in frames]
    assert imgs[0].shape == (48, 48, 3)
    assert all((255 * 3 - im.sum(axis=2) > 60).sum() > 40 for im in imgs)  # a person in front of the white
    assert np.abs(imgs[0] - imgs[-1]).mean() > 0.5  # the pose moves it
    # and `python -m zoo export` writes its posed Gaussians as the standard 3DGS PLY
    from plyfile import PlyData

    ply = tmp_path / "avatar.ply"
    assert main(["export", str(ckpt), "--out", str(ply), "--pose", str(motion), "--frame", "1"]) == 0
    vertex = PlyData.read(str(ply))["vertex"]
    g = checkpoints.load(ckpt).gaussians({k: v[1] for k, v in np.load(motion).items()})
    assert vertex.count == len(g) > 1000
    xyz = np.stack([np.asarray(vertex[c], dtype=np.float64) for c in "xyz"], 1)
    np.testing.assert_allclose(xyz, g.means.numpy(), atol=1e-5)
    opacity = 1 / (1 + np.exp(-np.asarray(vertex["opacity"], dtype=np.float64)))
    np.testing.assert_allclose(opacity, g.opacities.numpy().clip(1e-6, 1 - 1e-6), atol=1e-5)
