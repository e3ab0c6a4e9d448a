"""Kinematic trees, body proportions and rest joints of the procedural SMPL / SMPL-X bodies.

The first stage of :mod:`zoo.synthetic.body`: the joint trees of both model types, the
seeded per-gender proportion factors and the rest-pose skeleton (joints, sole height, head
ellipsoid, SMPL-X finger geometry) the body parts are built around, plus the small numeric
helpers (smooth step, unit vector, Gaussian) that every stage uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Sequence

import numpy as np

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

_GENDERS = ("neutral", "male", "female")

# Joint indices shared by both models (body part of the tree).
_PELVIS, _LHIP, _RHIP, _SPINE1, _LKNEE, _RKNEE, _SPINE2, _LANKLE, _RANKLE, _SPINE3 = range(10)
_LFOOT, _RFOOT, _NECK, _LCOLLAR, _RCOLLAR, _HEAD, _LSHOULDER, _RSHOULDER = range(10, 18)
_LELBOW, _RELBOW, _LWRIST, _RWRIST = range(18, 22)
_SMPL_LHAND, _SMPL_RHAND = 22, 23
_JAW, _LEYE, _REYE = 22, 23, 24
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X order of the hand joints


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
