"""Writers: the inverse of the parsers, writing a :class:`Capture` in a dataset's real layout.

Usage::

    from zoo.data.writers import Capture, CaptureFrame, write
    path = write("zju_mocap", capture, "data/synth_zju", subject_index=377)   # -> data/synth_zju/CoreView_377

Every writer:

* validates the capture for its format (e.g. ZJU-MoCap needs every camera in every frame,
  PeopleSnapshot exactly one camera) and raises :class:`CaptureError` naming what is wrong;
* puts one subject in one folder the way the dataset arranges subjects (ZJU ``CoreView_XXX`` /
  ``my_XXX``, PeopleSnapshot ``<subject>``, NeuMan ``<seq>``, X-Humans ``<5-digit id>``);
* refuses to replace a non-empty subject folder unless ``overwrite=True``;
* writes each file atomically (temporary name + rename) into a staging folder that is renamed
  into place only when the whole subject is written, so a failure never leaves a half-written
  subject behind.

Body parameters in a capture are in the standard SMPL / SMPL-X convention (``global_orient``
rotates about the pelvis, ``transl`` added last); writers convert to each dataset's own
convention (ZJU-MoCap ``Rh/Th``, NeuMan alignments) with ``rest_pelvis``.

This package imports numpy, PIL, tifffile and pickle only (NeuMan's writer also joblib, to write
``smpl_output_optimized.pkl`` exactly as the release does).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

__all__ = [
    "Capture",
    "CaptureFrame",
    "CaptureError",
    "FORMATS",
    "write",
]

#: Writer module by format name (the parser of the same name reads what it writes).
FORMATS: dict[str, str] = {
    "zju_mocap": "zoo.data.writers.zju_mocap",
    "people_snapshot": "zoo.data.writers.people_snapshot",
    "neuman": "zoo.data.writers.neuman",
    "x_humans": "zoo.data.writers.x_humans",
}

_BODY_DIMS = {
    "smpl": {"global_orient": 3, "body_pose": 69, "transl": 3},
    "smplx": {
        "global_orient": 3, "body_pose": 63, "transl": 3, "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3,
        "left_hand_pose": 45, "right_hand_pose": 45, "expression": None,
    },
}
_SPLIT_HINTS = ("train", "val", "test_view", "test_pose")


class CaptureError(ValueError):
    """A capture that a writer cannot express in its format (the message says what and where)."""


@dataclass
class CaptureFrame:
    """One image of a capture.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        mask: ``[H, W]`` uint8 in {0, 1}, 1 = person.
        K: ``[3, 3]`` pixel-space intrinsics.
        w2c: ``[4, 4]`` world-to-camera, OpenCV, metres.
        camera_id: one label per physical camera (0-based).
        frame_id: the time step (a key of ``Capture.poses``).
        depth: ``[H, W]`` float32 metres along the camera z axis (0 = background) or None.
    """

    image: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    w2c: np.ndarray
    camera_id: int
    frame_id: int
    depth: np.ndarray | None = None


@dataclass
class Capture:
    """A subject to write: body, frames and split hints, in the zoo's conventions.

    Attributes:
        subject: subject / sequence name (``"377"``, ``"male-3-casual"``, ``"seattle"``, ``"00034"``).
        model_type: ``"smpl"`` or ``"smplx"``.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        betas: ``[S]`` shape coefficients of the subject.
        rest_pelvis: ``[3]`` pelvis J0 of the shaped zero-pose body
            (``zoo.data.body_files.rest_joints(...)[0]``), for the ZJU / NeuMan conversions.
        poses: ``{frame_id: {"global_orient" [3], "body_pose" [69 | 63], "transl" [3], ...}}``,
            standard convention, plus the SMPL-X keys for ``"smplx"``; an optional ``"scale"``
            ``[1]`` (NeuMan only): the body with ``transl = 0`` is scaled by it, then translated.
        frames: the images.
        splits: hints ``{"train": [frame_id, ...], "test_pose": [...], "val": [...]}`` used by
            formats with a native way to encode splits (NeuMan split files, X-Humans train/test
            takes, PeopleSnapshot anim_nerf files).
    """

    subject: str
    model_type: str
    gender: str
    betas: np.ndarray
    rest_pelvis: np.ndarray
    poses: dict[int, dict[str, np.ndarray]]
    frames: list[CaptureFrame]
    splits: dict[str, list[int]] = field(default_factory=dict)

    @property
    def frame_ids(self) -> list[int]:
        """Sorted distinct frame ids of the frames."""
        return sorted({int(f.frame_id) for f in self.frames})

    @property
    def camera_ids(self) -> list[int]:
        """Sorted distinct camera ids of the frames."""
        return sorted({int(f.camera_id) for f in self.frames})

    def validate(self) -> None:
        """Check shapes, dtypes and cross references (format-independent).

        Raises:
            CaptureError: naming the frame / key and what was expected.
        """
        if self.model_type not in _BODY_DIMS:
            raise CaptureError(f"model_type must be 'smpl' or 'smplx', got {self.model_type!r}")
        if self.gender not in ("neutral", "male", "female"):
            raise CaptureError(f"gender must be 'neutral', 'male' or 'female', got {self.gender!r}")
        if np.asarray(self.betas).ndim != 1:
            raise CaptureError(f"betas must be [S], got shape {np.shape(self.betas)}")
        if np.shape(self.rest_pelvis) != (3,):
            raise CaptureError(f"rest_pelvis must be [3], got shape {np.shape(self.rest_pelvis)}")
        if not self.frames:
            raise CaptureError(f"capture {self.subject!r} has no frames")
        dims = _BODY_DIMS[self.model_type]
        for fid, pose in self.poses.items():
            for key, dim in dims.items():
                if key not in pose:
                    raise CaptureError(f"poses[{fid}] is missing '{key}' for {self.model_type}")
                shape = np.shape(pose[key])
                if len(shape) != 1 or (dim is not None and shape[0] != dim):
                    raise CaptureError(f"poses[{fid}]['{key}'] has shape {shape}, expected [{dim or 'E'}]")
            if "scale" in pose and (np.size(pose["scale"]) != 1 or float(np.ravel(pose["scale"])[0]) <= 0):
                raise CaptureError(f"poses[{fid}]['scale'] must be one positive value, got {pose['scale']!r}")
        seen: set[tuple[int, int]] = set()
        for n, fr in enumerate(self.frames):
            where = f"frame {n} (frame_id {fr.frame_id}, camera_id {fr.camera_id})"
            img = np.asarray(fr.image)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise CaptureError(f"{where}: image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
            mask = np.asarray(fr.mask)
            if mask.shape != img.shape[:2]:
                raise CaptureError(f"{where}: mask has shape {mask.shape}, expected {img.shape[:2]}")
            if not np.isin(mask, (0, 1)).all():
                raise CaptureError(f"{where}: mask values must be 0 or 1")
            if fr.depth is not None and np.shape(fr.depth) != img.shape[:2]:
                raise CaptureError(f"{where}: depth has shape {np.shape(fr.depth)}, expected {img.shape[:2]}")
            if np.shape(fr.K) != (3, 3) or np.shape(fr.w2c) != (4, 4):
                raise CaptureError(f"{where}: K must be [3, 3] and w2c [4, 4], got {np.shape(fr.K)}, {np.shape(fr.w2c)}")
            R = np.asarray(fr.w2c, dtype=np.float64)[:3, :3]
            if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
                raise CaptureError(f"{where}: w2c[:3, :3] is not a rotation")
            if int(fr.frame_id) not in self.poses:
                raise CaptureError(f"{where}: no body parameters in poses for frame_id {fr.frame_id}")
            key = (int(fr.frame_id), int(fr.camera_id))
            if key in seen:
                raise CaptureError(f"{where}: frame_id / camera_id pair appears twice")
            seen.add(key)
        known = set(self.frame_ids)
        for name, ids in self.splits.items():
            if name not in _SPLIT_HINTS:
                raise CaptureError(f"unknown split hint {name!r}; expected some of {list(_SPLIT_HINTS)}")
            missing = sorted(set(int(i) for i in ids) - known)
            if missing:
                raise CaptureError(f"split hint {name!r} names frame ids {missing[:5]} that have no frames")


def write(
    format: str,
    capture: Capture,
    out_dir: str | os.PathLike,
    subject_index: int | str | None = None,
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write ``capture`` under ``out_dir`` in the layout of ``format``.

    Args:
        format: ``"zju_mocap"``, ``"people_snapshot"``, ``"neuman"`` or ``"x_humans"``.
        capture: the subject to write.
        out_dir: the dataset folder; the subject gets its own folder inside it.
        subject_index: number / name used for the subject folder where the dataset numbers
            subjects (ZJU ``CoreView_<index>``, X-Humans ``<index:05d>``); default: from
            ``capture.subject``.
        overwrite: replace an existing non-empty subject folder.
        **options: format-specific options (see each writer module).

    Returns:
        The subject folder.

    Raises:
        KeyError: unknown format.
        CaptureError: the capture cannot be expressed in the format.
        FileExistsError: the subject folder exists, is not empty and ``overwrite`` is False.
    """
    if format not in FORMATS:
        raise KeyError(f"unknown dataset format {format!r}; known formats: {sorted(FORMATS)}")
    capture.validate()
    module = importlib.import_module(FORMATS[format])
    return module.write(capture, Path(out_dir), subject_index=subject_index, overwrite=overwrite, **options)


# --------------------------------------------------------------------------------------------
# Shared helpers for the format writers


@contextlib.contextmanager
def staged_subject_dir(out_dir: Path, name: str, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder that replaces ``out_dir / name`` when the block succeeds.

    Args:
        out_dir: the dataset folder (created if needed).
        name: the subject folder name.
        overwrite: allow replacing a non-empty existing subject folder.

    Raises:
        FileExistsError: the target exists, is not empty and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    target = out_dir / name
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target}: subject folder exists and is not empty; pass overwrite=True to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = out_dir / f".{name}.partial-{token}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.is_dir():
        backup = out_dir / f".{name}.old-{token}"
        os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, target)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def encode(writer: Any) -> bytes:
    """Run ``writer(file_handle)`` on an in-memory buffer and return the bytes."""
    buf = io.BytesIO()
    writer(buf)
    return buf.getvalue()


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 ``[H, W]`` / ``[H, W, 3]`` or uint16 ``[H, W]`` array as PNG."""
    write_bytes(path, encode(lambda fh: Image.fromarray(np.ascontiguousarray(array)).save(fh, format="PNG")))


def write_jpg(path: Path, array: np.ndarray, quality: int = 95) -> None:
    """Write a uint8 ``[H, W, 3]`` array as JPEG (4:4:4, given quality)."""
    img = Image.fromarray(np.ascontiguousarray(array))
    write_bytes(path, encode(lambda fh: img.save(fh, format="JPEG", quality=int(quality), subsampling=0)))


def write_npy(path: Path, obj: Any) -> None:
    """``np.save`` an array or a pickled object (dicts, as the datasets do)."""
    write_bytes(path, encode(lambda fh: np.save(fh, obj, allow_pickle=True)))


def write_npz(path: Path, **arrays: Any) -> None:
    """``np.savez`` the given arrays."""
    write_bytes(path, encode(lambda fh: np.savez(fh, **arrays)))


def write_pickle(path: Path, obj: Any, protocol: int = 2) -> None:
    """Pickle ``obj`` (protocol 2 by default: readable with ``encoding='latin1'`` like the releases)."""
    write_bytes(path, pickle.dumps(obj, protocol=protocol))


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def rodrigues(axis_angle: Any) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` of a rotation vector ``[3]``."""
    aa = np.asarray(axis_angle, dtype=np.float64).reshape(3)
    theta = float(np.linalg.norm(aa))
    k = np.array([[0.0, -aa[2], aa[1]], [aa[2], 0.0, -aa[0]], [-aa[1], aa[0], 0.0]])
    if theta < 1e-12:
        return np.eye(3) + k
    k /= theta
    return np.eye(3) + np.sin(theta) * k + (1.0 - np.cos(theta)) * (k @ k)


def rotation_to_axis_angle(R: Any) -> np.ndarray:
    """Rotation vector ``[3]`` (angle in [0, pi]) of a rotation matrix ``[3, 3]``."""
    q = rotation_to_quaternion(R)
    s = float(np.linalg.norm(q[1:]))
    if s < 1e-12:
        return 2.0 * q[1:]
    return q[1:] * (2.0 * np.arctan2(s, q[0]) / s)


def rotation_to_quaternion(R: Any) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a rotation matrix ``[3, 3]``."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2.0
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def subject_number(capture: Capture, subject_index: int | str | None, prefixes: tuple[str, ...] = ()) -> str:
    """The subject label used in folder names: ``subject_index`` or ``capture.subject`` minus a prefix."""
    if subject_index is not None:
        return str(subject_index)
    name = capture.subject
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def check_static_cameras(capture: Capture, what: str) -> dict[int, CaptureFrame]:
    """Check that each camera_id has one K, one w2c and one image size; return a frame per camera.

    Raises:
        CaptureError: if a camera moves or changes size between frames.
    """
    first: dict[int, CaptureFrame] = {}
    for fr in capture.frames:
        ref = first.setdefault(int(fr.camera_id), fr)
        if ref is fr:
            continue
        if not (np.allclose(ref.K, fr.K, atol=1e-9) and np.allclose(ref.w2c, fr.w2c, atol=1e-9)):
            raise CaptureError(
                f"{what} cameras are static: camera {fr.camera_id} has a different K or w2c in frame {fr.frame_id} "
                f"than in frame {ref.frame_id}"
            )
        if ref.image.shape != fr.image.shape:
            raise CaptureError(
                f"{what}: camera {fr.camera_id} has image size {fr.image.shape[:2]} in frame {fr.frame_id}, "
                f"{ref.image.shape[:2]} in frame {ref.frame_id}"
            )
    return first


def split_of(capture: Capture, frame_id: int) -> str | None:
    """The hinted split of a frame id (``test_pose`` wins over ``val`` over ``train``), or None."""
    for name in ("test_pose", "test_view", "val", "train"):
        if int(frame_id) in {int(i) for i in capture.splits.get(name, [])}:
            return name
    return None


def as_float(array: Any) -> np.ndarray:
    """``np.asarray(array, float64)``, flattened."""
    return np.asarray(array, dtype=np.float64).reshape(-1)

