"""ExAvatar specifics on a tiny synthetic SMPL-X subject (X-Humans layout): subdivision, nearest-vertex
skinning, part isolation of expressions and hand poses, Laplacian regularisers, the FLAME face loss,
test-time pose fitting, animation from a pose file, and train.py / eval.py with fitting on."""
from __future__ import annotations

import json
import logging
import pickle
import shutil

import numpy as np
import pytest
import torch

import zoo
from zoo import runner
from zoo.core.mesh import face_areas, face_normals, project_points
from zoo.core.textured_mesh import render_textured_mesh


@pytest.fixture(scope="module")
def subject(tmp_path_factory, body_models_root):
    from zoo.synthetic.subject import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("xh"), format="x_humans", subjects=1, frames=8, res=32, seed=1,
                            body_models=body_models_root)


@pytest.fixture(scope="module")
def setup(subject, body_models_root):
    data_cfg = {"format": "x_humans", "root": str(subject), "options": {"eval_protocol": "synthetic"}}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    info = runner.data_info(dm, data_cfg, str(body_models_root))
    batch = next(iter(dm.train_dataloader()))
    return info, batch


def _perturbed(info, **overrides):
    """A tiny model whose identity networks give varied (mm-scale) offsets, scales and colours."""
    torch.manual_seed(0)
    model = zoo.create("exavatar", preset="tiny", data_info=info, **overrides)
    with torch.no_grad():
        for plane in (model.triplane.planes, model.triplane_face.planes):
            plane.normal_(0.0, 0.5)
        for head in (model.offset_head, model.pose_offset_head):
            head.weight.normal_(0.0, 1e-3)
    return model.eval()


@pytest.fixture(scope="module")
def model(setup):
    return _perturbed(setup[0])


def test_requires_the_body_of_the_data_and_counts_one_gaussian_per_vertex(model):
    assert model.model_type == "smplx" and model.num_gaussians == model.body.num_vertices == 10475
    ident = model.identity()
    assert ident["verts"].shape == (10475, 3) and ident["weights"].shape == (10475, 55)
    # body Gaussians use the weights of their nearest original *body* vertex, hands and face their own
    parts = model.body.part_vertices()
    assert parts.body[ident["nearest"][model.is_body]].all()
    torch.testing.assert_close(ident["weights"][model.is_body], model.body.lbs_weights[ident["nearest"][model.is_body]])
    keep = ~model.is_body
    torch.testing.assert_close(ident["weights"][keep], model.body.lbs_weights[keep])
    torch.testing.assert_close(ident["weights"].sum(-1), torch.ones(10475), atol=1e-5, rtol=0)
    # a Gaussian pushed towards another body vertex picks that vertex's weights up
    v = ident["verts"].detach()
    i = int(torch.nonzero(model.is_body)[0])
    j = int(model.nn_candidates[i, -1])
    shifted = model.nn_candidates.gather(1, (((v[i] + 0.999 * (v[j] - v[i]))[None] - v[model.nn_candidates[i]]).pow(2)
                                             .sum(-1)).argmin().view(1, 1))
    assert int(shifted) == j


def test_subdivision_keeps_the_surface_and_carries_weights_and_uvs(setup):
    model = zoo.create("exavatar", preset="tiny", data_info=setup[0], subdivide=1)
    body = model.body
    V, F = body.num_vertices, body.faces.shape[0]
    mesh = model.canonical_mesh()
    verts, faces = mesh["verts"].detach(), mesh["faces"]
    coarse = body.canonical("star", model.subject_betas(), body_pose=model.canon_body_pose).vertices[0].detach()
    edges = model._edges0
    assert verts.shape[0] == V + edges.shape[0] == model.num_gaussians and faces.shape == (4 * F, 3)
    torch.testing.assert_close(verts[:V], coarse)
    torch.testing.assert_close(verts[V:], 0.5 * (coarse[edges[:, 0]] + coarse[edges[:, 1]]))
    # the same surface: equal area, and the four children of a face lie in its plane
    torch.testing.assert_close(face_areas(verts, faces).sum(), face_areas(coarse, body.faces).sum(), rtol=1e-5, atol=0)
    parent = face_normals(coarse, body.faces).repeat_interleave(4, 0)
    cos = (face_normals(verts, faces) * parent).sum(-1)
    assert cos[face_areas(verts, faces) > 1e-10].min() > 0.999
    # skinning weights: convex, summing to one, midpoints of their parents
    W = model.sub_weights
    torch.testing.assert_close(W.sum(-1), torch.ones(len(W)), atol=1e-5, rtol=0)
    assert (W >= 0).all()
    torch.testing.assert_close(W[V:], 0.5 * (body.lbs_weights[edges[:, 0]] + body.lbs_weights[edges[:, 1]]))
    torch.testing.assert_close(model.identity()["weights"].sum(-1), torch.ones(len(W)), atol=1e-5, rtol=0)
    # UVs carried: one UV face per face, same UV area, child corners at parent-edge midpoints
    vt, ft = body.uv()
    uv, uvf = mesh["uv"], mesh["uv_faces"]
    assert uvf.shape == faces.shape

    def uv_area(t, f):
        a, b, c = t[f[:, 0]], t[f[:, 1]], t[f[:, 2]]
        return 0.5 * ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]).abs().sum()

    torch.testing.assert_close(uv_area(uv, uvf), uv_area(vt, ft), rtol=1e-4, atol=0)
    centre = uv[uvf[3::4]]  # the centre child's corners are the midpoints of the parent's edges
    p = vt[ft]
    torch.testing.assert_close(centre[:, 0], 0.5 * (p[:, 0] + p[:, 1]))
    # part masks carried: a vertex of a part stays in it
    parts = body.part_vertices()
    assert model.is_hand[:V].equal(parts.hands) and model.is_face[:V].equal(parts.face)


def _moved(a, b):
    return ((a["means"] - b["means"]).norm(dim=-1)[0] > 0) | ((a["means_tri"] - b["means_tri"]).norm(dim=-1)[0] > 0)


def test_an_expression_moves_only_face_gaussians(model, setup):
    _, batch = setup
    with torch.no_grad():
        params = model.frame_body(batch)
        a = model.posed_gaussians(params)
        other = dict(params, expression=params["expression"] + torch.linspace(-1.5, 1.5, params["expression"].shape[1]))
        b = model.posed_gaussians(other)
    moved = _moved(a, b)
    assert moved.sum() > 0.5 * model.is_face_expr.sum()
    assert not (moved & ~model.is_face).any()
    assert (a["means"] - b["means"]).norm(dim=-1).max() > 1e-3


def test_a_hand_pose_moves_only_that_hands_gaussians(model, setup):
    _, batch = setup
    with torch.no_grad():
        params = model.frame_body(batch)
        a = model.posed_gaussians(params)
        g = torch.Generator().manual_seed(3)
        b = model.posed_gaussians(dict(params, left_hand_pose=params["left_hand_pose"] + 0.6 * torch.randn(1, 45, generator=g)))
    moved = _moved(a, b)
    left = model.hand_sides[0]
    assert moved.sum() > 100
    assert not (moved & ~left).any()
    assert (a["means"] - b["means"]).norm(dim=-1).max() > 5e-3


def test_laplacian_is_zero_on_the_unchanged_mesh_and_grows_with_noise(model):
    verts = model.canonical_mesh()["verts"].detach()
    N = len(verts)

    def out(offset=0.0, scale=0.0, color=0.0):
        base_scale = torch.full((1, N, 1), 0.01)
        base_color = torch.full((1, N, 3), 0.5)
        zero = torch.zeros(N, 3)
        return {"verts": verts, "offset": zero + offset, "pose_offset": zero[None] + offset,
                "scale_tri": base_scale + scale, "scale": base_scale + scale,
                "color_tri": base_color + color, "color": base_color + color}

    clean = model.laplacian_terms(out())
    assert set(clean) == {"lap_position", "lap_scale", "lap_color"}
    assert all(float(v) < 1e-12 for v in clean.values())
    g = torch.Generator().manual_seed(0)
    n3, n1 = torch.randn(N, 3, generator=g), torch.randn(1, N, 1, generator=g)
    values = []
    for sigma in (1e-4, 1e-3, 1e-2):
        values.append({k: float(v) for k, v in model.laplacian_terms(out(sigma * n3, sigma * n1, sigma * n3[None])).items()})
    for key in clean:
        assert 0 < values[0][key] < values[1][key] < values[2][key]
        assert values[2][key] / values[1][key] == pytest.approx(100.0, rel=1e-3)  # quadratic in the noise
    # the same colour noise on as many hand as body Gaussians costs far more on the hands
    hands = torch.nonzero(model.is_hand).squeeze(1)
    body = torch.nonzero(model.is_body).squeeze(1)[: len(hands)]
    def on(idx):
        c = torch.zeros(1, N, 3)
        c[:, idx] = 0.05 * n3[idx]
        return float(model.laplacian_terms(out(color=c))["lap_color"])
    assert on(hands) > 100 * on(body)


def test_bad_expression_width_is_a_clear_error(model, setup):
    _, batch = setup
    params = model.frame_body(batch)
    with pytest.raises(ValueError, match="expression"):
        model.posed_gaussians(dict(params, expression=torch.zeros(1, 99)))


def test_without_flame_assets_it_says_so_once_and_has_no_face_term(setup, caplog):
    info, batch = setup
    with caplog.at_level(logging.WARNING, logger="zoo.methods.exavatar"):
        m = zoo.create("exavatar", preset="tiny", data_info=info)
    msgs = [r.getMessage() for r in caplog.records if "face loss" in r.getMessage()]
    assert len(msgs) == 1 and "FLAME" in msgs[0] and "training without it" in msgs[0]
    m.train()
    out = m.render_batch(batch, torch.zeros(3))
    assert "face" not in m.loss_terms(batch, out, batch["image"] * batch["mask"])


def test_textured_mesh_render_colours_and_gradients():
    verts = torch.tensor([[-0.5, -0.5, 2.0], [0.5, -0.5, 2.0], [0.0, 0.5, 2.0]], requires_grad=True)
    faces = torch.tensor([[0, 1, 2]])
    vt = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    ramp = torch.linspace(0, 1, 8)
    texture = torch.stack([ramp.expand(8, 8), ramp[:, None].expand(8, 8), torch.full((8, 8), 0.25)])
    K = torch.tensor([[20.0, 0, 16], [0, 20.0, 16], [0, 0, 1]])
    image, covered = render_textured_mesh(verts, faces, vt, faces, texture, K, torch.eye(4), 32, 32)
    assert covered.sum() > 30 and not covered[0, 0]
    torch.testing.assert_close(image[2][covered], torch.full((int(covered.sum()),), 0.25))
    assert (image[:, ~covered] == 0).all()
    image[0].sum().backward()  # the red channel ramps along u: moving the corners changes it
    assert verts.grad is not None and verts.grad.abs().sum() > 0


def test_flame_face_loss_with_assets(setup, body_models_root, tmp_path):
    from PIL import Image

    from zoo.core.body import BodyModel

    info, batch = setup
    root = tmp_path / "bm"
    (root / "smplx").mkdir(parents=True)
    for path in (body_models_root / "smplx").glob("*.npz"):
        shutil.copy(path, root / "smplx" / path.name)
    bm = BodyModel("smplx", root, gender=info["gender"])
    ids = torch.nonzero(bm.part_vertices().face).squeeze(1).numpy()
    np.save(root / "smplx" / "SMPL-X__FLAME_vertex_ids.npy", ids)
    local = -np.ones(bm.num_vertices, dtype=np.int64)
    local[ids] = np.arange(len(ids))
    f = bm.faces.numpy()
    f = local[f[(local[f] >= 0).all(1)]]
    xy = bm.v_template.numpy()[ids, :2]
    vt = ((xy - xy.min(0)) / (xy.max(0) - xy.min(0))).astype(np.float32)
    (root / "flame").mkdir()
    np.savez(root / "flame" / "FLAME_texture.npz", vt=vt, ft=f)
    with open(root / "flame" / "FLAME_NEUTRAL.pkl", "wb") as fh:
        pickle.dump({"f": f}, fh)
    tex = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(tex).save(tmp_path / "face_texture.png")
    info = dict(info, body_models=str(root))
    torch.manual_seed(0)
    m = zoo.create("exavatar", preset="tiny", data_info=info, **{"face_loss.texture": str(tmp_path / "face_texture.png")})
    assert m.face_loss is not None and len(m.face_loss.ids) == len(ids)
    m.train()
    # a close camera on the face so that it covers pixels of the 32x32 image
    head = m.body(m.frame_body(batch)).vertices[0, torch.as_tensor(ids)].mean(0).detach()
    from zoo.synthetic.subject import intrinsics, look_at

    close = dict(batch, w2c=torch.as_tensor(look_at(head.numpy() + np.array([0, 0, 0.6]), head.numpy()),
                                            dtype=torch.float32)[None], K=torch.as_tensor(intrinsics(32, 32), dtype=torch.float32)[None])
    out = m.render_batch(close, torch.zeros(3))
    terms = m.loss_terms(close, out, close["image"] * close["mask"])
    assert "face" in terms and torch.isfinite(terms["face"]) and float(terms["face"]) > 0
    terms["face"].backward()
    assert m.body.face_offset.grad is not None and m.body.face_offset.grad.abs().sum() > 0
    with pytest.raises(FileNotFoundError, match="FLAME_texture"):
        zoo.create("exavatar", preset="tiny", data_info=info, **{"face_loss.texture": str(tmp_path / "face_texture.png"),
                                                                  "face_loss.flame_dir": str(tmp_path)})


def test_test_time_fitting_recovers_a_perturbed_pose(setup):
    info, batch = setup
    model = _perturbed(info, **{"test_fit.steps": 40, "test_fit.lr": 1e-2})
    with torch.no_grad():
        with torch.no_grad():
            model.rgb_net[-1].weight.normal_(0.0, 1.0)  # varied colours: the image constrains the pose
        target = model.render_params(model.frame_body(batch), batch, torch.zeros(3), both=False)["rgb"]
    g = torch.Generator().manual_seed(1)
    noisy = dict(batch, image=target, mask=torch.ones_like(batch["mask"]))
    noisy["body"] = dict(batch["body"])
    noisy["body"]["body_pose"] = batch["body"]["body_pose"] + 0.15 * torch.randn(1, 63, generator=g)
    noisy["body"]["transl"] = batch["body"]["transl"] + 0.02
    with torch.no_grad():
        before = (model.render_params(model.frame_body(noisy), noisy, torch.zeros(3), both=False)["rgb"] - target).abs().mean()
    fitted = model.fit_pose(noisy, torch.zeros(3))
    with torch.no_grad():
        after = (model.render_params(fitted, noisy, torch.zeros(3), both=False)["rgb"] - target).abs().mean()
    assert after < 0.5 * before
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # the avatar stays frozen


def test_animation_with_new_expressions_and_hand_poses(model, setup, tmp_path):
    from zoo.synthetic.subject import intrinsics, look_at
    from zoo.methods.base import load_pose_file

    info, batch = setup
    T = 3
    body_pose = np.repeat(batch["body"]["body_pose"].numpy(), T, 0)
    expression = np.zeros((T, 10), np.float32)
    expression[1] = 2.0
    left = np.zeros((T, 45), np.float32)
    left[2] = 0.8
    np.savez(tmp_path / "poses.npz", body_pose=body_pose, expression=expression, left_hand_pose=left)
    poses = load_pose_file(tmp_path / "poses.npz")
    with torch.no_grad():
        probe = model.posed_gaussians({"body_pose": torch.as_tensor(body_pose[:1]), "betas": model.subject_betas(),
                                 "global_orient": torch.zeros(1, 3), "transl": torch.zeros(1, 3)})["means"][0]
    centre = probe.mean(0).numpy()
    w2c = look_at(centre + np.array([0.0, 0.0, 2.5]), centre)
    K = intrinsics(64, 64)
    images = model.render_poses(poses, K, w2c, 64, 64, background=(0.0, 0.0, 0.0))
    assert images.shape == (T, 3, 64, 64)
    uv, _ = project_points(probe, torch.as_tensor(K, dtype=torch.float32), torch.as_tensor(w2c, dtype=torch.float32))

    def changed_inside(diff, part):
        lo, hi = uv[part].min(0).values - 4, uv[part].max(0).values + 4
        rows, cols = torch.nonzero(diff, as_tuple=True)
        inside = (cols + 0.5 >= lo[0]) & (cols + 0.5 <= hi[0]) & (rows + 0.5 >= lo[1]) & (rows + 0.5 <= hi[1])
        return bool(diff.any()) and bool(inside.all())

    assert changed_inside((images[1] - images[0]).abs().amax(0) > 1e-4, model.is_face)
    assert changed_inside((images[2] - images[0]).abs().amax(0) > 1e-4, model.hand_sides[0])


def test_train_and_eval_with_test_time_fitting(subject, body_models_root, tmp_path):
    import eval as eval_script
    import train as train_script

    run = tmp_path / "run"
    code = train_script.main(["experiment=exavatar_tiny", "data=x_humans", f"data.root={subject}", "data.num_workers=0",
                              "data.options.eval_protocol=synthetic", f"body_models={body_models_root}", "logger=csv",
                              f"run_dir={run}", "trainer.enable_progress_bar=false", "method.test_fit.enabled=true",
                              "method.test_fit.steps=2"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "exavatar" and metrics["steps"] == 3
    assert set(metrics["metrics"]) == {"test_pose", "test_pose_fit"}
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = set(ckpt["state_dict"])
    assert {"body.joint_offset", "body.face_offset", "betas_delta"} <= keys
    assert not any("smplx" in k for k in keys)  # the licensed model arrays stay out of checkpoints
    out = tmp_path / "eval"
    assert eval_script.main([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"out_dir={out}"]) == 0
    scores = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(scores) == {"test_pose", "test_pose_fit"} and all("psnr" in v for v in scores.values())
    assert any((out / "test_pose_fit").glob("*.png"))
