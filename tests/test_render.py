"""Tests of the rendering core: zoo.core.render, zoo.core.camera, zoo.core.gaussians.

The torch backend is checked against an independent brute-force renderer written here
(every pixel against every Gaussian, in depth order, with gsplat's thresholds), against
finite differences (float64 gradcheck), against hand-computed values, against gsplat's own
``DefaultStrategy`` and, where CUDA is present, against ``gsplat.rasterization`` itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import pytest
import torch

from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians
from zoo.core.render import RenderOutput, rasterize, render

GARDEN = Path(__file__).resolve().parents[2] / "shared" / "reference" / "gsplat" / "test_garden.npz"
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _single_thread():
    """These are tiny workloads; one intra-op thread avoids barrier stalls on busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------
# Scene helpers
# ----------------------------------------------------------------------------------------


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera matrix of a camera at ``eye`` looking at ``target`` (world +y up)."""
    f = target - eye
    f = f / f.norm()
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype)
    r = torch.linalg.cross(f, up)
    r = r / r.norm()
    d = torch.linalg.cross(f, r)
    rot = torch.stack([r, d, f])
    w2c = torch.eye(4, dtype=eye.dtype)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ eye
    return w2c


def make_scene(
    n: int = 24,
    n_cams: int = 2,
    width: int = 36,
    height: int = 28,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    sh_degree: Optional[int] = None,
    opacity_range: Tuple[float, float] = (0.2, 0.95),
    scale_range: Tuple[float, float] = (0.04, 0.18),
) -> Dict[str, object]:
    """A random blob of Gaussians around the origin seen by ``n_cams`` cameras."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 1.2
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=dtype))
    opacities = opacity_range[0] + (opacity_range[1] - opacity_range[0]) * torch.rand(n, generator=g, dtype=dtype)
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=dtype)
    else:
        colors = 0.4 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype)
    viewmats, Ks = [], []
    for i in range(n_cams):
        angle = 0.6 * i
        eye = torch.tensor([2.6 * math.sin(angle), 0.3 * i, -2.6 * math.cos(angle)], dtype=dtype)
        viewmats.append(look_at(eye, torch.zeros(3, dtype=dtype)))
        f = 0.9 * width + 3 * i
        Ks.append(torch.tensor([[f, 0, width / 2 + i], [0, f * 1.02, height / 2 - i], [0, 0, 1]], dtype=dtype))
    return dict(
        means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
        viewmats=torch.stack(viewmats), Ks=torch.stack(Ks), width=width, height=height,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# Independent brute-force renderer (zoo/core/dense_raster.py, shared with bench/render.py)
# ----------------------------------------------------------------------------------------

from zoo.core.dense_raster import SH_C0, SH_C1, SH_C2, SH_C3, dense_render, sh_reference  # noqa: E402,F401


def _grads(fn, inputs: Dict[str, torch.Tensor], seed: int = 1):
    """Renders, contracts with fixed random weights, returns (colors, alphas, meta, grads)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    colors, alphas, meta = fn(**leaves)
    g = torch.Generator().manual_seed(seed)
    # drawn in float64 so that every dtype under test sees the same weights
    w_c = torch.rand(colors.shape, generator=g, dtype=torch.float64).to(colors)
    w_a = torch.rand(alphas.shape, generator=g, dtype=torch.float64).to(alphas)
    ((colors * w_c).sum() + (alphas * w_a).sum()).backward()
    return colors.detach(), alphas.detach(), meta, {k: v.grad for k, v in leaves.items()}


DIFF_KEYS = ("means", "quats", "scales", "opacities", "colors", "viewmats")
RASTER_ARGS = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "width", "height")


def _compare_with_dense(scene, dtype, tol, **kw):
    scene = {k: (v.to(dtype) if torch.is_tensor(v) else v) for k, v in scene.items()}
    tensors = {k: scene[k] for k in DIFF_KEYS}
    fixed = {"Ks": scene["Ks"], "width": scene["width"], "height": scene["height"]}
    bg = kw.pop("backgrounds", None)
    if bg is not None:
        bg = bg.to(dtype)
    ours = _grads(lambda **t: rasterize(**t, **fixed, backend="torch", backgrounds=bg, **kw), tensors)
    # the oracle runs in float64 whatever the dtype under test
    tensors64 = {k: v.double() for k, v in tensors.items()}
    fixed64 = dict(fixed, Ks=fixed["Ks"].double())
    kw_ref = {k: v for k, v in kw.items() if k in ("sh_degree", "render_mode", "eps2d", "near_plane")}
    if kw.get("rasterize_mode") == "antialiased":
        kw_ref["antialiased"] = True
    bg64 = None if bg is None else bg.double()
    ref = _grads(lambda **t: (*dense_render(**t, **fixed64, backgrounds=bg64, **kw_ref)[:2], {}), tensors64)
    torch.testing.assert_close(ours[0].double(), ref[0], atol=tol, rtol=tol)
    torch.testing.assert_close(ours[1].double(), ref[1], atol=tol, rtol=tol)
    for k in DIFF_KEYS:
        if ref[3][k] is None:  # e.g. colours in the depth-only modes
            assert ours[3][k] is None or not ours[3][k].any(), k
            continue
        scale = ref[3][k].abs().max().clamp_min(1e-6)
        torch.testing.assert_close(ours[3][k].double() / scale, ref[3][k] / scale, atol=tol * 10, rtol=0, msg=k)
    return ours, ref


# ----------------------------------------------------------------------------------------
# Agreement with the dense renderer
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "render_mode,sh_degree,with_bg,seed",
    [
        ("RGB", None, False, 0),
        ("RGB", 3, True, 1),
        ("RGB+ED", 2, False, 2),
        ("RGB+D", 1, True, 3),
        ("D", None, True, 4),
        ("ED", 0, False, 5),
    ],
)
def test_matches_dense_reference_float64(render_mode, sh_degree, with_bg, seed):
    scene = make_scene(seed=seed, sh_degree=sh_degree)
    bg = torch.rand(2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) if with_bg else None
    ours, ref = _compare_with_dense(
        scene, torch.float64, 1e-5, render_mode=render_mode, sh_degree=sh_degree, backgrounds=bg
    )
    assert ours[1].max() > 0.5  # the scene really covers the image
    expected_channels = {"RGB": 3, "D": 1, "ED": 1, "RGB+D": 4, "RGB+ED": 4}[render_mode]
    assert ours[0].shape == (2, scene["height"], scene["width"], expected_channels)


def test_matches_dense_reference_float32():
    scene = make_scene(seed=7, sh_degree=3, n=30)
    bg = torch.tensor([[0.2, 0.4, 0.6], [1.0, 1.0, 1.0]])
    _compare_with_dense(scene, torch.float32, 2e-4, render_mode="RGB+ED", sh_degree=3, backgrounds=bg)


def test_matches_dense_reference_antialiased_and_per_camera_colors():
    scene = make_scene(seed=8)
    g = torch.Generator().manual_seed(3)
    scene["colors"] = torch.rand(2, scene["means"].shape[0], 3, generator=g, dtype=torch.float64)
    _compare_with_dense(scene, torch.float64, 1e-5, rasterize_mode="antialiased")


def test_opaque_stack_hits_transmittance_stop_across_chunks():
    # Many nearly opaque Gaussians on top of each other: pixels stop early (T <= 1e-4).
    scene = make_scene(seed=9, n=40, opacity_range=(0.9, 0.99), scale_range=(0.15, 0.3))
    ours, ref = _compare_with_dense(scene, torch.float64, 1e-5, chunk_budget=256)
    args = {k: scene[k] for k in RASTER_ARGS}
    stopped = dense_render(**args)[3]
    assert stopped.sum() > 20  # the stop rule really fires
    # the stop is exclusive: T stays above 1e-4
    assert float(ours[1].max()) < 1 - 1e-4
    assert float(ours[1][stopped[..., None]].min()) > 1 - 1e-4 / (1 - 0.99) - 1e-9


def test_radii_and_meta_match_reference():
    scene = make_scene(seed=10, n=30)
    args = {k: scene[k] for k in RASTER_ARGS}
    _, _, meta = rasterize(**args, backend="torch")
    _, _, radii_ref, _ = dense_render(**args)
    assert meta["radii"].dtype == torch.int32
    assert torch.equal(meta["radii"].long(), radii_ref)
    n, c = scene["means"].shape[0], 2
    assert meta["means2d"].shape == (c, n, 2) and meta["conics"].shape == (c, n, 3)
    assert meta["depths"].shape == (c, n) and meta["opacities"].shape == (c, n)
    assert meta["gaussian_ids"] is None and meta["camera_ids"] is None
    assert meta["width"] == scene["width"] and meta["height"] == scene["height"] and meta["n_cameras"] == c
    assert meta["isect_offsets"].shape == (c, meta["tile_height"], meta["tile_width"])
    assert meta["flatten_ids"].numel() == int(meta["tiles_per_gauss"].sum())
    # the intersection list is computed when read; every way of reading the dict sees it
    _, _, lazy = rasterize(**args, backend="torch")
    assert "isect_ids" in lazy and len(lazy) == len(meta)
    assert set({**lazy}) == set(meta) == set(dict(lazy)) == set(lazy.keys())
    assert torch.equal(lazy.get("isect_ids"), meta["isect_ids"])
    assert torch.equal(dict(lazy.items())["flatten_ids"], meta["flatten_ids"])
    # culled Gaussians are zeroed like gsplat's outputs
    culled = (meta["radii"] == 0).all(-1)
    assert torch.all(meta["means2d"][culled] == 0) and torch.all(meta["depths"][culled] == 0)


# ----------------------------------------------------------------------------------------
# gsplat's own pure-PyTorch reference ops (CPU): projection, SH, tile intersections
# ----------------------------------------------------------------------------------------


def test_projection_matches_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    from zoo.core.render import project_gaussians

    s = make_scene(seed=22, n=60, n_cams=3, width=64, height=48)
    covars, _ = _quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    ref_radii, ref_m2, ref_depth, ref_conic, ref_comp = _fully_fused_projection(
        s["means"], covars, s["viewmats"], s["Ks"], 64, 48, eps2d=0.3, calc_compensations=True
    )
    radii, m2, depth, conic, comp = project_gaussians(
        s["means"][None], covars[None], s["opacities"][None], s["viewmats"][None], s["Ks"][None], 64, 48,
        antialiased=True,
    )  # fmt: skip
    ours = (radii > 0).all(-1)[0]
    theirs = (ref_radii > 0).all(-1)
    assert ours.sum() > 50
    # our boxes are gsplat's CUDA opacity-aware ones, never larger than the 3.33-sigma reference
    assert torch.all(theirs[ours]) and torch.all(radii[0][ours] <= ref_radii[ours])
    torch.testing.assert_close(m2[0][ours], ref_m2[ours])
    torch.testing.assert_close(depth[0][ours], ref_depth[ours])
    torch.testing.assert_close(conic[0][ours], ref_conic[ours])
    torch.testing.assert_close(comp[0][ours], ref_comp[ours])


def test_spherical_harmonics_match_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    from zoo.core.render import spherical_harmonics

    g = torch.Generator().manual_seed(23)
    dirs = torch.randn(200, 3, generator=g, dtype=torch.float64)
    coeffs = torch.randn(200, 16, 3, generator=g, dtype=torch.float64)
    for degree in range(4):
        torch.testing.assert_close(
            spherical_harmonics(degree, dirs, coeffs), _spherical_harmonics(degree, dirs, coeffs)
        )
        # and the independent 3DGS-style evaluation used by the dense renderer here
        torch.testing.assert_close(spherical_harmonics(degree, dirs, coeffs), sh_reference(degree, dirs, coeffs))


def test_tile_intersections_match_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _isect_offset_encode, _isect_tiles

    s = make_scene(seed=24, n=40, n_cams=2, width=70, height=50, dtype=torch.float32)
    args = {k: s[k] for k in RASTER_ARGS}
    _, _, meta = rasterize(**args, tile_size=16, backend="torch")
    tiles_per_gauss, isect_ids, flatten_ids = _isect_tiles(
        meta["means2d"].detach(), meta["radii"], meta["depths"].detach(), 16, meta["tile_width"], meta["tile_height"]
    )
    offsets = _isect_offset_encode(isect_ids, 2, meta["tile_width"], meta["tile_height"])
    assert (meta["tile_width"], meta["tile_height"]) == (5, 4)
    assert torch.equal(meta["tiles_per_gauss"], tiles_per_gauss)
    assert torch.equal(meta["isect_ids"], isect_ids)
    assert torch.equal(meta["flatten_ids"], flatten_ids)
    assert torch.equal(meta["isect_offsets"], offsets)


# ----------------------------------------------------------------------------------------
# Finite differences
# ----------------------------------------------------------------------------------------


def _tiny_scene(sh_degree=None, seed=11):
    return make_scene(n=4, n_cams=2, width=12, height=10, seed=seed, sh_degree=sh_degree, opacity_range=(0.3, 0.8))


@pytest.mark.parametrize("sh_degree", [None, 3])
def test_gradcheck_gaussian_parameters(sh_degree):
    s = _tiny_scene(sh_degree)

    def fn(means, quats, scales, opacities, colors):
        img, alpha, _ = rasterize(
            means, quats, scales, opacities, colors, s["viewmats"], s["Ks"], s["width"], s["height"],
            sh_degree=sh_degree, render_mode="RGB+D", backend="torch",
        )  # fmt: skip
        return img, alpha

    inputs = tuple(s[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors"))
    # fast mode checks v^T J u for random u, v (full Jacobians are compared with the dense
    # renderer above); a few seeds of (u, v) make it a thorough check anyway
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_camera_pose_and_background():
    s = _tiny_scene(seed=12)

    def fn(viewmats, backgrounds):
        img, alpha, _ = rasterize(
            s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], viewmats, s["Ks"],
            s["width"], s["height"], backgrounds=backgrounds, render_mode="RGB+ED", backend="torch",
        )  # fmt: skip
        return img, alpha

    bg = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    inputs = (s["viewmats"].clone().requires_grad_(True), bg)
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_full_jacobian_single_camera():
    s = make_scene(n=3, n_cams=1, width=8, height=7, seed=21, opacity_range=(0.4, 0.9), scale_range=(0.1, 0.3))

    def fn(means, opacities, colors):
        img, alpha, _ = rasterize(
            means, s["quats"], s["scales"], opacities, colors, s["viewmats"], s["Ks"], s["width"], s["height"],
            render_mode="RGB+ED", backend="torch",
        )  # fmt: skip
        return img, alpha

    inputs = tuple(s[k].clone().requires_grad_(True) for k in ("means", "opacities", "colors"))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------------------
# Hand-computed values
# ----------------------------------------------------------------------------------------


def test_single_isotropic_gaussian_hand_computed():
    f, z, s, o = 50.0, 4.0, 0.1, 0.8
    width, height = 40, 30
    # camera at the origin looking down +z; the mean projects onto the centre of pixel (row 9, col 25)
    u, v = 25.5, 9.5
    cx, cy = 20.0, 15.0
    mean = torch.tensor([[(u - cx) * z / f, (v - cy) * z / f, z]], dtype=torch.float64)
    quat = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    scale = torch.full((1, 3), s, dtype=torch.float64)
    K = torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]]], dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)[None]
    color = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)
    img, alpha, meta = rasterize(
        mean, quat, scale, torch.tensor([o], dtype=torch.float64), color, viewmat, K, width, height,
        render_mode="RGB+ED", backend="torch",
    )  # fmt: skip
    alpha = alpha[0, ..., 0]
    peak = torch.nonzero(alpha == alpha.max())
    assert peak.tolist() == [[9, 25]]
    assert float(alpha[9, 25]) == pytest.approx(o, abs=1e-12)  # sigma = 0 at the centre
    assert img[0, 9, 25, :3].tolist() == pytest.approx((o * color[0]).tolist(), abs=1e-12)
    assert float(img[0, 9, 25, 3]) == pytest.approx(z, abs=1e-9)  # expected depth
    # Off-diagonal Jacobian terms vanish only at the optical axis; here the 2D covariance is
    # J J^T s^2 with J = f/z [[1, 0, -x/z], [0, 1, -y/z]], plus eps2d = 0.3 on the diagonal.
    x, y = float(mean[0, 0]), float(mean[0, 1])
    jac = (f / z) * np.array([[1.0, 0.0, -x / z], [0.0, 1.0, -y / z]])
    cov2 = jac @ jac.T * s * s + 0.3 * np.eye(2)
    conic = np.linalg.inv(cov2)
    for dr, dc in [(0, 1), (1, 0), (2, -3), (-4, 2)]:
        d = np.array([dc, dr], dtype=np.float64)  # pixel minus mean, in (x, y)
        expected = o * math.exp(-0.5 * d @ conic @ d)
        assert float(alpha[9 + dr, 25 + dc]) == pytest.approx(expected, rel=1e-9)
    ext = min(3.33, math.sqrt(2 * math.log(o * 255)))
    expected_radii = [math.ceil(ext * math.sqrt(cov2[0, 0])), math.ceil(ext * math.sqrt(cov2[1, 1]))]
    assert meta["radii"][0, 0].tolist() == expected_radii
    assert meta["means2d"][0, 0].tolist() == pytest.approx([u, v], abs=1e-9)
    # far outside the bounding box nothing is drawn
    assert float(alpha[0, 0]) == 0.0


def test_culling_near_plane_and_offscreen():
    K = torch.tensor([[[30.0, 0, 16.5], [0, 30.0, 16.5], [0, 0, 1]]])
    means = torch.tensor([[0.0, 0.0, 0.005], [0.0, 0.0, -2.0], [50.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    ones = torch.ones(4)
    img, alpha, meta = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1), torch.full((4, 3), 0.05), 0.9 * ones,
        torch.rand(4, 3), torch.eye(4)[None], K, 32, 32, backend="torch",
    )  # fmt: skip
    assert (meta["radii"][0] > 0).all(-1).tolist() == [False, False, False, True]
    assert float(alpha[0, 16, 16, 0]) == pytest.approx(0.9, abs=1e-6)


# ----------------------------------------------------------------------------------------
# Internal consistency: tiling, chunking, batching, packing
# ----------------------------------------------------------------------------------------


def test_tile_size_and_chunking_do_not_change_results():
    s = make_scene(seed=13, n=60, width=50, height=37, dtype=torch.float32, opacity_range=(0.5, 0.99))
    tensors = {k: s[k] for k in DIFF_KEYS}
    fixed = {"Ks": s["Ks"], "width": s["width"], "height": s["height"]}
    base = _grads(lambda **t: rasterize(**t, **fixed, backend="torch", render_mode="RGB+ED"), tensors)
    for kw in ({"tile_size": 4}, {"tile_size": 16}, {"tile_size": 64}, {"tile_size": 8, "chunk_budget": 64 * 5}):
        other = _grads(lambda **t: rasterize(**t, **fixed, backend="torch", render_mode="RGB+ED", **kw), tensors)
        assert other[2]["tile_size"] == kw["tile_size"]
        torch.testing.assert_close(other[0], base[0], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(other[1], base[1], atol=2e-5, rtol=1e-5)
        for k in DIFF_KEYS:
            scale = base[3][k].abs().max()
            torch.testing.assert_close(other[3][k] / scale, base[3][k] / scale, atol=1e-4, rtol=0, msg=k)


@pytest.mark.parametrize("seed", [21, 22])
def test_kept_and_recomputed_chunks_agree_with_dense(seed, monkeypatch):
    """The backward pass reads the forward's chunk tensors up to SAVED_PAIRS_BUDGET and
    recomputes the rest: both paths (and a mix across chunks) give the dense oracle's
    images and gradients on random scenes that stop pixels by transmittance."""
    import zoo.core.tile_raster as tile_raster

    scene = make_scene(seed=seed, n=40, width=24, height=20, dtype=torch.float64, opacity_range=(0.3, 0.99))
    results = []
    for saved in (tile_raster.SAVED_PAIRS_BUDGET, 0, 3 * 64 * 16):
        monkeypatch.setattr(tile_raster, "SAVED_PAIRS_BUDGET", saved)
        ours, _ = _compare_with_dense(scene, torch.float64, 1e-6, render_mode="RGB+ED", tile_size=8, chunk_budget=64 * 16)
        results.append(ours)
    for other in results[1:]:
        torch.testing.assert_close(other[0], results[0][0], atol=1e-12, rtol=1e-12)
        for k in DIFF_KEYS:
            torch.testing.assert_close(other[3][k], results[0][3][k], atol=1e-12, rtol=1e-12, msg=k)


@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_culled_plan_keeps_exactly_the_pairs_that_reach_alpha_threshold(tile_size):
    """The culled plan's closed-form min of sigma over a tile against brute force over its
    pixels: every (tile, Gaussian) pair with some pixel at alpha >= 1/255 is kept, a dropped
    pair stays below 1/255 at every pixel (the margin only keeps pairs within 0.1%), and the
    kept pairs come in the full plan's order."""
    from zoo.core.tile_raster import build_plan

    g = torch.Generator().manual_seed(tile_size)
    n, w, h = 300, 61, 45
    means2d = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h]).double()
    # random anisotropic, rotated 2D covariances (+ the 0.3 px blur) and their conics
    ang = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    sx, sy = 0.5 + 6 * torch.rand(n, generator=g, dtype=torch.float64), 0.3 + 2 * torch.rand(n, generator=g, dtype=torch.float64)
    R = torch.stack([torch.stack([ang.cos(), -ang.sin()], -1), torch.stack([ang.sin(), ang.cos()], -1)], -2)
    cov = R @ torch.diag_embed(torch.stack([sx, sy], -1) ** 2) @ R.transpose(-1, -2) + 0.3 * torch.eye(2, dtype=torch.float64)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    opac = 0.01 + 0.99 * torch.rand(n, generator=g, dtype=torch.float64)
    ext = torch.sqrt(2 * torch.log(opac * 255)).clamp_max(3.33)
    radii = torch.ceil(ext[:, None] * torch.sqrt(torch.stack([cov[:, 0, 0], cov[:, 1, 1]], -1))).long()
    depths = torch.rand(n, generator=g, dtype=torch.float64)
    plan = build_plan(means2d, radii, depths, torch.zeros(n, dtype=torch.long), 1, w, h, tile_size)
    culled = build_plan(means2d, radii, depths, torch.zeros(n, dtype=torch.long), 1, w, h, tile_size, conics, opac)
    assert 0 < culled.flat_ids.numel() < plan.flat_ids.numel()
    assert torch.equal(culled.tiles_per_gauss, plan.tiles_per_gauss)
    # brute force: max alpha over each pair's tile pixels
    tile = plan.tile_ids.long()
    col, row = tile % plan.tiles_w, tile // plan.tiles_w
    c = torch.arange(tile_size, dtype=torch.float64) + 0.5
    px = (col[:, None] * tile_size + c[None, :])[:, None, :]
    py = (row[:, None] * tile_size + c[None, :])[:, :, None]
    gid = plan.flat_ids.long()
    dx, dy = means2d[gid, 0, None, None] - px, means2d[gid, 1, None, None] - py
    a, b, cc = (conics[gid, i, None, None] for i in range(3))
    alpha = opac[gid, None, None] * torch.exp(-(0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy))
    peak = alpha.flatten(1).max(1).values
    kept = torch.zeros(plan.flat_ids.numel(), dtype=torch.bool)
    key = plan.tile_ids.long() * n + gid
    kept[torch.isin(key, culled.tile_ids.long() * n + culled.flat_ids.long())] = True
    assert kept[peak >= 1 / 255].all()
    assert (peak[~kept] < 1 / 255).all()
    # the bound is the exact min of sigma over the rectangle spanned by the pixel centres:
    # a kept pair reaches (nearly) 1/255 somewhere on a fine grid of that rectangle
    f = torch.linspace(0.5, tile_size - 0.5, 8 * tile_size + 1, dtype=torch.float64)
    fx = (col[:, None] * tile_size + f[None, :])[:, None, :]
    fy = (row[:, None] * tile_size + f[None, :])[:, :, None]
    dx, dy = means2d[gid, 0, None, None] - fx, means2d[gid, 1, None, None] - fy
    fine = (opac[gid, None, None] * torch.exp(-(0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy))).flatten(1).max(1).values
    assert not (kept & (fine < (1 / 255) * 0.99)).any()
    assert (kept == (fine >= (1 / 255) * (1 - 1e-3)))[(fine - 1 / 255).abs() > 0.02 / 255].all()
    # the full plan's order restricted to the kept pairs (tile, then depth), counts consistent
    assert torch.equal(culled.flat_ids.long(), gid[kept]) and torch.equal(culled.tile_ids.long(), tile[kept])
    assert int(culled.tile_count.sum()) == culled.flat_ids.numel()
    assert (culled.tile_ids[1:] >= culled.tile_ids[:-1]).all()


def test_batch_dims_match_separate_renders():
    s1, s2 = make_scene(seed=14), make_scene(seed=15)
    keys = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")
    batched = {k: torch.stack([s1[k], s2[k]]) for k in keys}
    size = {"width": s1["width"], "height": s1["height"]}
    img, alpha, meta = rasterize(**batched, **size, render_mode="RGB+D", backend="torch")
    assert img.shape == (2, 2, s1["height"], s1["width"], 4)
    assert meta["radii"].shape == (2, 2, s1["means"].shape[0], 2)
    for b, s in enumerate((s1, s2)):
        ref_img, ref_alpha, _ = rasterize(**{k: s[k] for k in keys}, **size, render_mode="RGB+D", backend="torch")
        torch.testing.assert_close(img[b], ref_img)
        torch.testing.assert_close(alpha[b], ref_alpha)


def test_packed_matches_unpacked():
    s = make_scene(seed=16, n=40, dtype=torch.float32)
    tensors = {k: s[k] for k in DIFF_KEYS}
    fixed = {"Ks": s["Ks"], "width": s["width"], "height": s["height"]}
    dense = _grads(lambda **t: rasterize(**t, **fixed, backend="torch"), tensors)
    packed = _grads(lambda **t: rasterize(**t, **fixed, backend="torch", packed=True), tensors)
    torch.testing.assert_close(packed[0], dense[0])
    for k in DIFF_KEYS:
        torch.testing.assert_close(packed[3][k], dense[3][k], atol=1e-5, rtol=1e-4)
    meta_p, meta_d = packed[2], dense[2]
    visible = (meta_d["radii"] > 0).all(-1)
    nnz = int(visible.sum())
    assert meta_p["means2d"].shape == (nnz, 2) and meta_p["gaussian_ids"].shape == (nnz,)
    torch.testing.assert_close(meta_p["means2d"], meta_d["means2d"][meta_p["camera_ids"], meta_p["gaussian_ids"]])


def test_means2d_gradient_and_absgrad_for_densification():
    s = make_scene(seed=17, dtype=torch.float32)
    args = {k: s[k] for k in RASTER_ARGS}
    args["means"] = args["means"].clone().requires_grad_(True)
    img, _, meta = rasterize(**args, absgrad=True, backend="torch")
    assert not meta["means2d"].is_leaf
    meta["means2d"].retain_grad()
    img.square().sum().backward()
    grad = meta["means2d"].grad
    assert grad.shape == meta["means2d"].shape
    visible = (meta["radii"] > 0).all(-1)
    assert grad[visible].abs().sum() > 0 and torch.all(grad[~visible] == 0)
    absgrad = meta["means2d"].absgrad
    assert absgrad.shape == grad.shape
    assert torch.all(absgrad >= grad.abs() - 1e-6)


# ----------------------------------------------------------------------------------------
# gsplat's DefaultStrategy on the torch backend's meta
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True])
def test_default_strategy_densifies_on_torch_meta(packed):
    from gsplat.strategy import DefaultStrategy

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def group(n, z, scale, opacity):
        means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 1.2, torch.full((n, 1), z)], -1)
        return means, torch.full((n, 3), math.log(scale)), torch.full((n,), torch.logit(torch.tensor(opacity)).item())

    groups = [
        group(6, 3.0, 0.01, 0.7),  # visible and small -> duplicated
        group(5, 3.5, 0.1, 0.7),  # visible and large -> split
        group(4, 3.2, 0.05, 0.002),  # opacity below 1/255 -> culled, then pruned
        group(3, -1.0, 0.05, 0.7),  # behind the camera -> untouched
    ]
    n0 = sum(len(m) for m, _, _ in groups)
    params = torch.nn.ParameterDict(
        {
            "means": torch.cat([m for m, _, _ in groups]),
            "scales": torch.cat([s for _, s, _ in groups]),
            "quats": torch.randn(n0, 4, generator=g),
            "opacities": torch.cat([o for _, _, o in groups]),
            "colors": torch.rand(n0, 3, generator=g),
        }
    )
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = DefaultStrategy(
        refine_start_iter=0, refine_every=2, grow_grad2d=0.0, grow_scale3d=0.05, prune_opa=0.05
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    K = torch.tensor([[[40.0, 0, 24], [0, 40.0, 20], [0, 0, 1]]])
    target = torch.rand(1, 40, 48, 3, generator=g)
    counts = []
    for step in range(4):
        img, _, info = rasterize(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            params["colors"], torch.eye(4)[None], K, 48, 40, packed=packed, backend="torch",
        )  # fmt: skip
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = (img - target).abs().mean()
        loss.backward()
        if step == 0 and packed:
            assert info["gaussian_ids"].tolist() == list(range(11)) and info["camera_ids"].tolist() == [0] * 11
            assert torch.all(info["means2d"].grad.norm(dim=-1) > 0)
        elif step == 0:
            visible = (info["radii"][0] > 0).all(-1)
            assert visible.tolist() == [True] * 11 + [False] * 7
            assert torch.all(info["means2d"].grad[0, :11].norm(dim=-1) > 0)
        strategy.step_post_backward(params, optimizers, state, step, info, packed=packed)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
        counts.append(len(params["means"]))
    # step 2 refines: +6 duplicates, +5 (each split replaces 1 by 2), -4 pruned
    assert counts == [n0, n0, n0 + 6 + 5 - 4, n0 + 6 + 5 - 4]
    assert state["grad2d"].shape == (counts[-1],)
    for k, p in params.items():
        assert optimizers[k].state[p]["exp_avg"].shape == p.shape


# ----------------------------------------------------------------------------------------
# render() and the containers
# ----------------------------------------------------------------------------------------


def test_render_typed_api():
    s = make_scene(seed=18, dtype=torch.float32, sh_degree=2)
    gs = Gaussians(s["means"], s["quats"], s["scales"], s["opacities"], sh=s["colors"])
    cams = Cameras(s["Ks"], s["viewmats"], s["width"], s["height"])
    assert gs.sh_degree == 2 and len(gs) == 24 and len(cams) == 2
    out = render(gs, cams, backgrounds=torch.ones(3), backend="torch")
    assert isinstance(out, RenderOutput)
    assert out.rgb.shape == (2, 28, 36, 3) and out.alpha.shape == (2, 28, 36, 1) and out.depth.shape == (2, 28, 36, 1)
    img, alpha, _ = rasterize(
        s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"], 36, 28,
        sh_degree=2, backgrounds=torch.ones(2, 3), render_mode="RGB+ED", backend="torch",
    )  # fmt: skip
    torch.testing.assert_close(out.rgb, img[..., :3])
    torch.testing.assert_close(out.depth, img[..., 3:])
    # progressive SH: a lower degree than stored
    low = render(gs, cams, render_mode="RGB", sh_degree=0, backend="torch")
    assert low.depth is None and not torch.allclose(low.rgb, render(gs, cams, render_mode="RGB", backend="torch").rgb)
    depth_only = render(gs, cams, render_mode="ED", backend="torch")
    assert depth_only.rgb is None and depth_only.depth.shape == (2, 28, 36, 1)
    hit = depth_only.alpha[..., 0] > 0.5
    assert torch.all((depth_only.depth[..., 0][hit] > 1.5) & (depth_only.depth[..., 0][hit] < 4.0))


def test_containers():
    s = make_scene(seed=19, dtype=torch.float32)
    gs = Gaussians(s["means"], s["quats"], s["scales"], s["opacities"], colors=s["colors"])
    assert gs.sh_degree is None
    both = Gaussians.cat([gs, gs[:5]])
    assert len(both) == 29 and torch.equal(both.means[24:], gs.means[:5])
    mask = gs.opacities > 0.5
    assert len(gs[mask]) == int(mask.sum()) and len(gs[3]) == 1
    assert gs.to(torch.float64).means.dtype == torch.float64
    assert not gs.detach().means.requires_grad
    with pytest.raises(ValueError, match="quats"):
        Gaussians(s["means"], s["quats"][:, :3], s["scales"], s["opacities"], colors=s["colors"])
    with pytest.raises(ValueError, match="colors"):
        Gaussians(s["means"], s["quats"], s["scales"], s["opacities"])
    with pytest.raises(ValueError, match="square"):
        Gaussians(s["means"], s["quats"], s["scales"], s["opacities"], sh=torch.zeros(24, 5, 3))

    cams = Cameras(s["Ks"], s["viewmats"], s["width"], s["height"])
    centers = cams.centers
    torch.testing.assert_close(centers, torch.linalg.inv(s["viewmats"])[:, :3, 3])
    assert len(cams[1]) == 1 and len(cams[-1]) == 1 and torch.equal(cams[-1].w2c[0], cams.w2c[1])
    half = cams.scaled(0.5)
    assert (half.width, half.height) == (18, 14)
    assert float(half.K[0, 0, 0]) == pytest.approx(float(cams.K[0, 0, 0]) / 2)
    batch = {"K": s["Ks"], "w2c": s["viewmats"], "image": torch.zeros(2, 3, 28, 36)}
    from_batch = Cameras.from_batch(batch)
    assert (from_batch.width, from_batch.height) == (36, 28)
    # batches use OpenCV's pixel centres (pixel (0,0) at (0,0)); the renderer gsplat's (0.5, 0.5)
    torch.testing.assert_close(from_batch.K[:, :2, 2], s["Ks"][:, :2, 2] + 0.5)
    torch.testing.assert_close(from_batch.K[:, :2, :2], s["Ks"][:, :2, :2])
    assert torch.equal(s["Ks"], batch["K"]), "from_batch must not modify the batch"
    with pytest.raises(ValueError, match="w2c"):
        Cameras(s["Ks"], s["viewmats"][:, :3], 36, 28)
    with pytest.raises(ValueError, match="image"):
        Cameras.from_batch({"K": s["Ks"], "w2c": s["viewmats"]})


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


def test_errors_for_bad_input():
    s = make_scene(seed=20, dtype=torch.float32)
    args = {k: s[k] for k in RASTER_ARGS}

    def bad(match, **override):
        with pytest.raises(ValueError, match=match):
            rasterize(**{**args, **{k: v for k, v in override.items() if k in args}},
                      **{k: v for k, v in override.items() if k not in args})  # fmt: skip

    bad(r"means must have shape \[\.\.\., N, 3\]", means=s["means"][:, :2])
    bad(r"quats must have shape \[24, 4\]", quats=s["quats"][:5])
    bad(r"scales must have shape", scales=s["scales"][:, :2])
    bad(r"opacities must have shape \[24\]", opacities=s["opacities"][:, None])
    bad(r"colors must have shape", colors=s["colors"][:10])
    bad(r"viewmats must have shape", viewmats=s["viewmats"][:, :3])
    bad(r"Ks must have shape \[2, 3, 3\]", Ks=s["Ks"][:1])
    bad(r"SH coefficients", colors=torch.zeros(24, 3), sh_degree=1)
    bad(r"K >= 16", colors=torch.zeros(24, 9, 3), sh_degree=3)
    bad(r"backgrounds must have shape \[2, 3\]", backgrounds=torch.zeros(3))
    bad(r"render_mode", render_mode="RGBD")
    bad(r"backend", backend="cuda")
    bad(r"rasterize_mode", rasterize_mode="fancy")
    bad(r"camera_model", camera_model="fisheye", backend="torch")
    bad(r"with_ut", with_ut=True, backend="torch")
    bad(r"radial_coeffs", radial_coeffs=torch.zeros(2, 6), backend="torch")
    bad(r"unexpected argument 'foo'", foo=1)
    bad(r"sparse_grad", sparse_grad=True, backend="torch")
    bad(r"width and height", width=0)
    if not HAS_CUDA:
        bad(r"backend='gsplat' needs CUDA", backend="gsplat")
    with pytest.raises(ValueError, match="backgrounds"):
        render(
            Gaussians(s["means"], s["quats"], s["scales"], s["opacities"], colors=s["colors"]),
            Cameras(s["Ks"], s["viewmats"], 36, 28), backgrounds=torch.zeros(4),
        )  # fmt: skip


# ----------------------------------------------------------------------------------------
# gsplat parity on the real garden scene (CUDA only)
# ----------------------------------------------------------------------------------------


def load_garden(device: str = "cpu", seed: int = 42, scale: float = 1.0):
    """gsplat's test scene: points cropped to [-2, 2]^3, colours / 255, random scales,
    unit quaternions and opacities drawn with a fixed seed."""
    data = np.load(GARDEN)
    means = torch.from_numpy(data["means3d"]).float()
    colors = torch.from_numpy(data["colors"]).float() / 255.0
    keep = (means.abs() <= 2).all(-1)
    means, colors = means[keep], colors[keep]
    g = torch.Generator().manual_seed(seed)
    n = means.shape[0]
    scales = 1e-4 + (0.02 - 1e-4) * torch.rand(n, 3, generator=g)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    opacities = torch.rand(n, generator=g)
    viewmats = torch.from_numpy(data["viewmats"]).float()
    Ks = torch.from_numpy(data["Ks"]).float()
    width, height = int(data["width"]), int(data["height"])
    if scale != 1.0:
        Ks = Ks.clone()
        Ks[:, :2] *= scale
        width, height = int(round(width * scale)), int(round(height * scale))
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks)
    out = {k: v.to(device) for k, v in out.items()}
    out.update(width=width, height=height)
    return out


def compare_backends_on_garden(device, backends, render_mode, sh_degree, scale=1.0):
    """Renders the garden scene with two backends and checks images and gradients agree."""
    scene = load_garden(device, scale=scale)
    if sh_degree is not None:
        g = torch.Generator(device=device).manual_seed(0)
        sh = 0.2 * torch.randn(scene["means"].shape[0], 16, 3, device=device, generator=g)
        sh[:, 0] = (scene["colors"] - 0.5) / 0.28209479177387814
        scene["colors"] = sh
    tensors = {k: scene[k] for k in DIFF_KEYS}
    fixed = {"Ks": scene["Ks"], "width": scene["width"], "height": scene["height"]}
    bg = torch.rand(3, 3, generator=torch.Generator().manual_seed(1)).to(device)
    options = dict(fixed, sh_degree=sh_degree, render_mode=render_mode, backgrounds=bg)
    ours, ref = (_grads(lambda **t: rasterize(**t, **options, backend=b), tensors) for b in backends)
    radii_ours, radii_ref = ours[2]["radii"], ref[2]["radii"].to(ours[2]["radii"].dtype)
    assert (radii_ours != radii_ref).any(-1).float().mean() < 1e-3  # rare ceil() flips at most
    diff = (ours[0] - ref[0]).abs()
    assert float(diff[..., :3].mean()) < 1e-4 and float(diff[..., :3].max()) < 2e-2
    torch.testing.assert_close(ours[1], ref[1], atol=2e-2, rtol=0)
    for k in DIFF_KEYS:
        a, b = ours[3][k].flatten().double(), ref[3][k].flatten().double()
        rel = (a - b).norm() / b.norm()
        assert rel < (5e-2 if k == "viewmats" else 2e-2), (k, float(rel))
    return ours, ref


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="gsplat's kernels need CUDA")
@pytest.mark.skipif(not GARDEN.exists(), reason=f"{GARDEN} not found")
@pytest.mark.parametrize("render_mode,sh_degree", [("RGB+ED", None), ("RGB", 3)])
def test_torch_backend_matches_gsplat_on_garden(render_mode, sh_degree):
    compare_backends_on_garden("cuda", ("torch", "gsplat"), render_mode, sh_degree)
