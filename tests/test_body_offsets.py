"""BodyModel's learnable identity offsets (ExAvatar): joint offsets dJ and face-vertex offsets, on
stock smplx, and the body-part masks (face, expression region, hands)."""
from __future__ import annotations

import io
import pickle
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from smplx.lbs import lbs as smplx_lbs

from zoo.core.body import FLAME_VERTEX_IDS_FILE, MANO_VERTEX_IDS_FILE, BodyModel


def _file(root: Path) -> Path:
    return root / "smplx" / "SMPLX_NEUTRAL.npz"


@pytest.fixture(scope="module")
def bm(body_models_root) -> BodyModel:
    return BodyModel("smplx", _file(body_models_root), joint_offsets=True, face_offsets=True)


def _params(B: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {"betas": r(B, 10), "global_orient": r(B, 3) * 0.5, "body_pose": r(B, 63) * 0.4, "transl": r(B, 3),
            "jaw_pose": r(B, 3) * 0.2, "leye_pose": r(B, 3) * 0.1, "reye_pose": r(B, 3) * 0.1,
            "left_hand_pose": r(B, 45) * 0.3, "right_hand_pose": r(B, 45) * 0.3, "expression": r(B, 10)}


def _stock(path: Path, B: int, **kwargs):
    with redirect_stdout(io.StringIO()):
        return smplx.create(str(path), model_type="smplx", batch_size=B, ext="npz", use_pca=False, **kwargs)


def test_offsets_are_the_only_parameters_and_start_at_zero(bm):
    names = dict(bm.named_parameters())
    assert set(names) == {"joint_offset", "face_offset"}
    assert set(bm.state_dict()) == {"joint_offset", "face_offset"}
    assert bm.joint_offset.shape == (55, 3) and bm.face_offset.shape == (int(bm.part_vertices().face.sum()), 3)
    assert not bm.joint_offset.any() and not bm.face_offset.any()


def test_zero_offsets_reproduce_stock_smplx(bm, body_models_root):
    params = _params(3, seed=1)
    ref = _stock(_file(body_models_root), 3)(**params)
    with torch.no_grad():
        out = bm(params)
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints, ref.joints[:, :55], atol=1e-5, rtol=0)


def test_joint_offsets_re_derive_joints_and_bone_transforms(bm):
    """Oracle: stock smplx.lbs with dJ folded into the regressor (J extra template points placed
    at dJ, regressed with the identity), which is exactly J = J_regressor @ v_shaped + dJ."""
    g = torch.Generator().manual_seed(2)
    dJ = torch.randn(55, 3, generator=g) * 0.03
    params = _params(2, seed=3)
    m = bm.smplx
    try:
        with torch.no_grad():
            bm.joint_offset.copy_(dJ)
            out = bm(params)
        dJ_applied = dJ.clone()
        dJ_applied[0] = 0.0  # the root's offset is not applied
        V, J = m.v_template.shape[0], 55
        v_aug = torch.cat([m.v_template, dJ_applied])
        shapedirs = torch.cat([torch.cat([m.shapedirs, m.expr_dirs], -1),
                               torch.zeros(J, 3, m.shapedirs.shape[-1] + m.expr_dirs.shape[-1])])
        posedirs = torch.cat([m.posedirs.view(-1, V, 3), torch.zeros(m.posedirs.shape[0], J, 3)], 1).view(m.posedirs.shape[0], -1)
        regressor = torch.cat([m.J_regressor, torch.eye(J)], 1)
        weights = torch.cat([m.lbs_weights, torch.nn.functional.one_hot(torch.zeros(J, dtype=torch.long), J).float()])
        full = torch.cat([params["global_orient"], params["body_pose"], params["jaw_pose"], params["leye_pose"],
                          params["reye_pose"], params["left_hand_pose"], params["right_hand_pose"]], 1) + m.pose_mean
        coeffs = torch.cat([params["betas"], params["expression"]], 1)
        verts, joints = smplx_lbs(coeffs, full, v_aug, shapedirs, posedirs, regressor, m.parents, weights)
        verts, joints = verts[:, :V] + params["transl"][:, None], joints + params["transl"][:, None]
        torch.testing.assert_close(out.vertices, verts, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.joints, joints, atol=1e-5, rtol=0)
        # the offsets moved the posed body (they are not a no-op) ...
        with torch.no_grad():
            bm.joint_offset.zero_()
            plain = bm(params)
        assert (plain.vertices - out.vertices).norm(dim=-1).max() > 0.01
        # ... while the rest body stays where it was and its joints move by exactly dJ
        with torch.no_grad():
            bm.joint_offset.copy_(dJ)
            rest = bm({"betas": params["betas"]})
            bm.joint_offset.zero_()
            rest0 = bm({"betas": params["betas"]})
        torch.testing.assert_close(rest.v_shaped, rest0.v_shaped)
        torch.testing.assert_close(rest.rest_joints - rest0.rest_joints, dJ_applied.expand(2, -1, -1), atol=1e-6, rtol=0)
        # the canonical space is re-derived from the moved joints as well: in the star pose the
        # knees hang from the rotated hips, knee = hip + R_hip (J_knee + dJ_knee - J_hip - dJ_hip)
        with torch.no_grad():
            bm.joint_offset.copy_(dJ)
            canon = bm.canonical("star", betas=params["betas"][:1])
        J0 = rest0.rest_joints[0] + dJ_applied
        for hip, knee in ((1, 4), (2, 5)):
            R = canon.transforms[0, hip, :3, :3]
            torch.testing.assert_close(canon.joints[0, knee], canon.joints[0, hip] + R @ (J0[knee] - J0[hip]),
                                       atol=1e-5, rtol=0)
        torch.testing.assert_close(canon.joints[0, :3], J0[:3], atol=1e-5, rtol=0)
    finally:
        with torch.no_grad():
            bm.joint_offset.zero_()


def test_face_offsets_equal_a_moved_template_in_stock_smplx(bm, body_models_root):
    g = torch.Generator().manual_seed(4)
    off = torch.randn(bm.face_offset.shape, generator=g) * 0.01
    params = _params(2, seed=5)
    try:
        with torch.no_grad():
            bm.face_offset.copy_(off)
            out = bm(params)
        template = bm.smplx.v_template.clone()
        template[bm.face_vertex_ids] += off
        ref = _stock(_file(body_models_root), 2, v_template=template)(**params)
        torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.joints, ref.joints[:, :55], atol=1e-5, rtol=0)
        # only face vertices move at rest
        with torch.no_grad():
            rest = bm({})
        moved = (rest.v_shaped[0] - bm.smplx.v_template).norm(dim=-1) > 0
        assert moved.any() and not (moved & ~bm.part_vertices().face).any()
    finally:
        with torch.no_grad():
            bm.face_offset.zero_()


def test_offsets_get_gradients(bm):
    params = _params(2, seed=6)
    bm.zero_grad()
    out = bm(params)
    target = torch.randn_like(out.vertices, generator=torch.Generator().manual_seed(7))
    ((out.vertices - target) ** 2).sum().backward()
    gj, gf = bm.joint_offset.grad, bm.face_offset.grad
    assert gj is not None and gf is not None
    assert torch.isfinite(gj).all() and torch.isfinite(gf).all()
    assert gj[0].abs().sum() == 0  # the root's row is not applied
    assert (gj[1:].abs().sum(-1) > 0).sum() >= 50  # nearly every joint moves some vertex
    assert (gf.abs().sum(-1) > 0).float().mean() > 0.99
    bm.zero_grad()
    # the canonical space passes gradients to both as well
    canon = bm.canonical("star", betas=params["betas"][:1])
    canon.vertices.square().sum().backward()
    assert bm.joint_offset.grad[1:].abs().sum() > 0 and bm.face_offset.grad.abs().sum() > 0
    bm.zero_grad()


def test_default_body_model_stays_parameter_free(body_models_root):
    plain = BodyModel("smplx", _file(body_models_root))
    assert list(plain.parameters()) == [] and plain.joint_offsets() is None


def test_part_masks_from_the_skinning_weights(bm):
    parts = bm.part_vertices()
    names = bm.joint_names
    W = bm.lbs_weights
    fingers = [i for i, n in enumerate(names) if any(f in n for f in ("index", "middle", "pinky", "ring", "thumb"))]
    assert not (parts.face & parts.hands).any() and not (parts.left_hand & parts.right_hand).any()
    # every vertex a finger bone moves belongs to a hand; the face holds all the expression moves
    assert not (W[:, fingers].sum(1) > 0)[~parts.hands].any()
    moved_by_expression = bm.smplx.expr_dirs.abs().sum((1, 2)) > 0
    assert parts.face_expr.any() and not (parts.face_expr & ~parts.face).any()
    assert not (moved_by_expression & ~parts.face).any()
    # left is +x in the model frame
    assert (bm.v_template[parts.left_hand, 0] > 0.3).all() and (bm.v_template[parts.right_hand, 0] < -0.3).all()
    assert "skinning" in parts.source or "dominant" in parts.source


def test_part_masks_from_the_official_index_files(body_models_root, tmp_path):
    folder = tmp_path / "smplx"
    folder.mkdir()
    shutil.copy(_file(body_models_root), folder / "SMPLX_NEUTRAL.npz")
    face_ids = np.arange(100, 400)
    np.save(folder / FLAME_VERTEX_IDS_FILE, face_ids)
    with open(folder / MANO_VERTEX_IDS_FILE, "wb") as fh:
        pickle.dump({"left_hand": np.arange(1000, 1100), "right_hand": np.arange(2000, 2050)}, fh)
    parts = BodyModel("smplx", folder / "SMPLX_NEUTRAL.npz").part_vertices()
    assert parts.face[face_ids].all()
    assert int(parts.left_hand.sum()) <= 100 and parts.left_hand[1000:1100].sum() == parts.left_hand.sum()
    assert parts.right_hand[2000:2050].sum() == parts.right_hand.sum() > 0
    assert FLAME_VERTEX_IDS_FILE in parts.source and MANO_VERTEX_IDS_FILE in parts.source
    np.save(folder / FLAME_VERTEX_IDS_FILE, np.array([5, 10 ** 6]))
    with pytest.raises(ValueError, match="FLAME vertex ids"):
        BodyModel("smplx", folder / "SMPLX_NEUTRAL.npz").part_vertices()
