"""Body model, skinning and procedural body files (zoo.core.body / skinning, zoo.synthetic.body)."""

from __future__ import annotations

import io
import pickle
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.synthetic import body as sb
from zoo.core.body import BodyModel, canonical_body_pose, find_model_file
from zoo.core.skinning import (
    closest_point_on_triangle,
    lbs_matrices,
    lbs_points,
    lbs_quats,
    matrix_to_quat,
    normalise,
    polar_rotation,
    quat_multiply,
    quat_to_matrix,
    query_weights,
    rigid_inverse,
)
from zoo.synthetic.mesh import _KEYPOINT_VERTICES

FILES = {("smpl", "pkl"), ("smpl", "npz"), ("smplx", "npz"), ("smplx", "pkl")}


def model_file(root: Path, model_type: str, fmt: str, gender: str = "neutral") -> Path:
    return root / model_type / f"{model_type.upper()}_{gender.upper()}.{fmt}"


_BODIES: dict = {}


def body(root: Path, model_type: str, fmt: str = None, **kwargs) -> BodyModel:
    """BodyModel on the synthetic files, cached across tests (loading is the slow part)."""
    fmt = fmt or ("pkl" if model_type == "smpl" else "npz")
    key = (str(root), model_type, fmt, tuple(sorted(kwargs.items())))
    if key not in _BODIES:
        _BODIES[key] = BodyModel(model_type, model_file(root, model_type, fmt), **kwargs)
    return _BODIES[key]


def random_params(bm: BodyModel, B: int, seed: int = 0, scale: float = 0.4) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    p = {
        "betas": r(B, 10) * 1.5,
        "global_orient": r(B, 3),
        "body_pose": r(B, 3 * bm.num_body_joints) * scale,
        "transl": r(B, 3),
    }
    if bm.model_type == "smplx":
        hand = bm.num_pca_comps if bm.use_pca else 45
        p.update(
            jaw_pose=r(B, 3) * 0.2, leye_pose=r(B, 3) * 0.2, reye_pose=r(B, 3) * 0.2,
            left_hand_pose=r(B, hand) * 0.3, right_hand_pose=r(B, hand) * 0.3, expression=r(B, 10),
        )
    return p


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return quat_to_matrix(torch.randn(n, 4, generator=g, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# Procedural body files
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_synthetic_arrays_have_official_shapes(model_type):
    a = sb.make_body_arrays(model_type)
    V, J = (6890, 24) if model_type == "smpl" else (10475, 55)
    assert a["v_template"].shape == (V, 3)
    assert a["J"].shape == (J, 3) and a["J_regressor"].shape == (J, V)
    assert a["weights"].shape == (V, J)
    assert a["posedirs"].shape == (V, 3, 9 * (J - 1))  # 207 / 486
    assert a["shapedirs"].shape == (V, 3, 10 if model_type == "smpl" else 20)
    assert a["kintree_table"].shape == (2, J)
    parents = a["kintree_table"][0].astype(np.int64)
    assert parents[0] == np.iinfo(np.uint32).max
    assert list(parents[1:]) == (sb.SMPL_PARENTS if model_type == "smpl" else sb.SMPLX_PARENTS)[1:]
    assert a["f"].shape[1] == 3 and a["f"].min() == 0 and a["f"].max() == V - 1
    assert a["ft"].shape == a["f"].shape and a["vt"].shape[1] == 2
    if model_type == "smplx":
        for side in "lr":
            C = a[f"hands_components{side}"].astype(np.float64)
            assert C.shape == (45, 45) and a[f"hands_mean{side}"].shape == (45,)
            np.testing.assert_allclose(C @ C.T, np.eye(45), atol=1e-5)
        F = len(a["f"])
        assert a["lmk_faces_idx"].shape == (51,) and a["lmk_bary_coords"].shape == (51, 3)
        assert a["dynamic_lmk_faces_idx"].shape == (79, 17)
        assert a["dynamic_lmk_bary_coords"].shape == (79, 17, 3)
        for key in ("lmk_faces_idx", "dynamic_lmk_faces_idx"):
            assert 0 <= a[key].min() and a[key].max() < F
        for key in ("lmk_bary_coords", "dynamic_lmk_bary_coords"):
            assert a[key].min() >= 0
            np.testing.assert_allclose(a[key].sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_synthetic_weights_regressor_and_blend_shapes(model_type):
    a = sb.make_body_arrays(model_type)
    v = a["v_template"].astype(np.float64)
    W = a["weights"].astype(np.float64)
    assert W.min() >= 0
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
    blended = (W > 1e-3).sum(1) > 1
    assert 0.2 < blended.mean() < 0.8  # smooth blending near joints, rigid elsewhere
    R = a["J_regressor"].astype(np.float64)
    assert R.min() >= 0
    np.testing.assert_allclose(R.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(R @ v, a["J"], atol=1e-5)
    # Pose correctives: small, and joint j's only where joint j blends with another bone.
    P = a["posedirs"]
    assert 0 < np.abs(P).max() < 0.02
    for j in (4, 18):
        touched = np.abs(P[:, :, 9 * (j - 1): 9 * j]).max(axis=(1, 2)) > 0
        assert touched.any()
        assert np.all((W[touched, j] > 0) & (W[touched, j] < 1))
    # Shape directions: each moves the body by centimetres, and they are independent.
    S = a["shapedirs"].astype(np.float64)
    mags = np.abs(S).max(axis=(0, 1))
    assert np.all(mags[:10] > 0.005) and np.all(mags[:10] < 0.1)
    assert np.linalg.matrix_rank(S[:, :, :10].reshape(-1, 10)) == 10
    if model_type == "smplx":
        expr = np.abs(S[:, :, 10:]).max(axis=1)  # [V, 10]
        face = (np.linalg.norm(v - a["J"][15], axis=1) < 0.2) & (v[:, 2] > a["J"][15, 2])
        assert np.all(expr.max(0) > 1e-3) and expr[~face].max() == 0  # on the face only


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_synthetic_mesh_is_a_plausible_closed_outward_body(model_type):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a = sb.make_body_arrays(model_type)
    v = a["v_template"].astype(np.float64)
    f = a["f"].astype(np.int64)
    J = a["J"]
    # Size and placement like SMPL's template: ~1.7 m, pelvis near the origin, +y up, facing +z.
    assert 1.6 < v[:, 1].max() - v[:, 1].min() < 1.85
    assert -1.2 < v[:, 1].min() < -1.05 and 0.5 < v[:, 1].max() < 0.7
    assert np.linalg.norm(J[0]) < 0.25
    assert J[1, 0] > 0 > J[2, 0]  # left hip at +x
    nose = v[_KEYPOINT_VERTICES[model_type]["nose"]]
    assert nose[2] > v[:, 2][v[:, 1] > J[15, 1]].mean() + 0.05  # the face points to +z
    for side, ankle in (("L", 7), ("R", 8)):
        toe = v[_KEYPOINT_VERTICES[model_type][f"{side}BigToe"]]
        heel = v[_KEYPOINT_VERTICES[model_type][f"{side}Heel"]]
        assert toe[2] > J[ankle, 2] + 0.1 and heel[2] < J[ankle, 2]
    tips = ["lthumb", "lindex", "lmiddle", "lring", "lpinky"]
    for tip in tips:
        assert v[_KEYPOINT_VERTICES[model_type][tip], 0] > J[20, 0] + 0.05
    # No degenerate triangles; every edge shared by exactly two faces with opposite directions.
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    assert area.min() > 1e-6
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert np.all(counts == 2)
    # Each part is a closed surface enclosing positive volume (outward normals).
    n = len(v)
    adj = coo_matrix((np.ones(len(directed)), (directed[:, 0], directed[:, 1])), shape=(n, n))
    num, label = connected_components(adj, directed=False)
    assert num == (15 if model_type == "smpl" else 27)
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])) / 6
    part_vol = np.bincount(label[f[:, 0]], weights=vol, minlength=num)
    assert part_vol.min() > 0


def test_synthetic_generation_is_deterministic_and_seeded():
    a = sb._generate("smpl", 3, "neutral")
    b = sb._generate("smpl", 3, "neutral")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = sb.make_body_arrays("smpl", seed=4)
    d = sb.make_body_arrays("smpl", seed=3, gender="female")
    for other in (c, d):
        assert not np.allclose(a["v_template"], other["v_template"])
        assert np.array_equal(a["f"], other["f"])  # same topology
    height = lambda arr: np.ptp(arr["v_template"][:, 1])  # noqa: E731
    assert abs(height(a) - height(c)) < 0.1  # "slightly"
    assert height(sb.make_body_arrays("smpl", 0, "male")) > height(sb.make_body_arrays("smpl", 0, "female"))
    with pytest.raises(ValueError, match="gender"):
        sb.make_body_arrays("smpl", gender="other")


def test_written_files_match_arrays(body_models_root):
    a = sb.make_body_arrays("smplx", seed=0)
    with open(model_file(body_models_root, "smplx", "pkl"), "rb") as fh:
        raw = pickle.load(fh, encoding="latin1")
    assert isinstance(raw["posedirs"], np.ndarray) and raw["posedirs"].dtype == np.float32
    np.testing.assert_array_equal(raw["posedirs"], a["posedirs"])
    with np.load(model_file(body_models_root, "smplx", "npz")) as npz:
        assert {"v_template", "f", "J_regressor", "weights", "posedirs", "shapedirs", "kintree_table",
                "hands_componentsl", "hands_meanr", "lmk_faces_idx", "dynamic_lmk_bary_coords", "vt", "ft"} <= set(npz.files)
        np.testing.assert_array_equal(npz["shapedirs"], a["shapedirs"])
    with open(model_file(body_models_root, "smpl", "pkl"), "rb") as fh:
        smpl = pickle.load(fh, encoding="latin1")
    assert type(smpl["J_regressor"]).__name__ == "csc_matrix"  # sparse, like the original
    np.testing.assert_allclose(smpl["J_regressor"].toarray(), sb.make_body_arrays("smpl")["J_regressor"])
    for model_type, fmt in FILES:
        for gender in ("neutral", "male", "female"):
            assert model_file(body_models_root, model_type, fmt, gender).is_file()


def test_write_body_models_skips_and_refuses(body_models_root, tmp_path, capsys):
    f = model_file(body_models_root, "smpl", "pkl")
    before = f.stat().st_mtime_ns
    assert sb.write_body_models(body_models_root, seed=0) == body_models_root
    assert f.stat().st_mtime_ns == before  # present with the same seed: not rewritten
    assert sb.main(["--out", str(body_models_root)]) == 0
    assert str(body_models_root) in capsys.readouterr().out
    # A folder holding model files this generator did not write is never overwritten.
    (tmp_path / "smpl").mkdir()
    real = tmp_path / "smpl" / "SMPL_NEUTRAL.pkl"
    real.write_bytes(b"licensed")
    with pytest.raises(FileExistsError, match="SMPL_NEUTRAL.pkl"):
        sb.write_body_models(tmp_path)
    assert sb.main(["--out", str(tmp_path)]) == 1
    assert real.read_bytes() == b"licensed"
    assert not list(tmp_path.rglob("*.tmp"))


def test_uv_charts_cover_the_square_without_overlap():
    a = sb.make_body_arrays("smplx")
    vt, ft = a["vt"].astype(np.float64), a["ft"].astype(np.int64)
    assert vt.min() >= 0 and vt.max() <= 1
    p0, p1, p2 = vt[ft[:, 0]], vt[ft[:, 1]], vt[ft[:, 2]]
    signed = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    assert signed.min() > 0  # every chart keeps the faces' orientation
    coverage = sb.uv_coverage(vt, ft)
    assert coverage > 0.7
    # Rasterise texel centres: no texel lies strictly inside two UV triangles.
    res = 256
    lo = np.floor(np.minimum(np.minimum(p0, p1), p2) * res - 0.5).astype(int).clip(0, res - 1)
    hi = np.ceil(np.maximum(np.maximum(p0, p1), p2) * res - 0.5).astype(int).clip(0, res - 1)
    nx, ny = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    tri = np.repeat(np.arange(len(ft)), nx * ny)
    local = np.arange(len(tri)) - np.repeat(np.cumsum(nx * ny) - nx * ny, nx * ny)
    tx = lo[tri, 0] + local % nx[tri]
    ty = lo[tri, 1] + local // nx[tri]
    c = (np.stack([tx, ty], 1) + 0.5) / res
    a0, a1, a2 = p0[tri], p1[tri], p2[tri]
    cross = lambda u, w: u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0]  # noqa: E731
    inside = (cross(a1 - a0, c - a0) > 1e-9) & (cross(a2 - a1, c - a1) > 1e-9) & (cross(a0 - a2, c - a2) > 1e-9)
    hits = np.bincount(tx[inside] * res + ty[inside], minlength=res * res)
    assert hits.max() == 1
    assert abs(hits.sum() / res**2 - coverage) < 0.05


# ----------------------------------------------------------------------------------------------
# BodyModel against smplx
# ----------------------------------------------------------------------------------------------


def smplx_reference(path: Path, model_type: str, fmt: str, B: int, **kwargs):
    import smplx
    from smplx.utils import Struct

    with redirect_stdout(io.StringIO()):
        if model_type == "smpl" and fmt == "npz":
            # smplx.create reads SMPL only from .pkl; its SMPL class takes the arrays directly.
            with np.load(path) as data:
                return smplx.SMPL(str(path), data_struct=Struct(**dict(data)), batch_size=B)
        return smplx.create(str(path), model_type=model_type, batch_size=B, ext=fmt, **kwargs)


@pytest.mark.parametrize("model_type,fmt", sorted(FILES))
def test_matches_smplx(body_models_root, model_type, fmt):
    bm = body(body_models_root, model_type, fmt)
    B = 3
    params = random_params(bm, B, seed=1)
    out = bm(params)
    ref = smplx_reference(model_file(body_models_root, model_type, fmt), model_type, fmt, B, use_pca=False)(**params)
    J = bm.num_joints
    assert out.vertices.shape == (B, 6890 if model_type == "smpl" else 10475, 3)
    assert out.joints.shape == (B, J, 3) and out.transforms.shape == (B, J, 4, 4)
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints, ref.joints[:, :J], atol=1e-5, rtol=0)


def test_matches_smplx_with_hand_pca(body_models_root):
    bm = body(body_models_root, "smplx", "npz", use_pca=True, num_pca_comps=12)
    params = random_params(bm, 2, seed=2)
    assert params["left_hand_pose"].shape == (2, 12)
    out = bm(params)
    path = model_file(body_models_root, "smplx", "npz")
    ref = smplx_reference(path, "smplx", "npz", 2, use_pca=True, num_pca_comps=12)(**params)
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints, ref.joints[:, :55], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_transforms_reproduce_vertices_and_joints(body_models_root, model_type):
    bm = body(body_models_root, model_type)
    out = bm(random_params(bm, 2, seed=3))
    W = bm.lbs_weights
    torch.testing.assert_close(lbs_points(out.v_shaped + out.pose_offsets, W, out.transforms), out.vertices, atol=1e-5, rtol=0)
    # Each bone maps its rest joint onto the posed joint, and is rigid.
    rest_h = torch.cat([out.rest_joints, torch.ones_like(out.rest_joints[..., :1])], -1)
    torch.testing.assert_close((out.transforms @ rest_h[..., None])[..., :3, 0], out.joints, atol=1e-5, rtol=0)
    R = out.transforms[..., :3, :3]
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.transforms[..., 3, :], torch.tensor([0.0, 0, 0, 1]).expand(2, bm.num_joints, 4))
    # Blended matrices agree with lbs_points.
    M = lbs_matrices(W, out.transforms)
    v_h = torch.cat([out.v_shaped + out.pose_offsets, torch.ones_like(out.v_shaped[..., :1])], -1)
    torch.testing.assert_close((M @ v_h[..., None])[..., :3, 0], out.vertices, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_rest_pose_skins_to_identity(body_models_root, model_type):
    bm = body(body_models_root, model_type)
    betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(4))
    params = {"betas": betas}
    if model_type == "smplx":  # zero hand parameters mean the relaxed mean pose: make them flat
        params["left_hand_pose"] = -bm.smplx.left_hand_mean.expand(2, -1)
        params["right_hand_pose"] = -bm.smplx.right_hand_mean.expand(2, -1)
    out = bm(params)
    eye = torch.eye(4).expand(2, bm.num_joints, 4, 4)
    torch.testing.assert_close(out.transforms, eye, atol=1e-6, rtol=0)
    assert out.pose_offsets.abs().max() < 1e-6
    torch.testing.assert_close(out.vertices, out.v_shaped, atol=1e-6, rtol=0)
    torch.testing.assert_close(lbs_points(out.v_shaped, bm.lbs_weights, out.transforms), out.v_shaped, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.joints, out.rest_joints, atol=1e-6, rtol=0)
    zero = bm({})
    torch.testing.assert_close(zero.v_shaped[0], bm.v_template)


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_bending_the_elbow_moves_only_the_forearm_and_hand(body_models_root, model_type):
    bm = body(body_models_root, model_type, flat_hand_mean=True)
    elbow = 18
    subtree = [elbow]
    for j in range(bm.num_joints):
        if int(bm.parents[j]) in subtree:
            subtree.append(j)
    pose = torch.zeros(1, 3 * bm.num_body_joints)
    pose[0, 3 * (elbow - 1) + 1] = -1.4  # swing the left forearm (+x) forward (+z) about y
    rest, bent = bm({}), bm({"body_pose": pose})
    moved = (bent.vertices - rest.vertices)[0].norm(dim=-1)
    on_subtree = bm.lbs_weights[:, subtree].sum(1)
    assert moved[on_subtree == 0].max() < 1e-6  # everything else stays put
    assert moved[on_subtree > 0.999].min() > 0.01  # the forearm and hand move
    assert torch.all(bent.vertices[0, on_subtree > 0.999, 2] > rest.vertices[0, on_subtree > 0.999, 2])
    joint_moved = (bent.joints - rest.joints)[0].norm(dim=-1) > 1e-6
    assert set(torch.nonzero(joint_moved).flatten().tolist()) == set(subtree) - {elbow}


def test_gradients_and_no_state(body_models_root):
    bm = body(body_models_root, "smplx")
    params = {k: v.requires_grad_(True) for k, v in random_params(bm, 2, seed=5).items()}
    out = bm(params)
    (out.vertices.square().sum() + out.joints.sum()).backward()
    for key, value in params.items():
        assert value.grad is not None and torch.isfinite(value.grad).all(), key
        assert value.grad.abs().sum() > 0, key
    assert list(bm.parameters()) == [] and len(bm.state_dict()) == 0


def test_parameter_validation(body_models_root):
    smpl = body(body_models_root, "smpl")
    with pytest.raises(ValueError, match=r"'body_pose'.*\[B, 69\].*SMPL-X body pose"):
        smpl({"body_pose": torch.zeros(2, 63)})
    with pytest.raises(ValueError, match=r"'betas'.*<=10"):
        smpl({"betas": torch.zeros(1, 11)})
    with pytest.raises(ValueError, match="'body_pose' has batch size 2 but others have 3"):
        smpl({"body_pose": torch.zeros(2, 69), "transl": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="'jaw_pose' is SMPL-X only"):
        smpl({"jaw_pose": torch.ones(1, 3)})
    with pytest.raises(ValueError, match=r"'global_orient'.*\[B, 3\]"):
        smpl({"global_orient": torch.zeros(3)})
    smplx_bm = body(body_models_root, "smplx")
    with pytest.raises(ValueError, match=r"'left_hand_pose'.*\[B, 45\]"):
        smplx_bm({"left_hand_pose": torch.zeros(1, 6)})
    # Accepted: fewer betas (zero-padded), [B, J, 3] poses, batch-1 broadcast, extra keys, zeros
    # for SMPL-X keys on SMPL.
    out = smpl({"betas": torch.zeros(1, 4), "body_pose": torch.zeros(2, 23, 3), "scale": torch.ones(2, 1),
                "expression": torch.zeros(2, 10)})
    assert out.vertices.shape == (2, 6890, 3)
    assert smpl(betas=torch.zeros(1, 10)).vertices.shape == (1, 6890, 3)


# ----------------------------------------------------------------------------------------------
# Canonical spaces
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_canonical_spaces_and_canonical_to_posed(body_models_root, model_type):
    bm = body(body_models_root, model_type)
    betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(6))
    params = random_params(bm, 2, seed=7) | {"betas": betas}
    out = bm(params)
    W = bm.lbs_weights
    target = lbs_points(out.v_shaped, W, out.transforms)  # posed, without pose correctives
    rigid = W.max(1).values > 1 - 1e-6
    expression = out.v_shaped.new_zeros(2, 10) if model_type == "smpl" else params["expression"]
    for kind in ("tpose", "apose", "star"):
        can = bm.canonical(kind, betas, expression if model_type == "smplx" else None)
        assert can.vertices.shape == out.vertices.shape and can.transforms.shape == out.transforms.shape
        assert can.body_pose.shape == (2, 3 * bm.num_body_joints)
        got = lbs_points(can.vertices, W, bm.canonical_to_posed(can, out))
        err = (got - target).norm(dim=-1)
        if kind == "tpose":
            torch.testing.assert_close(can.vertices, out.v_shaped, atol=1e-6, rtol=0)
            torch.testing.assert_close(can.transforms, torch.eye(4).expand_as(can.transforms), atol=1e-6, rtol=0)
            assert err.max() < 1e-5
        else:
            assert err[:, rigid].max() < 1e-5  # exact wherever one bone drives the vertex
            assert err.max() < 0.04  # blended vertices: the usual canonical-space approximation
    J = bm.canonical("apose").joints[0]
    d = J[20] - J[16]  # left shoulder -> wrist, 45 degrees down
    assert d[0] > 0.3 and torch.isclose(-d[1], d[0], atol=1e-4)
    d = J[21] - J[17]
    assert d[0] < -0.3 and torch.isclose(-d[1], -d[0], atol=1e-4)
    J0, J = bm.canonical("tpose").joints[0], bm.canonical("star").joints[0]
    for hip, ankle, side in ((1, 7, 1), (2, 8, -1)):
        a0, a1 = J0[ankle] - J0[hip], J[ankle] - J[hip]
        angle = torch.rad2deg(torch.acos((a0 @ a1) / (a0.norm() * a1.norm())))
        assert abs(angle - 30) < 0.5 and side * (a1[0] - a0[0]) > 0.2  # legs spread outward
    with pytest.raises(ValueError, match="canonical kind"):
        canonical_body_pose("sitting")


# ----------------------------------------------------------------------------------------------
# Skinning of Gaussians
# ----------------------------------------------------------------------------------------------


def test_quaternion_helpers_round_trip():
    g = torch.Generator().manual_seed(8)
    q = normalise(torch.randn(1000, 4, generator=g, dtype=torch.float64))
    q = q * torch.sign(q[:, :1])
    R = quat_to_matrix(q)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R))
    assert torch.all(torch.det(R) > 0)
    torch.testing.assert_close(matrix_to_quat(R), q)
    # Half turns (w = 0) take the other branches.
    half = torch.diag_embed(torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64))
    torch.testing.assert_close(quat_to_matrix(matrix_to_quat(half)), half)
    q2 = normalise(torch.randn(1000, 4, generator=g, dtype=torch.float64))
    torch.testing.assert_close(quat_to_matrix(quat_multiply(q, q2)), R @ quat_to_matrix(q2))
    T = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    T[:, :3, :3] = R[:5]
    T[:, :3, 3] = torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rigid_inverse(T) @ T, torch.eye(4, dtype=torch.float64).expand(5, 4, 4))


def covariance(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    R = quat_to_matrix(quats)
    return R @ torch.diag_embed(scales**2) @ R.transpose(-1, -2)


def test_lbs_quats_rigid_weights_transform_the_covariance_exactly(body_models_root):
    g = torch.Generator().manual_seed(10)
    N, J = 500, 24
    T = torch.eye(4, dtype=torch.float64).repeat(2, J, 1, 1)
    T[:, :, :3, :3] = random_rotations(2 * J, 3).view(2, J, 3, 3)
    T[:, :, :3, 3] = torch.randn(2, J, 3, generator=g, dtype=torch.float64)
    quats = torch.randn(N, 4, generator=g, dtype=torch.float64) * 3  # unnormalised on purpose
    scales = torch.rand(N, 3, generator=g, dtype=torch.float64) * 0.05 + 0.001
    bone = torch.randint(0, J, (N,), generator=g)
    W = torch.nn.functional.one_hot(bone, J).double()
    new_q = lbs_quats(quats, W, T)
    assert new_q.shape == (2, N, 4)
    torch.testing.assert_close(new_q.norm(dim=-1), torch.ones(2, N, dtype=torch.float64))
    Rb = T[:, bone, :3, :3]  # [2, N, 3, 3]
    expected = Rb @ covariance(quats, scales) @ Rb.transpose(-1, -2)
    torch.testing.assert_close(covariance(new_q, scales), expected, atol=1e-15, rtol=1e-10)
    # Means move with lbs_points; gradients through the rigid case are finite (unlike an SVD).
    means = torch.randn(N, 3, generator=g, dtype=torch.float64)
    moved = lbs_points(means, W, T)
    torch.testing.assert_close(moved, (Rb @ means[:, :, None])[..., 0] + T[:, bone, :3, 3])
    bm = body(body_models_root, "smpl")
    qf = quats.float().requires_grad_(True)
    Tf = bm(random_params(bm, 2, seed=9, scale=0.8)).transforms.detach().requires_grad_(True)
    lbs_quats(qf, W.float(), Tf).sum().backward()
    assert torch.isfinite(qf.grad).all() and torch.isfinite(Tf.grad).all() and Tf.grad.abs().sum() > 0


def test_lbs_quats_blended_weights_use_the_polar_rotation():
    g = torch.Generator().manual_seed(11)
    N = 400
    Ra, Rb = random_rotations(N, 1), random_rotations(N, 2)
    # Bring the second bone within 60 degrees of the first, as neighbouring bones are.
    small = quat_to_matrix(normalise(torch.cat([torch.full((N, 1), 2.0, dtype=torch.float64),
                                                torch.randn(N, 3, generator=g, dtype=torch.float64)], 1)))
    Rb = Ra @ small
    T = torch.eye(4, dtype=torch.float64).repeat(1, 2 * N, 1, 1)
    T[0, :N, :3, :3], T[0, N:, :3, :3] = Ra, Rb
    w = torch.rand(N, 1, generator=g, dtype=torch.float64)
    W = torch.zeros(N, 2 * N, dtype=torch.float64)
    W[torch.arange(N), torch.arange(N)] = w[:, 0]
    W[torch.arange(N), N + torch.arange(N)] = 1 - w[:, 0]
    quats = normalise(torch.randn(N, 4, generator=g, dtype=torch.float64))
    new_q = lbs_quats(quats, W, T)[0]
    M = w[:, :, None] * Ra + (1 - w[:, :, None]) * Rb
    U, _, Vh = torch.linalg.svd(M)
    polar = U @ Vh  # det > 0 for these blends
    assert torch.all(torch.det(polar) > 0)
    torch.testing.assert_close(quat_to_matrix(new_q), polar @ quat_to_matrix(quats), atol=1e-9, rtol=0)
    torch.testing.assert_close(polar_rotation(M), polar, atol=1e-9, rtol=0)
    # A degenerate blend (opposite rotations, det ~ 0) falls back to the dominant bone.
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    R = polar_rotation(0.5 * torch.eye(3, dtype=torch.float64) + 0.5 * flip, fallback=flip)
    torch.testing.assert_close(R, flip)


# ----------------------------------------------------------------------------------------------
# Skinning weights of arbitrary points
# ----------------------------------------------------------------------------------------------


def brute_force_closest(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor):
    """Closest point over *all* triangles: (distance [N], face [N], closest [N, 3], bary [N, 3])."""
    tri = verts[faces]  # [F, 3, 3]
    out = []
    for chunk in points.split(20):
        q, bary = closest_point_on_triangle(chunk[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
        d = (q - chunk[:, None]).norm(dim=-1)
        best = d.argmin(dim=1)
        rows = torch.arange(len(chunk))
        out.append((d[rows, best], best, q[rows, best], bary[rows, best]))
    return tuple(torch.cat(parts) for parts in zip(*out))


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_query_weights_on_and_off_the_surface(body_models_root, model_type):
    bm = body(body_models_root, model_type)
    v, f, W = bm.v_template.double(), bm.faces, bm.lbs_weights.double()
    # On the mesh's own vertices: their own weights.
    torch.testing.assert_close(query_weights(v, v, f, W), W, atol=1e-9, rtol=0)
    # Off the surface along the normals: the weights of the exact closest surface point.
    n = torch.zeros_like(v).index_add_(0, f.reshape(-1), torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1).repeat_interleave(3, 0))
    n = normalise(n)
    idx = torch.randperm(len(v), generator=torch.Generator().manual_seed(12))[:200]
    pts = v[idx] + 0.005 * n[idx]
    res = query_weights(pts, v, f, W, return_closest=True)
    dist, face, closest, bary = brute_force_closest(pts, v, f)
    torch.testing.assert_close(res.distance, dist, atol=1e-9, rtol=0)
    assert res.distance.max() <= 0.005 + 1e-9
    expected = (W[f[face]] * bary[..., None]).sum(1)
    torch.testing.assert_close(res.weights, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.closest, closest, atol=1e-9, rtol=0)
    torch.testing.assert_close(res.weights.sum(1), torch.ones(len(pts), dtype=torch.float64))
    # Near-convex spots return (nearly) the vertex's own weights; and weights are differentiable.
    assert (res.weights - W[idx]).abs().max(dim=1).values.median() < 1e-3
    p = pts.clone().requires_grad_(True)
    query_weights(p, v, f, W).square().sum().backward()
    assert torch.isfinite(p.grad).all()


def test_closest_point_regions():
    a, b, c = torch.tensor([0.0, 0, 0]), torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0])
    pts = torch.tensor([[0.2, 0.2, 0.5], [-1.0, -1, 0], [2.0, -0.5, 1], [0.5, -1, 0], [1.0, 1, 0], [-0.5, 0.5, 0]])
    want = torch.tensor([[0.2, 0.2, 0], [0.0, 0, 0], [1.0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0.0, 0.5, 0]])
    q, bary = closest_point_on_triangle(pts, a, b, c)
    torch.testing.assert_close(q, want)
    torch.testing.assert_close(bary[:, 0:1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c, want)
    # Degenerate triangle: finite, on the segment.
    q, _ = closest_point_on_triangle(torch.tensor([[0.5, 1.0, 0]]), a, b, b)
    torch.testing.assert_close(q, torch.tensor([[0.5, 0.0, 0]]))


# ----------------------------------------------------------------------------------------------
# Files, errors, UV
# ----------------------------------------------------------------------------------------------


def test_missing_model_file_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_BODY_MODELS", raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        BodyModel("smpl", missing)
    msg = str(info.value)
    assert "SMPL_NEUTRAL" in msg and str(missing) in msg and "ZOO_BODY_MODELS" in msg
    assert "https://smpl.is.tue.mpg.de" in msg
    with pytest.raises(FileNotFoundError) as info:
        BodyModel("smplx", None, gender="female")
    msg = str(info.value)
    assert "ZOO_BODY_MODELS is not set" in msg and "SMPLX_FEMALE" in msg and "https://smpl-x.is.tue.mpg.de" in msg
    monkeypatch.setenv("ZOO_BODY_MODELS", str(missing))
    with pytest.raises(FileNotFoundError, match=f"ZOO_BODY_MODELS={missing}"):
        find_model_file("smpl")
    with pytest.raises(ValueError, match="model_type"):
        find_model_file("flame", tmp_path)


def test_model_lookup_env_folder_and_file(body_models_root, monkeypatch):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(body_models_root))
    assert find_model_file("smpl") == body_models_root / "smpl" / "SMPL_NEUTRAL.pkl"
    assert find_model_file("smplx", gender="male") == body_models_root / "smplx" / "SMPLX_MALE.npz"
    assert find_model_file("smpl", body_models_root / "smpl", "female").name == "SMPL_FEMALE.pkl"
    f = body_models_root / "smplx" / "SMPLX_FEMALE.pkl"
    assert find_model_file("smplx", f) == f
    bm = BodyModel("smpl", gender="male")
    assert bm.model_file.name == "SMPL_MALE.pkl" and bm.num_joints == 24 and bm.num_vertices == 6890
    assert len(bm.joint_names) == 24 and bm.faces.dtype == torch.long and bm.parents[0] == -1
    with pytest.raises(ValueError, match="has 55 joints but a SMPL model has 24"):
        BodyModel("smpl", body_models_root / "smplx" / "SMPLX_NEUTRAL.npz")


def test_uv_from_file_obj_fallback_and_missing(body_models_root, tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_BODY_MODELS", raising=False)
    for model_type, fmt in (("smpl", "pkl"), ("smplx", "npz")):
        bm = body(body_models_root, model_type, fmt)
        vt, ft = bm.uv()
        assert vt.dtype == torch.float32 and ft.dtype == torch.long
        assert ft.shape == bm.faces.shape and int(ft.max()) < len(vt)
        assert vt.min() >= 0 and vt.max() <= 1
        assert sb.uv_coverage(vt.numpy(), ft.numpy()) > 0.7
    # A model file without vt/ft: the UV template comes from <type>_uv.obj, else a clear error.
    a = sb.make_body_arrays("smpl")
    folder = tmp_path / "smpl"
    folder.mkdir()
    np.savez(folder / "SMPL_NEUTRAL.npz", **{k: v for k, v in a.items() if k not in ("vt", "ft")})
    bm = BodyModel("smpl", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)UV template.*smpl_uv\.obj"):
        bm.uv()
    lines = [f"vt {u} {v}" for u, v in a["vt"]] + [f"f {x+1}/{p+1} {y+1}/{q+1} {z+1}/{r+1}"
                                                   for (x, y, z), (p, q, r) in zip(a["f"], a["ft"])]
    (folder / "smpl_uv.obj").write_text("\n".join(lines))
    vt, ft = bm.uv()
    np.testing.assert_allclose(vt.numpy(), a["vt"], atol=1e-6)
    np.testing.assert_array_equal(ft.numpy(), a["ft"])
    shutil.rmtree(folder)


def test_scale_convention(body_models_root):
    """`scale` (NeuMan): the posed body with transl = 0 is multiplied by it, then transl added."""
    body = BodyModel("smpl", model_path=body_models_root)
    g = torch.Generator().manual_seed(3)
    params = {"global_orient": torch.randn(2, 3, generator=g) * 0.3, "body_pose": torch.randn(2, 69, generator=g) * 0.2,
              "betas": torch.randn(2, 10, generator=g) * 0.5}
    transl = torch.tensor([[0.1, -0.2, 2.0], [0.5, 0.3, 1.0]])
    s = torch.tensor([[1.7], [0.6]])
    base = body(params)
    scaled = body({**params, "transl": transl, "scale": s})
    torch.testing.assert_close(scaled.vertices, base.vertices * s[:, :, None] + transl[:, None], atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled.joints, base.joints * s[:, :, None] + transl[:, None], atol=1e-5, rtol=0)
    rest = base.v_shaped + base.pose_offsets
    torch.testing.assert_close(lbs_points(rest, body.lbs_weights, scaled.transforms), scaled.vertices, atol=1e-5, rtol=0)
