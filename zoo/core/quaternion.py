"""Quaternion helpers shared by the core: ``wxyz`` (scalar first) quaternions and rotations.

Conventions (shared with the rest of ``zoo.core``): quaternions are ``wxyz``, as in gsplat, and
need not be normalised on input; every function that turns one into a rotation normalises it
first. Everything is differentiable.

Used by :mod:`zoo.core.skinning` (which re-exports these names, so
``from zoo.core.skinning import quat_to_matrix`` keeps working) and by the renderer's projection
stage (:func:`zoo.core.projection.quat_to_rotmat`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["normalise", "quat_to_matrix", "matrix_to_quat", "quat_multiply"]


def normalise(q: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale vectors (typically quaternions) to unit length.

    Args:
        q: ``[..., D]`` vectors.
        eps: lower bound on the norm, so a zero vector stays finite.

    Returns:
        ``[..., D]`` unit vectors.
    """
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices of ``wxyz`` quaternions (normalised first).

    Args:
        q: ``[..., 4]`` quaternions ``(w, x, y, z)``.

    Returns:
        ``[..., 3, 3]`` rotation matrices.
    """
    w, x, y, z = normalise(q).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = (
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    )
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(R: Tensor) -> Tensor:
    """Unit ``wxyz`` quaternions of rotation matrices, with ``w >= 0``.

    Uses the numerically stable branch (largest of ``4w², 4x², 4y², 4z²``) per matrix, so it is
    accurate for every rotation, including half turns. Differentiable almost everywhere.

    Args:
        R: ``[..., 3, 3]`` rotation matrices.

    Returns:
        ``[..., 4]`` quaternions ``(w, x, y, z)``.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * (w², x², y², z²); the largest is >= 1 for a rotation, so its branch divides safely.
    t = torch.stack(
        [
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    # Clamping keeps the branches that are not chosen finite (their gradient is masked anyway).
    s = 2.0 * torch.sqrt(t.clamp_min(0.1))  # [..., 4]: 4w, 4x, 4y, 4z on the chosen branch
    a = m21 - m12  # 4wx
    b = m02 - m20  # 4wy
    c = m10 - m01  # 4wz
    d = m01 + m10  # 4xy
    e = m02 + m20  # 4xz
    f = m12 + m21  # 4yz
    cand = torch.stack(
        [
            torch.stack([s[..., 0] / 4, a / s[..., 0], b / s[..., 0], c / s[..., 0]], -1),
            torch.stack([a / s[..., 1], s[..., 1] / 4, d / s[..., 1], e / s[..., 1]], -1),
            torch.stack([b / s[..., 2], d / s[..., 2], s[..., 2] / 4, f / s[..., 2]], -1),
            torch.stack([c / s[..., 3], e / s[..., 3], f / s[..., 3], s[..., 3] / 4], -1),
        ],
        dim=-2,
    )  # [..., 4 branches, 4]
    best = t.argmax(dim=-1)  # [...]
    idx = best[..., None, None].expand(best.shape + (1, 4))
    q = torch.gather(cand, -2, idx).squeeze(-2)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return normalise(q * sign)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of ``wxyz`` quaternions (rotation ``b`` first, then ``a``).

    Args:
        a: ``[..., 4]`` quaternions.
        b: ``[..., 4]`` quaternions (broadcast against ``a``).

    Returns:
        ``[..., 4]`` products; ``quat_to_matrix(a * b) = quat_to_matrix(a) @ quat_to_matrix(b)``.
    """
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )
