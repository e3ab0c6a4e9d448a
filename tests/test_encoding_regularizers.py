"""Tests for zoo.core.encoding (frequency, hash grid, triplane, MLP) and zoo.core.regularizers."""

import math

import pytest
import torch

from zoo.core import regularizers as reg
from zoo.core.encoding import MLP, FrequencyEncoding, HashGridEncoding, Triplane
from zoo.core.mesh import uniform_laplacian


def random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def flat_grid(n: int):
    """n x n vertex grid in the z = 0 plane, two triangles per cell."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    verts = torch.stack([xs, ys, torch.zeros_like(xs)], -1).reshape(-1, 3)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]]
    interior = ((ys > 0) & (ys < n - 1) & (xs > 0) & (xs < n - 1)).reshape(-1)
    return verts, torch.tensor(faces), interior


# --------------------------------------------------------------------------------------------------
# Frequency encoding
# --------------------------------------------------------------------------------------------------


def test_frequency_encoding_hand_computed():
    enc = FrequencyEncoding(2, 2)
    assert enc.out_dim == 10
    x = torch.tensor([[0.5, -1.0]])
    s, c = math.sin, math.cos
    expected = torch.tensor(
        [[0.5, -1.0, s(0.5), s(-1.0), c(0.5), c(-1.0), s(1.0), s(-2.0), c(1.0), c(-2.0)]]
    )
    assert torch.allclose(enc(x), expected, atol=1e-6)
    enc_no = FrequencyEncoding(2, 2, include_input=False)
    assert enc_no.out_dim == 8 and torch.allclose(enc_no(x), expected[:, 2:], atol=1e-6)
    assert enc(torch.zeros(4, 5, 2)).shape == (4, 5, 10)
    with pytest.raises(ValueError, match="last dim"):
        enc(torch.zeros(3, 3))


# --------------------------------------------------------------------------------------------------
# Hash grid
# --------------------------------------------------------------------------------------------------


def test_hash_grid_levels_shapes_and_defaults():
    enc = HashGridEncoding()  # 3DGS-Avatar: 16 levels x 2 features, 2^16 table, 16 .. 2048
    assert enc.out_dim == 32
    b = math.exp((math.log(2048) - math.log(16)) / 15)
    expected = [math.floor(16 * b**lvl + 1e-6) for lvl in range(16)]
    assert enc.resolutions.tolist() == expected
    assert expected[0] == 16 and expected[-1] == 2048
    dense = [(n + 1) ** 3 <= 2**16 for n in expected]
    assert enc.hashed.tolist() == [not d for d in dense]
    assert enc.sizes.tolist() == [(n + 1) ** 3 if d else 2**16 for n, d in zip(expected, dense)]
    assert enc.embeddings.shape == (sum(enc.sizes.tolist()), 2)
    assert enc.embeddings.abs().max() <= 1e-4
    out = enc(torch.rand(4, 7, 3))
    assert out.shape == (4, 7, 32)


def test_hash_grid_dense_levels_are_exactly_trilinear():
    enc = HashGridEncoding(3, n_levels=2, n_features=2, log2_table_size=12, base_resolution=3,
                           max_resolution=7, bbox=(-1.0, 1.0)).double()
    assert enc.resolutions.tolist() == [3, 7] and not enc.hashed.any()
    with torch.no_grad():
        for lvl, n in enumerate(enc.resolutions.tolist()):
            k, j, i = torch.meshgrid(*(torch.arange(n + 1, dtype=torch.float64),) * 3, indexing="ij")
            u, v, w = i / n, j / n, k / n  # row i + j (n+1) + k (n+1)^2 <-> vertex (i, j, k)
            rows = enc.offsets[lvl] + (i + j * (n + 1) + k * (n + 1) ** 2).long().reshape(-1)
            # Any multilinear function is reproduced exactly by trilinear interpolation.
            enc.embeddings[rows, 0] = (1.0 + 2.0 * u - 3.0 * v + 0.5 * w).reshape(-1) * (lvl + 1)
            enc.embeddings[rows, 1] = (u * v * w - v * w).reshape(-1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, generator=g, dtype=torch.float64) * 2 - 1
    x[0] = torch.tensor([1.0, 1.0, 1.0])  # upper boundary
    x[1] = torch.tensor([-1.0, 0.0, 1.0])
    out = enc(x).view(200, 2, 2)
    u, v, w = ((x + 1) / 2).unbind(-1)
    for lvl in range(2):
        assert torch.allclose(out[:, lvl, 0], (1.0 + 2.0 * u - 3.0 * v + 0.5 * w) * (lvl + 1), atol=1e-12)
        assert torch.allclose(out[:, lvl, 1], u * v * w - v * w, atol=1e-12)
    # Inputs outside the bbox are clamped onto it.
    assert torch.allclose(enc(torch.tensor([[3.0, -5.0, 0.0]], dtype=torch.float64)),
                          enc(torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)))


def test_hash_grid_hashed_indices_match_instant_ngp_hash():
    enc = HashGridEncoding(3, n_levels=3, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=64)
    assert enc.hashed.tolist() == [False, True, True]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(50, 3, generator=g)
    idx = enc.grid_indices(x)  # [N, L, 8]
    assert idx.shape == (50, 3, 8)
    lo = enc.offsets.view(1, 3, 1)
    assert ((idx >= lo) & (idx < lo + enc.sizes.view(1, 3, 1))).all()
    assert idx.max() < enc.embeddings.shape[0]
    primes = (1, 2654435761, 805459861)
    for n_pt in range(5):
        for lvl in (1, 2):
            n = int(enc.resolutions[lvl])
            base = [min(int(math.floor(float(x[n_pt, a]) * n)), n - 1) for a in range(3)]
            for corner in range(8):
                c = [base[a] + ((corner >> a) & 1) for a in range(3)]
                h = 0
                for a in range(3):
                    h ^= (c[a] * primes[a]) & 0xFFFFFFFF  # 32-bit arithmetic as in Instant-NGP
                assert int(idx[n_pt, lvl, corner]) == int(enc.offsets[lvl]) + h % 1024


def test_hash_grid_gradients_table_and_input():
    enc = HashGridEncoding(3, n_levels=3, n_features=2, log2_table_size=8, base_resolution=2,
                           max_resolution=16, bbox=(-2.0, 2.0)).double()
    with torch.no_grad():
        enc.embeddings.normal_()
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(30, 3, generator=g, dtype=torch.float64) * 3.6 - 1.8).requires_grad_()
    out = enc(x)
    out.sum().backward()
    grad = enc.embeddings.grad
    touched = torch.unique(enc.grid_indices(x.detach()))
    untouched = torch.ones(grad.shape[0], dtype=torch.bool)
    untouched[touched] = False
    assert (grad[untouched] == 0).all() and grad[touched].abs().sum() > 0
    # Weights of the 8 corners sum to 1: each level receives a total of N per feature.
    for lvl in range(3):
        s, n = int(enc.offsets[lvl]), int(enc.sizes[lvl])
        assert torch.allclose(grad[s : s + n].sum(0), torch.full((2,), 30.0, dtype=torch.float64))
    # Table and input gradients agree with finite differences.
    def f(xx, tab):
        return torch.func.functional_call(enc, {"embeddings": tab}, (xx,))

    table = enc.embeddings.detach().clone()
    assert torch.autograd.gradcheck(lambda xx: f(xx, table), (x.detach()[:6].requires_grad_(),))
    assert torch.autograd.gradcheck(lambda tab: f(x.detach()[:6], tab), (table.requires_grad_(),), fast_mode=True)


def test_hash_grid_many_points_chunked_equals_unchunked():
    enc = HashGridEncoding(3, n_levels=4, n_features=2, log2_table_size=12, base_resolution=4, max_resolution=128)
    small = HashGridEncoding(3, n_levels=4, n_features=2, log2_table_size=12, base_resolution=4, max_resolution=128,
                             chunk_size=97)
    small.load_state_dict(enc.state_dict())
    x = torch.rand(1000, 3, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(enc(x), small(x))
    enc(x).square().sum().backward()
    small(x).square().sum().backward()
    assert torch.allclose(enc.embeddings.grad, small.embeddings.grad, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# Triplane
# --------------------------------------------------------------------------------------------------


def test_triplane_bilinear_exactness_sum_and_concat():
    tri = Triplane(n_features=2, resolution=5, bbox=(-2.0, 2.0), reduce="concat").double()
    assert tri.out_dim == 6
    assert (tri(torch.zeros(3, 3, dtype=torch.float64)) == 0).all()  # zero init
    r, c = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    a, b = c / 4, r / 4  # first plane coordinate along columns, second along rows
    with torch.no_grad():
        for k in range(3):
            tri.planes[k, 0] = 1.0 + (k + 1) * a - 2.0 * b
            tri.planes[k, 1] = a * b  # bilinear, reproduced exactly as well
    x = torch.rand(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 4 - 2
    n = (x + 2) / 4
    out = tri(x).view(100, 3, 2)
    for k, (p, q) in enumerate(((0, 1), (0, 2), (1, 2))):
        assert torch.allclose(out[:, k, 0], 1.0 + (k + 1) * n[:, p] - 2.0 * n[:, q], atol=1e-12)
        assert torch.allclose(out[:, k, 1], n[:, p] * n[:, q], atol=1e-12)
    tri_sum = Triplane(n_features=2, resolution=5, bbox=(-2.0, 2.0), reduce="sum").double()
    tri_sum.load_state_dict(tri.state_dict())
    assert tri_sum.out_dim == 2
    assert torch.allclose(tri_sum(x), out.sum(1))
    tri_sum(x).sum().backward()
    # Bilinear weights sum to one per plane and sample.
    assert torch.allclose(tri_sum.planes.grad.sum((2, 3)), torch.full((3, 2), 100.0, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------------


def test_mlp_hand_computed_with_skip():
    mlp = MLP(2, 2, 1, n_layers=1, activation="relu", out_activation=None, skip=1)
    assert mlp.layers[0].in_features == 2 and mlp.layers[1].in_features == 4
    with torch.no_grad():
        mlp.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        mlp.layers[0].bias.zero_()
        mlp.layers[1].weight.copy_(torch.tensor([[1.0, 1.0, 10.0, 100.0]]))
        mlp.layers[1].bias.fill_(0.5)
    x = torch.tensor([[2.0, 3.0], [-1.0, -4.0]])
    # h = relu([x0, -x1]); y = h0 + h1 + 10 x0 + 100 x1 + 0.5
    expected = torch.tensor([[2.0 + 0.0 + 20.0 + 300.0 + 0.5], [0.0 + 4.0 - 10.0 - 400.0 + 0.5]])
    assert torch.allclose(mlp(x), expected)


def test_mlp_zero_init_activations_and_errors():
    mlp = MLP(5, 16, 3, n_layers=3, activation="silu", out_activation="sigmoid", zero_init_last=True)
    y = mlp(torch.randn(4, 7, 5))
    assert y.shape == (4, 7, 3) and torch.allclose(y, torch.full_like(y, 0.5))
    y.sum().backward()
    assert mlp.layers[-1].weight.grad.abs().sum() > 0
    assert isinstance(MLP(2, 4, 1, 0).layers[0], torch.nn.Linear) and len(MLP(2, 4, 1, 0).layers) == 1
    assert torch.allclose(MLP(2, 4, 1, 1, out_activation="exp", zero_init_last=True)(torch.ones(1, 2)), torch.ones(1, 1))
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(2, 4, 1, 2, activation="swishy")
    with pytest.raises(ValueError, match="skip"):
        MLP(2, 4, 1, 2, skip=5)


# --------------------------------------------------------------------------------------------------
# kNN and AIAP
# --------------------------------------------------------------------------------------------------


def test_knn_matches_brute_force():
    pts = torch.rand(300, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    idx, dist = reg.knn(pts, 6, chunk=64)
    full = (pts[:, None] - pts[None]).norm(dim=-1)
    full.fill_diagonal_(float("inf"))
    bd, bi = full.sort(dim=1)
    assert torch.equal(idx, bi[:, :6])
    assert torch.allclose(dist, bd[:, :6], atol=1e-12)
    assert not (idx == torch.arange(300)[:, None]).any()
    with pytest.raises(ValueError, match="k must"):
        reg.knn(pts[:5], 5)


def test_aiap_position_zero_for_rigid_positive_for_stretch():
    g = torch.Generator().manual_seed(6)
    can = torch.rand(200, 3, generator=g, dtype=torch.float64)
    nbr, d = reg.knn(can, 5)
    R = random_rotation(g)
    moved = can @ R.T + torch.tensor([0.3, -2.0, 1.0], dtype=torch.float64)
    assert reg.aiap_position_loss(can, moved, nbr) < 1e-12
    # Uniform stretch by 2: every neighbour distance d becomes 2 d, so the loss is mean(d).
    assert torch.allclose(reg.aiap_position_loss(can, 2 * can, nbr), d.mean())
    obs = moved.clone().requires_grad_()
    with torch.no_grad():
        obs[0] += 0.1
    loss = reg.aiap_position_loss(can, obs, nbr)
    assert loss > 0
    loss.backward()
    assert obs.grad[0].abs().sum() > 0 and torch.isfinite(obs.grad).all()


def test_aiap_covariance_rigid_invariance_and_stretch():
    g = torch.Generator().manual_seed(7)
    n = 120
    means = torch.rand(n, 3, generator=g, dtype=torch.float64)
    rots = torch.stack([random_rotation(g) for _ in range(n)])
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.1 + 0.01
    cov = rots @ torch.diag_embed(scales**2) @ rots.transpose(1, 2)
    nbr, _ = reg.knn(means, 4)
    Q = random_rotation(g)
    assert reg.aiap_covariance_loss(cov, Q @ cov @ Q.T, nbr) < 1e-12
    # Scaling every covariance by 4 changes each ||S_i - S_j||_F into 4x, so the loss is 3 mean.
    frob = (cov[:, None] - cov[nbr]).flatten(2).norm(dim=-1)
    assert torch.allclose(reg.aiap_covariance_loss(cov, 4 * cov, nbr), 3 * frob.mean())
    # The 3DGS compact layout (xx, xy, xz, yy, yz, zz) gives the same value.
    tri = cov[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    assert torch.allclose(reg.aiap_covariance_loss(tri, 4 * tri, nbr), 3 * frob.mean())
    # Identical covariances (isotropic Gaussians at initialisation) give finite gradients.
    same = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone().requires_grad_()
    obs = (same * torch.linspace(1, 2, n, dtype=torch.float64)[:, None, None])
    loss = reg.aiap_covariance_loss(same, obs, nbr)
    loss.backward()
    assert loss > 0 and torch.isfinite(same.grad).all()


# --------------------------------------------------------------------------------------------------
# Laplacian and priors
# --------------------------------------------------------------------------------------------------


def test_laplacian_loss_linear_fields_on_flat_grid():
    verts, faces, interior = flat_grid(6)
    L = uniform_laplacian(faces, verts.shape[0], dtype=torch.float64)
    A = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, 3.0]], dtype=torch.float64)
    field = verts @ A.T + torch.tensor([4.0, -1.0], dtype=torch.float64)  # linear, [V, 2]
    assert reg.laplacian_loss(field, L, weights=interior.double()) < 1e-24
    # Relative to a reference: only the difference matters.
    assert reg.laplacian_loss(field, L, reference=field) == 0
    # Against a dense oracle: mean_v w_v ||(L x)_v||^2.
    x = torch.randn(2, 36, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    w = torch.rand(36, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    loss = reg.laplacian_loss(x, L, weights=w)
    dense = L.to_dense()
    oracle = ((dense @ x).pow(2).sum(-1) * w).mean()
    assert torch.allclose(loss, oracle)
    (gx,) = torch.autograd.grad(loss, x)
    (go,) = torch.autograd.grad(oracle, x)
    assert torch.allclose(gx, go)
    assert torch.allclose(reg.laplacian_loss(x[1], L), ((dense @ x[1]).pow(2).sum(-1)).mean())


def test_offset_and_scale_priors_hand_computed():
    off = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, -1.0]])
    assert torch.isclose(reg.offset_loss(off), torch.tensor((25.0 + 1.0) / 2))
    assert torch.isclose(reg.offset_loss(off, norm="l1"), torch.tensor((7.0 + 1.0) / 2))
    assert torch.isclose(reg.offset_loss(off, norm="norm"), torch.tensor((5.0 + 1.0) / 2))
    with pytest.raises(ValueError):
        reg.offset_loss(off, norm="l3")
    s = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]], requires_grad=True)
    assert torch.isclose(reg.scale_loss(s), torch.tensor((0.01 + 0.04 + 0.09 + 3 * 0.25) / 6))
    loss = reg.scale_loss(s, max_scale=0.25)
    assert torch.isclose(loss, torch.tensor((0.05**2 + 3 * 0.25**2) / 6))
    loss.backward()
    assert (s.grad[0, :2] == 0).all() and s.grad[0, 2] > 0


def test_normal_band_loss_hand_computed():
    surf = torch.zeros(4, 3)
    normals = torch.tensor([[0.0, 0.0, 2.0]] * 4)  # normalised inside
    pts = torch.tensor([[0.0, 0.0, 0.05], [0.0, 0.0, 0.3], [0.0, 0.0, -0.5], [0.3, 0.4, 0.0]], requires_grad=True)
    loss = reg.normal_band_loss(pts, surf, normals, band=(0.01, 0.1))
    # Excess: 0, 0.3 - 0.1, 0.5 - 0.01, 0; tangential: 0, 0, 0, 0.5.
    assert torch.isclose(loss, torch.tensor((0.2 + 0.49) / 4 + 0.5 / 4))
    loss.backward()
    assert torch.allclose(pts.grad[0], torch.zeros(3))  # inside the band, on the normal
    assert pts.grad[1, 2] > 0 and pts.grad[2, 2] < 0
    sym = reg.normal_band_loss(pts, surf, normals, band=0.1, tangential_weight=0.0)
    assert torch.isclose(sym, torch.tensor((0.2 + 0.4) / 4))


def test_coverage_loss_hand_computed():
    surf = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0]], requires_grad=True)
    # Nearest distances: 0, 0.5, sqrt(16 + 0.25).
    far = math.sqrt(16.25)
    assert torch.isclose(reg.coverage_loss(surf, pts, chunk=2), torch.tensor((0.0 + 0.5 + far) / 3))
    (g0,) = torch.autograd.grad(reg.coverage_loss(surf, pts), pts)
    assert torch.isfinite(g0).all()  # a sample exactly on a point: zero-distance gradient is finite
    loss = reg.coverage_loss(surf, pts, radius=0.6)
    assert torch.isclose(loss, torch.tensor((far - 0.6) / 3))
    loss.backward()
    assert torch.allclose(pts.grad[0], torch.zeros(3))  # its samples are within the radius
    direction = (torch.tensor([5.0, 0.0, 0.0]) - pts.detach()[1]) / far
    assert torch.allclose(pts.grad[1], -direction / 3)  # pulled towards the uncovered sample
