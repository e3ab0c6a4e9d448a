"""NeuMan parser (DATASETS.md §3A–§3E).

Reads one sequence folder (``bike``, ``citron``, ``jogging``, ``lab``, ``parkinglot``,
``seattle`` or any folder in that layout)::

    <seq>/images/00000.png                 COLMAP-undistorted frames
    <seq>/sparse/cameras.txt, images.txt   COLMAP text model (points3D.txt is not needed)
    <seq>/segmentations/00000.png          person mask, inverted (0 = human); 00000.png.npy first
    <seq>/smpl_output_optimized.pkl        joblib dict {1: {'pose': [N x (72,)], 'betas': [N x (10,)]}}
    <seq>/alignments.npy                   {basename: (4,3)} SMPL -> COLMAP world
    <seq>/{train,val,test}_split.txt       optional; generated with the §3C rule when absent
    <seq>/mono_depth/00000.png             optional 16-bit monocular depth (/10000)

Quirks handled:

* COLMAP headers are checked verbatim as ml-neuman does (§3B). Camera models PINHOLE and
  SIMPLE_PINHOLE are read directly; SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV only when
  every distortion coefficient is zero (the release is undistorted; anything else raises).
* ``images.txt`` holds w2c quaternions (w, x, y, z) and T for registered images only; items
  are those images sorted by NAME (ml-neuman's capture order, §3B), ``frame_id = int(stem)``,
  ``camera_id = CAMERA_ID − 1``.
* Segmentations are inverted (§3B): values below half of their range are the person; PNG or
  ``<name>.npy`` (checked first), 1- or 3-channel.
* ``smpl_output_optimized.pkl`` is a joblib file (numpy arrays stored after their pickled
  wrappers); it is read here without joblib (:func:`load_joblib`), also plain pickles. It is
  indexed by ``frame_id``, not by capture position (§3B ``read_smpls``).
* ``alignments.npy``: world vertices are ``[v, 1] @ A`` for SMPL vertices ``v`` with zero
  translation, i.e. ``v_world = s·R·v + t`` with ``A[:3] = s·Rᵀ`` and ``A[3] = t``. The COLMAP
  world is kept as it is (no rescaling) and the body is brought into it: since standard SMPL's
  ``global_orient`` rotates about the pelvis J0, ``SMPL(go', θ, 0) = R·SMPL(go, θ, 0) + (I − R)·J0``
  with ``go' = R ∘ go``, hence ``v_world = s·SMPL(go', θ, 0) + t − s·(I − R)·J0``. The body dict
  carries ``global_orient = go'``, ``transl = t − s·(I − R)·J0`` and ``scale = [s]``, meaning the
  body model's output with ``transl = 0`` is multiplied by ``scale`` and then ``transl`` is added.
* Splits (§3C): the split files list basenames, one per line; without them
  ``num_val = N // 5; length = int((1 / num_val) * N); offset = length // 2;
  val_all = range(N)[offset::length]; test = val_all[:len // 2]; val = val_all[len // 2:]``
  (N < 5: everything is train). ``test_pose`` = test frames (held-out time steps seen from their
  own COLMAP camera), ``val`` = val frames, ``test_view`` is empty.

Protocol (§3E): the ``"neuman"`` preset of :mod:`zoo.data.protocols` (ExAvatar: human only,
prediction and ground truth composited on white with the mask, full native image, AlexNet LPIPS on
inputs scaled to [−1, 1]); ``eval_protocol="neuman_hugs"`` (HUGS, mask-bbox crop) or
``"neuman_full_scene"`` (ml-neuman, whole image with the scene) for the other papers' numbers.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import warnings
import zlib
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
    load_npy_dict,
    read_image_rgb,
    read_mask_png,
    require_dir,
    require_file,
    subject_dir,
)
from zoo.data.protocols import protocol_for

__all__ = [
    "NeuMan",
    "CAMERAS_HEADER",
    "IMAGES_HEADER",
    "read_cameras_txt",
    "read_images_txt",
    "load_joblib",
    "neuman_split_indices",
]

#: Header lines of COLMAP's cameras.txt (the third is "# Number of cameras: K").
CAMERAS_HEADER = (
    "# Camera list with one line of data per camera:",
    "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
)
#: Header lines of COLMAP's images.txt (the fourth is "# Number of images: N, mean observations ...").
IMAGES_HEADER = (
    "# Image list with two lines of data per image:",
    "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
    "#   POINTS2D[] as (X, Y, POINT3D_ID)",
)

# model -> (number of params, index of fx, fy (None = same as fx), cx, cy, first distortion index)
_MODELS: dict[str, tuple[int, int, int | None, int, int, int]] = {
    "SIMPLE_PINHOLE": (3, 0, None, 1, 2, 3),
    "PINHOLE": (4, 0, 1, 2, 3, 4),
    "SIMPLE_RADIAL": (4, 0, None, 1, 2, 3),
    "RADIAL": (5, 0, None, 1, 2, 3),
    "OPENCV": (8, 0, 1, 2, 3, 4),
    "FULL_OPENCV": (12, 0, 1, 2, 3, 4),
}


def _header(lines: list[str], expected: Sequence[str], count_prefix: str, path: Path) -> int:
    """Check verbatim header lines and return the count announced by the last header line."""
    n = len(expected)
    got = [ln.rstrip("\r\n").rstrip() for ln in lines[: n + 1]]
    for i, exp in enumerate(expected):
        if i >= len(got) or got[i] != exp:
            raise DatasetError(
                f"{path}: header line {i + 1} is {got[i] if i < len(got) else '<missing>'!r}, expected {exp!r} "
                "(COLMAP text format)"
            )
    if len(got) <= n or not got[n].startswith(count_prefix):
        raise DatasetError(f"{path}: header line {n + 1} should start with {count_prefix!r}")
    try:
        return int(got[n][len(count_prefix) :].split(",")[0].strip())
    except ValueError as exc:
        raise DatasetError(f"{path}: cannot read the count in header line {n + 1} {got[n]!r}") from exc


def read_cameras_txt(path: Path) -> dict[int, dict[str, Any]]:
    """Read COLMAP ``cameras.txt`` into ``{camera_id: {"K", "width", "height", "model"}}``.

    Args:
        path: the cameras.txt file.

    Raises:
        MissingFileError: if missing.
        DatasetError: on a wrong header, a bad line, an unsupported model or non-zero distortion.
    """
    require_file(path, "COLMAP cameras.txt")
    lines = path.read_text().splitlines()
    count = _header(lines, CAMERAS_HEADER, "# Number of cameras:", path)
    cameras: dict[int, dict[str, Any]] = {}
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        try:
            cam_id, model, width, height = int(tok[0]), tok[1], int(tok[2]), int(tok[3])
            params = [float(t) for t in tok[4:]]
        except (IndexError, ValueError) as exc:
            raise DatasetError(
                f"{path}:{lineno}: cannot parse camera line {line!r}; expected CAMERA_ID MODEL W H PARAMS"
            ) from exc
        if model not in _MODELS:
            raise DatasetError(f"{path}:{lineno}: camera model {model} is not supported; expected one of {sorted(_MODELS)}")
        nparam, ifx, ify, icx, icy, idist = _MODELS[model]
        if len(params) != nparam:
            raise DatasetError(f"{path}:{lineno}: {model} needs {nparam} parameters, got {len(params)}")
        if any(p != 0.0 for p in params[idist:]):
            raise DatasetError(
                f"{path}:{lineno}: camera {cam_id} ({model}) has non-zero distortion {params[idist:]}; NeuMan images "
                "are expected undistorted (PINHOLE); undistort them with COLMAP first"
            )
        fx = params[ifx]
        fy = params[ify] if ify is not None else fx
        K = np.array([[fx, 0.0, params[icx]], [0.0, fy, params[icy]], [0.0, 0.0, 1.0]])
        cameras[cam_id] = {"K": K, "width": width, "height": height, "model": model}
    if count != len(cameras):
        raise DatasetError(f"{path}: header announces {count} cameras, found {len(cameras)}")
    return cameras


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def read_images_txt(path: Path) -> list[dict[str, Any]]:
    """Read COLMAP ``images.txt`` (registered images) into dicts with ``name``, ``w2c``, ``camera_id``.

    Args:
        path: the images.txt file.

    Returns:
        One dict per image, in file order: ``image_id``, ``name``, ``camera_id`` (COLMAP's),
        ``w2c`` ``[4, 4]`` (quaternion w, x, y, z and T are world-to-camera, OpenCV).

    Raises:
        MissingFileError: if missing.
        DatasetError: on a wrong header or a bad image line.
    """
    require_file(path, "COLMAP images.txt")
    lines = path.read_text().splitlines()
    count = _header(lines, IMAGES_HEADER, "# Number of images:", path)
    images: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line or line.startswith("#"):
            i += 1
            continue
        tok = line.split()
        try:
            image_id = int(tok[0])
            q = np.array([float(t) for t in tok[1:5]])
            t = np.array([float(v) for v in tok[5:8]])
            cam_id = int(tok[8])
            name = " ".join(tok[9:])
        except (IndexError, ValueError) as exc:
            raise DatasetError(
                f"{path}:{i + 1}: cannot parse image line {line!r}; expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"
            ) from exc
        if not name or np.linalg.norm(q) == 0:
            raise DatasetError(f"{path}:{i + 1}: image line {line!r} has no NAME or a zero quaternion")
        w2c = np.eye(4)
        w2c[:3, :3] = _quat_to_matrix(q)
        w2c[:3, 3] = t
        images.append({"image_id": image_id, "name": name, "camera_id": cam_id, "w2c": w2c})
        i += 2  # the next line holds the 2D points (possibly empty)
    if count != len(images):
        raise DatasetError(f"{path}: header announces {count} images, found {len(images)}")
    return images


# --------------------------------------------------------------------------------------------
# joblib files without joblib


class _JoblibArray:
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``: reads the bytes that follow it."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def read(self, fh: Any, path: Path) -> np.ndarray:
        dtype = np.dtype(self.dtype)
        shape = tuple(int(s) for s in self.shape)
        if dtype.hasobject:
            inner = _JoblibUnpickler(fh, path)
            return inner.load()
        if getattr(self, "numpy_array_alignment_bytes", None) is not None:
            pad = fh.read(1)
            if len(pad) != 1:
                raise DatasetError(f"{path}: truncated joblib array padding")
            fh.read(int.from_bytes(pad, "little"))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        data = fh.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise DatasetError(f"{path}: truncated joblib array data (expected {count * dtype.itemsize} bytes)")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if getattr(self, "order", "C") == "F":
            array = array.reshape(shape[::-1]).transpose()
        else:
            array = array.reshape(shape)
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        return array


class _JoblibUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-python unpickler (reads the file exactly) that turns joblib array wrappers into arrays."""

    dispatch = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, fh: Any, path: Path) -> None:
        super().__init__(fh, encoding="latin1")
        self._fh = fh
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("joblib") and name == "NumpyArrayWrapper":
            return _JoblibArray
        if module.startswith("joblib") and name == "NDArrayWrapper":
            raise DatasetError(f"{self._path}: joblib <= 0.9 multi-file pickles are not supported; re-save the file")
        return super().find_class(module, name)

    def load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        if isinstance(self.stack[-1], _JoblibArray):
            wrapper = self.stack.pop()
            self.stack.append(wrapper.read(self._fh, self._path))

    dispatch[pickle.BUILD[0]] = load_build


def load_joblib(path: Path) -> Any:
    """Load a ``joblib.dump`` file (uncompressed or zlib/gzip/bz2/xz/lzma) or a plain pickle.

    Args:
        path: the file.

    Raises:
        MissingFileError: if missing.
        DatasetError: if the file cannot be read.
    """
    require_file(path, "a joblib/pickle file")
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        elif raw[:3] == b"BZh":
            raw = bz2.decompress(raw)
        elif raw[:6] == b"\xfd7zXZ\x00" or raw[:3] == b"\x5d\x00\x00":
            raw = lzma.decompress(raw)
        elif raw[:1] == b"\x78":
            raw = zlib.decompress(raw)
        elif raw[:2] == b"ZF":
            raise DatasetError(f"{path}: joblib <= 0.9 compressed files are not supported; re-save the file")
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decompress ({exc})") from exc
    try:
        return _JoblibUnpickler(io.BytesIO(raw), path).load()
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure becomes a clear error
        raise DatasetError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc


def neuman_split_indices(num: int) -> dict[str, list[int]]:
    """ml-neuman's ``create_split_files`` rule over ``num`` sorted captures (DATASETS.md §3C).

    Args:
        num: N, the number of registered captures.

    Returns:
        ``{"train", "val", "test"}`` capture positions; with N < 5 (the rule would divide by
        zero) every capture is train.
    """
    num_val = num // 5
    if num_val == 0:
        return {"train": list(range(num)), "val": [], "test": []}
    length = int((1 / num_val) * num)  # replicated exactly (differs from num // num_val at N = 1245)
    offset = length // 2
    val_all = list(range(num))[offset::length]
    train = [i for i in range(num) if i not in set(val_all)]
    return {"train": train, "test": val_all[: len(val_all) // 2], "val": val_all[len(val_all) // 2 :]}


class NeuMan(FrameSequence):
    """One NeuMan sequence; see the module docstring.

    Args:
        root: the sequence folder (or the dataset folder with ``subject=``).
        subject: sequence folder name inside ``root``, optional.
        smpl_file: the SMPL estimate file (default ``smpl_output_optimized.pkl``).
        person_id: key of the person in the SMPL file (default: its only key, else 1).
        body_models: folder holding ``smpl/SMPL_NEUTRAL.pkl|npz`` (default ``$ZOO_BODY_MODELS``),
            needed for the pelvis J0 of the alignment conversion.
        mono_depth: return ``mono_depth/<name>`` / 10000 as ``depth`` when the folder exists.
        eval_protocol: evaluation preset (:mod:`zoo.data.protocols`), one of
            ``DATASET_PROTOCOLS["neuman"]``; None = ``"neuman"`` (ExAvatar).
        resolution: output ``(H, W)``, see :class:`FrameSequence`.
        downscale: output = native / downscale.
        crop: crop box, see :class:`FrameSequence`.

    Raises:
        MissingFileError: missing folder, COLMAP file, image, segmentation, SMPL file, alignments.
        DatasetError: bad COLMAP header/lines, distorted camera model, a frame without SMPL
            parameters or alignment, wrong-shaped arrays, split files naming unknown images.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        subject: str | None = None,
        smpl_file: str = "smpl_output_optimized.pkl",
        person_id: int | None = None,
        body_models: str | Path | None = None,
        mono_depth: bool = True,
        eval_protocol: str | None = None,
        resolution: Sequence[int] | None = None,
        downscale: float | None = None,
        crop: str | Sequence[int] | None = None,
    ) -> None:
        super().__init__(resolution=resolution, downscale=downscale, crop=crop)
        self.protocol = protocol_for("neuman", eval_protocol)
        root = subject_dir(root, subject, "a NeuMan sequence folder with images/, sparse/, segmentations/")
        self.root = root
        self.subject = root.name
        self.model_type = "smpl"
        self.gender = "neutral"
        self.body_models = body_models
        self._pelvis_cache: dict[tuple[float, ...], np.ndarray] = {}

        cameras = read_cameras_txt(root / "sparse" / "cameras.txt")
        images = sorted(read_images_txt(root / "sparse" / "images.txt"), key=lambda im: im["name"])
        if not images:
            raise DatasetError(f"{root / 'sparse' / 'images.txt'}: no registered images")
        image_dir = require_dir(root / "images", "images/<name>.png")
        seg_dir = require_dir(root / "segmentations", "segmentations/<name>.png (0 = human)")

        smpl_path = root / smpl_file
        smpl = load_joblib(smpl_path)
        if not isinstance(smpl, dict) or not smpl:
            raise DatasetError(f"{smpl_path}: expected a dict {{person_id: {{'pose': [...], 'betas': [...]}}}}")
        if person_id is None:
            person_id = next(iter(smpl)) if len(smpl) == 1 else 1
        if person_id not in smpl:
            raise DatasetError(f"{smpl_path}: no person {person_id!r}; keys are {sorted(smpl)}")
        person = smpl[person_id]
        if not isinstance(person, dict) or "pose" not in person or "betas" not in person:
            raise DatasetError(f"{smpl_path}: person {person_id} must hold 'pose' and 'betas' lists")
        align_path = root / "alignments.npy"
        alignments = load_npy_dict(align_path, "alignments.npy {basename: (4,3)}")

        depth_dir = root / "mono_depth"
        self.has_depth = bool(mono_depth) and depth_dir.is_dir()

        for im in images:
            name = im["name"]
            stem = Path(name).stem
            if not stem.isdigit():
                raise DatasetError(f"{root / 'sparse' / 'images.txt'}: image name {name!r} is not a frame number (00000.png)")
            frame_id = int(stem)
            if im["camera_id"] not in cameras:
                raise DatasetError(
                    f"{root / 'sparse' / 'images.txt'}: image {name} uses camera {im['camera_id']} missing from cameras.txt"
                )
            cam = cameras[im["camera_id"]]
            image_path = require_file(image_dir / name, f"the image registered as {name} in sparse/images.txt")
            seg_npy, seg_png = seg_dir / f"{name}.npy", seg_dir / name
            if not seg_npy.is_file() and not seg_png.is_file():
                raise MissingFileError(f"{seg_png}: missing segmentation (also looked for {seg_npy.name})")
            depth_path = depth_dir / name
            if self.has_depth:
                require_file(depth_path, "a 16-bit mono depth PNG for every registered image (mono_depth/)")
            body = self._body(person, frame_id, alignments.get(name), smpl_path, align_path, name)
            self.records.append(
                FrameRecord(
                    K=cam["K"], w2c=im["w2c"], body=body, frame_id=frame_id, camera_id=im["camera_id"] - 1,
                    source=str(image_path), size=(cam["height"], cam["width"]),
                    paths={"image": image_path, "seg": seg_npy if seg_npy.is_file() else seg_png,
                           "depth": depth_path if self.has_depth else None},
                )
            )

        self._finish_splits(self._splits([Path(r.source).name for r in self.records]))

    def _body(
        self, person: dict[str, Any], frame_id: int, A: Any, smpl_path: Path, align_path: Path, name: str
    ) -> dict[str, np.ndarray]:
        poses, betas_list = person["pose"], person["betas"]
        if frame_id >= len(poses) or frame_id >= len(betas_list):
            raise DatasetError(
                f"{smpl_path}: no SMPL parameters for frame {frame_id} ({name}); 'pose' has {len(poses)} entries "
                "and is indexed by frame number"
            )
        pose = np.asarray(poses[frame_id], dtype=np.float64).reshape(-1)
        betas = np.asarray(betas_list[frame_id], dtype=np.float64).reshape(-1)
        if pose.shape != (72,):
            raise DatasetError(f"{smpl_path}: pose of frame {frame_id} has shape {np.shape(poses[frame_id])}, expected (72,)")
        if A is None:
            raise DatasetError(f"{align_path}: no alignment for {name}; expected a (4,3) entry per registered image")
        A = np.asarray(A, dtype=np.float64)
        if A.shape != (4, 3):
            raise DatasetError(f"{align_path}: alignment of {name} has shape {A.shape}, expected (4, 3)")
        sR = A[:3].T  # [v, 1] @ A = (s R) v + t in column-vector form (§3B)
        det = np.linalg.det(sR)
        if det <= 0:
            raise DatasetError(f"{align_path}: alignment of {name} is not a scaled rotation (det {det:.3g})")
        s = float(np.cbrt(det))
        R = orthonormalize(sR / s)
        t = A[3]
        J0 = self._pelvis(betas)
        global_orient = matrix_to_axis_angle(R @ axis_angle_to_matrix(pose[:3]))
        transl = t - s * (np.eye(3) - R) @ J0
        return {
            "betas": betas, "global_orient": global_orient, "body_pose": pose[3:], "transl": transl,
            "scale": np.array([s]),
        }

    def _pelvis(self, betas: np.ndarray) -> np.ndarray:
        key = tuple(np.round(betas, 12).tolist())
        if key not in self._pelvis_cache:
            self._pelvis_cache[key] = rest_joints(self.body_models, betas, "smpl", "neutral")[0]
        return self._pelvis_cache[key]

    def _splits(self, names: list[str]) -> dict[str, list[int]]:
        assert self.root is not None
        files = {k: self.root / f"{k}_split.txt" for k in ("train", "val", "test")}
        if files["train"].is_file():
            position = {n: i for i, n in enumerate(names)}
            idx: dict[str, list[int]] = {}
            for key, path in files.items():
                idx[key] = []
                if not path.is_file():
                    continue
                for lineno, line in enumerate(path.read_text().splitlines(), start=1):
                    entry = line.strip()
                    if not entry:
                        continue
                    if entry not in position:
                        raise DatasetError(f"{path}:{lineno}: {entry!r} is not a registered image of sparse/images.txt")
                    idx[key].append(position[entry])
        else:
            idx = neuman_split_indices(len(names))
            if len(names) < 5:
                warnings.warn(f"{self.root}: {len(names)} captures (< 5): every frame is train, no test frames", stacklevel=3)
        return {"train": idx["train"], "val": idx["val"], "test_view": [], "test_pose": idx["test"]}

    def _read(self, record: FrameRecord) -> NativeFrame:
        image = read_image_rgb(record.paths["image"])
        seg_path: Path = record.paths["seg"]
        if seg_path.suffix == ".npy":
            try:
                seg = np.load(seg_path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise DatasetError(f"{seg_path}: cannot load segmentation ({exc})") from exc
            seg = np.asarray(seg, dtype=np.float64)
            if seg.ndim == 3:
                seg = seg.max(axis=2)
        else:
            seg = read_mask_png(seg_path, palette_index=False).astype(np.float64)
        if seg.shape != image.shape[:2]:
            raise DatasetError(f"{seg_path}: segmentation has shape {seg.shape}, expected the image size {image.shape[:2]}")
        # Inverted masks (§3B): 0 = human, 255 (or 1) = background.
        threshold = 127.5 if seg.max() > 1.0 else 0.5
        mask = seg < threshold
        depth = None
        if record.paths["depth"] is not None:
            dpath: Path = record.paths["depth"]
            try:
                with Image.open(dpath) as im:
                    depth = np.asarray(im, dtype=np.float64) / 10000.0
            except OSError as exc:
                raise DatasetError(f"{dpath}: cannot decode mono depth ({exc})") from exc
            if depth.ndim == 3:
                depth = depth[..., 0]
            if depth.shape != image.shape[:2]:
                raise DatasetError(f"{dpath}: depth has shape {depth.shape}, expected the image size {image.shape[:2]}")
            depth = depth.astype(np.float32)
        return NativeFrame(image=image, mask=mask, depth=depth)
