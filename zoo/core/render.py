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

Layout: the projection stage (rotations, covariances, EWA projection, culling, SH) is in
:mod:`zoo.core.projection`, the tile stage (intersections, chunked compositing and its
backward pass) in :mod:`zoo.core.tile_raster`; this module holds the entry points, argument
validation and backend dispatch, and re-exports the names it always exported.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians

# Defined here before the split into projection / tile_raster; still importable from here.
from zoo.core.projection import (  # noqa: F401
    ALPHA_THRESHOLD,
    MAX_BOX_EXTEND,
    project_gaussians,
    quat_scale_to_covar,
    quat_to_rotmat,
    spherical_harmonics,
)
from zoo.core.tile_raster import (  # noqa: F401
    DEFAULT_CHUNK_BUDGET,
    MAX_ALPHA,
    TRANSMITTANCE_STOP,
    RasterizePixels,
    TilePlan,
    build_plan,
)

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


def _shape(t: Optional[Tensor]) -> str:
    return "None" if t is None else str(list(t.shape))


class _Inputs(NamedTuple):
    """:func:`rasterize`'s scene arguments, validated and completed by :func:`_check_inputs`.

    Shapes are those of :func:`rasterize`'s docstring. Once checked, ``width`` and ``height``
    are ints, ``batch`` holds the leading batch dims ``[...]``, ``n`` the number of Gaussians
    and ``c`` the number of cameras (None before).
    """

    means: Tensor
    quats: Optional[Tensor]
    scales: Optional[Tensor]
    covars: Optional[Tensor]
    opacities: Tensor
    colors: Tensor
    sh_degree: Optional[int]
    backgrounds: Optional[Tensor]
    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int
    batch: Optional[Tuple[int, ...]] = None
    n: Optional[int] = None
    c: Optional[int] = None


def _check_inputs(inputs: _Inputs) -> _Inputs:
    """Validates gsplat's argument shapes; returns ``inputs`` with int sizes and ``(batch_dims, N, C)`` set."""
    (means, quats, scales, covars, opacities, colors, sh_degree, backgrounds,
     viewmats, Ks, width, height) = inputs[:12]  # fmt: skip
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
    return inputs._replace(width=int(width), height=int(height), batch=batch, n=n, c=c)


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
    inputs = _check_inputs(
        _Inputs(means, quats, scales, covars, opacities, colors, sh_degree, backgrounds, viewmats, Ks, width, height)
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
        inputs, near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        packed=packed, tile_size=tile_size, render_mode=render_mode, absgrad=absgrad,
        antialiased=rasterize_mode == "antialiased", chunk_budget=int(chunk_budget),
    )  # fmt: skip


def _rasterize_torch(
    inputs: _Inputs,
    *,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    eps2d: float,
    packed: bool,
    tile_size: Optional[int],
    render_mode: str,
    absgrad: bool,
    antialiased: bool,
    chunk_budget: int,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """The pure-PyTorch backend of :func:`rasterize` (arguments already validated)."""
    (means, quats, scales, covars, opacities, colors, sh_degree, backgrounds,
     viewmats, Ks, width, height, batch, n, c) = inputs  # fmt: skip
    nb = math.prod(batch)
    n_images = nb * c
    device = means.device
    means_b = means.reshape(nb, n, 3)
    if covars is None:
        covars_b = quat_scale_to_covar(quats.reshape(nb, n, 4), scales.reshape(nb, n, 3))
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

    # the pixel stage walks only the pairs that can reach alpha >= 1/255 in their tile (same
    # image and gradients); the meta's gsplat intersection list is built when it is read
    plan = build_plan(
        means2d_r.detach().reshape(-1, 2), radii_r.reshape(-1, 2), depths_r.detach().reshape(-1),
        image_ids, n_images, width, height, tile_size, conics_r.reshape(-1, 3), opac_r.reshape(-1),
    )  # fmt: skip
    render_colors, render_alphas = RasterizePixels.apply(
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
    def full_plan() -> TilePlan:
        return build_plan(
            means2d_r.detach().reshape(-1, 2), radii_r.reshape(-1, 2), depths_r.detach().reshape(-1),
            image_ids, n_images, width, height, plan.tile_size,
        )  # fmt: skip

    meta = _torch_meta(
        plan, full_plan, batch, c, n, radii_r, means2d_r, depths_r, conics_r, opac_r,
        batch_ids, camera_ids, gaussian_ids, packed,
    )  # fmt: skip
    return render_colors, render_alphas, meta


class _LazyMeta(dict):
    """A meta dict whose costly entries are computed when first read (then stored).

    ``lazy`` maps the deferred keys to one function that returns all of them. Reading any
    of them (``[]``, ``get``, ``items``, ``values``, iteration with lookups, ``dict(meta)``,
    ``{**meta}``) computes them; ``in`` and ``len`` do not need to.
    """

    def __init__(self, eager: Dict[str, Any], lazy_keys: Tuple[str, ...], compute: Callable[[], Dict[str, Any]]):
        super().__init__(eager)
        self._lazy_keys = tuple(k for k in lazy_keys if k not in eager)
        self._compute: Optional[Callable[[], Dict[str, Any]]] = compute

    def _resolve(self) -> None:
        if self._compute is not None:
            compute, self._compute = self._compute, None
            values = compute()
            for k in self._lazy_keys:
                dict.__setitem__(self, k, values[k])

    def __getitem__(self, key: str) -> Any:
        if key in self._lazy_keys:
            self._resolve()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._lazy_keys

    def __iter__(self) -> Iterator[str]:
        self._resolve()
        return dict.__iter__(self)

    def __len__(self) -> int:
        return dict.__len__(self) + (len(self._lazy_keys) if self._compute is not None else 0)

    def keys(self):  # type: ignore[override]
        self._resolve()
        return dict.keys(self)

    def items(self):  # type: ignore[override]
        self._resolve()
        return dict.items(self)

    def values(self):  # type: ignore[override]
        self._resolve()
        return dict.values(self)

    def copy(self) -> Dict[str, Any]:  # type: ignore[override]
        self._resolve()
        return dict(dict.items(self))

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        self._resolve()
        return dict.pop(self, key, *default)

    def __repr__(self) -> str:
        self._resolve()
        return dict.__repr__(self)


def _torch_meta(
    plan: TilePlan,
    full_plan: Callable[[], TilePlan],
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
    """The meta dict in gsplat's layout (unpacked: ``[..., C, N, ...]``; packed: ``[nnz, ...]``).

    ``plan`` is the culled plan the pixel stage walked; gsplat's full intersection list
    (``isect_ids``, ``flatten_ids``, ``isect_offsets``) comes from ``full_plan()``, called
    only when one of those entries is read (training and densification never read them).
    """

    def intersections() -> Dict[str, Any]:
        full = full_plan()
        n_tiles_img = full.tiles_h * full.tiles_w
        with torch.no_grad():
            # gsplat's 64-bit keys: image id | tile id | float32 depth bits (built in place)
            tile_bits = int(math.floor(math.log2(max(n_tiles_img, 1)))) + 1
            tile_local = full.tile_ids.long()
            isect_ids = torch.div(tile_local, n_tiles_img, rounding_mode="floor")
            tile_local -= isect_ids * n_tiles_img
            isect_ids <<= 32 + tile_bits
            tile_local <<= 32
            isect_ids |= tile_local
            del tile_local
            depth_bits = depths.detach().reshape(-1)[full.flat_ids].float().view(torch.int32).long()
            depth_bits &= 0xFFFFFFFF
            isect_ids |= depth_bits
            del depth_bits
            isect_offsets = full.tile_start.to(torch.int32).reshape(batch + (c, full.tiles_h, full.tiles_w))
        return {"isect_ids": isect_ids, "flatten_ids": full.flat_ids.to(torch.int32), "isect_offsets": isect_offsets}

    tiles_per_gauss = plan.tiles_per_gauss if packed else plan.tiles_per_gauss.reshape(batch + (c, n))
    eager = {
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
        "width": plan.width,
        "height": plan.height,
        "tile_size": plan.tile_size,
        "n_batches": math.prod(batch),
        "n_cameras": c,
        "backend": "torch",
    }
    return _LazyMeta(eager, ("isect_ids", "flatten_ids", "isect_offsets"), intersections)


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
