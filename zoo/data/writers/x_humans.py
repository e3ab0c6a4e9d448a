"""Write a capture as an X-Humans subject (DATASETS.md §4A–§4C).

Layout ``<out>/<5-digit id>/``: ``gender.txt``, ``mean_shape_smplx.npy`` (the capture's betas),
and per take ``{train,test}/Take<n>/``: ``render/image/color_{k:06d}.png``,
``render/depth/depth_{k:06d}.tiff`` (float32 metres, background = a far value greater than every
foreground depth, at least ``far_depth``), ``render/cameras.npz`` (intrinsic (3,3) shared by the
take, extrinsic (N,4,4) in sorted image order) and ``SMPLX/mesh-f{k:05d}_smplx.pkl`` (protocol-2
pickle with the §4B keys, per-frame ``betas`` = the capture's betas).

Takes and frame numbers: a frame id ``>= 100000`` is read as ``take * 100000 + k`` (the
parser's own ``frame_id`` convention, so ids round-trip); smaller ids go to ``train/Take1``
(``test/Take2`` for frames hinted ``test_pose``) with ``k = frame_id + 1`` (k is 1-based), and
the parser then reports ``take * 100000 + k``. Frames hinted ``test_pose`` go under ``test/``,
all others under ``train/``; a take number may not appear in both. Frames without depth get the
depth of the body's ``transl`` in that camera on their mask, so the depth-derived mask is exact.
Scan meshes (``meshes_pkl/``) and SMPL files are not written: no zoo loader reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from zoo.data.writers import (
    Capture,
    CaptureError,
    CaptureFrame,
    as_float,
    encode,
    staged_subject_dir,
    subject_number,
    write_bytes,
    write_npy,
    write_npz,
    write_pickle,
    write_png,
    write_text,
)

__all__ = ["write", "take_and_k"]

_FACTOR = 100000
_SMPLX_KEYS = (
    "global_orient", "transl", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "leye_pose",
    "reye_pose", "expression",
)


def take_and_k(frame_id: int, test: bool) -> tuple[int, int]:
    """Take number and 1-based frame number ``k`` a frame id is written as (see module docstring)."""
    if frame_id >= _FACTOR:
        take, k = divmod(int(frame_id), _FACTOR)
        if k < 1:
            raise CaptureError(f"frame id {frame_id}: k = frame_id % {_FACTOR} must be >= 1 (X-Humans k is 1-based)")
        return take, k
    if frame_id < 0:
        raise CaptureError(f"frame id {frame_id} must be >= 0")
    return (2 if test else 1), int(frame_id) + 1


def write(
    capture: Capture,
    out_dir: Path,
    *,
    subject_index: int | str | None = None,
    overwrite: bool = False,
    far_depth: float = 10.0,
) -> Path:
    """Write ``capture`` as one X-Humans subject.

    Args:
        capture: the subject (SMPL-X, one image per frame id, one K and image size per take).
        out_dir: the dataset folder.
        subject_index: subject number (folder ``{index:05d}``; default from ``capture.subject``).
        overwrite: replace an existing non-empty subject folder.
        far_depth: minimum background depth value.

    Returns:
        The subject folder.

    Raises:
        CaptureError: not SMPL-X, repeated frame ids, a take in both train and test, differing K
            or image size within a take, a mask without background, foreground depth <= 0.
    """
    if capture.model_type != "smplx":
        raise CaptureError(f"X-Humans stores SMPL-X parameters; got a {capture.model_type} capture")
    ids = [int(f.frame_id) for f in capture.frames]
    if len(set(ids)) != len(ids):
        raise CaptureError("X-Humans renders one image per frame: frame ids must be unique")
    test_ids = {int(i) for i in capture.splits.get("test_pose", [])}
    takes: dict[tuple[str, int], list[tuple[int, CaptureFrame]]] = {}
    for fr in capture.frames:
        test = int(fr.frame_id) in test_ids
        take, k = take_and_k(int(fr.frame_id), test)
        takes.setdefault(("test" if test else "train", take), []).append((k, fr))
    numbers = [t for _, t in takes]
    if len(set(numbers)) != len(numbers):
        raise CaptureError(f"take numbers {sorted(numbers)} appear under both train/ and test/")

    raw = capture.subject
    number = subject_number(capture, subject_index)
    folder = f"{int(number):05d}" if str(number).isdigit() else raw
    with staged_subject_dir(out_dir, folder, overwrite) as root:
        write_text(root / "gender.txt", f"{capture.gender}\n")
        write_npy(root / "mean_shape_smplx.npy", as_float(capture.betas).astype(np.float32))
        for (split, take), items in sorted(takes.items()):
            items.sort(key=lambda kf: kf[0])
            take_dir = root / split / f"Take{take}"
            K0 = np.asarray(items[0][1].K, dtype=np.float64)
            size0 = items[0][1].image.shape
            extrinsics = []
            for k, fr in items:
                if not np.allclose(fr.K, K0, atol=1e-9) or fr.image.shape != size0:
                    raise CaptureError(
                        f"frame {fr.frame_id}: X-Humans shares one intrinsic and image size per take ({split}/Take{take})"
                    )
                mask = np.asarray(fr.mask) > 0
                if mask.all():
                    raise CaptureError(f"frame {fr.frame_id}: the mask has no background; X-Humans masks are depth < max")
                if fr.depth is not None:
                    depth = np.asarray(fr.depth, dtype=np.float64)
                else:
                    transl = as_float(capture.poses[int(fr.frame_id)]["transl"])
                    z = float((np.asarray(fr.w2c, dtype=np.float64) @ np.append(transl, 1.0))[2])
                    depth = np.full(mask.shape, z)
                fg = depth[mask]
                if fg.size and fg.min() <= 0:
                    raise CaptureError(f"frame {fr.frame_id}: depth must be > 0 on the mask")
                far = max(float(far_depth), (float(fg.max()) * 1.5 + 1.0) if fg.size else 0.0)
                depth_out = np.where(mask, depth, far).astype(np.float32)
                write_png(take_dir / "render" / "image" / f"color_{k:06d}.png", fr.image)
                write_bytes(
                    take_dir / "render" / "depth" / f"depth_{k:06d}.tiff",
                    encode(lambda fh, d=depth_out: tifffile.imwrite(fh, d)),
                )
                pose = capture.poses[int(fr.frame_id)]
                params = {key: as_float(pose[key]).astype(np.float32) for key in _SMPLX_KEYS}
                params["betas"] = as_float(capture.betas).astype(np.float32)
                write_pickle(take_dir / "SMPLX" / f"mesh-f{k:05d}_smplx.pkl", params)
                extrinsics.append(np.asarray(fr.w2c, dtype=np.float64))
            write_npz(take_dir / "render" / "cameras.npz", intrinsic=K0, extrinsic=np.stack(extrinsics))
    return out_dir / folder
