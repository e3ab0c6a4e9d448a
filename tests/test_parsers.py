"""Parsers and writers: write a small capture in each real layout, read it back, compare.

Every format is checked for: the posed pelvis (computed with ``zoo.core.body.BodyModel`` from the
parsed body) projects with the parsed camera within 1 px of where the writer drew it; masks
exactly; body parameters within 1e-5 in the standard convention; splits; resize options; and the
bad-input errors naming the file.
"""

from __future__ import annotations

import functools
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import body_files
from zoo.data.parsers import PARSERS
from zoo.data.parsers.neuman import load_joblib, neuman_split_indices
from zoo.data.parsers.people_snapshot import default_frame_ranges
from zoo.data.parsers.zju_mocap import remap, undistortion_maps
from zoo.data.protocols import get_protocol
from zoo.data.schema import (
    BODY_KEYS_SMPL,
    BODY_KEYS_SMPLX,
    PROTOCOL_KEYS,
    SPLITS,
    DatasetError,
    MissingFileError,
    collate,
    make_protocol,
    validate_frame,
    validate_protocol,
)
from zoo.data.writers import Capture, CaptureError, CaptureFrame, write

H, W = 40, 48  # non-square on purpose
SMPLX_EXTRAS = {"jaw_pose": 3, "leye_pose": 3, "reye_pose": 3, "left_hand_pose": 45, "right_hand_pose": 45, "expression": 10}


# --------------------------------------------------------------------------------------------
# Fixtures and capture builders (also used by test_datamodule.py); the session-scoped synthetic
# body-model folder ``body_models_root`` comes from tests/conftest.py.


@pytest.fixture
def body_env(body_models_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ZOO_BODY_MODELS pointing at the session's synthetic body files (``body_models_root`` of conftest.py)."""
    monkeypatch.setenv("ZOO_BODY_MODELS", str(body_models_root))
    return body_models_root


@functools.lru_cache(maxsize=None)
def _body_model(root: str, model_type: str, gender: str):
    from zoo.core.body import BodyModel

    return BodyModel(model_type, model_path=root, gender=gender)


def posed_pelvis(root: Path, model_type: str, gender: str, body: dict) -> np.ndarray:
    """World pelvis of a body dict (unbatched tensors) with BodyModel; applies the scale convention."""
    params = {k: v[None].float() for k, v in body.items() if k != "scale"}
    with torch.no_grad():
        out = _body_model(str(root), model_type, gender)(params)
    pelvis = out.joints[0, 0].double().numpy()
    if "scale" in body:
        # Documented convention: output with transl = 0, times scale, plus transl.
        transl = body["transl"].double().numpy()
        pelvis = float(body["scale"][0]) * (pelvis - transl) + transl
    return pelvis


def project(K: np.ndarray, w2c: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Pixel coordinates of a world point."""
    xc = np.asarray(w2c, np.float64)[:3, :3] @ X + np.asarray(w2c, np.float64)[:3, 3]
    uv = np.asarray(K, np.float64) @ (xc / xc[2])
    return uv[:2]


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV w2c of a camera at ``eye`` looking at ``target`` with world +y up."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, -1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def intrinsics(fx: float = 55.0, fy: float = 57.0) -> np.ndarray:
    return np.array([[fx, 0.0, 23.3], [0.0, fy, 19.6], [0.0, 0.0, 1.0]])


def draw(K: np.ndarray, w2c: np.ndarray, pelvis: np.ndarray, tint: int, radius: float = 6.0):
    """Image, mask and depth of a blob centred on the projected pelvis; returns its centre too."""
    uv = project(K, w2c, pelvis)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    mask = ((xx - uv[0]) ** 2 + (yy - uv[1]) ** 2 <= radius**2).astype(np.uint8)
    image = np.stack(
        [(xx * 5 + tint) % 256, (yy * 6 + 2 * tint) % 256, (xx + yy) * 2 % 256], axis=-1
    ).astype(np.uint8)
    image[mask > 0] = (200, 60 + tint % 100, 40)
    z = float((w2c[:3, :3] @ pelvis + w2c[:3, 3])[2])
    depth = np.where(mask > 0, z + 0.01 * (xx - uv[0]), 0.0).astype(np.float32)
    return image, mask, depth, uv


def random_pose(rng: np.random.Generator, model_type: str, center=(0.0, 0.0, 0.0)) -> dict:
    pose = {
        "global_orient": rng.normal(0, 0.3, 3),
        "body_pose": rng.normal(0, 0.1, 69 if model_type == "smpl" else 63),
        "transl": np.asarray(center) + rng.normal(0, 0.1, 3),
    }
    if model_type == "smplx":
        for key, dim in SMPLX_EXTRAS.items():
            pose[key] = rng.normal(0, 0.1, dim)
    return pose


def make_capture(
    root: Path,
    model_type: str,
    frame_ids: list[int],
    camera_ids: list[int] | None,
    *,
    subject: str = "synthetic",
    gender: str = "neutral",
    moving: bool = False,
    scale: float | None = None,
    center=(0.0, 0.0, 0.0),
    splits: dict | None = None,
    static_w2c: np.ndarray | None = None,
    seed: int = 0,
) -> Capture:
    """A capture whose frames show a blob on the projected pelvis.

    Static cameras (``camera_ids``) sit on a circle of radius 3 m around the body; ``moving``
    gives one camera per frame on an arc (NeuMan, X-Humans); ``static_w2c`` replaces every
    static camera's pose.
    """
    rng = np.random.default_rng(seed)
    betas = rng.normal(0, 0.5, 10)
    J0 = body_files.rest_joints(root, betas, model_type, gender)[0]
    poses = {fid: random_pose(rng, model_type, center) for fid in frame_ids}
    if scale is not None:
        for pose in poses.values():
            pose["scale"] = np.array([scale])
    frames = []
    K = intrinsics()
    target = np.asarray(center) + J0
    for n, fid in enumerate(frame_ids):
        cams = [n] if moving else camera_ids
        for c in cams:
            angle = 2 * math.pi * (c / 7.0) + 0.3
            eye = target + np.array([3.0 * math.sin(angle), 0.4, 3.0 * math.cos(angle)])
            w2c = look_at(eye, target) if static_w2c is None else static_w2c
            s = 1.0 if scale is None else scale
            pelvis = s * J0 + poses[fid]["transl"]
            image, mask, depth, _ = draw(K, w2c, pelvis, tint=17 * c + 3 * n)
            frames.append(CaptureFrame(image=image, mask=mask, K=K, w2c=w2c, camera_id=0 if moving else c,
                                       frame_id=fid, depth=depth))
    return Capture(subject=subject, model_type=model_type, gender=gender, betas=betas, rest_pelvis=J0,
                   poses=poses, frames=frames, splits=splits or {})


def capture_pelvis_px(cap: Capture, frame: CaptureFrame) -> np.ndarray:
    """Where the writer drew the blob of ``frame``."""
    pose = cap.poses[frame.frame_id]
    s = float(pose["scale"][0]) if "scale" in pose else 1.0
    return project(frame.K, frame.w2c, s * cap.rest_pelvis + pose["transl"])


def check_roundtrip(seq, cap: Capture, root: Path, match, *, exact_image: bool = True, skip_keys=()):
    """Compare every item of ``seq`` with the capture frame ``match(item)`` returns."""
    assert len(seq) == len(cap.frames)
    for i in range(len(seq)):
        item = seq[i]
        validate_frame(item, f"item {i}", seq.model_type)
        fr = match(item)
        assert item["index"] == i
        assert torch.equal(item["mask"][0], torch.from_numpy(fr.mask.astype(np.float32)))
        np.testing.assert_allclose(item["K"].numpy(), fr.K, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(item["w2c"].numpy(), fr.w2c, atol=1e-5)
        img = item["image"].permute(1, 2, 0).numpy()
        if exact_image:
            assert np.array_equal(np.round(img * 255).astype(np.uint8), fr.image)
        else:
            assert np.abs(img - fr.image / 255.0).mean() < 0.03
        pose = cap.poses[fr.frame_id]
        body = item["body"]
        np.testing.assert_allclose(body["betas"].numpy(), cap.betas, atol=1e-5)
        for key in ("global_orient", "body_pose", "transl", *([] if seq.model_type == "smpl" else SMPLX_EXTRAS)):
            if key in skip_keys:
                continue
            np.testing.assert_allclose(body[key].numpy(), pose[key], atol=1e-5, err_msg=key)
        pelvis = posed_pelvis(root, seq.model_type, seq.gender, body)
        uv = project(item["K"].numpy(), item["w2c"].numpy(), pelvis)
        assert np.linalg.norm(uv - capture_pelvis_px(cap, fr)) < 1.0


# --------------------------------------------------------------------------------------------
# Schema and body files


def test_body_keys_and_protocol_contract():
    assert BODY_KEYS_SMPL == {"betas": None, "global_orient": 3, "body_pose": 69, "transl": 3}
    assert BODY_KEYS_SMPLX["left_hand_pose"] == 45 and BODY_KEYS_SMPLX["body_pose"] == 63
    assert SPLITS == ("train", "val", "test_view", "test_pose")
    with pytest.raises(ValueError, match="lpips_net"):
        validate_protocol({k: None for k in PROTOCOL_KEYS} | {"name": "x", "crop": "full", "lpips_net": "squeeze"})
    with pytest.raises(ValueError, match="bbox_pad"):
        make_protocol("x", bbox_pad=-1)
    assert set(make_protocol("x")) == set(PROTOCOL_KEYS)


def test_validate_frame_names_source_key_and_shape():
    frame = {
        "image": torch.zeros(3, 4, 5), "mask": torch.zeros(1, 4, 5), "K": torch.eye(3), "w2c": torch.eye(4),
        "body": {"betas": torch.zeros(10), "global_orient": torch.zeros(3), "body_pose": torch.zeros(69),
                 "transl": torch.zeros(3)},
        "frame_id": 0, "camera_id": 0, "index": 0,
    }
    validate_frame(frame, "a.png", "smpl")
    bad = dict(frame, mask=torch.zeros(1, 4, 6))
    with pytest.raises(ValueError, match=r"a\.png: 'mask' has shape \[1, 4, 6\], expected \[1, 4, 5\]"):
        validate_frame(bad, "a.png")
    bad = dict(frame, body=dict(frame["body"], body_pose=torch.zeros(63)))
    with pytest.raises(ValueError, match=r"b\.png: 'body\.body_pose' has shape \[63\], expected \[69\]"):
        validate_frame(bad, "b.png", "smpl")
    batch = collate([frame, dict(frame, frame_id=3)])
    assert batch["image"].shape == (2, 3, 4, 5) and batch["body"]["body_pose"].shape == (2, 69)
    assert batch["frame_id"].tolist() == [0, 3] and batch["frame_id"].dtype == torch.long


def test_rest_joints_and_missing_model(body_models_root: Path, tmp_path: Path, monkeypatch):
    betas = np.linspace(-1, 1, 10)
    J = body_files.rest_joints(body_models_root, betas)
    arrays = body_files.load_model_arrays(body_models_root / "smpl" / "SMPL_NEUTRAL.npz")
    expected = arrays["J_regressor"] @ (arrays["v_template"] + arrays["shapedirs"] @ betas)
    np.testing.assert_allclose(J, expected, atol=1e-9)
    # .pkl (scipy sparse J_regressor) and .npz agree
    np.testing.assert_allclose(J, body_files.rest_joints(body_models_root / "smpl" / "SMPL_NEUTRAL.pkl", betas), atol=1e-9)
    # the body core agrees on the pelvis of the zero pose
    zero = {"betas": torch.tensor(betas, dtype=torch.float32)[None], "global_orient": torch.zeros(1, 3),
            "body_pose": torch.zeros(1, 69), "transl": torch.zeros(1, 3)}
    out = _body_model(str(body_models_root), "smpl", "neutral")(zero)
    np.testing.assert_allclose(out.joints[0, 0].numpy(), J[0], atol=1e-5)
    monkeypatch.setenv("ZOO_BODY_MODELS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"SMPL_NEUTRAL\.pkl.*ZOO_BODY_MODELS"):
        body_files.rest_joints(None, betas)
    monkeypatch.delenv("ZOO_BODY_MODELS")
    with pytest.raises(FileNotFoundError, match="ZOO_BODY_MODELS"):
        body_files.rest_joints(None, betas)


def test_data_layer_and_body_core_pick_the_same_model_file(tmp_path):
    """A folder holding a model as both .pkl and .npz: the parsers' rest joints and the
    BodyModel read the same one (the core's preference: .pkl for SMPL, .npz for SMPL-X)."""
    from zoo.core.model_files import find_model_file

    for model_type, stem in (("smpl", "SMPL_NEUTRAL"), ("smplx", "SMPLX_NEUTRAL")):
        (tmp_path / model_type).mkdir()
        for ext in (".pkl", ".npz"):
            (tmp_path / model_type / f"{stem}{ext}").write_bytes(b"")
        picked = body_files.model_file(tmp_path, model_type)
        assert picked == find_model_file(model_type, tmp_path)
        assert picked.suffix == (".pkl" if model_type == "smpl" else ".npz")


def test_rotation_helpers_roundtrip():
    rng = np.random.default_rng(1)
    axes = rng.normal(0, 1.0, (20, 3))
    aa = axes / np.linalg.norm(axes, axis=1, keepdims=True) * rng.uniform(0, 3.1, (20, 1))
    aa[0] = 0
    aa[1] = [0, 0, math.pi - 1e-4]
    np.testing.assert_allclose(body_files.matrix_to_axis_angle(body_files.axis_angle_to_matrix(aa)), aa, atol=1e-7)


# --------------------------------------------------------------------------------------------
# ZJU-MoCap


ZJU_FRAMES = list(range(8))


def _zju_capture(root: Path, camera_ids=(0, 1, 2), frame_ids=ZJU_FRAMES) -> Capture:
    return make_capture(root, "smpl", list(frame_ids), list(camera_ids), subject="CoreView_900", seed=3)


def _match_static(cap: Capture):
    by_key = {(f.frame_id, f.camera_id): f for f in cap.frames}
    return lambda item: by_key[(item["frame_id"], item["camera_id"])]


def test_zju_raw_roundtrip_and_splits(body_env: Path, tmp_path: Path):
    cap = _zju_capture(body_env)
    path = write("zju_mocap", cap, tmp_path, subject_index=900)
    assert path == tmp_path / "CoreView_900"
    annots = np.load(path / "annots.npy", allow_pickle=True).item()
    assert annots["ims"][2]["ims"][1] == "Camera_B2/000002.jpg"
    np.testing.assert_allclose(np.asarray(annots["cams"]["T"][0]).ravel(), cap.frames[0].w2c[:3, 3] * 1000)
    params = np.load(path / "new_params" / "3.npy", allow_pickle=True).item()
    assert params["poses"].shape == (1, 72) and np.all(params["poses"][:, :3] == 0)

    seq = PARSERS["zju_mocap"](path)
    assert len(seq) == 8 * 3 and seq.num_frames == 8 and seq.frame_ids == ZJU_FRAMES
    assert seq.camera_ids == [0, 1, 2] and seq.model_type == "smpl" and seq.subject == "CoreView_900"
    check_roundtrip(seq, cap, body_env, _match_static(cap), exact_image=False)
    # mono protocol, unknown subject: first ceil(0.8 F) = 7 frames of camera 0; tests every min(30, n)
    assert seq.protocol_name == "mono_3dgs_avatar" and seq.protocol == get_protocol("zju_mocap")
    assert seq.protocol["resolution"] == (512, 512)
    assert seq.splits["train"] == [f * 3 for f in range(7)]
    assert seq.splits["test_view"] == [1, 2]
    assert seq.splits["test_pose"] == [7 * 3 + 1, 7 * 3 + 2]
    # val: novel views (cameras 1, 2) of training frames 1..6, which no test split scores
    held_out = [f * 3 + c for f in range(1, 7) for c in (1, 2)]
    assert seq.splits["val"] == [held_out[i] for i in (0, 4, 7, 11)]
    scored = set(seq.splits["test_view"]) | set(seq.splits["test_pose"]) | set(seq.splits["train"])
    assert not scored & set(seq.splits["val"])
    nb = PARSERS["zju_mocap"](path, protocol="neuralbody_4view", test_every=3)
    assert [seq[i]["camera_id"] for i in nb.splits["train"]] == [0] * 7
    assert nb.protocol == get_protocol("zju_mocap_neuralbody") and nb.protocol["crop"] == "bbox"
    assert sorted({i // 3 for i in nb.splits["test_view"]}) == [0, 3, 6]
    over = PARSERS["zju_mocap"](path, train_cameras=[1, 2], train_frames=(0, 6, 2), test_every=2)
    assert over.splits["train"] == [f * 3 + c for f in (0, 2, 4) for c in (1, 2)]
    assert over.splits["test_pose"] == [6 * 3]


def test_zju_resolution_option_keeps_projection(body_env: Path, tmp_path: Path):
    cap = _zju_capture(body_env, camera_ids=(0, 1), frame_ids=[0, 1])
    path = write("zju_mocap", cap, tmp_path)
    assert path.name == "CoreView_900"  # capture.subject without its prefix
    seq = PARSERS["zju_mocap"](path, resolution=(20, 24))
    match = _match_static(cap)
    for i in range(len(seq)):
        item = seq[i]
        assert item["image"].shape == (3, 20, 24) and item["mask"].shape == (1, 20, 24)
        fr = match(item)
        pelvis = posed_pelvis(body_env, "smpl", "neutral", item["body"])
        uv = project(item["K"].numpy(), item["w2c"].numpy(), pelvis)
        expected = (capture_pelvis_px(cap, fr) + 0.5) * 0.5 - 0.5
        assert np.linalg.norm(uv - expected) < 1e-2
        # the mask is the nearest-neighbour resample of the written one
        ref = np.asarray(Image.fromarray(fr.mask).resize((24, 20), Image.Resampling.NEAREST))
        assert np.array_equal(item["mask"][0].numpy().astype(np.uint8), ref)


def test_zju_313_layout_quirks(body_env: Path, tmp_path: Path):
    cap = _zju_capture(body_env, camera_ids=(0, 18, 21), frame_ids=[1, 2, 3, 4, 5])
    path = write("zju_mocap", cap, tmp_path, subject_index=313, layout="raw_313")
    rel = np.load(path / "annots.npy", allow_pickle=True).item()["ims"][0]["ims"][2]
    assert rel.startswith("Camera (22)/CoreView_313_Camera_(22)_0001_")
    assert isinstance(np.load(path / "annots.npy", allow_pickle=True).item()["cams"]["K"][0], list)
    assert (path / "new_params" / "1.npy").is_file() and not (path / "new_params" / "0.npy").exists()
    seq = PARSERS["zju_mocap"](path)
    assert seq.frame_ids == [1, 2, 3, 4, 5] and seq.camera_ids == [0, 18, 21]
    check_roundtrip(seq, cap, body_env, _match_static(cap), exact_image=False)


def test_zju_refined_layout(body_env: Path, tmp_path: Path):
    cap = _zju_capture(body_env, camera_ids=(0, 1, 2, 3, 4, 5), frame_ids=[0, 1, 2, 3, 4])
    path = write("zju_mocap", cap, tmp_path, subject_index=901, layout="refined")
    assert (path / "images" / "05" / "000004.jpg").is_file() and (path / "mask" / "05" / "000004.png").is_file()
    assert (path / "smpl_params" / "4.npy").is_file()
    seq = PARSERS["zju_mocap"](path)
    assert seq.refined and seq.protocol == get_protocol("zju_mocap_refined")
    assert seq.protocol["lpips_input"] == "zero_one_as_is"
    check_roundtrip(seq, cap, body_env, _match_static(cap), exact_image=False)
    assert {seq[i]["camera_id"] for i in seq.splits["train"]} == {4}


def test_zju_masks_or_params_choice_and_undistortion(body_env: Path, tmp_path: Path):
    cap = _zju_capture(body_env, camera_ids=(0, 1), frame_ids=[0, 1])
    path = write("zju_mocap", cap, tmp_path, mask_dirs=("mask_cihp", "mask"), also_params=True)
    # mask/ and mask_cihp/ are OR-ed
    extra = np.zeros((H, W), np.uint8)
    extra[:3, :4] = 255
    Image.fromarray(extra).save(path / "mask" / "Camera_B1" / "000000.png")
    seq = PARSERS["zju_mocap"](path)
    m = seq[0]["mask"][0].numpy()
    assert m[:3, :4].all() and np.array_equal(m[3:], cap.frames[0].mask[3:].astype(np.float32))
    assert np.array_equal(PARSERS["zju_mocap"](path, mask_source="mask_cihp")[0]["mask"][0].numpy(),
                          cap.frames[0].mask.astype(np.float32))
    # new_params preferred over params
    old = np.load(path / "params" / "0.npy", allow_pickle=True).item()
    old["Th"] = old["Th"] + 1.0
    np.save(path / "params" / "0.npy", old)
    assert torch.allclose(seq[0]["body"]["transl"], torch.tensor(cap.poses[0]["transl"], dtype=torch.float32), atol=1e-5)
    forced = PARSERS["zju_mocap"](path, smpl_params="params")
    assert torch.allclose(forced[0]["body"]["transl"] - seq[0]["body"]["transl"], torch.ones(3), atol=1e-5)
    # non-zero D: image and mask are undistorted (inverse map through the distortion model)
    annots = np.load(path / "annots.npy", allow_pickle=True).item()
    annots["cams"]["D"][0] = np.array([[0.15], [-0.05], [0.002], [0.001], [0.0]])
    np.save(path / "annots.npy", annots)
    dist = PARSERS["zju_mocap"](path)
    raw = np.asarray(Image.open(path / "Camera_B1" / "000000.jpg").convert("RGB"))
    mx, my = undistortion_maps(cap.frames[0].K, annots["cams"]["D"][0], (H, W))
    undistorted = np.round(dist[0]["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(undistorted, remap(raw, mx, my))
    assert not np.array_equal(undistorted, raw)
    raw_mask = np.asarray(Image.open(path / "mask_cihp" / "Camera_B1" / "000000.png")) > 0
    raw_mask |= np.asarray(Image.open(path / "mask" / "Camera_B1" / "000000.png")) > 0
    assert np.array_equal(dist[0]["mask"][0].numpy() > 0, remap(raw_mask, mx, my, nearest=True))
    assert torch.equal(dist[1]["mask"], seq[1]["mask"])  # camera 2 still has D = 0


def test_undistortion_maps_move_a_point_where_the_model_says():
    K = np.array([[40.0, 0, 24.0], [0, 40.0, 20.0], [0, 0, 1]])
    D = np.array([0.3, 0.1, 0.01, -0.01, 0.0])
    maps = undistortion_maps(K, D, (H, W))
    # undistorted pixel (35, 30) samples the distorted image where the model sends it
    x, y = (35 - 24.0) / 40.0, (30 - 20.0) / 40.0
    r2 = x * x + y * y
    rad = 1 + 0.3 * r2 + 0.1 * r2 * r2
    xd = x * rad + 2 * 0.01 * x * y + -0.01 * (r2 + 2 * x * x)
    yd = y * rad + 0.01 * (r2 + 2 * y * y) + 2 * -0.01 * x * y
    assert abs(maps[0][30, 35] - (40 * xd + 24)) < 1e-9 and abs(maps[1][30, 35] - (40 * yd + 20)) < 1e-9
    zero = undistortion_maps(K, np.zeros(5), (H, W))
    img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    assert np.array_equal(remap(img, *zero), img) and np.array_equal(remap(img, *zero, nearest=True), img)


def test_zju_bad_inputs(body_env: Path, tmp_path: Path):
    with pytest.raises(MissingFileError, match="CoreView_404"):
        PARSERS["zju_mocap"](tmp_path / "CoreView_404")
    cap = _zju_capture(body_env, camera_ids=(0, 1), frame_ids=[0, 1, 2])
    path = write("zju_mocap", cap, tmp_path)
    # an image listed in annots.npy is missing
    (path / "Camera_B2" / "000001.jpg").unlink()
    with pytest.raises(MissingFileError, match=r"Camera_B2/000001\.jpg"):
        PARSERS["zju_mocap"](path)
    path = write("zju_mocap", cap, tmp_path, overwrite=True)
    # cameras missing for a frame in annots.npy
    annots = np.load(path / "annots.npy", allow_pickle=True).item()
    annots["ims"][1]["ims"] = annots["ims"][1]["ims"][:1]
    np.save(path / "annots.npy", annots)
    with pytest.raises(DatasetError, match=r"annots\.npy: frame position 1 lists 1 images"):
        PARSERS["zju_mocap"](path)
    path = write("zju_mocap", cap, tmp_path, overwrite=True)
    # wrong-shaped pose array
    params = np.load(path / "new_params" / "2.npy", allow_pickle=True).item()
    params["poses"] = np.zeros((1, 69))
    np.save(path / "new_params" / "2.npy", params)
    with pytest.raises(DatasetError, match=r"new_params/2\.npy: 'poses' has shape \(1, 69\), expected \(1, 72\)"):
        PARSERS["zju_mocap"](path)
    path = write("zju_mocap", cap, tmp_path, overwrite=True)
    # unreadable image and missing mask
    (path / "Camera_B1" / "000002.jpg").write_bytes(b"not a jpeg")
    seq = PARSERS["zju_mocap"](path)
    with pytest.raises(DatasetError, match=r"Camera_B1/000002\.jpg: cannot decode"):
        seq[2 * 2]
    (path / "mask_cihp" / "Camera_B1" / "000000.png").unlink()
    with pytest.raises(MissingFileError, match=r"mask_cihp/Camera_B1/000000\.png"):
        seq[0]


def test_zju_writer_validates_capture(body_env: Path, tmp_path: Path):
    cap = _zju_capture(body_env, camera_ids=(0, 1), frame_ids=[0, 1])
    cap.frames.pop()
    with pytest.raises(CaptureError, match="frame 1 lacks cameras"):
        write("zju_mocap", cap, tmp_path)
    xcap = make_capture(body_env, "smplx", [0], [0])
    with pytest.raises(CaptureError, match="SMPL"):
        write("zju_mocap", xcap, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_writer_refuses_to_overwrite_and_stages_atomically(body_env: Path, tmp_path: Path):
    cap = _zju_capture(body_env, camera_ids=(0,), frame_ids=[0, 1])
    path = write("zju_mocap", cap, tmp_path, subject_index=5)
    with pytest.raises(FileExistsError, match="CoreView_5.*overwrite=True"):
        write("zju_mocap", cap, tmp_path, subject_index=5)
    write("zju_mocap", cap, tmp_path, subject_index=6)  # another subject beside it is fine
    (path / "stale.txt").write_text("old")
    write("zju_mocap", cap, tmp_path, subject_index=5, overwrite=True)
    assert not (path / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CoreView_5", "CoreView_6"]


# --------------------------------------------------------------------------------------------
# PeopleSnapshot


PS_RANGES = default_frame_ranges(10, train_step=2)  # train 0..7 step 2, val 8, test 8..9


def _ps_capture(root: Path, subject: str = "synthetic-casual", frames: int = 10) -> Capture:
    splits = {"train": [0, 2, 4, 6], "val": [8], "test_pose": [8, 9]}
    # the real extrinsic is near, but not exactly, the identity (DATASETS.md §2B)
    w2c = np.eye(4)
    w2c[:3, :3] = body_files.axis_angle_to_matrix(np.array([2e-3, -1e-3, 5e-4]))
    w2c[:3, 3] = [0.004, -0.002, 0.01]
    return make_capture(root, "smpl", list(range(frames)), [0], subject=subject, splits=splits, seed=5,
                        center=(0.0, 0.4, 3.0), static_w2c=w2c)


def test_people_snapshot_roundtrip_splits_and_anim_nerf(body_env: Path, tmp_path: Path):
    cap = _ps_capture(body_env)
    path = write("people_snapshot", cap, tmp_path)
    assert path == tmp_path / "synthetic-casual"
    assert (path / "poses" / "anim_nerf_test.npz").is_file()
    assert np.load(path / "poses" / "anim_nerf_train.npz")["body_pose"].shape == (4, 69)
    seq = PARSERS["people_snapshot"](path, train_step=2)
    assert PS_RANGES == {"train": (0, 7, 2), "val": (8, 8, 1), "test": (8, 9, 1)}
    assert seq.splits == {"train": [0, 2, 4, 6], "val": [8], "test_view": [], "test_pose": [8, 9]}
    assert seq.pose_source == "anim_nerf" and seq.gender == "neutral" and seq.camera_ids == [0]
    assert seq.protocol == get_protocol("people_snapshot")
    assert {k: v for k, v in seq.protocol.items() if k != "source"} == {
        "name": "people_snapshot", "crop": "full", "bbox_pad": 0, "background": (1.0, 1.0, 1.0),
        "lpips_net": "alex", "lpips_input": "zero_one_as_is", "lpips_scale": 1, "resolution": (540, 540),
        "mask_prediction": False}
    by_id = {f.frame_id: f for f in cap.frames}
    check_roundtrip(seq, cap, body_env, lambda item: by_id[item["frame_id"]])
    # anim_nerf poses replace poses.npz for their split's frames only
    data = dict(np.load(path / "poses" / "anim_nerf_test.npz"))
    data["transl"] = data["transl"] + 0.5
    np.savez(path / "poses" / "anim_nerf_test.npz", **data)
    seq = PARSERS["people_snapshot"](path, train_step=2)
    assert torch.allclose(seq[9]["body"]["transl"], torch.tensor(cap.poses[9]["transl"] + 0.5, dtype=torch.float32), atol=1e-5)
    assert torch.allclose(seq[3]["body"]["transl"], torch.tensor(cap.poses[3]["transl"], dtype=torch.float32), atol=1e-5)
    raw = PARSERS["people_snapshot"](path, train_step=2, pose_source="poses")
    assert torch.allclose(raw[9]["body"]["transl"], torch.tensor(cap.poses[9]["transl"], dtype=torch.float32), atol=1e-5)


def test_people_snapshot_downscale_and_crop(body_env: Path, tmp_path: Path):
    cap = _ps_capture(body_env, frames=3)
    cap.splits = {}
    path = write("people_snapshot", cap, tmp_path)
    for options, size, transform in (
        ({"downscale": 2}, (20, 24), lambda uv: (uv + 0.5) * 0.5 - 0.5),
        ({"crop": "center_square"}, (40, 40), lambda uv: uv - np.array([4.0, 0.0])),
        ({"crop": (4, 6, 30, 36), "resolution": (15, 12)}, (15, 12),
         lambda uv: (uv - np.array([6.0, 4.0]) + 0.5) * np.array([12 / 36, 15 / 30]) - 0.5),
    ):
        seq = PARSERS["people_snapshot"](path, **options)
        assert seq.output_size(0) == size
        for i in range(len(seq)):
            item = seq[i]
            assert item["image"].shape[1:] == size and item["mask"].shape[1:] == size
            pelvis = posed_pelvis(body_env, "smpl", "neutral", item["body"])
            uv = project(item["K"].numpy(), item["w2c"].numpy(), pelvis)
            assert np.linalg.norm(uv - transform(capture_pelvis_px(cap, cap.frames[i]))) < 1e-2


def test_people_snapshot_known_subject_table_and_gender(body_env: Path, tmp_path: Path):
    cap = _ps_capture(body_env, subject="male-3-casual", frames=10)
    cap.splits = {}
    path = write("people_snapshot", cap, tmp_path)
    seq = PARSERS["people_snapshot"](path)
    assert seq.gender == "male"
    # InstantAvatar's male-3-casual ranges (0-455 step 4, val 456, test 456-675 step 4) clipped to 10 frames
    assert seq.splits["train"] == [0, 4, 8] and seq.splits["val"] == [] and seq.splits["test_pose"] == []
    seq = PARSERS["people_snapshot"](path, frame_ranges={"val": (9, 9), "test": (8, 9, 1)})
    assert seq.splits["val"] == [9] and seq.splits["test_pose"] == [8, 9]


def test_people_snapshot_bad_inputs(body_env: Path, tmp_path: Path):
    cap = _ps_capture(body_env)
    path = write("people_snapshot", cap, tmp_path)
    # anim_nerf file whose length does not match its split's frame range
    with pytest.raises(DatasetError, match=r"anim_nerf_train\.npz: .*expected M = 8"):
        PARSERS["people_snapshot"](path, train_step=1)
    (path / "masks" / "mask_0009.npy").unlink()
    with pytest.raises(DatasetError, match=r"masks: 9 masks for 10 images"):
        PARSERS["people_snapshot"](path, train_step=2)
    path = write("people_snapshot", cap, tmp_path, overwrite=True)
    poses = dict(np.load(path / "poses.npz"))
    poses["thetas"] = poses["thetas"][:, :69]
    np.savez(path / "poses.npz", **poses)
    with pytest.raises(DatasetError, match=r"poses\.npz: thetas \(10, 69\).*expected \(10, 72\)"):
        PARSERS["people_snapshot"](path, train_step=2)
    (path / "cameras.npz").unlink()
    with pytest.raises(MissingFileError, match=r"cameras\.npz"):
        PARSERS["people_snapshot"](path)
    path = write("people_snapshot", cap, tmp_path, overwrite=True)
    (path / "images" / "image_0003.png").write_bytes(b"\x89PNG broken")
    seq = PARSERS["people_snapshot"](path, train_step=2)
    with pytest.raises(DatasetError, match=r"image_0003\.png: cannot decode"):
        seq[3]
    two_cams = make_capture(body_env, "smpl", [0, 1], [0, 1])
    with pytest.raises(CaptureError, match="one camera"):
        write("people_snapshot", two_cams, tmp_path / "other")
    uneven = _ps_capture(body_env)
    uneven.splits = {"train": [0, 1, 3]}
    with pytest.raises(CaptureError, match="not evenly spaced"):
        write("people_snapshot", uneven, tmp_path / "other")


# --------------------------------------------------------------------------------------------
# NeuMan


NEUMAN_FRAMES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]  # frame 4 not registered by COLMAP


def _neuman_capture(root: Path, splits=None) -> Capture:
    return make_capture(root, "smpl", NEUMAN_FRAMES, None, subject="lab", moving=True, scale=0.8, seed=7,
                        center=(0.5, 0.1, -0.3), splits=splits)


def test_neuman_split_rule_matches_reference():
    split = neuman_split_indices(41)
    assert len(split["train"]) == 33
    assert split["val"] == [22, 27, 32, 37] and split["test"] == [2, 7, 12, 17]
    # int((1 / num_val) * N) is replicated: at N = 1245 it is 4, not 1245 // 249 = 5
    split = neuman_split_indices(1245)
    assert split["test"][:3] == [2, 6, 10]
    assert neuman_split_indices(4) == {"train": [0, 1, 2, 3], "val": [], "test": []}


def test_neuman_roundtrip_alignment_scale_and_depth(body_env: Path, tmp_path: Path):
    cap = _neuman_capture(body_env)
    path = write("neuman", cap, tmp_path)
    assert (path / "sparse" / "points3D.txt").is_file()
    assert (path / "train_split.txt").read_text().endswith(".png\n")
    import joblib

    smpl = joblib.load(path / "smpl_output_optimized.pkl")
    ours = load_joblib(path / "smpl_output_optimized.pkl")
    assert len(ours[1]["pose"]) == 13 and np.array_equal(ours[1]["pose"][5], smpl[1]["pose"][5])
    for compress in (3, ("gzip", 3), ("bz2", 3), ("xz", 3)):  # joblib's compressed variants, read without joblib
        joblib.dump(smpl, tmp_path / "c.pkl", compress=compress)
        assert np.array_equal(load_joblib(tmp_path / "c.pkl")[1]["betas"][7], smpl[1]["betas"][7])
    seq = PARSERS["neuman"](path)
    assert seq.frame_ids == NEUMAN_FRAMES and seq.camera_ids == [0]
    assert seq.protocol == get_protocol("neuman")
    assert seq.protocol["background"] == (1.0, 1.0, 1.0) and seq.protocol["lpips_input"] == "minus_one_one"
    by_id = {f.frame_id: f for f in cap.frames}
    check_roundtrip(seq, cap, body_env, lambda item: by_id[item["frame_id"]])
    item = seq[0]
    assert torch.allclose(item["body"]["scale"], torch.tensor([0.8]), atol=1e-6)
    np.testing.assert_allclose(item["depth"][0].numpy(), cap.frames[0].depth, atol=1e-4)
    # the stored world is [v, 1] @ A of the ROMP-frame body: check with the pelvis directly
    A = np.load(path / "alignments.npy", allow_pickle=True).item()["00000.png"]
    romp = ours[1]["pose"][0]
    assert not np.allclose(romp[:3], cap.poses[0]["global_orient"], atol=1e-3)
    np.testing.assert_allclose(np.append(cap.rest_pelvis, 1.0) @ A, 0.8 * cap.rest_pelvis + cap.poses[0]["transl"], atol=1e-6)
    # splits: ml-neuman's rule over the 12 registered images, written as files
    rule = neuman_split_indices(12)
    assert seq.splits == {"train": rule["train"], "val": rule["val"], "test_view": [], "test_pose": rule["test"]}
    for name in ("train", "val", "test"):
        (path / f"{name}_split.txt").unlink()
    assert PARSERS["neuman"](path).splits == seq.splits


def test_neuman_split_hints_and_segmentation_variants(body_env: Path, tmp_path: Path):
    cap = _neuman_capture(body_env, splits={"train": NEUMAN_FRAMES[:9], "val": [10], "test_pose": [11, 12]})
    for fmt in ("npy", "png3"):
        path = write("neuman", cap, tmp_path, segmentation_format=fmt, overwrite=True)
        seq = PARSERS["neuman"](path, mono_depth=False)
        assert seq.splits["train"] == list(range(9)) and seq.splits["val"] == [9] and seq.splits["test_pose"] == [10, 11]
        assert "depth" not in seq[4]
        for i in (0, 5):
            assert np.array_equal(seq[i]["mask"][0].numpy(), cap.frames[i].mask.astype(np.float32))


def test_neuman_bad_inputs(body_env: Path, tmp_path: Path):
    cap = _neuman_capture(body_env)
    path = write("neuman", cap, tmp_path)
    cams = path / "sparse" / "cameras.txt"
    good = cams.read_text()
    cams.write_text(good.replace("#   CAMERA_ID, MODEL", "# CAMERA_ID, MODEL"))
    with pytest.raises(DatasetError, match=r"cameras\.txt: header line 2"):
        PARSERS["neuman"](path)
    cams.write_text(good.replace(" PINHOLE 48 40 55.0 57.0 23.3 19.6", " OPENCV 48 40 55.0 57.0 23.3 19.6 0.1 0 0 0"))
    with pytest.raises(DatasetError, match=r"cameras\.txt:4: camera 1 \(OPENCV\) has non-zero distortion"):
        PARSERS["neuman"](path)
    cams.write_text(good.replace(" PINHOLE 48 40 55.0 57.0 23.3 19.6", " OPENCV 48 40 55.0 57.0 23.3 19.6 0 0 0 0"))
    assert len(PARSERS["neuman"](path)) == len(NEUMAN_FRAMES)
    cams.write_text(good)
    images = path / "sparse" / "images.txt"
    text = images.read_text()
    images.write_text(text.replace("# Number of images: 12", "# Number of images: 13"))
    with pytest.raises(DatasetError, match=r"images\.txt: header announces 13 images, found 12"):
        PARSERS["neuman"](path)
    images.write_text(text)
    align = np.load(path / "alignments.npy", allow_pickle=True).item()
    del align["00003.png"]
    np.save(path / "alignments.npy", align)
    with pytest.raises(DatasetError, match=r"alignments\.npy: no alignment for 00003\.png"):
        PARSERS["neuman"](path)
    path = write("neuman", cap, tmp_path, overwrite=True)
    (path / "segmentations" / "00005.png").unlink()
    with pytest.raises(MissingFileError, match=r"segmentations/00005\.png"):
        PARSERS["neuman"](path)
    path = write("neuman", cap, tmp_path, overwrite=True)
    (path / "test_split.txt").write_text("00004.png\n")
    with pytest.raises(DatasetError, match=r"test_split\.txt:1: '00004\.png' is not a registered image"):
        PARSERS["neuman"](path)
    (path / "smpl_output_optimized.pkl").write_bytes(pickle.dumps({1: {"pose": [np.zeros(72)], "betas": [np.zeros(10)]}}))
    with pytest.raises(DatasetError, match=r"smpl_output_optimized\.pkl: no SMPL parameters for frame 1"):
        PARSERS["neuman"](path)


# --------------------------------------------------------------------------------------------
# X-Humans


XH_TRAIN = [100001, 100002, 100003, 100004, 100005]
XH_TEST = [300001, 300002, 300003]


def _xh_capture(root: Path) -> Capture:
    return make_capture(root, "smplx", XH_TRAIN + XH_TEST, None, subject="00034", moving=True, gender="female",
                        seed=11, splits={"train": XH_TRAIN, "test_pose": XH_TEST})


def test_x_humans_roundtrip(body_env: Path, tmp_path: Path):
    cap = _xh_capture(body_env)
    path = write("x_humans", cap, tmp_path)
    assert path == tmp_path / "00034"
    assert (path / "test" / "Take3" / "SMPLX" / "mesh-f00002_smplx.pkl").is_file()
    assert np.load(path / "train" / "Take1" / "render" / "cameras.npz")["extrinsic"].shape == (5, 4, 4)
    seq = PARSERS["x_humans"](path)
    assert seq.model_type == "smplx" and seq.gender == "female"
    assert seq.frame_ids == XH_TRAIN + XH_TEST and seq.camera_ids == list(range(8))
    assert [seq.frame_position(f) for f in reversed(seq.frame_ids)] == list(range(7, -1, -1))
    assert seq.splits["train"] == [0, 1, 2, 3, 4] and seq.splits["test_pose"] == [5, 6, 7]
    assert seq.splits["test_view"] == [] and set(seq.splits["val"]) <= set(seq.splits["train"])
    assert seq.protocol == get_protocol("x_humans")
    assert seq.protocol["resolution"] == (1200, 800) and seq.protocol["lpips_net"] == "alex"
    by_id = {f.frame_id: f for f in cap.frames}
    check_roundtrip(seq, cap, body_env, lambda item: by_id[item["frame_id"]])
    for i in (0, 6):
        fr = by_id[seq[i]["frame_id"]]
        np.testing.assert_allclose(seq[i]["depth"][0].numpy(), fr.depth * fr.mask, atol=1e-6)
    # the per-frame betas in the pickles are ignored in favour of mean_shape_smplx.npy (§4A)
    pkl = path / "train" / "Take1" / "SMPLX" / "mesh-f00001_smplx.pkl"
    params = pickle.loads(pkl.read_bytes())
    params["betas"] = params["betas"] + 1.0
    pkl.write_bytes(pickle.dumps(params, protocol=2))
    assert np.allclose(PARSERS["x_humans"](path)[0]["body"]["betas"].numpy(), cap.betas, atol=1e-5)
    assert np.allclose(PARSERS["x_humans"](path, betas="per_frame")[0]["body"]["betas"].numpy(), cap.betas + 1, atol=1e-5)


def test_x_humans_small_frame_ids_become_takes(body_env: Path, tmp_path: Path):
    cap = make_capture(body_env, "smplx", [0, 1, 2, 3], None, subject="x", moving=True, seed=2,
                       splits={"train": [0, 1, 2], "test_pose": [3]})
    path = write("x_humans", cap, tmp_path, subject_index=7)
    assert path.name == "00007" and (path / "test" / "Take2" / "render" / "image" / "color_000004.png").is_file()
    seq = PARSERS["x_humans"](path)
    assert seq.frame_ids == [100001, 100002, 100003, 200004] and seq.splits["test_pose"] == [3]
    assert np.array_equal(seq[3]["mask"][0].numpy(), cap.frames[3].mask.astype(np.float32))


def test_x_humans_bad_inputs(body_env: Path, tmp_path: Path):
    cap = _xh_capture(body_env)
    path = write("x_humans", cap, tmp_path)
    cams = path / "train" / "Take1" / "render" / "cameras.npz"
    data = dict(np.load(cams))
    np.savez(cams, intrinsic=data["intrinsic"], extrinsic=data["extrinsic"][:4])
    with pytest.raises(DatasetError, match=r"Take1/render/cameras\.npz: 4 extrinsics for 5 images"):
        PARSERS["x_humans"](path)
    np.savez(cams, **data)
    pkl = path / "test" / "Take3" / "SMPLX" / "mesh-f00002_smplx.pkl"
    params = pickle.loads(pkl.read_bytes())
    params["left_hand_pose"] = np.zeros(12)
    pkl.write_bytes(pickle.dumps(params))
    with pytest.raises(DatasetError, match=r"mesh-f00002_smplx\.pkl: 'left_hand_pose' has shape \(12,\), expected \(45,\)"):
        PARSERS["x_humans"](path)
    pkl.unlink()
    with pytest.raises(MissingFileError, match=r"mesh-f00002_smplx\.pkl"):
        PARSERS["x_humans"](path)
    (path / "gender.txt").unlink()
    with pytest.raises(MissingFileError, match=r"gender\.txt"):
        PARSERS["x_humans"](path)
    smpl_cap = make_capture(body_env, "smpl", [1], None, moving=True)
    with pytest.raises(CaptureError, match="SMPL-X"):
        write("x_humans", smpl_cap, tmp_path / "other")


def test_parsers_registry_and_unknown_format(tmp_path: Path):
    assert sorted(PARSERS) == ["neuman", "people_snapshot", "x_humans", "zju_mocap"]
    with pytest.raises(KeyError, match="known formats"):
        write("h36m", None, tmp_path)  # type: ignore[arg-type]
    for name in PARSERS:
        with pytest.raises(FileNotFoundError, match="nowhere"):
            PARSERS[name](tmp_path / "nowhere")


def test_capture_validation_messages(body_env: Path, tmp_path: Path):
    cap = make_capture(body_env, "smpl", [0, 1], [0])
    cap.frames[1].mask = cap.frames[1].mask * 2
    with pytest.raises(CaptureError, match=r"frame 1 \(frame_id 1, camera_id 0\): mask values must be 0 or 1"):
        write("people_snapshot", cap, tmp_path)
    cap = make_capture(body_env, "smpl", [0, 1], [0])
    cap.poses[1]["body_pose"] = np.zeros(63)
    with pytest.raises(CaptureError, match=r"poses\[1\]\['body_pose'\] has shape \(63,\), expected \[69\]"):
        write("people_snapshot", cap, tmp_path)

