"""Differentiable rendering of a UV-textured triangle mesh into one OpenCV camera.

:func:`zoo.core.mesh.rasterize_triangles` decides which face covers each pixel (not
differentiable); :func:`barycentrics` then recomputes that face's perspective-correct barycentric
weights from the projected vertices with differentiable operations, so the rendered texture
colours carry gradients to the vertex positions (as a PyTorch3D rasterizer's barycentrics do) and
to the texture. Conventions are those of :mod:`zoo.core.mesh` (pixel centres at half-integers,
OBJ UVs with ``v`` up).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.core.mesh import project_points, rasterize_triangles

__all__ = ["barycentrics", "render_textured_mesh"]


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def barycentrics(pix: Tensor, depth: Tensor, faces: Tensor, face_index: Tensor, eps: float = 1e-12) -> Tuple[Tensor, Tensor]:
    """Perspective-correct barycentric weights of the covered pixels, differentiable in ``pix``/``depth``.

    Args:
        pix: ``[V, 2]`` projected vertex positions in pixels (x right, y down).
        depth: ``[V]`` camera depths of the vertices (> 0 for covered faces).
        faces: ``[F, 3]`` vertex indices.
        face_index: ``[H, W]`` face per pixel from :func:`zoo.core.mesh.rasterize_triangles`, -1 empty.
        eps: guard of the divisions.

    Returns:
        ``(pixels [M, 2] long (row, col) of the covered pixels, bary [M, 3])``.
    """
    rows, cols = torch.nonzero(face_index >= 0, as_tuple=True)
    f = faces[face_index[rows, cols]]
    p = torch.stack([cols.to(pix.dtype) + 0.5, rows.to(pix.dtype) + 0.5], dim=-1)
    a, b, c = pix[f[:, 0]], pix[f[:, 1]], pix[f[:, 2]]
    area = _cross(b - a, c - a)
    area = torch.where(area.abs() < eps, torch.full_like(area, eps), area)
    w0 = _cross(b - p, c - p) / area
    w1 = _cross(c - p, a - p) / area
    screen = torch.stack([w0, w1, 1.0 - w0 - w1], dim=-1)
    inv_z = 1.0 / depth[f].clamp_min(eps)
    w = screen * inv_z
    return torch.stack([rows, cols], dim=-1), w / w.sum(-1, keepdim=True).clamp_min(eps)


def render_textured_mesh(verts: Tensor, faces: Tensor, vt: Tensor, ft: Tensor, texture: Tensor, K: Tensor,
                         w2c: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """Render a UV-textured mesh (nearest face per pixel, bilinear texture lookup).

    Args:
        verts: ``[V, 3]`` world-space vertices.
        faces: ``[F, 3]`` vertex indices.
        vt: ``[T, 2]`` UV coordinates in ``[0, 1]`` (``v`` up).
        ft: ``[F, 3]`` UV indices per face (same face order as ``faces``).
        texture: ``[C, Ht, Wt]`` texture image, row 0 at ``v = 1``.
        K: ``[3, 3]`` pixel intrinsics.
        w2c: ``[4, 4]`` OpenCV world-to-camera.
        height, width: output size.

    Returns:
        ``(image [C, H, W]`` (zeros where no face), ``covered [H, W]`` bool). The image is
        differentiable with respect to ``verts`` and ``texture``.
    """
    if faces.shape != ft.shape:
        raise ValueError(f"faces {tuple(faces.shape)} and ft {tuple(ft.shape)} must match one to one")
    pix, z = project_points(verts, K, w2c)
    face_index, _ = rasterize_triangles(pix, z, faces, height, width, perspective_correct=True, near=1e-4)
    pixels, bary = barycentrics(pix, z, faces, face_index)
    uv = (vt[ft[face_index[pixels[:, 0], pixels[:, 1]]]] * bary[..., None]).sum(1)  # [M, 2]
    grid = torch.stack([uv[:, 0] * 2.0 - 1.0, (1.0 - uv[:, 1]) * 2.0 - 1.0], dim=-1).view(1, 1, -1, 2)
    colours = F.grid_sample(texture[None].to(verts.dtype), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[0, :, 0]  # [C, M]
    image = verts.new_zeros(texture.shape[0], height, width)
    image[:, pixels[:, 0], pixels[:, 1]] = colours.to(image.dtype)
    return image, face_index >= 0
