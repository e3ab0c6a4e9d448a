"""A typed container for a set of 3D Gaussians (activated values, ready to render).

The fields hold *activated* quantities — linear scales, opacities in (0, 1), quaternions in
wxyz order — exactly what :func:`zoo.core.render.rasterize` consumes. Methods keep their raw
trainable parameters (log-scales, logit-opacities, ...) themselves and build a
:class:`Gaussians` per forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["Gaussians", "sh_degree_from_bases", "num_sh_bases"]

IndexLike = Union[int, slice, Sequence[int], Tensor]


def num_sh_bases(degree: int) -> int:
    """Number of real SH basis functions up to ``degree`` (inclusive): ``(degree + 1) ** 2``."""
    if degree < 0:
        raise ValueError(f"SH degree must be >= 0, got {degree}")
    return (degree + 1) ** 2


def sh_degree_from_bases(num_bases: int) -> int:
    """Inverse of :func:`num_sh_bases`.

    Args:
        num_bases: ``K``, the number of SH coefficients per colour channel.

    Returns:
        The degree ``d`` with ``(d + 1) ** 2 == K``.

    Raises:
        ValueError: If ``K`` is not a perfect square.
    """
    degree = math.isqrt(int(num_bases)) - 1
    if degree < 0 or (degree + 1) ** 2 != num_bases:
        raise ValueError(f"the number of SH bases must be a square (1, 4, 9, 16, ...), got {num_bases}")
    return degree


@dataclass
class Gaussians:
    """``N`` 3D Gaussians with either plain colours or SH coefficients (or both).

    Attributes:
        means: Centres in world coordinates. ``[N, 3]``
        quats: Rotations as quaternions ``(w, x, y, z)``; need not be normalised. ``[N, 4]``
        scales: Linear standard deviations along the local axes (> 0). ``[N, 3]``
        opacities: Opacities in ``(0, 1)``. ``[N]``
        colors: Post-activation colours / features, or None. ``[N, D]``
        sh: Spherical-harmonics coefficients (band-major, ``K = (d + 1) ** 2``), or None.
            ``[N, K, 3]``. When set, :func:`zoo.core.render.render` uses them and evaluates
            ``sh_degree`` bands.

    Raises:
        ValueError: If a field has the wrong shape, the fields disagree on ``N``, or
            neither ``colors`` nor ``sh`` is given.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Optional[Tensor] = None
    sh: Optional[Tensor] = None

    def __post_init__(self) -> None:
        for name in ("means", "quats", "scales", "opacities"):
            if not isinstance(getattr(self, name), Tensor):
                raise ValueError(f"Gaussians.{name} must be a torch tensor")
        n = self.means.shape[0] if self.means.dim() >= 1 else -1
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if tuple(value.shape) != shape:
                pretty = "[N, " + ", ".join(str(s) for s in shape[1:]) + "]" if len(shape) > 1 else "[N]"
                raise ValueError(
                    f"Gaussians.{name} must have shape {pretty} with N = {n} (from means [N, 3]), "
                    f"got {list(value.shape)}"
                )
        if self.colors is None and self.sh is None:
            raise ValueError("Gaussians needs colors [N, D] or sh [N, K, 3] (got neither)")
        if self.colors is not None and (self.colors.dim() != 2 or self.colors.shape[0] != n):
            raise ValueError(
                f"Gaussians.colors must have shape [N, D] with N = {n}, got {list(self.colors.shape)}"
            )
        if self.sh is not None:
            if self.sh.dim() != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
                raise ValueError(
                    f"Gaussians.sh must have shape [N, K, 3] with N = {n}, got {list(self.sh.shape)}"
                )
            sh_degree_from_bases(self.sh.shape[1])

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> Optional[int]:
        """SH degree ``d`` with ``K = (d + 1) ** 2``, or None when there are no SH coefficients."""
        if self.sh is None:
            return None
        return sh_degree_from_bases(self.sh.shape[1])

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of ``means``."""
        return self.means.dtype

    def _map(self, fn: Any) -> "Gaussians":
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = None if value is None else fn(value)
        return Gaussians(**values)

    def to(self, *args: Any, **kwargs: Any) -> "Gaussians":
        """Moves / casts every tensor like :meth:`torch.Tensor.to`."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Gaussians":
        """Returns a copy whose tensors are detached from the autograd graph."""
        return self._map(lambda t: t.detach())

    def __getitem__(self, index: IndexLike) -> "Gaussians":
        """Selects Gaussians by boolean mask ``[N]``, integer indices, a slice or an int.

        An int keeps the leading dimension (the result holds one Gaussian).
        """
        if isinstance(index, int):
            index = [index]
        if isinstance(index, Tensor) and index.dtype == torch.bool and index.shape != (len(self),):
            raise ValueError(
                f"Gaussians[mask]: a boolean mask must have shape [N] = [{len(self)}], "
                f"got {list(index.shape)}"
            )
        return self._map(lambda t: t[index])

    @staticmethod
    def cat(items: Sequence["Gaussians"]) -> "Gaussians":
        """Concatenates Gaussian sets along ``N``.

        Args:
            items: Non-empty sequence; every item must have the same optional fields
                (all with ``colors`` or none, all with ``sh`` or none) and matching
                trailing shapes.

        Returns:
            A :class:`Gaussians` with ``N = sum(len(g) for g in items)``.

        Raises:
            ValueError: For an empty sequence or items with different optional fields.
        """
        items = list(items)
        if not items:
            raise ValueError("Gaussians.cat needs at least one Gaussians")
        values = {}
        for f in fields(Gaussians):
            parts = [getattr(g, f.name) for g in items]
            present = [p is not None for p in parts]
            if any(present) and not all(present):
                raise ValueError(
                    f"Gaussians.cat: field '{f.name}' is set in some items and None in others"
                )
            if not present[0]:
                values[f.name] = None
                continue
            trailing = {tuple(p.shape[1:]) for p in parts}
            if len(trailing) > 1:
                raise ValueError(
                    f"Gaussians.cat: field '{f.name}' has different trailing shapes {sorted(trailing)}"
                )
            values[f.name] = torch.cat(parts, dim=0)
        return Gaussians(**values)
