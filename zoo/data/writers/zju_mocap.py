"""Write a capture as a ZJU-MoCap subject (raw §1A, 313/315-style raw §1A, or refined §1B).

Layouts (``layout=``):

* ``"raw"`` -> ``<out>/CoreView_<n>/``: ``annots.npy`` (``np.save`` of ``{'cams': {K, D, R, T (mm)},
  'ims': [{'ims': [...]}]}``), ``Camera_B{c+1}/{f:06d}.jpg``, ``mask_cihp/Camera_B{c+1}/{f:06d}.png``
  (0/255), ``new_params/{f}.npy`` (and ``params/{f}.npy`` with ``also_params=True``).
* ``"raw_313"`` -> ``<out>/CoreView_<n>/``: camera folders ``Camera ({c+1})`` and basenames
  ``CoreView_<n>_Camera_({c+1})_{f:04d}_2019-08-23_16-08-50.592.jpg`` whose 5th token is the
  1-based frame number (frame ids must be 1..9999); camera lists stored as nested lists.
* ``"refined"`` -> ``<out>/my_<n>/``: ``images/{c:02d}/{f:06d}.jpg``, ``mask/{c:02d}/{f:06d}.png``,
  ``smpl_params/{f}.npy``.

Parameters are written in the EasyMocap convention: ``poses (1,72)`` with ``poses[:, :3] = 0``,
``Rh = global_orient``, ``Th = transl − (R(Rh) − I)·J0`` (J0 = ``capture.rest_pelvis``),
``shapes (1,S)``. ``D`` is written as zeros (the images are already undistorted). Images are
JPEG (quality ``jpeg_quality``, 4:4:4), so they round-trip approximately; masks are lossless.
Vertex files (``vertices/``, ``new_vertices/``) are not written: no zoo loader reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zoo.data.writers import (
    Capture,
    CaptureError,
    as_float,
    check_static_cameras,
    rodrigues,
    staged_subject_dir,
    subject_number,
    write_jpg,
    write_npy,
    write_png,
)

__all__ = ["write"]

_TIMESTAMP = "2019-08-23_16-08-50.592"


def _image_rel(layout: str, subject: str, camera_id: int, frame_id: int) -> str:
    if layout == "raw":
        return f"Camera_B{camera_id + 1}/{frame_id:06d}.jpg"
    if layout == "raw_313":
        n = camera_id + 1
        return f"Camera ({n})/CoreView_{subject}_Camera_({n})_{frame_id:04d}_{_TIMESTAMP}.jpg"
    return f"images/{camera_id:02d}/{frame_id:06d}.jpg"


def write(
    capture: Capture,
    out_dir: Path,
    *,
    subject_index: int | str | None = None,
    overwrite: bool = False,
    layout: str = "raw",
    also_params: bool = False,
    mask_dirs: Sequence[str] = ("mask_cihp",),
    jpeg_quality: int = 95,
) -> Path:
    """Write ``capture`` as one ZJU-MoCap subject.

    Args:
        capture: the subject (SMPL; every camera in every frame; static cameras).
        out_dir: the dataset folder.
        subject_index: subject number for the folder name (default: ``capture.subject`` without
            a ``CoreView_`` / ``my_`` prefix).
        overwrite: replace an existing non-empty subject folder.
        layout: ``"raw"``, ``"raw_313"`` or ``"refined"``.
        also_params: raw layouts: also write the old ``params/`` folder (same values).
        mask_dirs: raw layouts: mask folders to write (``"mask_cihp"`` and/or ``"mask"``).
        jpeg_quality: JPEG quality of the images.

    Returns:
        The subject folder.

    Raises:
        CaptureError: not SMPL, a frame missing a camera, moving cameras, frame ids out of range.
    """
    if layout not in ("raw", "raw_313", "refined"):
        raise CaptureError(f"layout must be 'raw', 'raw_313' or 'refined', got {layout!r}")
    if capture.model_type != "smpl":
        raise CaptureError(f"ZJU-MoCap stores SMPL parameters; got a {capture.model_type} capture")
    if any(d not in ("mask_cihp", "mask") for d in mask_dirs) or not mask_dirs:
        raise CaptureError(f"mask_dirs must be a non-empty subset of ('mask_cihp', 'mask'), got {mask_dirs!r}")
    per_camera = check_static_cameras(capture, "ZJU-MoCap")
    cam_ids = sorted(per_camera)
    frame_ids = capture.frame_ids
    by_key = {(int(f.frame_id), int(f.camera_id)): f for f in capture.frames}
    for fid in frame_ids:
        missing = [c for c in cam_ids if (fid, c) not in by_key]
        if missing:
            raise CaptureError(f"ZJU-MoCap needs every camera in every frame: frame {fid} lacks cameras {missing}")
    if min(cam_ids) < 0 or (layout == "refined" and max(cam_ids) > 99):
        raise CaptureError(f"camera ids {cam_ids} cannot be written as {layout} camera folders")
    if layout == "raw_313" and (min(frame_ids) < 1 or max(frame_ids) > 9999):
        raise CaptureError(
            f"the 313/315 layout stores 1-based 4-digit frame numbers; got frame ids {frame_ids[0]}..{frame_ids[-1]}"
        )
    if min(frame_ids) < 0:
        raise CaptureError(f"frame ids must be >= 0, got {frame_ids[0]}")

    number = subject_number(capture, subject_index, ("CoreView_", "my_"))
    folder = f"my_{number}" if layout == "refined" else f"CoreView_{number}"
    J0 = as_float(capture.rest_pelvis)
    betas = as_float(capture.betas)

    cams: dict[str, list[Any]] = {"K": [], "D": [], "R": [], "T": []}
    for c in cam_ids:
        fr = per_camera[c]
        w2c = np.asarray(fr.w2c, dtype=np.float64)
        K, R, T, D = np.asarray(fr.K, np.float64), w2c[:3, :3], w2c[:3, 3:4] * 1000.0, np.zeros((5, 1))
        if layout == "raw_313":
            K, R, T, D = K.tolist(), R.tolist(), T.tolist(), D.tolist()
        cams["K"].append(K)
        cams["R"].append(R)
        cams["T"].append(T)
        cams["D"].append(D)

    with staged_subject_dir(out_dir, folder, overwrite) as root:
        ims = []
        for fid in frame_ids:
            rels = [_image_rel(layout, number, c, fid) for c in cam_ids]
            ims.append({"ims": rels})
            for c, rel in zip(cam_ids, rels):
                fr = by_key[(fid, c)]
                write_jpg(root / rel, fr.image, jpeg_quality)
                mask = (np.asarray(fr.mask) > 0).astype(np.uint8) * 255
                if layout == "refined":
                    write_png(root / "mask" / Path(rel).relative_to("images").with_suffix(".png"), mask)
                else:
                    for mdir in mask_dirs:
                        write_png(root / mdir / Path(rel).with_suffix(".png"), mask)
            pose = capture.poses[fid]
            Rh = as_float(pose["global_orient"])
            transl = as_float(pose["transl"])
            params = {
                "poses": np.concatenate([np.zeros(3), as_float(pose["body_pose"])])[None],
                "Rh": Rh[None],
                "Th": (transl - (rodrigues(Rh) - np.eye(3)) @ J0)[None],
                "shapes": betas[None],
            }
            if layout == "refined":
                write_npy(root / "smpl_params" / f"{fid}.npy", params)
            else:
                write_npy(root / "new_params" / f"{fid}.npy", params)
                if also_params:
                    write_npy(root / "params" / f"{fid}.npy", params)
        write_npy(root / "annots.npy", {"cams": cams, "ims": ims})
    return out_dir / folder
