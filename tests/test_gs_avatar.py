"""3DGS-Avatar (gs_avatar): the pieces the paper names, each against an oracle or a hand-computed value.

* the kinematic-tree softmax (hand-computed), the hash grid of the non-rigid field (equal to a dense
  trilinear lookup when the table is collision-free; gradients to table and input);
* AIAP zero for a rigid motion of the whole body, positive for a stretch;
* the skinning loss zero for the body model's own weights, positive for the untrained field;
* view directions canonicalised (colours invariant to a rigid motion of body and camera together);
* the schedule scaled to the run length (delays, intervals, the 10 -> 0.1 skinning weight);
* gradient clipping of the networks only; the Gaussians frozen before the delay;
* densification through Lightning: the count changes, the one optimizer stays consistent, the opacity
  reset clamps, a checkpoint taken after densification reloads into a fresh module, renders the same
  image and resumes training;
* tiny-cuda-nn agreement (skipped where it is not installed).
"""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo import runner
from zoo.core.projection import quat_scale_to_covar
from zoo.core.skinning import query_weights
from zoo.methods.gs_avatar import tcnn_available, tree_logit_count, tree_softmax, view_noise_rotation


@pytest.fixture(scope="module")
def tiny(tiny_subject, body_models_root):
    data_cfg = {"format": "zju_mocap", "root": str(tiny_subject), "options": {}, "batch_size": 1, "num_workers": 0,
                "cache": "auto"}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    return dm, runner.data_info(dm, data_cfg, str(body_models_root))


def _model(info, **overrides):
    torch.manual_seed(0)
    return zoo.create("gs_avatar", preset="tiny", data_info=info, **overrides)


def _batch(dm):
    return next(iter(dm.train_dataloader()))


def _rigid(angle: float, axis: int, t) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    T = torch.eye(4)
    T[i, i], T[i, j], T[j, i], T[j, j] = c, -s, s, c
    T[:3, 3] = torch.tensor(t)
    return T


# ---------------------------------------------------------------------------------------- blocks
def test_tree_softmax_hand_computed_and_smpl_layout():
    parents = [-1, 0, 0, 1]  # root with two children, joint 1 with one child
    assert tree_logit_count(parents) == 2 + 2  # gates of joints 0 and 1, child logits of joints 1 and 2
    w = tree_softmax(torch.zeros(1, 4), parents)
    # root keeps 1/2, passes 1/4 to each child; joint 1 keeps 1/8 and passes 1/8 to joint 3
    assert torch.allclose(w, torch.tensor([[0.5, 0.125, 0.25, 0.125]]))
    logits = torch.tensor([[math.log(3.0), 0.0, math.log(2.0), 0.0]])  # root passes 3/4, split 2:1
    assert torch.allclose(tree_softmax(logits, parents), torch.tensor([[0.25, 0.25, 0.25, 0.25]]))
    smpl = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    assert tree_logit_count(smpl) == 25  # the official skinning field's 25 outputs
    w = tree_softmax(torch.randn(100, 25) * 3, smpl)
    assert torch.all(w >= 0) and torch.allclose(w.sum(-1), torch.ones(100), atol=1e-6)
    with pytest.raises(ValueError, match="expected 25 logits"):
        tree_softmax(torch.zeros(1, 24), smpl)


def test_hash_grid_collision_free_equals_dense_lookup(tiny):
    _, info = tiny
    # every level fits its table: indexing is dense, so the grid is an exact trilinear volume per level
    model = _model(info, **{"non_rigid.n_levels": 3, "non_rigid.base_resolution": 4,
                            "non_rigid.max_resolution": 16, "non_rigid.log2_table_size": 13})
    enc = model.hash_grid
    assert not bool(enc.hashed.any())
    with torch.no_grad():
        enc.embeddings.normal_()
    x = model.aabb_min + torch.rand(500, 3) * (model.aabb_max - model.aabb_min)
    x = x.requires_grad_(True)
    out = enc(x)
    x01 = enc.normalize(x.detach())
    expected = []
    for lvl in range(enc.n_levels):
        r = int(enc.resolutions[lvl])
        rows = enc.embeddings[int(enc.offsets[lvl]):int(enc.offsets[lvl]) + (r + 1) ** 3]
        vol = rows.T.reshape(1, enc.n_features, r + 1, r + 1, r + 1)  # index i + j (r+1) + k (r+1)^2 -> [D=k, H=j, W=i]
        g = (x01 * 2 - 1).view(1, 1, 1, -1, 3)  # grid_sample's (x, y, z) = (axis 0, 1, 2)
        expected.append(F.grid_sample(vol, g, mode="bilinear", align_corners=True).view(enc.n_features, -1).T)
    assert torch.allclose(out, torch.cat(expected, dim=-1), atol=1e-5)
    out.pow(2).sum().backward()
    assert enc.embeddings.grad.abs().sum() > 0 and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_aiap_zero_for_rigid_motion_positive_for_stretch(tiny):
    _, info = tiny
    model = _model(info)
    model.eval()
    J = len(model.parents)
    g = model.gs
    with torch.no_grad():
        cov_c = quat_scale_to_covar(g["quats"], g["scales"].exp())
        cov_size = float(cov_c.flatten(1).norm(dim=-1).mean())  # typical covariance (m^2)
        nbr = model.neighbours()
        dist = float((g["means"][:, None] - g["means"][nbr]).norm(dim=-1).mean())  # typical neighbour distance (m)
        rigid = _rigid(0.7, 1, [0.3, -0.2, 2.0]).expand(J, 4, 4)
        d = model.deform(rigid, None)  # every bone moved alike: skinning is a rigid motion
        xyz, cov = model.aiap_losses(d["means"][None], quat_scale_to_covar(d["quats"], d["log_scales"].exp())[None])
        assert xyz < 1e-5 * dist and cov < 1e-5 * cov_size  # zero up to float32 rounding
        stretch = torch.diag(torch.tensor([1.5, 1.0, 1.0, 1.0])).expand(J, 4, 4)
        d = model.deform(stretch, None)
        xyz_s, _ = model.aiap_losses(d["means"][None], quat_scale_to_covar(d["quats"], d["log_scales"].exp())[None])
        assert xyz_s > 0.05 * dist
        S = torch.diag(torch.tensor([1.5, 1.0, 1.0]))  # stretch every posed covariance along x
        _, cov_s = model.aiap_losses(g["means"][None], (S @ cov_c @ S)[None])
        assert cov_s > 0.05 * cov_size


def test_skinning_loss_zero_for_body_weights(tiny):
    _, info = tiny
    model = _model(info, **{"skinning.samples": 512})
    verts, faces, weights = model.canon_verts, model.body.faces, model.body.lbs_weights

    def body_field(points):
        return query_weights(points, verts, faces, weights)

    torch.manual_seed(1)
    assert float(model.skinning_loss(body_field)) < 1e-8
    assert float(model.skinning_loss()) > 1e-2  # the untrained field is far from the body model's weights


def test_view_direction_is_canonicalised(tiny):
    dm, info = tiny
    model = _model(info)
    model.eval()
    J = len(model.parents)
    w2c = torch.eye(4)
    w2c[:3, 3] = torch.tensor([0.1, 0.2, 3.0])
    M = _rigid(1.1, 1, [0.5, 0.0, -0.4])
    with torch.no_grad():
        d0 = model.deform(torch.eye(4).expand(J, 4, 4), None)
        d1 = model.deform(M.expand(J, 4, 4), None)
        c0 = model.colors(d0, w2c, 0)
        c1 = model.colors(d1, w2c @ torch.linalg.inv(M), 0)  # the camera moved with the body
        c2 = model.colors(d0, _rigid(0.8, 1, [0, 0, 3.0]), 0)  # another view of the unmoved body
    assert torch.allclose(c0, c1, atol=1e-5)
    assert (c0 - c2).abs().max() > 1e-4  # the colour does depend on the view
    with torch.no_grad():  # a frame never trained (novel pose) takes the last training frame's latent
        assert torch.equal(model.colors(d0, w2c, -1), model.colors(d0, w2c, model.num_frames - 1))
        assert not torch.equal(model.colors(d0, w2c, 0), model.colors(d0, w2c, model.num_frames - 1))
    R = view_noise_rotation(45.0)
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5) and abs(float(torch.linalg.det(R)) - 1) < 1e-5


def test_schedule_scales_to_run_length(tiny):
    _, info = tiny
    model = zoo.create("gs_avatar", data_info=info, num_gaussians=50, max_steps=3000)  # paper counts x 0.2
    assert model.iters("gaussian_delay") == 200 and model.iters("non_rigid_delay") == 600
    assert model.interval("densify_every") == 20 and model.interval("opacity_reset_every") == 600
    s = model.densifier.strategy
    assert (s.refine_start_iter, s.refine_stop_iter, s.refine_every, s.reset_every) == (200, 2000, 20, 600)
    model.pin_step(199)
    assert model.weight("skinning") == 10.0 and not model.non_rigid_active()
    model.pin_step(200)
    assert model.weight("skinning") == pytest.approx(0.1)
    model.pin_step(600)
    assert model.non_rigid_active()
    paper = zoo.create("gs_avatar", data_info=info, num_gaussians=50, max_steps=15000)
    assert paper.iters("non_rigid_delay") == 3000 and paper.interval("densify_every") == 100
    with pytest.raises(ValueError, match="num_gaussians"):
        zoo.create("gs_avatar", data_info=info, num_gaussians=2)
    with pytest.raises(ValueError, match="backend"):
        zoo.create("gs_avatar", data_info=info, num_gaussians=50, **{"non_rigid.backend": "cuda"})


def test_pose_correction_from_its_start_iteration(tiny):
    dm, info = tiny
    model = _model(info, **{"schedule.pose_opt_start": 10})
    batch = _batch(dm)
    with torch.no_grad():
        model.pose_delta.weight.fill_(0.05)
        model.transl_delta.weight.fill_(0.01)
    model.train()
    model.pin_step(9)
    before = model.frame_body(batch)
    assert torch.equal(before["body_pose"], batch["body"]["body_pose"].float())
    model.pin_step(10)
    after = model.frame_body(batch)
    assert torch.allclose(after["body_pose"] - before["body_pose"], torch.full_like(before["body_pose"], 0.05))
    assert torch.allclose(after["transl"] - before["transl"], torch.full_like(before["transl"], 0.01))
    novel = dict(batch, frame_id=torch.tensor([10 ** 6]))  # a frame outside the training sequence: no delta
    assert torch.equal(model.frame_body(novel)["body_pose"], before["body_pose"])


def test_gradient_clipping_networks_only_and_gaussian_delay(tiny):
    dm, info = tiny
    model = _model(info, **{"schedule.gaussian_delay": 5})
    model.train()
    batch = _batch(dm)
    out = model.render_batch(batch, torch.zeros(3))
    terms = model.loss_terms(batch, out, batch["image"] * batch["mask"])
    (1e3 * sum(terms.values())).backward()  # large: the clip must act
    before = {k: p.grad.clone() for k, p in model.gs.items()}
    model.configure_gradient_clipping(None)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.network_parameters() if p.grad is not None]))
    assert norm == pytest.approx(0.1, rel=1e-4)
    assert all(torch.equal(before[k], p.grad) for k, p in model.gs.items())
    model.pin_step(4)
    model.on_before_optimizer_step(None)
    assert all(p.grad is None for p in model.gs.values())


def _trainer(steps: int, root) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, default_root_dir=str(root))


def test_densification_keeps_optimizer_consistent_and_checkpoint_reloads(tiny, tmp_path):
    dm, info = tiny
    cfg = {"schedule.opacity_reset_every": 3, "densify.reset_recovery_steps": 2}  # no refinement 2 steps after
    model = _model(info, **cfg)
    n0 = model.gs.num
    trainer = _trainer(3, tmp_path)
    trainer.fit(model, datamodule=dm)  # refines at step 2, resets opacities at step 3
    n = model.gs.num
    assert n != n0
    opt = trainer.optimizers[0]
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    current = {id(p) for p in model.parameters()}
    for name, p in model.gs.items():
        assert p.shape[0] == n and id(p) in groups and len(groups[id(p)]["params"]) == 1, name
        assert groups[id(p)]["name"] == name
        st = opt.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape, name
    assert all(id(p) in current for p in opt.state), "optimizer state keyed by a parameter the module no longer has"
    assert dict(model.named_parameters())["gs.means"] is model.gs["means"]
    assert model.densifier.state["grad2d"].shape == (n,) and model.densifier.state["count"].shape == (n,)
    assert torch.sigmoid(model.gs["opacities"]).max() <= 0.01 + 1e-6  # the reset at step 3
    assert torch.all(opt.state[model.gs["opacities"]]["exp_avg"] == 0)
    assert model.neighbours().shape == (n, 4) and int(model.neighbours().max()) < n
    # checkpoint after densification -> a freshly built module (other N) loads it and renders the same
    ckpt = tmp_path / "dense.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = runner.load_module(ckpt)
    assert loaded.gs.num == n and int(loaded.trained_steps) == 3
    model.eval()
    batch = next(iter(dm.test_dataloader()[0] if isinstance(dm.test_dataloader(), list) else dm.test_dataloader()))
    with torch.no_grad():
        assert torch.equal(model(batch)["rgb"], loaded(batch)["rgb"])
    # and training resumes from it (optimizer state of the densified shapes)
    resumed = _model(info, **cfg)
    assert resumed.gs.num == n0
    trainer2 = _trainer(5, tmp_path)
    trainer2.fit(resumed, datamodule=dm, ckpt_path=str(ckpt))
    assert trainer2.global_step == 5 and resumed.gs.num >= 1
    for name, p in resumed.gs.items():
        assert trainer2.optimizers[0].state[p]["exp_avg"].shape == p.shape, name


@pytest.mark.skipif(not tcnn_available(), reason="tiny-cuda-nn (and CUDA) not available")
def test_tcnn_hash_grid_agrees_with_torch_hash_grid(tiny):
    """Both backends, fitted to the same smooth field with the same head and schedule, agree."""
    from zoo.core.encoding import HashGridEncoding
    from zoo.methods.gs_avatar import TcnnHashGrid

    torch.manual_seed(0)
    args = (8, 2, 14, 4, 64)
    bbox = ([-1.0] * 3, [1.0] * 3)
    dev = torch.device("cuda")
    x = torch.rand(20000, 3, device=dev) * 2 - 1
    target = torch.stack([torch.sin(3 * x[:, 0]) * torch.cos(2 * x[:, 1]), x[:, 2] ** 2, x.sum(-1) / 3], -1)
    preds = []
    for enc in (HashGridEncoding(3, *args, bbox=bbox).to(dev), TcnnHashGrid(*args, bbox=bbox).to(dev)):
        head = torch.nn.Linear(enc.out_dim, 3).to(dev)
        opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=1e-2)
        for _ in range(300):
            loss = (head(enc(x)) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss < 1e-3
        preds.append(head(enc(x[:2000])).detach())
    assert (preds[0] - preds[1]).abs().mean() < 0.03


def test_paper_presets_compose_with_the_paper_settings():
    from zoo.config import compose

    zju = compose("train", ["experiment=gs_avatar_zju_mocap"])
    assert zju.method._name == "gs_avatar" and zju.data._name == "zju_mocap" and zju.trainer.max_steps == 15000
    assert list(zju.data.options.train_cameras) == [0] and list(zju.data.options.resolution) == [512, 512]
    assert zju.method.pose_opt.enabled and zju.method.schedule.reference_steps == 15000
    ps = compose("train", ["experiment=gs_avatar_people_snapshot"])
    assert ps.method._name == "gs_avatar" and ps.data._name == "people_snapshot" and ps.trainer.max_steps == 30000
    assert not ps.method.pose_opt.enabled and ps.method.background == "black"
    assert ps.data.options.eval_protocol == "people_snapshot_3dgs_avatar" and ps.data.options.downscale == 2
    assert not ps.method.schedule.scale_to_run and ps.method.schedule.densify_stop == 15000
    cpu = compose("train", ["experiment=gs_avatar_synthetic"])
    assert cpu.method._name == "gs_avatar" and cpu.data._name == "synthetic" and cpu.trainer._name == "cpu"
