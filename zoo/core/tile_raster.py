"""Tile stage of the torch rasterizer: (tile, Gaussian) intersections and chunked compositing.

:func:`build_plan` lists, for a batch of images, every (tile, Gaussian) pair whose bounding box
touches the tile, sorted by tile and then front to back by depth (gsplat's isect rule and
order; the tile size is picked by a cost model unless given), or only the pairs that reach
``alpha >= 1/255`` somewhere in their tile. :class:`RasterizePixels` is the
differentiable pixel stage: one custom autograd function that walks the intersection list in
depth chunks for many tiles at once, composites front to back with ``alpha = min(0.999,
o * exp(-sigma))``, skips ``alpha < 1/255``, stops before the transmittance would fall to
``<= 1e-4``, keeps the running transmittance between chunks, and recomputes each chunk in
reverse order in a hand-written backward pass, so memory stays bounded by the chunk budget.

:func:`zoo.core.render.rasterize` drives it after :mod:`zoo.core.projection`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from zoo.core.projection import ALPHA_THRESHOLD

__all__ = [
    "MAX_ALPHA",
    "TRANSMITTANCE_STOP",
    "DEFAULT_CHUNK_BUDGET",
    "SAVED_PAIRS_BUDGET",
    "TilePlan",
    "build_plan",
    "RasterizePixels",
]

# Compositing thresholds of gsplat's CUDA rasterizer (ALPHA_THRESHOLD is shared with the
# projection and lives in zoo.core.projection).
MAX_ALPHA = 0.999
TRANSMITTANCE_STOP = 1e-4

# Default number of (tile pixel, Gaussian) pairs the torch backend processes at once.
DEFAULT_CHUNK_BUDGET = 1 << 19

# (tile pixel, Gaussian) pairs whose forward tensors are kept for the backward pass (about
# 12 bytes each in float32); the chunks beyond it are recomputed there.
SAVED_PAIRS_BUDGET = 1 << 24


# ----------------------------------------------------------------------------------------
# Tile intersections
# ----------------------------------------------------------------------------------------


@dataclass
class TilePlan:
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


def _take(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0 for an index of any shape, via ``index_select`` (several
    times faster on CPU than advanced indexing, the more so for int32 indices)."""
    return x.index_select(0, index.reshape(-1)).reshape(tuple(index.shape) + tuple(x.shape[1:]))


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


def build_plan(
    means2d: Tensor,
    radii: Tensor,
    depths: Tensor,
    image_ids: Tensor,
    n_images: int,
    width: int,
    height: int,
    tile_size: Optional[int],
    conics: Optional[Tensor] = None,
    opacities: Optional[Tensor] = None,
) -> TilePlan:
    """Builds the depth-sorted (tile, Gaussian) intersection list.

    Without ``conics`` / ``opacities`` the list is gsplat's (every tile a Gaussian's box
    touches). With them, the pairs whose Gaussian reaches ``alpha >= 1/255`` at no pixel of
    the tile are dropped before the sort (see :func:`_reaches_tile`): they change neither
    the image nor a gradient, and the pixel stage then walks only the rest. Either way
    ``tiles_per_gauss`` counts gsplat's tiles.

    Args:
        means2d: Projected centres (flattened). ``[P, 2]``
        radii: Integer box radii, 0 for culled. ``[P, 2]``
        depths: Camera-space depths. ``[P]``
        image_ids: Image each entry is rendered into. ``[P]``
        n_images: Number of images ``I``.
        width: Image width.
        height: Image height.
        tile_size: Tile edge in pixels, or None to choose one.
        conics: Inverse 2D covariances ``(a, b, c)`` to cull with. ``[P, 3]``
        opacities: Opacities used for compositing (with ``conics``). ``[P]``
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
        counts = nx * (y1 - y0).clamp_min(0)
        tiles_per_gauss = torch.zeros(radii.shape[0], dtype=torch.int32, device=device)
        tiles_per_gauss[vid] = counts.to(torch.int32)

        # Visit Gaussians front to back (stable: ties keep index order, as in gsplat), emit
        # their tiles row by row, then stable-sort the intersections by tile. Per-pair
        # arrays are int32 where that is large enough (they dominate the memory here); the
        # tile arithmetic runs in floats (exact integers: float32 below 2^24 tiles), whose
        # division and floor are several times faster on CPU than integer div / mod.
        n_isect = int(counts.sum())
        small = max(n_isect, n_tiles, radii.shape[0]) < 2**31 - 1
        idx = torch.int32 if small else torch.int64
        fdt = torch.float32 if means2d.dtype != torch.float64 and n_tiles < 2**24 else torch.float64
        order = torch.sort(depths[vid], stable=True).indices
        vid, counts = vid[order], counts[order]
        owner = torch.repeat_interleave(torch.arange(vid.numel(), device=device, dtype=idx), counts, output_size=n_isect)
        first = (torch.cumsum(counts, 0) - counts).to(idx)
        rows = [x0[order], y0[order], nx[order], image_ids[vid] * (tiles_w * tiles_h)]
        if conics is not None:
            rows += _cull_rows(means2d, conics, opacities, vid)
        per_pair = torch.stack([r.to(fdt) for r in rows], 0).index_select(1, owner)  # [k, M]
        local = (torch.arange(n_isect, device=device, dtype=idx) - first.index_select(0, owner)).to(fdt)
        g_x0, g_y0, g_nx, g_base = per_pair[:4]
        row = (local + 0.5).div_(g_nx).floor_()  # row of the tile in the box
        tx = local.sub_(row * g_nx).add_(g_x0)
        ty = row.add_(g_y0)
        keep = None if conics is None else torch.nonzero(_reaches_tile(per_pair[4:], tx, ty, tile_size)).squeeze(-1)
        tile = ty.mul_(tiles_w).add_(tx).add_(g_base)
        del per_pair, local, tx, g_base
        if keep is not None:
            tile, owner = tile.index_select(0, keep), owner.index_select(0, keep)
        # the sort is faster on narrower integers
        tile = tile.to(torch.int16 if n_tiles < 2**15 else idx)
        tile, perm = torch.sort(tile, stable=True)
        tile = tile.to(idx)
        flat_ids = _take(vid, _take(owner, perm))
        del owner, perm
        tile_count = torch.bincount(tile, minlength=n_tiles)
        tile_start = torch.cumsum(tile_count, 0) - tile_count
    return TilePlan(
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


def _cull_rows(means2d: Tensor, conics: Tensor, opacities: Tensor, vid: Tensor) -> List[Tensor]:
    """Per-Gaussian inputs of :func:`_reaches_tile` for the Gaussians ``vid``: mean, conic,
    the edge minimisers' slopes and the largest ``sigma`` with ``o exp(-sigma) >= 1/255``
    (a relative margin of 1e-3 on alpha covers the rounding of the pixel stage's
    tile-centre expansion, many orders smaller)."""
    m = means2d.detach()[vid]
    con = conics.detach().reshape(-1, 3)[vid]
    a, b, c = con.unbind(-1)
    op = opacities.detach().reshape(-1)[vid].clamp_min(_TINY[means2d.dtype])
    s_max = torch.log(op / (ALPHA_THRESHOLD * (1.0 - 1e-3)))
    return [m[:, 0], m[:, 1], a, b, c, b / c, b / a, s_max]


def _reaches_tile(g: Tensor, tx: Tensor, ty: Tensor, tile_size: int) -> Tensor:
    """Whether a (tile, Gaussian) pair reaches ``alpha >= 1/255`` at some pixel of the tile.

    gsplat's isect rule pairs a Gaussian with every tile its axis-aligned box touches; for
    most of those pairs (box corners, rotated ellipses, the tile-granular rim) every pixel of
    the tile skips the Gaussian. Per pair, the smallest ``sigma`` over the rectangle spanned
    by the tile's pixel centres is found in closed form (0 when the mean lies inside it, else
    the minimum of the convex quadratic over the four edges), and the pair is kept when
    ``o * exp(-sigma_min)`` is not below 1/255 (with the margin of :func:`_cull_rows`, so a
    kept superset, never a lost contributor).

    Args:
        g: The rows of :func:`_cull_rows` per pair. ``[8, M]``
        tx: Tile column of each pair (float). ``[M]``
        ty: Tile row of each pair (float). ``[M]``
        tile_size: Tile edge in pixels.
    """
    mx, my, a, b, c, r_c, r_a, s_max = g
    ts = float(tile_size)
    # offsets d = mean - pixel centre over the tile: d_x in [dx_lo, dx_hi]
    dx_hi = mx - (tx * ts + 0.5)
    dx_lo = dx_hi - (ts - 1)
    dy_hi = my - (ty * ts + 0.5)
    dy_lo = dy_hi - (ts - 1)
    # The minimum of the convex sigma over the box lies on an edge that faces the mean
    # (or is 0 when the mean is inside): the x-edge at the offset nearest 0, likewise y.
    # An edge that does not face the mean is evaluated at offset 0, a point of the box,
    # so the min of the two stays exact.
    ex = dx_lo.clamp_min(0.0) + dx_hi.clamp_max(0.0)
    ey = dy_lo.clamp_min(0.0) + dy_hi.clamp_max(0.0)
    t_y = torch.clamp(-r_c * ex, dy_lo, dy_hi)  # best d_y on the x-edge
    t_x = torch.clamp(-r_a * ey, dx_lo, dx_hi)  # best d_x on the y-edge
    sig_x = ex * (0.5 * a * ex + b * t_y) + 0.5 * c * t_y * t_y
    sig_y = ey * (0.5 * c * ey + b * t_x) + 0.5 * a * t_x * t_x
    return torch.minimum(sig_x, sig_y) <= s_max


# ----------------------------------------------------------------------------------------
# Pixel stage: chunked front-to-back compositing with a hand-written backward pass
# ----------------------------------------------------------------------------------------


def _tiles_to_image(x: Tensor, plan: TilePlan) -> Tensor:
    """``[n_tiles, D, ts*ts]`` channel-major tile pixels -> ``[I, H, W, D]`` image."""
    ts, th, tw = plan.tile_size, plan.tiles_h, plan.tiles_w
    d = x.shape[1]
    img = x.reshape(plan.n_images, th, tw, d, ts, ts).permute(0, 1, 4, 2, 5, 3)
    img = img.reshape(plan.n_images, th * ts, tw * ts, d)
    return img[:, : plan.height, : plan.width]


def _image_to_tiles(img: Tensor, plan: TilePlan) -> Tensor:
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

    The log-alpha ``s = log(o) - sigma`` with ``sigma = 1/2 (a dx^2 + c dy^2) + b dx dy`` of
    every (slot, pixel) pair is one GEMM of per-slot coefficients with the pixel monomials of
    :func:`_pixel_features` (the opacity is folded into the constant term); everything else
    is a handful of element-wise passes: ``alpha = min(0.999, exp(max(s, -80)))``, set to 0
    below 1/255 (the clamp at -80 keeps ``exp`` out of slow denormals). A conic from the projection
    is positive definite, so ``sigma < 0`` can only come from rounding; such a pair is kept
    with ``alpha = o * exp(-sigma)`` here instead of being skipped as in gsplat's kernel
    (Gaussians whose blurred 2D covariance is not positive definite are culled in
    :func:`~zoo.core.projection.project_gaussians`, so the two agree up to rounding).

    Transmittance: ``T_all = cumprod([T0, 1 - alpha_1, ..., 1 - alpha_B])`` along the chunk,
    so ``T_all[:, :-1]`` is the transmittance before each Gaussian and ``T_all[:, 1:]`` after
    it, without a division. The stop rule (exclusive, ``T <= 1e-4``) only costs a masking
    pass in chunks where some pixel actually stops.
    """

    def __init__(
        self,
        attrs: Tensor,
        plan: TilePlan,
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
        self.gid = _take(plan.flat_ids, index)
        per_image = plan.tiles_h * plan.tiles_w
        local = tiles % per_image
        half = 0.5 * plan.tile_size
        cx = ((local % plan.tiles_w) * plan.tile_size).to(dtype) + half
        cy = (torch.div(local, plan.tiles_w, rounding_mode="floor") * plan.tile_size).to(dtype) + half
        a = _take(attrs, self.gid)  # [Ta, B, 7 + D]: mean (2), conic (3), opacity, colour (D), 1
        self.mx = a[..., 0] - cx[:, None]  # means relative to the tile centre [Ta, B]
        self.my = a[..., 1] - cy[:, None]
        self.ca, self.cb, self.cc = a[..., 2], a[..., 3], a[..., 4]
        self.op = a[..., 5] * valid  # padding slots get opacity 0 and so never contribute
        self.colors = a[..., 6:-1]  # [Ta, B, D]
        self.colors1 = a[..., 6:]  # colours and a 1 (the weight sum) [Ta, B, D + 1]
        mx, my, ca, cb, cc = self.mx, self.my, self.ca, self.cb, self.cc
        # log(0) would put -inf (and inf * 0 = nan) into the GEMM: clamp to a tiny opacity,
        # whose log is far below log(1/255) and so skipped like any faint pair.
        log_op = torch.log(self.op.clamp_min(_TINY[dtype]))
        coef = torch.stack(
            [
                log_op - (0.5 * ca * mx * mx + cb * mx * my + 0.5 * cc * my * my),
                ca * mx + cb * my,
                cb * mx + cc * my,
                -0.5 * ca,
                -cb,
                -0.5 * cc,
            ],
            dim=-1,
        )  # [Ta, B, 6]
        # log(o * exp(-sigma)) [Ta, B, P]: one 2D GEMM (several times faster on CPU than the
        # batched matmul of [Ta, B, 6] by [6, P])
        shape = coef.shape[:2] + feats.shape[1:]
        s = torch.mm(coef.reshape(-1, 6), feats).reshape(shape)
        # exp of values below -80 would be slow denormals (and exp(-inf) a slow path) while
        # alpha is far below 1/255 anyway; skip alpha < 1/255 (threshold keeps x > t, so t
        # is the float just below 1/255), then clamp at 0.999.
        alpha = s.clamp_min_(-80.0).exp_()
        alpha = torch.nn.functional.threshold_(alpha, _below(ALPHA_THRESHOLD, dtype), 0.0)
        # alpha <= o * exp(-sigma) with sigma >= 0 up to rounding: the 0.999 clamp (and its
        # zero derivative) can only bind in chunks holding an opacity close to it
        self.clamps = bool(self.op.max() >= _CLAMP_FREE * MAX_ALPHA)
        if self.clamps:
            alpha.clamp_max_(MAX_ALPHA)
        self.alpha = alpha
        T0e = T0 * (~done0).to(dtype)
        ta = torch.empty((alpha.shape[0], alpha.shape[1] + 1, alpha.shape[2]), dtype=dtype, device=alpha.device)
        ta[:, 0] = T0e
        torch.sub(1.0, alpha, out=ta[:, 1:])
        self.T_all = _scan_(ta, torch.Tensor.mul_, torch.cumprod)  # T before each Gaussian, then after the last
        del ta
        tcum = self.tcum
        last = tcum[:, -1]
        # pixels that reach the stop in this chunk (done ones have T0e = 0 and weigh 0 anyway)
        self.stops = bool(((last <= TRANSMITTANCE_STOP) & ~done0).any())
        w = alpha * self.T_all[:, :-1]  # alpha_i * T_before_i
        if self.stops:
            # T after each Gaussian is <= 1e-4 from the one that stops the pixel on
            # (exclusive); T only decreases, so this zeroes a suffix. The 0/1 mask
            # min(1, threshold(T) / 1e-4) is exact (threshold keeps only T > 1e-4) and costs
            # three fast passes where a comparison and masked_fill cost two slow ones.
            keep = torch.nn.functional.threshold(tcum, TRANSMITTANCE_STOP, 0.0)
            w.mul_(keep.div_(TRANSMITTANCE_STOP).clamp_max_(1.0))
            del keep
        self.weights = w
        self.T0 = T0
        self.done0 = done0

    @property
    def tcum(self) -> Tensor:
        """Transmittance after each Gaussian of the chunk. ``[Ta, B, P]``"""
        return self.T_all[:, 1:]

    @property
    def T_before(self) -> Tensor:
        """Transmittance before each Gaussian of the chunk. ``[Ta, B, P]``"""
        return self.T_all[:, :-1]

    def end_state(self, wsum: Tensor) -> Tuple[Tensor, Tensor]:
        """Transmittance and stop flag of every pixel after the chunk. ``([Ta, P], [Ta, P])``

        ``wsum`` is the chunk's sum of weights per pixel (the ones channel of the colour
        GEMM). A pixel that stops in the chunk keeps the transmittance before the Gaussian
        that stops it, ``T0 - sum_i w_i`` (the weights telescope: ``w_i = T_i - T_{i+1}``),
        which saves a masked reduction over the chunk.
        """
        last = self.tcum[:, -1]
        T1 = torch.where(self.done0, self.T0, last)
        done1 = self.done0 | (last <= TRANSMITTANCE_STOP)
        if self.stops:
            T1 = torch.where(done1 & ~self.done0, self.T0 - wsum, T1)
        return T1, done1

    def drop_forward_only(self) -> None:
        """Frees what the backward pass does not read (kept chunks then cost 3 floats per pair)."""
        self.T0 = self.done0 = None  # type: ignore[assignment]


# a chunk whose opacities all stay below _CLAMP_FREE * MAX_ALPHA cannot reach the clamp (the
# margin covers the rounding of the tile-centre expansion, sigma >= -1e-4 even for 64-px tiles)
_CLAMP_FREE = 1.0 - 1e-3

# transmittance floor in the backward pass: below the stop, so only non-contributing pairs
# (weight 0) see it; it keeps rest / T finite there
_T_FLOOR = 0.1 * TRANSMITTANCE_STOP

# smallest opacity fed to log() for padding slots (normal numbers of each dtype)
_TINY = {torch.float32: 1e-30, torch.float64: 1e-300, torch.float16: 1e-4, torch.bfloat16: 1e-30}


def _scan_(x: Tensor, op_: Any, scan: Any, max_loop: int = 64) -> Tensor:
    """Inclusive scan of ``x`` along dim 1, in place where that is faster.

    On CPU, ``cumprod`` / ``cumsum`` along a middle dimension run about 3x slower than a loop
    of in-place row operations (each row a contiguous ``[Ta, P]`` slab pass), so short
    chunks take the loop; long ones (few tiles, wide chunks) the library scan. The
    operations are applied in the same order, so the results are the same.
    """
    if x.shape[1] > max_loop:
        return scan(x, dim=1)
    for i in range(1, x.shape[1]):
        op_(x[:, i], x[:, i - 1])
    return x


def _pack_attributes(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor) -> Tensor:
    """Concatenates the per-Gaussian inputs of the pixel stage for one gather per chunk.

    Returns:
        ``[P, 7 + D]``: mean (2), conic (3), opacity (1), colour (D), a constant 1 (its
        composite is the sum of weights, ``1 - T`` over a chunk).
    """
    means2d = means2d.reshape(-1, 2)
    return torch.cat(
        [
            means2d,
            conics.reshape(-1, 3),
            opacities.reshape(-1, 1),
            colors.reshape(-1, colors.shape[-1]),
            means2d.new_ones(means2d.shape[0], 1),
        ],
        dim=-1,
    )


@functools.lru_cache(maxsize=None)
def _below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value`` (turns ``x > t`` into ``x >= value``)."""
    v = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(v, torch.zeros_like(v)))


class RasterizePixels(torch.autograd.Function):
    """Differentiable front-to-back compositing over a :class:`TilePlan` (no background).

    When gradients are needed, the forward pass keeps the per-pair tensors of its chunks
    (alpha, transmittance, weight) for the backward pass up to :data:`SAVED_PAIRS_BUDGET`
    (pixel, Gaussian) pairs in all; chunks past that are recomputed in the backward pass.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        plan: TilePlan,
        budget: int,
        absgrad: bool,
    ) -> Tuple[Tensor, Tensor]:
        attrs = _pack_attributes(means2d, conics, colors, opacities)
        dtype, device = attrs.dtype, attrs.device
        d = colors.shape[-1]
        n_pix = plan.tile_size**2
        n_tiles = plan.tile_count.numel()
        feats = _pixel_features(plan.tile_size, dtype, device)
        keep_left = SAVED_PAIRS_BUDGET if any(ctx.needs_input_grad[:4]) else 0

        acc = torch.zeros(n_tiles, d + 1, n_pix, dtype=dtype, device=device)
        T = torch.ones(n_tiles, n_pix, dtype=dtype, device=device)
        done = torch.zeros(n_tiles, n_pix, dtype=torch.bool, device=device)
        chunks: List[Tuple[Tensor, int, int, Tensor, Tensor, Optional[_Chunk]]] = []
        for tiles in _tile_groups(plan, n_pix, budget):
            pos = 0
            while tiles.numel() > 0:
                remaining = int((plan.tile_count[tiles] - pos).max())
                width = max(1, min(remaining, budget // (tiles.numel() * n_pix)))
                T0, done0 = T[tiles], done[tiles]
                pairs = tiles.numel() * width * n_pix
                keep = pairs <= keep_left
                ch = _Chunk(attrs, plan, feats, tiles, pos, width, T0, done0)
                comp = torch.bmm(ch.colors1.transpose(1, 2), ch.weights)  # [Ta, D + 1, P]
                acc.index_add_(0, tiles, comp)
                T1, done1 = ch.end_state(comp[:, -1])
                T[tiles] = T1
                done[tiles] = done1
                kept = None
                if keep:
                    keep_left -= pairs
                    ch.drop_forward_only()
                    kept = ch
                chunks.append((tiles, pos, width, T0, done0, kept))
                del ch
                pos += width
                more = (plan.tile_count[tiles] > pos) & ~done1.all(dim=1)
                tiles = tiles[more]

        out = _tiles_to_image(acc[:, :d], plan)
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
        plan: TilePlan = ctx.plan
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
        for tiles, pos, width, T0, done0, ch in reversed(ctx.chunks):
            if ch is None:
                ch = _Chunk(attrs, plan, feats, tiles, pos, width, T0, done0)
            gid = ch.gid.reshape(-1)
            Gt = G[tiles]  # [Ta, D, P]
            w = ch.weights
            gc = torch.bmm(ch.colors, Gt)  # dL/dC . c_i per pixel [Ta, B, P]
            # rest_i = S + sum_{j > i} gc_j w_j  (back to front, from one inclusive cumsum)
            csum = _scan_(gc * w, torch.Tensor.add_, torch.cumsum)
            S_t = S[tiles]
            S_new = S_t + csum[:, -1]
            rest = torch.sub(S_new[:, None, :], csum, out=csum)
            S[tiles] = S_new
            # dL/dalpha_i = T_before_i gc_i - rest_i / (1 - alpha_i) for contributing pairs,
            # and d alpha / d log-alpha = alpha where the 0.999 clamp is not active, so
            # dL/d(log alpha_i) = w_i (gc_i - rest_i / T_after_i), T_after_i = T_before_i
            # (1 - alpha_i) > 1e-4 there; every other pair has w_i = 0 (the floor on T keeps
            # the quotient finite for them).
            T_after = ch.tcum.clamp_min(_T_FLOOR)
            v_s = gc.addcdiv_(rest, T_after, value=-1.0).mul_(w)  # -dL/dsigma [Ta, B, P]
            del rest, T_after
            if ch.clamps:
                v_s.masked_fill_(ch.alpha >= MAX_ALPHA, 0.0)
            v_col = torch.bmm(w, Gt.transpose(1, 2))  # [Ta, B, D]
            op = ch.op
            # sums over pixels of v_sigma * (1, u, v, uu, uv, vv), each [Ta, B]
            mom = torch.mm(feats, v_s.reshape(-1, feats.shape[1]).t()).neg_().reshape((6,) + v_s.shape[:2])
            m0, mu, mv, muu, muv, mvv = mom.unbind(0)
            v_op = m0 / op.clamp_min(_TINY[dtype]).neg_()  # d log alpha / d o = 1 / o, m0 = -sum v_s
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
                ax = (torch.mm(lin_x.reshape(-1, 3), feats[:3]).reshape(v_s.shape) * v_s).abs_().sum(-1)
                ay = (torch.mm(lin_y.reshape(-1, 3), feats[:3]).reshape(v_s.shape) * v_s).abs_().sum(-1)
                parts.append(torch.stack([ax, ay], -1))
            grads.index_add_(0, gid, torch.cat(parts, -1).reshape(gid.numel(), -1))
            del ch, v_s, gc

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


def _tile_groups(plan: TilePlan, n_pix: int, budget: int, min_width: int = 32) -> List[Tensor]:
    """Splits the non-empty tiles into groups processed together (heaviest first)."""
    nonempty = torch.nonzero(plan.tile_count > 0).squeeze(-1)
    if nonempty.numel() == 0:
        return []
    order = torch.sort(plan.tile_count[nonempty], descending=True, stable=True).indices
    nonempty = nonempty[order]
    group = max(1, budget // (n_pix * min_width))
    return list(torch.split(nonempty, group))
