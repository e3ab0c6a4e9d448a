"""Write a capture as a NeuMan sequence (DATASETS.md §3A–§3C).

Layout ``<out>/<seq>/``:

* ``images/{f:05d}.png`` (one image per frame; NeuMan is monocular with a moving camera);
* ``sparse/cameras.txt`` (one ``PINHOLE`` camera per ``camera_id``, COLMAP id = camera_id + 1),
  ``sparse/images.txt`` (w2c quaternion w, x, y, z with w >= 0 and T; empty 2D-point lines),
  ``sparse/points3D.txt`` (no points), all with COLMAP's exact header lines;
* ``segmentations/{f:05d}.png`` inverted (0 = human, 255 = background), or ``.png.npy`` /
  3-channel with ``segmentation_format=``;
* ``smpl_output_optimized.pkl``: ``joblib.dump({1: {'pose': [...], 'betas': [...]}})``, lists
  indexed by frame number (frames without an image get zeros), ``pose[:3]`` in the "ROMP" frame;
* ``alignments.npy``: ``{name: A (4,3)}`` with ``[v, 1] @ A = s·R·v + t``;
* ``train_split.txt``, ``val_split.txt``, ``test_split.txt``: from the split hints (``train``,
  ``val``, ``test_pose``), or ml-neuman's rule (§3C) when there are no hints;
* ``mono_depth/{f:05d}.png``: 16-bit depth × 10000, when the frames have depth.

Body conversion (inverse of the parser): the alignment rotation R is ``alignment_rotation``
(axis-angle) and the scale s is the pose's ``"scale"`` (default 1). With standard parameters
``(go', transl')`` meaning ``v_world = s·SMPL(go', θ, 0) + transl'``, the stored orientation is
``go = Rᵀ ∘ go'`` and ``t = transl' + s·(I − R)·J0`` (J0 = ``capture.rest_pelvis``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.data.writers import (
    Capture,
    CaptureError,
    as_float,
    encode,
    rodrigues,
    rotation_to_axis_angle,
    rotation_to_quaternion,
    staged_subject_dir,
    write_bytes,
    write_npy,
    write_png,
    write_text,
)

__all__ = ["write", "split_rule"]

_CAMERAS_HEADER = (
    "# Camera list with one line of data per camera:\n"
    "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
    "# Number of cameras: {n}\n"
)
_IMAGES_HEADER = (
    "# Image list with two lines of data per image:\n"
    "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
    "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
    "# Number of images: {n}, mean observations per image: 0\n"
)
_POINTS_HEADER = (
    "# 3D point list with one line of data per point:\n"
    "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
    "# Number of points: 0, mean track length: 0\n"
)


def split_rule(num: int) -> dict[str, list[int]]:
    """ml-neuman's ``create_split_files`` over ``num`` sorted captures (§3C); N < 5: all train."""
    num_val = num // 5
    if num_val == 0:
        return {"train": list(range(num)), "val": [], "test": []}
    length = int((1 / num_val) * num)
    offset = length // 2
    val_all = list(range(num))[offset::length]
    chosen = set(val_all)
    return {
        "train": [i for i in range(num) if i not in chosen],
        "test": val_all[: len(val_all) // 2],
        "val": val_all[len(val_all) // 2 :],
    }


def _fmt(x: float) -> str:
    return repr(float(x))


def write(
    capture: Capture,
    out_dir: Path,
    *,
    subject_index: int | str | None = None,
    overwrite: bool = False,
    alignment_rotation: Sequence[float] = (0.3, -0.2, 0.5),
    segmentation_format: str = "png",
    split_files: bool = True,
) -> Path:
    """Write ``capture`` as one NeuMan sequence.

    Args:
        capture: the subject (SMPL, one frame per frame id, one K and size per camera id).
        out_dir: the dataset folder.
        subject_index: folder name override (default ``capture.subject``).
        overwrite: replace an existing non-empty sequence folder.
        alignment_rotation: axis-angle of the SMPL -> world rotation stored in the alignments.
        segmentation_format: ``"png"`` (grayscale), ``"png3"`` (3-channel) or ``"npy"``
            (``<name>.npy``, which the loader checks first).
        split_files: write the three split files.

    Returns:
        The sequence folder.

    Raises:
        CaptureError: not SMPL, two frames with one frame id, skewed K, frame ids over 99999,
            depth beyond the 16-bit range, depth on only some frames.
    """
    if capture.model_type != "smpl":
        raise CaptureError(f"NeuMan stores SMPL parameters; got a {capture.model_type} capture")
    if segmentation_format not in ("png", "png3", "npy"):
        raise CaptureError(f"segmentation_format must be 'png', 'png3' or 'npy', got {segmentation_format!r}")
    frames = sorted(capture.frames, key=lambda f: int(f.frame_id))
    ids = [int(f.frame_id) for f in frames]
    if len(set(ids)) != len(ids):
        raise CaptureError("NeuMan is monocular: each frame id must have exactly one image")
    if ids[0] < 0 or ids[-1] > 99999:
        raise CaptureError(f"NeuMan names frames with 5 digits; got frame ids {ids[0]}..{ids[-1]}")
    has_depth = [f.depth is not None for f in frames]
    if any(has_depth) and not all(has_depth):
        raise CaptureError("NeuMan mono_depth needs depth on every frame or on none")
    cameras: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
    for fr in frames:
        K = np.asarray(fr.K, dtype=np.float64)
        if int(fr.camera_id) < 0:
            raise CaptureError(f"frame {fr.frame_id}: camera ids must be >= 0, got {fr.camera_id}")
        if abs(K[0, 1]) > 1e-12:
            raise CaptureError(f"frame {fr.frame_id}: COLMAP PINHOLE cannot store a skewed K")
        ref = cameras.setdefault(int(fr.camera_id), (K, fr.image.shape[:2]))
        if not np.allclose(ref[0], K, atol=1e-9) or ref[1] != fr.image.shape[:2]:
            raise CaptureError(f"frame {fr.frame_id}: camera {fr.camera_id} changes K or image size between frames")

    R = rodrigues(alignment_rotation)
    J0 = as_float(capture.rest_pelvis)
    names = [f"{fid:05d}.png" for fid in ids]
    poses_list = [np.zeros(72, dtype=np.float32) for _ in range(ids[-1] + 1)]
    betas_list = [np.zeros_like(as_float(capture.betas), dtype=np.float32) for _ in range(ids[-1] + 1)]
    alignments: dict[str, np.ndarray] = {}
    for fid, name in zip(ids, names):
        pose = capture.poses[fid]
        s = float(as_float(pose.get("scale", [1.0]))[0])
        go = rotation_to_axis_angle(R.T @ rodrigues(pose["global_orient"]))
        t = as_float(pose["transl"]) + s * (np.eye(3) - R) @ J0
        poses_list[fid] = np.concatenate([go, as_float(pose["body_pose"])]).astype(np.float32)
        betas_list[fid] = as_float(capture.betas).astype(np.float32)
        alignments[name] = np.concatenate([s * R.T, t[None]], axis=0)

    if split_files:
        position = {fid: i for i, fid in enumerate(ids)}
        hinted = {k: capture.splits.get(h, []) for k, h in (("train", "train"), ("val", "val"), ("test", "test_pose"))}
        if any(hinted.values()):
            split_idx = {k: sorted(position[int(i)] for i in v) for k, v in hinted.items()}
        else:
            split_idx = split_rule(len(ids))

    folder = str(subject_index) if subject_index is not None else capture.subject
    with staged_subject_dir(out_dir, folder, overwrite) as root:
        cam_lines = []
        for cid in sorted(cameras):
            K, (h, w) = cameras[cid]
            cam_lines.append(
                f"{cid + 1} PINHOLE {w} {h} {_fmt(K[0, 0])} {_fmt(K[1, 1])} {_fmt(K[0, 2])} {_fmt(K[1, 2])}\n"
            )
        write_text(root / "sparse" / "cameras.txt", _CAMERAS_HEADER.format(n=len(cameras)) + "".join(cam_lines))
        img_lines = []
        for n, (fr, name) in enumerate(zip(frames, names), start=1):
            w2c = np.asarray(fr.w2c, dtype=np.float64)
            q = rotation_to_quaternion(w2c[:3, :3])
            vals = " ".join(_fmt(v) for v in (*q, *w2c[:3, 3]))
            img_lines.append(f"{n} {vals} {int(fr.camera_id) + 1} {name}\n\n")
        write_text(root / "sparse" / "images.txt", _IMAGES_HEADER.format(n=len(frames)) + "".join(img_lines))
        write_text(root / "sparse" / "points3D.txt", _POINTS_HEADER)

        for fr, name in zip(frames, names):
            write_png(root / "images" / name, fr.image)
            seg = np.where(np.asarray(fr.mask) > 0, 0, 255).astype(np.uint8)
            if segmentation_format == "npy":
                write_npy(root / "segmentations" / f"{name}.npy", seg)
            elif segmentation_format == "png3":
                write_png(root / "segmentations" / name, np.repeat(seg[..., None], 3, axis=2))
            else:
                write_png(root / "segmentations" / name, seg)
            if fr.depth is not None:
                depth = np.asarray(fr.depth, dtype=np.float64) * 10000.0
                if depth.min() < 0 or depth.max() > 65535:
                    raise CaptureError(f"frame {fr.frame_id}: mono depth must lie in [0, 6.5535] to fit 16-bit PNG")
                write_png(root / "mono_depth" / name, np.round(depth).astype(np.uint16))

        import joblib  # the release writes this file with joblib (§3B); only this writer needs it

        smpl = {1: {"pose": poses_list, "betas": betas_list}}
        write_bytes(root / "smpl_output_optimized.pkl", encode(lambda fh: joblib.dump(smpl, fh)))
        write_npy(root / "alignments.npy", alignments)
        if split_files:
            for key in ("train", "val", "test"):
                write_text(root / f"{key}_split.txt", "".join(f"{names[i]}\n" for i in split_idx[key]))
    return out_dir / folder
