"""Gaussian-splatting rasterization: one entry point, two interchangeable backends.

:func:`rasterize` takes exactly the arguments and shapes of ``gsplat.rasterization``
(gsplat 1.5.3) and returns the same ``(colors, alphas, meta)``. Two backends implement it:

* ``"gsplat"`` forwards every argument to ``gsplat.rasterization`` (CUDA only).
* ``"torch"`` is a pure-PyTorch tile renderer that follows gsplat's CUDA kernels rule by
  rule (EWA projection with the same frustum clamp, ``eps2d`` blur, opacity-aware 3.33-sigma
  bounding boxes, near/far/off-screen culling, per-tile depth order, front-to-back
  compositing with ``alpha = min(0.999, o * exp(-sigma))``, skip ``alpha < 1/255``, stop
  before the transmittance would fall to ``<= 1e-4``; SH degrees 0-3 with the ``+0.5``
  offset). One deliberate difference: gsplat skips a pair whose ``sigma < 0``, which for
  the positive-definite conics of a projection only happens through rounding; the torch
  backend clamps ``sigma`` at 0 instead (and culls non-positive-definite 2D covariances).
  It runs on CPU (and on any device torch runs on) and is differentiable with respect to
  means, quats, scales, opacities, colours / SH coefficients, camera poses and intrinsics.
  The pixel stage is one custom autograd function that walks the (tile, Gaussian)
  intersection list in depth chunks for many tiles at once, keeps the running
  transmittance between chunks, and recomputes each chunk in reverse order in the backward
  pass, so memory stays bounded by ``chunk_budget`` elements per chunk.

:func:`render` is what methods call: it renders a :class:`~zoo.core.gaussians.Gaussians`
from :class:`~zoo.core.camera.Cameras` and returns a :class:`RenderOutput`.

Conventions: OpenCV cameras (x right, y down, z forward), world-to-camera ``viewmats``,
pixel-space ``Ks``; the centre of pixel ``(i, j)`` (row, column) is ``(j + 0.5, i + 0.5)``;
quaternions are wxyz and need not be normalised; images are channels-last.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians

__all__ = [
    "RENDER_MODES",
    "BACKENDS",
    "RenderOutput",
    "rasterize",
    "render",
    "project_gaussians",
    "spherical_harmonics",
    "quat_to_rotmat",
]

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "gsplat", "torch")

# Thresholds of gsplat's CUDA kernels (gsplat/cuda/include/Common.h and the rasterizer).
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_STOP = 1e-4
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

# Arguments of gsplat.rasterization that the torch backend does not implement, with the
# value that means "feature off". Any other value is an error on the torch backend.
_GSPLAT_ONLY_DEFAULTS: Dict[str, Any] = {
    "distributed": False,
    "with_ut": False,
    "with_eval3d": False,
    "radial_coeffs": None,
    "tangential_coeffs": None,
    "thin_prism_coeffs": None,
    "ftheta_coeffs": None,
    "viewmats_rs": None,
    "rolling_shutter": "GLOBAL",
}
# Arguments that only tune gsplat's CUDA kernels; the torch backend accepts and ignores them.
_GSPLAT_TUNING_ARGS = ("segmented",)

# Default number of (tile pixel, Gaussian) pairs the torch backend processes at once.
DEFAULT_CHUNK_BUDGET = 1 << 19


@dataclass
class RenderOutput:
    """What :func:`render` returns.

    Attributes:
        rgb: Rendered colours (``D = 3`` for SH colours), None for the depth-only modes
            ``"D"`` / ``"ED"``. ``[C, H, W, D]``
        alpha: Accumulated opacity ``1 - T``. ``[C, H, W, 1]``
        depth: Accumulated (``"D"``, ``"RGB+D"``) or expected (``"ED"``, ``"RGB+ED"``)
            z-depth, None for ``"RGB"``. ``[C, H, W, 1]``
        meta: The rasterizer's intermediate results (see :func:`rasterize`).
    """

    rgb: Optional[Tensor]
    alpha: Tensor
    depth: Optional[Tensor]
    meta: Dict[str, Any]


# ----------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from (not necessarily normalised) wxyz quaternions.

    Args:
        quats: Quaternions ``(w, x, y, z)``. ``[..., 4]``

    Returns:
        Rotation matrices. ``[..., 3, 3]``
    """
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


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


# ----------------------------------------------------------------------------------------
# Tile intersections
# ----------------------------------------------------------------------------------------


@dataclass
class _TilePlan:
    """Sorted (tile, Gaussian) intersections of a batch of images (all int64 on device)."""

    flat_ids: Tensor  # [M] index into the flattened projected arrays, by tile then depth
    tile_ids: Tensor  # [M] global tile index (image * tiles_h * tiles_w + row * tiles_w + col), int32/64
    tile_start: Tensor  # [n_tiles] first intersection of each tile
    tile_count: Tensor  # [n_tiles] intersections per tile
    tiles_per_gauss: Tensor  # [P] tiles touched by each projected Gaussian
    n_images: int
    tiles_h: int
    tiles_w: int
    tile_size: int
    width: int
    height: int


def _tile_ranges(
    mx: Tensor, my: Tensor, rx: Tensor, ry: Tensor, tile_size: int, tiles_w: int, tiles_h: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tile boxes ``[min, max)`` touched by each 2D bounding box (gsplat's isect rule)."""
    ts = float(tile_size)
    x0 = torch.floor(mx / ts - rx / ts).clamp(0, tiles_w).long()
    x1 = torch.ceil(mx / ts + rx / ts).clamp(0, tiles_w).long()
    y0 = torch.floor(my / ts - ry / ts).clamp(0, tiles_h).long()
    y1 = torch.ceil(my / ts + ry / ts).clamp(0, tiles_h).long()
    return x0, x1, y0, y1


def _choose_tile_size(
    mx: Tensor, my: Tensor, rx: Tensor, ry: Tensor, width: int, height: int, n_images: int
) -> int:
    """Picks the tile size that minimises a simple cost model of the torch rasterizer.

    The image does not depend on the tile size (a Gaussian's box contains every pixel where
    its alpha reaches 1/255), only the amount of work does: small tiles waste fewer
    (pixel, Gaussian) pairs on far-away pixels, large tiles need fewer intersections. For
    small images a single tile covering the whole image is a candidate (dense path).
    """
    full = 1 << max(2, math.ceil(math.log2(max(width, height))))
    candidates = [ts for ts in (4, 8, 16, 32) if ts < full]
    if full <= 64:
        candidates.append(full)
    best, best_cost = 16, float("inf")
    for ts in candidates:
        tw, th = -(-width // ts), -(-height // ts)
        x0, x1, y0, y1 = _tile_ranges(mx, my, rx, ry, ts, tw, th)
        n_isect = float(((x1 - x0) * (y1 - y0)).sum())
        # pixel work + per-intersection bookkeeping + per-tile overhead
        cost = n_isect * ts * ts + 24.0 * n_isect + 64.0 * n_images * tw * th
        if cost < best_cost:
            best, best_cost = ts, cost
    return best


def _build_plan(
    means2d: Tensor,
    radii: Tensor,
    depths: Tensor,
    image_ids: Tensor,
    n_images: int,
    width: int,
    height: int,
    tile_size: Optional[int],
) -> _TilePlan:
    """Builds the depth-sorted (tile, Gaussian) intersection list.

    Args:
        means2d: Projected centres (flattened). ``[P, 2]``
        radii: Integer box radii, 0 for culled. ``[P, 2]``
        depths: Camera-space depths. ``[P]``
        image_ids: Image each entry is rendered into. ``[P]``
        n_images: Number of images ``I``.
        width: Image width.
        height: Image height.
        tile_size: Tile edge in pixels, or None to choose one.
    """
    device = means2d.device
    with torch.no_grad():
        vis = (radii > 0).all(dim=-1)
        vid = torch.nonzero(vis).squeeze(-1)
        mx, my = means2d[vid, 0], means2d[vid, 1]
        rx, ry = radii[vid, 0].to(means2d.dtype), radii[vid, 1].to(means2d.dtype)
        if tile_size is None:
            tile_size = _choose_tile_size(mx, my, rx, ry, width, height, n_images)
        tiles_w, tiles_h = -(-width // tile_size), -(-height // tile_size)
        n_tiles = n_images * tiles_w * tiles_h
        x0, x1, y0, y1 = _tile_ranges(mx, my, rx, ry, tile_size, tiles_w, tiles_h)
        nx = (x1 - x0).clamp_min(0)
        ny = (y1 - y0).clamp_min(0)
        counts = nx * ny
        tiles_per_gauss = torch.zeros(radii.shape[0], dtype=torch.int32, device=device)
        tiles_per_gauss[vid] = counts.to(torch.int32)

        # Visit Gaussians front to back (stable: ties keep index order, as in gsplat), emit
        # their tiles, then stable-sort the intersections by tile. The per-intersection
        # arrays are int32 where that is large enough (they dominate the memory here).
        n_isect = int(counts.sum())
        small = max(n_isect, n_tiles, radii.shape[0]) < 2**31 - 1
        idx = torch.int32 if small else torch.int64
        order = torch.sort(depths[vid], stable=True).indices
        vid, x0, y0, nx, counts = vid[order], x0[order], y0[order], nx[order], counts[order]
        owner = torch.arange(vid.numel(), device=device, dtype=idx)
        owner = torch.repeat_interleave(owner, counts, output_size=n_isect)
        first = (torch.cumsum(counts, 0) - counts).to(idx)
        local = torch.arange(n_isect, device=device, dtype=idx) - first[owner]
        nx_o = nx.to(idx)[owner]
        tile = (image_ids[vid].to(idx) * (tiles_w * tiles_h))[owner]
        tile += (y0.to(idx)[owner] + torch.div(local, nx_o, rounding_mode="floor")) * tiles_w
        tile += x0.to(idx)[owner] + local % nx_o
        del local, nx_o, first
        tile, perm = torch.sort(tile, stable=True)
        flat_ids = vid[owner[perm]]
        del owner, perm
        tile_count = torch.bincount(tile, minlength=n_tiles)
        tile_start = torch.cumsum(tile_count, 0) - tile_count
    return _TilePlan(
        flat_ids=flat_ids,
        tile_ids=tile,
        tile_start=tile_start,
        tile_count=tile_count,
        tiles_per_gauss=tiles_per_gauss,
        n_images=n_images,
        tiles_h=tiles_h,
        tiles_w=tiles_w,
        tile_size=tile_size,
        width=width,
        height=height,
    )


# ----------------------------------------------------------------------------------------
# Pixel stage: chunked front-to-back compositing with a hand-written backward pass
# ----------------------------------------------------------------------------------------


def _tiles_to_image(x: Tensor, plan: _TilePlan) -> Tensor:
    """``[n_tiles, D, ts*ts]`` channel-major tile pixels -> ``[I, H, W, D]`` image."""
    ts, th, tw = plan.tile_size, plan.tiles_h, plan.tiles_w
    d = x.shape[1]
    img = x.reshape(plan.n_images, th, tw, d, ts, ts).permute(0, 1, 4, 2, 5, 3)
    img = img.reshape(plan.n_images, th * ts, tw * ts, d)
    return img[:, : plan.height, : plan.width]


def _image_to_tiles(img: Tensor, plan: _TilePlan) -> Tensor:
    """``[I, H, W, D]`` image -> ``[n_tiles, D, ts*ts]`` channel-major tile pixels (zero padded)."""
    ts, th, tw = plan.tile_size, plan.tiles_h, plan.tiles_w
    d = img.shape[-1]
    pad = img.new_zeros(plan.n_images, th * ts, tw * ts, d)
    pad[:, : plan.height, : plan.width] = img
    pad = pad.reshape(plan.n_images, th, ts, tw, ts, d).permute(0, 1, 3, 5, 2, 4)
    return pad.reshape(plan.n_images * th * tw, d, ts * ts)


def _pixel_features(tile_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Monomials ``(1, u, v, u^2, u v, v^2)`` of the tile pixel centres. ``[6, P]``

    ``(u, v)`` are measured from the tile centre (row-major pixels, ``u`` fastest), which
    keeps the quadratic-form expansion in :class:`_Chunk` well conditioned.
    """
    c = torch.arange(tile_size, dtype=torch.float64, device=device) + 0.5 - 0.5 * tile_size
    u = c.repeat(tile_size)
    v = c.repeat_interleave(tile_size)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], dim=0).to(dtype).contiguous()


class _Chunk:
    """One depth chunk of ``B`` intersections for each of ``Ta`` tiles, laid out ``[Ta, B, P]``.

    The Mahalanobis term ``sigma = 1/2 (a dx^2 + c dy^2) + b dx dy`` of every (slot, pixel)
    pair is one GEMM of per-slot coefficients with the pixel monomials of
    :func:`_pixel_features`; everything else is a handful of element-wise passes. A conic
    from the projection is positive definite, so ``sigma < 0`` can only come from rounding;
    it is clamped to 0 here instead of skipping the pair as gsplat's kernel does (Gaussians
    whose blurred 2D covariance is not positive definite are culled in
    :func:`project_gaussians`, so the two agree up to rounding). ``sigma`` is also clamped
    to 80 from above, where ``exp`` would underflow into slow denormals while alpha is far
    below 1/255 anyway.
    """

    def __init__(
        self,
        attrs: Tensor,
        plan: _TilePlan,
        feats: Tensor,
        tiles: Tensor,
        pos: int,
        width: int,
        T0: Tensor,
        done0: Tensor,
    ) -> None:
        dtype = attrs.dtype
        count = plan.tile_count[tiles]
        slots = pos + torch.arange(width, device=tiles.device)
        valid = slots[None, :] < count[:, None]  # [Ta, B]
        index = (plan.tile_start[tiles][:, None] + slots[None, :]).clamp_max(plan.flat_ids.numel() - 1)
        self.gid = plan.flat_ids[index]
        per_image = plan.tiles_h * plan.tiles_w
        local = tiles % per_image
        half = 0.5 * plan.tile_size
        cx = ((local % plan.tiles_w) * plan.tile_size).to(dtype) + half
        cy = (torch.div(local, plan.tiles_w, rounding_mode="floor") * plan.tile_size).to(dtype) + half
        a = attrs[self.gid]  # [Ta, B, 6 + D]: mean (2), conic (3), opacity, colour (D)
        self.mx = a[..., 0] - cx[:, None]  # means relative to the tile centre [Ta, B]
        self.my = a[..., 1] - cy[:, None]
        self.ca, self.cb, self.cc = a[..., 2], a[..., 3], a[..., 4]
        self.op = a[..., 5] * valid  # padding slots get opacity 0 and so never contribute
        self.colors = a[..., 6:]  # [Ta, B, D]
        mx, my, ca, cb, cc = self.mx, self.my, self.ca, self.cb, self.cc
        coef = torch.stack(
            [
                0.5 * ca * mx * mx + cb * mx * my + 0.5 * cc * my * my,
                -(ca * mx + cb * my),
                -(cb * mx + cc * my),
                0.5 * ca,
                cb,
                0.5 * cc,
            ],
            dim=-1,
        )  # [Ta, B, 6]
        sigma = torch.matmul(coef, feats)  # [Ta, B, P]
        vis = sigma.clamp_(0.0, 80.0).neg_().exp_()
        self.vis = vis
        self.raw = vis * self.op[:, :, None]
        # skip alpha < 1/255 (threshold keeps x > t, so t is the float just below 1/255)
        alpha = torch.nn.functional.threshold(self.raw, _below(ALPHA_THRESHOLD, dtype), 0.0).clamp_max_(MAX_ALPHA)
        self.alpha = alpha
        self.om = 1.0 - alpha
        T0e = T0 * (~done0).to(dtype)
        self.T0e = T0e
        self.tcum = torch.cumprod(self.om, dim=1) * T0e[:, None, :]
        # T after each Gaussian, zeroed from the first one that would bring it to <= 1e-4:
        # the pixel stops there (exclusive); T only decreases, so this cuts a suffix.
        tc = torch.nn.functional.threshold(self.tcum, TRANSMITTANCE_STOP, 0.0)
        self.weights = alpha / self.om * tc  # alpha_i * T_before_i for contributors, else 0
        self.T0 = T0
        self.done0 = done0

    def end_state(self) -> Tuple[Tensor, Tensor]:
        """Transmittance and stop flag of every pixel after the chunk. ``([Ta, P], [Ta, P])``"""
        last = torch.nn.functional.threshold(self.tcum, TRANSMITTANCE_STOP, float("inf")).amin(dim=1)
        T1 = torch.minimum(self.T0, last)
        done1 = self.done0 | (self.tcum[:, -1, :] <= TRANSMITTANCE_STOP)
        return T1, done1


def _pack_attributes(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor) -> Tensor:
    """Concatenates the per-Gaussian inputs of the pixel stage for one gather per chunk.

    Returns:
        ``[P, 6 + D]``: mean (2), conic (3), opacity (1), colour (D).
    """
    return torch.cat(
        [
            means2d.reshape(-1, 2),
            conics.reshape(-1, 3),
            opacities.reshape(-1, 1),
            colors.reshape(-1, colors.shape[-1]),
        ],
        dim=-1,
    )


@functools.lru_cache(maxsize=None)
def _below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value`` (turns ``x > t`` into ``x >= value``)."""
    v = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(v, torch.zeros_like(v)))


class _RasterizePixels(torch.autograd.Function):
    """Differentiable front-to-back compositing over a :class:`_TilePlan` (no background)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        plan: _TilePlan,
        budget: int,
        absgrad: bool,
    ) -> Tuple[Tensor, Tensor]:
        attrs = _pack_attributes(means2d, conics, colors, opacities)
        dtype, device = attrs.dtype, attrs.device
        d = colors.shape[-1]
        n_pix = plan.tile_size**2
        n_tiles = plan.tile_count.numel()
        feats = _pixel_features(plan.tile_size, dtype, device)

        acc = torch.zeros(n_tiles, d, n_pix, dtype=dtype, device=device)
        T = torch.ones(n_tiles, n_pix, dtype=dtype, device=device)
        done = torch.zeros(n_tiles, n_pix, dtype=torch.bool, device=device)
        chunks: List[Tuple[Tensor, int, int, Tensor, Tensor]] = []
        for tiles in _tile_groups(plan, n_pix, budget):
            pos = 0
            while tiles.numel() > 0:
                remaining = int((plan.tile_count[tiles] - pos).max())
                width = max(1, min(remaining, budget // (tiles.numel() * n_pix)))
                T0, done0 = T[tiles], done[tiles]
                ch = _Chunk(attrs, plan, feats, tiles, pos, width, T0, done0)
                acc.index_add_(0, tiles, torch.bmm(ch.colors.transpose(1, 2), ch.weights))
                T1, done1 = ch.end_state()
                T[tiles] = T1
                done[tiles] = done1
                chunks.append((tiles, pos, width, T0, done0))
                pos += width
                more = (plan.tile_count[tiles] > pos) & ~done1.all(dim=1)
                tiles = tiles[more]

        out = _tiles_to_image(acc, plan)
        alpha = _tiles_to_image((1.0 - T)[:, None, :], plan)
        ctx.plan = plan
        ctx.chunks = chunks
        ctx.T_final = T
        ctx.absgrad = absgrad
        ctx.save_for_backward(means2d, conics, colors, opacities)
        return out, alpha

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_alpha: Tensor):  # type: ignore[override]
        means2d, conics, colors, opacities = ctx.saved_tensors
        plan: _TilePlan = ctx.plan
        attrs = _pack_attributes(means2d, conics, colors, opacities)
        dtype, device = attrs.dtype, attrs.device
        n_attr = attrs.shape[0]
        d = colors.shape[-1]
        feats = _pixel_features(plan.tile_size, dtype, device)

        G = _image_to_tiles(grad_out.to(dtype), plan)  # [n_tiles, D, P]
        gA = _image_to_tiles(grad_alpha.to(dtype), plan)[:, 0]  # [n_tiles, P]
        # Running sum over every later Gaussian of dL/dC . c_j w_j, seeded with the term of
        # the alpha output (alpha = 1 - T_final).
        S = -gA * ctx.T_final

        # gradients in the layout of _pack_attributes (+ |d means2d| per pixel for absgrad)
        grads = torch.zeros(n_attr, 6 + d + (2 if ctx.absgrad else 0), dtype=dtype, device=device)
        for tiles, pos, width, T0, done0 in reversed(ctx.chunks):
            ch = _Chunk(attrs, plan, feats, tiles, pos, width, T0, done0)
            gid = ch.gid.reshape(-1)
            Gt = G[tiles]  # [Ta, D, P]
            w = ch.weights
            gc = torch.bmm(ch.colors, Gt)  # dL/dC . c_i per pixel [Ta, B, P]
            q = gc * w
            suffix = q.flip(1).cumsum(1).flip(1)  # sum over j >= i, back to front
            S_t = S[tiles]
            rest = torch.cat([suffix[:, 1:], torch.zeros_like(suffix[:, :1])], dim=1) + S_t[:, None, :]
            T_before = torch.cat([ch.T0e[:, None, :], ch.tcum[:, :-1]], dim=1)
            v_alpha = (T_before * gc - rest / ch.om) * torch.sign(w)
            S[tiles] = S_t + suffix[:, 0]
            v_col = torch.bmm(w, Gt.transpose(1, 2))  # [Ta, B, D]

            # alpha = min(0.999, o * vis): no gradient where the clamp is active.
            v_alpha = v_alpha * torch.sign((MAX_ALPHA - ch.raw).clamp_min_(0.0))
            v_op = (v_alpha * ch.vis).sum(-1)
            v_sigma = -(v_alpha * ch.raw)
            # sums over pixels of v_sigma * (1, u, v, uu, uv, vv), each [Ta, B]
            mom = torch.mm(feats, v_sigma.reshape(-1, feats.shape[1]).t()).reshape((6,) + v_sigma.shape[:2])
            m0, mu, mv, muu, muv, mvv = mom.unbind(0)
            mx, my = ch.mx, ch.my
            s_x = mx * m0 - mu  # sum v_sigma * dx,  dx = mean_x - pixel_x
            s_y = my * m0 - mv
            s_xx = mx * mx * m0 - 2.0 * mx * mu + muu
            s_yy = my * my * m0 - 2.0 * my * mv + mvv
            s_xy = mx * my * m0 - mx * mv - my * mu + muv
            g_mx = ch.ca * s_x + ch.cb * s_y
            g_my = ch.cb * s_x + ch.cc * s_y
            parts = [torch.stack([g_mx, g_my, 0.5 * s_xx, s_xy, 0.5 * s_yy, v_op], -1), v_col]
            if ctx.absgrad:
                # per-pixel d sigma / d mean is linear in (u, v): (a dx + b dy, b dx + c dy)
                lin_x = torch.stack([ch.ca * mx + ch.cb * my, -ch.ca, -ch.cb], -1)
                lin_y = torch.stack([ch.cb * mx + ch.cc * my, -ch.cb, -ch.cc], -1)
                ax = (torch.matmul(lin_x, feats[:3]) * v_sigma).abs_().sum(-1)
                ay = (torch.matmul(lin_y, feats[:3]) * v_sigma).abs_().sum(-1)
                parts.append(torch.stack([ax, ay], -1))
            grads.index_add_(0, gid, torch.cat(parts, -1).reshape(gid.numel(), -1))

        if ctx.absgrad:
            means2d.absgrad = grads[:, 6 + d :].reshape(means2d.shape)
        return (
            grads[:, 0:2].reshape(means2d.shape),
            grads[:, 2:5].reshape(conics.shape),
            grads[:, 6 : 6 + d].reshape(colors.shape),
            grads[:, 5].reshape(opacities.shape),
            None,
            None,
            None,
        )


def _tile_groups(plan: _TilePlan, n_pix: int, budget: int, min_width: int = 32) -> List[Tensor]:
    """Splits the non-empty tiles into groups processed together (heaviest first)."""
    nonempty = torch.nonzero(plan.tile_count > 0).squeeze(-1)
    if nonempty.numel() == 0:
        return []
    order = torch.sort(plan.tile_count[nonempty], descending=True, stable=True).indices
    nonempty = nonempty[order]
    group = max(1, budget // (n_pix * min_width))
    return list(torch.split(nonempty, group))


# ----------------------------------------------------------------------------------------
# rasterize()
# ----------------------------------------------------------------------------------------


def _shape(t: Optional[Tensor]) -> str:
    return "None" if t is None else str(list(t.shape))


def _check_inputs(
    means: Tensor,
    quats: Optional[Tensor],
    scales: Optional[Tensor],
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: Optional[int],
    backgrounds: Optional[Tensor],
    covars: Optional[Tensor],
) -> Tuple[Tuple[int, ...], int, int]:
    """Validates gsplat's argument shapes; returns ``(batch_dims, N, C)``."""
    for name, value in (("means", means), ("opacities", opacities), ("colors", colors),
                        ("viewmats", viewmats), ("Ks", Ks)):  # fmt: skip
        if not isinstance(value, Tensor):
            raise ValueError(f"rasterize: {name} must be a torch.Tensor, got {type(value).__name__}")
    if means.dim() < 2 or means.shape[-1] != 3:
        raise ValueError(f"rasterize: means must have shape [..., N, 3], got {_shape(means)}")
    batch = tuple(means.shape[:-2])
    n = means.shape[-2]
    bstr = "".join(f"{b}, " for b in batch)
    if viewmats.dim() != len(batch) + 3 or viewmats.shape[:-3] != batch or viewmats.shape[-2:] != (4, 4):
        raise ValueError(
            f"rasterize: viewmats must have shape [{bstr}C, 4, 4] (world-to-camera), got {_shape(viewmats)}"
        )
    c = viewmats.shape[-3]
    if tuple(Ks.shape) != batch + (c, 3, 3):
        raise ValueError(f"rasterize: Ks must have shape [{bstr}{c}, 3, 3], got {_shape(Ks)}")
    if covars is None:
        if quats is None or tuple(quats.shape) != batch + (n, 4):
            raise ValueError(f"rasterize: quats must have shape [{bstr}{n}, 4] (wxyz), got {_shape(quats)}")
        if scales is None or tuple(scales.shape) != batch + (n, 3):
            raise ValueError(f"rasterize: scales must have shape [{bstr}{n}, 3], got {_shape(scales)}")
    elif tuple(covars.shape) != batch + (n, 3, 3):
        raise ValueError(f"rasterize: covars must have shape [{bstr}{n}, 3, 3], got {_shape(covars)}")
    if tuple(opacities.shape) != batch + (n,):
        raise ValueError(f"rasterize: opacities must have shape [{bstr}{n}], got {_shape(opacities)}")
    if sh_degree is None:
        ok = colors.dim() in (len(batch) + 2, len(batch) + 3) and (
            tuple(colors.shape[:-1]) in (batch + (n,), batch + (c, n))
        )
        if not ok:
            raise ValueError(
                f"rasterize: colors must have shape [{bstr}{n}, D] or [{bstr}{c}, {n}, D] "
                f"(set sh_degree for SH coefficients), got {_shape(colors)}"
            )
    else:
        if not isinstance(sh_degree, int) or sh_degree < 0:
            raise ValueError(f"rasterize: sh_degree must be None or an int >= 0, got {sh_degree!r}")
        ok = colors.shape[-1:] == (3,) and tuple(colors.shape[:-2]) in (batch + (n,), batch + (c, n))
        if not ok:
            raise ValueError(
                f"rasterize: with sh_degree set, colors must hold SH coefficients of shape "
                f"[{bstr}{n}, K, 3] or [{bstr}{c}, {n}, K, 3], got {_shape(colors)}"
            )
        if (sh_degree + 1) ** 2 > colors.shape[-2]:
            raise ValueError(
                f"rasterize: sh_degree={sh_degree} needs K >= {(sh_degree + 1) ** 2} SH bases in "
                f"colors [..., N, K, 3], got K = {colors.shape[-2]}"
            )
    if backgrounds is not None:
        d = 3 if sh_degree is not None else colors.shape[-1]
        if not isinstance(backgrounds, Tensor) or tuple(backgrounds.shape) != batch + (c, d):
            raise ValueError(f"rasterize: backgrounds must have shape [{bstr}{c}, {d}], got {_shape(backgrounds)}")
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"rasterize: width and height must be positive ints, got {width}x{height}")
    return batch, n, c


def rasterize(
    means: Tensor,
    quats: Optional[Tensor],
    scales: Optional[Tensor],
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    packed: bool = False,
    tile_size: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: str = "classic",
    channel_chunk: int = 32,
    camera_model: str = "pinhole",
    covars: Optional[Tensor] = None,
    backend: str = "auto",
    chunk_budget: int = DEFAULT_CHUNK_BUDGET,
    **gsplat_kwargs: Any,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Rasterizes 3D Gaussians into ``C`` images, with ``gsplat.rasterization``'s contract.

    Arguments, shapes and returns are those of ``gsplat.rasterization`` (1.5.3); leading
    batch dimensions ``[...]`` are optional. Differences: ``packed`` defaults to False
    (dense ``[C, N]`` meta, what ``DefaultStrategy.step_post_backward`` expects by
    default), ``tile_size=None`` means 16 for gsplat and an automatically chosen size for
    the torch backend (the image does not depend on it), and ``backend`` /
    ``chunk_budget`` are added.

    Args:
        means: Gaussian centres. ``[..., N, 3]``
        quats: Rotations, wxyz, need not be normalised (ignored when ``covars`` is given).
            ``[..., N, 4]``
        scales: Linear scales. ``[..., N, 3]``
        opacities: Opacities in [0, 1]. ``[..., N]``
        colors: Colours / features ``[..., N, D]`` or per camera ``[..., C, N, D]``; with
            ``sh_degree`` set, SH coefficients ``[..., N, K, 3]`` or ``[..., C, N, K, 3]``.
        viewmats: World-to-camera transforms (OpenCV). ``[..., C, 4, 4]``
        Ks: Pixel-space intrinsics. ``[..., C, 3, 3]``
        width: Image width.
        height: Image height.
        near_plane: Gaussians with camera depth below this are culled.
        far_plane: Gaussians with camera depth above this are culled.
        radius_clip: Cull Gaussians whose 2D radii are both ``<=`` this (pixels).
        eps2d: Blur added to the 2D covariance diagonal (pixels squared).
        sh_degree: SH degree to evaluate (torch backend: 0..3), or None for plain colours.
        packed: Return meta entries packed to the ``nnz`` visible (camera, Gaussian) pairs
            (``camera_ids`` / ``gaussian_ids`` set) instead of dense ``[..., C, N]``.
        tile_size: Tile edge in pixels (None: 16 on gsplat; on torch, the size among 4..32
            (or one tile for small images) that a cost model says is fastest). The torch
            backend expands each pair's quadratic form around the tile centre, so explicit
            tiles above 32 pixels cost float32 accuracy on Gaussians of a pixel or two.
        backgrounds: Background colours composited as ``+ (1 - alpha) * bg``. ``[..., C, D]``
        render_mode: ``"RGB"``, ``"D"`` (accumulated depth), ``"ED"`` (expected depth
            ``D / alpha``), ``"RGB+D"`` or ``"RGB+ED"`` (depth as the last channel).
        sparse_grad: gsplat only: sparse gradients for means/quats/scales.
        absgrad: Also accumulate ``meta["means2d"].absgrad`` (AbsGS) in the backward pass.
        rasterize_mode: ``"classic"`` or ``"antialiased"`` (Mip-Splatting compensation).
        channel_chunk: gsplat only: channels rasterized per kernel launch.
        camera_model: ``"pinhole"`` (gsplat also has ``"ortho"``, ``"fisheye"``, ``"ftheta"``).
        covars: World-space covariances replacing quats/scales. ``[..., N, 3, 3]``
        backend: ``"gsplat"`` (CUDA), ``"torch"`` (any device), or ``"auto"`` (gsplat for
            CUDA tensors, torch otherwise).
        chunk_budget: Torch backend: (pixel, Gaussian) pairs processed per chunk; bounds
            the memory of the pixel stage (about 60 bytes per pair in float32).
        **gsplat_kwargs: Other ``gsplat.rasterization`` arguments (``distributed``,
            ``with_ut``, distortion coefficients, ...), passed through to gsplat; the torch
            backend rejects the ones it does not implement.

    Returns:
        ``(render_colors [..., C, H, W, X], render_alphas [..., C, H, W, 1], meta)`` where
        ``X`` is ``D`` for "RGB", 1 for "D"/"ED", ``D + 1`` for "RGB+D"/"RGB+ED". ``meta``
        holds ``radii [..., C, N, 2]`` (int32), ``means2d [..., C, N, 2]`` (non-leaf, call
        ``retain_grad()`` for densification), ``depths [..., C, N]``, ``conics
        [..., C, N, 3]``, ``opacities [..., C, N]`` (packed: ``[nnz, ...]``),
        ``batch_ids`` / ``camera_ids`` / ``gaussian_ids`` (``[nnz]``, None unless packed),
        ``tile_width``, ``tile_height``, ``tiles_per_gauss``, ``isect_ids``,
        ``flatten_ids``, ``isect_offsets [..., C, tile_height, tile_width]``, ``width``,
        ``height``, ``tile_size``, ``n_batches``, ``n_cameras`` and ``backend``.

    Raises:
        ValueError: For wrong shapes, an unknown ``render_mode``, ``backend``,
            ``rasterize_mode`` or ``camera_model``, ``backend="gsplat"`` without CUDA
            tensors, or a gsplat-only feature requested from the torch backend.
    """
    if render_mode not in RENDER_MODES:
        raise ValueError(f"rasterize: render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize: rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    batch, n, c = _check_inputs(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, covars
    )
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "torch"
    if backend == "gsplat":
        if not (means.is_cuda and torch.cuda.is_available()):
            raise ValueError(
                "rasterize: backend='gsplat' needs CUDA tensors (gsplat's kernels are CUDA-only); "
                f"got means on {means.device}. Use backend='torch' or 'auto'."
            )
        import gsplat

        render_colors, render_alphas, meta = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
            near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
            sh_degree=sh_degree, packed=packed, tile_size=16 if tile_size is None else tile_size,
            backgrounds=backgrounds, render_mode=render_mode, sparse_grad=sparse_grad,
            absgrad=absgrad, rasterize_mode=rasterize_mode, channel_chunk=channel_chunk,
            camera_model=camera_model, covars=covars, **gsplat_kwargs,
        )  # fmt: skip
        meta["backend"] = "gsplat"
        return render_colors, render_alphas, meta

    for key, value in gsplat_kwargs.items():
        if key in _GSPLAT_TUNING_ARGS:
            continue
        if key not in _GSPLAT_ONLY_DEFAULTS:
            raise ValueError(f"rasterize: unexpected argument {key!r}")
        default = _GSPLAT_ONLY_DEFAULTS[key]
        plain = value.name if isinstance(value, enum.Enum) else value  # RollingShutterType by name
        if (plain is not None) if default is None else (plain != default):
            raise ValueError(f"rasterize: {key}={value!r} is only supported by backend='gsplat'")
    if camera_model != "pinhole":
        raise ValueError(f"rasterize: the torch backend supports camera_model='pinhole' only, got {camera_model!r}")
    if sparse_grad:
        raise ValueError("rasterize: sparse_grad=True is only supported by backend='gsplat'")
    if sh_degree is not None and sh_degree > 3:
        raise ValueError(f"rasterize: the torch backend evaluates sh_degree 0..3, got {sh_degree}")
    if tile_size is not None and (int(tile_size) != tile_size or tile_size <= 0):
        raise ValueError(f"rasterize: tile_size must be a positive int or None, got {tile_size!r}")
    return _rasterize_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
        batch=batch, n=n, c=c, near_plane=near_plane, far_plane=far_plane,
        radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree, packed=packed,
        tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode, absgrad=absgrad,
        antialiased=rasterize_mode == "antialiased", covars=covars, chunk_budget=int(chunk_budget),
    )  # fmt: skip


def _rasterize_torch(
    means: Tensor,
    quats: Optional[Tensor],
    scales: Optional[Tensor],
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    batch: Tuple[int, ...],
    n: int,
    c: int,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    eps2d: float,
    sh_degree: Optional[int],
    packed: bool,
    tile_size: Optional[int],
    backgrounds: Optional[Tensor],
    render_mode: str,
    absgrad: bool,
    antialiased: bool,
    covars: Optional[Tensor],
    chunk_budget: int,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """The pure-PyTorch backend of :func:`rasterize` (arguments already validated)."""
    nb = math.prod(batch)
    n_images = nb * c
    device = means.device
    means_b = means.reshape(nb, n, 3)
    if covars is None:
        rot = quat_to_rotmat(quats.reshape(nb, n, 4))
        m = rot * scales.reshape(nb, n, 1, 3)
        covars_b = m @ m.transpose(-1, -2)
    else:
        covars_b = covars.reshape(nb, n, 3, 3)
    opac_b = opacities.reshape(nb, n)
    view_b = viewmats.reshape(nb, c, 4, 4)
    ks_b = Ks.reshape(nb, c, 3, 3)

    radii, means2d, depths, conics, comp = project_gaussians(
        means_b, covars_b, opac_b, view_b, ks_b, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        antialiased=antialiased,
    )  # fmt: skip
    opac_v = opac_b[:, None, :].expand(nb, c, n)
    if comp is not None:
        opac_v = opac_v * comp

    # Colours per (camera, Gaussian): [nb, C, N, D]
    per_camera = colors.dim() == len(batch) + (3 if sh_degree is None else 4)
    if sh_degree is None:
        d = colors.shape[-1]
        cols = colors.reshape(nb, c, n, d) if per_camera else colors.reshape(nb, 1, n, d).expand(nb, c, n, d)
    else:
        k = colors.shape[-2]
        shs = colors.reshape(nb, c, n, k, 3) if per_camera else colors.reshape(nb, 1, n, k, 3)
        campos = torch.linalg.inv(view_b)[..., :3, 3]  # [nb, C, 3]
        dirs = means_b[:, None, :, :] - campos[:, :, None, :]
        cols = torch.clamp_min(spherical_harmonics(sh_degree, dirs, shs) + 0.5, 0.0)
        cols = cols.expand(nb, c, n, 3)
    if render_mode in ("RGB+D", "RGB+ED"):
        cols = torch.cat([cols, depths[..., None]], dim=-1)
    elif render_mode in ("D", "ED"):
        cols = depths[..., None]

    # Present the projected quantities with the caller's batch dims: [..., C, N, ...].
    radii, means2d, depths, conics, opac_v, cols = (
        t.reshape(batch + (c, n) + tuple(t.shape[3:])) for t in (radii, means2d, depths, conics, opac_v, cols)
    )

    image_of = torch.arange(n_images, device=device).reshape(nb, c, 1).expand(nb, c, n)
    if packed:
        sel = (radii > 0).all(dim=-1).reshape(nb, c, n)
        batch_ids, camera_ids, gaussian_ids = torch.nonzero(sel, as_tuple=True)
        flat = (batch_ids * c + camera_ids) * n + gaussian_ids

        def pick(t: Tensor) -> Tensor:
            return t.reshape((nb * c * n,) + tuple(t.shape[len(batch) + 2 :]))[flat]

        radii_r, means2d_r, depths_r, conics_r, opac_r, cols_r = (
            pick(t) for t in (radii, means2d, depths, conics, opac_v, cols)
        )
        image_ids = image_of.reshape(-1)[flat]
    else:
        batch_ids = camera_ids = gaussian_ids = None
        means2d_r, depths_r, conics_r, opac_r, cols_r = means2d, depths, conics, opac_v, cols
        radii_r = radii
        image_ids = image_of.reshape(-1)

    plan = _build_plan(
        means2d_r.detach().reshape(-1, 2), radii_r.reshape(-1, 2), depths_r.detach().reshape(-1),
        image_ids, n_images, width, height, tile_size,
    )  # fmt: skip
    render_colors, render_alphas = _RasterizePixels.apply(
        means2d_r, conics_r, cols_r.contiguous(), opac_r, plan, chunk_budget, absgrad
    )
    if backgrounds is not None and render_mode not in ("D", "ED"):
        bg = backgrounds.reshape(n_images, 1, 1, -1)
        d_bg = bg.shape[-1]
        rgb = render_colors[..., :d_bg] + (1.0 - render_alphas) * bg
        render_colors = torch.cat([rgb, render_colors[..., d_bg:]], dim=-1) if render_mode != "RGB" else rgb
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )

    out_shape = batch + (c, height, width)
    render_colors = render_colors.reshape(out_shape + (render_colors.shape[-1],))
    render_alphas = render_alphas.reshape(out_shape + (1,))
    meta = _torch_meta(
        plan, batch, c, n, radii_r, means2d_r, depths_r, conics_r, opac_r,
        batch_ids, camera_ids, gaussian_ids, packed,
    )  # fmt: skip
    return render_colors, render_alphas, meta


def _torch_meta(
    plan: _TilePlan,
    batch: Tuple[int, ...],
    c: int,
    n: int,
    radii: Tensor,
    means2d: Tensor,
    depths: Tensor,
    conics: Tensor,
    opacities: Tensor,
    batch_ids: Optional[Tensor],
    camera_ids: Optional[Tensor],
    gaussian_ids: Optional[Tensor],
    packed: bool,
) -> Dict[str, Any]:
    """The meta dict in gsplat's layout (unpacked: ``[..., C, N, ...]``; packed: ``[nnz, ...]``)."""

    n_tiles_img = plan.tiles_h * plan.tiles_w
    with torch.no_grad():
        # gsplat's 64-bit keys: image id | tile id | float32 depth bits (built in place)
        tile_bits = int(math.floor(math.log2(max(n_tiles_img, 1)))) + 1
        tile_local = plan.tile_ids.long()
        isect_ids = torch.div(tile_local, n_tiles_img, rounding_mode="floor")
        tile_local -= isect_ids * n_tiles_img
        isect_ids <<= 32 + tile_bits
        tile_local <<= 32
        isect_ids |= tile_local
        del tile_local
        depth_bits = depths.detach().reshape(-1)[plan.flat_ids].float().view(torch.int32).long()
        depth_bits &= 0xFFFFFFFF
        isect_ids |= depth_bits
        del depth_bits
        isect_offsets = plan.tile_start.to(torch.int32).reshape(batch + (c, plan.tiles_h, plan.tiles_w))
    tiles_per_gauss = plan.tiles_per_gauss if packed else plan.tiles_per_gauss.reshape(batch + (c, n))
    return {
        "batch_ids": batch_ids,
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": plan.tiles_w,
        "tile_height": plan.tiles_h,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": isect_ids,
        "flatten_ids": plan.flat_ids.to(torch.int32),
        "isect_offsets": isect_offsets,
        "width": plan.width,
        "height": plan.height,
        "tile_size": plan.tile_size,
        "n_batches": math.prod(batch),
        "n_cameras": c,
        "backend": "torch",
    }


# ----------------------------------------------------------------------------------------
# render()
# ----------------------------------------------------------------------------------------


def render(
    gaussians: Gaussians,
    cameras: Cameras,
    *,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB+ED",
    backend: str = "auto",
    **kwargs: Any,
) -> RenderOutput:
    """Renders a :class:`Gaussians` set from every camera of a :class:`Cameras` batch.

    Uses the SH coefficients when ``gaussians.sh`` is set (``sh_degree`` defaults to
    ``gaussians.sh_degree``; pass a smaller one for progressive SH), otherwise
    ``gaussians.colors``.

    Args:
        gaussians: The Gaussians (``N`` of them).
        cameras: The ``C`` cameras.
        backgrounds: Background colour, ``[D]`` (shared) or ``[C, D]``; None for black.
        render_mode: One of ``"RGB"``, ``"D"``, ``"ED"``, ``"RGB+D"``, ``"RGB+ED"``.
        backend: ``"auto"``, ``"gsplat"`` or ``"torch"`` (see :func:`rasterize`).
        **kwargs: Further :func:`rasterize` arguments (``near_plane``, ``eps2d``,
            ``sh_degree``, ``packed``, ``absgrad``, ``rasterize_mode``, ...).

    Returns:
        :class:`RenderOutput` with ``rgb [C, H, W, D]`` (None for "D"/"ED"),
        ``alpha [C, H, W, 1]``, ``depth [C, H, W, 1]`` (None for "RGB") and ``meta``.

    Raises:
        ValueError: For a wrong ``backgrounds`` shape or anything :func:`rasterize` rejects.
    """
    if not isinstance(gaussians, Gaussians):
        raise ValueError(f"render: gaussians must be a zoo.core.Gaussians, got {type(gaussians).__name__}")
    if not isinstance(cameras, Cameras):
        raise ValueError(f"render: cameras must be a zoo.core.Cameras, got {type(cameras).__name__}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render: render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if gaussians.sh is not None:
        colors = gaussians.sh
        sh_degree = kwargs.pop("sh_degree", None)
        sh_degree = gaussians.sh_degree if sh_degree is None else sh_degree
        d = 3
    else:
        colors = gaussians.colors
        sh_degree = kwargs.pop("sh_degree", None)
        if sh_degree is not None:
            raise ValueError("render: sh_degree given but the Gaussians have no sh [N, K, 3]")
        d = colors.shape[-1]
    c = len(cameras)
    if backgrounds is not None:
        if backgrounds.dim() == 1 and backgrounds.shape[0] == d:
            backgrounds = backgrounds[None].expand(c, d)
        elif tuple(backgrounds.shape) != (c, d):
            raise ValueError(f"render: backgrounds must have shape [{d}] or [{c}, {d}], got {_shape(backgrounds)}")
    colors_out, alphas, meta = rasterize(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, colors,
        cameras.w2c, cameras.K, cameras.width, cameras.height,
        sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode, backend=backend,
        **kwargs,
    )  # fmt: skip
    rgb = depth = None
    if render_mode == "RGB":
        rgb = colors_out
    elif render_mode in ("D", "ED"):
        depth = colors_out
    else:
        rgb, depth = colors_out[..., :-1], colors_out[..., -1:]
    return RenderOutput(rgb=rgb, alpha=alphas, depth=depth, meta=meta)
