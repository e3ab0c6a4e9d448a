"""The naive baseline every method is compared against: a copy of the nearest training frame.

For each test item, the training item that looks most like it is picked *without looking at the
test pixels*, from what a method is also given (cameras and body parameters), and its ground-truth
image, composited on the protocol's background with its own mask, is submitted as the prediction.
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

__all__ = ["nearest_frame_scores", "nearest_training_items", "viewpoint_in_body_frame"]


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle `[3]` -> rotation `[3, 3]`."""
    theta = float(np.linalg.norm(axis_angle))
    if theta < 1e-12:
        return np.eye(3)
    k = np.asarray(axis_angle, dtype=np.float64) / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(theta) * kx + (1.0 - np.cos(theta)) * kx @ kx


def viewpoint_in_body_frame(w2c: np.ndarray, body: Mapping[str, Any]) -> np.ndarray:
    """Unit direction from the person to the camera in the body's root frame.

    Args:
        w2c: `[4, 4]` OpenCV world-to-camera.
        body: body parameters with ``global_orient [3]`` and ``transl [3]`` (missing: zeros).

    Returns:
        `[3]` unit vector.
    """
    w2c = np.asarray(w2c, dtype=np.float64)
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    orient = np.asarray(body.get("global_orient", np.zeros(3)), dtype=np.float64).reshape(-1)[:3]
    transl = np.asarray(body.get("transl", np.zeros(3)), dtype=np.float64).reshape(-1)[:3]
    direction = _rotation(orient).T @ (centre - transl)
    return direction / max(float(np.linalg.norm(direction)), 1e-12)


def nearest_training_items(sequence, test_indices: Sequence[int], train_indices: Sequence[int],
                           pose_weight: float = 1.0) -> List[int]:
    """For each test item, the nearest training item (see the module docstring).

    Args:
        sequence: a `zoo.data.schema.FrameSequence` (only its parsed records are read).
        test_indices: sequence indices to find neighbours for.
        train_indices: candidate sequence indices.
        pose_weight: weight of the body-pose distance against the view angle.

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
        return viewpoint_in_body_frame(rec.w2c, rec.body), pose

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


def _item(dm, i: int) -> Dict[str, Any]:
    cache = getattr(dm, "cache", None)
    return cache.get(i) if cache is not None else dm.sequence[i]


def nearest_frame_scores(dm, splits: Sequence[str] = ("test_view", "test_pose"),
                         protocol: Optional[EvalProtocol] = None, pose_weight: float = 1.0,
                         lpips: Any = None) -> Dict[str, Dict[str, float]]:
    """Score the copy-the-nearest-training-frame baseline on the test splits of a datamodule.

    Args:
        dm: an `AvatarDataModule` (set up or not).
        splits: the splits to score (empty or missing ones are skipped).
        protocol: the evaluation protocol; default the sequence's (``dm.protocol``).
        pose_weight: see `nearest_training_items`.
        lpips: LPIPS network for the metric (default the shared one of the protocol's backbone).

    Returns:
        ``{split: {metric: mean value}}`` with the keys of `evaluate_images` (full image and person
        crop), plus ``"frames"`` (items scored).
    """
    if protocol is None:
        protocol = EvalProtocol(**dict(dm.protocol))
    background = protocol.background if protocol.background is not None else (0.0, 0.0, 0.0)
    seq = dm.sequence
    train = dm.split_indices(dm.train_split)
    results: Dict[str, Dict[str, float]] = {}
    for split in splits:
        indices = dm.split_indices(split) if split in seq.splits else []
        if not indices:
            continue
        acc = MetricAccumulator()
        for test_i, train_i in zip(indices, nearest_training_items(seq, indices, train, pose_weight)):
            target = _item(dm, test_i)
            source = _item(dm, train_i)
            copy = composite(source["image"][None].float(), source["mask"][None].float(), background)
            size = tuple(target["image"].shape[-2:])
            if tuple(copy.shape[-2:]) != size:
                copy = F.interpolate(copy, size=size, mode="bilinear", align_corners=False, antialias=True)
            scores = evaluate_images(copy.clamp(0, 1), target["image"][None].float(), target["mask"][None].float(),
                                     protocol, lpips=lpips)
            acc.update(scores, n=1)
        values = acc.compute()
        values["frames"] = float(len(indices))
        results[split] = values
    return results
