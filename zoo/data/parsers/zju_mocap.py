"""ZJU-MoCap parser: the raw release (Neural Body) and the refined release (Instant-NVR).

Reads one subject folder (``CoreView_377``, ``CoreView_313``, ``my_377`` ...) holding
``annots.npy``. Handled layouts and quirks:

* Raw release (DATASETS.md §1A): ``Camera_B{n}/{f:06d}.jpg``, masks in ``mask_cihp/`` and/or
  ``mask/`` (OR-ed when both exist, any non-zero pixel is the person), SMPL fits in
  ``new_params/{f}.npy`` (preferred) or ``params/{f}.npy``.
* 313/315 (§1A): camera folders ``Camera (n)``, 21 cameras mapping to 1..19, 22, 23, long
  basenames whose 5th ``_``-separated token is the **1-based** frame number (used as
  ``frame_id`` and as the params file number), camera lists that may be nested Python lists.
* Refined release (§1B): ``images/{c:02d}/{f:06d}.jpg``, ``mask/{c:02d}/{f:06d}.png`` (falling
  back to ``schp/``), ``smpl_params/{f}.npy``.
* Cameras (§1A): ``T`` in millimetres -> metres; ``R`` re-orthonormalised by SVD (it is stored at
  low precision); ``D`` (k1, k2, p1, p2, k3): images and masks are undistorted with the same K
  (as ``cv2.undistort``) when D is non-zero, skipped when it is zero.
* Body (§1A "EasyMocap SMPL convention"): ``V = SMPL(poses, Rh=0, Th=0) · R(Rh)ᵀ + Th`` is
  converted to standard SMPL with ``global_orient = Rh ∘ poses[:3]`` and
  ``transl = Th + (R(Rh) − I)·J0``, J0 the pelvis of the zero-pose shaped neutral SMPL body
  (:func:`zoo.data.body_files.rest_joints`).

Items are every camera of every frame, frame-major (item ``f * C + c``). ``camera_id`` is the
0-based physical camera number (``Camera_B{n}`` / ``Camera (n)`` -> ``n - 1``, refined folder
``cc`` -> ``cc``), ``frame_id`` the number in the image name.

Protocols (§1E), choosing ``splits`` over frame positions ``f`` (0-based positions in
``annots['ims']``) and camera positions ``c``:

* ``"mono_3dgs_avatar"`` (default for the raw release): train = camera position 0, frames
  ``[0, N)`` (377: 570, 386/387: 540, 394: 475, 392/393: all); test_view = the other cameras on
  frames ``0..N`` every ``test_every``; test_pose = the other cameras on frames ``N..end`` every
  ``test_every``. Evaluation preset ``"zju_mocap"`` (full image, black background, VGG LPIPS on
  correctly scaled inputs, 512x512).
* ``"neuralbody_4view"``: train = camera positions 0, 6, 12, 18 on frames 313: 0–59,
  315: 0–399, 390: 700–999, others 0–299; test_view = the other cameras on those frames every
  ``test_every``; test_pose = the other cameras on the remaining frames every ``test_every``.
  Evaluation preset ``"zju_mocap_neuralbody"`` (box-cropped metrics, black background, 512x512).
* ``"refined"`` (default for ``my_*``, Instant-NVR / GauHuman): train = camera position 4,
  frames 0..495 step 5; test_view = the other cameras on frames 0..480 step 30; test_pose = the
  other cameras on frames 500.. step 30. Evaluation preset ``"zju_mocap_refined"`` (VGG LPIPS
  fed [0, 1] as-is, 512x512).

The evaluation presets live in :mod:`zoo.data.protocols`; ``eval_protocol=`` picks another of
ZJU-MoCap's (e.g. ``"zju_mocap_gomavatar"`` for GoMAvatar's LPIPS x1000) without changing splits.

For subjects not in these tables (e.g. synthetic ones) the frame ranges derive from the number of
frames F: training frames are the first ``ceil(0.8 F)`` (at most F − 1), test frames are taken
every ``min(test_every, available)`` frames, so neither test split is empty when there are at least
two frames; with a single camera test_view is empty and test_pose is seen from that camera.
``val`` (model selection) never holds an item a test split scores: it is up to 4 evenly spaced
items of the training frames that test_view skips (frames between its every-``test_every`` picks),
seen from the cameras that do not train. With a single camera (or ``test_every`` 1) no such item
exists and ``val`` is empty; training then keeps the last checkpoint and says so in metrics.json.
(The earlier rule, 4 items taken from test_view, let model selection see the test split.)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from zoo.data.body_files import axis_angle_to_matrix, matrix_to_axis_angle, orthonormalize, rest_joints
from zoo.data.schema import (
    DatasetError,
    FrameRecord,
    FrameSequence,
    MissingFileError,
    NativeFrame,
    evenly_spaced,
    load_npy_dict,
    read_image_rgb,
    read_mask_png,
    require_file,
)
from zoo.data.protocols import protocol_for

__all__ = ["ZJUMoCap", "undistortion_maps", "remap", "RemapTable", "PROTOCOLS"]

#: Split protocols (the ``protocol=`` option).
PROTOCOLS = ("mono_3dgs_avatar", "neuralbody_4view", "refined")
#: The evaluation preset (zoo.data.protocols) each split protocol uses unless ``eval_protocol=`` says otherwise.
_EVAL_PRESETS: dict[str, str] = {
    "mono_3dgs_avatar": "zju_mocap",
    "neuralbody_4view": "zju_mocap_neuralbody",
    "refined": "zju_mocap_refined",
}

#: 3DGS-Avatar monocular training frame counts (None = all frames), DATASETS.md §1E.
_MONO_TRAIN_FRAMES: dict[str, int | None] = {"377": 570, "386": 540, "387": 540, "394": 475, "392": None, "393": None}
#: Neural Body training frame ranges [start, end), DATASETS.md §1E.
_NB_TRAIN_FRAMES: dict[str, tuple[int, int]] = {"313": (0, 60), "315": (0, 400), "390": (700, 1000)}
_NB_SUBJECTS = {"313", "315", "377", "386", "387", "390", "392", "393", "394", "395", "396"}
_REFINED_SUBJECTS = {"377", "386", "387", "390", "392", "393", "394"}

#: Undistortion tables kept per sequence (about 40 MB each at 1024x1024).
_MAX_TABLES = 4

_CAM_RAW = re.compile(r"^Camera_B(\d+)$")
_CAM_313 = re.compile(r"^Camera \((\d+)\)$")


def undistortion_maps(K: np.ndarray, D: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates of every undistorted pixel (the inverse map ``cv2.undistort`` uses).

    For output pixel (u, v): ``x = (u − cx)/fx``, ``y = (v − cy)/fy``, then the OpenCV distortion
    model with ``D = (k1, k2, p1, p2, k3)`` gives the distorted normalised point, projected with
    the same K.

    Args:
        K: ``[3, 3]`` intrinsics (also used for the undistorted image).
        D: 5 distortion coefficients (any shape with 5 elements; fewer are zero-padded).
        size: ``(H, W)``.

    Returns:
        ``(map_x, map_y)``, each ``[H, W]`` float64 source pixel coordinates.
    """
    h, w = size
    d = np.zeros(5)
    flat = np.asarray(D, dtype=np.float64).reshape(-1)[:5]
    d[: flat.size] = flat
    k1, k2, p1, p2, k3 = d
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return fx * xd + skew * yd + cx, fy * yd + cy


class RemapTable:
    """Precomputed sampling of an image at fractional source coordinates (outside = 0).

    Building the table once per camera makes undistorting each frame a few gathers.

    Args:
        map_x: ``[H', W']`` source x coordinates (pixel centres at integers).
        map_y: ``[H', W']`` source y coordinates.
        size: source image ``(H, W)``.
    """

    def __init__(self, map_x: np.ndarray, map_y: np.ndarray, size: tuple[int, int]) -> None:
        h, w = size
        self.size = (h, w)
        self.out_shape = map_x.shape
        sentinel = h * w  # index of an extra zero pixel
        mx = np.asarray(map_x, dtype=np.float64).reshape(-1)
        my = np.asarray(map_y, dtype=np.float64).reshape(-1)
        x0, y0 = np.floor(mx), np.floor(my)
        fx, fy = mx - x0, my - y0
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        idx, wts = [], []
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            for dx, wx in ((0, 1.0 - fx), (1, fx)):
                xs, ys = x0 + dx, y0 + dy
                valid = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
                idx.append(np.where(valid, ys * w + xs, sentinel))
                wts.append(wy * wx)
        self.index = np.stack(idx).astype(np.int32)
        self.weight = np.stack(wts).astype(np.float32)
        xn, yn = np.floor(mx + 0.5).astype(np.int64), np.floor(my + 0.5).astype(np.int64)
        valid = (xn >= 0) & (xn < w) & (yn >= 0) & (yn < h)
        self.nearest_index = np.where(valid, yn * w + xn, sentinel).astype(np.int32)

    def __call__(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Sample ``image`` (``[H, W]`` or ``[H, W, C]``); integer results are rounded."""
        if image.shape[:2] != self.size:
            raise ValueError(f"image has size {image.shape[:2]}, the table was built for {self.size}")
        flat = image.reshape(self.size[0] * self.size[1], -1)
        flat = np.concatenate([flat, np.zeros((1, flat.shape[1]), dtype=flat.dtype)], axis=0)
        if nearest:
            out = flat[self.nearest_index]
        else:
            src = flat.astype(np.float32)
            acc = self.weight[0][:, None] * src[self.index[0]]
            for k in range(1, 4):
                acc += self.weight[k][:, None] * src[self.index[k]]
            if np.issubdtype(image.dtype, np.integer):
                info = np.iinfo(image.dtype)
                acc = np.clip(np.round(acc), info.min, info.max)
            out = acc.astype(image.dtype)
        return out.reshape(self.out_shape + image.shape[2:])


def remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Sample ``image`` at ``(map_x, map_y)``; samples outside the image are 0.

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` array.
        map_x: ``[H', W']`` source x coordinates (pixel centres at integers).
        map_y: ``[H', W']`` source y coordinates.
        nearest: nearest-neighbour instead of bilinear sampling (masks).

    Returns:
        ``[H', W'(, C)]`` array of ``image``'s dtype (bilinear results are rounded for integers).
    """
    return RemapTable(map_x, map_y, image.shape[:2])(image, nearest=nearest)


def _subject_number(name: str) -> str:
    match = re.search(r"(\d+)$", name)
    return match.group(1) if match else name


def _param_array(params: dict[str, Any], key: str, width: int | None, path: Path) -> np.ndarray:
    if key not in params:
        raise DatasetError(f"{path}: missing key '{key}'; expected poses (1,72), Rh (1,3), Th (1,3), shapes (1,S)")
    arr = np.asarray(params[key], dtype=np.float64)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or (width is not None and arr.shape[0] != width):
        raise DatasetError(
            f"{path}: '{key}' has shape {np.shape(params[key])}, expected (1, {width if width else 'S'})"
        )
    return arr


class ZJUMoCap(FrameSequence):
    """One ZJU-MoCap subject (raw or refined release); see the module docstring.

    Args:
        root: the subject folder holding ``annots.npy`` (or the dataset folder with ``subject=``).
        subject: subject folder name inside ``root`` (e.g. ``"CoreView_377"``), optional.
        protocol: ``"auto"`` (``"refined"`` for the refined release, else ``"mono_3dgs_avatar"``),
            ``"mono_3dgs_avatar"``, ``"neuralbody_4view"`` or ``"refined"``: the splits, and the
            default evaluation preset.
        eval_protocol: evaluation preset (:mod:`zoo.data.protocols`), one of
            ``DATASET_PROTOCOLS["zju_mocap"]``; None = the split protocol's preset (``"zju_mocap"``,
            ``"zju_mocap_neuralbody"`` or ``"zju_mocap_refined"``).
        smpl_params: ``"auto"`` (``new_params/`` if present, else ``params/``; ``smpl_params/``
            for the refined release), or a folder name to force.
        mask_source: ``"auto"`` (OR of ``mask_cihp/`` and ``mask/`` where present),
            ``"mask_cihp"`` or ``"mask"``.
        body_models: folder holding ``smpl/SMPL_NEUTRAL.pkl|npz`` (default ``$ZOO_BODY_MODELS``).
        train_cameras: camera positions to train on, overriding the protocol.
        train_frames: ``(start, end)`` or ``(start, end, step)`` frame positions (end exclusive)
            to train on, overriding the protocol.
        test_every: frame step of the test splits (default 30).
        undistort: undistort images and masks with ``D`` when it is non-zero.
        resolution: output ``(H, W)`` (e.g. ``(512, 512)``), see :class:`FrameSequence`.
        downscale: output = native / downscale.
        crop: crop box, see :class:`FrameSequence`.

    Raises:
        MissingFileError: for a missing folder, annots.npy, image or params file.
        DatasetError: for inconsistent annotations (camera lists of different lengths, a frame
            without every camera, wrong-shaped parameters).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        subject: str | None = None,
        protocol: str = "auto",
        eval_protocol: str | None = None,
        smpl_params: str = "auto",
        mask_source: str = "auto",
        body_models: str | Path | None = None,
        train_cameras: Sequence[int] | None = None,
        train_frames: Sequence[int] | None = None,
        test_every: int = 30,
        undistort: bool = True,
        resolution: Sequence[int] | None = None,
        downscale: float | None = None,
        crop: str | Sequence[int] | None = None,
    ) -> None:
        super().__init__(resolution=resolution, downscale=downscale, crop=crop)
        if protocol != "auto" and protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 'auto' or one of {PROTOCOLS}, got {protocol!r}")
        chosen_eval = None if eval_protocol is None else protocol_for("zju_mocap", eval_protocol)
        root = Path(root)
        if subject is not None:
            root = root / subject
        if not root.is_dir():
            raise MissingFileError(f"{root}: ZJU-MoCap subject folder not found (expected annots.npy inside)")
        if mask_source not in ("auto", "mask_cihp", "mask"):
            raise ValueError(f"mask_source must be 'auto', 'mask_cihp' or 'mask', got {mask_source!r}")
        if int(test_every) < 1:
            raise ValueError(f"test_every must be >= 1, got {test_every!r}")
        self.root = root
        self.subject = root.name
        self.model_type = "smpl"
        self.gender = "neutral"
        self.mask_source = mask_source
        self.undistort = bool(undistort)
        self._tables: dict[tuple[int, int, int], RemapTable] = {}
        self._pelvis_cache: dict[tuple[float, ...], np.ndarray] = {}

        annots_path = root / "annots.npy"
        annots = load_npy_dict(annots_path, "the ZJU-MoCap annotation dict {'cams', 'ims'}")
        cams, ims = self._check_annots(annots, annots_path)
        num_cams = len(cams["K"])
        self.refined = self._detect_refined(ims, annots_path)
        self.num_camera_positions = num_cams
        self.num_frame_positions = len(ims)

        # ---- cameras (DATASETS.md §1A: T in mm, R re-orthonormalised, D (5,1))
        self._D: list[np.ndarray] = []
        Ks, w2cs = [], []
        for c in range(num_cams):
            K_c = np.array(cams["K"][c], dtype=np.float64)
            R_c = np.array(cams["R"][c], dtype=np.float64)
            T_c = np.array(cams["T"][c], dtype=np.float64).reshape(-1)
            D_c = np.array(cams["D"][c], dtype=np.float64).reshape(-1)
            if K_c.shape != (3, 3) or R_c.shape != (3, 3) or T_c.shape != (3,) or D_c.size > 5:
                raise DatasetError(
                    f"{annots_path}: camera {c} has K {K_c.shape}, R {R_c.shape}, T {T_c.shape}, D {D_c.shape}; "
                    "expected K (3,3), R (3,3), T (3,1) in millimetres, D (5,1)"
                )
            w2c = np.eye(4)
            w2c[:3, :3] = orthonormalize(R_c)
            w2c[:3, 3] = T_c / 1000.0
            Ks.append(K_c)
            w2cs.append(w2c)
            self._D.append(D_c)

        # ---- image paths, frame and camera labels
        params_dir = self._params_dir(smpl_params)
        frame_ids: list[int] = []
        camera_ids: list[int] | None = None
        paths: list[list[Path]] = []
        for f, entry in enumerate(ims):
            rels = entry["ims"]
            row_paths = [root / str(p) for p in rels]
            labels = [self._labels(str(p), annots_path) for p in rels]
            fids = {fid for _, fid in labels}
            if len(fids) != 1:
                raise DatasetError(
                    f"{annots_path}: frame position {f} lists images of different frames {sorted(fids)}; "
                    "expected one frame number per entry of 'ims'"
                )
            cids = [cid for cid, _ in labels]
            if camera_ids is None:
                camera_ids = cids
            elif cids != camera_ids:
                raise DatasetError(
                    f"{annots_path}: frame position {f} lists cameras {cids}, expected {camera_ids} as in frame 0"
                )
            frame_ids.append(fids.pop())
            paths.append(row_paths)
        if len(set(frame_ids)) != len(frame_ids):
            raise DatasetError(f"{annots_path}: frame numbers repeat across entries of 'ims'")
        assert camera_ids is not None
        for row in paths:
            for p in row:
                require_file(p, f"a ZJU-MoCap image listed in {annots_path}")

        # ---- body parameters (EasyMocap Rh/Th -> standard SMPL, §1A)
        self.body_models = body_models
        bodies = [self._load_body(params_dir / f"{fid}.npy") for fid in frame_ids]

        sizes: dict[int, tuple[int, int]] = {}
        for c in range(num_cams):
            try:
                with Image.open(paths[0][c]) as im:
                    sizes[c] = (im.height, im.width)
            except OSError as exc:
                raise DatasetError(f"{paths[0][c]}: cannot read image header ({exc})") from exc
        for f, fid in enumerate(frame_ids):
            for c in range(num_cams):
                self.records.append(
                    FrameRecord(
                        K=Ks[c],
                        w2c=w2cs[c],
                        body=bodies[f],
                        frame_id=fid,
                        camera_id=camera_ids[c],
                        source=str(paths[f][c]),
                        size=sizes[c],
                        paths={"image": paths[f][c], "camera_position": c},
                    )
                )

        # ---- protocol and splits (§1E)
        if protocol == "auto":
            protocol = "refined" if self.refined else "mono_3dgs_avatar"
        self.protocol_name = protocol
        self.protocol = chosen_eval if chosen_eval is not None else protocol_for("zju_mocap", _EVAL_PRESETS[protocol])
        self._finish_splits(
            self._make_splits(protocol, train_cameras, train_frames, int(test_every), len(frame_ids), num_cams)
        )

    # -- annotations ------------------------------------------------------------------------------

    @staticmethod
    def _check_annots(annots: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if "cams" not in annots or "ims" not in annots:
            raise DatasetError(f"{path}: expected keys 'cams' and 'ims', got {sorted(annots)}")
        cams = annots["cams"]
        if not isinstance(cams, dict) or any(k not in cams for k in ("K", "D", "R", "T")):
            raise DatasetError(f"{path}: 'cams' must be a dict with lists 'K', 'D', 'R', 'T'")
        lengths = {k: len(cams[k]) for k in ("K", "D", "R", "T")}
        if len(set(lengths.values())) != 1 or lengths["K"] == 0:
            raise DatasetError(f"{path}: camera lists have lengths {lengths}; expected one entry per camera in each")
        num_cams = lengths["K"]
        ims = list(annots["ims"])
        if not ims:
            raise DatasetError(f"{path}: 'ims' is empty; expected one entry per frame")
        for f, entry in enumerate(ims):
            if not isinstance(entry, dict) or "ims" not in entry:
                raise DatasetError(f"{path}: ims[{f}] must be a dict with an 'ims' list of image paths")
            if len(entry["ims"]) != num_cams:
                raise DatasetError(
                    f"{path}: frame position {f} lists {len(entry['ims'])} images, expected one for each of the "
                    f"{num_cams} cameras"
                )
        return cams, ims

    @staticmethod
    def _detect_refined(ims: list[dict[str, Any]], path: Path) -> bool:
        first = Path(str(ims[0]["ims"][0]))
        return len(first.parts) >= 3 and first.parts[-3] == "images"

    @staticmethod
    def _labels(rel: str, annots_path: Path) -> tuple[int, int]:
        """Camera label (0-based physical camera) and frame number of an image path."""
        p = Path(rel)
        folder = p.parent.name
        if (m := _CAM_RAW.match(folder)) or (m := _CAM_313.match(folder)):
            camera_id = int(m.group(1)) - 1
        elif folder.isdigit():
            camera_id = int(folder)
        else:
            raise DatasetError(
                f"{annots_path}: cannot read a camera from '{rel}'; expected Camera_B<n>/, 'Camera (n)/' or images/<cc>/"
            )
        stem = p.stem
        tokens = stem.split("_")
        if stem.isdigit():
            frame_id = int(stem)
        elif len(tokens) >= 5 and tokens[4].isdigit():
            # 313/315: CoreView_313_Camera_(1)_0001_<time>.jpg -> 1-based frame number (§1A).
            frame_id = int(tokens[4])
        else:
            raise DatasetError(
                f"{annots_path}: cannot read a frame number from '{rel}'; expected '<frame>.jpg' or the 313/315 "
                "'CoreView_313_Camera_(n)_<frame>_<time>.jpg' form"
            )
        return camera_id, frame_id

    def _params_dir(self, smpl_params: str) -> Path:
        assert self.root is not None
        if smpl_params == "auto":
            names = ["smpl_params"] if self.refined else ["new_params", "params"]
            for name in names:
                if (self.root / name).is_dir():
                    return self.root / name
            raise MissingFileError(
                f"{self.root}: no SMPL parameter folder; expected one of {', '.join(names)}/<frame>.npy"
            )
        folder = self.root / smpl_params
        if not folder.is_dir():
            raise MissingFileError(f"{folder}: SMPL parameter folder not found (smpl_params={smpl_params!r})")
        return folder

    def _load_body(self, path: Path) -> dict[str, np.ndarray]:
        params = load_npy_dict(path, "an EasyMocap SMPL dict {poses (1,72), Rh (1,3), Th (1,3), shapes (1,10)}")
        poses = _param_array(params, "poses", 72, path)
        Rh = _param_array(params, "Rh", 3, path)
        Th = _param_array(params, "Th", 3, path)
        betas = _param_array(params, "shapes", None, path)
        J0 = self._pelvis(betas)
        R_h = axis_angle_to_matrix(Rh)
        # poses[:3] is zero in EasyMocap fits; compose it anyway so a non-zero root is kept.
        global_orient = matrix_to_axis_angle(R_h @ axis_angle_to_matrix(poses[:3])) if np.any(poses[:3]) else Rh
        transl = Th + (R_h - np.eye(3)) @ J0
        return {"betas": betas, "global_orient": global_orient, "body_pose": poses[3:72], "transl": transl}

    def _pelvis(self, betas: np.ndarray) -> np.ndarray:
        key = tuple(np.round(betas, 12).tolist())
        if key not in self._pelvis_cache:
            self._pelvis_cache[key] = rest_joints(self.body_models, betas, "smpl", self.gender)[0]
        return self._pelvis_cache[key]

    # -- splits -------------------------------------------------------------------------------------

    def _make_splits(
        self,
        protocol: str,
        train_cameras: Sequence[int] | None,
        train_frames: Sequence[int] | None,
        test_every: int,
        num_frames: int,
        num_cams: int,
    ) -> dict[str, list[int]]:
        number = _subject_number(self.subject)
        default_n = max(1, min(num_frames - 1, math.ceil(0.8 * num_frames))) if num_frames > 1 else num_frames
        step = 1
        if protocol == "mono_3dgs_avatar":
            cams = [0]
            start, end = 0, default_n
            if number in _MONO_TRAIN_FRAMES:
                n = _MONO_TRAIN_FRAMES[number]
                end = num_frames if n is None else n
        elif protocol == "neuralbody_4view":
            cams = [c for c in (0, 6, 12, 18) if c < num_cams]
            start, end = 0, default_n
            if number in _NB_TRAIN_FRAMES:
                start, end = _NB_TRAIN_FRAMES[number]
            elif number in _NB_SUBJECTS and num_frames > 300:
                start, end = 0, 300
        else:  # refined (Instant-NVR / GauHuman): 100 frames 0..495 step 5
            cams = [4] if num_cams > 4 else [0]
            start, end = 0, default_n
            if number in _REFINED_SUBJECTS and num_frames > 500:
                start, end, step = 0, 500, 5
        if train_cameras is not None:
            cams = [int(c) for c in train_cameras]
            bad = [c for c in cams if not 0 <= c < num_cams]
            if bad or not cams:
                raise ValueError(f"train_cameras {cams} invalid: the subject has camera positions 0..{num_cams - 1}")
        if train_frames is not None:
            if len(train_frames) not in (2, 3):
                raise ValueError(f"train_frames must be (start, end) or (start, end, step), got {train_frames!r}")
            start, end = int(train_frames[0]), int(train_frames[1])
            step = int(train_frames[2]) if len(train_frames) == 3 else 1
            if start < 0 or end <= start or step < 1:
                raise ValueError(f"train_frames {tuple(train_frames)} must satisfy 0 <= start < end, step >= 1")
        end = min(end, num_frames)
        start = min(start, max(end - 1, 0))

        def every(lo: int, hi: int) -> list[int]:
            if hi <= lo:
                return []
            return list(range(lo, hi, max(1, min(test_every, hi - lo))))

        train = list(range(start, end, step))
        view_frames = every(start, end)
        pose_frames = every(0, start) + every(end, num_frames)
        others = [c for c in range(num_cams) if c not in cams]

        def items(frame_list: Sequence[int], cam_list: Sequence[int]) -> list[int]:
            return [f * num_cams + c for f in frame_list for c in cam_list]

        splits = {
            "train": items(train, cams),
            # A single camera has no novel view; its held-out poses are seen from that camera.
            "test_view": items(view_frames, others),
            "test_pose": items(pose_frames, others or cams),
        }
        # model selection: novel views of training frames that no test split scores
        scored = set(view_frames)
        held_out_view_frames = [f for f in train if f not in scored]
        splits["val"] = evenly_spaced(items(held_out_view_frames, others), 4)
        return splits

    # -- pixels ---------------------------------------------------------------------------------

    def _mask_paths(self, image_path: Path) -> tuple[list[Path], list[Path]]:
        """Existing mask files to OR for an image, and every candidate looked at."""
        assert self.root is not None
        rel = image_path.relative_to(self.root)
        if self.refined:
            # §1B: images/<cc>/<f>.jpg -> mask/<cc>/<f>.png, else the SCHP parsing map.
            sub = Path(*rel.parts[1:]).with_suffix(".png")
            candidates = [self.root / "mask" / sub, self.root / "schp" / sub]
            found = [p for p in candidates if p.is_file()][:1]
        else:
            # §1A: mask_cihp/<image path>.png and mask/<image path>.png, OR-ed when both exist.
            names = ["mask_cihp", "mask"] if self.mask_source == "auto" else [self.mask_source]
            candidates = [self.root / name / rel.with_suffix(".png") for name in names]
            found = [p for p in candidates if p.is_file()]
        return found, candidates

    def mask_files(self, record: FrameRecord) -> list[Path]:
        """The mask files OR-ed for a record's image (missing: one error naming the candidates)."""
        image_path: Path = record.paths["image"]
        found, candidates = self._mask_paths(image_path)
        if not found:
            raise MissingFileError(
                f"{image_path}: no mask found; expected {' or '.join(str(p) for p in candidates)}"
            )
        return found

    def _read(self, record: FrameRecord) -> NativeFrame:
        image_path: Path = record.paths["image"]
        image = read_image_rgb(image_path)
        found = self.mask_files(record)
        mask = np.zeros(image.shape[:2], dtype=bool)
        for mp in found:
            m = read_mask_png(mp)
            if m.shape != image.shape[:2]:
                raise DatasetError(f"{mp}: mask has shape {m.shape}, expected the image size {image.shape[:2]}")
            mask |= m != 0
        c = record.paths["camera_position"]
        D = self._D[c]
        if self.undistort and np.any(D != 0):
            key = (c, image.shape[0], image.shape[1])
            table = self._tables.pop(key, None)
            if table is None:
                table = RemapTable(*undistortion_maps(record.K, D, image.shape[:2]), image.shape[:2])
            self._tables[key] = table  # most recently used last
            while len(self._tables) > _MAX_TABLES:
                self._tables.pop(next(iter(self._tables)))
            image = table(image)
            mask = table(mask.astype(np.uint8), nearest=True).astype(bool)
        return NativeFrame(image=image, mask=mask)
