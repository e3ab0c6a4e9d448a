"""Per-frame body-parameter files: the zoo's pose-file format, the HMR 2.0 converter, overrides.

**The format** (``.npz``, no pickled objects; written by :func:`save_pose_file`, read by
:func:`load_pose_file`; any human-mesh-recovery tool's output can be converted to it):

=================  ==================  =========================================================
key                shape / dtype       meaning
=================  ==================  =========================================================
``frame_ids``      ``[T]`` int64       the dataset's own frame numbers (strictly increasing)
``global_orient``  ``[T, 3]`` float32  axis-angle, rotation about the pelvis joint (SMPL)
``body_pose``      ``[T, 3J]`` float32 axis-angle per body joint, J = 23 (SMPL) / 21 (SMPL-X)
``transl``         ``[T, 3]`` float32  metres, added last
``betas``          ``[T, S]`` float32  optional per-frame shape
SMPL-X extras      ``[T, D]`` float32  optional ``jaw_pose``, ``leye_pose``, ``reye_pose``,
                                       ``left_hand_pose``, ``right_hand_pose``, ``expression``
``model_type``     0-d str             ``"smpl"`` or ``"smplx"``
``format``         0-d str             ``"avatar-zoo/body-params"``
``version``        0-d int64           1
``meta``           0-d str             JSON: where the poses come from (free form)
=================  ==================  =========================================================

The body parameters follow the batch contract of :mod:`zoo.data.schema` exactly (standard SMPL /
SMPL-X convention, in the dataset's **world frame**, metres), so they drop into a batch's
``body`` dict unchanged. ``zoo.methods.base.load_pose_file`` (novel-pose animation) reads the same
files. HumanSplatHMR writes its refined poses in this format (``run_dir/refined_poses.npz``).

**HMR 2.0 / 4D-Humans** (:func:`read_hmr2_outputs`, :func:`hmr2_to_pose_file`,
:func:`convert_hmr2`). HMR 2.0's model returns, per detected person, ``pred_smpl_params`` with
rotation matrices ``global_orient [1, 3, 3]``, ``body_pose [23, 3, 3]`` and ``betas [10]``, the
weak-perspective crop camera ``pred_cam = (s, tx, ty)`` and ``pred_cam_t = (tx, ty, 2 f / (256 s))``
for its 256-pixel crop with focal ``f = 5000`` px; its demo places the person in the full image
with the batch's ``box_center [2]``, ``box_size`` and ``img_size = (W, H)`` (``cam_crop_to_full``,
focal ``5000 / 256 * max(W, H)``, principal point at the image centre). The body is in that
camera's OpenCV frame: ``X_cam = SMPL(global_orient, body_pose, betas) + t_cam`` with no SMPL
``transl``. The converter reads these outputs (see :func:`read_hmr2_outputs` for the file
layouts), recomputes ``t_cam`` for the *real* intrinsics ``K`` when given (the same derivation as
``cam_crop_to_full`` with a general focal and principal point), and moves the body into the
world frame with the camera's ``w2c``: ``R_world = R_wc^T R_cam`` and
``transl = R_wc^T (J0 + t_cam - t_wc) - J0`` (``J0`` = pelvis of the shaped rest body, since SMPL
rotates about it).

**Overrides** (:class:`PoseOverrideSequence`, :func:`noisy_pose_file`): a parsed sequence whose
frames carry the body parameters of a pose file (matched by frame id, every camera of a frame) —
how any method is trained or scored on estimated, refined or noised poses without touching its
parser. ``noisy_pose_file`` builds the poses of a split perturbed by :mod:`zoo.core.pose_noise`
(the robustness sweep); with the same noise config it reproduces HumanSplatHMR's ``noise`` source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch

from zoo.data.body_files import axis_angle_to_matrix, matrix_to_axis_angle, orthonormalize, rest_joints
from zoo.data.schema import DatasetError, FrameRecord, FrameSequence, NativeFrame

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "POSE_KEYS",
    "PoseFile",
    "save_pose_file",
    "load_pose_file",
    "HMR2_FOCAL_LENGTH",
    "HMR2_IMAGE_SIZE",
    "read_hmr2_outputs",
    "hmr2_camera_translation",
    "hmr2_to_pose_file",
    "convert_hmr2",
    "sequence_poses",
    "noisy_pose_file",
    "PoseOverrideSequence",
]

FORMAT_NAME = "avatar-zoo/body-params"
FORMAT_VERSION = 1
#: The per-frame estimate of a pose file that overrides a sequence's bodies by default.
POSE_KEYS = ("global_orient", "body_pose", "transl")
_WIDTHS = {"global_orient": 3, "transl": 3, "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3,
           "left_hand_pose": None, "right_hand_pose": None, "expression": None, "betas": None}
_BODY_WIDTH = {"smpl": 69, "smplx": 63}

#: HMR 2.0's constants (its model config: EXTRA.FOCAL_LENGTH, MODEL.IMAGE_SIZE).
HMR2_FOCAL_LENGTH = 5000.0
HMR2_IMAGE_SIZE = 256


# =============================================================================================
# The format


@dataclass
class PoseFile:
    """Body parameters per frame id.

    Attributes:
        frame_ids: ``[T]`` int64, strictly increasing.
        params: ``global_orient [T, 3]``, ``body_pose [T, 3J]``, ``transl [T, 3]`` and optional
            ``betas [T, S]`` / SMPL-X keys, float32.
        model_type: ``"smpl"`` or ``"smplx"``.
        meta: free-form provenance.
    """

    frame_ids: np.ndarray
    params: Dict[str, np.ndarray]
    model_type: str = "smpl"
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frame_ids.shape[0])

    def index(self, frame_id: int) -> int:
        """Row of ``frame_id``; KeyError naming the id when the file has no such frame."""
        pos = np.searchsorted(self.frame_ids, int(frame_id))
        if pos >= len(self) or int(self.frame_ids[pos]) != int(frame_id):
            raise KeyError(f"frame id {frame_id} is not in the pose file (it has {len(self)} frames, "
                           f"ids {int(self.frame_ids[0])}..{int(self.frame_ids[-1])})")
        return int(pos)

    def frame(self, frame_id: int) -> Dict[str, np.ndarray]:
        """The parameters of one frame (unbatched ``[D]`` arrays)."""
        row = self.index(frame_id)
        return {k: v[row] for k, v in self.params.items()}

    def select(self, frame_ids: Iterable[int]) -> Dict[str, np.ndarray]:
        """``[T', D]`` parameters of the given frame ids (KeyError for a missing one)."""
        rows = [self.index(f) for f in frame_ids]
        return {k: v[rows] for k, v in self.params.items()}


def _check_params(params: Mapping[str, Any], T: int, model_type: str, where: str) -> Dict[str, np.ndarray]:
    if model_type not in _BODY_WIDTH:
        raise DatasetError(f"{where}: model_type must be 'smpl' or 'smplx', got {model_type!r}")
    out: Dict[str, np.ndarray] = {}
    for key in POSE_KEYS:
        if key not in params:
            raise DatasetError(f"{where}: '{key}' is missing; a pose file needs {list(POSE_KEYS)} and frame_ids")
    for key, value in params.items():
        if key not in _WIDTHS and key != "body_pose":
            raise DatasetError(f"{where}: unknown body parameter '{key}'; expected {sorted(list(_WIDTHS) + ['body_pose'])}")
        if model_type == "smpl" and key in ("jaw_pose", "leye_pose", "reye_pose", "left_hand_pose",
                                            "right_hand_pose", "expression"):
            raise DatasetError(f"{where}: '{key}' is SMPL-X only but model_type is 'smpl'")
        arr = np.asarray(value, dtype=np.float32)
        if key == "body_pose" and arr.ndim == 3 and arr.shape[-1] == 3:
            arr = arr.reshape(arr.shape[0], -1)
        width = _BODY_WIDTH[model_type] if key == "body_pose" else _WIDTHS[key]
        if arr.ndim != 2 or arr.shape[0] != T or (width is not None and arr.shape[1] != width):
            want = f"[{T}, {width if width is not None else 'D'}]"
            raise DatasetError(f"{where}: '{key}' has shape {arr.shape}; expected {want} ({model_type})")
        if not np.isfinite(arr).all():
            raise DatasetError(f"{where}: '{key}' holds non-finite values")
        out[key] = arr
    return out


def _check_frame_ids(frame_ids: Any, where: str) -> np.ndarray:
    ids = np.asarray(frame_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise DatasetError(f"{where}: 'frame_ids' must be a non-empty [T] integer array, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.size > 1 and not (np.diff(ids) > 0).all():
        raise DatasetError(f"{where}: 'frame_ids' must be strictly increasing (one row per frame)")
    return ids


def save_pose_file(path: str | os.PathLike, frame_ids: Sequence[int], params: Mapping[str, Any],
                   model_type: str = "smpl", meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a pose file (checked first; written through a temporary file and a rename).

    Args:
        path: the ``.npz`` to write.
        frame_ids: ``[T]`` strictly increasing frame ids; rows of unsorted input are sorted with them.
        params: ``[T, D]`` arrays (see the module docstring); ``body_pose`` may be ``[T, J, 3]``.
        model_type: ``"smpl"`` or ``"smplx"``.
        meta: provenance, stored as JSON.

    Returns:
        The path written.

    Raises:
        DatasetError: naming the field that is missing or has a wrong shape.
    """
    path = Path(path)
    ids = np.asarray(frame_ids).astype(np.int64).reshape(-1)
    order = np.argsort(ids, kind="stable")
    where = f"pose file {path}"
    ids = _check_frame_ids(ids[order], where)
    checked = _check_params({k: np.asarray(v)[order] for k, v in params.items()}, len(ids), model_type, where)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, frame_ids=ids, model_type=np.array(model_type), format=np.array(FORMAT_NAME),
             version=np.array(FORMAT_VERSION, dtype=np.int64), meta=np.array(json.dumps(dict(meta or {}))),
             **checked)
    os.replace(tmp, path)
    return path


def load_pose_file(path: str | os.PathLike) -> PoseFile:
    """Read and check a pose file.

    Raises:
        FileNotFoundError: missing file.
        DatasetError: not a readable ``.npz``, or a field missing / of the wrong shape (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable pose file (.npz without pickled objects): {exc}") from exc
    where = f"pose file {path}"
    if "frame_ids" not in raw:
        raise DatasetError(f"{where}: 'frame_ids' is missing (found {sorted(raw)})")
    version = int(raw.pop("version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise DatasetError(f"{where}: format version {version} is newer than this reader ({FORMAT_VERSION})")
    raw.pop("format", None)
    model_type = str(raw.pop("model_type", "smpl"))
    meta_text = str(raw.pop("meta", "{}"))
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        meta = {"text": meta_text}
    ids = _check_frame_ids(raw.pop("frame_ids"), where)
    return PoseFile(ids, _check_params(raw, len(ids), model_type, where), model_type, meta)


# =============================================================================================
# HMR 2.0 / 4D-Humans

_HMR2_KEYS = ("global_orient", "body_pose", "betas", "pred_cam", "pred_cam_t", "pred_cam_t_full",
              "box_center", "box_size", "img_size", "frame_ids", "frame_id")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        name = str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix))  # pred_smpl_params/<key> -> <key>
        else:
            flat[re.split(r"[/.]", name)[-1]] = value
    return flat


def _to_numpy(value: Any, key: str, where: str) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: '{key}' is not numeric ({exc})") from exc


def _read_one(path: Path) -> Dict[str, Any]:
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for foreign pickles
            raise DatasetError(f"{path}: cannot read HMR 2.0 outputs with torch.load(weights_only=True): {exc}") from exc
        if not isinstance(obj, Mapping):
            raise DatasetError(f"{path}: expected a dict of HMR 2.0 outputs, got {type(obj).__name__}")
        return _flatten(obj)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return _flatten({k: data[k] for k in data.files})
        except (OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"{path}: not a readable .npz without pickled objects ({exc})") from exc
    raise DatasetError(f"{path}: HMR 2.0 outputs must be .pt/.pth (torch.save of the output dict) or .npz")


def read_hmr2_outputs(source: str | os.PathLike | Mapping[str, Any], person: int = 0) -> Dict[str, np.ndarray]:
    """Read HMR 2.0 outputs into stacked arrays, one row per frame.

    Accepted layouts:

    * a dict (or a ``.pt`` file written with ``torch.save``) holding the model's output dict —
      ``pred_smpl_params`` (a nested dict, or its keys at the top level) with ``global_orient
      [T, 1, 3, 3]``, ``body_pose [T, 23, 3, 3]``, ``betas [T, 10]``, and ``pred_cam [T, 3]``,
      ``pred_cam_t [T, 3]`` — merged with the batch's ``box_center [T, 2]``, ``box_size [T]``,
      ``img_size [T, 2]`` (or the demo's ``pred_cam_t_full [T, 3]``) and ``frame_ids [T]``;
    * the same as a ``.npz`` whose keys are flattened (``pred_smpl_params/body_pose`` or
      ``pred_smpl_params.body_pose`` or ``body_pose``);
    * a folder of per-frame files (``.pt`` / ``.npz``, one batch of detected people each) whose
      names end in the frame number (``000104.pt``, ``frame_000104.npz``); ``person`` picks the
      detection (row) of each file.

    Rotations may also be axis-angle (``global_orient [T, 3]``, ``body_pose [T, 69]``).

    Returns:
        ``frame_ids [T]`` and float64 ``global_orient [T, 3, 3]``, ``body_pose [T, 23, 3, 3]``,
        ``betas [T, 10]`` plus whichever camera fields were present.

    Raises:
        DatasetError / FileNotFoundError: naming the file and the missing or malformed field.
    """
    if isinstance(source, Mapping):
        items = [("<dict>", _flatten(source), None)]
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".pt", ".pth", ".npz"))
            if not files:
                raise DatasetError(f"{path}: no per-frame HMR 2.0 output files (*.pt, *.npz)")
            items = []
            for p in files:
                digits = re.findall(r"\d+", p.stem)
                if not digits:
                    raise DatasetError(f"{p}: per-frame file names must end in the frame number")
                items.append((str(p), _read_one(p), int(digits[-1])))
        elif path.is_file():
            items = [(str(path), _read_one(path), None)]
        else:
            raise FileNotFoundError(f"HMR 2.0 outputs not found: {path}")
    rows: Dict[str, List[np.ndarray]] = {}
    frame_ids: List[int] = []
    for where, flat, fid in items:
        missing = [k for k in ("global_orient", "body_pose", "betas") if k not in flat]
        if missing:
            raise DatasetError(f"{where}: HMR 2.0 outputs lack {missing} (pred_smpl_params); found {sorted(flat)}")
        arrays = {k: _to_numpy(v, k, where) for k, v in flat.items() if k in _HMR2_KEYS}
        n = arrays["betas"].reshape(-1, arrays["betas"].shape[-1]).shape[0]
        if fid is not None:  # one file per frame: pick the person
            if not 0 <= person < n:
                raise DatasetError(f"{where}: person {person} requested but the file holds {n} detection(s)")
            arrays = {k: (v[person:person + 1] if v.ndim >= 1 and v.shape[0] == n else v.reshape(1, *v.shape))
                      for k, v in arrays.items()}
            frame_ids.append(fid)
        else:
            ids = arrays.pop("frame_ids", arrays.pop("frame_id", None))
            frame_ids.extend(np.arange(n).tolist() if ids is None else np.asarray(ids).reshape(-1).astype(int).tolist())
        arrays.pop("frame_ids", None)
        arrays.pop("frame_id", None)
        for k, v in arrays.items():
            rows.setdefault(k, []).append(v)
    out = {k: np.concatenate(v, axis=0) for k, v in rows.items()}
    T = len(frame_ids)
    where = str(source) if not isinstance(source, Mapping) else "HMR 2.0 outputs"
    go, bp = out["global_orient"], out["body_pose"]
    if go.shape[-2:] != (3, 3):
        go = axis_angle_to_matrix(go.reshape(T, 3))
    if bp.shape[-2:] != (3, 3):
        bp = axis_angle_to_matrix(bp.reshape(T, -1, 3))
    go = go.reshape(T, 3, 3)
    bp = bp.reshape(T, -1, 3, 3)
    if bp.shape[1] != 23:
        raise DatasetError(f"{where}: 'body_pose' must hold 23 SMPL joints, got {bp.shape[1]}")
    out["global_orient"], out["body_pose"] = go, bp
    out["betas"] = out["betas"].reshape(T, -1)
    for key, shape in (("pred_cam", (3,)), ("pred_cam_t", (3,)), ("pred_cam_t_full", (3,)),
                       ("box_center", (2,)), ("box_size", ()), ("img_size", (2,))):
        if key in out:
            try:
                out[key] = out[key].reshape((T,) + shape)
            except ValueError as exc:
                raise DatasetError(f"{where}: '{key}' has shape {out[key].shape}; expected {(T,) + shape}") from exc
    order = np.argsort(frame_ids, kind="stable")
    out = {k: v[order] for k, v in out.items()}
    out["frame_ids"] = np.asarray(frame_ids, dtype=np.int64)[order]
    if T > 1 and not (np.diff(out["frame_ids"]) > 0).all():
        raise DatasetError(f"{where}: duplicate frame ids {sorted(out['frame_ids'].tolist())[:10]}...")
    return out


def _per_frame(x: Optional[Any], T: int, shape: tuple, name: str) -> Optional[np.ndarray]:
    if x is None:
        return None
    arr = np.asarray(x.detach().cpu().numpy() if torch.is_tensor(x) else x, dtype=np.float64)
    if arr.shape == shape:
        return np.broadcast_to(arr, (T,) + shape).copy()
    if arr.shape == (T,) + shape:
        return arr
    raise DatasetError(f"{name} must have shape {list(shape)} or [{T}, {', '.join(map(str, shape))}], got {list(arr.shape)}")


def hmr2_camera_translation(pred_cam: np.ndarray, box_center: np.ndarray, box_size: np.ndarray,
                            K: np.ndarray) -> np.ndarray:
    """Camera-frame translation of HMR 2.0's body for a full image with intrinsics ``K``.

    The crop camera says a body point ``X`` (SMPL output, metres) lands at crop coordinate
    ``s * (X_xy + (tx, ty))`` in [-1, 1], i.e. at pixel ``box_center + s * (X_xy + t) * b / 2``.
    Matching a pinhole ``(fx, fy, cx, cy)`` at the body origin (value and slope) gives
    ``tz = 2 fx / (b s)``, ``tx' = tz (box_cx - cx) / fx + tx``, ``ty' = tz (box_cy - cy) / fy +
    (fx / fy) ty`` — ``cam_crop_to_full`` of 4D-Humans when ``fx = fy`` and ``(cx, cy)`` is the
    image centre.

    Args:
        pred_cam: ``[T, 3]`` ``(s, tx, ty)``.
        box_center: ``[T, 2]`` box centres in the zoo's pixel convention (pixel (0, 0) centred at 0).
        box_size: ``[T]`` box sizes (pixels).
        K: ``[T, 3, 3]`` intrinsics, same convention.

    Returns:
        ``[T, 3]`` translations (metres, OpenCV camera frame).
    """
    s, tx, ty = pred_cam[:, 0], pred_cam[:, 1], pred_cam[:, 2]
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    bs = box_size * s
    if (np.abs(bs) < 1e-12).any():
        raise DatasetError("HMR 2.0 pred_cam scale s (or box_size) is zero for some frame")
    tz = 2.0 * fx / bs
    return np.stack([tz * (box_center[:, 0] - cx) / fx + tx, tz * (box_center[:, 1] - cy) / fy + fx / fy * ty, tz], 1)


def hmr2_to_pose_file(outputs: Mapping[str, np.ndarray], K: Optional[Any] = None, w2c: Optional[Any] = None,
                      body_models: Optional[str | os.PathLike] = None, gender: str = "neutral",
                      meta: Optional[Mapping[str, Any]] = None) -> PoseFile:
    """Convert HMR 2.0 outputs (from :func:`read_hmr2_outputs`) into world-frame body parameters.

    Args:
        outputs: stacked outputs with ``frame_ids``, ``global_orient``, ``body_pose``, ``betas`` and
            either ``pred_cam`` + ``box_center`` + ``box_size`` (+ ``img_size`` when ``K`` is None)
            or ``pred_cam_t_full``.
        K: ``[3, 3]`` or ``[T, 3, 3]`` intrinsics of the images HMR 2.0 saw, in the zoo's pixel
            convention (:mod:`zoo.data.schema`); None: HMR 2.0's own assumption, focal
            ``5000 / 256 * max(W, H)`` and the image centre. Ignored with ``pred_cam_t_full``
            (already placed by the demo's camera).
        w2c: ``[4, 4]`` or ``[T, 4, 4]`` world-to-camera (OpenCV) of those images; None keeps the
            camera frame as the world.
        body_models: folder of the SMPL files (for the pelvis ``J0``), or None for
            ``$ZOO_BODY_MODELS``.
        gender: SMPL gender whose pelvis is used.
        meta: provenance stored with the result.

    Returns:
        A :class:`PoseFile` (SMPL, per-frame ``betas`` from HMR 2.0).
    """
    ids = np.asarray(outputs["frame_ids"], dtype=np.int64)
    T = len(ids)
    go_cam = np.stack([orthonormalize(m) for m in np.asarray(outputs["global_orient"]).reshape(T, 3, 3)])
    body_rot = np.asarray(outputs["body_pose"]).reshape(T, 23, 3, 3)
    betas = np.asarray(outputs["betas"], dtype=np.float64).reshape(T, -1)
    if "pred_cam" in outputs and "box_center" in outputs and "box_size" in outputs:
        if K is None:
            if "img_size" not in outputs:
                raise DatasetError("HMR 2.0 outputs: without K the converter needs 'img_size' [T, 2] (W, H)")
            wh = np.asarray(outputs["img_size"], dtype=np.float64)
            f = HMR2_FOCAL_LENGTH / HMR2_IMAGE_SIZE * wh.max(axis=1)
            Ks = np.zeros((T, 3, 3))
            Ks[:, 0, 0] = Ks[:, 1, 1] = f
            Ks[:, 0, 2], Ks[:, 1, 2] = wh[:, 0] / 2.0 - 0.5, wh[:, 1] / 2.0 - 0.5
            Ks[:, 2, 2] = 1.0
        else:
            Ks = _per_frame(K, T, (3, 3), "K")
        # HMR 2.0's boxes use detectron2's continuous pixel coordinates (pixel (0, 0) centred at 0.5)
        center = np.asarray(outputs["box_center"], dtype=np.float64) - 0.5
        t_cam = hmr2_camera_translation(np.asarray(outputs["pred_cam"], dtype=np.float64), center,
                                        np.asarray(outputs["box_size"], dtype=np.float64).reshape(T), Ks)
    elif "pred_cam_t_full" in outputs:
        t_cam = np.asarray(outputs["pred_cam_t_full"], dtype=np.float64).reshape(T, 3)
    else:
        raise DatasetError("HMR 2.0 outputs: the camera needs 'pred_cam' with 'box_center' and 'box_size' "
                           "(the batch's crop), or the demo's 'pred_cam_t_full'; 'pred_cam_t' alone is crop-relative")
    w2cs = _per_frame(np.eye(4) if w2c is None else w2c, T, (4, 4), "w2c")
    R_wc, t_wc = w2cs[:, :3, :3], w2cs[:, :3, 3]
    go_world = np.einsum("tji,tjk->tik", R_wc, go_cam)  # R_wc^T @ R_cam
    pelvis = np.stack([rest_joints(body_models, b, "smpl", gender)[0] for b in betas])
    transl = np.einsum("tji,tj->ti", R_wc, pelvis + t_cam - t_wc) - pelvis
    params = {
        "global_orient": matrix_to_axis_angle(go_world),
        "body_pose": matrix_to_axis_angle(body_rot).reshape(T, 69),
        "transl": transl,
        "betas": betas,
    }
    where = "converted HMR 2.0 outputs"
    return PoseFile(_check_frame_ids(ids, where), _check_params(params, T, "smpl", where), "smpl",
                    dict(meta or {"source": "hmr2"}))


def convert_hmr2(source: str | os.PathLike | Mapping[str, Any], out: str | os.PathLike, K: Optional[Any] = None,
                 w2c: Optional[Any] = None, body_models: Optional[str | os.PathLike] = None,
                 gender: str = "neutral", person: int = 0) -> Path:
    """Read HMR 2.0 outputs (:func:`read_hmr2_outputs`), convert them (:func:`hmr2_to_pose_file`)
    and write a pose file (:func:`save_pose_file`). Returns the path written."""
    outputs = read_hmr2_outputs(source, person=person)
    pf = hmr2_to_pose_file(outputs, K=K, w2c=w2c, body_models=body_models, gender=gender,
                           meta={"source": "hmr2", "from": str(source) if not isinstance(source, Mapping) else "dict"})
    return save_pose_file(out, pf.frame_ids, pf.params, pf.model_type, pf.meta)


# =============================================================================================
# Sequences


def sequence_poses(sequence: FrameSequence, split: Optional[str] = "train",
                   keys: Sequence[str] = POSE_KEYS + ("betas",)) -> PoseFile:
    """The body parameters of a sequence's frames, one row per frame id (first record of each id).

    Args:
        sequence: a parsed sequence.
        split: only the frame ids of this split (None: every frame).
        keys: body keys to keep.
    """
    indices = range(len(sequence.records)) if split is None else sequence.splits[split]
    first: Dict[int, FrameRecord] = {}
    for i in indices:
        rec = sequence.records[i]
        first.setdefault(int(rec.frame_id), rec)
    if not first:
        raise DatasetError(f"{sequence.subject}: split {split!r} has no frames")
    ids = sorted(first)
    params = {k: np.stack([np.asarray(first[f].body[k], dtype=np.float32).reshape(-1) for f in ids])
              for k in keys if k in first[ids[0]].body}
    return PoseFile(np.asarray(ids, dtype=np.int64), params, sequence.model_type,
                    {"source": "dataset", "subject": sequence.subject, "split": split})


def noisy_pose_file(sequence: FrameSequence, noise: Any, split: str = "train") -> PoseFile:
    """A split's poses perturbed by the zoo's pose-noise model (one draw over its sorted frame ids).

    Args:
        sequence: a parsed sequence.
        noise: a :class:`zoo.core.pose_noise.PoseNoiseConfig` or its mapping.
        split: whose frame ids are perturbed (the noise process runs over them in order).
    """
    from zoo.core.pose_noise import PoseNoiseConfig, perturb_poses

    cfg = noise if isinstance(noise, PoseNoiseConfig) else PoseNoiseConfig.from_mapping(noise)
    clean = sequence_poses(sequence, split)
    noisy = perturb_poses(clean.params, cfg, times=clean.frame_ids)
    meta = dict(clean.meta, source="noise", noise=dataclasses.asdict(cfg))
    return PoseFile(clean.frame_ids, {k: np.asarray(v, dtype=np.float32) for k, v in noisy.items()},
                    clean.model_type, meta)


class PoseOverrideSequence(FrameSequence):
    """A parsed sequence whose frames carry a pose file's body parameters (matched by frame id).

    Every record (every camera) of a frame id present in ``poses`` gets that row's ``keys``;
    frames the file lacks keep the dataset's bodies. Pixels, cameras, splits and protocol are the
    base sequence's (its ``_read`` decodes the pixels).

    Args:
        base: the parsed sequence.
        poses: a :class:`PoseFile` (or a path to one).
        keys: the body keys to replace (default: global_orient, body_pose, transl; add "betas" to
            take the file's shape too).
        require: frame ids that must be in the file (e.g. the training frames), else DatasetError.
    """

    def __init__(self, base: FrameSequence, poses: PoseFile | str | os.PathLike,
                 keys: Sequence[str] = POSE_KEYS, require: Optional[Iterable[int]] = None) -> None:
        super().__init__(resolution=base.resolution, downscale=base.downscale, crop=base.crop)
        if not isinstance(poses, PoseFile):
            poses = load_pose_file(poses)
        if poses.model_type != base.model_type:
            raise DatasetError(f"pose file is {poses.model_type} but {base.subject!r} is {base.model_type}")
        absent = [k for k in keys if k not in poses.params]
        if absent:
            raise DatasetError(f"pose file lacks {absent} (has {sorted(poses.params)})")
        have = set(poses.frame_ids.tolist())
        missing = sorted(set(int(f) for f in (require or ())) - have)
        if missing:
            raise DatasetError(f"pose file lacks frame ids {missing[:10]}{'...' if len(missing) > 10 else ''}")
        self.base = base
        self.poses = poses
        self.splits = {k: list(v) for k, v in base.splits.items()}
        self.protocol = dict(base.protocol)
        self.model_type, self.gender, self.subject, self.root = base.model_type, base.gender, base.subject, base.root
        self.records = []
        self.overridden = 0
        for rec in base.records:
            fid = int(rec.frame_id)
            if fid in have:
                row = poses.frame(fid)
                body = dict(rec.body)
                body.update({k: np.asarray(row[k], dtype=np.float32) for k in keys})
                rec = dataclasses.replace(rec, body=body)
                self.overridden += 1
            self.records.append(rec)

    def _read(self, record: FrameRecord) -> NativeFrame:
        return self.base._read(record)

    def __getattr__(self, name: str) -> Any:
        # parser-specific attributes (has_depth, ...) come from the base sequence
        base = self.__dict__.get("base")
        if base is None:
            raise AttributeError(name)
        return getattr(base, name)
