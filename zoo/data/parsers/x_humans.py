"""X-Humans parser (DATASETS.md §4A–§4D).

Reads one subject folder (``00016`` … ``00088``)::

    <subject>/gender.txt                                first line 'male' | 'female'
    <subject>/mean_shape_smplx.npy                      (10,) SMPL-X betas used for every frame
    <subject>/{train,test}/Take<n>/render/image/color_XXXXXX.png   6-digit, 1-based k
    <subject>/{train,test}/Take<n>/render/depth/depth_XXXXXX.tiff  float32, background = max value
    <subject>/{train,test}/Take<n>/render/cameras.npz   intrinsic (3,3), extrinsic (N,4,4) w2c OpenCV
    <subject>/{train,test}/Take<n>/SMPLX/mesh-fXXXXX_smplx.pkl     5-digit k, latin1 pickle

Quirks handled:

* ``extrinsic[i]`` belongs to the i-th image in sorted order; the counts must agree (§4B, as
  ExAvatar asserts). Every frame has its own viewpoint.
* Foreground mask = ``depth < depth.max()`` (§4B, ExAvatar); the returned ``depth`` has the
  background set to 0.
* SMPL-X parameters (§4B): ``global_orient`` (3,), ``transl`` (3,), ``body_pose`` (63,), full
  45-D axis-angle hands, ``jaw_pose``/``leye_pose``/``reye_pose`` (3,), ``expression`` (10,),
  in the world frame of ``cameras.npz``; betas come from ``mean_shape_smplx.npy`` (the dataset
  README says so), not from the per-frame ``betas``, unless ``betas="per_frame"``.
* Image ``color_{k:06d}`` ↔ depth ``depth_{k:06d}`` ↔ ``mesh-f{k:05d}_smplx.pkl``.

Labels: takes repeat frame numbers, so ``frame_id = take_number * 100000 + k`` (unique per
subject; ``Take14`` frame 11 -> 1400011). ``camera_id`` is the item's running index (one label
per physical camera, and every frame has its own camera on the capture circle).

Splits (§4C): train = all ``train/Take*`` frames, test_pose = all ``test/Take*`` frames (novel
poses from the per-frame camera), test_view empty, val = up to 4 evenly spaced train frames.
Protocol (§4D): the ``"x_humans"`` preset of :mod:`zoo.data.protocols` (ExAvatar: full 800x1200
images composited on white with the depth mask, AlexNet LPIPS on inputs scaled to [−1, 1]).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile
from PIL import Image

from zoo.data.schema import (
    BODY_KEYS_SMPLX,
    DatasetError,
    FrameRecord,
    FrameSequence,
    MissingFileError,
    NativeFrame,
    evenly_spaced,
    read_image_rgb,
    require_dir,
    require_file,
    subject_dir,
)
from zoo.data.protocols import protocol_for

__all__ = ["XHumans", "FRAME_ID_TAKE_FACTOR"]

#: frame_id = take_number * FRAME_ID_TAKE_FACTOR + k.
FRAME_ID_TAKE_FACTOR = 100000

_TAKE = re.compile(r"^Take(\d+)$")
_COLOR = re.compile(r"^color_(\d+)$")
_SMPLX_DIMS = {k: v for k, v in BODY_KEYS_SMPLX.items() if k != "betas"}


def _load_pkl(path: Path) -> dict[str, Any]:
    require_file(path, "an X-Humans SMPL-X parameter pickle (mesh-fXXXXX_smplx.pkl)")
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, AttributeError, ImportError) as exc:
        raise DatasetError(f"{path}: cannot unpickle ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict of SMPL-X parameters, got {type(data).__name__}")
    return data


class XHumans(FrameSequence):
    """One X-Humans subject; see the module docstring.

    Args:
        root: the subject folder (or the dataset folder with ``subject=``).
        subject: subject folder name inside ``root`` (e.g. ``"00034"``), optional.
        betas: ``"mean"`` (``mean_shape_smplx.npy``) or ``"per_frame"`` (the pickles' betas).
        frame_step: keep every ``frame_step``-th frame of each take.
        eval_protocol: evaluation preset (:mod:`zoo.data.protocols`), one of
            ``DATASET_PROTOCOLS["x_humans"]``; None = ``"x_humans"`` (ExAvatar).
        resolution: output ``(H, W)``, see :class:`FrameSequence`.
        downscale: output = native / downscale.
        crop: crop box, see :class:`FrameSequence`.

    Raises:
        MissingFileError: missing subject folder, gender.txt, mean shape, take files.
        DatasetError: camera / image count mismatch, wrong-shaped parameters, repeated frame ids.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        subject: str | None = None,
        betas: str = "mean",
        frame_step: int = 1,
        eval_protocol: str | None = None,
        resolution: Sequence[int] | None = None,
        downscale: float | None = None,
        crop: str | Sequence[int] | None = None,
    ) -> None:
        super().__init__(resolution=resolution, downscale=downscale, crop=crop)
        self.protocol = protocol_for("x_humans", eval_protocol)
        root = subject_dir(root, subject, "an X-Humans subject folder with gender.txt, train/ and test/")
        if betas not in ("mean", "per_frame"):
            raise ValueError(f"betas must be 'mean' or 'per_frame', got {betas!r}")
        if int(frame_step) < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step!r}")
        self.root = root
        self.subject = root.name
        self.model_type = "smplx"

        gender_path = require_file(root / "gender.txt", "the subject's gender ('male' or 'female') on its first line")
        lines = gender_path.read_text().splitlines()
        gender = lines[0].strip().lower() if lines else ""
        if gender not in ("male", "female", "neutral"):
            raise DatasetError(f"{gender_path}: first line is {gender!r}, expected 'male' or 'female'")
        self.gender = gender
        mean_betas: np.ndarray | None = None
        if betas == "mean":
            shape_path = require_file(root / "mean_shape_smplx.npy", "(10,) SMPL-X betas")
            mean_betas = np.asarray(np.load(shape_path), dtype=np.float64).reshape(-1)
            if mean_betas.ndim != 1 or mean_betas.size == 0:
                raise DatasetError(f"{shape_path}: expected (10,) betas, got shape {mean_betas.shape}")

        split_items: dict[str, list[int]] = {"train": [], "test": []}
        seen: dict[int, str] = {}
        for split in ("train", "test"):
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            takes = []
            for take_dir in split_dir.iterdir():
                m = _TAKE.match(take_dir.name)
                if take_dir.is_dir() and m:
                    takes.append((int(m.group(1)), take_dir))
            for take_number, take_dir in sorted(takes):
                for rec in self._read_take(take_dir, take_number, mean_betas, int(frame_step)):
                    if rec.frame_id in seen:
                        raise DatasetError(
                            f"{rec.source}: frame id {rec.frame_id} repeats {seen[rec.frame_id]}; "
                            "take numbers must be unique within a subject"
                        )
                    seen[rec.frame_id] = rec.source
                    rec.camera_id = len(self.records)
                    split_items[split].append(len(self.records))
                    self.records.append(rec)
        if not self.records:
            raise DatasetError(f"{root}: no frames found; expected train/Take<n>/render/image/color_XXXXXX.png")

        self._finish_splits(
            {
                "train": split_items["train"],
                "val": evenly_spaced(split_items["train"], 4),
                "test_view": [],
                "test_pose": split_items["test"],
            }
        )

    def _read_take(
        self, take_dir: Path, take_number: int, mean_betas: np.ndarray | None, frame_step: int
    ) -> list[FrameRecord]:
        image_dir = require_dir(take_dir / "render" / "image", "color_XXXXXX.png renders")
        depth_dir = require_dir(take_dir / "render" / "depth", "depth_XXXXXX.tiff renders")
        smplx_dir = require_dir(take_dir / "SMPLX", "mesh-fXXXXX_smplx.pkl parameters")
        cam_path = require_file(take_dir / "render" / "cameras.npz", "intrinsic (3,3), extrinsic (N,4,4)")
        try:
            with np.load(cam_path) as cams:
                K = np.asarray(cams["intrinsic"], dtype=np.float64)
                extrinsic = np.asarray(cams["extrinsic"], dtype=np.float64)
        except KeyError as exc:
            raise DatasetError(f"{cam_path}: missing {exc}; expected intrinsic (3,3), extrinsic (N,4,4)") from exc
        except (OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"{cam_path}: cannot load ({exc})") from exc
        images = sorted(p for p in image_dir.glob("color_*.png"))
        if not images:
            raise DatasetError(f"{image_dir}: no color_XXXXXX.png images")
        if K.shape != (3, 3) or extrinsic.ndim != 3 or extrinsic.shape[1:] != (4, 4):
            raise DatasetError(f"{cam_path}: intrinsic {K.shape}, extrinsic {extrinsic.shape}; expected (3,3), (N,4,4)")
        if extrinsic.shape[0] != len(images):
            raise DatasetError(
                f"{cam_path}: {extrinsic.shape[0]} extrinsics for {len(images)} images in {image_dir}; "
                "expected one per image in sorted order"
            )
        try:
            with Image.open(images[0]) as im:
                size = (im.height, im.width)
        except OSError as exc:
            raise DatasetError(f"{images[0]}: cannot read image header ({exc})") from exc
        records = []
        for i, image_path in enumerate(images):
            if i % frame_step:
                continue
            m = _COLOR.match(image_path.stem)
            if m is None:
                raise DatasetError(f"{image_path}: expected the name color_XXXXXX.png")
            k = int(m.group(1))
            depth_path = depth_dir / f"depth_{k:06d}.tiff"
            if not depth_path.is_file():
                raise MissingFileError(f"{depth_path}: missing depth render for {image_path.name}")
            pkl_path = smplx_dir / f"mesh-f{k:05d}_smplx.pkl"
            params = _load_pkl(pkl_path)
            body: dict[str, np.ndarray] = {}
            for key, dim in _SMPLX_DIMS.items():
                if key not in params:
                    raise DatasetError(f"{pkl_path}: missing '{key}'; expected the SMPL-X keys of DATASETS.md §4B")
                arr = np.asarray(params[key], dtype=np.float64).reshape(-1)
                if dim is not None and arr.shape != (dim,):
                    raise DatasetError(f"{pkl_path}: '{key}' has shape {np.shape(params[key])}, expected ({dim},)")
                body[key] = arr
            if mean_betas is not None:
                body["betas"] = mean_betas
            else:
                if "betas" not in params:
                    raise DatasetError(f"{pkl_path}: missing 'betas' (betas='per_frame')")
                body["betas"] = np.asarray(params["betas"], dtype=np.float64).reshape(-1)
            records.append(
                FrameRecord(
                    K=K, w2c=extrinsic[i], body=body, frame_id=take_number * FRAME_ID_TAKE_FACTOR + k, camera_id=0,
                    source=str(image_path), size=size, paths={"image": image_path, "depth": depth_path},
                )
            )
        return records

    def _read(self, record: FrameRecord) -> NativeFrame:
        image = read_image_rgb(record.paths["image"])
        depth_path: Path = record.paths["depth"]
        try:
            depth = np.asarray(tifffile.imread(depth_path), dtype=np.float32)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise DatasetError(f"{depth_path}: cannot read depth tiff ({exc})") from exc
        if depth.ndim == 3:
            depth = depth[..., 0] if depth.shape[-1] < depth.shape[0] else depth[0]
        if depth.shape != image.shape[:2]:
            raise DatasetError(f"{depth_path}: depth has shape {depth.shape}, expected the image size {image.shape[:2]}")
        mask = depth < depth.max()  # §4B: background pixels hold the maximum value
        depth = np.where(mask, depth, 0.0).astype(np.float32)
        return NativeFrame(image=image, mask=mask, depth=depth)
