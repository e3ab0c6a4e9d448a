"""Input encodings and a small MLP: NeRF frequency encoding, Instant-NGP hash grid, triplanes.

All pure PyTorch (no tiny-cuda-nn), differentiable with respect to both the parameters and the
input coordinates.

Coordinate normalisation: encodings taking ``bbox=(min, max)`` map ``x -> (x - min) / (max - min)``
per axis (``min``/``max`` are floats or per-axis sequences) and clamp the result to ``[0, 1]``;
with ``bbox=None`` the inputs are assumed to already lie in ``[0, 1]``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FrequencyEncoding", "HashGridEncoding", "Triplane", "MLP", "make_activation"]

BBox = Optional[Tuple[Union[float, Sequence[float]], Union[float, Sequence[float]]]]


def _bbox_buffers(bbox: BBox, dim: int) -> Tuple[Tensor, Tensor]:
    if bbox is None:
        return torch.zeros(dim), torch.ones(dim)
    if len(bbox) != 2:
        raise ValueError(f"bbox must be (min, max), got {bbox!r}")
    lo = torch.as_tensor(bbox[0], dtype=torch.float32).reshape(-1)
    hi = torch.as_tensor(bbox[1], dtype=torch.float32).reshape(-1)
    if lo.numel() not in (1, dim) or hi.numel() not in (1, dim):
        raise ValueError(f"bbox min/max must be floats or {dim} values each, got {bbox!r}")
    lo, hi = lo.expand(dim).clone(), hi.expand(dim).clone()
    if not bool((hi > lo).all()):
        raise ValueError(f"bbox max must exceed min on every axis, got min={lo.tolist()} max={hi.tolist()}")
    return lo, hi


# --------------------------------------------------------------------------------------------------
# Frequency (positional) encoding
# --------------------------------------------------------------------------------------------------


class FrequencyEncoding(nn.Module):
    """NeRF-style sinusoidal encoding.

    ``gamma(x) = [x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ..., sin(2^(L-1) x),
    cos(2^(L-1) x)]`` where each term is a block of ``in_dim`` values (the original NeRF code's
    layout, frequencies ``2^k`` without a factor of pi).

    Args:
        in_dim: Input dimension ``D``.
        n_freqs: Number of frequencies ``L``.
        include_input: Prepend the raw input.
    """

    def __init__(self, in_dim: int, n_freqs: int, include_input: bool = True) -> None:
        super().__init__()
        if in_dim < 1 or n_freqs < 0:
            raise ValueError(f"need in_dim >= 1 and n_freqs >= 0, got {in_dim}, {n_freqs}")
        self.in_dim = int(in_dim)
        self.n_freqs = int(n_freqs)
        self.include_input = bool(include_input)
        self.register_buffer("freqs", 2.0 ** torch.arange(self.n_freqs, dtype=torch.float32), persistent=False)

    @property
    def out_dim(self) -> int:
        """Output dimension ``D * (include_input + 2 L)``."""
        return self.in_dim * (int(self.include_input) + 2 * self.n_freqs)

    def forward(self, x: Tensor) -> Tensor:
        """Encode.

        Args:
            x: ``[..., D]``.

        Returns:
            ``[..., out_dim]``.
        """
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected last dim {self.in_dim}, got {tuple(x.shape)}")
        scaled = x.unsqueeze(-2) * self.freqs.to(x.dtype).unsqueeze(-1)  # [..., L, D]
        terms = torch.stack([scaled.sin(), scaled.cos()], dim=-2)  # [..., L, 2, D]
        out = terms.flatten(-3)
        if self.include_input:
            out = torch.cat([x, out], dim=-1)
        return out


# --------------------------------------------------------------------------------------------------
# Multi-resolution hash grid
# --------------------------------------------------------------------------------------------------

# Instant-NGP's spatial-hash primes (the first dimension is not scrambled).
_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)


class _GridLookup(torch.autograd.Function):
    """Multi-level (d-)linear grid lookup that stores only the inputs for the backward pass.

    Indices and interpolation weights for all ``2^d`` corners are recomputed in the backward
    pass, so memory held between forward and backward is ``O(N d)`` instead of
    ``O(N L 2^d)``. Double backward is not supported.
    """

    @staticmethod
    def forward(ctx, x01: Tensor, table: Tensor, enc: "HashGridEncoding") -> Tensor:  # type: ignore[override]
        ctx.enc = enc
        ctx.save_for_backward(x01, table)
        out = x01.new_zeros(x01.shape[0], enc.n_levels, enc.n_features, dtype=table.dtype)
        for start in range(0, x01.shape[0], enc.chunk_size):
            part = out[start : start + enc.chunk_size]
            for idx, w, _ in enc._corners(x01[start : start + enc.chunk_size], with_grad=False):
                feats = table.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)
                part += w.unsqueeze(-1).to(table.dtype) * feats
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x01, table = ctx.saved_tensors
        enc: HashGridEncoding = ctx.enc
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_table = torch.zeros_like(table) if need_table else None
        grad_x = torch.zeros_like(x01) if need_x else None
        for start in range(0, x01.shape[0], enc.chunk_size):
            stop = start + enc.chunk_size
            g_out = grad_out[start:stop]
            for idx, w, dw in enc._corners(x01[start:stop], with_grad=need_x):
                if need_table:
                    contrib = w.unsqueeze(-1).to(table.dtype) * g_out.to(table.dtype)  # [n, L, F]
                    grad_table.index_add_(0, idx.reshape(-1), contrib.reshape(-1, enc.n_features))
                if need_x:
                    feats = table.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)
                    g = (g_out * feats).sum(-1).to(x01.dtype)  # [n, L]
                    grad_x[start:stop] += (g.unsqueeze(-1) * dw).sum(1)
        return grad_x, grad_table, None


class HashGridEncoding(nn.Module):
    """Multi-resolution hash-grid encoding (Instant-NGP, Mueller et al. 2022) in pure PyTorch.

    Level ``l`` (of ``L``) has resolution ``N_l = floor(N_min * b^l)`` with growth factor
    ``b = exp((ln N_max - ln N_min) / (L - 1))``; its grid has ``(N_l + 1)^d`` vertices at
    normalised positions ``i / N_l``. A level whose vertices fit in the table (``<= T``) is
    indexed densely, ``index = sum_k i_k (N_l + 1)^k`` (axis 0 fastest); otherwise by the spatial
    hash ``(XOR_k i_k * pi_k) mod T`` with primes ``(1, 2654435761, 805459861, ...)`` (the same
    result as Instant-NGP's 32-bit arithmetic, as ``T`` is a power of two). Features of the
    ``2^d`` surrounding vertices are blended with (d-)linear weights; levels are concatenated
    (level-major: ``[level0 features, level1 features, ...]``).

    All levels share one parameter ``embeddings [sum_l size_l, n_features]`` (level ``l`` owns
    rows ``offsets[l] .. offsets[l] + sizes[l]``), initialised ``uniform(-1e-4, 1e-4)``.
    Evaluation is vectorised over levels and points and loops over the ``2^d`` corners; a custom
    autograd function recomputes corner indices in the backward pass so 100k points with 16
    levels need only transient memory.

    Args:
        in_dim: Input dimension ``d`` (1 to 7).
        n_levels: Number of levels ``L``.
        n_features: Features per level ``F``.
        log2_table_size: ``log2(T)``, the maximum number of entries per level.
        base_resolution: ``N_min``.
        max_resolution: ``N_max``.
        bbox: ``(min, max)`` input bounds, or ``None`` for inputs in ``[0, 1]`` (see module doc).
        init_scale: Half-width of the uniform initialisation.
        chunk_size: Points processed at once inside the lookup (bounds transient memory).
    """

    def __init__(
        self,
        in_dim: int = 3,
        n_levels: int = 16,
        n_features: int = 2,
        log2_table_size: int = 16,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        bbox: BBox = None,
        init_scale: float = 1e-4,
        chunk_size: int = 16384,
    ) -> None:
        super().__init__()
        if not 1 <= in_dim <= len(_PRIMES):
            raise ValueError(f"in_dim must be in [1, {len(_PRIMES)}], got {in_dim}")
        if n_levels < 1 or n_features < 1:
            raise ValueError(f"need n_levels >= 1 and n_features >= 1, got {n_levels}, {n_features}")
        if not 1 <= log2_table_size <= 30:
            raise ValueError(f"log2_table_size must be in [1, 30], got {log2_table_size}")
        if base_resolution < 1 or max_resolution < base_resolution:
            raise ValueError(
                f"need 1 <= base_resolution <= max_resolution, got {base_resolution}, {max_resolution}"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.in_dim = int(in_dim)
        self.n_levels = int(n_levels)
        self.n_features = int(n_features)
        self.table_size = 1 << int(log2_table_size)
        if n_levels > 1:
            growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
        else:
            growth = 1.0
        self.growth = growth
        # The small epsilon keeps floor(N_min * b^(L-1)) == N_max despite rounding.
        res = [int(math.floor(base_resolution * growth**lvl + 1e-6)) for lvl in range(n_levels)]
        sizes, hashed = [], []
        for r in res:
            dense = (r + 1) ** self.in_dim
            hashed.append(dense > self.table_size)
            sizes.append(self.table_size if dense > self.table_size else dense)
        offsets = [0]
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + s)
        strides = [[(r + 1) ** k if not h else 0 for k in range(self.in_dim)] for r, h in zip(res, hashed)]
        self.register_buffer("resolutions", torch.tensor(res, dtype=torch.long), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("hashed", torch.tensor(hashed, dtype=torch.bool), persistent=False)
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.long), persistent=False)
        self.register_buffer("primes", torch.tensor(_PRIMES[: self.in_dim], dtype=torch.long), persistent=False)
        # Resolutions grow with the level, so the densely indexed levels form a prefix.
        self.n_dense = int(sum(1 for h in hashed if not h))
        lo, hi = _bbox_buffers(bbox, self.in_dim)
        self.register_buffer("bbox_min", lo, persistent=False)
        self.register_buffer("bbox_max", hi, persistent=False)
        self.embeddings = nn.Parameter(torch.empty(sum(sizes), self.n_features).uniform_(-init_scale, init_scale))

    @property
    def out_dim(self) -> int:
        """Output dimension ``L * F``."""
        return self.n_levels * self.n_features

    def normalize(self, x: Tensor) -> Tensor:
        """Map inputs into the unit cube by the bbox.

        Args:
            x: ``[..., d]`` coordinates.

        Returns:
            ``[..., d]`` values ``(x - min) / (max - min)`` clamped to ``[0, 1]``.
        """
        lo = self.bbox_min.to(x.dtype)
        hi = self.bbox_max.to(x.dtype)
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def _corners(self, x01: Tensor, with_grad: bool):
        """Yield ``(rows [N, L], weight [N, L], dweight/dx01 [N, L, d] or None)`` per corner.

        Corner ``c`` is the upper neighbour along axis ``k`` when bit ``k`` of ``c`` is set.
        Dense levels (a prefix, as resolutions grow) and hashed levels are indexed separately.
        """
        n_dense = self.n_dense
        res_f = self.resolutions.to(x01.dtype)
        xs = x01.unsqueeze(1) * res_f[:, None]  # [N, L, d]
        base = torch.minimum(xs.floor().long(), (self.resolutions - 1)[:, None])
        frac = xs - base.to(xs.dtype)
        # Per axis and per side (lower, upper): dense-index term, hash term, weight factor.
        dense_terms, hash_terms, factors = [], [], []
        for k in range(self.in_dim):
            lo_d = base[:, :n_dense, k] * self.strides[:n_dense, k]
            dense_terms.append((lo_d, lo_d + self.strides[:n_dense, k]))
            lo_h = base[:, n_dense:, k] * self.primes[k]
            hash_terms.append((lo_h, lo_h + self.primes[k]))
            factors.append((1.0 - frac[..., k], frac[..., k]))
        mask = self.table_size - 1
        for c in range(1 << self.in_dim):
            bits = [(c >> k) & 1 for k in range(self.in_dim)]
            dense = dense_terms[0][bits[0]]
            h = hash_terms[0][bits[0]]
            w = factors[0][bits[0]]
            for k in range(1, self.in_dim):
                dense = dense + dense_terms[k][bits[k]]
                h = torch.bitwise_xor(h, hash_terms[k][bits[k]])
                w = w * factors[k][bits[k]]
            idx = torch.cat([dense, torch.bitwise_and(h, mask)], dim=1) + self.offsets
            dw = None
            if with_grad:
                parts = []
                for k in range(self.in_dim):
                    p = res_f if bits[k] else -res_f
                    p = p.expand_as(w)
                    for j in range(self.in_dim):
                        if j != k:
                            p = p * factors[j][bits[j]]
                    parts.append(p)
                dw = torch.stack(parts, dim=-1)  # d w / d x01
            yield idx, w, dw

    def grid_indices(self, x: Tensor) -> Tensor:
        """Table rows of all ``2^d`` surrounding vertices, per level.

        Args:
            x: Inputs ``[N, d]``.

        Returns:
            ``[N, L, 2^d]`` long rows into ``embeddings`` (corner ``c`` has bit ``k`` set when it
            is the upper neighbour along axis ``k``).
        """
        x01 = self.normalize(x.reshape(-1, self.in_dim))
        return torch.stack([idx for idx, _, _ in self._corners(x01, with_grad=False)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Encode.

        Args:
            x: ``[..., d]`` coordinates.

        Returns:
            ``[..., L * F]`` features (same dtype as the table).
        """
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected last dim {self.in_dim}, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x01 = self.normalize(x.reshape(-1, self.in_dim))
        out = _GridLookup.apply(x01, self.embeddings, self)
        return out.reshape(*lead, self.out_dim)


# --------------------------------------------------------------------------------------------------
# Triplanes
# --------------------------------------------------------------------------------------------------


class Triplane(nn.Module):
    """Three axis-aligned feature planes (xy, xz, yz) sampled bilinearly.

    A point with normalised coordinates ``(a, b, c)`` in ``[0, 1]^3`` reads plane ``xy`` at
    ``(a, b)``, ``xz`` at ``(a, c)`` and ``yz`` at ``(b, c)``. Within a plane
    ``planes[k] [C, R, R]`` the first coordinate runs along the columns and the second along the
    rows, texel centres at ``i / (R - 1)`` (``grid_sample`` with ``align_corners=True``, border
    padding outside the box).

    Args:
        n_features: Channels per plane ``C``.
        resolution: Plane side ``R``.
        bbox: ``(min, max)`` input bounds, or ``None`` for inputs in ``[0, 1]``.
        reduce: ``"sum"`` (output ``C``) or ``"concat"`` (output ``3 C``, order xy, xz, yz).
        init: ``"zero"`` (ExAvatar) or ``"normal"``.
        init_std: Standard deviation for ``init="normal"``.
    """

    PLANE_AXES = ((0, 1), (0, 2), (1, 2))

    def __init__(
        self,
        n_features: int = 32,
        resolution: int = 128,
        bbox: BBox = None,
        reduce: str = "sum",
        init: str = "zero",
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        if reduce not in ("sum", "concat"):
            raise ValueError(f"reduce must be 'sum' or 'concat', got {reduce!r}")
        if resolution < 2:
            raise ValueError(f"resolution must be >= 2, got {resolution}")
        self.n_features = int(n_features)
        self.resolution = int(resolution)
        self.reduce = reduce
        planes = torch.zeros(3, self.n_features, self.resolution, self.resolution)
        if init == "normal":
            planes.normal_(0.0, init_std)
        elif init != "zero":
            raise ValueError(f"init must be 'zero' or 'normal', got {init!r}")
        self.planes = nn.Parameter(planes)
        lo, hi = _bbox_buffers(bbox, 3)
        self.register_buffer("bbox_min", lo, persistent=False)
        self.register_buffer("bbox_max", hi, persistent=False)

    @property
    def out_dim(self) -> int:
        """``C`` for ``reduce="sum"``, ``3 C`` for ``"concat"``."""
        return self.n_features * (3 if self.reduce == "concat" else 1)

    def forward(self, x: Tensor) -> Tensor:
        """Sample features.

        Args:
            x: ``[..., 3]`` points.

        Returns:
            ``[..., out_dim]``.
        """
        if x.shape[-1] != 3:
            raise ValueError(f"expected points [..., 3], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        lo = self.bbox_min.to(x.dtype)
        hi = self.bbox_max.to(x.dtype)
        g = 2.0 * (x.reshape(-1, 3) - lo) / (hi - lo) - 1.0  # [N, 3] in [-1, 1]
        grid = torch.stack([g[:, list(ax)] for ax in self.PLANE_AXES], dim=0).unsqueeze(1)  # [3, 1, N, 2]
        feats = F.grid_sample(
            self.planes.to(x.dtype), grid, mode="bilinear", padding_mode="border", align_corners=True
        )  # [3, C, 1, N]
        feats = feats[:, :, 0].permute(2, 0, 1)  # [N, 3, C]
        out = feats.sum(1) if self.reduce == "sum" else feats.reshape(feats.shape[0], -1)
        return out.reshape(*lead, self.out_dim)


# --------------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------------


class _Exp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(x)


_ACTIVATIONS: dict = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "exp": _Exp,
    "identity": nn.Identity,
    "none": nn.Identity,
}


def make_activation(spec: Union[None, str, nn.Module, Callable[[], nn.Module]]) -> nn.Module:
    """Build an activation module from a name, a module, or a module factory.

    Args:
        spec: ``None`` (identity), one of ``relu, leaky_relu, silu, gelu, elu, tanh, sigmoid,
            softplus, exp, identity, none``, an ``nn.Module`` instance, or a zero-argument
            callable returning one.

    Returns:
        The activation module.
    """
    if spec is None:
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {spec!r}; choose from {sorted(_ACTIVATIONS)}")
        return _ACTIVATIONS[key]()
    if callable(spec):
        module = spec()
        if not isinstance(module, nn.Module):
            raise TypeError(f"activation factory returned {type(module).__name__}, not an nn.Module")
        return module
    raise TypeError(f"cannot build an activation from {spec!r}")


class MLP(nn.Module):
    """Fully connected network with optional input skip connections.

    Layers ``0 .. n_layers - 1`` are hidden (width ``hidden``, followed by ``activation``);
    layer ``n_layers`` is the output layer (followed by ``out_activation``). For every layer
    index in ``skip`` the network input is concatenated to that layer's input (NeRF-style).

    Args:
        in_dim: Input dimension.
        hidden: Hidden width.
        out_dim: Output dimension.
        n_layers: Number of hidden layers (0 gives a single linear layer).
        activation: Hidden activation (see :func:`make_activation`).
        out_activation: Output activation, ``None`` for linear output.
        skip: Layer indices in ``1 .. n_layers`` whose input also receives the network input.
        zero_init_last: Initialise the output layer's weight and bias to zero (the network
            starts as the constant ``out_activation(0)``, e.g. zero deformation).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        n_layers: int,
        activation: Union[str, nn.Module, Callable[[], nn.Module], None] = "relu",
        out_activation: Union[str, nn.Module, Callable[[], nn.Module], None] = None,
        skip: Union[None, int, Iterable[int]] = None,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        skips = set() if skip is None else ({int(skip)} if isinstance(skip, int) else {int(s) for s in skip})
        bad = [s for s in skips if not 1 <= s <= n_layers]
        if bad:
            raise ValueError(f"skip layer indices must be in [1, {n_layers}], got {sorted(bad)}")
        self.in_dim, self.hidden, self.out_dim, self.n_layers = int(in_dim), int(hidden), int(out_dim), int(n_layers)
        self.skip = tuple(sorted(skips))
        layers: List[nn.Linear] = []
        for i in range(n_layers + 1):
            fan_in = in_dim if i == 0 else hidden
            if i in skips:
                fan_in += in_dim
            layers.append(nn.Linear(fan_in, out_dim if i == n_layers else hidden))
        self.layers = nn.ModuleList(layers)
        self.activation = make_activation(activation)
        self.out_activation = make_activation(out_activation)
        if zero_init_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """Apply.

        Args:
            x: ``[..., in_dim]``.

        Returns:
            ``[..., out_dim]``.
        """
        h = x
        for i, layer in enumerate(self.layers):
            if i in self.skip:
                h = torch.cat([h, x], dim=-1)
            h = layer(h)
            h = self.activation(h) if i < self.n_layers else self.out_activation(h)
        return h
