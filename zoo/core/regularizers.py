"""Geometric regularizers for Gaussian avatars: kNN isometry (AIAP), Laplacian smoothness, priors.

Every loss returns a scalar tensor, differentiable with respect to its floating-point inputs.
Distances use ``torch.linalg.vector_norm``, whose gradient at a zero vector is zero (not NaN),
so coincident points or identical covariances are safe.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "knn",
    "aiap_position_loss",
    "aiap_covariance_loss",
    "laplacian_loss",
    "offset_loss",
    "scale_loss",
    "normal_band_loss",
    "coverage_loss",
]


def knn(points: Tensor, k: int, chunk: int = 2048) -> Tuple[Tensor, Tensor]:
    """Brute-force k nearest neighbours of every point among the others (self excluded).

    Distances are computed chunk by chunk with ``torch.cdist`` and the ``k`` smallest kept with
    ``topk``, so memory is ``O(chunk * N)``. The neighbour search itself is not differentiable;
    the returned distances are recomputed from the selected pairs and are.

    Args:
        points: ``[N, D]`` points.
        k: Number of neighbours (``1 <= k < N``).
        chunk: Query points per ``cdist`` call.

    Returns:
        Tuple ``(indices [N, k] long, distances [N, k])``, neighbours sorted by increasing
        Euclidean distance.
    """
    if points.dim() != 2:
        raise ValueError(f"points must have shape [N, D], got {tuple(points.shape)}")
    n = points.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < N = {n}, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    ref = points.detach()
    out = []
    with torch.no_grad():
        for start in range(0, n, chunk):
            q = ref[start : start + chunk]
            d = torch.cdist(q, ref)  # [c, N]
            rows = torch.arange(q.shape[0], device=points.device)
            d[rows, rows + start] = float("inf")
            out.append(d.topk(k, dim=1, largest=False, sorted=True).indices)
    idx = torch.cat(out, dim=0)
    dist = torch.linalg.vector_norm(points.unsqueeze(1) - points[idx], dim=-1)
    return idx, dist


def _neighbour_distances(x: Tensor, nbr_idx: Tensor) -> Tensor:
    """``||x_i - x_j||`` over the trailing dims for each neighbour ``j`` of ``i``: ``[N, k]``."""
    diff = x.unsqueeze(1) - x[nbr_idx]  # [N, k, ...]
    return torch.linalg.vector_norm(diff.flatten(2), dim=-1)


def _check_nbrs(n: int, nbr_idx: Tensor) -> None:
    if nbr_idx.dim() != 2 or nbr_idx.shape[0] != n:
        raise ValueError(f"nbr_idx must have shape [{n}, k], got {tuple(nbr_idx.shape)}")


def aiap_position_loss(canonical: Tensor, observed: Tensor, nbr_idx: Tensor) -> Tensor:
    """As-isometric-as-possible position term of 3DGS-Avatar.

    ``L = mean_{i, j in N(i)} | ||mu_c_i - mu_c_j|| - ||mu_o_i - mu_o_j|| |``: the L1 change of
    the distances between each Gaussian and its (canonical-space) neighbours between the
    canonical and the observation (deformed) space. Zero for any rigid motion.

    Args:
        canonical: Canonical centres ``[N, 3]``.
        observed: Deformed centres ``[N, 3]`` (same order).
        nbr_idx: Neighbour indices ``[N, k]`` (e.g. ``knn(canonical, k)[0]``).

    Returns:
        Scalar loss.
    """
    if canonical.shape != observed.shape:
        raise ValueError(f"shape mismatch: canonical {tuple(canonical.shape)} vs observed {tuple(observed.shape)}")
    _check_nbrs(canonical.shape[0], nbr_idx)
    dc = _neighbour_distances(canonical, nbr_idx)
    do = _neighbour_distances(observed, nbr_idx)
    return (dc - do).abs().mean()


def _as_matrices(cov: Tensor, name: str) -> Tensor:
    if cov.dim() == 3 and cov.shape[1:] == (3, 3):
        return cov
    if cov.dim() == 2 and cov.shape[1] == 6:
        # 3DGS compact layout: (xx, xy, xz, yy, yz, zz).
        xx, xy, xz, yy, yz, zz = cov.unbind(1)
        rows = [torch.stack(r, dim=1) for r in ((xx, xy, xz), (xy, yy, yz), (xz, yz, zz))]
        return torch.stack(rows, dim=1)
    raise ValueError(f"{name} must have shape [N, 3, 3] or [N, 6], got {tuple(cov.shape)}")


def aiap_covariance_loss(cov_canonical: Tensor, cov_observed: Tensor, nbr_idx: Tensor) -> Tensor:
    """As-isometric-as-possible covariance term of 3DGS-Avatar.

    The same construction as :func:`aiap_position_loss` applied to covariances: for every
    Gaussian ``i`` and neighbour ``j``, compare how different their covariances are in the
    canonical and in the observation space,
    ``L = mean_{i, j in N(i)} | ||S_c_i - S_c_j||_F - ||S_o_i - S_o_j||_F |``. The Frobenius
    norm makes the term invariant to a common rotation ``S -> R S R^T`` (and to translation),
    so it is zero for rigid motion and penalises neighbouring Gaussians whose shapes deform
    differently (e.g. one stretches while its neighbours do not).

    Args:
        cov_canonical: Canonical covariances ``[N, 3, 3]`` (or the 3DGS compact ``[N, 6]``
            layout ``xx, xy, xz, yy, yz, zz``).
        cov_observed: Deformed covariances, same shape.
        nbr_idx: Neighbour indices ``[N, k]`` (canonical-space kNN).

    Returns:
        Scalar loss.
    """
    sc = _as_matrices(cov_canonical, "cov_canonical")
    so = _as_matrices(cov_observed, "cov_observed")
    if sc.shape != so.shape:
        raise ValueError(f"shape mismatch: {tuple(cov_canonical.shape)} vs {tuple(cov_observed.shape)}")
    _check_nbrs(sc.shape[0], nbr_idx)
    dc = _neighbour_distances(sc, nbr_idx)
    do = _neighbour_distances(so, nbr_idx)
    return (dc - do).abs().mean()


def laplacian_loss(
    values: Tensor,
    laplacian: Tensor,
    reference: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
) -> Tensor:
    """Mesh-Laplacian smoothness (ExAvatar's regularizer on positions, scales and colours).

    ``L = mean_{b, v} w_v ||(Lap (x_b - r_b))_v||^2``: the mean squared norm of the Laplacian of
    the values, or, with ``reference``, of their difference to the reference (e.g. positions
    relative to the template mesh, so the template's own curvature is not penalised).

    Args:
        values: Per-vertex values ``[V, C]`` or ``[B, V, C]``.
        laplacian: Sparse (or dense) ``[V, V]`` matrix, e.g. :func:`zoo.core.mesh.uniform_laplacian`.
        reference: Optional values broadcastable to ``values``.
        weights: Optional per-vertex multipliers ``[V]`` (e.g. higher on the hands, zero to mask).

    Returns:
        Scalar loss.
    """
    if values.dim() not in (2, 3):
        raise ValueError(f"values must have shape [V, C] or [B, V, C], got {tuple(values.shape)}")
    num_verts = values.shape[-2]
    if tuple(laplacian.shape) != (num_verts, num_verts):
        raise ValueError(f"laplacian must be [{num_verts}, {num_verts}], got {tuple(laplacian.shape)}")
    x = values if reference is None else values - reference
    batched = x.dim() == 3
    if batched:
        b, v, c = x.shape
        flat = x.permute(1, 0, 2).reshape(v, b * c)
    else:
        flat = x
    lap = laplacian.to(dtype=x.dtype, device=x.device)
    lx = torch.sparse.mm(lap, flat) if lap.is_sparse else lap @ flat
    if batched:
        lx = lx.reshape(v, b, c).permute(1, 0, 2)
    sq = lx.pow(2).sum(-1)  # [(B,) V]
    if weights is not None:
        if tuple(weights.shape) != (num_verts,):
            raise ValueError(f"weights must have shape [{num_verts}], got {tuple(weights.shape)}")
        sq = sq * weights.to(sq.dtype)
    return sq.mean()


def offset_loss(offsets: Tensor, norm: str = "l2") -> Tensor:
    """Prior keeping per-point offsets small (GaussianAvatar).

    Args:
        offsets: ``[..., D]`` offset vectors.
        norm: ``"l2"``: mean over points of the squared norm ``||o||^2``; ``"l1"``: mean of
            ``||o||_1``; ``"norm"``: mean of ``||o||`` (unsquared).

    Returns:
        Scalar loss.
    """
    if norm == "l2":
        per_point = offsets.pow(2).sum(-1)
    elif norm == "l1":
        per_point = offsets.abs().sum(-1)
    elif norm == "norm":
        per_point = torch.linalg.vector_norm(offsets, dim=-1)
    else:
        raise ValueError(f"norm must be 'l2', 'l1' or 'norm', got {norm!r}")
    return per_point.mean()


def scale_loss(scales: Tensor, max_scale: Optional[float] = None) -> Tensor:
    """Prior keeping Gaussian scales small.

    Without ``max_scale``: the mean of the squared scale entries (each axis scale counts as one
    value, so an isotropic ``[N, 3]`` scale gives the same as its ``[N, 1]`` form). With
    ``max_scale``: only the part above it is penalised, ``mean(relu(s - max_scale)^2)``.

    Args:
        scales: Linear (not log) scales ``[..., K]``.
        max_scale: Optional threshold.

    Returns:
        Scalar loss.
    """
    if max_scale is None:
        return scales.pow(2).mean()
    return torch.relu(scales - max_scale).pow(2).mean()


def normal_band_loss(
    points: Tensor,
    surface_points: Tensor,
    normals: Tensor,
    band: Union[float, Sequence[float]],
    tangential_weight: float = 1.0,
) -> Tensor:
    """Cloth-aware band loss of HumanSplatHMR: keep points in a band along the surface normal.

    With ``d = p - s`` (point minus its anchor on the body surface) and unit normal ``n``:
    the normal distance ``d_n = d . n`` may lie in ``[-band_in, band_out]`` for free (clothes
    sit outside the body, a little inside is tolerated); the excess outside it is penalised,
    and so is the tangential distance ``||d - d_n n||`` (a point should stay over its anchor):
    ``L = mean(relu(-band_in - d_n) + relu(d_n - band_out)) + w_t * mean(||d - d_n n||)``.

    Args:
        points: ``[N, 3]`` point (Gaussian) positions.
        surface_points: ``[N, 3]`` anchors on the body surface.
        normals: ``[N, 3]`` outward surface normals at the anchors (normalised here).
        band: ``band_out`` for a symmetric band ``[-band, band]``, or ``(band_in, band_out)``.
        tangential_weight: ``w_t``.

    Returns:
        Scalar loss.
    """
    if points.shape != surface_points.shape or points.shape != normals.shape:
        raise ValueError(
            f"points, surface_points and normals must share a shape, got {tuple(points.shape)}, "
            f"{tuple(surface_points.shape)}, {tuple(normals.shape)}"
        )
    if isinstance(band, (int, float)):
        band_in = band_out = float(band)
    else:
        band_in, band_out = (float(b) for b in band)
    if band_in < 0 or band_out < 0:
        raise ValueError(f"band limits must be non-negative, got ({band_in}, {band_out})")
    n = normals / torch.linalg.vector_norm(normals, dim=-1, keepdim=True).clamp(min=1e-12)
    d = points - surface_points
    dn = (d * n).sum(-1)
    outside = torch.relu(-band_in - dn) + torch.relu(dn - band_out)
    tangential = torch.linalg.vector_norm(d - dn.unsqueeze(-1) * n, dim=-1)
    return outside.mean() + tangential_weight * tangential.mean()


def coverage_loss(surface_points: Tensor, points: Tensor, radius: float = 0.0, chunk: int = 2048) -> Tensor:
    """Surface coverage: every surface sample should have a point (Gaussian) within ``radius``.

    ``L = mean_m relu(min_j ||s_m - p_j|| - radius)``, a one-sided Chamfer distance from the
    surface samples to the points; the gradient pulls the nearest point towards uncovered
    surface.

    Args:
        surface_points: ``[M, 3]`` samples on the body surface (e.g. ``sample_surface``).
        points: ``[N, 3]`` point positions.
        radius: Distance under which a sample counts as covered.
        chunk: Surface samples per ``cdist`` call.

    Returns:
        Scalar loss.
    """
    if surface_points.dim() != 2 or points.dim() != 2 or surface_points.shape[1] != points.shape[1]:
        raise ValueError(
            f"expected [M, D] and [N, D], got {tuple(surface_points.shape)} and {tuple(points.shape)}"
        )
    if points.shape[0] == 0:
        raise ValueError("coverage_loss needs at least one point")
    with torch.no_grad():
        nearest = torch.cat(
            [
                torch.cdist(surface_points[s : s + chunk].detach(), points.detach()).argmin(dim=1)
                for s in range(0, surface_points.shape[0], chunk)
            ]
        )
    dist = torch.linalg.vector_norm(surface_points - points[nearest], dim=-1)
    return torch.relu(dist - radius).mean()
