"""Tests for zoo.core.mesh: rasterizer against a brute-force oracle, UV maps, geometry helpers."""

import math

import pytest
import torch

from zoo.core import mesh


# --------------------------------------------------------------------------------------------------
# Fixtures and oracles
# --------------------------------------------------------------------------------------------------


def uv_sphere(n_lat: int = 12, n_lon: int = 16, radius: float = 1.0):
    """Closed UV sphere with outward (right-hand rule) winding: vertices [V, 3], faces [F, 3]."""
    theta = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)[1:-1]
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.cos(), -t.sin() * p.sin()], -1).reshape(-1, 3)
    verts = torch.cat([ring, torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)]) * radius
    rings = n_lat - 1
    top, bottom = rings * n_lon, rings * n_lon + 1

    def idx(i, j):
        return i * n_lon + j % n_lon

    faces = []
    for i in range(rings - 1):
        for j in range(n_lon):
            faces.append([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)])
            faces.append([idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)])
    for j in range(n_lon):
        faces.append([top, idx(0, j), idx(0, j + 1)])
        faces.append([bottom, idx(rings - 1, j + 1), idx(rings - 1, j)])
    faces = torch.tensor(faces)
    # Make the winding outward whatever the parametrisation's handedness.
    n = mesh.face_normals(verts, faces)
    centroid = verts[faces].mean(1)
    flip = (n * centroid).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return verts, faces


def cube():
    """Unit cube [-1, 1]^3 with 12 outward-wound triangles."""
    verts = torch.tensor(
        [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)], dtype=torch.float64
    )
    quads = [
        (0, 1, 3, 2),  # x = -1
        (4, 6, 7, 5),  # x = +1
        (0, 4, 5, 1),  # y = -1
        (2, 3, 7, 6),  # y = +1
        (0, 2, 6, 4),  # z = -1
        (1, 5, 7, 3),  # z = +1
    ]
    faces = []
    for a, b, c, d in quads:
        faces += [[a, b, c], [a, c, d]]
    return verts, torch.tensor(faces)


def grid_mesh(nx: int, ny: int, x0: float = 0.0, y0: float = 0.0, step: float = 1.0, flip_mask=None, diag_mask=None):
    """Planar grid of (nx+1) x (ny+1) vertices in the z = 0 plane; 2 triangles per cell."""
    xs = x0 + step * torch.arange(nx + 1, dtype=torch.float64)
    ys = y0 + step * torch.arange(ny + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    verts = torch.stack([gx, gy, torch.zeros_like(gx)], -1).reshape(-1, 3)
    faces = []
    for i in range(ny):
        for j in range(nx):
            a, b = i * (nx + 1) + j, i * (nx + 1) + j + 1
            c, d = a + nx + 1, b + nx + 1
            cell = len(faces) // 2
            if diag_mask is not None and diag_mask[cell]:
                tris = [[a, b, c], [b, d, c]]
            else:
                tris = [[a, b, d], [a, d, c]]
            faces += tris
    faces = torch.tensor(faces)
    if flip_mask is not None:
        faces[flip_mask] = faces[flip_mask][:, [0, 2, 1]]
    return verts, faces


def oracle_raster(verts_2d, depth, faces, height, width, perspective_correct=True):
    """Brute force over all (pixel, face) pairs in float64 with the textbook formulas.

    Returns (face_index [H, W], bary [H, W, 3], ambiguous [H, W]) where ambiguous marks pixels
    whose centre lies within 1e-9 of a candidate face's edge or whose two best depths are within
    1e-9 (exact ties, where any consistent rule may differ).
    """
    v = verts_2d.double()
    jj, ii = torch.meshgrid(torch.arange(width), torch.arange(height), indexing="xy")
    px = (jj.reshape(-1, 1).double() + 0.5)
    py = (ii.reshape(-1, 1).double() + 0.5)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    def edge(p, q):
        return (q[:, 0] - p[:, 0]) * (py - p[:, 1]) - (q[:, 1] - p[:, 1]) * (px - p[:, 0])

    w = torch.stack([edge(b, c), edge(c, a), edge(a, b)], -1) / area2[:, None]  # [P, F, 3]
    lengths = torch.stack([(c - b).norm(dim=-1), (a - c).norm(dim=-1), (b - a).norm(dim=-1)], -1)
    dist_to_edge = (w * area2.abs()[:, None] / lengths).abs()  # w_i * 2A / |edge| = distance
    inside = (w >= 0).all(-1)
    near_edge = ((w >= -1e-9).all(-1) & (dist_to_edge < 1e-9).any(-1)).any(-1)
    if depth is None:
        z = torch.zeros(w.shape[:2], dtype=torch.float64)
        bary = w
    else:
        zf = depth.double()[faces]  # [F, 3]
        if perspective_correct:
            q = w / zf
            bary = q / q.sum(-1, keepdim=True)
            z = 1.0 / q.sum(-1)
        else:
            bary = w
            z = (w * zf).sum(-1)
    z = torch.where(inside, z, torch.full_like(z, math.inf))
    zs, order = z.sort(dim=1)
    best = order[:, 0]
    hit = torch.isfinite(zs[:, 0])
    tie = hit & (zs[:, 1] - zs[:, 0] < 1e-9) if z.shape[1] > 1 else torch.zeros_like(hit)
    face_index = torch.where(hit, best, torch.full_like(best, -1))
    bsel = bary[torch.arange(bary.shape[0]), best] * hit[:, None]
    return (
        face_index.view(height, width),
        bsel.view(height, width, 3),
        (near_edge | tie).view(height, width),
    )


def assert_matches_oracle(verts_2d, depth, faces, height, width, perspective_correct=True, **kw):
    fi, bary = mesh.rasterize_triangles(verts_2d, depth, faces, height, width, perspective_correct, **kw)
    ofi, obary, amb = oracle_raster(verts_2d, depth, faces, height, width, perspective_correct)
    assert fi.shape == (height, width) and bary.shape == (height, width, 3)
    assert fi.dtype == torch.long
    ok = ~amb
    assert amb.float().mean() < 0.01  # exact ties are rare in these scenes
    assert torch.equal(fi[ok], ofi[ok])
    assert torch.allclose(bary[ok].double(), obary[ok], atol=1e-5)
    covered = fi >= 0
    assert torch.allclose(bary[covered].sum(-1), torch.ones_like(bary[covered][:, 0]), atol=1e-6)
    assert (bary[~covered] == 0).all()
    return fi, bary


# --------------------------------------------------------------------------------------------------
# Rasterizer
# --------------------------------------------------------------------------------------------------


def test_random_triangles_match_bruteforce_oracle():
    g = torch.Generator().manual_seed(0)
    n_faces, height, width = 40, 37, 53
    centers = torch.rand(n_faces, 1, 2, generator=g) * torch.tensor([width, height]) * 1.2 - 4
    verts_2d = (centers + (torch.rand(n_faces, 3, 2, generator=g) - 0.5) * 24).reshape(-1, 2)
    depth = 1.0 + 4.0 * torch.rand(n_faces * 3, generator=g)  # per-vertex: faces interpenetrate
    faces = torch.arange(n_faces * 3).view(n_faces, 3)
    fi, _ = assert_matches_oracle(verts_2d, depth, faces, height, width, True)
    assert (fi >= 0).float().mean() > 0.3
    # Both windings occur and are drawn.
    a, b, c = verts_2d[faces[:, 0]], verts_2d[faces[:, 1]], verts_2d[faces[:, 2]]
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    drawn = torch.unique(fi[fi >= 0])
    assert (cross[drawn] > 0).any() and (cross[drawn] < 0).any()
    # Linear (orthographic) depth interpolation against the oracle too.
    assert_matches_oracle(verts_2d, depth, faces, height, width, False)
    # Small chunks (many pieces and strips) give the same result.
    fi_small, bary_small = mesh.rasterize_triangles(verts_2d, depth, faces, height, width, chunk_size=7)
    fi_big, bary_big = mesh.rasterize_triangles(verts_2d, depth, faces, height, width)
    assert torch.equal(fi_small, fi_big) and torch.equal(bary_small, bary_big)


def test_projected_sphere_matches_oracle_and_culling():
    verts, faces = uv_sphere(10, 14)
    K = torch.tensor([[60.0, 0, 32.0], [0, 60.0, 30.0], [0, 0, 1]], dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64)
    angle = 0.3
    w2c[:3, :3] = torch.tensor(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]],
        dtype=torch.float64,
    )
    w2c[2, 3] = 3.5
    uv, z = mesh.project_points(verts, K, w2c)
    fi, _ = assert_matches_oracle(uv, z, faces, 60, 64, True)
    # The nearer (front) half of a convex closed surface wins everywhere: culling back faces
    # changes nothing, and culling keeps only faces whose normals point at the camera.
    fi_cull, _ = mesh.rasterize_triangles(uv, z, faces, 60, 64, cull_backfaces=True)
    assert torch.equal(fi, fi_cull)
    n_cam = mesh.face_normals(verts @ w2c[:3, :3].T + w2c[:3, 3], faces)
    drawn = torch.unique(fi[fi >= 0])
    centres_cam = (verts @ w2c[:3, :3].T + w2c[:3, 3])[faces[drawn]].mean(1)
    assert ((n_cam[drawn] * centres_cam).sum(-1) < 0).all()


def test_watertight_no_cracks_no_double_coverage():
    # Grid vertices sit on pixel centres, so many centres lie exactly on edges and vertices.
    g = torch.Generator().manual_seed(1)
    nx, ny = 6, 5
    flips = torch.rand(2 * nx * ny, generator=g) < 0.5
    diags = torch.rand(nx * ny, generator=g) < 0.5
    verts, faces = grid_mesh(nx, ny, x0=3.5, y0=2.5, step=3.0, flip_mask=flips, diag_mask=diags)
    height, width = 24, 26
    count = torch.zeros(height, width, dtype=torch.long)
    for f in range(faces.shape[0]):
        fi, _ = mesh.rasterize_triangles(verts[:, :2], None, faces[f : f + 1], height, width)
        count += (fi >= 0).long()
    rows = torch.arange(height).view(-1, 1) + 0.5
    cols = torch.arange(width).view(1, -1) + 0.5
    x1, y1 = 3.5 + 3.0 * nx, 2.5 + 3.0 * ny
    interior = (cols > 3.5) & (cols < x1) & (rows > 2.5) & (rows < y1)
    closed = (cols >= 3.5) & (cols <= x1) & (rows >= 2.5) & (rows <= y1)
    assert count.max() <= 1  # never double-covered, even on shared edges and vertices
    assert (count[interior] == 1).all()  # no cracks
    assert (count[~closed] == 0).all()
    # The full rasterization agrees and resolves each centre to its owning face.
    fi, bary = mesh.rasterize_triangles(verts[:, :2], None, faces, height, width)
    assert torch.equal(fi >= 0, count == 1)
    pts = mesh.interpolate(verts[:, :2].float(), faces, fi, bary)
    assert torch.allclose(pts[fi >= 0], torch.stack(torch.broadcast_tensors(cols, rows), -1)[fi >= 0].float(), atol=1e-5)


def test_single_triangle_area_and_pixel_convention():
    tri = torch.tensor([[10.2, 5.7], [90.3, 20.1], [30.9, 70.4]])
    faces = torch.tensor([[0, 1, 2]])
    fi, _ = mesh.rasterize_triangles(tri, None, faces, 80, 100)
    area = 0.5 * abs((tri[1, 0] - tri[0, 0]) * (tri[2, 1] - tri[0, 1]) - (tri[1, 1] - tri[0, 1]) * (tri[2, 0] - tri[0, 0]))
    perimeter = (tri - tri.roll(1, 0)).norm(dim=1).sum()
    count = (fi == 0).sum()
    assert abs(float(count) - float(area)) < 0.5 * float(perimeter)
    # Pixel (i, j) has its centre at (j + 0.5, i + 0.5): a tiny triangle around (7.5, 3.5)
    # covers exactly pixel row 3, column 7.
    small = torch.tensor([[7.4, 3.4], [7.6, 3.4], [7.5, 3.6]])
    fi, bary = mesh.rasterize_triangles(small, None, faces, 6, 10)
    assert torch.nonzero(fi >= 0).tolist() == [[3, 7]]
    # Centre (7.5, 3.5) = 0.25 a + 0.25 b + 0.5 c.
    assert torch.allclose(bary[3, 7], torch.tensor([0.25, 0.25, 0.5]), atol=1e-6)


def test_nearer_triangle_wins_and_ties_go_to_lower_index():
    verts = torch.tensor([[2.0, 2.0], [30.0, 2.0], [2.0, 30.0], [6.0, 6.0], [40.0, 6.0], [6.0, 40.0]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    overlap = (slice(8, 15), slice(8, 15))
    for near_face, z in ((0, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]), (1, [3.0, 3.0, 3.0, 2.0, 2.0, 2.0])):
        fi, _ = mesh.rasterize_triangles(verts, torch.tensor(z), faces, 48, 48)
        assert (fi[overlap] == near_face).all()
        # Swapping the face order does not change which surface is visible.
        fi_swapped, _ = mesh.rasterize_triangles(verts, torch.tensor(z), faces.flip(0), 48, 48)
        assert (fi_swapped[overlap] == 1 - near_face).all()
    fi, _ = mesh.rasterize_triangles(verts, None, faces.flip(0), 48, 48)
    assert (fi[overlap] == 0).all()
    # Intersecting triangles: the depth order flips along the intersection line.
    z = torch.tensor([1.0, 3.0, 1.0, 2.0, 2.0, 2.0])
    fi, _ = mesh.rasterize_triangles(verts, z, faces, 48, 48, perspective_correct=False)
    assert fi[10, 8] == 0 and fi[10, 20] == 1


def test_rasterizer_skips_bad_faces_and_validates_input():
    verts = torch.tensor([[1.0, 1.0], [9.0, 1.0], [1.0, 9.0], [5.0, 5.0]])
    # A degenerate face (repeated vertex) and a face behind the camera are skipped.
    faces = torch.tensor([[0, 1, 1], [0, 1, 2]])
    fi, _ = mesh.rasterize_triangles(verts, torch.tensor([1.0, 1.0, 1.0, 1.0]), faces, 10, 10)
    assert set(torch.unique(fi).tolist()) == {-1, 1}
    fi, _ = mesh.rasterize_triangles(verts, torch.tensor([1.0, 1.0, -1.0, 1.0]), faces, 10, 10)
    assert (fi == -1).all()
    fi, bary = mesh.rasterize_triangles(verts, None, faces[:0], 4, 5)
    assert fi.shape == (4, 5) and (fi == -1).all() and (bary == 0).all()
    with pytest.raises(ValueError, match="out of range"):
        mesh.rasterize_triangles(verts, None, torch.tensor([[0, 1, 7]]), 10, 10)
    with pytest.raises(ValueError, match=r"\[V, 2\]"):
        mesh.rasterize_triangles(verts[:, :1], None, faces, 10, 10)


# --------------------------------------------------------------------------------------------------
# Cameras and attribute rendering
# --------------------------------------------------------------------------------------------------


def test_project_points_hand_computed():
    K = torch.tensor([[100.0, 0.0, 50.0], [0.0, 80.0, 40.0], [0.0, 0.0, 1.0]])
    w2c = torch.eye(4)
    w2c[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    w2c[:3, 3] = torch.tensor([0.1, 0.0, 2.0])
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.4, 2.0]])
    uv, z = mesh.project_points(pts, K, w2c)
    # Camera points: (0.1, 0, 2) and (-0.4 + 0.1, 0.2, 4) = (-0.3, 0.2, 4).
    assert torch.allclose(z, torch.tensor([2.0, 4.0]))
    assert torch.allclose(uv, torch.tensor([[100 * 0.05 + 50, 40.0], [100 * -0.075 + 50, 80 * 0.05 + 40]]))
    # Batched cameras broadcast.
    uv_b, z_b = mesh.project_points(pts.expand(2, 2, 3), K.expand(2, 3, 3), w2c.expand(2, 4, 4))
    assert torch.allclose(uv_b[1], uv) and torch.allclose(z_b[0], z)


def test_render_mesh_attributes_perspective_correct_depth_and_bary():
    # A tilted quad: perspective-correct barycentrics reproduce the exact 3D point on each ray.
    verts = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 4.0], [1.0, 1.0, 4.0], [-1.0, 1.0, 2.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    K = torch.tensor([[40.0, 0, 32.0], [0, 40.0, 32.0], [0, 0, 1]], dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64)
    out = mesh.render_mesh_attributes(verts, faces, K, w2c, 64, 64)
    mask = out["mask"]
    assert mask.dtype == torch.bool and mask.sum() > 500
    pts = mesh.interpolate(verts, faces, out["face_index"], out["bary"].double())
    uv, z = mesh.project_points(pts[mask], K, w2c)
    ii, jj = torch.nonzero(mask, as_tuple=True)
    centres = torch.stack([jj + 0.5, ii + 0.5], -1).double()
    assert torch.allclose(uv, centres, atol=1e-4)
    assert torch.allclose(out["depth"][mask].double(), z, atol=1e-5)
    # The plane is z = 3 + x: depth along the ray through pixel centre (u, v) is
    # 3 / (1 - (u - cx) / fx).
    expected = 3.0 / (1.0 - (centres[:, 0] - 32.0) / 40.0)
    assert torch.allclose(out["depth"][mask].double(), expected, atol=1e-5)
    assert (out["depth"][~mask] == 0).all()
    # Screen-space (non perspective-correct) barycentrics miss the ray for a tilted plane.
    fi, bary = mesh.rasterize_triangles(*mesh.project_points(verts, K, w2c), faces, 64, 64, perspective_correct=False)
    pts_affine = mesh.interpolate(verts, faces, fi, bary.double())
    uv_affine, _ = mesh.project_points(pts_affine[mask], K, w2c)
    assert (uv_affine - centres).abs().max() > 0.1


def test_interpolate_vertex_and_corner_attributes_with_gradients():
    face_index = torch.tensor([[0, -1], [1, 0]])
    bary = torch.tensor([[[0.2, 0.3, 0.5], [0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2], [2, 3, 1]])
    attr = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]], requires_grad=True)
    out = mesh.interpolate(attr, faces, face_index, bary)
    expected = torch.tensor([[[0.2 + 0.6 + 1.5, 23.0], [0.0, 0.0]], [[3.0, 30.0], [3.0, 30.0]]])
    assert torch.allclose(out, expected)
    out[..., 0].sum().backward()
    # d/d attr[v, 0] = sum of the weights vertex v receives.
    assert torch.allclose(attr.grad[:, 0], torch.tensor([0.2, 0.3, 0.5 + 1.0 + 1.0, 0.0]))
    assert (attr.grad[:, 1] == 0).all()
    corner = torch.arange(12.0).view(2, 3, 2)
    out_c = mesh.interpolate(corner, None, face_index, bary)
    assert torch.allclose(out_c[0, 0], 0.2 * corner[0, 0] + 0.3 * corner[0, 1] + 0.5 * corner[0, 2])
    assert torch.allclose(out_c[1, 0], corner[1, 0])
    assert (out_c[0, 1] == 0).all()
    batched = mesh.interpolate(torch.stack([attr, 2 * attr]).detach(), faces, face_index, bary)
    assert batched.shape == (2, 2, 2, 2) and torch.allclose(batched[1], 2 * out.detach())


# --------------------------------------------------------------------------------------------------
# UV rasterization and position maps
# --------------------------------------------------------------------------------------------------


def test_uv_rasterize_square_covers_all_texels_and_reproduces_uv():
    vt = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    ft = torch.tensor([[0, 1, 2], [0, 2, 3]])
    size = 16
    fi, bary = mesh.uv_rasterize(vt, ft, size)
    assert fi.shape == (size, size) and (fi >= 0).all()
    # Texel (r, c) samples u = (c + 0.5) / S, v = 1 - (r + 0.5) / S (OBJ: v up, row 0 at v = 1).
    uv = mesh.interpolate(vt, ft, fi, bary)
    r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    assert torch.allclose(uv[..., 0], (c + 0.5) / size, atol=1e-6)
    assert torch.allclose(uv[..., 1], 1 - (r + 0.5) / size, atol=1e-6)
    # Face 0 (below the u = v diagonal) owns texels with u > v, i.e. r + c > S - 1; the texels
    # centred exactly on the shared diagonal (r + c = S - 1) go to exactly one face.
    below = r + c > size - 1
    on_diag = r + c == size - 1
    assert torch.equal((fi == 0) & ~on_diag, below)
    # Each face alone covers the same texels it owns in the full rasterization.
    fi_0, _ = mesh.uv_rasterize(vt, ft[:1], size)
    fi_1, _ = mesh.uv_rasterize(vt, ft[1:], size)
    assert torch.equal(fi_0 >= 0, fi == 0) and torch.equal(fi_1 >= 0, fi == 1)


def test_position_map_values_and_gradients():
    vt = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    ft = torch.tensor([[0, 1, 2], [0, 2, 3]])
    faces = torch.tensor([[4, 5, 6], [4, 6, 7]])  # the mesh's own (different) vertex indices
    raster = mesh.uv_rasterize(vt, ft, 8)
    verts = torch.randn(2, 8, 3, dtype=torch.float64, requires_grad=True)
    pmap = mesh.position_map(verts, faces, raster)
    assert pmap.shape == (2, 8, 8, 3)
    pmap[1].sum().backward()
    grad = verts.grad
    assert (grad[0] == 0).all() and (grad[1, :4] == 0).all()
    # Each of the 64 texels distributes weight 1 over its corners, per channel.
    assert torch.allclose(grad[1, 4:].sum(0), torch.full((3,), 64.0, dtype=torch.float64))
    # A position map of an affine function of the UVs is that function of the texel centres.
    uv3 = torch.cat([vt, torch.ones(4, 1)], 1).double()
    A = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [0.2, 0.1, 1.0]], dtype=torch.float64)
    lifted = torch.zeros(8, 3, dtype=torch.float64)
    lifted[4:] = uv3 @ A.T
    pm = mesh.position_map(lifted, faces, raster)
    r, c = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    tex_uv = torch.stack([(c + 0.5) / 8, 1 - (r + 0.5) / 8, torch.ones(8, 8)], -1).double()
    assert torch.allclose(pm, tex_uv @ A.T, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def test_cube_normals_point_outward():
    verts, faces = cube()
    fn = mesh.face_normals(verts, faces)
    centroid = verts[faces].mean(1)
    axis = torch.zeros_like(centroid)
    dominant = centroid.abs().argmax(1)
    axis[torch.arange(12), dominant] = centroid[torch.arange(12), dominant].sign()
    assert torch.allclose(fn, axis)
    vn = mesh.vertex_normals(verts, faces)
    assert torch.allclose(vn.norm(dim=-1), torch.ones(8, dtype=torch.float64))
    assert (torch.sign(vn) == torch.sign(verts)).all()
    # Batched vertices give per-batch normals.
    batch = torch.stack([verts, -verts])
    vnb = mesh.vertex_normals(batch, faces)
    # Negating every vertex leaves every cross product, hence every normal, unchanged.
    assert torch.allclose(vnb[0], vn) and torch.allclose(vnb[1], vn)


def test_sphere_vertex_normals_match_radial_direction():
    verts, faces = uv_sphere(16, 24, radius=2.0)
    vn = mesh.vertex_normals(verts, faces)
    radial = verts / verts.norm(dim=-1, keepdim=True)
    assert ((vn * radial).sum(-1) > 0.99).all()
    # Icosphere by repeated subdivision + projection.
    t = (1 + 5**0.5) / 2
    ico_v = torch.tensor(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64
    )
    ico_f = torch.tensor(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    )
    v, f = ico_v, ico_f
    for _ in range(2):
        sub = mesh.subdivide(v, f)
        v, f = sub.verts / sub.verts.norm(dim=-1, keepdim=True), sub.faces
    assert v.shape[0] == 162 and f.shape[0] == 320
    vn = mesh.vertex_normals(v, f)
    assert ((vn * v).sum(-1) > 0.995).all()


def test_subdivide_counts_midpoints_and_attributes():
    verts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0], [0.0, 0, 1]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    n_edges = mesh.edges(faces).shape[0]
    assert n_edges == 6
    weights = torch.eye(4, dtype=torch.float64)  # e.g. skinning weights
    colors = torch.rand(4, 3, dtype=torch.float64)
    sub = mesh.subdivide(verts, faces, attrs={"weights": weights, "colors": colors})
    assert sub.verts.shape == (4 + 6, 3) and sub.faces.shape == (16, 3)
    assert mesh.edges(sub.faces).shape[0] == 2 * 6 + 3 * 4
    assert torch.equal(sub.verts[:4], verts)
    for e, (i, j) in enumerate(sub.edges.tolist()):
        assert torch.allclose(sub.verts[4 + e], 0.5 * (verts[i] + verts[j]))
        assert torch.allclose(sub.attrs["weights"][4 + e], 0.5 * (weights[i] + weights[j]))
        assert torch.allclose(sub.attrs["colors"][4 + e], 0.5 * (colors[i] + colors[j]))
    assert torch.allclose(sub.apply(colors), sub.attrs["colors"])
    # Closed manifold stays closed: every edge has exactly two faces.
    e = torch.cat([sub.faces[:, [0, 1]], sub.faces[:, [1, 2]], sub.faces[:, [2, 0]]]).sort(1).values
    _, counts = torch.unique(e, dim=0, return_counts=True)
    assert (counts == 2).all()
    # Area and winding are preserved.
    assert torch.allclose(mesh.face_areas(sub.verts, sub.faces).sum(), mesh.face_areas(verts, faces).sum())
    child_n = mesh.face_normals(sub.verts, sub.faces).view(4, 4, 3)
    assert torch.allclose(child_n, mesh.face_normals(verts, faces)[:, None].expand(4, 4, 3))
    # Batched verts and a plain-tensor attribute.
    sub_b = mesh.subdivide(torch.stack([verts, 2 * verts]), faces, attrs=weights)
    assert torch.allclose(sub_b.verts[1], 2 * sub.verts) and torch.allclose(sub_b.attrs, sub.attrs["weights"])
    with pytest.raises(ValueError, match="attribute"):
        mesh.subdivide(verts, faces, attrs=torch.zeros(3, 2))


def test_subdivide_uv_faces_stay_aligned_with_vertex_faces():
    # A square whose UV layout numbers its corners differently (as across a UV seam):
    # vertex v0..v3 = (0,0), (1,0), (0,1), (1,1) and uv = position / 2, stored as vt1, vt2, vt3, vt0.
    verts, _ = grid_mesh(1, 1)
    faces = torch.tensor([[0, 1, 3], [0, 3, 2]])
    vt = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    ft = torch.tensor([[1, 2, 0], [1, 0, 3]])
    sub_v = mesh.subdivide(verts, faces)
    sub_t = mesh.subdivide(vt, ft)
    assert not torch.equal(sub_v.edges, sub_t.edges)  # edge numbering differs...
    # ...but child face k, corner c, is the same point in both: position = 2 * uv.
    pos = sub_v.verts[sub_v.faces][..., :2]
    tex = sub_t.verts[sub_t.faces]
    assert torch.allclose(pos, 2 * tex)


def test_uniform_laplacian_flat_grid_and_structure():
    verts, faces = grid_mesh(5, 4, step=0.5)
    L = mesh.uniform_laplacian(faces, verts.shape[0], dtype=torch.float64)
    assert L.is_sparse and L.shape == (30, 30)
    dense = L.to_dense()
    assert torch.allclose(dense.sum(1), torch.zeros(30, dtype=torch.float64))
    assert torch.allclose(dense.diagonal(), torch.ones(30, dtype=torch.float64))
    lx = torch.sparse.mm(L, verts)
    ij = torch.stack(torch.meshgrid(torch.arange(5), torch.arange(6), indexing="ij"), -1).reshape(-1, 2)
    interior = (ij[:, 0] > 0) & (ij[:, 0] < 4) & (ij[:, 1] > 0) & (ij[:, 1] < 5)
    assert torch.allclose(lx[interior], torch.zeros(int(interior.sum()), 3, dtype=torch.float64), atol=1e-12)
    assert lx[~interior].abs().sum(-1).min() > 0
    # Hand check at the corner vertex 0 of the first cell: neighbours 1, 6 and the diagonal 7.
    assert torch.allclose(dense[0, [1, 6, 7]], torch.full((3,), -1 / 3, dtype=torch.float64))
    # An isolated vertex has a zero row.
    L_iso = mesh.uniform_laplacian(faces, 31).to_dense()
    assert (L_iso[30] == 0).all()


def test_edges_unique_sorted():
    _, faces = cube()
    e = mesh.edges(faces)
    assert e.shape == (18, 2)  # 12 cube edges + 6 face diagonals
    assert (e[:, 0] < e[:, 1]).all()
    assert torch.equal(e, torch.unique(e, dim=0))


def test_sample_surface_area_weighted_and_differentiable():
    verts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0], [5.0, 0, 1], [8.0, 0, 1], [5.0, 2, 1]], requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])  # areas 0.5 and 3
    g = torch.Generator().manual_seed(0)
    pts, fidx, bary = mesh.sample_surface(verts, faces, 20000, generator=g)
    frac = (fidx == 1).float().mean()
    assert abs(float(frac) - 3 / 3.5) < 0.01
    assert (bary >= 0).all() and torch.allclose(bary.sum(-1), torch.ones(20000))
    assert torch.allclose(pts, (verts[faces[fidx]] * bary[..., None]).sum(1))
    # Uniform inside the triangle: the mean of face-0 samples is its centroid.
    assert torch.allclose(pts[fidx == 0].mean(0), torch.tensor([1 / 3, 1 / 3, 0.0]), atol=0.01)
    pts.sum().backward()
    assert torch.allclose(verts.grad.sum(0), torch.full((3,), 20000.0))
    g2 = torch.Generator().manual_seed(0)
    pts2, _, _ = mesh.sample_surface(verts, faces, 20000, generator=g2)
    assert torch.equal(pts.detach(), pts2.detach())
