"""PeopleSnapshot parser, InstantAvatar form (DATASETS.md §2B, protocol §2F).

Reads one subject folder::

    <subject>/cameras.npz            intrinsic (3,3), extrinsic (4,4) w2c, height, width
    <subject>/images/image_XXXX.png  undistorted frames, 4-digit 0-based
    <subject>/masks/mask_XXXX.npy    (H,W) uint8 {0,1}
    <subject>/poses.npz              betas (10,), thetas (N,72), transl (N,3)
    <subject>/poses/anim_nerf_{train,val,test}.npz   optional refined poses of each split

Quirks handled:

* ``extrinsic`` is used as stored: it is close to, but not exactly, the identity (§2B).
* Frame ranges are InstantAvatar's with an **inclusive** end (§2B table): female-3-casual
  train 0–445 step 4, val 446, test 446–647 step 4; female-4-casual 0–335/4, 335, 335–523/4;
  male-3-casual 0–455/4, 456, 456–675/4; male-4-casual 0–659/6, 660, 660–872/6. Other subject
  names use ``train = 0 .. n−1`` (``n = ceil(0.8 N)``, at most N − 1) every ``train_step``,
  ``val = n`` and ``test = n .. N−1`` every ``test_step``; ``frame_ranges=`` overrides both.
* ``poses/anim_nerf_{split}.npz`` holds exactly the frames of that split (M = slice length,
  §2B); when present (``pose_source="auto"``) its poses replace ``poses.npz`` for those frames
  (test over val over train where a frame is in several splits, as female-4-casual's frame 335)
  and its betas are used for every frame, the subject having one shape. Both files are standard
  SMPL (rotation about the root joint), gendered by the subject name.

Items are every frame ``0 .. N−1``; ``frame_id`` is the image number, ``camera_id`` 0.
Splits: train, val, test_pose = InstantAvatar's test frames (held-out poses of the same camera);
test_view is empty (monocular). Protocol (§2F): the ``"people_snapshot"`` preset of
:mod:`zoo.data.protocols` (InstantAvatar: full 540x540 images — pass ``downscale=2`` — white
background, AlexNet LPIPS fed [0, 1] as-is); ``eval_protocol="people_snapshot_3dgs_avatar"`` for
3DGS-Avatar's black background.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from zoo.data.schema import (
    DatasetError,
    FrameRecord,
    FrameSequence,
    MissingFileError,
    NativeFrame,
    read_image_rgb,
    require_dir,
    require_file,
    subject_dir,
)
from zoo.data.protocols import protocol_for

__all__ = ["PeopleSnapshot", "INSTANT_AVATAR_RANGES", "default_frame_ranges"]

#: InstantAvatar frame ranges (start, end inclusive, step), DATASETS.md §2B.
INSTANT_AVATAR_RANGES: dict[str, dict[str, tuple[int, int, int]]] = {
    "female-3-casual": {"train": (0, 445, 4), "val": (446, 446, 1), "test": (446, 647, 4)},
    "female-4-casual": {"train": (0, 335, 4), "val": (335, 335, 1), "test": (335, 523, 4)},
    "male-3-casual": {"train": (0, 455, 4), "val": (456, 456, 1), "test": (456, 675, 4)},
    "male-4-casual": {"train": (0, 659, 6), "val": (660, 660, 1), "test": (660, 872, 6)},
}

_NUMBER = re.compile(r"(\d+)$")


def default_frame_ranges(num_frames: int, train_step: int = 1, test_step: int = 1) -> dict[str, tuple[int, int, int]]:
    """The frame ranges used for subjects outside the InstantAvatar table (inclusive ends).

    Args:
        num_frames: N, the number of frames.
        train_step: step of the training frames.
        test_step: step of the test frames.

    Returns:
        ``{"train": (0, n-1, train_step), "val": (n, n, 1), "test": (n, N-1, test_step)}`` with
        ``n = ceil(0.8 N)`` clamped to ``[1, N-1]`` (val/test are empty ranges when N < 2).
    """
    n = max(1, min(num_frames - 1, math.ceil(0.8 * num_frames))) if num_frames > 1 else num_frames
    return {"train": (0, n - 1, int(train_step)), "val": (n, n, 1), "test": (n, num_frames - 1, int(test_step))}


def _frame_number(path: Path) -> int:
    match = _NUMBER.search(path.stem)
    if match is None:
        raise DatasetError(f"{path}: cannot read a frame number; expected names like image_0000.png / mask_0000.npy")
    return int(match.group(1))


def _npz(path: Path, keys: Sequence[str], what: str) -> dict[str, np.ndarray]:
    require_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot load ({exc}); expected {what}") from exc
    missing = [k for k in keys if k not in out]
    if missing:
        raise DatasetError(f"{path}: missing keys {missing}; expected {what}")
    for key in keys:
        arr = out[key]
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            rows = np.argwhere(~np.isfinite(arr.reshape(arr.shape[0] if arr.ndim > 1 else 1, -1)).any(axis=1))
            raise DatasetError(f"{path}: '{key}' has non-finite values in row(s) {rows[:5].ravel().tolist()}; "
                               f"expected finite numbers ({what})")
    return out


class PeopleSnapshot(FrameSequence):
    """One PeopleSnapshot subject in the InstantAvatar form; see the module docstring.

    Args:
        root: the subject folder (or the dataset folder with ``subject=``).
        subject: subject folder name inside ``root``, optional.
        frame_ranges: ``{"train" | "val" | "test": (start, end_inclusive[, step])}`` overriding the
            table / default rule (missing keys keep their default).
        train_step: step of the default rule's training frames (unknown subjects).
        test_step: step of the default rule's test frames (unknown subjects).
        pose_source: ``"auto"`` (anim_nerf files when present), ``"anim_nerf"`` (required) or
            ``"poses"`` (``poses.npz`` only).
        gender: ``"male"`` / ``"female"`` / ``"neutral"``; default from the subject name.
        eval_protocol: evaluation preset (:mod:`zoo.data.protocols`), one of
            ``DATASET_PROTOCOLS["people_snapshot"]``; None = ``"people_snapshot"`` (InstantAvatar).
        resolution: output ``(H, W)``, see :class:`FrameSequence`.
        downscale: output = native / downscale (2 gives the 540x540 protocol size).
        crop: crop box, see :class:`FrameSequence`.

    Raises:
        MissingFileError: missing folder, cameras.npz, poses.npz, image or mask folder.
        DatasetError: image / mask / pose count mismatch, wrong-shaped arrays, anim_nerf file whose
            length does not match its split.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        subject: str | None = None,
        frame_ranges: Mapping[str, Sequence[int]] | None = None,
        train_step: int = 1,
        test_step: int = 1,
        pose_source: str = "auto",
        gender: str | None = None,
        eval_protocol: str | None = None,
        resolution: Sequence[int] | None = None,
        downscale: float | None = None,
        crop: str | Sequence[int] | None = None,
    ) -> None:
        super().__init__(resolution=resolution, downscale=downscale, crop=crop)
        self.protocol = protocol_for("people_snapshot", eval_protocol)
        root = subject_dir(
            root, subject, "a PeopleSnapshot subject folder (InstantAvatar form) with cameras.npz, images/, masks/"
        )
        if pose_source not in ("auto", "anim_nerf", "poses"):
            raise ValueError(f"pose_source must be 'auto', 'anim_nerf' or 'poses', got {pose_source!r}")
        self.root = root
        self.subject = root.name
        self.model_type = "smpl"
        if gender is None:
            name = self.subject.lower()
            gender = "female" if name.startswith("female") else "male" if name.startswith("male") else "neutral"
        if gender not in ("male", "female", "neutral"):
            raise ValueError(f"gender must be 'male', 'female' or 'neutral', got {gender!r}")
        self.gender = gender

        # ---- camera (§2B: extrinsic used as stored)
        cam_path = root / "cameras.npz"
        cams = _npz(cam_path, ("intrinsic", "extrinsic", "height", "width"), "intrinsic (3,3), extrinsic (4,4), height, width")
        K = cams["intrinsic"].astype(np.float64)
        w2c = cams["extrinsic"].astype(np.float64)
        if K.shape != (3, 3) or w2c.shape != (4, 4):
            raise DatasetError(f"{cam_path}: intrinsic {K.shape}, extrinsic {w2c.shape}; expected (3,3) and (4,4)")
        self.height, self.width = int(cams["height"]), int(cams["width"])

        # ---- frames
        image_dir = require_dir(root / "images", "images/image_XXXX.png")
        mask_dir = require_dir(root / "masks", "masks/mask_XXXX.npy")
        images = sorted(image_dir.glob("*.png"))
        masks = sorted(mask_dir.glob("*.npy"))
        if not images:
            raise DatasetError(f"{image_dir}: no .png images; expected image_XXXX.png")
        if len(images) != len(masks):
            raise DatasetError(
                f"{mask_dir}: {len(masks)} masks for {len(images)} images in {image_dir}; expected one mask_XXXX.npy per image"
            )
        frame_ids = [_frame_number(p) for p in images]
        for img, msk in zip(images, masks):
            if _frame_number(img) != _frame_number(msk):
                raise DatasetError(f"{msk}: does not match {img.name}; expected masks/mask_XXXX.npy with the same numbers")
        num = len(images)

        # ---- poses (§2B)
        poses_path = root / "poses.npz"
        poses = _npz(poses_path, ("betas", "thetas", "transl"), "betas (10,), thetas (N,72), transl (N,3)")
        thetas, transl = poses["thetas"].astype(np.float64), poses["transl"].astype(np.float64)
        betas = poses["betas"].astype(np.float64).reshape(-1)
        if thetas.shape != (num, 72) or transl.shape != (num, 3):
            raise DatasetError(
                f"{poses_path}: thetas {thetas.shape}, transl {transl.shape}; expected ({num}, 72) and ({num}, 3) "
                f"for the {num} images"
            )
        bodies = [
            {"betas": betas, "global_orient": thetas[i, :3], "body_pose": thetas[i, 3:], "transl": transl[i]}
            for i in range(num)
        ]

        # ---- splits (§2B, inclusive ends)
        ranges = dict(INSTANT_AVATAR_RANGES.get(self.subject, default_frame_ranges(num, train_step, test_step)))
        for key, value in (frame_ranges or {}).items():
            if key not in ("train", "val", "test"):
                raise ValueError(f"frame_ranges keys must be 'train', 'val', 'test', got {key!r}")
            if len(value) not in (2, 3):
                raise ValueError(f"frame_ranges[{key!r}] must be (start, end_inclusive[, step]), got {value!r}")
            ranges[key] = (int(value[0]), int(value[1]), int(value[2]) if len(value) == 3 else 1)
        self.frame_ranges = ranges
        split_idx = {k: list(range(s, min(e, num - 1) + 1, st)) for k, (s, e, st) in ranges.items()}

        # ---- anim_nerf poses replace poses.npz for their split's frames
        self.pose_source = "poses"
        anim_betas: np.ndarray | None = None
        if pose_source != "poses":
            for split in ("train", "val", "test"):
                path = root / "poses" / f"anim_nerf_{split}.npz"
                if not path.is_file():
                    if pose_source == "anim_nerf":
                        raise MissingFileError(f"{path}: missing file; pose_source='anim_nerf' needs every split's file")
                    continue
                data = _npz(path, ("betas", "global_orient", "body_pose", "transl"),
                            "betas (1,10), global_orient (M,3), body_pose (M,69), transl (M,3)")
                idx = split_idx[split]
                m = len(idx)
                go, bp, tr = (data[k].astype(np.float64) for k in ("global_orient", "body_pose", "transl"))
                if go.shape != (m, 3) or bp.shape != (m, 69) or tr.shape != (m, 3):
                    start, end, step = ranges[split]
                    raise DatasetError(
                        f"{path}: global_orient {go.shape}, body_pose {bp.shape}, transl {tr.shape}; expected M = {m} "
                        f"rows for the {split} frames {start}..{end} step {step} (pass frame_ranges= if they differ)"
                    )
                split_betas = data["betas"].astype(np.float64).reshape(-1)
                if anim_betas is None:
                    anim_betas = split_betas
                for j, i in enumerate(idx):
                    bodies[i] = {"betas": split_betas, "global_orient": go[j], "body_pose": bp[j], "transl": tr[j]}
                self.pose_source = "anim_nerf"
        if anim_betas is not None:
            for body in bodies:
                body["betas"] = anim_betas

        for i, (img, msk) in enumerate(zip(images, masks)):
            self.records.append(
                FrameRecord(
                    K=K, w2c=w2c, body=bodies[i], frame_id=frame_ids[i], camera_id=0, source=str(img),
                    size=(self.height, self.width), paths={"image": img, "mask": msk},
                )
            )
        self._finish_splits(
            {"train": split_idx["train"], "val": split_idx["val"], "test_view": [], "test_pose": split_idx["test"]}
        )

    def _read(self, record: FrameRecord) -> NativeFrame:
        image = read_image_rgb(record.paths["image"])
        mask_path: Path = record.paths["mask"]
        try:
            mask = np.load(mask_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"{mask_path}: cannot load mask ({exc}); expected (H,W) uint8 {{0,1}}") from exc
        if mask.ndim == 3 and mask.shape[2] in (1, 3):
            mask = mask.max(axis=2)
        if mask.shape != image.shape[:2]:
            raise DatasetError(f"{mask_path}: mask has shape {mask.shape}, expected the image size {image.shape[:2]}")
        if image.shape[:2] != (self.height, self.width):
            raise DatasetError(
                f"{record.source}: image is {image.shape[1]}x{image.shape[0]}, cameras.npz says {self.width}x{self.height}"
            )
        return NativeFrame(image=image, mask=mask != 0)

    def describe(self) -> dict[str, Any]:
        """Frame ranges and pose source actually used (for logs)."""
        return {"frame_ranges": dict(self.frame_ranges), "pose_source": self.pose_source}
