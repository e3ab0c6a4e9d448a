"""Surface geometry of the procedural SMPL / SMPL-X bodies: parts, mesh, UV charts, keypoints.

Each body part is a closed, outward-oriented surface of revolution with (super-)elliptic
cross-sections around a bone of the skeleton (:mod:`zoo.synthetic.skeleton`). This module
builds the parts, chooses their rings x segments so that the vertex count is exactly the official
one, triangulates them with one rectangular UV chart each, skyline-packs the charts into
``[0, 1]^2`` at one texel density, and reorders the vertices so that the indices smplx reads for
its extra keypoints sit at those body landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from zoo.synthetic.skeleton import (
    _FINGERS,
    _HEAD,
    _LANKLE,
    _LCOLLAR,
    _LELBOW,
    _LEYE,
    _LFOOT,
    _LHIP,
    _LKNEE,
    _LSHOULDER,
    _LWRIST,
    _NECK,
    _PELVIS,
    _RANKLE,
    _RCOLLAR,
    _RELBOW,
    _REYE,
    _RFOOT,
    _RHIP,
    _RKNEE,
    _RSHOULDER,
    _RWRIST,
    _SMPL_LHAND,
    _SMPL_RHAND,
    _SPINE1,
    _SPINE2,
    _SPINE3,
    _Proportions,
    _Skeleton,
    _gauss,
    _smoothstep,
    _unit,
)

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
# Parts: closed surfaces of revolution with (super-)elliptic cross-sections
# ----------------------------------------------------------------------------------------------


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
# Keypoint vertices and normals
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
