"""Pose files (zoo.data.pose_files): the format round-trips and rejects bad input by name; HMR 2.0
outputs written in its real layout convert to world-frame body parameters (round trip against the
poses they were made from, and HMR 2.0's own crop projection as an independent oracle); a parsed
sequence takes a pose file's poses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.core.body import BodyModel
from zoo.data.body_files import axis_angle_to_matrix, rest_joints
from zoo.data.pose_files import (HMR2_FOCAL_LENGTH, HMR2_IMAGE_SIZE, PoseOverrideSequence, convert_hmr2,
                                 hmr2_to_pose_file, load_pose_file, noisy_pose_file, read_hmr2_outputs,
                                 save_pose_file, sequence_poses)
from zoo.data.schema import DatasetError


def _world_poses(T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "global_orient": rng.uniform(-1.0, 1.0, (T, 3)),
        "body_pose": rng.uniform(-0.4, 0.4, (T, 69)),
        "transl": rng.normal(0.0, 0.5, (T, 3)),
        "betas": rng.normal(0.0, 1.0, (T, 10)),
    }


def _camera(seed: int = 0):
    rng = np.random.default_rng(seed + 100)
    w2c = np.eye(4)
    w2c[:3, :3] = axis_angle_to_matrix(rng.uniform(-0.5, 0.5, 3))
    w2c[:3, 3] = (0.2, -0.1, 4.0)
    K = np.array([[600.0, 0.0, 319.5], [0.0, 620.0, 239.5], [0.0, 0.0, 1.0]])
    return K, w2c


def _to_hmr2(poses, K, w2c, body_models, box_size):
    """HMR 2.0 outputs (camera frame, crop camera) that correspond to world-frame poses."""
    T = len(poses["transl"])
    R_wc, t_wc = w2c[:3, :3], w2c[:3, 3]
    go_cam = R_wc @ axis_angle_to_matrix(poses["global_orient"])
    pelvis = np.stack([rest_joints(body_models, b)[0] for b in poses["betas"]])
    t_cam = (pelvis + poses["transl"]) @ R_wc.T + t_wc - pelvis
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # a box around the projected body origin, offset a little (zoo pixel convention)
    centre = np.stack([fx * t_cam[:, 0] / t_cam[:, 2] + cx + 7.0, fy * t_cam[:, 1] / t_cam[:, 2] + cy - 5.0], 1)
    s = 2.0 * fx / (box_size * t_cam[:, 2])
    tx = t_cam[:, 0] - t_cam[:, 2] * (centre[:, 0] - cx) / fx
    ty = (t_cam[:, 1] - t_cam[:, 2] * (centre[:, 1] - cy) / fy) * fy / fx
    pred_cam = np.stack([s, tx, ty], 1)
    return {
        "pred_smpl_params": {
            "global_orient": torch.tensor(go_cam[:, None], dtype=torch.float32),  # [T,1,3,3]
            "body_pose": torch.tensor(axis_angle_to_matrix(poses["body_pose"].reshape(T, 23, 3)), dtype=torch.float32),
            "betas": torch.tensor(poses["betas"], dtype=torch.float32),
        },
        "pred_cam": torch.tensor(pred_cam, dtype=torch.float32),
        "pred_cam_t": torch.tensor(np.stack([tx, ty, 2 * HMR2_FOCAL_LENGTH / (HMR2_IMAGE_SIZE * s)], 1)),
        "box_center": torch.tensor(centre + 0.5, dtype=torch.float32),  # detectron2 pixel coordinates
        "box_size": torch.full((T,), float(box_size)),
        "img_size": torch.tensor([[640.0, 480.0]] * T),
    }


def test_pose_file_round_trip_and_errors(tmp_path):
    p = {k: v.astype(np.float32) for k, v in _world_poses(5).items()}
    ids = np.array([30, 10, 20, 40, 50])
    path = save_pose_file(tmp_path / "poses.npz", ids, p, meta={"source": "test"})
    pf = load_pose_file(path)
    assert pf.frame_ids.tolist() == [10, 20, 30, 40, 50]  # rows sorted with their ids
    assert np.array_equal(pf.frame(30)["body_pose"], p["body_pose"][0])
    assert pf.meta == {"source": "test"} and pf.model_type == "smpl"
    assert np.array_equal(pf.select([20, 10])["transl"], p["transl"][[2, 1]])
    with pytest.raises(KeyError, match="frame id 35"):
        pf.frame(35)
    with pytest.raises(DatasetError, match="'transl' is missing"):
        save_pose_file(tmp_path / "bad.npz", ids, {k: v for k, v in p.items() if k != "transl"})
    with pytest.raises(DatasetError, match="'body_pose' has shape"):
        save_pose_file(tmp_path / "bad.npz", ids, dict(p, body_pose=p["body_pose"][:, :63]))
    with pytest.raises(DatasetError, match="SMPL-X only"):
        save_pose_file(tmp_path / "bad.npz", ids, dict(p, jaw_pose=np.zeros((5, 3))))
    with pytest.raises(DatasetError, match="strictly increasing"):
        save_pose_file(tmp_path / "bad.npz", [1, 1, 2, 3, 4], p)
    assert not (tmp_path / "bad.npz").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError):
        load_pose_file(tmp_path / "missing.npz")


@pytest.mark.parametrize("layout", ["stacked_pt", "per_frame_files", "flat_npz"])
def test_hmr2_outputs_round_trip_to_the_world_poses(layout, tmp_path, body_models_root):
    T = 6
    poses = _world_poses(T)
    K, w2c = _camera()
    out = _to_hmr2(poses, K, w2c, body_models_root, box_size=220.0)
    ids = np.arange(T) * 3 + 100
    if layout == "stacked_pt":
        src = tmp_path / "hmr2.pt"
        torch.save(dict(out, frame_ids=torch.tensor(ids)), src)
    elif layout == "per_frame_files":  # one file per frame, two detections each; ours is the second
        src = tmp_path / "hmr2_frames"
        src.mkdir()
        for t, fid in enumerate(ids):
            other = {k: (v[t:t + 1] * 0.5 if k != "pred_smpl_params" else None) for k, v in out.items()}
            one = {
                "pred_smpl_params": {k: torch.cat([v[t:t + 1] * 0 + v[(t + 1) % T:(t + 1) % T + 1], v[t:t + 1]])
                                     for k, v in out["pred_smpl_params"].items()},
                **{k: torch.cat([other[k], v[t:t + 1]]) for k, v in out.items() if k != "pred_smpl_params"},
            }
            torch.save(one, src / f"frame_{fid:06d}.pt")
    else:
        src = tmp_path / "hmr2.npz"
        flat = {f"pred_smpl_params/{k}": v.numpy() for k, v in out["pred_smpl_params"].items()}
        flat.update({k: v.numpy() for k, v in out.items() if k != "pred_smpl_params"})
        np.savez(src, frame_ids=ids, **flat)
    dest = convert_hmr2(src, tmp_path / "poses.npz", K=K, w2c=w2c, body_models=body_models_root,
                        person=1 if layout == "per_frame_files" else 0)
    pf = load_pose_file(dest)
    assert pf.frame_ids.tolist() == ids.tolist()
    # same rotations (axis-angle is unique up to 2 pi: compare matrices), same translation
    for key in ("global_orient", "body_pose"):
        got = axis_angle_to_matrix(pf.params[key].reshape(T, -1, 3))
        want = axis_angle_to_matrix(poses[key].reshape(T, -1, 3))
        assert np.abs(got - want).max() < 1e-5, key
    assert np.abs(pf.params["transl"] - poses["transl"]).max() < 1e-4
    # and the same posed bodies
    body = BodyModel("smpl", body_models_root)
    a = body({k: torch.tensor(v, dtype=torch.float32) for k, v in pf.params.items()}).vertices
    b = body({k: torch.tensor(v, dtype=torch.float32) for k, v in poses.items()}).vertices
    assert (a - b).abs().max() < 1e-4


def test_hmr2_conversion_reproduces_its_own_crop_projection(body_models_root):
    """Independent oracle: HMR 2.0 projects its camera-frame body X + pred_cam_t with focal 5000 in
    a 256-pixel crop; a full-image pinhole with fx = 5000 * b / 256 centred on the box is the same
    camera, so the converted world body seen through it must land on the same pixels."""
    T = 4
    rng = np.random.default_rng(5)
    go = axis_angle_to_matrix(rng.uniform(-1, 1, (T, 3)))
    bp = axis_angle_to_matrix(rng.uniform(-0.3, 0.3, (T, 23, 3)))
    betas = rng.normal(0, 1, (T, 10))
    s = rng.uniform(0.6, 1.0, T)
    pred_cam = np.stack([s, rng.uniform(-0.1, 0.1, T), rng.uniform(-0.1, 0.1, T)], 1)
    box_center = rng.uniform(200, 400, (T, 2))  # detectron2 coordinates
    box_size = rng.uniform(150, 300, T)
    outputs = {"frame_ids": np.arange(T), "global_orient": go, "body_pose": bp, "betas": betas,
               "pred_cam": pred_cam, "box_center": box_center, "box_size": box_size}
    f = HMR2_FOCAL_LENGTH * box_size / HMR2_IMAGE_SIZE
    K = np.zeros((T, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = f
    K[:, :2, 2] = box_center - 0.5
    K[:, 2, 2] = 1
    _, w2c = _camera(3)
    pf = hmr2_to_pose_file(outputs, K=K, w2c=w2c, body_models=body_models_root)
    body = BodyModel("smpl", body_models_root)
    world = body({k: torch.tensor(v, dtype=torch.float32) for k, v in pf.params.items()}).vertices.double().numpy()
    cam = world @ w2c[:3, :3].T + w2c[:3, 3]
    ours = np.einsum("tij,tvj->tvi", K, cam)
    ours = ours[..., :2] / ours[..., 2:]
    # HMR 2.0's side: SMPL in the camera frame (no transl) + pred_cam_t, projected in the crop
    from zoo.data.body_files import matrix_to_axis_angle
    hmr_params = {"global_orient": torch.tensor(matrix_to_axis_angle(go), dtype=torch.float32),
                  "body_pose": torch.tensor(matrix_to_axis_angle(bp).reshape(T, 69), dtype=torch.float32),
                  "betas": torch.tensor(betas, dtype=torch.float32)}
    X = body(hmr_params).vertices.double().numpy()
    pred_cam_t = np.stack([pred_cam[:, 1], pred_cam[:, 2], 2 * HMR2_FOCAL_LENGTH / (HMR2_IMAGE_SIZE * s)], 1)
    Xc = X + pred_cam_t[:, None]
    crop = HMR2_FOCAL_LENGTH * Xc[..., :2] / Xc[..., 2:]  # crop pixels from the crop centre
    theirs = (box_center - 0.5)[:, None] + crop * (box_size / HMR2_IMAGE_SIZE)[:, None, None]
    assert np.abs(ours - theirs).max() < 1e-2  # pixels (float32 body model)


def test_hmr2_default_camera_is_cam_crop_to_full(body_models_root):
    # 4D-Humans' cam_crop_to_full with its focal 5000 / 256 * max(W, H), worked by hand:
    # f = 15625, b * s = 200 -> tz = 156.25, tx = 2 * (500 - 400) / 200 + 0.05, ty = 2 * (250 - 300) / 200 - 0.1
    eye = np.eye(3)[None]
    outputs = {"frame_ids": np.array([7]), "global_orient": eye, "body_pose": np.repeat(eye, 23, 0)[None],
               "betas": np.zeros((1, 10)), "pred_cam": np.array([[0.8, 0.05, -0.1]]),
               "box_center": np.array([[500.0, 250.0]]), "box_size": np.array([250.0]),
               "img_size": np.array([[800.0, 600.0]])}
    pf = hmr2_to_pose_file(outputs, body_models=body_models_root)  # camera frame = world
    assert pf.params["transl"][0] == pytest.approx([1.05, -0.6, 156.25], rel=1e-6)
    with pytest.raises(DatasetError, match="pred_cam_t_full"):
        hmr2_to_pose_file({k: v for k, v in outputs.items() if k != "box_center"}, body_models=body_models_root)
    with pytest.raises(DatasetError, match="lack"):
        read_hmr2_outputs({"pred_cam": np.zeros((1, 3))})


def test_sequence_takes_the_poses_of_a_pose_file(tiny_subject, body_models_root):
    from zoo.data.datamodule import AvatarDataModule
    from zoo.data.parsers import PARSERS

    seq = PARSERS["zju_mocap"](tiny_subject, body_models=str(body_models_root))
    noisy = noisy_pose_file(seq, {"level": 1.0, "seed": 0})
    train_ids = set(noisy.frame_ids.tolist())
    wrapped = PoseOverrideSequence(seq, noisy, require=train_ids)
    assert wrapped.overridden == sum(int(r.frame_id) in train_ids for r in seq.records) > 0
    dm = AvatarDataModule(wrapped)
    dm.setup("fit")
    for i, (rec, new) in enumerate(zip(seq.records, wrapped.records)):
        fid = int(rec.frame_id)
        if fid in train_ids:
            assert np.allclose(new.body["body_pose"], noisy.frame(fid)["body_pose"])
            assert not np.allclose(new.body["body_pose"], rec.body["body_pose"])
        else:  # held-out poses keep the dataset's bodies
            assert np.array_equal(new.body["body_pose"], rec.body["body_pose"])
    for i in (seq.splits["train"][0], seq.splits["test_pose"][0]):  # decoded frames carry them
        a, b = seq[i], wrapped[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["K"], b["K"])
        assert np.allclose(b["body"]["body_pose"].numpy(), wrapped.records[i].body["body_pose"])
    batch = next(iter(dm.train_dataloader()))
    assert np.allclose(batch["body"]["body_pose"][0].numpy(), noisy.frame(int(batch["frame_id"][0]))["body_pose"])
    clean = sequence_poses(seq)
    assert clean.frame_ids.tolist() == noisy.frame_ids.tolist()
    with pytest.raises(DatasetError, match="lacks frame ids"):
        PoseOverrideSequence(seq, noisy, require=[10 ** 6])
