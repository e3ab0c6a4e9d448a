"""Independent brute-force Gaussian-splatting renderer: the dense reference of the tests and benches.

Every pixel against every Gaussian, one Gaussian at a time in depth order, with gsplat's rules
(EWA projection with the frustum clamp, ``eps2d`` blur, opacity-aware 3.33-sigma radii,
near/off-screen culling, ``alpha = min(0.999, o exp(-sigma))``, skip ``alpha < 1/255``, stop
before ``T <= 1e-4``) written without any code of :mod:`zoo.core.render` /
:mod:`zoo.core.projection` / :mod:`zoo.core.tile_raster`, so it can check them
(tests/test_render.py) and time them (bench/render.py). It is differentiable through autograd
and needs memory for about ten image-sized tensors per Gaussian in the backward pass; use it
for small scenes only.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SH_C0", "SH_C1", "SH_C2", "SH_C3", "sh_reference", "dense_render"]


SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
SH_C3 = [
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
]


def sh_reference(degree: int, dirs: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Real SH in the original 3DGS (Inria) formulation, written independently."""
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    res = SH_C0 * sh[..., 0, :]
    if degree > 0:
        res = res - SH_C1 * y * sh[..., 1, :] + SH_C1 * z * sh[..., 2, :] - SH_C1 * x * sh[..., 3, :]
    if degree > 1:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        res = (
            res
            + SH_C2[0] * xy * sh[..., 4, :]
            + SH_C2[1] * yz * sh[..., 5, :]
            + SH_C2[2] * (2.0 * zz - xx - yy) * sh[..., 6, :]
            + SH_C2[3] * xz * sh[..., 7, :]
            + SH_C2[4] * (xx - yy) * sh[..., 8, :]
        )
    if degree > 2:
        res = (
            res
            + SH_C3[0] * y * (3 * xx - yy) * sh[..., 9, :]
            + SH_C3[1] * xy * z * sh[..., 10, :]
            + SH_C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :]
            + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
            + SH_C3[4] * x * (4 * zz - xx - yy) * sh[..., 13, :]
            + SH_C3[5] * z * (xx - yy) * sh[..., 14, :]
            + SH_C3[6] * x * (xx - 3 * yy) * sh[..., 15, :]
        )
    return res


def _num(t) -> float:
    return float(t.detach()) if torch.is_tensor(t) else float(t)


def dense_render(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    sh_degree=None, backgrounds=None, render_mode="RGB", near_plane=0.01, far_plane=1e10,
    eps2d=0.3, antialiased=False,
):  # fmt: skip
    """Every pixel against every Gaussian, one Gaussian at a time in depth order.

    Returns ``(colors [C, H, W, X], alphas [C, H, W, 1], radii [C, N, 2], stopped [C, H, W])``
    where ``stopped`` marks pixels ended by the transmittance rule.
    """
    out_c, out_a, out_r, out_s = [], [], [], []
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    cov3 = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    py, px = torch.meshgrid(
        torch.arange(height, dtype=means.dtype) + 0.5, torch.arange(width, dtype=means.dtype) + 0.5, indexing="ij"
    )
    for ci in range(viewmats.shape[0]):
        vm, K = viewmats[ci], Ks[ci]
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        pc = means @ vm[:3, :3].T + vm[:3, 3]
        covc = vm[:3, :3] @ cov3 @ vm[:3, :3].T
        tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
        radii = torch.zeros(means.shape[0], 2, dtype=torch.int64)
        feats = []
        for i in range(means.shape[0]):
            X, Y, Z = pc[i]
            if not (near_plane <= Z.item() <= far_plane):
                feats.append(None)
                continue
            cx_clamped = torch.clamp(X / Z, -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x) * Z
            cy_clamped = torch.clamp(Y / Z, -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y) * Z
            J = torch.stack(
                [
                    torch.stack([fx / Z, torch.zeros_like(Z), -fx * cx_clamped / Z**2]),
                    torch.stack([torch.zeros_like(Z), fy / Z, -fy * cy_clamped / Z**2]),
                ]
            )
            cov2 = J @ covc[i] @ J.T
            det0 = cov2[0, 0] * cov2[1, 1] - cov2[0, 1] ** 2
            cov2 = cov2 + eps2d * torch.eye(2, dtype=means.dtype)
            det = cov2[0, 0] * cov2[1, 1] - cov2[0, 1] ** 2
            if _num(det) <= 0:
                feats.append(None)
                continue
            opa = opacities[i] * (torch.sqrt(torch.clamp(det0 / det, min=0)) if antialiased else 1.0)
            if _num(opa) < 1 / 255:
                feats.append(None)
                continue
            ext = min(3.33, math.sqrt(2 * math.log(_num(opa) * 255)))
            rx = math.ceil(ext * math.sqrt(_num(cov2[0, 0])))
            ry = math.ceil(ext * math.sqrt(_num(cov2[1, 1])))
            mu = torch.stack([fx * X / Z + cx, fy * Y / Z + cy])
            mx, my = _num(mu[0]), _num(mu[1])
            if mx + rx <= 0 or mx - rx >= width or my + ry <= 0 or my - ry >= height:
                feats.append(None)
                continue
            radii[i] = torch.tensor([rx, ry])
            conic = torch.linalg.inv(cov2)
            if sh_degree is None:
                col = colors[ci, i] if colors.dim() == 3 else colors[i]
            else:
                campos = torch.linalg.inv(vm)[:3, 3]
                col = torch.clamp_min(sh_reference(sh_degree, means[i] - campos, colors[i]) + 0.5, 0.0)
            if render_mode in ("D", "ED"):
                col = Z[None]
            elif render_mode in ("RGB+D", "RGB+ED"):
                col = torch.cat([col, Z[None]])
            feats.append((Z, mu, conic, opa, col))
        order = sorted([i for i in range(len(feats)) if feats[i] is not None], key=lambda i: (_num(feats[i][0]), i))
        n_ch = feats[order[0]][4].shape[0] if order else (1 if render_mode in ("D", "ED") else colors.shape[-1])
        T = torch.ones(height, width, dtype=means.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        img = torch.zeros(height, width, n_ch, dtype=means.dtype)
        for i in order:
            Z, mu, conic, opa, col = feats[i]
            dx, dy = mu[0] - px, mu[1] - py
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            alpha = torch.clamp(opa * torch.exp(-sigma), max=0.999)
            use = (sigma >= 0) & (alpha >= 1 / 255) & ~done
            next_T = T * (1 - alpha)
            stop = use & (next_T <= 1e-4)
            done = done | stop
            use = use & ~stop
            img = img + torch.where(use[..., None], (alpha * T)[..., None] * col, torch.zeros_like(img))
            T = torch.where(use, next_T, T)
        alpha_img = (1 - T)[..., None]
        if backgrounds is not None and render_mode not in ("D", "ED"):
            d_bg = backgrounds.shape[-1]
            img = torch.cat([img[..., :d_bg] + T[..., None] * backgrounds[ci], img[..., d_bg:]], -1)
        if render_mode in ("ED", "RGB+ED"):
            img = torch.cat([img[..., :-1], img[..., -1:] / alpha_img.clamp(min=1e-10)], -1)
        out_c.append(img)
        out_a.append(alpha_img)
        out_r.append(radii)
        out_s.append(done)
    return torch.stack(out_c), torch.stack(out_a), torch.stack(out_r), torch.stack(out_s)
