"""Write a capture as a PeopleSnapshot subject in the InstantAvatar form (DATASETS.md §2B).

Layout ``<out>/<subject>/``: ``cameras.npz`` (intrinsic (3,3), extrinsic (4,4) as given — the
real files hold a near-identity extrinsic —, height, width), ``images/image_{f:04d}.png``,
``masks/mask_{f:04d}.npy`` (uint8 {0,1}), ``poses.npz`` (betas (S,), thetas (N,72), transl (N,3),
float32, rows in frame order) and, for each split hint (``train``, ``val``, ``test_pose`` ->
``test``), ``poses/anim_nerf_{split}.npz`` (betas (1,S), global_orient (M,3), body_pose (M,69),
transl (M,3)) holding that split's frames in order.

The InstantAvatar loader selects split frames with ``[start:end+1:step]`` slices over the sorted
images, so each hinted split must be an arithmetic progression of frame positions; the parser
reads it back with ``frame_ranges=`` (or, for subjects outside the InstantAvatar table, the
default rule of ``zoo.data.parsers.people_snapshot.default_frame_ranges``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data.writers import (
    Capture,
    CaptureError,
    as_float,
    check_static_cameras,
    staged_subject_dir,
    write_npy,
    write_npz,
    write_png,
)

__all__ = ["write", "split_range"]


def split_range(positions: list[int]) -> tuple[int, int, int]:
    """``(start, end_inclusive, step)`` of an arithmetic progression of positions.

    Raises:
        CaptureError: if the positions are not evenly spaced and increasing.
    """
    if not positions:
        raise CaptureError("an empty split has no frame range")
    step = positions[1] - positions[0] if len(positions) > 1 else 1
    if step < 1 or any(b - a != step for a, b in zip(positions, positions[1:])):
        raise CaptureError(
            f"PeopleSnapshot splits are [start:end+1:step] slices; frame positions {positions[:6]}... are not evenly spaced"
        )
    return positions[0], positions[-1], step


def write(
    capture: Capture,
    out_dir: Path,
    *,
    subject_index: int | str | None = None,
    overwrite: bool = False,
    anim_nerf: bool = True,
) -> Path:
    """Write ``capture`` as one PeopleSnapshot subject (InstantAvatar form).

    Args:
        capture: the subject (SMPL, exactly one static camera, frame ids 0..9999).
        out_dir: the dataset folder.
        subject_index: folder name override (default ``capture.subject``).
        overwrite: replace an existing non-empty subject folder.
        anim_nerf: write ``poses/anim_nerf_{split}.npz`` for the hinted splits.

    Returns:
        The subject folder.

    Raises:
        CaptureError: not SMPL, more than one camera, frame ids out of range, uneven split hints.
    """
    if capture.model_type != "smpl":
        raise CaptureError(f"PeopleSnapshot stores SMPL parameters; got a {capture.model_type} capture")
    per_camera = check_static_cameras(capture, "PeopleSnapshot")
    if len(per_camera) != 1:
        raise CaptureError(f"PeopleSnapshot is monocular: expected one camera, got camera ids {sorted(per_camera)}")
    frame_ids = capture.frame_ids
    if frame_ids[0] < 0 or frame_ids[-1] > 9999:
        raise CaptureError(f"PeopleSnapshot names frames with 4 digits; got frame ids {frame_ids[0]}..{frame_ids[-1]}")
    cam = next(iter(per_camera.values()))
    height, width = cam.image.shape[:2]
    by_id = {int(f.frame_id): f for f in capture.frames}
    position = {fid: i for i, fid in enumerate(frame_ids)}
    betas = as_float(capture.betas).astype(np.float32)

    def rows(ids: list[int]) -> dict[str, np.ndarray]:
        go = np.stack([as_float(capture.poses[i]["global_orient"]) for i in ids]).astype(np.float32)
        bp = np.stack([as_float(capture.poses[i]["body_pose"]) for i in ids]).astype(np.float32)
        tr = np.stack([as_float(capture.poses[i]["transl"]) for i in ids]).astype(np.float32)
        return {"global_orient": go, "body_pose": bp, "transl": tr}

    anim: dict[str, dict[str, np.ndarray]] = {}
    if anim_nerf:
        for hint, name in (("train", "train"), ("val", "val"), ("test_pose", "test")):
            ids = sorted(int(i) for i in capture.splits.get(hint, []))
            if ids:
                split_range([position[i] for i in ids])
                anim[name] = {"betas": betas[None], **rows(ids)}

    folder = str(subject_index) if subject_index is not None else capture.subject
    with staged_subject_dir(out_dir, folder, overwrite) as root:
        write_npz(
            root / "cameras.npz",
            intrinsic=np.asarray(cam.K, dtype=np.float64),
            extrinsic=np.asarray(cam.w2c, dtype=np.float64),
            height=np.int64(height),
            width=np.int64(width),
        )
        for fid in frame_ids:
            fr = by_id[fid]
            write_png(root / "images" / f"image_{fid:04d}.png", fr.image)
            write_npy(root / "masks" / f"mask_{fid:04d}.npy", (np.asarray(fr.mask) > 0).astype(np.uint8))
        all_rows = rows(frame_ids)
        write_npz(
            root / "poses.npz",
            betas=betas,
            thetas=np.concatenate([all_rows["global_orient"], all_rows["body_pose"]], axis=1),
            transl=all_rows["transl"],
        )
        for name, arrays in anim.items():
            write_npz(root / "poses" / f"anim_nerf_{name}.npz", **arrays)
    return out_dir / folder
