"""Triangle-mesh utilities: a z-buffer rasterizer, UV position maps, normals, subdivision, Laplacian.

Everything here is pure, vectorised PyTorch and runs on any device.

Conventions (shared with the rest of ``zoo.core``):

* Pixel coordinates: ``x`` to the right, ``y`` down. The centre of pixel (row ``i``, column ``j``)
  is at ``(j + 0.5, i + 0.5)``, so the image spans ``[0, W] x [0, H]``.
* Cameras: OpenCV (camera ``x`` right, ``y`` down, ``z`` forward), world-to-camera ``w2c [4, 4]``,
  pixel-space intrinsics ``K [3, 3]``. "Depth" is the camera-space ``z``; smaller is closer.
* Faces ``[F, 3]`` index vertices; a face's normal follows the right-hand rule
  ``(v1 - v0) x (v2 - v0)``. A face whose normal points towards the camera appears
  counter-clockwise on screen (as a viewer sees the image) and is "front facing".
* UV coordinates follow the OBJ convention: ``u`` to the right, ``v`` up, both in ``[0, 1]``.
  In a UV map of ``S x S`` texels, ``u`` maps to ``x = u * S`` and ``v`` to ``y = (1 - v) * S``,
  so texel row 0 is ``v = 1``.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "rasterize_triangles",
    "project_points",
    "render_mesh_attributes",
    "interpolate",
    "uv_rasterize",
    "position_map",
    "face_normals",
    "vertex_normals",
    "face_areas",
    "edges",
    "Subdivision",
    "subdivide",
    "subdivide_attributes",
    "uniform_laplacian",
    "sample_surface",
]

# Directed edges of a face (a, b, c), each listed opposite to the corner whose barycentric weight
# it produces: edge (b, c) gives the weight of a, (c, a) of b, (a, b) of c.
_EDGE_CORNERS = ((1, 2), (2, 0), (0, 1))


# --------------------------------------------------------------------------------------------------
# Rasterization
# --------------------------------------------------------------------------------------------------


def _check_faces(faces: Tensor, num_verts: int, name: str = "faces") -> Tensor:
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{name} must have shape [F, 3], got {tuple(faces.shape)}")
    if faces.is_floating_point():
        raise TypeError(f"{name} must be an integer tensor, got {faces.dtype}")
    faces = faces.long()
    if faces.numel() > 0 and (int(faces.min()) < 0 or int(faces.max()) >= num_verts):
        raise ValueError(
            f"{name} index out of range: values in [{int(faces.min())}, {int(faces.max())}] "
            f"but there are {num_verts} vertices"
        )
    return faces


def _face_edge_table(xy: Tensor, faces: Tensor, orientation: Tensor) -> Tensor:
    """Per-face data for watertight edge functions.

    Every edge is evaluated from its lower-index endpoint towards its higher-index endpoint, so
    the two faces sharing an edge compute exactly the same number (up to an exact sign flip) at
    every pixel. That makes the inside test watertight: a pixel centre strictly on one side of a
    shared edge belongs to exactly one of the two faces, and one exactly on it is settled by a
    direction rule that picks exactly one of the two opposite directions.

    Args:
        xy: Vertex pixel positions ``[V, 2]`` (float64).
        faces: Faces ``[F, 3]`` (long), none degenerate.
        orientation: ``[F]`` float64, +1 for faces with positive signed area, -1 otherwise.

    Returns:
        ``[F, 15]`` float64: for each of the three edges ``(ox, oy, ex, ey, owned)`` where
        ``(ox, oy)`` is the edge origin, ``(ex, ey)`` the edge vector with the face orientation
        folded in (negations are exact in floating point), and ``owned`` is 1 when a pixel
        centre lying exactly on that edge is counted as inside.
    """
    cols = []
    for p, q in _EDGE_CORNERS:
        ip, iq = faces[:, p], faces[:, q]
        lo = torch.minimum(ip, iq)
        hi = torch.maximum(ip, iq)
        sign = torch.where(ip < iq, 1.0, -1.0).to(xy.dtype) * orientation
        origin = xy[lo]
        vec = (xy[hi] - origin) * sign[:, None]
        # Exactly one of the directions d and -d satisfies this half-open half-plane rule.
        owned = (vec[:, 1] > 0) | ((vec[:, 1] == 0) & (vec[:, 0] < 0))
        cols += [origin[:, 0], origin[:, 1], vec[:, 0], vec[:, 1], owned.to(xy.dtype)]
    return torch.stack(cols, dim=1)


def rasterize_triangles(
    verts_2d: Tensor,
    depth: Optional[Tensor],
    faces: Tensor,
    height: int,
    width: int,
    perspective_correct: bool = True,
    cull_backfaces: bool = False,
    near: float = 0.0,
    chunk_size: int = 1 << 18,
) -> Tuple[Tensor, Tensor]:
    """Z-buffer rasterization of a triangle mesh.

    A pixel is covered by a face when its centre ``(j + 0.5, i + 0.5)`` lies inside the face.
    Centres exactly on an edge or vertex are assigned by a consistent tie-breaking rule, so a
    mesh that tiles a region covers every pixel centre in it exactly once (no cracks, no double
    coverage), whatever the winding of each face. Among the faces covering a pixel, the one with
    the smallest interpolated depth wins; exact depth ties go to the smaller face index.

    The work is proportional to the pixels inside the faces' bounding boxes: candidate
    (face, pixel) pairs are enumerated exactly from each face's pixel bounding box, in chunks of
    at most about ``chunk_size`` pairs (a large face is split into row strips), and each chunk is
    merged into the z-buffer with ``scatter_reduce``.

    Faces are not clipped: with ``perspective_correct=True`` and ``depth`` given, a face with a
    vertex at ``depth <= near`` is skipped entirely. Degenerate faces (zero screen area) and faces
    with non-finite coordinates are skipped.

    Not differentiable (the returned barycentrics are computed from detached inputs); use
    :func:`interpolate` with them to get differentiable attribute images.

    Args:
        verts_2d: Vertex pixel coordinates ``[V, 2]`` (x right, y down).
        depth: Vertex camera depths ``[V]`` (smaller = closer), or ``None`` to skip the depth
            test (overlaps then go to the smallest face index).
        faces: Vertex indices ``[F, 3]``.
        height: Image height ``H`` in pixels.
        width: Image width ``W`` in pixels.
        perspective_correct: When ``depth`` is given, return perspective-correct barycentrics
            (screen-space weights divided by each vertex's depth, renormalised) and test the true
            perspective depth ``1 / sum(b_i / z_i)``. When False, barycentrics are screen-space
            and depth is interpolated linearly (orthographic projection).
        cull_backfaces: Skip faces that appear clockwise on screen, i.e. whose right-hand-rule
            normal points away from an OpenCV camera. Off by default (both sides are drawn).
        near: Near-plane depth used with ``perspective_correct`` (see above).
        chunk_size: Approximate number of candidate (face, pixel) pairs handled at once.

    Returns:
        Tuple ``(face_index, bary)``:

        * ``face_index``: ``[H, W]`` long, the winning face per pixel, ``-1`` where empty.
        * ``bary``: ``[H, W, 3]`` barycentric weights of the winning face's three corners
          (summing to 1), zeros where empty. Float dtype of ``verts_2d`` (float32 otherwise).
    """
    if verts_2d.dim() != 2 or verts_2d.shape[1] != 2:
        raise ValueError(f"verts_2d must have shape [V, 2], got {tuple(verts_2d.shape)}")
    num_verts = verts_2d.shape[0]
    faces = _check_faces(faces, num_verts)
    if depth is not None and tuple(depth.shape) != (num_verts,):
        raise ValueError(f"depth must have shape [{num_verts}], got {tuple(depth.shape)}")
    height, width = int(height), int(width)
    if height < 0 or width < 0:
        raise ValueError(f"image size must be non-negative, got {height}x{width}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device = verts_2d.device
    out_dtype = verts_2d.dtype if verts_2d.is_floating_point() else torch.float32
    num_pix = height * width

    big = torch.iinfo(torch.long).max
    zbuf = torch.full((num_pix,), math.inf, dtype=torch.float64, device=device)
    fbuf = torch.full((num_pix,), big, dtype=torch.long, device=device)
    bbuf = torch.zeros(num_pix, 3, dtype=torch.float64, device=device)

    def finish() -> Tuple[Tensor, Tensor]:
        face_index = torch.where(fbuf == big, torch.full_like(fbuf, -1), fbuf)
        return face_index.view(height, width), bbuf.to(out_dtype).view(height, width, 3)

    if faces.shape[0] == 0 or num_pix == 0:
        return finish()

    xy = verts_2d.detach().to(torch.float64)
    tri = xy[faces]  # [F, 3, 2]
    valid = torch.isfinite(tri).all(dim=2).all(dim=1)
    zf = None
    if depth is not None:
        zf = depth.detach().to(device=device, dtype=torch.float64)[faces]  # [F, 3]
        valid &= torch.isfinite(zf).all(dim=1)
        if perspective_correct:
            valid &= (zf > near).all(dim=1)
    e1 = tri[:, 1] - tri[:, 0]
    e2 = tri[:, 2] - tri[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    valid &= area2 != 0
    if cull_backfaces:
        # Positive signed area in y-down pixel coordinates = clockwise on screen = back facing.
        valid &= area2 < 0

    # Pixel bounding boxes: columns j with xmin <= j + 0.5 <= xmax, rows likewise.
    lo = tri.amin(dim=1)
    hi = tri.amax(dim=1)
    limits = torch.tensor([width, height], dtype=torch.float64, device=device)
    box0 = torch.ceil(lo - 0.5).clamp(min=torch.zeros_like(limits), max=limits)
    box1 = torch.floor(hi - 0.5).clamp(min=-torch.ones_like(limits), max=limits - 1)
    box0 = torch.nan_to_num(box0).long()
    box1 = torch.nan_to_num(box1).long()
    valid &= (box1 >= box0).all(dim=1)

    face_ids = torch.nonzero(valid).squeeze(1)
    if face_ids.numel() == 0:
        return finish()
    fv = faces[face_ids]
    orientation = torch.sign(area2[face_ids])
    table = _face_edge_table(xy, fv, orientation)
    if zf is not None:
        zc = zf[face_ids]
        table = torch.cat([table, 1.0 / zc if perspective_correct else zc], dim=1)
    bx0, by0 = box0[face_ids, 0], box0[face_ids, 1]
    bw = box1[face_ids, 0] - bx0 + 1
    bh = box1[face_ids, 1] - by0 + 1

    # Split every face's box into row strips of at most ~chunk_size pixels ("pieces").
    rows_per_piece = torch.clamp(chunk_size // bw, min=1)
    n_pieces = (bh + rows_per_piece - 1) // rows_per_piece
    piece_face = torch.repeat_interleave(torch.arange(face_ids.numel(), device=device), n_pieces)
    piece_start = torch.cumsum(n_pieces, 0) - n_pieces
    piece_k = torch.arange(piece_face.numel(), device=device) - piece_start[piece_face]
    piece_y0 = by0[piece_face] + piece_k * rows_per_piece[piece_face]
    piece_rows = torch.minimum(rows_per_piece[piece_face], by0[piece_face] + bh[piece_face] - piece_y0)
    piece_count = piece_rows * bw[piece_face]
    piece_offset = torch.cumsum(piece_count, 0) - piece_count
    chunk_of_piece = piece_offset // chunk_size
    _, pieces_per_chunk = torch.unique_consecutive(chunk_of_piece, return_counts=True)

    # Per-edge row tables [Fv, 5] (row gathers are much faster than column gathers).
    edge_tabs = [table[:, 5 * e : 5 * e + 5].contiguous() for e in range(3)]
    z_tab = table[:, 15:18].contiguous() if zf is not None else None
    start = 0
    for n in pieces_per_chunk.tolist():
        pieces = torch.arange(start, start + n, device=device)
        start += n
        counts = piece_count[pieces]
        total = int(counts.sum())
        pair_piece = torch.repeat_interleave(pieces, counts, output_size=total)
        local = torch.arange(total, device=device) - (piece_offset[pair_piece] - piece_offset[start - n])
        pair_face = piece_face.index_select(0, pair_piece)
        width_f = bw.index_select(0, pair_face)
        dy = torch.div(local, width_f, rounding_mode="floor")
        px = bx0.index_select(0, pair_face) + (local - dy * width_f)
        py = piece_y0.index_select(0, pair_piece) + dy
        cx = px.to(torch.float64) + 0.5
        cy = py.to(torch.float64) + 0.5
        # Edge by edge, keeping only the pairs still inside (most candidates fail early).
        keep = torch.arange(total, device=device)
        ws = []
        for e in range(3):
            d = edge_tabs[e].index_select(0, pair_face)  # [M, 5]: ox, oy, ex, ey, owned
            w = d[:, 2] * (cy - d[:, 1]) - d[:, 3] * (cx - d[:, 0])
            ok = torch.nonzero((w > 0) | ((w == 0) & (d[:, 4] > 0))).squeeze(1)
            ws = [x.index_select(0, ok) for x in ws] + [w.index_select(0, ok)]
            keep, pair_face = keep.index_select(0, ok), pair_face.index_select(0, ok)
            cx, cy = cx.index_select(0, ok), cy.index_select(0, ok)
        if keep.numel() == 0:
            continue
        w = torch.stack(ws, dim=1)
        bary = w / w.sum(dim=1, keepdim=True)
        pix = py.index_select(0, keep) * width + px.index_select(0, keep)
        fid = face_ids.index_select(0, pair_face)
        if z_tab is None:
            z = torch.zeros(keep.numel(), dtype=torch.float64, device=device)
        else:
            zdata = z_tab.index_select(0, pair_face)
            if perspective_correct:
                q = bary * zdata  # zdata holds 1 / z here
                qs = q.sum(dim=1, keepdim=True)
                bary = q / qs
                z = 1.0 / qs.squeeze(1)
            else:
                z = (bary * zdata).sum(dim=1)

        # Merge into the z-buffer; ties keep the smallest face index.
        zold = zbuf.clone()
        zbuf.scatter_reduce_(0, pix, z, reduce="amin")
        win = z == zbuf[pix]
        pix_w, fid_w = pix[win], fid[win]
        cand = torch.full_like(fbuf, big).scatter_reduce_(0, pix_w, fid_w, reduce="amin")
        touched = cand != big
        tie = touched & (zold == zbuf)
        fbuf = torch.where(tie, torch.minimum(fbuf, cand), torch.where(touched, cand, fbuf))
        own = fid_w == fbuf[pix_w]
        bbuf[pix_w[own]] = bary[win][own]
    return finish()


def project_points(points: Tensor, K: Tensor, w2c: Tensor, eps: float = 1e-8) -> Tuple[Tensor, Tensor]:
    """Project world points into an OpenCV pinhole camera.

    Args:
        points: World points ``[..., N, 3]``.
        K: Pixel-space intrinsics ``[..., 3, 3]`` (last row ``[0, 0, 1]``).
        w2c: World-to-camera transforms ``[..., 4, 4]``.
        eps: Depths with ``|z| < eps`` are replaced by ``eps`` in the division.

    Returns:
        Tuple ``(uv, z)``: pixel coordinates ``[..., N, 2]`` (x right, y down; pixel centres at
        half-integers) and camera depths ``[..., N]``.
    """
    if points.shape[-1] != 3:
        raise ValueError(f"points must have shape [..., N, 3], got {tuple(points.shape)}")
    R = w2c[..., :3, :3]
    t = w2c[..., :3, 3]
    cam = points @ R.transpose(-1, -2) + t.unsqueeze(-2)
    z = cam[..., 2]
    z_safe = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    pix = cam @ K.transpose(-1, -2)
    uv = pix[..., :2] / z_safe.unsqueeze(-1)
    return uv, z


def interpolate(
    attr: Tensor, faces: Optional[Tensor], face_index: Tensor, bary: Tensor
) -> Tensor:
    """Interpolate vertex or face-corner attributes with rasterized barycentrics.

    Differentiable with respect to ``attr`` and ``bary``.

    Args:
        attr: Per-vertex attributes ``[V, C]`` or ``[B, V, C]`` (with ``faces``), or per-corner
            attributes ``[F, 3, C]`` (with ``faces=None``).
        faces: Vertex indices ``[F, 3]``, or ``None`` for per-corner ``attr``.
        face_index: Face per pixel ``[...]`` (e.g. ``[H, W]``), ``-1`` where empty.
        bary: Barycentric weights ``[..., 3]`` matching ``face_index``.

    Returns:
        ``[..., C]`` (or ``[B, ..., C]`` for batched ``attr``), zeros where ``face_index < 0``.
    """
    if tuple(bary.shape) != tuple(face_index.shape) + (3,):
        raise ValueError(
            f"bary must have shape {tuple(face_index.shape) + (3,)}, got {tuple(bary.shape)}"
        )
    valid = face_index >= 0
    fi = face_index[valid]
    w = bary[valid].to(attr.dtype)  # [M, 3]
    if faces is None:
        if attr.dim() != 3 or attr.shape[1] != 3:
            raise ValueError(f"per-corner attr must have shape [F, 3, C], got {tuple(attr.shape)}")
        corner = attr[fi]  # [M, 3, C]
        vals = (corner * w.unsqueeze(-1)).sum(dim=-2)
        out = attr.new_zeros(tuple(face_index.shape) + (attr.shape[-1],))
        return out.index_put((valid,), vals)
    if attr.dim() not in (2, 3):
        raise ValueError(f"attr must have shape [V, C] or [B, V, C], got {tuple(attr.shape)}")
    faces = _check_faces(faces, attr.shape[-2])
    corner = attr[..., faces[fi], :]  # [(B,) M, 3, C]
    vals = (corner * w.unsqueeze(-1)).sum(dim=-2)  # [(B,) M, C]
    if attr.dim() == 2:
        out = attr.new_zeros(tuple(face_index.shape) + (attr.shape[-1],))
        return out.index_put((valid,), vals)
    batch = attr.shape[0]
    out = attr.new_zeros((batch,) + tuple(face_index.shape) + (attr.shape[-1],))
    flat = out.view(batch, -1, attr.shape[-1])
    idx = torch.nonzero(valid.reshape(-1)).squeeze(1)
    flat = flat.index_copy(1, idx, vals)
    return flat.view_as(out)


def render_mesh_attributes(
    verts_world: Tensor,
    faces: Tensor,
    K: Tensor,
    w2c: Tensor,
    height: int,
    width: int,
    cull_backfaces: bool = False,
    near: float = 0.0,
) -> Dict[str, Tensor]:
    """Rasterize a world-space mesh into one OpenCV camera.

    Args:
        verts_world: Vertices ``[V, 3]`` in world coordinates.
        faces: Vertex indices ``[F, 3]``.
        K: Pixel-space intrinsics ``[3, 3]``.
        w2c: World-to-camera transform ``[4, 4]``.
        height: Image height ``H``.
        width: Image width ``W``.
        cull_backfaces: See :func:`rasterize_triangles`.
        near: Faces with a vertex at camera depth ``<= near`` are skipped.

    Returns:
        Dict with ``face_index [H, W]`` (long, -1 empty), ``bary [H, W, 3]`` (perspective
        correct), ``depth [H, W]`` (camera z, 0 where empty; differentiable w.r.t.
        ``verts_world`` through the interpolated depth values) and ``mask [H, W]`` (bool).
    """
    uv, z = project_points(verts_world, K, w2c)
    face_index, bary = rasterize_triangles(
        uv, z, faces, height, width, perspective_correct=True, cull_backfaces=cull_backfaces, near=near
    )
    depth = interpolate(z.unsqueeze(-1), faces, face_index, bary).squeeze(-1)
    return {"face_index": face_index, "bary": bary, "depth": depth, "mask": face_index >= 0}


# --------------------------------------------------------------------------------------------------
# UV position maps
# --------------------------------------------------------------------------------------------------


def uv_rasterize(vt: Tensor, ft: Tensor, size: int) -> Tuple[Tensor, Tensor]:
    """Rasterize a mesh's UV layout into an ``S x S`` texel grid.

    Texel (row ``r``, column ``c``) is sampled at ``u = (c + 0.5) / S``, ``v = 1 - (r + 0.5) / S``
    (OBJ convention, ``v`` up). Overlapping UV faces resolve to the smaller face index. Face ``k``
    of ``ft`` is the UV image of face ``k`` of the mesh's vertex faces, so the result indexes
    both.

    Args:
        vt: UV coordinates ``[T, 2]`` in ``[0, 1]``.
        ft: UV-coordinate indices per face ``[F, 3]``.
        size: Texel grid side ``S``.

    Returns:
        Tuple ``(face_index [S, S] long (-1 = no face), bary [S, S, 3])``.
    """
    if vt.dim() != 2 or vt.shape[1] != 2:
        raise ValueError(f"vt must have shape [T, 2], got {tuple(vt.shape)}")
    size = int(size)
    pix = torch.stack([vt[:, 0] * size, (1.0 - vt[:, 1]) * size], dim=1)
    return rasterize_triangles(pix, None, ft, size, size, perspective_correct=False)


def position_map(verts: Tensor, faces: Tensor, uv_raster: Tuple[Tensor, Tensor]) -> Tensor:
    """Gather per-vertex values (positions, skinning weights, ...) into a UV map.

    Differentiable with respect to ``verts``.

    Args:
        verts: Per-vertex values ``[B, V, C]`` or ``[V, C]`` (e.g. posed positions, ``C = 3``).
        faces: Vertex indices ``[F, 3]`` (same face order as the UV faces rasterized).
        uv_raster: ``(face_index [S, S], bary [S, S, 3])`` from :func:`uv_rasterize`.

    Returns:
        ``[B, S, S, C]`` (or ``[S, S, C]``), zeros at texels no face covers.
    """
    face_index, bary = uv_raster
    return interpolate(verts, faces, face_index, bary)


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


def _corners(verts: Tensor, faces: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    faces = _check_faces(faces, verts.shape[-2])
    return verts[..., faces[:, 0], :], verts[..., faces[:, 1], :], verts[..., faces[:, 2], :]


def face_normals(verts: Tensor, faces: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit face normals by the right-hand rule ``(v1 - v0) x (v2 - v0)``.

    Args:
        verts: Vertices ``[..., V, 3]``.
        faces: Vertex indices ``[F, 3]``.
        eps: Lower bound on the norm in the normalisation (degenerate faces give zeros).

    Returns:
        ``[..., F, 3]`` unit normals.
    """
    v0, v1, v2 = _corners(verts, faces)
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp(min=eps)


def face_areas(verts: Tensor, faces: Tensor) -> Tensor:
    """Triangle areas.

    Args:
        verts: Vertices ``[..., V, 3]``.
        faces: Vertex indices ``[F, 3]``.

    Returns:
        ``[..., F]`` areas.
    """
    v0, v1, v2 = _corners(verts, faces)
    return 0.5 * torch.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1)


def vertex_normals(verts: Tensor, faces: Tensor, eps: float = 1e-12) -> Tensor:
    """Area-weighted, normalised vertex normals.

    Each vertex sums the unnormalised normals ``(v1 - v0) x (v2 - v0)`` (length = twice the
    area) of its faces, then the sum is normalised.

    Args:
        verts: Vertices ``[..., V, 3]`` (optionally batched, ``[B, V, 3]``).
        faces: Vertex indices ``[F, 3]``.
        eps: Lower bound on the norm in the normalisation (isolated vertices give zeros).

    Returns:
        ``[..., V, 3]`` unit normals.
    """
    faces = _check_faces(faces, verts.shape[-2])
    v0, v1, v2 = _corners(verts, faces)
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    acc = torch.zeros_like(verts)
    for k in range(3):
        acc = acc.index_add(-2, faces[:, k], n)
    return acc / acc.norm(dim=-1, keepdim=True).clamp(min=eps)


def _unique_edges(faces: Tensor, num_verts: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Unique undirected edges and each face's edge ids.

    Returns:
        ``(edges [E, 2]`` with ``edges[:, 0] < edges[:, 1]``, sorted lexicographically,
        ``face_edge [F, 3]`` giving the edge of corner pairs (0, 1), (1, 2), (2, 0)).
    """
    faces = faces.long()
    if faces.numel() == 0:
        empty = faces.new_zeros(0, 2)
        return empty, faces.new_zeros(faces.shape[0], 3)
    n = int(faces.max()) + 1 if num_verts is None else int(num_verts)
    pairs = torch.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=1)  # [F, 3, 2]
    pairs = pairs.sort(dim=-1).values.reshape(-1, 2)
    key = pairs[:, 0] * n + pairs[:, 1]
    uniq, inverse = torch.unique(key, return_inverse=True)
    edge_list = torch.stack([torch.div(uniq, n, rounding_mode="floor"), uniq % n], dim=1)
    return edge_list, inverse.view(-1, 3)


def edges(faces: Tensor) -> Tensor:
    """Unique undirected edges of a triangle mesh.

    Args:
        faces: Vertex indices ``[F, 3]``.

    Returns:
        ``[E, 2]`` long, each row ``(i, j)`` with ``i < j``, rows sorted lexicographically.
    """
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3], got {tuple(faces.shape)}")
    return _unique_edges(faces)[0]


def subdivide_attributes(attr: Tensor, edge_list: Tensor) -> Tensor:
    """Carry per-vertex attributes through a midpoint subdivision.

    Args:
        attr: Per-vertex values ``[..., V, C]`` of the coarse mesh.
        edge_list: ``[E, 2]`` parent vertex pairs (``Subdivision.edges``).

    Returns:
        ``[..., V + E, C]``: the original rows followed by the mean of each edge's endpoints.
    """
    mid = 0.5 * (attr[..., edge_list[:, 0], :] + attr[..., edge_list[:, 1], :])
    return torch.cat([attr, mid], dim=-2)


AttrsLike = Union[None, Tensor, Mapping[str, Tensor]]


class Subdivision(NamedTuple):
    """Result of :func:`subdivide`.

    Attributes:
        verts: ``[..., V + E, 3]`` vertices: the originals, then one midpoint per edge.
        faces: ``[4F, 3]`` faces; the children of coarse face ``f`` are rows ``4f .. 4f+3``
            (corner ``a`` child, corner ``b`` child, corner ``c`` child, centre), each with the
            parent's winding. The layout depends only on the face order, so subdividing
            ``(vt, ft)`` separately gives UV faces matching these faces one to one.
        edges: ``[E, 2]`` parent vertex pairs; new vertex ``V + e`` is the midpoint of edge ``e``.
        attrs: The ``attrs`` argument carried along (same structure), or ``None``.
    """

    verts: Tensor
    faces: Tensor
    edges: Tensor
    attrs: AttrsLike

    def apply(self, attr: Tensor) -> Tensor:
        """Carry another per-vertex attribute through this subdivision.

        Args:
            attr: ``[..., V, C]`` values on the coarse vertices.

        Returns:
            ``[..., V + E, C]`` values on the subdivided vertices.
        """
        return subdivide_attributes(attr, self.edges)


def subdivide(verts: Tensor, faces: Tensor, attrs: AttrsLike = None) -> Subdivision:
    """1-to-4 midpoint subdivision with shared edge midpoints (no smoothing).

    Every edge gets one new vertex at its midpoint, shared by the faces on both sides, so the
    result has ``V + E`` vertices and ``4F`` faces. Per-vertex attributes (skinning weights,
    colours, UVs of a seamless layout) are carried along by averaging the two endpoints.

    Args:
        verts: Vertices ``[..., V, 3]`` (optionally batched).
        faces: Vertex indices ``[F, 3]``.
        attrs: ``None``, a per-vertex tensor ``[..., V, C]``, or a mapping of such tensors.

    Returns:
        A :class:`Subdivision` ``(verts, faces, edges, attrs)``.
    """
    num_verts = verts.shape[-2]
    faces = _check_faces(faces, num_verts)
    edge_list, face_edge = _unique_edges(faces, num_verts)
    new_verts = subdivide_attributes(verts, edge_list)
    a, b, c = faces.unbind(1)
    m_ab, m_bc, m_ca = (num_verts + face_edge).unbind(1)
    new_faces = torch.stack(
        [
            torch.stack([a, m_ab, m_ca], dim=1),
            torch.stack([m_ab, b, m_bc], dim=1),
            torch.stack([m_ca, m_bc, c], dim=1),
            torch.stack([m_ab, m_bc, m_ca], dim=1),
        ],
        dim=1,
    ).reshape(-1, 3)

    def carry(x: Tensor, name: str) -> Tensor:
        if x.dim() < 2 or x.shape[-2] != num_verts:
            raise ValueError(f"attribute {name} must have shape [..., {num_verts}, C], got {tuple(x.shape)}")
        return subdivide_attributes(x, edge_list)

    new_attrs: AttrsLike
    if attrs is None:
        new_attrs = None
    elif isinstance(attrs, Tensor):
        new_attrs = carry(attrs, "attrs")
    else:
        new_attrs = {k: carry(v, k) for k, v in attrs.items()}
    return Subdivision(new_verts, new_faces, edge_list, new_attrs)


def uniform_laplacian(
    faces: Tensor,
    num_verts: int,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Uniform ("umbrella") graph Laplacian ``L = I - D^-1 A`` of a mesh's edge graph.

    ``(L x)_i = x_i - mean_{j in N(i)} x_j``; rows of isolated vertices are zero.

    Args:
        faces: Vertex indices ``[F, 3]``.
        num_verts: Number of vertices ``V``.
        dtype: Value dtype.
        device: Device (defaults to that of ``faces``).

    Returns:
        Sparse COO ``[V, V]`` (coalesced).
    """
    faces = _check_faces(faces, num_verts)
    device = faces.device if device is None else device
    e = _unique_edges(faces, num_verts)[0].to(device)
    rows = torch.cat([e[:, 0], e[:, 1]])
    cols = torch.cat([e[:, 1], e[:, 0]])
    deg = torch.bincount(rows, minlength=num_verts).to(dtype)
    has = torch.nonzero(deg > 0).squeeze(1)
    diag = torch.stack([has, has])
    idx = torch.cat([diag, torch.stack([rows, cols])], dim=1)
    val = torch.cat([torch.ones(has.numel(), dtype=dtype, device=device), -1.0 / deg[rows]])
    return torch.sparse_coo_tensor(idx, val, (num_verts, num_verts), check_invariants=False).coalesce()


def sample_surface(
    verts: Tensor, faces: Tensor, n: int, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """Sample points uniformly by area on a triangle mesh.

    Faces are drawn with probability proportional to their area; points are uniform within a
    face (``s = sqrt(r1)``, ``bary = (1 - s, s (1 - r2), s r2)``). Differentiable w.r.t. ``verts``
    for fixed samples.

    Args:
        verts: Vertices ``[V, 3]``.
        faces: Vertex indices ``[F, 3]``.
        n: Number of samples.
        generator: Optional ``torch.Generator`` on ``verts``' device.

    Returns:
        Tuple ``(points [n, 3], face_idx [n] long, bary [n, 3])``.
    """
    if verts.dim() != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape [V, 3], got {tuple(verts.shape)}")
    faces = _check_faces(faces, verts.shape[0])
    areas = face_areas(verts.detach(), faces).to(torch.float64)
    if faces.shape[0] == 0 or not bool(areas.sum() > 0):
        raise ValueError("cannot sample a mesh with zero total area")
    face_idx = torch.multinomial(areas, int(n), replacement=True, generator=generator)
    r = torch.rand(int(n), 2, generator=generator, device=verts.device, dtype=verts.dtype)
    s = r[:, 0].sqrt()
    bary = torch.stack([1.0 - s, s * (1.0 - r[:, 1]), s * r[:, 1]], dim=1)
    corners = verts[faces[face_idx]]  # [n, 3, 3]
    points = (corners * bary.unsqueeze(-1)).sum(dim=1)
    return points, face_idx, bary
