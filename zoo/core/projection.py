"""Projection stage of the torch rasterizer: 3D Gaussians -> 2D conics, depths and radii.

Everything here follows gsplat's CUDA kernels (1.5.3) rule by rule: quaternion (wxyz, need not
be normalised) to rotation matrix, world-space covariance ``R S S^T R^T``, EWA projection with
the perspective Jacobian and gsplat's frustum clamp, the ``eps2d`` blur (and the Mip-Splatting
compensation), opacity-aware 3.33-sigma radii with near/far/off-screen culling, and real
spherical harmonics of degrees 0-3 for view-dependent colour.

:func:`zoo.core.render.rasterize` is the entry point; this module is its first stage and is
re-exported there (``from zoo.core.render import project_gaussians`` keeps working).
Conventions: OpenCV cameras (x right, y down, z forward), world-to-camera ``viewmats``,
pixel-space ``Ks``; the centre of pixel ``(i, j)`` (row, column) is ``(j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from zoo.core.quaternion import quat_to_matrix

__all__ = [
    "ALPHA_THRESHOLD",
    "MAX_BOX_EXTEND",
    "quat_to_rotmat",
    "quat_scale_to_covar",
    "spherical_harmonics",
    "project_gaussians",
]

# Thresholds of gsplat's CUDA kernels (gsplat/cuda/include/Common.h and the rasterizer) that
# the projection uses; the compositing ones live in zoo.core.tile_raster.
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_BOX_EXTEND = 3.33

# Real SH basis constants (Sloan, "Efficient Spherical Harmonic Evaluation", JCGT 2013),
# with the sign convention of the reference 3DGS / gsplat code.
_SH_C0 = 0.2820947917738781
_SH_C1 = 0.48860251190292
_SH_C2 = (1.092548430592079, 0.5462742152960395, 0.9461746957575601, 0.3153915652525201)
_SH_C3 = (
    0.5900435899266435,
    1.445305721320277,
    2.285228997322329,
    0.4570457994644658,
    1.865881662950577,
    1.119528997770346,
)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from (not necessarily normalised) wxyz quaternions.

    The quaternions are normalised first (norm clamped at ``1e-12``): this is
    :func:`zoo.core.quaternion.quat_to_matrix`, the one implementation the core shares.

    Args:
        quats: Quaternions ``(w, x, y, z)``. ``[..., 4]``

    Returns:
        Rotation matrices. ``[..., 3, 3]``
    """
    return quat_to_matrix(quats)


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances ``R S S^T R^T`` from wxyz quaternions and linear scales.

    Args:
        quats: Rotations ``(w, x, y, z)``, need not be normalised. ``[..., 4]``
        scales: Linear scales (standard deviations along the rotated axes). ``[..., 3]``

    Returns:
        Covariances. ``[..., 3, 3]``
    """
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Evaluates real spherical harmonics of bands ``0..degree`` along view directions.

    Args:
        degree: Highest band to use, 0 to 3.
        dirs: View directions (normalised here; zero vectors are safe). ``[..., 3]``
        coeffs: SH coefficients, band-major, ``K >= (degree + 1) ** 2``. ``[..., K, 3]``

    Returns:
        The raw SH colour (no ``+0.5`` offset, no clamp). ``[..., 3]``

    Raises:
        ValueError: If ``degree`` is outside 0..3 or ``coeffs`` has too few bases.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be in 0..3 for the torch backend, got {degree}")
    if coeffs.shape[-2] < (degree + 1) ** 2:
        raise ValueError(
            f"SH coefficients [..., K, 3] need K >= (sh_degree + 1)^2 = {(degree + 1) ** 2}, "
            f"got K = {coeffs.shape[-2]}"
        )
    out = _SH_C0 * coeffs[..., 0, :]
    if degree == 0:
        return out
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = (v[..., None] for v in d.unbind(-1))
    out = out + _SH_C1 * (-y * coeffs[..., 1, :] + z * coeffs[..., 2, :] - x * coeffs[..., 3, :])
    if degree == 1:
        return out
    zz = z * z
    c1 = x * x - y * y  # cos(2 phi) r^2
    s1 = 2.0 * x * y  # sin(2 phi) r^2
    b5_7 = -_SH_C2[0] * z
    out = (
        out
        + (_SH_C2[1] * s1) * coeffs[..., 4, :]
        + (b5_7 * y) * coeffs[..., 5, :]
        + (_SH_C2[2] * zz - _SH_C2[3]) * coeffs[..., 6, :]
        + (b5_7 * x) * coeffs[..., 7, :]
        + (_SH_C2[1] * c1) * coeffs[..., 8, :]
    )
    if degree == 2:
        return out
    c2 = x * c1 - y * s1
    s2 = x * s1 + y * c1
    b11_13 = -_SH_C3[2] * zz + _SH_C3[3]
    b10_14 = _SH_C3[1] * z
    out = (
        out
        + (-_SH_C3[0] * s2) * coeffs[..., 9, :]
        + (b10_14 * s1) * coeffs[..., 10, :]
        + (b11_13 * y) * coeffs[..., 11, :]
        + (z * (_SH_C3[4] * zz - _SH_C3[5])) * coeffs[..., 12, :]
        + (b11_13 * x) * coeffs[..., 13, :]
        + (b10_14 * c1) * coeffs[..., 14, :]
        + (-_SH_C3[0] * c2) * coeffs[..., 15, :]
    )
    return out


def project_gaussians(
    means: Tensor,
    covars: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    antialiased: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """EWA projection of 3D Gaussians into pinhole cameras, with gsplat's culling rules.

    The camera-space covariance ``W Sigma W^T`` is projected with the perspective Jacobian
    evaluated at the mean, whose ``x/z`` and ``y/z`` are clamped to the image extent plus
    30% of the half field of view on each side (gsplat's ``lim_x/lim_y``); ``eps2d`` is
    added to the diagonal of the 2D covariance. A Gaussian is culled (radii 0) when its
    depth is outside ``[near_plane, far_plane]``, the blurred 2D covariance is not positive
    definite, its opacity is below 1/255, both radii are ``<= radius_clip``, or its box lies
    off-screen. Radii are the opacity-aware box ``ceil(min(3.33, sqrt(2 ln(255 o))) *
    sqrt(Sigma2d_ii))``.

    Args:
        means: Gaussian centres. ``[B, N, 3]``
        covars: World-space covariances. ``[B, N, 3, 3]``
        opacities: Opacities. ``[B, N]``
        viewmats: World-to-camera transforms. ``[B, C, 4, 4]``
        Ks: Intrinsics. ``[B, C, 3, 3]``
        width: Image width in pixels.
        height: Image height in pixels.
        near_plane: Near clipping depth.
        far_plane: Far clipping depth.
        radius_clip: Cull Gaussians whose two radii are both ``<=`` this (pixels).
        eps2d: Isotropic blur added to the 2D covariance (pixels squared).
        antialiased: Also return the Mip-Splatting compensation
            ``sqrt(det(Sigma2d) / det(Sigma2d + eps2d I))`` (used for the radius, too).

    Returns:
        ``(radii [B, C, N, 2] int32, means2d [B, C, N, 2], depths [B, C, N],
        conics [B, C, N, 3], compensations [B, C, N] or None)``; culled entries hold
        zeros. ``conics`` are the upper triangle ``(a, b, c)`` of the inverse 2D covariance.
    """
    rot = viewmats[..., :3, :3]  # [B, C, 3, 3]
    trans = viewmats[..., :3, 3]  # [B, C, 3]
    means_c = torch.einsum("bcij,bnj->bcni", rot, means) + trans[:, :, None, :]
    covars_c = torch.einsum("bcij,bnjk,bclk->bcnil", rot, covars, rot)
    x, y, z = means_c.unbind(-1)  # [B, C, N]

    valid = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(valid, z, torch.ones_like(z))
    fx = Ks[..., 0, 0][..., None]
    fy = Ks[..., 1, 1][..., None]
    cx = Ks[..., 0, 2][..., None]
    cy = Ks[..., 1, 2][..., None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z_safe
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zeros = torch.zeros_like(z)
    jac = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(z.shape + (2, 3))
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)  # [B, C, N, 2, 2]
    mean2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    c00 = cov2d[..., 0, 0]
    c01 = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c11 = cov2d[..., 1, 1]
    det_orig = c00 * c11 - c01 * c01
    c00 = c00 + eps2d
    c11 = c11 + eps2d
    det = c00 * c11 - c01 * c01
    valid = valid & (det > 0) & (c00 > 0)  # positive definite after the blur
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c11 / det_safe, -c01 / det_safe, c00 / det_safe], dim=-1)
    compensations = None
    if antialiased:
        compensations = torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))

    with torch.no_grad():
        opa = opacities[:, None, :].expand(z.shape)
        if compensations is not None:
            opa = opa * compensations
        valid = valid & (opa >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opa.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_BOX_EXTEND)
        radius_x = torch.ceil(extend * torch.sqrt(c00.clamp_min(0)))
        radius_y = torch.ceil(extend * torch.sqrt(c11.clamp_min(0)))
        valid = valid & ~((radius_x <= radius_clip) & (radius_y <= radius_clip))
        mx, my = mean2d[..., 0], mean2d[..., 1]
        inside = (
            (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        )
        valid = valid & inside
        radii = torch.stack([radius_x, radius_y], dim=-1)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    mean2d = torch.where(valid[..., None], mean2d, torch.zeros_like(mean2d))
    depths = torch.where(valid, z, torch.zeros_like(z))
    conics = torch.where(valid[..., None], conics, torch.zeros_like(conics))
    if compensations is not None:
        compensations = torch.where(valid, compensations, torch.zeros_like(compensations))
    return radii, mean2d, depths, conics, compensations
