"""Procedural SMPL / SMPL-X body model files, for tests and the demo.

The real SMPL and SMPL-X files are licensed and cannot be shipped or downloaded here. This module
builds a plausible human body procedurally and writes it in the official file layouts (the keys
and array shapes that ``smplx`` reads), so the real ``smplx`` loading and LBS code runs on it:

* SMPL: exactly 6890 vertices and 24 joints; ``posedirs [V, 3, 207]``, ``shapedirs [V, 3, 10]``,
  a sparse ``J_regressor`` in the ``.pkl`` (like the original) and a dense one in the ``.npz``.
* SMPL-X: exactly 10475 vertices and 55 joints (22 body, jaw, two eyes, 2 x 15 finger joints);
  ``posedirs [V, 3, 486]``, ``shapedirs [V, 3, 20]`` (10 shape + 10 expression directions, the
  layout smplx falls back to when a file has fewer than 300 + 100 directions, as SMPL-X v1.0),
  hand PCA ``hands_components{l,r} [45, 45]`` and ``hands_mean{l,r} [45]``, face landmarks
  ``lmk_faces_idx [51]``, ``lmk_bary_coords [51, 3]``, ``dynamic_lmk_faces_idx [79, 17]``,
  ``dynamic_lmk_bary_coords [79, 17, 3]``.
* Both: UV coordinates ``vt [T, 2]`` and ``ft [F, 3]`` as extra keys (smplx ignores them), one
  non-overlapping rectangular chart per body part (the part's surface unrolled, one texel density
  for all parts), skyline-packed into ``[0, 1]^2``; the triangles cover about 80 % of the square.

The body (rest pose, metres, +y up, facing +z, subject's left = +x; pelvis joint near the origin
at y = -0.2, soles at y ~ -1.13, crown at y ~ +0.59) is a union of closed, outward-oriented
surfaces of revolution with elliptic / super-elliptic cross-sections, one per body part: torso,
neck, head, upper arms, forearms, hands (SMPL: mittens; SMPL-X: palms, 5 three-segment fingers
and eyeballs), thighs, shins and feet. Skinning weights blend smoothly between a bone and its
neighbours near each joint (rows sum to 1). Shape directions change stature, girth, leg length,
shoulder width, arm length, torso length, belly depth, hip width, head size and limb bulk; SMPL-X
expression directions move the mouth, cheeks, brows and eyelids. Pose correctives of joint ``j``
are small bulges along the normal, confined to the vertices that blend joint ``j`` with another
bone. The ``J_regressor`` rows sum to 1 and reproduce the joints exactly. Vertices at the
indices smplx uses for its extra keypoints (nose, eyes, ears, finger tips, toes, heels) sit at
those body landmarks.

The ``.pkl`` files store ``posedirs`` as a pickle expression (``numpy.bincount`` of its
non-zeros, reshaped) that any ``pickle.load`` turns back into the dense ``[V, 3, P]`` array, so
a file is a few MB rather than 60; ``.npz`` files are compressed.

Generation is deterministic from ``seed`` (the seed perturbs proportions by a few percent; male
bodies are taller with broader shoulders, female ones shorter with wider hips) and cached per
``(model_type, seed, gender)`` in-process. Like the official models, every seed and gender of a
model type shares one topology: faces, vertex order, UV layout and landmark faces. CLI::

    python -m zoo.core.synthetic_body --out DIR [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "NUM_VERTICES",
    "NUM_JOINTS",
    "SMPL_PARENTS",
    "SMPLX_PARENTS",
    "make_body_arrays",
    "write_body_model",
    "write_body_models",
    "uv_coverage",
    "main",
]

#: Bumped whenever the generated arrays change; part of the manifest that decides re-writing.
GENERATOR_VERSION = 1
#: Vertex count of each model type (as the official models).
NUM_VERTICES = {"smpl": 6890, "smplx": 10475}
#: Kinematic-tree joints of each model type.
NUM_JOINTS = {"smpl": 24, "smplx": 55}
#: Parent of each SMPL joint (root = -1).
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
#: Parent of each SMPL-X joint (root = -1): body 0-21, jaw 22, eyes 23-24, left hand 25-39
#: (index, middle, pinky, ring, thumb; three joints each), right hand 40-54.
SMPLX_PARENTS = SMPL_PARENTS[:22] + [15, 15, 15] + [
    p for base in (20, 21) for first in range(0, 15, 3)
    for p in (base, 25 + (0 if base == 20 else 15) + first, 26 + (0 if base == 20 else 15) + first)
]

_PREFIX = {"smpl": "SMPL", "smplx": "SMPLX"}
_GENDERS = ("neutral", "male", "female")
_MANIFEST = "synthetic_body.json"

# Joint indices shared by both models (body part of the tree).
_PELVIS, _LHIP, _RHIP, _SPINE1, _LKNEE, _RKNEE, _SPINE2, _LANKLE, _RANKLE, _SPINE3 = range(10)
_LFOOT, _RFOOT, _NECK, _LCOLLAR, _RCOLLAR, _HEAD, _LSHOULDER, _RSHOULDER = range(10, 18)
_LELBOW, _RELBOW, _LWRIST, _RWRIST = range(18, 22)
_SMPL_LHAND, _SMPL_RHAND = 22, 23
_JAW, _LEYE, _REYE = 22, 23, 24
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X order of the hand joints

# Vertex indices smplx reads for its extra keypoints (smplx/vertex_ids.py): SMPL uses "smplh".
_KEYPOINT_VERTICES = {
    "smpl": {
        "nose": 332, "reye": 6260, "leye": 2800, "rear": 4071, "lear": 583,
        "rthumb": 6191, "rindex": 5782, "rmiddle": 5905, "rring": 6016, "rpinky": 6133,
        "lthumb": 2746, "lindex": 2319, "lmiddle": 2445, "lring": 2556, "lpinky": 2673,
        "LBigToe": 3216, "LSmallToe": 3226, "LHeel": 3387,
        "RBigToe": 6617, "RSmallToe": 6624, "RHeel": 6787,
    },
    "smplx": {
        "nose": 9120, "reye": 9929, "leye": 9448, "rear": 616, "lear": 6,
        "rthumb": 8079, "rindex": 7669, "rmiddle": 7794, "rring": 7905, "rpinky": 8022,
        "lthumb": 5361, "lindex": 4933, "lmiddle": 5058, "lring": 5169, "lpinky": 5286,
        "LBigToe": 5770, "LSmallToe": 5780, "LHeel": 8846,
        "RBigToe": 8463, "RSmallToe": 8474, "RHeel": 8635,
    },
}


# ----------------------------------------------------------------------------------------------
# Small numeric helpers
# ----------------------------------------------------------------------------------------------


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Quintic (C2) step from 0 at ``lo`` to 1 at ``hi``."""
    t = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _gauss(d2: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * d2 / sigma**2)


def _pchip(xk: np.ndarray, yk: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch-Carlson slopes), column-wise.

    Args:
        xk: ``[K]`` increasing knots.
        yk: ``[K, C]`` values at the knots.
        x: ``[N]`` query points inside ``[xk[0], xk[-1]]``.

    Returns:
        ``[N, C]`` interpolated values; no overshoot between knots.
    """
    h = np.diff(xk)[:, None]  # [K-1, 1]
    delta = np.diff(yk, axis=0) / h  # [K-1, C]
    m = np.zeros_like(yk)
    if len(xk) > 2:
        same_sign = delta[:-1] * delta[1:] > 0
        w1 = 2 * h[1:] + h[:-1]
        w2 = h[1:] + 2 * h[:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
        m[1:-1] = np.where(same_sign, harmonic, 0.0)
    m[0], m[-1] = delta[0], delta[-1]
    i = np.clip(np.searchsorted(xk, x, side="right") - 1, 0, len(xk) - 2)
    t = ((x - xk[i]) / h[i, 0])[:, None]
    hh = h[i]
    h00 = (1 + 2 * t) * (1 - t) ** 2
    h10 = t * (1 - t) ** 2
    h01 = t * t * (3 - 2 * t)
    h11 = t * t * (t - 1)
    return h00 * yk[i] + h10 * hh * m[i] + h01 * yk[i + 1] + h11 * hh * m[i + 1]


# ----------------------------------------------------------------------------------------------
# Proportions and skeleton
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proportions:
    """Multiplicative factors on the neutral body (1 = neutral)."""

    scale: float
    leg: float
    arm: float
    torso: float
    width: float
    shoulder: float
    hip: float
    head: float


def _proportions(seed: int, gender: str) -> _Proportions:
    code = _GENDERS.index(gender)
    rng = np.random.default_rng([int(seed), code, 20240601])
    u = rng.uniform(-1.0, 1.0, size=8)
    base = {
        "neutral": (1.00, 1.00, 1.00, 1.00),
        "male": (1.03, 1.06, 0.96, 1.03),
        "female": (0.96, 0.93, 1.06, 0.96),
    }[gender]
    scale, shoulder, hip, width = base
    return _Proportions(
        scale=scale * (1 + 0.02 * u[0]),
        leg=1 + 0.025 * u[1],
        arm=1 + 0.025 * u[2],
        torso=1 + 0.02 * u[3],
        width=width * (1 + 0.04 * u[4]),
        shoulder=shoulder * (1 + 0.03 * u[5]),
        hip=hip * (1 + 0.03 * u[6]),
        head=1 + 0.02 * u[7],
    )


@dataclass
class _Skeleton:
    """Rest joints plus the derived landmarks the parts are built around (unscaled metres)."""

    joints: np.ndarray  # [J, 3]
    sole: float
    head_center: np.ndarray
    head_radii: np.ndarray  # x, y, z semi-axes
    fingers: Dict[int, dict] = field(default_factory=dict)  # side -> finger geometry


def _skeleton(model_type: str, P: _Proportions) -> _Skeleton:
    J = np.zeros((NUM_JOINTS[model_type], 3))
    yp = -0.20
    J[_PELVIS] = (0.0, yp, 0.0)
    J[_SPINE1] = (0.0, yp + 0.11 * P.torso, -0.01)
    J[_SPINE2] = (0.0, yp + 0.24 * P.torso, 0.0)
    J[_SPINE3] = (0.0, yp + 0.30 * P.torso, 0.01)
    J[_NECK] = (0.0, yp + 0.51 * P.torso, -0.02)
    J[_HEAD] = (0.0, yp + 0.60 * P.torso, 0.01)
    thigh, shin = 0.42 * P.leg, 0.345 * P.leg
    upper, fore = 0.26 * P.arm, 0.25 * P.arm
    for side, hip, knee, ankle, foot, collar, shoulder, elbow, wrist in (
        (1, _LHIP, _LKNEE, _LANKLE, _LFOOT, _LCOLLAR, _LSHOULDER, _LELBOW, _LWRIST),
        (-1, _RHIP, _RKNEE, _RANKLE, _RFOOT, _RCOLLAR, _RSHOULDER, _RELBOW, _RWRIST),
    ):
        J[hip] = (side * 0.085 * P.hip, yp - 0.09, 0.0)
        J[knee] = J[hip] + (side * 0.005, -thigh, 0.012)
        J[ankle] = J[knee] + (-side * 0.005, -shin, -0.035)
        J[foot] = J[ankle] + (side * 0.012, -0.055, 0.115)
        J[collar] = (side * 0.075 * P.shoulder, yp + 0.41 * P.torso, -0.005)
        J[shoulder] = (side * 0.175 * P.shoulder, yp + 0.43 * P.torso, -0.02)
        J[elbow] = J[shoulder] + (side * upper, 0.0, -0.01)
        J[wrist] = J[elbow] + (side * fore, 0.0, 0.0)
        if model_type == "smpl":
            J[_SMPL_LHAND if side > 0 else _SMPL_RHAND] = J[wrist] + (side * 0.085 * P.arm, -0.005, 0.0)
    sole = J[_LANKLE, 1] - 0.07
    head_radii = np.array([0.078, 0.115, 0.098]) * P.head
    head_center = J[_HEAD] + (0.0, 0.07 * P.head, 0.01)
    sk = _Skeleton(J, sole, head_center, head_radii)
    if model_type == "smplx":
        J[_JAW] = head_center + np.array([0.0, -0.045, 0.0]) * P.head
        for side, eye in ((1, _LEYE), (-1, _REYE)):
            J[eye] = head_center + np.array([side * 0.031, 0.005, 0.081]) * P.head
        for side, wrist, base in ((1, _LWRIST, 25), (-1, _RWRIST, 40)):
            W = J[wrist]
            geo = {}
            # (MCP offset from the wrist, direction, phalanx lengths incl. tip, radius)
            spec = {
                "index": ((0.092, 0.0, 0.026), (1.0, 0.0, 0.08), (0.040, 0.024, 0.022), 0.0085),
                "middle": ((0.096, 0.0, 0.006), (1.0, 0.0, 0.0), (0.044, 0.027, 0.024), 0.0090),
                "pinky": ((0.083, -0.002, -0.030), (1.0, 0.0, -0.12), (0.032, 0.019, 0.020), 0.0072),
                "ring": ((0.091, 0.0, -0.013), (1.0, 0.0, -0.05), (0.041, 0.026, 0.023), 0.0082),
                "thumb": ((0.022, -0.008, 0.024), (0.55, -0.2, 0.8), (0.038, 0.032, 0.026), 0.0105),
            }
            for f, name in enumerate(_FINGERS):
                off, direction, lengths, radius = spec[name]
                off = np.array(off) * (side, 1.0, 1.0) * P.arm
                d = _unit(np.array(direction) * (side, 1.0, 1.0))
                lengths = np.array(lengths) * P.arm
                j1 = base + 3 * f
                J[j1] = W + off
                J[j1 + 1] = J[j1] + lengths[0] * d
                J[j1 + 2] = J[j1 + 1] + lengths[1] * d
                geo[name] = {"joints": (j1, j1 + 1, j1 + 2), "dir": d, "lengths": lengths, "radius": radius}
            sk.fingers[side] = geo
    return sk


# ----------------------------------------------------------------------------------------------
# Parts: closed surfaces of revolution with (super-)elliptic cross-sections
# ----------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """One closed body part. ``keys`` rows: ``s, r_u, r_w, off_x, off_y, off_z``."""

    name: str
    kind: str
    side: int
    origin: np.ndarray
    axis: np.ndarray
    up: np.ndarray
    keys: np.ndarray
    cap0: float
    cap1: float
    chain: List[Tuple[int, Optional[float], float]]
    exponent: float = 2.0
    density: float = 1.0
    min_segments: int = 8
    min_rings: int = 4
    deform: Optional[Callable[[np.ndarray, "_Part"], np.ndarray]] = None
    segments: int = 0
    rings: int = 0

    def frame(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = _unit(self.axis)
        u = self.up - d * float(self.up @ d)
        u = _unit(u)
        w = np.cross(d, u)  # right-handed: u x w = d
        return d, u, w

    def profile(self, s: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Radii ``r_u, r_w`` and ring-centre offsets ``[n, 3]`` at axial positions ``s``."""
        k = self.keys
        s = np.asarray(s, dtype=np.float64)
        cols = _pchip(k[:, 0], k[:, 1:], np.clip(s, k[0, 0], k[-1, 0]))
        f = np.ones_like(s)
        lo = s < k[0, 0]
        hi = s > k[-1, 0]
        f[lo] = np.sqrt(np.clip(1.0 - ((k[0, 0] - s[lo]) / self.cap0) ** 2, 0.0, 1.0))
        f[hi] = np.sqrt(np.clip(1.0 - ((s[hi] - k[-1, 0]) / self.cap1) ** 2, 0.0, 1.0))
        return cols[:, 0] * f, cols[:, 1] * f, cols[:, 2:5]

    def extent(self) -> Tuple[float, float]:
        return float(self.keys[0, 0] - self.cap0), float(self.keys[-1, 0] + self.cap1)

    def meridian(self, n: int = 800) -> Tuple[np.ndarray, np.ndarray]:
        """Fine samples ``s`` and the cumulative meridian arc length at them."""
        a, b = self.extent()
        s = np.linspace(a, b, n)
        ru, rw, off = self.profile(s)
        r = np.sqrt(0.5 * (ru**2 + rw**2))
        steps = np.sqrt(np.diff(s) ** 2 + np.diff(r) ** 2 + (np.diff(off, axis=0) ** 2).sum(1))
        return s, np.concatenate([[0.0], np.cumsum(steps)])

    def sizes(self) -> Tuple[float, float, float]:
        """(max circumference, mean circumference, meridian length) in metres."""
        s, L = self.meridian()
        ru, rw, _ = self.profile(s)
        circ = 2 * np.pi * np.sqrt(0.5 * (ru**2 + rw**2))
        return float(circ.max()), float(circ.mean()), float(L[-1])


def _arm_parts(model_type: str, sk: _Skeleton, P: _Proportions) -> List[_Part]:
    J = sk.joints
    parts = []
    y_up = np.array([0.0, 1.0, 0.0])
    for side, collar, shoulder, elbow, wrist in (
        (1, _LCOLLAR, _LSHOULDER, _LELBOW, _LWRIST),
        (-1, _RCOLLAR, _RSHOULDER, _RELBOW, _RWRIST),
    ):
        tag = "l" if side > 0 else "r"
        L_ua = float(np.linalg.norm(J[elbow] - J[shoulder]))
        L_fa = float(np.linalg.norm(J[wrist] - J[elbow]))
        wf = P.width
        parts.append(_Part(
            f"{tag}_upperarm", "upperarm", side, J[shoulder].copy(), J[elbow] - J[shoulder], y_up,
            np.array([
                [0.0, 0.050 * wf, 0.047 * wf, 0, 0, 0],
                [0.45 * L_ua, 0.045 * wf, 0.043 * wf, 0, 0, 0],
                [L_ua, 0.037 * wf, 0.035 * wf, 0, 0, 0],
            ]),
            0.06, 0.04, [(collar, None, 0.0), (shoulder, 0.0, 0.045), (elbow, L_ua, 0.04)],
        ))
        parts.append(_Part(
            f"{tag}_forearm", "forearm", side, J[elbow].copy(), J[wrist] - J[elbow], y_up,
            np.array([
                [0.0, 0.036 * wf, 0.035 * wf, 0, 0, 0],
                [0.3 * L_fa, 0.038 * wf, 0.039 * wf, 0, 0, 0],
                [L_fa, 0.020 * wf, 0.028 * wf, 0, 0, 0],
            ]),
            0.035, 0.02, [(shoulder, None, 0.0), (elbow, 0.0, 0.04), (wrist, L_fa, 0.025)],
        ))
        xdir = np.array([side, 0.0, 0.0])
        if model_type == "smpl":
            hand = _SMPL_LHAND if side > 0 else _SMPL_RHAND
            s_hand = float((J[hand] - J[wrist]) @ xdir)
            parts.append(_Part(
                f"{tag}_hand", "hand", side, J[wrist].copy(), xdir, y_up,
                np.array([
                    [0.0, 0.018, 0.030, 0, 0, 0],
                    [0.05, 0.017, 0.043, 0, 0, 0.002],
                    [0.10, 0.013, 0.041, 0, -0.003, 0.0],
                    [0.165, 0.009, 0.034, 0, -0.006, -0.002],
                ]) * (1, P.arm, P.arm, 1, 1, 1),
                0.02, 0.02, [(elbow, None, 0.0), (wrist, 0.0, 0.025), (hand, s_hand, 0.02)],
                exponent=3.0, min_segments=12,
            ))
        else:
            geo = sk.fingers[side]
            s_knuckle = float(np.mean([(J[geo[n]["joints"][0]] - J[wrist]) @ xdir for n in _FINGERS[:4]]))
            parts.append(_Part(
                f"{tag}_palm", "palm", side, J[wrist].copy(), xdir, y_up,
                np.array([
                    [0.0, 0.019, 0.031, 0, 0, 0],
                    [0.045, 0.017, 0.043, 0, 0, 0.0],
                    [s_knuckle - 0.008, 0.014, 0.042, 0, -0.001, -0.002],
                ]) * (1, P.arm, P.arm, 1, 1, 1),
                0.02, 0.014, [(elbow, None, 0.0), (wrist, 0.0, 0.025)],
                exponent=3.5, min_segments=16, density=1.4,
            ))
            for name in _FINGERS:
                g = geo[name]
                j1, j2, j3 = g["joints"]
                L1, L2, L3 = g["lengths"]
                r = g["radius"] * P.arm
                length = L1 + L2 + L3
                parts.append(_Part(
                    f"{tag}_{name}", "finger", side, J[j1].copy(), g["dir"], y_up,
                    np.array([
                        [0.0, r, 1.1 * r, 0, 0, 0],
                        [L1, 0.92 * r, r, 0, 0, 0],
                        [length - 0.8 * r, 0.78 * r, 0.85 * r, 0, 0, 0],
                    ]),
                    0.014, 0.8 * r, [(wrist, None, 0.0), (j1, 0.0, 0.008), (j2, L1, 0.006), (j3, L1 + L2, 0.005)],
                    min_segments=8, min_rings=9, density=1.6,
                ))
    return parts


def _leg_parts(sk: _Skeleton, P: _Proportions) -> List[_Part]:
    J = sk.joints
    parts = []
    for side, hip, knee, ankle, foot in (
        (1, _LHIP, _LKNEE, _LANKLE, _LFOOT),
        (-1, _RHIP, _RKNEE, _RANKLE, _RFOOT),
    ):
        tag = "l" if side > 0 else "r"
        wf = P.width
        L_th = float(np.linalg.norm(J[knee] - J[hip]))
        L_sh = float(np.linalg.norm(J[ankle] - J[knee]))
        x_dir = np.array([1.0, 0.0, 0.0])
        parts.append(_Part(
            f"{tag}_thigh", "thigh", side, J[hip].copy(), J[knee] - J[hip], x_dir,
            np.array([
                [0.0, 0.088 * wf, 0.086 * wf, 0, 0, 0],
                [0.35 * L_th, 0.075 * wf, 0.077 * wf, 0, 0, 0.004],
                [L_th, 0.052 * wf, 0.055 * wf, 0, 0, 0],
            ]),
            0.08, 0.04, [(_PELVIS, None, 0.0), (hip, 0.0, 0.06), (knee, L_th, 0.05)],
        ))
        parts.append(_Part(
            f"{tag}_shin", "shin", side, J[knee].copy(), J[ankle] - J[knee], x_dir,
            np.array([
                [0.0, 0.051 * wf, 0.054 * wf, 0, 0, 0],
                [0.28 * L_sh, 0.054 * wf, 0.060 * wf, 0, 0, -0.01],
                [0.75 * L_sh, 0.040 * wf, 0.042 * wf, 0, 0, -0.004],
                [L_sh, 0.034 * wf, 0.036 * wf, 0, 0, 0],
            ]),
            0.04, 0.03, [(hip, None, 0.0), (knee, 0.0, 0.05), (ankle, L_sh, 0.035)],
        ))
        # The foot runs from the heel forward along +z with a flat sole at y = sk.sole.
        heel = np.array([J[ankle, 0], 0.0, J[ankle, 2] - 0.065])
        ball = float(J[foot, 2] - heel[2])
        keys = np.array([
            [0.0, 0.033, 0.045],
            [0.05, 0.036, 0.050],
            [0.11, 0.042, 0.032],
            [ball, 0.046, 0.022],
            [0.20, 0.042, 0.016],
        ])
        offs = np.zeros((len(keys), 3))
        offs[:, 1] = sk.sole + keys[:, 2] + 0.001
        offs[:, 0] = side * np.array([0.0, 0.0, 0.002, 0.006, 0.010])
        keys = np.concatenate([keys, offs], axis=1)
        parts.append(_Part(
            f"{tag}_foot", "foot", side, heel, np.array([0.0, 0.0, 1.0]), x_dir, keys,
            0.025, 0.035, [(ankle, None, 0.0), (foot, ball, 0.025)], exponent=2.6, min_segments=12,
        ))
    return parts


def _head_deform(sk: _Skeleton, model_type: str) -> Callable[[np.ndarray, _Part], np.ndarray]:
    hc, (rx, ry, rz) = sk.head_center, sk.head_radii

    def deform(v: np.ndarray, part: _Part) -> np.ndarray:
        p = v - hc
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        out = v.copy()
        # Narrower jaw and chin, slightly flatter back of the head.
        narrow = 1.0 - 0.2 * _smoothstep(-y, 0.01, 0.10)
        out[:, 0] = hc[0] + x * narrow
        out[:, 2] = hc[2] + np.where(z < 0, z * (1.0 - 0.06 * _smoothstep(-z, 0.0, rz)), z)
        front = _smoothstep(z, 0.5 * rz, 0.9 * rz)
        # Nose: a ridge from the brow to the tip, along +z.
        nose = 0.022 * front * _gauss(x**2, 0.009) * _gauss((y + 0.012) ** 2, 0.02)
        # Brow ridge and chin.
        brow = 0.004 * front * _gauss((y - 0.03) ** 2, 0.008) * _gauss(x**2, 0.035)
        chin = 0.006 * front * _gauss((y + 0.095) ** 2, 0.012) * _gauss(x**2, 0.02)
        out[:, 2] += nose + brow + chin
        # Ears: small bumps at the sides.
        ear = 0.010 * _gauss((np.abs(x) - rx) ** 2 + (y + 0.005) ** 2 + (z + 0.005) ** 2 * 0.3, 0.014)
        out[:, 0] += np.sign(x) * ear
        if model_type == "smplx":
            # Eye sockets so that the eyeballs show.
            for side in (1, -1):
                cx, cy = side * 0.031 * rx / 0.078, 0.005 * ry / 0.115
                sock = 0.006 * front * _gauss((x - cx) ** 2 + (y - cy) ** 2, 0.011)
                out[:, 2] -= sock
        return out

    return deform


def _body_parts(model_type: str, sk: _Skeleton, P: _Proportions) -> List[_Part]:
    J = sk.joints
    yp = float(J[_PELVIS, 1])
    wf, hf, sf = P.width, P.hip, P.shoulder
    y_up = np.array([0.0, 1.0, 0.0])
    x_dir = np.array([1.0, 0.0, 0.0])
    # Torso keypoints: y, half-width x, half-depth z, centre z.
    t = P.torso
    rows = [
        (-0.16, 0.160 * hf, 0.100, -0.010),
        (-0.08, 0.168 * hf, 0.105, -0.012),
        (0.02 * t, 0.160 * 0.5 * (hf + wf), 0.100, -0.005),
        (0.12 * t, 0.138 * wf, 0.092, 0.000),
        (0.22 * t, 0.145 * wf, 0.098, 0.010),
        (0.30 * t, 0.158 * wf, 0.106, 0.012),
        (0.38 * t, 0.175 * sf, 0.100, 0.000),
        (0.45 * t, 0.170 * sf, 0.085, -0.010),
    ]
    keys = np.array([[y, rx, rz * wf, 0.0, 0.0, cz] for y, rx, rz, cz in rows])
    torso_origin = np.array([0.0, yp, 0.0])

    def s(j: int) -> float:  # axial coordinate of joint j along the torso
        return float(J[j, 1] - yp)

    parts = [
        _Part(
            "torso", "torso", 0, torso_origin, y_up, x_dir, keys, 0.05, 0.08,
            [(_PELVIS, None, 0.0), (_SPINE1, s(_SPINE1), 0.045), (_SPINE2, s(_SPINE2), 0.035),
             (_SPINE3, s(_SPINE3), 0.03)],
            min_segments=24,
        ),
        _Part(
            "neck", "neck", 0, np.array([0.0, J[_SPINE3, 1] + 0.12, -0.015]), y_up, x_dir,
            np.array([[0.0, 0.056 * wf, 0.052 * wf, 0, 0, 0], [J[_HEAD, 1] + 0.02 - J[_SPINE3, 1] - 0.12,
                                                           0.054 * wf, 0.050 * wf, 0, 0, 0.01]]),
            0.03, 0.03,
            [(_SPINE3, None, 0.0), (_NECK, float(J[_NECK, 1] - J[_SPINE3, 1] - 0.12), 0.03),
             (_HEAD, float(J[_HEAD, 1] - J[_SPINE3, 1] - 0.12), 0.03)],
        ),
    ]
    hc, (rx, ry, rz) = sk.head_center, sk.head_radii
    head_keys = np.array([[-0.001, rx, rz, 0, 0, 0], [0.001, rx, rz, 0, 0, 0]])
    parts.append(_Part(
        "head", "head", 0, hc.copy(), y_up, x_dir, head_keys, ry - 0.001, ry - 0.001,
        [(_NECK, None, 0.0), (_HEAD, float(J[_HEAD, 1] - hc[1]) - 0.02, 0.025)],
        deform=_head_deform(sk, model_type), density=1.6 if model_type == "smplx" else 1.25,
        min_segments=24,
    ))
    if model_type == "smplx":
        r_eye = 0.0115 * P.head
        for side, eye in ((1, _LEYE), (-1, _REYE)):
            parts.append(_Part(
                f"{'l' if side > 0 else 'r'}_eye", "eye", side, J[eye].copy(), np.array([0.0, 0.0, 1.0]),
                x_dir, np.array([[-0.0005, r_eye, r_eye, 0, 0, 0], [0.0005, r_eye, r_eye, 0, 0, 0]]),
                r_eye - 0.0005, r_eye - 0.0005, [(eye, None, 0.0)], min_segments=10, min_rings=7,
            ))
    parts += _arm_parts(model_type, sk, P)
    parts += _leg_parts(sk, P)
    return parts


def _resolve_resolution(parts: List[_Part], target: int, filler: str = "torso") -> None:
    """Choose rings x segments per part so that the vertex total is exactly ``target``."""
    sizes = {p.name: p.sizes() for p in parts}

    def counts(h: float) -> Dict[str, Tuple[int, int]]:
        out = {}
        for p in parts:
            cmax, _, L = sizes[p.name]
            S = max(p.min_segments, 2 * int(round(p.density * cmax / (2 * h))))
            R = max(p.min_rings, int(round(p.density * L / h)))
            out[p.name] = (R, S)
        return out

    def total(c: Dict[str, Tuple[int, int]]) -> int:
        return sum(R * S + 2 for R, S in c.values())

    lo, hi = 0.002, 0.2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if total(counts(mid)) > target:
            lo = mid
        else:
            hi = mid
    c = counts(hi)
    names = [p.name for p in parts if p.name != filler]
    R_f, S_f = c[filler]
    adjust_order = ["head", "neck", "l_thigh", "r_thigh"]
    for attempt in range(200):
        others = sum(c[n][0] * c[n][1] + 2 for n in names)
        M = target - others - 2
        best = None
        for S in range(max(8, S_f - 14), S_f + 15):
            if M > 0 and M % S == 0 and M // S >= 4:
                if best is None or abs(S - S_f) < abs(best - S_f):
                    best = S
        if best is not None:
            c[filler] = (M // best, best)
            break
        name = adjust_order[attempt % len(adjust_order)]
        R, S = c[name]
        c[name] = (R + (1 if (attempt // len(adjust_order)) % 2 == 0 else -1), S)
    else:  # pragma: no cover - the search above always succeeds for the fixed part layout
        raise RuntimeError(f"cannot reach exactly {target} vertices")
    for p in parts:
        p.rings, p.segments = c[p.name]
    assert sum(p.rings * p.segments + 2 for p in parts) == target


@dataclass
class _Mesh:
    verts: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    vt: np.ndarray  # [T, 2] chart-local until packed
    ft: np.ndarray  # [F, 3]
    part: np.ndarray  # [V] part index
    s: np.ndarray  # [V] axial coordinate along the part axis
    center: np.ndarray  # [V, 3] ring centre (on the axis, with offsets)
    frac: np.ndarray  # [V] meridian arc-length fraction in [0, 1]
    face_part: np.ndarray  # [F]
    vt_part: np.ndarray  # [T]
    charts: List[Tuple[float, float]]  # physical (width, height) per part


def _build_mesh(parts: List[_Part]) -> _Mesh:
    V_all, F_all, VT_all, FT_all = [], [], [], []
    part_ids, s_all, c_all, frac_all, fpart, vtpart, charts = [], [], [], [], [], [], []
    v_off = 0
    t_off = 0
    for pi, p in enumerate(parts):
        d, u, w = p.frame()
        R, S = p.rings, p.segments
        s_f, L = p.meridian()
        targets = L[-1] * (np.arange(1, R + 1) / (R + 1))
        s_r = np.interp(targets, L, s_f)
        ru, rw, off = p.profile(s_r)
        a, b = p.extent()
        _, _, off_ends = p.profile(np.array([a, b]))
        theta = 2 * np.pi * np.arange(S) / S
        c, sn = np.cos(theta), np.sin(theta)
        e = 2.0 / p.exponent
        cu = np.sign(c) * np.abs(c) ** e
        sw = np.sign(sn) * np.abs(sn) ** e
        centers = p.origin + s_r[:, None] * d + off  # [R, 3]
        ring = centers[:, None, :] + ru[:, None, None] * cu[None, :, None] * u + rw[:, None, None] * sw[None, :, None] * w
        pole0 = p.origin + a * d + off_ends[0]
        pole1 = p.origin + b * d + off_ends[1]
        verts = np.concatenate([pole0[None], ring.reshape(-1, 3), pole1[None]], axis=0)
        center = np.concatenate([pole0[None], np.repeat(centers, S, axis=0), pole1[None]], axis=0)
        s_v = np.concatenate([[a], np.repeat(s_r, S), [b]])
        frac = np.concatenate([[0.0], np.repeat(targets / L[-1], S), [1.0]])
        if p.deform is not None:
            verts = p.deform(verts, p)
        # Faces (outward with the right-handed frame, see module docstring of zoo.core.mesh).
        k = np.arange(S)
        k1 = (k + 1) % S
        g = lambda i, kk: 1 + i * S + kk  # noqa: E731 - ring vertex index
        faces = [np.stack([np.zeros(S, int), g(0, k1), g(0, k)], 1)]
        for i in range(R - 1):
            faces.append(np.stack([g(i, k), g(i, k1), g(i + 1, k1)], 1))
            faces.append(np.stack([g(i, k), g(i + 1, k1), g(i + 1, k)], 1))
        faces.append(np.stack([np.full(S, 1 + R * S), g(R - 1, k), g(R - 1, k1)], 1))
        faces = np.concatenate(faces, 0)
        # UV chart: bottom fan apexes, an R x (S+1) grid (seam duplicated), top fan apexes.
        vt_bot = np.stack([(k + 0.5) / S, np.zeros(S)], 1)
        gu, gv = np.meshgrid(np.arange(S + 1) / S, np.arange(1, R + 1) / (R + 1))
        vt_grid = np.stack([gu.ravel(), gv.ravel()], 1)
        vt_top = np.stack([(k + 0.5) / S, np.ones(S)], 1)
        vt = np.concatenate([vt_bot, vt_grid, vt_top], 0)
        G = lambda i, kk: S + i * (S + 1) + kk  # noqa: E731 - grid vt index
        top0 = S + R * (S + 1)
        ft = [np.stack([k, G(0, k + 1), G(0, k)], 1)]
        for i in range(R - 1):
            ft.append(np.stack([G(i, k), G(i, k + 1), G(i + 1, k + 1)], 1))
            ft.append(np.stack([G(i, k), G(i + 1, k + 1), G(i + 1, k)], 1))
        ft.append(np.stack([top0 + k, G(R - 1, k), G(R - 1, k + 1)], 1))
        ft = np.concatenate(ft, 0)
        _, cmean, merid = p.sizes()
        charts.append((cmean, merid))
        V_all.append(verts)
        F_all.append(faces + v_off)
        VT_all.append(vt)
        FT_all.append(ft + t_off)
        part_ids.append(np.full(len(verts), pi))
        s_all.append(s_v)
        c_all.append(center)
        frac_all.append(frac)
        fpart.append(np.full(len(faces), pi))
        vtpart.append(np.full(len(vt), pi))
        v_off += len(verts)
        t_off += len(vt)
    return _Mesh(
        np.concatenate(V_all), np.concatenate(F_all), np.concatenate(VT_all), np.concatenate(FT_all),
        np.concatenate(part_ids), np.concatenate(s_all), np.concatenate(c_all), np.concatenate(frac_all),
        np.concatenate(fpart), np.concatenate(vtpart), charts,
    )


def _skyline_place(sizes: np.ndarray, gap: float) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Bottom-left skyline packing of rectangles ``[n, 2]`` (w, h) into the unit square.

    Every rectangle keeps ``gap`` to its neighbours and to the square's border. Returns
    ``(lower-left corners [n, 2], rotated [n] bool)`` or None when they do not fit. Each
    rectangle goes, in either orientation, where its bottom ends lowest.
    """
    limit = 1.0 - gap
    order = np.argsort(-np.maximum(sizes[:, 0], sizes[:, 1]), kind="stable")
    sky = [(0.0, 0.0, limit)]  # segments (x, y, width) covering [0, limit]
    pos = np.zeros((len(sizes), 2))
    rot = np.zeros(len(sizes), dtype=bool)
    for i in order:
        best = None
        for turned in (False, True):
            w, h = (sizes[i, ::-1] if turned else sizes[i]) + gap
            for k, (x0, _, _) in enumerate(sky):
                if x0 + w > limit + 1e-12:
                    break
                top, span, j = 0.0, 0.0, k
                while span < w - 1e-12:
                    top = max(top, sky[j][1])
                    span += sky[j][2]
                    j += 1
                if top + h <= limit + 1e-12 and (best is None or (top, x0) < best[:2]):
                    best = (top, x0, turned, w, h)
        if best is None:
            return None
        y, x, turned, w, h = best
        pos[i], rot[i] = (x + gap, y + gap), turned
        new_sky = []
        for sx, sy, sw in sky:  # cut [x, x + w) out of the skyline and raise it to y + h
            if sx + sw <= x + 1e-12 or sx >= x + w - 1e-12:
                new_sky.append((sx, sy, sw))
                continue
            if sx < x:
                new_sky.append((sx, sy, x - sx))
            if sx + sw > x + w:
                new_sky.append((x + w, sy, sx + sw - x - w))
        new_sky.append((x, y + h, w))
        new_sky.sort()
        merged = [new_sky[0]]
        for seg in new_sky[1:]:
            if abs(seg[1] - merged[-1][1]) < 1e-12:
                merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + seg[2])
            else:
                merged.append(seg)
        sky = merged
    return pos, rot


def _pack_charts(mesh: _Mesh, gap: float = 0.008) -> None:
    """Pack one rectangle per part into [0, 1]^2 at one texel density (in place, largest scale)."""
    dims = np.array(mesh.charts)  # physical (w, h) in metres
    lo, hi = 0.01, 5.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _skyline_place(dims * mid, gap) is None:
            hi = mid
        else:
            lo = mid
    pos, rot = _skyline_place(dims * lo, gap)
    vt = mesh.vt.copy()
    for i in range(len(dims)):
        sel = mesh.vt_part == i
        uu, vv = mesh.vt[sel, 0], mesh.vt[sel, 1]
        w, h = dims[i] * lo
        if rot[i]:  # a quarter turn keeps the chart's orientation (counter-clockwise)
            uu, vv, w, h = 1.0 - vv, uu, h, w
        vt[sel, 0] = pos[i, 0] + uu * w
        vt[sel, 1] = pos[i, 1] + vv * h
    mesh.vt = vt


def uv_coverage(vt: np.ndarray, ft: np.ndarray) -> float:
    """Fraction of the unit UV square covered by the UV triangles (sum of their areas).

    Args:
        vt: ``[T, 2]`` UV coordinates.
        ft: ``[F, 3]`` UV faces.

    Returns:
        Total UV triangle area (equals the covered fraction when charts do not overlap).
    """
    a, b, c = vt[ft[:, 0]], vt[ft[:, 1]], vt[ft[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    return float(np.abs(cross).sum() * 0.5)


# ----------------------------------------------------------------------------------------------
# Keypoint vertices, weights, blend shapes, regressor
# ----------------------------------------------------------------------------------------------


def _keypoint_targets(model_type: str, sk: _Skeleton, parts: List[_Part]) -> Dict[str, Tuple[np.ndarray, List[str]]]:
    """3D target point and allowed parts for each keypoint vertex smplx reads."""
    J = sk.joints
    hc, (rx, ry, rz) = sk.head_center, sk.head_radii
    out: Dict[str, Tuple[np.ndarray, List[str]]] = {
        "nose": (hc + (0.0, -0.012, rz + 0.03), ["head"]),
        "lear": (hc + (rx + 0.02, -0.005, -0.005), ["head"]),
        "rear": (hc + (-rx - 0.02, -0.005, -0.005), ["head"]),
    }
    for side, tag, name in ((1, "l", "leye"), (-1, "r", "reye")):
        out[name] = (hc + (side * 0.031, 0.005, rz + 0.01), ["head"] + ([f"{tag}_eye"] if model_type == "smplx" else []))
    for side, tag, key, ankle in ((1, "l", "L", _LANKLE), (-1, "r", "R", _RANKLE)):
        foot = next(p for p in parts if p.name == f"{tag}_foot")
        toe_z = foot.origin[2] + foot.keys[-1, 0] + foot.cap1
        out[f"{key}BigToe"] = (np.array([J[ankle, 0] - side * 0.01, sk.sole + 0.02, toe_z + 0.01]), [f"{tag}_foot"])
        out[f"{key}SmallToe"] = (np.array([J[ankle, 0] + side * 0.05, sk.sole + 0.015, toe_z - 0.03]), [f"{tag}_foot"])
        out[f"{key}Heel"] = (np.array([J[ankle, 0], sk.sole, foot.origin[2] - foot.cap0]), [f"{tag}_foot"])
        if model_type == "smplx":
            for name in _FINGERS:
                g = sk.fingers[side][name]
                tip = J[g["joints"][2]] + g["dir"] * (g["lengths"][2] + 0.02)
                out[f"{tag}{name}"] = (tip, [f"{tag}_{name}"])
        else:
            hand = next(p for p in parts if p.name == f"{tag}_hand")
            wrist = hand.origin
            tip_x = hand.keys[-1, 0] + hand.cap1
            lanes = {"index": 0.028, "middle": 0.008, "ring": -0.012, "pinky": -0.03}
            for name, z in lanes.items():
                out[f"{tag}{name}"] = (wrist + (side * (tip_x + 0.02), -0.006, z), [f"{tag}_hand"])
            out[f"{tag}thumb"] = (wrist + (side * 0.09, -0.01, 0.06), [f"{tag}_hand"])
    return out


def _place_keypoints(model_type: str, mesh: _Mesh, sk: _Skeleton, parts: List[_Part]) -> np.ndarray:
    """Permutation ``perm`` (new index -> old index) putting keypoint vertices at smplx's ids."""
    V = len(mesh.verts)
    names = [p.name for p in parts]
    perm = np.arange(V)
    inv = np.arange(V)
    used = set()
    targets = _keypoint_targets(model_type, sk, parts)
    for key, new_idx in _KEYPOINT_VERTICES[model_type].items():
        point, allowed = targets[key]
        mask = np.isin(mesh.part, [names.index(a) for a in allowed])
        cand = np.flatnonzero(mask)
        d2 = ((mesh.verts[cand] - point) ** 2).sum(1)
        for i in np.argsort(d2):
            old = int(cand[i])
            if old not in used:
                break
        used.add(old)
        pos = inv[old]
        other = perm[new_idx]
        perm[new_idx], perm[pos] = old, other
        inv[old], inv[other] = new_idx, pos
    return perm


def _apply_permutation(mesh: _Mesh, perm: np.ndarray) -> None:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    mesh.verts = mesh.verts[perm]
    mesh.part = mesh.part[perm]
    mesh.s = mesh.s[perm]
    mesh.center = mesh.center[perm]
    mesh.frac = mesh.frac[perm]
    mesh.faces = inv[mesh.faces]


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.linalg.norm(vn, axis=1, keepdims=True).clip(1e-12)


def _chain_weights(s: np.ndarray, chain: List[Tuple[int, Optional[float], float]], num_joints: int) -> np.ndarray:
    W = np.zeros((len(s), num_joints))
    H = [np.ones_like(s)] + [_smoothstep(s, b - dlt, b + dlt) for _, b, dlt in chain[1:]] + [np.zeros_like(s)]
    for k, (bone, _, _) in enumerate(chain):
        W[:, bone] += np.clip(H[k] - H[k + 1], 0.0, None)
    return W / W.sum(1, keepdims=True)


def _transfer(W: np.ndarray, rows: np.ndarray, frac: np.ndarray, bone: int) -> None:
    """Move a fraction ``frac`` of each selected row's weight to ``bone`` (rows still sum to 1)."""
    frac = np.clip(frac, 0.0, 1.0)[:, None]
    sub = W[rows] * (1.0 - frac)
    sub[:, bone] += frac[:, 0]
    W[rows] = sub


def _skinning_weights(model_type: str, mesh: _Mesh, parts: List[_Part], sk: _Skeleton) -> np.ndarray:
    J = sk.joints
    W = np.zeros((len(mesh.verts), NUM_JOINTS[model_type]))
    v = mesh.verts
    for pi, p in enumerate(parts):
        rows = np.flatnonzero(mesh.part == pi)
        W[rows] = _chain_weights(mesh.s[rows], p.chain, W.shape[1])
        x, y, z = v[rows, 0], v[rows, 1], v[rows, 2]
        side = np.where(x >= 0, 1, -1)
        if p.kind == "torso":
            for sgn, collar, shoulder, hip in ((1, _LCOLLAR, _LSHOULDER, _LHIP), (-1, _RCOLLAR, _RSHOULDER, _RHIP)):
                on = side == sgn
                ax = np.abs(x)
                y_c, y_s, y_h = J[collar, 1], J[shoulder, 1], J[hip, 1]
                f_c = _smoothstep(ax, 0.03, 0.11) * _smoothstep(y, y_c - 0.10, y_c - 0.01)
                _transfer(W, rows[on], f_c[on], collar)
                f_s = _smoothstep(ax, abs(J[shoulder, 0]) - 0.05, abs(J[shoulder, 0]) + 0.01) * _smoothstep(y, y_s - 0.08, y_s - 0.02)
                _transfer(W, rows[on], f_s[on], shoulder)
                f_h = _smoothstep(y_h - y, -0.03, 0.06) * _smoothstep(ax, 0.0, 0.07)
                _transfer(W, rows[on], f_h[on], hip)
            f_n = _smoothstep(y, J[_NECK, 1] - 0.05, J[_NECK, 1]) * (1.0 - _smoothstep(np.abs(x), 0.04, 0.09))
            _transfer(W, rows, f_n, _NECK)
        elif p.kind == "head":
            hc = sk.head_center
            f_front = _smoothstep(z - hc[2], -0.02, 0.04)
            _transfer(W, rows, f_front, _HEAD)
            if model_type == "smplx":
                y_mouth = hc[1] - 0.058 * sk.head_radii[1] / 0.115
                f_j = _smoothstep(y_mouth - y, -0.004, 0.012) * _smoothstep(z - hc[2], 0.0, 0.05)
                _transfer(W, rows, f_j, _JAW)
        elif p.kind == "palm":
            geo = sk.fingers[p.side]
            wrist = p.origin
            xdir = _unit(p.axis)
            s_k = np.array([(J[geo[n]["joints"][0]] - wrist) @ xdir for n in _FINGERS[:4]])
            lanes = np.array([J[geo[n]["joints"][0], 2] for n in _FINGERS[:4]])
            lane_w = _gauss((z[:, None] - lanes[None, :]) ** 2, 0.008)
            lane_w /= lane_w.sum(1, keepdims=True)
            f_all = _smoothstep(mesh.s[rows], s_k.min() - 0.025, s_k.min() + 0.004)[:, None]
            target = np.zeros((len(rows), W.shape[1]))
            for fi, name in enumerate(_FINGERS[:4]):
                target[:, geo[name]["joints"][0]] = lane_w[:, fi]
            W[rows] = (1.0 - f_all) * W[rows] + f_all * target
            t1 = geo["thumb"]["joints"][0]
            dist = np.linalg.norm(v[rows] - J[t1], axis=1)
            _transfer(W, rows, 0.9 * (1.0 - _smoothstep(dist, 0.012, 0.03)), t1)
        elif p.kind == "foot":
            knee = _LKNEE if p.side > 0 else _RKNEE
            _transfer(W, rows, 0.6 * _smoothstep(y, sk.sole + 0.075, sk.sole + 0.105), knee)
    W[W < 1e-6] = 0.0
    return W / W.sum(1, keepdims=True)


def _shape_dirs(model_type: str, mesh: _Mesh, parts: List[_Part], sk: _Skeleton) -> np.ndarray:
    """Ten shape directions ``[V, 3, 10]`` (displacement per unit beta, metres)."""
    J = sk.joints
    v = mesh.verts
    kinds = np.array([p.kind for p in parts])[mesh.part]
    sides = np.array([p.side for p in parts])[mesh.part]
    radial = v - mesh.center
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    D = np.zeros((len(v), 3, 10))
    arm = np.isin(kinds, ["upperarm", "forearm", "hand", "palm", "finger"])
    limb = np.isin(kinds, ["upperarm", "forearm", "thigh", "shin"])
    head_like = np.isin(kinds, ["head", "eye"])
    # 0: stature (uniform scale about the pelvis).
    D[:, :, 0] = 0.05 * (v - J[_PELVIS])
    # 1: girth / weight (radial growth, most on the torso).
    g = np.select([kinds == "torso", limb, kinds == "neck", np.isin(kinds, ["hand", "palm", "foot"])],
                  [0.20, 0.14, 0.10, 0.05], 0.0)
    D[:, :, 1] = g[:, None] * radial
    # 2: leg length (below the hips, feet shift rigidly).
    y_hip = J[_LHIP, 1]
    y_ank = J[_LANKLE, 1]
    D[:, 1, 2] = np.where(y < y_hip, 0.08 * (np.maximum(y, y_ank) - y_hip), 0.0)
    # 3: shoulder width (arms shift sideways, the upper torso widens with them).
    tor = kinds == "torso"
    D[arm, 0, 3] = sides[arm] * 0.025
    D[tor, 0, 3] = np.sign(x[tor]) * 0.025 * _smoothstep(np.abs(x[tor]), 0.05, 0.17) * _smoothstep(y[tor], J[_SPINE2, 1], J[_LCOLLAR, 1])
    # 4: arm length (hands shift rigidly beyond the wrist).
    x_sh = abs(J[_LSHOULDER, 0])
    x_wr = abs(J[_LWRIST, 0])
    D[arm, 0, 4] = sides[arm] * 0.06 * (np.clip(np.abs(x[arm]), x_sh, x_wr) - x_sh)
    # 5: torso length (everything above the lower spine moves up; arms and head rigidly).
    y0, y1 = J[_SPINE1, 1], J[_NECK, 1]
    y_ref = np.where(arm, J[_LSHOULDER, 1], y)
    D[:, 1, 5] = np.where(y_ref > y0, 0.08 * (np.minimum(y_ref, y1) - y0), 0.0) * (kinds != "thigh") * (kinds != "shin") * (kinds != "foot")
    # 6: belly depth (front of the waist).
    belly = tor * _gauss((y - (J[_SPINE1, 1] + 0.03)) ** 2, 0.09) * _smoothstep(radial[:, 2], 0.0, 0.09)
    D[:, 2, 6] = 0.03 * belly
    # 7: hip width (lower torso widens, legs shift outward).
    hips = tor * _gauss((y - y_hip) ** 2, 0.09)
    D[:, 0, 7] = 0.12 * x * hips
    legs = np.isin(kinds, ["thigh", "shin", "foot"])
    D[legs, 0, 7] = sides[legs] * 0.12 * abs(J[_LHIP, 0])
    # 8: head size (scale about the head centre).
    D[head_like, :, 8] = 0.08 * (v[head_like] - sk.head_center)
    # 9: limb bulk (radial, peaking mid-bone).
    bulk = limb * np.sin(np.pi * np.clip(mesh.frac, 0, 1))
    D[:, :, 9] = 0.15 * bulk[:, None] * radial
    return D


def _expression_dirs(mesh: _Mesh, parts: List[_Part], sk: _Skeleton, normals: np.ndarray) -> np.ndarray:
    """Ten SMPL-X expression directions ``[V, 3, 10]`` localised on the face."""
    kinds = np.array([p.kind for p in parts])[mesh.part]
    head = (kinds == "head").astype(np.float64)
    hc = sk.head_center
    p = mesh.verts - hc
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    front = head * _smoothstep(z, 0.03, 0.07)
    y_m = -0.058 * sk.head_radii[1] / 0.115
    D = np.zeros((len(p), 3, 10))

    def bump(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return front * _gauss((x - cx) ** 2, sx) * _gauss((y - cy) ** 2, sy)

    below = front * _smoothstep(y_m - y, -0.004, 0.015)
    D[:, 1, 0] = -0.010 * below  # mouth open
    for sgn in (1, -1):
        c = bump(sgn * 0.024, y_m, 0.008, 0.006)
        D[:, 0, 1] += sgn * 0.004 * c  # smile: corners out and up
        D[:, 1, 1] += 0.005 * c
        D[:, 0, 9] += sgn * 0.006 * c  # mouth stretch
        cheek = bump(sgn * 0.042, y_m + 0.025, 0.014, 0.014)
        D[:, :, 5] += 0.006 * cheek[:, None] * normals  # cheek puff
        brow = bump(sgn * 0.03, 0.03, 0.016, 0.007)
        D[:, 1, 3] += 0.005 * brow  # brow raise
        inner = bump(sgn * 0.014, 0.028, 0.007, 0.006)
        D[:, 1, 4] += -0.003 * inner  # brow furrow
        D[:, 0, 4] += -sgn * 0.002 * inner
        lid = bump(sgn * 0.031, 0.005, 0.012, 0.008)
        D[:, 1, 6] += -0.004 * lid * np.sign(y - 0.005)  # squint: lids towards the eye line
    D[:, 2, 2] = 0.008 * bump(0.0, y_m, 0.012, 0.008)  # pucker
    D[:, 0, 7] = 0.005 * below  # jaw sideways
    D[:, 1, 8] = 0.003 * bump(0.0, 0.0, 0.01, 0.012)  # nose wrinkle
    return D


def _pose_dirs(W: np.ndarray, normals: np.ndarray, amp: float = 0.008) -> np.ndarray:
    """Pose correctives ``[V, 3, 9 (J-1)]``: normal bulges where joint ``j`` blends with others."""
    V, J = W.shape
    pattern = np.array([-1.0, 0.2, -0.2, -0.2, -1.0, 0.2, 0.2, -0.2, -1.0])
    P = np.zeros((V, 3, 9 * (J - 1)), dtype=np.float32)
    for j in range(1, J):
        blend = 4.0 * W[:, j] * (1.0 - W[:, j])
        rows = np.flatnonzero(blend > 1e-6)
        if rows.size:
            P[rows, :, 9 * (j - 1): 9 * j] = amp * blend[rows, None, None] * normals[rows, :, None] * pattern[None, None, :]
    return P


def _joint_regressor(verts: np.ndarray, joints: np.ndarray, W: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """Dense ``[J, V]`` regressor: non-negative rows that sum to 1 and reproduce ``joints``.

    Each row stays close to inverse-distance weights on the ``k`` vertices nearest to the joint
    (among those skinned to the joint's bone or its parent's) while its weighted mean must hit
    the joint: a non-negative least-squares problem with the constraints weighted heavily,
    followed by the (tiny) minimum-norm correction on the chosen vertices that makes the joint
    and the row sum exact. ``k`` grows until the joint lies inside the candidates' hull.
    """
    from scipy.optimize import nnls

    J = len(joints)
    R = np.zeros((J, len(verts)))
    b = np.array([0.0, 0.0, 0.0, 1.0])
    for j in range(J):
        bones = [j] + ([parents[j]] if parents[j] >= 0 else [])
        cand = np.flatnonzero(W[:, bones].sum(1) > 0.05)
        d2 = ((verts[cand] - joints[j]) ** 2).sum(1)
        ranked = np.argsort(d2)
        for k in (96, 192, 384, 768):
            order = ranked[:k]
            idx = cand[order]
            w0 = 1.0 / (d2[order] + 1e-4)
            w0 /= w0.sum()
            A = np.concatenate([(verts[idx] - joints[j]).T, np.ones((1, len(idx)))], 0)  # [4, n]
            M = np.concatenate([1e3 * A, 1e-2 * np.eye(len(idx))], 0)
            w, _ = nnls(M, np.concatenate([1e3 * b, 1e-2 * w0]), maxiter=50 * len(idx))
            sup = w > 1e-9
            As = A[:, sup]
            w[sup] += As.T @ np.linalg.lstsq(As @ As.T, b - A @ w, rcond=None)[0]
            if np.abs(A @ w - b).max() < 1e-9 and w.min() >= 0.0:
                break
        R[j, idx] = w
    return R


def _hand_pca(sk: _Skeleton, side: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Orthonormal hand PCA components ``[45, 45]`` (rows) and a relaxed mean pose ``[45]``."""
    geo = sk.fingers[1]  # built for the left hand, mirrored for the right
    flex = np.zeros((15, 3))
    spread = np.zeros((15, 3))
    for f, name in enumerate(_FINGERS):
        a = _unit(np.cross(geo[name]["dir"], (0.0, -1.0, 0.0)))
        flex[3 * f: 3 * f + 3] = a
        if name != "thumb":
            spread[3 * f] = np.array([0.0, 1.0, 0.0]) * (1.5, 0.5, -1.5, -0.5)[f]
    opposition = np.zeros((15, 3))
    opposition[12:15] = _unit(geo["thumb"]["dir"]) * 0.5 + flex[12:15]
    basis = [flex.ravel(), spread.ravel(), opposition.ravel()]
    rng = np.random.default_rng([int(seed), 45])
    basis += list(rng.normal(size=(45, 45)))
    comps = []
    for b in basis:
        b = b.astype(np.float64).copy()
        for c in comps:
            b -= (b @ c) * c
        n = np.linalg.norm(b)
        if n > 1e-8:
            comps.append(b / n)
        if len(comps) == 45:
            break
    comps = np.stack(comps)
    mean = (flex * np.array([0.15, 0.2, 0.15] * 4 + [0.1, 0.1, 0.1])[:, None]).ravel()
    if side < 0:  # mirror across x = 0: axis-angle (x, y, z) -> (x, -y, -z)
        mirror = np.tile([1.0, -1.0, -1.0], 15)
        comps = comps * mirror[None]
        mean = mean * mirror
    return comps, mean


def _face_at(mesh: _Mesh, rows: np.ndarray, points: np.ndarray, tree_cache: dict) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest triangle (among ``rows``) and clipped barycentrics of each point's projection."""
    from scipy.spatial import cKDTree

    key = id(rows)
    if key not in tree_cache:
        cent = mesh.verts[mesh.faces[rows]].mean(1)
        tree_cache[key] = cKDTree(cent)
    _, nn = tree_cache[key].query(points, k=1)
    fidx = rows[nn]
    a, b, c = (mesh.verts[mesh.faces[fidx, i]] for i in range(3))
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    bb = (d11 * d20 - d01 * d21) / den
    cc = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1 - bb - cc, bb, cc], 1), 0.0, None)
    bary /= bary.sum(1, keepdims=True)
    return fidx, bary


def _landmarks(mesh: _Mesh, parts: List[_Part], sk: _Skeleton) -> Dict[str, np.ndarray]:
    """SMPL-X static (51) and dynamic contour (79 x 17) face landmarks."""
    head_idx = [p.name for p in parts].index("head")
    rows = np.flatnonzero(mesh.face_part == head_idx)
    hc, (rx, ry, rz) = sk.head_center, sk.head_radii
    y_m = -0.058 * ry / 0.115
    pts = []
    for sgn in (-1, 1):  # brows: subject's right (-x) first, outer to inner, then left inner to outer
        xs = np.linspace(0.055, 0.012, 5) if sgn < 0 else np.linspace(0.012, 0.055, 5)
        for xv in xs:
            pts.append((sgn * xv, 0.03 + 0.006 * np.cos(np.pi * (xv - 0.033) / 0.05)))
    pts += [(0.0, yv) for yv in np.linspace(0.012, -0.02, 4)]  # nose bridge
    pts += [(xv, -0.03) for xv in np.linspace(-0.015, 0.015, 5)]  # nostrils
    for sgn in (-1, 1):  # eyes, 6 points each
        for ang in np.linspace(0, 2 * np.pi, 6, endpoint=False):
            pts.append((sgn * 0.031 - 0.011 * np.cos(ang), 0.005 + 0.004 * np.sin(ang)))
    for ang in np.linspace(0, 2 * np.pi, 12, endpoint=False):  # outer lips
        pts.append((-0.025 * np.cos(ang), y_m + 0.009 * np.sin(ang)))
    for ang in np.linspace(0, 2 * np.pi, 8, endpoint=False):  # inner lips
        pts.append((-0.018 * np.cos(ang), y_m + 0.003 * np.sin(ang)))
    pts = np.array(pts)
    ell = np.sqrt(np.clip(1 - (pts[:, 0] / rx) ** 2 - (pts[:, 1] / ry) ** 2, 0.05, 1))
    p3 = hc + np.stack([pts[:, 0], pts[:, 1], rz * ell + 0.01], 1)
    cache: dict = {}
    lmk_f, lmk_b = _face_at(mesh, rows, p3, cache)
    # Contours: 17 points along the jaw line from the right ear over the chin to the left ear,
    # turned with the head's yaw (index 0..39 = 0..39 degrees, 40..78 = -1..-39 degrees).
    phi = np.linspace(-np.pi / 2, np.pi / 2, 17)
    dyn_f = np.zeros((79, 17), dtype=np.int64)
    dyn_b = np.zeros((79, 17, 3))
    for i in range(79):
        yaw = np.deg2rad(i if i <= 39 else 39 - i)
        psi = phi - yaw
        yy = -0.01 - (0.095 - 0.01) * np.cos(phi) ** 1.5
        ell = np.sqrt(np.clip(1 - (yy / ry) ** 2, 0.05, 1))
        q = hc + np.stack([0.9 * rx * ell * np.sin(psi), yy, 0.9 * rz * ell * np.cos(psi)], 1)
        dyn_f[i], dyn_b[i] = _face_at(mesh, rows, q, cache)
    return {
        "lmk_faces_idx": lmk_f.astype(np.int64),
        "lmk_bary_coords": lmk_b.astype(np.float32),
        "dynamic_lmk_faces_idx": dyn_f,
        "dynamic_lmk_bary_coords": dyn_b.astype(np.float32),
    }


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

_CACHE: Dict[Tuple[str, int, str], Dict[str, np.ndarray]] = {}


@dataclass
class _Topology:
    """What every seed and gender of a model type shares: resolution, vertex order, UV layout."""

    resolution: Dict[str, Tuple[int, int]]
    perm: np.ndarray
    vt: np.ndarray
    landmarks: Dict[str, np.ndarray]


_TOPOLOGY: Dict[str, _Topology] = {}


def _topology(model_type: str) -> _Topology:
    """Resolution, keypoint vertex order and UV layout, fixed on the nominal body (all factors 1)."""
    if model_type not in _TOPOLOGY:
        nominal = _Proportions(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
        sk = _skeleton(model_type, nominal)
        parts = _body_parts(model_type, sk, nominal)
        _resolve_resolution(parts, NUM_VERTICES[model_type])
        mesh = _build_mesh(parts)
        _pack_charts(mesh)
        perm = _place_keypoints(model_type, mesh, sk, parts)
        _apply_permutation(mesh, perm)
        landmarks = _landmarks(mesh, parts, sk) if model_type == "smplx" else {}
        _TOPOLOGY[model_type] = _Topology({p.name: (p.rings, p.segments) for p in parts}, perm, mesh.vt, landmarks)
    return _TOPOLOGY[model_type]


def _generate(model_type: str, seed: int, gender: str) -> Dict[str, np.ndarray]:
    topo = _topology(model_type)
    P = _proportions(seed, gender)
    sk = _skeleton(model_type, P)
    parts = _body_parts(model_type, sk, P)
    for p in parts:
        p.rings, p.segments = topo.resolution[p.name]
    mesh = _build_mesh(parts)
    mesh.vt = topo.vt
    _apply_permutation(mesh, topo.perm)
    parents = SMPL_PARENTS if model_type == "smpl" else SMPLX_PARENTS
    W = _skinning_weights(model_type, mesh, parts, sk)
    normals = _vertex_normals(mesh.verts, mesh.faces)
    shapedirs = _shape_dirs(model_type, mesh, parts, sk)
    if model_type == "smplx":
        shapedirs = np.concatenate([shapedirs, _expression_dirs(mesh, parts, sk, normals)], axis=2)
    posedirs = _pose_dirs(W, normals, amp=0.008 * P.scale)
    Jreg = _joint_regressor(mesh.verts, sk.joints, W, parents)
    s = P.scale
    kintree = np.stack([np.array(parents, dtype=np.int64), np.arange(len(parents))]).astype(np.uint32)
    kintree[0, 0] = np.iinfo(np.uint32).max
    arrays: Dict[str, np.ndarray] = {
        "v_template": (mesh.verts * s).astype(np.float32),
        "f": mesh.faces.astype(np.int32),
        "J_regressor": Jreg.astype(np.float32),
        "J": (sk.joints * s).astype(np.float32),
        "weights": W.astype(np.float32),
        "posedirs": posedirs,
        "shapedirs": (shapedirs * s).astype(np.float32),
        "kintree_table": kintree,
        "vt": mesh.vt.astype(np.float32),
        "ft": mesh.ft.astype(np.int32),
    }
    if model_type == "smplx":
        for tag, side in (("l", 1), ("r", -1)):
            comps, mean = _hand_pca(sk, side, seed)
            arrays[f"hands_components{tag}"] = comps.astype(np.float32)
            arrays[f"hands_mean{tag}"] = mean.astype(np.float32)
        arrays.update({k: v.copy() for k, v in topo.landmarks.items()})
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def make_body_arrays(model_type: str, seed: int = 0, gender: str = "neutral") -> Dict[str, np.ndarray]:
    """Arrays of a procedural SMPL / SMPL-X model, keyed as in the official files.

    Args:
        model_type: ``"smpl"`` or ``"smplx"``.
        seed: perturbs the body's proportions by a few percent (deterministic).
        gender: ``"neutral"``, ``"male"`` (taller, broader shoulders) or ``"female"``
            (shorter, wider hips).

    Returns:
        A new dict of read-only arrays (cached per ``(model_type, seed, gender)``):
        ``v_template [V, 3]``, ``f [F, 3]``, ``J_regressor [J, V]`` (dense), ``J [J, 3]``,
        ``weights [V, J]``, ``posedirs [V, 3, 9 (J - 1)]``, ``shapedirs [V, 3, 10]``
        (SMPL-X ``[V, 3, 20]``: 10 shape + 10 expression), ``kintree_table [2, J]``,
        ``vt [T, 2]``, ``ft [F, 3]``; SMPL-X also ``hands_components{l,r} [45, 45]``,
        ``hands_mean{l,r} [45]``, ``lmk_faces_idx [51]``, ``lmk_bary_coords [51, 3]``,
        ``dynamic_lmk_faces_idx [79, 17]``, ``dynamic_lmk_bary_coords [79, 17, 3]``.

    Raises:
        ValueError: for an unknown model type or gender.
    """
    if model_type not in NUM_VERTICES:
        raise ValueError(f"model_type must be 'smpl' or 'smplx', got {model_type!r}")
    if gender not in _GENDERS:
        raise ValueError(f"gender must be one of {_GENDERS}, got {gender!r}")
    key = (model_type, int(seed), gender)
    if key not in _CACHE:
        _CACHE[key] = _generate(model_type, int(seed), gender)
    return dict(_CACHE[key])


class _Dense:
    """Pickles a mostly-zero array as ``reshape(float32(bincount(idx, vals, n)), shape)``."""

    class _Flat:
        def __init__(self, idx: np.ndarray, vals: np.ndarray, size: int) -> None:
            self.args = (idx, vals, size)

        def __reduce__(self):
            return (np.bincount, self.args)

    class _Cast:
        def __init__(self, inner: "_Dense._Flat") -> None:
            self.inner = inner

        def __reduce__(self):
            return (np.float32, (self.inner,))

    def __init__(self, array: np.ndarray) -> None:
        flat = np.ascontiguousarray(array).reshape(-1)
        idx = np.flatnonzero(flat)
        self.shape = tuple(array.shape)
        self.cast = _Dense._Cast(_Dense._Flat(idx.astype(np.int64), flat[idx].astype(np.float64), flat.size))

    def __reduce__(self):
        return (np.reshape, (self.cast, self.shape))


def _file_payload(model_type: str, fmt: str, arrays: Dict[str, np.ndarray]) -> dict:
    data: dict = dict(arrays)
    if fmt == "pkl":
        data["posedirs"] = _Dense(arrays["posedirs"])
        if model_type == "smpl":
            from scipy import sparse

            data["J_regressor"] = sparse.csc_matrix(arrays["J_regressor"].astype(np.float64))
            data["bs_style"] = "lbs"
            data["bs_type"] = "lrotmin"
    return data


def _atomic_write(path: Path, write: Callable[[object], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_npz(fh, arrays: Dict[str, np.ndarray]) -> None:
    """A standard compressed ``.npz`` (what ``np.savez_compressed`` writes), at deflate level 1."""
    import zipfile

    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", mode="w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(arr), allow_pickle=False)


def write_body_model(path, model_type: str, fmt: str = "pkl", seed: int = 0, gender: str = "neutral") -> Path:
    """Write one procedural model file in the official layout, atomically (temp file + rename).

    Args:
        path: output file (its folder is created).
        model_type: ``"smpl"`` or ``"smplx"``.
        fmt: ``"pkl"`` (pickled dict; SMPL's ``J_regressor`` as a ``scipy.sparse.csc_matrix``)
            or ``"npz"`` (compressed; all arrays dense).
        seed: see :func:`make_body_arrays`.
        gender: see :func:`make_body_arrays`.

    Returns:
        The written path.

    Raises:
        ValueError: for an unknown format, model type or gender.
    """
    if fmt not in ("pkl", "npz"):
        raise ValueError(f"fmt must be 'pkl' or 'npz', got {fmt!r}")
    path = Path(path)
    data = _file_payload(model_type, fmt, make_body_arrays(model_type, seed, gender))
    if fmt == "pkl":
        _atomic_write(path, lambda fh: pickle.dump(data, fh, protocol=4))
    else:
        _atomic_write(path, lambda fh: _write_npz(fh, data))
    return path


def _expected_files() -> List[Tuple[str, str, str, str]]:
    out = []
    for model_type, fmts in (("smpl", ("pkl", "npz")), ("smplx", ("npz", "pkl"))):
        for gender in _GENDERS:
            for fmt in fmts:
                out.append((f"{model_type}/{_PREFIX[model_type]}_{gender.upper()}.{fmt}", model_type, fmt, gender))
    return out


def write_body_models(root, seed: int = 0) -> Path:
    """Write ``root/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.{pkl,npz}`` and ``root/smplx/SMPLX_*.{npz,pkl}``.

    A manifest (``root/synthetic_body.json``: generator version and seed) records what was
    written; when it matches and every file is present nothing is rewritten. Files that exist
    without a manifest are never overwritten (they may be real, licensed models).

    Args:
        root: output folder (usable as ``ZOO_BODY_MODELS``).
        seed: see :func:`make_body_arrays`.

    Returns:
        ``root`` as a Path.

    Raises:
        FileExistsError: when a model file exists in ``root`` that this generator did not write.
    """
    root = Path(root)
    manifest_path = root / _MANIFEST
    files = _expected_files()
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
    ours = isinstance(manifest, dict) and manifest.get("generator") == __name__
    if ours and manifest.get("version") == GENERATOR_VERSION and manifest.get("seed") == int(seed) and all(
        (root / rel).is_file() for rel, *_ in files
    ):
        return root
    if not ours:
        foreign = [str(root / rel) for rel, *_ in files if (root / rel).exists()]
        if foreign:
            raise FileExistsError(
                f"{foreign[0]} exists and was not written by {__name__} (no {_MANIFEST} in {root}); "
                "refusing to overwrite what may be a real body model - choose another folder"
            )
    if manifest_path.exists():
        manifest_path.unlink()  # a crash below must not leave a manifest claiming stale files
    for rel, model_type, fmt, gender in files:
        write_body_model(root / rel, model_type, fmt, seed, gender)
    payload = {"generator": __name__, "version": GENERATOR_VERSION, "seed": int(seed), "files": [f[0] for f in files]}
    _atomic_write(manifest_path, lambda fh: fh.write(json.dumps(payload, indent=1).encode()))
    return root


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m zoo.core.synthetic_body --out DIR [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m zoo.core.synthetic_body",
        description="Write procedural SMPL / SMPL-X model files (usable as ZOO_BODY_MODELS).",
    )
    parser.add_argument("--out", required=True, help="output folder; gets smpl/ and smplx/")
    parser.add_argument("--seed", type=int, default=0, help="proportion perturbation seed")
    args = parser.parse_args(argv)
    try:
        root = write_body_models(args.out, seed=args.seed)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
