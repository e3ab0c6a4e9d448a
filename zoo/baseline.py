"""The naive baseline every method is compared against: a copy of the nearest training frame.

For each test item, the training item that looks most like it is picked *without looking at the
test pixels*, from what a method is also given (cameras and body parameters), and its ground-truth
image, composited on the protocol's background with its own mask, is submitted as the prediction.
With the body model at hand (`body_models`), the copy is also moved and scaled in the image so
that the body's centre (the mean of its posed vertices) projects where it does in the test camera,
at the test camera's scale (focal length over depth): cameras that look at the person from
another place see it elsewhere in the frame, and an unaligned copy would mostly score the
silhouette mismatch. Without the body model the copy is taken as it is.
It is scored by the same `zoo.core.metrics.evaluate_images` call, on the same frames, under the
same protocol as the methods. A method that does not beat it has learnt nothing a lookup table
does not know. On a monocular subject that turns in front of its camera this baseline is strong
for novel views: some training frame shows the person from nearly the test camera's angle.

Nearness (smaller is nearer) is ``view_angle + pose_weight * pose_distance`` where

* ``view_angle`` (radians) is the angle between the directions from the person to the camera,
  both expressed in the body's root frame (``R_root^T (c - t)``, `c` the camera centre, `t` the
  body translation, `R_root` from ``global_orient``): the same side of the person, seen from a
  similar elevation, is near whatever the world camera is;
* ``pose_distance`` (radians) is the mean absolute difference of the ``body_pose`` axis-angle
  values.

The images are resized (bilinear) to the test item's size when they differ.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from zoo.core.metrics import EvalProtocol, MetricAccumulator, composite, evaluate_images

__all__ = ["aligned_copy", "body_centres", "nearest_frame_scores", "nearest_training_items", "viewpoint_in_body_frame"]


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle `[3]` -> rotation `[3, 3]`."""
    theta = float(np.linalg.norm(axis_angle))
    if theta < 1e-12:
        return np.eye(3)
    k = np.asarray(axis_angle, dtype=np.float64) / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(theta) * kx + (1.0 - np.cos(theta)) * kx @ kx


def viewpoint_in_body_frame(w2c: np.ndarray, body: Mapping[str, Any],
                            centre: Optional[np.ndarray] = None) -> np.ndarray:
    """Unit direction from the person to the camera in the body's root frame.

    Args:
        w2c: `[4, 4]` OpenCV world-to-camera.
        body: body parameters with ``global_orient [3]`` and ``transl [3]`` (missing: zeros).
        centre: the person's world position `[3]`; default ``transl``.

    Returns:
        `[3]` unit vector.
    """
    w2c = np.asarray(w2c, dtype=np.float64)
    camera = -w2c[:3, :3].T @ w2c[:3, 3]
    orient = np.asarray(body.get("global_orient", np.zeros(3)), dtype=np.float64).reshape(-1)[:3]
    if centre is None:
        centre = np.asarray(body.get("transl", np.zeros(3)), dtype=np.float64).reshape(-1)[:3]
    direction = _rotation(orient).T @ (camera - np.asarray(centre, dtype=np.float64))
    return direction / max(float(np.linalg.norm(direction)), 1e-12)


def body_centres(sequence, indices: Sequence[int], body_models: Any) -> Dict[int, np.ndarray]:
    """World position of each item's body: the mean of its posed vertices.

    Args:
        sequence: a `FrameSequence` (its records' body parameters are posed).
        indices: sequence indices.
        body_models: the body-model folder (see `zoo.core.body.BodyModel`).

    Returns:
        index -> `[3]` (float64).
    """
    from zoo.core.body import BodyModel

    body = BodyModel(model_type=sequence.model_type, model_path=body_models,
                     gender=getattr(sequence, "gender", "neutral"))
    out: Dict[int, np.ndarray] = {}
    indices = [int(i) for i in indices]
    with torch.no_grad():
        for start in range(0, len(indices), 64):
            chunk = indices[start:start + 64]
            keys = set.intersection(*(set(sequence.records[i].body) for i in chunk))
            params = {k: torch.as_tensor(np.stack([np.asarray(sequence.records[i].body[k], dtype=np.float32)
                                                   .reshape(-1) for i in chunk])) for k in keys}
            centres = body(params).vertices.mean(dim=1).double().numpy()
            out.update(zip(chunk, centres))
    return out


def nearest_training_items(sequence, test_indices: Sequence[int], train_indices: Sequence[int],
                           pose_weight: float = 1.0, centres: Optional[Mapping[int, np.ndarray]] = None) -> List[int]:
    """For each test item, the nearest training item (see the module docstring).

    Args:
        sequence: a `zoo.data.schema.FrameSequence` (only its parsed records are read).
        test_indices: sequence indices to find neighbours for.
        train_indices: candidate sequence indices.
        pose_weight: weight of the body-pose distance against the view angle.
        centres: optional `body_centres` of the items (default: their ``transl``).

    Returns:
        One training index per test index.

    Raises:
        ValueError: no training items.
    """
    train_indices = [int(i) for i in train_indices]
    if not train_indices:
        raise ValueError("nearest_training_items: the training split is empty")

    def features(i: int) -> Tuple[np.ndarray, np.ndarray]:
        rec = sequence.records[i]
        pose = np.asarray(rec.body.get("body_pose", np.zeros(3)), dtype=np.float64).reshape(-1)
        centre = None if centres is None else centres[i]
        return viewpoint_in_body_frame(rec.w2c, rec.body, centre), pose

    train_feats = [features(i) for i in train_indices]
    train_dirs = np.stack([d for d, _ in train_feats])
    train_poses = np.stack([p for _, p in train_feats])
    picks = []
    for i in test_indices:
        direction, pose = features(int(i))
        angle = np.arccos(np.clip(train_dirs @ direction, -1.0, 1.0))
        if pose.shape[0] == train_poses.shape[1]:
            angle = angle + pose_weight * np.abs(train_poses - pose[None]).mean(axis=1)
        picks.append(train_indices[int(np.argmin(angle))])
    return picks


def _project(K: np.ndarray, w2c: np.ndarray, point: np.ndarray) -> Tuple[np.ndarray, float]:
    """Pixel (OpenCV, pixel centres at integers) and depth of a world point."""
    cam = np.asarray(w2c, dtype=np.float64)[:3, :3] @ point + np.asarray(w2c, dtype=np.float64)[:3, 3]
    z = max(float(cam[2]), 1e-6)
    uv = (np.asarray(K, dtype=np.float64) @ (cam / z))[:2]
    return uv, z


def aligned_copy(image: torch.Tensor, mask: torch.Tensor, src: Tuple[np.ndarray, float, float],
                 dst: Tuple[np.ndarray, float, float], size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move and scale an image so that a point seen at `src` lands at `dst`.

    Args:
        image: `[1, 3, h, w]`; mask: `[1, 1, h, w]`.
        src, dst: ``(pixel [2], depth, focal)`` of the same body centre in the source (training)
            and destination (test) views; the scale is ``(f_dst / z_dst) / (f_src / z_src)``.
        size: output `(H, W)`.

    Returns:
        The warped image `[1, 3, H, W]` and mask `[1, 1, H, W]` (zero outside the source frame).
    """
    (u_s, z_s, f_s), (u_d, z_d, f_d) = src, dst
    scale = (f_d / z_d) / (f_s / z_s)
    H, W = size
    h, w = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    qx = u_s[0] + (xs - u_d[0]) / scale
    qy = u_s[1] + (ys - u_d[1]) / scale
    grid = torch.stack([(2 * qx + 1) / w - 1, (2 * qy + 1) / h - 1], dim=-1)[None].to(image.dtype)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped_mask = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped, warped_mask


def _item(dm, i: int) -> Dict[str, Any]:
    cache = getattr(dm, "cache", None)
    return cache.get(i) if cache is not None else dm.sequence[i]


def nearest_frame_scores(dm, splits: Sequence[str] = ("test_view", "test_pose"),
                         protocol: Optional[EvalProtocol] = None, pose_weight: float = 1.0,
                         lpips: Any = None, body_models: Any = None) -> Dict[str, Dict[str, float]]:
    """Score the copy-the-nearest-training-frame baseline on the test splits of a datamodule.

    Args:
        dm: an `AvatarDataModule` (set up or not).
        splits: the splits to score (empty or missing ones are skipped).
        protocol: the evaluation protocol; default the sequence's (``dm.protocol``).
        pose_weight: see `nearest_training_items`.
        lpips: LPIPS network for the metric (default the shared one of the protocol's backbone).
        body_models: the body-model folder; given, the copy is aligned to the test view's body
            centre and scale (see the module docstring), None: the plain copy.

    Returns:
        ``{split: {metric: mean value}}`` with the keys of `evaluate_images` (full image and person
        crop), plus ``"frames"`` (items scored).
    """
    if protocol is None:
        protocol = EvalProtocol(**dict(dm.protocol))
    background = protocol.background if protocol.background is not None else (0.0, 0.0, 0.0)
    seq = dm.sequence
    train = dm.split_indices(dm.train_split)
    wanted = {split: (dm.split_indices(split) if split in seq.splits else []) for split in splits}
    centres = None
    if body_models is not None:
        centres = body_centres(seq, sorted({*train, *(i for v in wanted.values() for i in v)}), body_models)
    results: Dict[str, Dict[str, float]] = {}
    for split, indices in wanted.items():
        if not indices:
            continue
        acc = MetricAccumulator()
        for test_i, train_i in zip(indices, nearest_training_items(seq, indices, train, pose_weight, centres)):
            target = _item(dm, test_i)
            source = _item(dm, train_i)
            size = tuple(target["image"].shape[-2:])
            image, mask = source["image"][None].float(), source["mask"][None].float()
            if centres is not None:
                ends = []
                for item, i in ((source, train_i), (target, test_i)):
                    K = item["K"].double().numpy()
                    uv, z = _project(K, item["w2c"].double().numpy(), centres[i])
                    ends.append((uv, z, float(np.sqrt(K[0, 0] * K[1, 1]))))
                image, mask = aligned_copy(image, mask, ends[0], ends[1], size)
            elif tuple(image.shape[-2:]) != size:
                image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
                mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=True)
            copy = composite(image, mask.clamp(0, 1), background)
            scores = evaluate_images(copy.clamp(0, 1), target["image"][None].float(), target["mask"][None].float(),
                                     protocol, lpips=lpips)
            acc.update(scores, n=1)
        values = acc.compute()
        values["frames"] = float(len(indices))
        results[split] = values
    return results
