"""Rigging of the procedural SMPL / SMPL-X bodies: what animates the mesh.

Given the mesh of :mod:`zoo.synthetic.mesh` and the skeleton of
:mod:`zoo.synthetic.skeleton`: skinning weights that blend smoothly between a bone and its
neighbours near each joint, the ten shape directions, the SMPL-X expression directions, pose
correctives, a joint regressor that reproduces the joints exactly, and the SMPL-X hand PCA and
face landmarks.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from zoo.synthetic.mesh import _Mesh, _Part
from zoo.synthetic.skeleton import (
    NUM_JOINTS,
    _FINGERS,
    _HEAD,
    _JAW,
    _LANKLE,
    _LCOLLAR,
    _LHIP,
    _LKNEE,
    _LSHOULDER,
    _LWRIST,
    _NECK,
    _PELVIS,
    _RCOLLAR,
    _RHIP,
    _RKNEE,
    _RSHOULDER,
    _SPINE1,
    _SPINE2,
    _Skeleton,
    _gauss,
    _smoothstep,
    _unit,
)

# ----------------------------------------------------------------------------------------------
# Skinning weights, blend shapes, regressor
# ----------------------------------------------------------------------------------------------


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

# ----------------------------------------------------------------------------------------------
# SMPL-X hands and face landmarks
# ----------------------------------------------------------------------------------------------


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
