"""Clothing-like appearance of a synthetic subject: a texture function, its rendering, cloth offsets.

The texture is a *function* of surface features, evaluated wherever it is needed (per vertex,
or per pixel from rasterized barycentrics in :func:`render_views`):

* the canonical (zero-pose, shaped) position ``p = (x, y, z)`` of the surface point,
* part memberships from the skinning weights (torso, arms, hands, legs, feet, head),
* the position along the arm (``s_arm``: 0 at the shoulder joint, 1 at the wrist) and along
  the leg (``s_leg``: 0 at the hip joint, 1 at the ankle).

From those it paints shirt (with stripes, checks or dots and an optional chest print), sleeves of
a per-subject length, trousers or shorts with a belt and cuffs, shoes with soles, skin, hair
with a hairline, and a face with eyebrows, eyes and a mouth. All choices come from a per-subject
seed (:func:`make_appearance`).

:func:`render_views` rasterizes a posed mesh with ``zoo.core.mesh.rasterize_triangles`` and
evaluates the texture function at every covered (supersampled) pixel from its barycentrics, then
shades it (Lambert + ambient, fixed light).

Cloth offsets: a few per-vertex coefficient maps (sleeve hem, trouser hem, shirt hem, elbow and
knee wrinkles) that, multiplied by joint angles of the posed skeleton, push vertices along their
normals by up to about 2 cm — pose-dependent detail for the avatar methods to learn.

Conventions: the SMPL canonical frame (y up, the body faces +z, its left side is +x), metres,
colours in [0, 1]. Joint indices are SMPL's; SMPL-X shares the first 22.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor

from zoo.core import mesh

__all__ = [
    "Appearance",
    "Landmarks",
    "make_appearance",
    "landmarks",
    "surface_features",
    "texture_color",
    "cloth_coefficients",
    "cloth_drivers",
    "cloth_offsets",
    "render_views",
    "split_features",
    "NUM_FEATURES",
    "NUM_CLOTH_TERMS",
]

# SMPL joint indices (SMPL-X uses the same for 0..21).
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
L_FOOT, R_FOOT, NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = range(10, 20)
L_WRIST, R_WRIST = 20, 21

#: Joint groups whose summed skinning weight gives each part membership.
_PART_JOINTS = {
    "torso": (PELVIS, SPINE1, SPINE2, SPINE3, L_COLLAR, R_COLLAR),
    "arm": (L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW),
    "leg": (L_HIP, R_HIP, L_KNEE, R_KNEE),
    "foot": (L_ANKLE, R_ANKLE, L_FOOT, R_FOOT),
    "head": (NECK, HEAD),
}
_PARTS = ("torso", "arm", "hand", "leg", "foot", "head")

#: Feature columns: p (3), part memberships (6), s_arm, s_leg.
NUM_FEATURES = 3 + len(_PARTS) + 2
_F_POS, _F_PART, _F_SARM, _F_SLEG = 0, 3, 3 + len(_PARTS), 4 + len(_PARTS)

_SKIN = np.array([[0.96, 0.80, 0.69], [0.89, 0.68, 0.54], [0.78, 0.57, 0.42], [0.62, 0.43, 0.30],
                  [0.45, 0.31, 0.22], [0.33, 0.22, 0.16]])
_HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.55, 0.38, 0.20], [0.80, 0.67, 0.42],
                  [0.45, 0.12, 0.06], [0.6, 0.6, 0.62]])
_CLOTH = np.array([[0.80, 0.12, 0.12], [0.12, 0.35, 0.75], [0.10, 0.55, 0.25], [0.95, 0.80, 0.15],
                   [0.55, 0.20, 0.60], [0.95, 0.50, 0.10], [0.10, 0.60, 0.65], [0.92, 0.92, 0.90],
                   [0.20, 0.20, 0.22], [0.85, 0.45, 0.60]])
_TROUSERS = np.array([[0.15, 0.22, 0.45], [0.12, 0.12, 0.13], [0.45, 0.38, 0.28], [0.30, 0.32, 0.30],
                      [0.55, 0.55, 0.58], [0.35, 0.18, 0.12]])
_SHOES = np.array([[0.10, 0.10, 0.10], [0.90, 0.90, 0.90], [0.45, 0.25, 0.12], [0.70, 0.10, 0.10]])

SHIRT_PATTERNS = ("stripes", "checks", "dots")
_LIGHT = np.array([0.35, 0.8, 0.55]) / np.linalg.norm([0.35, 0.8, 0.55])  # world direction to the light
_AMBIENT, _DIFFUSE = 0.45, 0.6


@dataclass
class Appearance:
    """Per-subject clothing, skin and hair (all colours RGB in [0, 1]).

    Attributes:
        skin, hair, shirt, shirt_alt, trousers, trousers_alt, shoes, sole, print_color, lips:
            Colours ``[3]``.
        shirt_pattern: ``"stripes"``, ``"checks"`` or ``"dots"``.
        pattern_freq: Pattern repeats per metre.
        chest_print: Whether the shirt has a round print on the chest.
        sleeve: Sleeve length as a fraction of the shoulder-to-wrist distance.
        trouser_len: Trouser length as a fraction of the hip-to-ankle distance.
        hairline_front, hairline_back: Hairline heights as fractions of the head height.
        waist: Waist height between pelvis (0) and spine1 (1) joints.
        flare: Scale of the pose-dependent cloth offsets (metres at full drive).
    """

    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    shirt_alt: np.ndarray
    trousers: np.ndarray
    trousers_alt: np.ndarray
    shoes: np.ndarray
    sole: np.ndarray
    print_color: np.ndarray
    lips: np.ndarray
    shirt_pattern: str
    pattern_freq: float
    chest_print: bool
    sleeve: float
    trouser_len: float
    hairline_front: float
    hairline_back: float
    waist: float
    flare: float


def _distinct(rng: np.random.Generator, palette: np.ndarray, avoid: np.ndarray, min_dist: float) -> np.ndarray:
    """A palette colour at least ``min_dist`` (RGB distance) from every row of ``avoid``."""
    order = rng.permutation(palette.shape[0])
    for i in order:
        if np.linalg.norm(avoid - palette[i], axis=1).min() >= min_dist:
            return palette[i].copy()
    dists = np.stack([np.linalg.norm(avoid - palette[i], axis=1).min() for i in range(palette.shape[0])])
    return palette[int(np.argmax(dists))].copy()


def make_appearance(seed: int) -> Appearance:
    """Seeded clothing and colours; shirt, trousers, skin and shoes always differ clearly.

    Args:
        seed: Subject seed.

    Returns:
        An :class:`Appearance`.
    """
    rng = np.random.default_rng([int(seed), 104729])
    jitter = lambda c: np.clip(c + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0)  # noqa: E731
    skin = jitter(_SKIN[rng.integers(len(_SKIN))])
    hair = jitter(_HAIR[rng.integers(len(_HAIR))])
    trousers = jitter(_distinct(rng, _TROUSERS, skin[None], 0.3))
    shirt = jitter(_distinct(rng, _CLOTH, np.stack([skin, trousers]), 0.45))
    shirt_alt = _distinct(rng, _CLOTH, np.stack([shirt, skin, trousers]), 0.35)
    print_color = _distinct(rng, _CLOTH, np.stack([shirt, shirt_alt]), 0.35)
    shoes = _distinct(rng, _SHOES, np.stack([trousers, skin]), 0.25)
    sole = np.array([0.85, 0.85, 0.82]) if shoes.mean() < 0.5 else np.array([0.15, 0.15, 0.15])
    trousers_alt = np.clip(trousers * 0.55, 0.0, 1.0)
    lips = np.clip(skin * np.array([0.85, 0.45, 0.45]), 0.0, 1.0)
    return Appearance(
        skin=skin, hair=hair, shirt=shirt, shirt_alt=shirt_alt, trousers=trousers, trousers_alt=trousers_alt,
        shoes=shoes, sole=sole, print_color=print_color, lips=lips,
        shirt_pattern=str(SHIRT_PATTERNS[rng.integers(len(SHIRT_PATTERNS))]),
        pattern_freq=float(rng.uniform(9.0, 16.0)),
        chest_print=bool(rng.random() < 0.5),
        sleeve=float(rng.choice([rng.uniform(0.3, 0.45), rng.uniform(0.85, 0.95)])),
        trouser_len=float(rng.choice([rng.uniform(0.4, 0.55), rng.uniform(0.9, 0.97)])),
        hairline_front=float(rng.uniform(0.78, 0.86)),
        hairline_back=float(rng.uniform(0.25, 0.5)),
        waist=float(rng.uniform(0.3, 0.8)),
        flare=float(rng.uniform(0.012, 0.02)),
    )


@dataclass
class Landmarks:
    """Canonical-space landmarks the texture function is laid out on (metres).

    Attributes:
        joints: Rest joints of the shaped body. ``[J, 3]``
        head_min: Lower corner of the head vertices' bounding box. ``[3]``
        head_max: Upper corner of that box. ``[3]``
        waist_y: Top of the trousers.
        neckline_y: Bottom of the bare neck.
        ankle_y: Mean height of the ankle joints.
        floor_y: Height of the lowest vertex.
    """

    joints: np.ndarray
    head_min: np.ndarray
    head_max: np.ndarray
    waist_y: float
    neckline_y: float
    ankle_y: float
    floor_y: float


def _part_joints(num_joints: int) -> Dict[str, Tuple[int, ...]]:
    """Joint indices of each part for SMPL (24 joints) or SMPL-X (55 joints)."""
    groups = dict(_PART_JOINTS)
    if num_joints >= 55:  # SMPL-X: jaw and eyes 22-24, fingers 25-54
        groups["head"] = groups["head"] + (22, 23, 24)
        groups["hand"] = (L_WRIST, R_WRIST) + tuple(range(25, num_joints))
    else:  # SMPL: hands 22, 23
        groups["hand"] = (L_WRIST, R_WRIST) + tuple(range(22, num_joints))
    return groups


def _part_memberships(lbs_weights: Tensor) -> Tensor:
    """Part memberships ``[V, 6]`` (torso, arm, hand, leg, foot, head) summing to 1."""
    groups = _part_joints(lbs_weights.shape[1])
    parts = torch.stack([lbs_weights[:, list(groups[part])].sum(dim=1) for part in _PARTS], dim=1)
    return parts / parts.sum(dim=1, keepdim=True).clamp(min=1e-8)


def landmarks(rest_verts: Tensor, rest_joints: Tensor, lbs_weights: Tensor, appearance: Appearance) -> Landmarks:
    """Measure the canonical landmarks of a shaped rest body.

    Args:
        rest_verts: Zero-pose vertices ``[V, 3]``.
        rest_joints: Zero-pose joints ``[J, 3]``.
        lbs_weights: Skinning weights ``[V, J]``.
        appearance: The subject's appearance (waist height).

    Returns:
        :class:`Landmarks`.
    """
    v = rest_verts.detach().double().cpu().numpy()
    j = rest_joints.detach().double().cpu().numpy()
    parts = _part_memberships(lbs_weights.detach().double().cpu()).numpy()
    head = v[(parts[:, 5] > 0.5) & (v[:, 1] > j[NECK, 1])]
    if head.shape[0] < 4:
        raise ValueError("the body model has no head region (skinning weights of the neck/head joints)")
    waist_y = j[PELVIS, 1] + appearance.waist * (j[SPINE1, 1] - j[PELVIS, 1])
    neckline_y = j[NECK, 1] - 0.25 * (j[NECK, 1] - j[SPINE3, 1])
    return Landmarks(joints=j, head_min=head.min(axis=0), head_max=head.max(axis=0), waist_y=float(waist_y),
                     neckline_y=float(neckline_y), ankle_y=float(0.5 * (j[L_ANKLE, 1] + j[R_ANKLE, 1])),
                     floor_y=float(v[:, 1].min()))


def _segment_coord(p: Tensor, a: np.ndarray, b: np.ndarray) -> Tensor:
    """Normalised position of points ``p [N, 3]`` along the segment a -> b (0 at a, 1 at b)."""
    a_t = torch.as_tensor(a, dtype=p.dtype)
    d = torch.as_tensor(b - a, dtype=p.dtype)
    return ((p - a_t) @ d) / float((d * d).sum())


def surface_features(rest_verts: Tensor, lbs_weights: Tensor, marks: Landmarks) -> Tensor:
    """Per-vertex texture features (see the module docstring).

    Args:
        rest_verts: Zero-pose vertices ``[V, 3]``.
        lbs_weights: Skinning weights ``[V, J]``.
        marks: Landmarks of the same body.

    Returns:
        ``[V, NUM_FEATURES]`` float32: ``p (3)``, part memberships (6), ``s_arm``, ``s_leg``.
    """
    p = rest_verts.detach().float().cpu()
    parts = _part_memberships(lbs_weights.detach().float().cpu())
    j = marks.joints
    left = p[:, 0] >= 0
    s_arm = torch.where(left, _segment_coord(p, j[L_SHOULDER], j[L_WRIST]),
                        _segment_coord(p, j[R_SHOULDER], j[R_WRIST]))
    s_leg = torch.where(left, _segment_coord(p, j[L_HIP], j[L_ANKLE]), _segment_coord(p, j[R_HIP], j[R_ANKLE]))
    return torch.cat([p, parts, s_arm[:, None].clamp(-1, 2), s_leg[:, None].clamp(-1, 2)], dim=1)


def _fract(x: Tensor) -> Tensor:
    """Fractional part in [0, 1), also for negative values (``torch.frac`` keeps the sign)."""
    return x - torch.floor(x)


def _mix(base: Tensor, color, where: Tensor) -> Tensor:
    """``base [N, 3]`` with rows where ``where [N]`` is true replaced by ``color``."""
    c = torch.as_tensor(np.asarray(color), dtype=base.dtype).expand_as(base)
    return torch.where(where[:, None], c, base)


def _ellipse(u: Tensor, v: Tensor, cu: float, cv: float, ru: float, rv: float) -> Tensor:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def texture_color(features: Tensor, appearance: Appearance, marks: Landmarks) -> Tensor:
    """Evaluate the clothing texture at surface points (vectorised).

    Args:
        features: ``[N, NUM_FEATURES]`` from :func:`surface_features`, possibly interpolated
            with barycentrics (per pixel).
        appearance: Colours and clothing choices.
        marks: Landmarks of the body.

    Returns:
        ``[N, 3]`` RGB in [0, 1], same dtype as ``features``.
    """
    a = appearance
    p = features[:, _F_POS:_F_POS + 3]
    x, y, z = p.unbind(1)
    parts = features[:, _F_PART:_F_PART + len(_PARTS)]
    torso, arm, hand, leg, foot, head = parts.unbind(1)
    s_arm, s_leg = features[:, _F_SARM], features[:, _F_SLEG]
    j = marks.joints
    dtype = features.dtype

    # Shirt pattern in garment coordinates (metres): h runs along the torso (up) or the arm
    # (outwards), w around it (arc length, with a seam at the back / underside).
    on_arm = arm + hand > 0.5
    sh = torch.where((x >= 0)[:, None], torch.as_tensor(j[L_SHOULDER], dtype=dtype),
                     torch.as_tensor(j[R_SHOULDER], dtype=dtype))
    h = torch.where(on_arm, x.abs(), y)
    w = torch.where(on_arm, torch.atan2(y - sh[:, 1], z - sh[:, 2]) * 0.05,
                    torch.atan2(x - float(j[SPINE3, 0]), z - float(j[SPINE3, 2])) * 0.11)
    f = a.pattern_freq
    if a.shirt_pattern == "stripes":
        alt = _fract(h * f) < 0.4
    elif a.shirt_pattern == "checks":
        alt = torch.remainder(torch.floor(h * f) + torch.floor(w * f), 2.0) > 0.5
    else:  # dots on a staggered lattice
        row = torch.floor(h * f)
        du = _fract(h * f) - 0.5
        dv = _fract(w * f + 0.5 * torch.remainder(row, 2.0)) - 0.5
        alt = du * du + dv * dv < 0.3 ** 2
    color = torch.as_tensor(a.shirt, dtype=dtype).expand(p.shape[0], 3).clone()
    color = _mix(color, a.shirt_alt, alt)
    if a.chest_print:
        chest_y = j[SPINE3, 1] - 0.02
        r = torch.sqrt((x - float(j[SPINE3, 0])) ** 2 + (y - chest_y) ** 2)
        front = z > float(j[SPINE3, 2])
        color = _mix(color, a.print_color, front & (r < 0.065) & (torso > 0.5))
        color = _mix(color, a.shirt, front & (r < 0.03) & (torso > 0.5))

    # Trousers (torso below the waist, and the legs down to trouser_len), belt and cuffs.
    trouser_color = torch.as_tensor(a.trousers, dtype=dtype).expand(p.shape[0], 3)
    on_leg = leg + foot > 0.5
    in_trousers = (on_leg & (s_leg < a.trouser_len)) | (~on_leg & (arm + hand < 0.5) & (y < marks.waist_y))
    color = torch.where(in_trousers[:, None], trouser_color, color)
    belt = (~on_leg) & (arm + hand < 0.5) & (y < marks.waist_y) & (y > marks.waist_y - 0.035)
    color = _mix(color, a.trousers_alt, belt)
    cuff = on_leg & (s_leg < a.trouser_len) & (s_leg > a.trouser_len - 0.06)
    color = _mix(color, a.trousers_alt, cuff)

    # Skin: bare legs, bare forearms beyond the sleeve, hands, the neck.
    bare_leg = on_leg & (s_leg >= a.trouser_len)
    bare_arm = (arm + hand > 0.5) & ((s_arm >= a.sleeve) | (hand > 0.5))
    neck_r = torch.sqrt((x - float(j[NECK, 0])) ** 2 + (z - float(j[NECK, 2])) ** 2)
    neck = (head > 0.5) | ((arm + hand < 0.5) & ~on_leg & (y > marks.neckline_y) & (neck_r < 0.085))
    color = _mix(color, a.skin, bare_leg | bare_arm | neck)

    # Shoes and soles.
    shoe = on_leg & ((foot > 0.5) | (y < marks.ankle_y + 0.03))
    color = _mix(color, a.shoes, shoe)
    color = _mix(color, a.sole, shoe & (y < marks.floor_y + 0.018))

    # Head: hair above a hairline that is lower at the back, then the face on the front.
    h0, h1 = marks.head_min, marks.head_max
    centre = 0.5 * (h0 + h1)
    half = np.maximum(0.5 * (h1 - h0), 1e-3)
    u = (x - float(centre[0])) / float(half[0])
    v = (y - float(h0[1])) / float(h1[1] - h0[1])
    front = ((z - float(centre[2])) / float(half[2])).clamp(-1.0, 1.0)
    on_head = (head > 0.5) & (y > float(j[NECK, 1]))
    hairline = a.hairline_back + (a.hairline_front - a.hairline_back) * (0.5 + 0.5 * front).clamp(0, 1) ** 2
    color = _mix(color, a.hair, on_head & (v > hairline))
    face = on_head & (front > 0.35) & (v <= hairline)
    sclera = face & (_ellipse(u, v, 0.36, 0.6, 0.17, 0.075) | _ellipse(u, v, -0.36, 0.6, 0.17, 0.075))
    iris = face & (_ellipse(u, v, 0.36, 0.6, 0.075, 0.07) | _ellipse(u, v, -0.36, 0.6, 0.075, 0.07))
    brows = face & ((((u.abs() - 0.36) / 0.2) ** 2 <= 1.0) & ((v - 0.71).abs() < 0.022))
    mouth = face & _ellipse(u, v, 0.0, 0.3, 0.3, 0.05)
    color = _mix(color, [0.95, 0.95, 0.95], sclera)
    color = _mix(color, [0.12, 0.08, 0.05], iris)
    color = _mix(color, a.hair * 0.8, brows)
    color = _mix(color, a.lips, mouth)
    return color


#: Cloth offset terms: sleeve hem, trouser hem, shirt hem, elbow wrinkles, knee wrinkles.
NUM_CLOTH_TERMS = 5


def cloth_coefficients(features: Tensor, appearance: Appearance, marks: Landmarks) -> Tensor:
    """Per-vertex weights of the cloth offset terms (metres at full drive).

    Args:
        features: Per-vertex features ``[V, NUM_FEATURES]``.
        appearance: Sleeve/trouser lengths and the flare scale.
        marks: Landmarks of the body.

    Returns:
        ``[V, NUM_CLOTH_TERMS]`` float32; rows of vertices outside the clothes are zero.
    """
    a = appearance
    p = features[:, _F_POS:_F_POS + 3]
    y = p[:, 1]
    parts = features[:, _F_PART:_F_PART + len(_PARTS)]
    arm, hand, leg, foot = parts[:, 1], parts[:, 2], parts[:, 3], parts[:, 4]
    s_arm, s_leg = features[:, _F_SARM], features[:, _F_SLEG]
    on_arm = (arm + hand > 0.5) & (hand < 0.5)
    on_leg = (leg + foot > 0.5) & (foot < 0.5)
    ramp = lambda s, end, length: ((s - (end - length)) / length).clamp(0.0, 1.0) * (s < end).to(s.dtype)  # noqa: E731
    sleeve_hem = on_arm.float() * ramp(s_arm, a.sleeve, 0.3)
    trouser_hem = on_leg.float() * ramp(s_leg, a.trouser_len, 0.35)
    torso = (~on_arm) & (~on_leg) & (parts[:, 5] < 0.5)
    shirt_hem = torso.float() * (1.0 - ((y - marks.waist_y) / 0.12).clamp(0.0, 1.0)) * (y >= marks.waist_y).float()
    elbow_s = float(np.linalg.norm(marks.joints[L_ELBOW] - marks.joints[L_SHOULDER]) /
                    np.linalg.norm(marks.joints[L_WRIST] - marks.joints[L_SHOULDER]))
    knee_s = float(np.linalg.norm(marks.joints[L_KNEE] - marks.joints[L_HIP]) /
                   np.linalg.norm(marks.joints[L_ANKLE] - marks.joints[L_HIP]))
    near_elbow = on_arm & ((s_arm - elbow_s).abs() < 0.12) & (s_arm < a.sleeve)
    near_knee = on_leg & ((s_leg - knee_s).abs() < 0.1) & (s_leg < a.trouser_len)
    wrinkle_arm = near_elbow.float() * torch.sin(s_arm * 2.0 * np.pi * 14.0) * 0.3
    wrinkle_leg = near_knee.float() * torch.sin(s_leg * 2.0 * np.pi * 16.0) * 0.3
    coef = torch.stack([sleeve_hem, trouser_hem, 0.6 * shirt_hem, wrinkle_arm, wrinkle_leg], dim=1)
    return (coef * a.flare).float()


def _angle(u: Tensor, v: Tensor) -> Tensor:
    """Angle between vectors ``[..., 3]`` in radians."""
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp(min=1e-8)
    return torch.arccos(cos.clamp(-1.0, 1.0))


def cloth_drivers(joints: Tensor) -> Tensor:
    """Pose drives of the cloth terms from posed joints, each in [0, 1].

    Sleeve flare grows with arm elevation, trouser flare with the thigh's angle to the torso
    axis, the shirt hem with the spine's bend, wrinkles with elbow / knee flexion. Left and right
    terms are averaged per side by the vertices' own side (see :func:`cloth_offsets`).

    Args:
        joints: Posed joints ``[F, J, 3]``.

    Returns:
        ``[F, 2, NUM_CLOTH_TERMS]`` drives for the body's left (row 0) and right (row 1) side.
    """
    down = joints[:, PELVIS] - joints[:, NECK]
    bend = _angle(joints[:, SPINE3] - joints[:, SPINE1], joints[:, SPINE1] - joints[:, PELVIS]) / (np.pi / 4)
    sides = []
    for sh, el, wr, hp, kn, an in ((L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE),
                                   (R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE)):
        upper = joints[:, el] - joints[:, sh]
        fore = joints[:, wr] - joints[:, el]
        thigh = joints[:, kn] - joints[:, hp]
        shin = joints[:, an] - joints[:, kn]
        elev = _angle(upper, down) / np.pi
        flex_hip = torch.sin(_angle(thigh, down).clamp(max=np.pi / 2))
        elbow = _angle(upper, fore) / (np.pi / 2)
        knee = _angle(thigh, shin) / (np.pi / 2)
        sides.append(torch.stack([elev, flex_hip, bend, elbow, knee], dim=1).clamp(0.0, 1.0))
    return torch.stack(sides, dim=1)


def cloth_offsets(coef: Tensor, side_left: Tensor, drivers: Tensor) -> Tensor:
    """Offsets along the vertex normals for every frame.

    Args:
        coef: ``[V, NUM_CLOTH_TERMS]`` from :func:`cloth_coefficients`.
        side_left: ``[V]`` bool, True for vertices on the body's left (canonical ``x >= 0``).
        drivers: ``[F, 2, NUM_CLOTH_TERMS]`` from :func:`cloth_drivers`.

    Returns:
        ``[F, V]`` offsets in metres.
    """
    left = drivers[:, 0] @ coef.t()  # [F, V]
    right = drivers[:, 1] @ coef.t()
    return torch.where(side_left[None], left, right)


def render_views(verts: Tensor, normals: Tensor, faces: Tensor, features: Tensor, appearance: Appearance,
                 marks: Landmarks, K: np.ndarray, w2c: np.ndarray, width: int, height: int,
                 supersample: int = 2) -> Dict[str, np.ndarray]:
    """Rasterize one posed, textured mesh into several cameras.

    ``zoo.core.mesh.rasterize_triangles`` (z-buffer, faces seen from behind culled: the body
    surfaces are closed and outward-oriented) at ``supersample`` x the size; the features are
    interpolated with the barycentrics of each covered sample and :func:`texture_color` is
    evaluated there; Lambert + ambient shading under a fixed world light; a box filter brings the
    samples back to pixels.

    Args:
        verts: World vertices of one frame. ``[V, 3]``
        normals: Their vertex normals. ``[V, 3]``
        faces: Mesh faces. ``[F, 3]``
        features: Per-vertex texture features (:func:`surface_features`). ``[V, NUM_FEATURES]``
        appearance: Clothing colours and choices.
        marks: Landmarks of the body.
        K: Intrinsics, the centre of pixel (0, 0) at (0, 0) (``zoo/data/schema.py``). ``[C, 3, 3]``
        w2c: World-to-camera, OpenCV. ``[C, 4, 4]``
        width: Output width.
        height: Output height.
        supersample: Samples per pixel side (1 = none); the mask is coverage >= 1/2.

    Returns:
        ``image [C, H, W, 3]`` uint8 (black background), ``mask [C, H, W]`` uint8 {0, 1},
        ``depth [C, H, W]`` float32 (camera z on the mask, 0 elsewhere).
    """
    s, nf = int(supersample), features.shape[1]
    light = torch.as_tensor(_LIGHT, dtype=torch.float32)
    out: Dict[str, list] = {"image": [], "mask": [], "depth": []}
    for Kc, Tc in zip(torch.as_tensor(K, dtype=torch.float32), torch.as_tensor(w2c, dtype=torch.float32)):
        uv, z = mesh.project_points(verts, Kc, Tc)
        # Schema pixels have centres at integers, the rasterizer's at half-integers; then scale.
        face_index, bary = mesh.rasterize_triangles((uv + 0.5) * s, z, faces, height * s, width * s, near=1e-3,
                                                    cull_backfaces=True)
        valid = face_index >= 0
        attr = torch.cat([features, normals, verts, z[:, None]], dim=1)
        pix = mesh.interpolate(attr, faces, face_index[valid], bary[valid])  # [M, nf + 7] covered samples
        color = texture_color(pix[:, :nf], appearance, marks)
        n = pix[:, nf:nf + 3] / pix[:, nf:nf + 3].norm(dim=1, keepdim=True).clamp(min=1e-8)
        towards = -Tc[:3, :3].t() @ Tc[:3, 3] - pix[:, nf + 3:nf + 6]  # to the camera centre
        n = torch.where((towards * n).sum(dim=1, keepdim=True) < 0, -n, n)  # silhouette normals can tip away
        rgb = torch.zeros(height * s, width * s, 3)
        rgb[valid] = (color * (_AMBIENT + _DIFFUSE * (n @ light).clamp(min=0.0)[:, None])).clamp(0.0, 1.0)
        zbuf = torch.zeros(height * s, width * s)
        zbuf[valid] = pix[:, nf + 6]
        cover = valid.float().view(height, s, width, s).sum(dim=(1, 3))
        mask = cover >= 0.5 * s * s
        depth = zbuf.view(height, s, width, s).sum(dim=(1, 3)) / cover.clamp(min=1.0)
        out["image"].append(torch.round(rgb.view(height, s, width, s, 3).mean(dim=(1, 3)) * 255).byte().numpy())
        out["mask"].append(mask.byte().numpy())
        out["depth"].append(torch.where(mask, depth, torch.zeros_like(depth)).numpy().astype(np.float32))
    return {k: np.stack(v) for k, v in out.items()}


def split_features(features: Tensor) -> Dict[str, Tensor]:
    """Named views of a feature matrix (for tests and debugging).

    Args:
        features: ``[N, NUM_FEATURES]``.

    Returns:
        ``{"pos": [N, 3], "parts": [N, 6], "s_arm": [N], "s_leg": [N]}``.
    """
    return {"pos": features[:, :3], "parts": features[:, _F_PART:_F_PART + len(_PARTS)],
            "s_arm": features[:, _F_SARM], "s_leg": features[:, _F_SLEG]}

