"""Pinhole cameras in the zoo's one convention.

Every camera in the zoo is an OpenCV pinhole camera: x right, y down, z forward, a
world-to-camera rigid transform ``w2c`` (4x4, metres) and pixel-space intrinsics ``K``
(3x3, principal point in pixels). Inside :class:`Cameras` — what the renderer reads, as gsplat
does — the centre of the top-left pixel is at (0.5, 0.5). Data batches follow OpenCV's own
pixel-centre convention instead (centre of the top-left pixel at (0, 0), ``zoo/data/schema.py``);
:meth:`Cameras.from_batch` converts at this edge by shifting the principal point by +0.5 px.
Parsers convert their dataset's own convention into the batch one at load time; the renderer and
every method only ever see :class:`Cameras`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import torch
from torch import Tensor

__all__ = ["Cameras"]

IndexLike = Union[int, slice, Sequence[int], Tensor]


@dataclass
class Cameras:
    """A batch of ``C`` pinhole cameras sharing one image size.

    Attributes:
        K: Pixel-space intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``. ``[C, 3, 3]``
        w2c: World-to-camera transforms (OpenCV axes). ``[C, 4, 4]``
        width: Image width in pixels.
        height: Image height in pixels.

    A single camera given as ``K [3, 3]`` / ``w2c [4, 4]`` is promoted to ``C = 1``.

    Raises:
        ValueError: If ``K`` / ``w2c`` do not have the shapes above, disagree on ``C``, or
            the image size is not positive.
    """

    K: Tensor
    w2c: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if not isinstance(self.K, Tensor) or not isinstance(self.w2c, Tensor):
            raise ValueError("Cameras: K and w2c must be torch tensors")
        if self.K.dim() == 2:
            self.K = self.K[None]
        if self.w2c.dim() == 2:
            self.w2c = self.w2c[None]
        if self.K.dim() != 3 or tuple(self.K.shape[-2:]) != (3, 3):
            raise ValueError(f"Cameras: K must have shape [C, 3, 3], got {list(self.K.shape)}")
        if self.w2c.dim() != 3 or tuple(self.w2c.shape[-2:]) != (4, 4):
            raise ValueError(
                f"Cameras: w2c must have shape [C, 4, 4], got {list(self.w2c.shape)}"
            )
        if self.K.shape[0] != self.w2c.shape[0]:
            raise ValueError(
                "Cameras: K [C, 3, 3] and w2c [C, 4, 4] must hold the same number of cameras, "
                f"got {self.K.shape[0]} and {self.w2c.shape[0]}"
            )
        self.width = int(self.width)
        self.height = int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"Cameras: width and height must be positive, got {self.width}x{self.height}"
            )

    def __len__(self) -> int:
        return int(self.K.shape[0])

    def __getitem__(self, index: IndexLike) -> "Cameras":
        """Selects a subset of the cameras (an int keeps the camera dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Cameras(self.K[index], self.w2c[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        """The device the camera tensors live on."""
        return self.w2c.device

    @property
    def c2w(self) -> Tensor:
        """Camera-to-world transforms. ``[C, 4, 4]``"""
        return torch.linalg.inv(self.w2c)

    @property
    def centers(self) -> Tensor:
        """Camera centres in world coordinates, ``-R^T t``. ``[C, 3]``"""
        rot = self.w2c[:, :3, :3]
        trans = self.w2c[:, :3, 3]
        return -(rot.transpose(-1, -2) @ trans[..., None])[..., 0]

    def to(self, *args: Any, **kwargs: Any) -> "Cameras":
        """Moves / casts ``K`` and ``w2c`` like :meth:`torch.Tensor.to`."""
        return Cameras(
            self.K.to(*args, **kwargs), self.w2c.to(*args, **kwargs), self.width, self.height
        )

    def detach(self) -> "Cameras":
        """Returns the cameras with ``K`` and ``w2c`` detached from the autograd graph."""
        return Cameras(self.K.detach(), self.w2c.detach(), self.width, self.height)

    def scaled(self, factor: float) -> "Cameras":
        """Returns the cameras for images resized by ``factor`` (rounded to whole pixels).

        The intrinsics are scaled per axis by the actual ratio of the rounded sizes, so
        the image plane keeps covering the same field of view.

        Args:
            factor: Resize factor, e.g. ``0.5`` to halve the resolution.

        Returns:
            New :class:`Cameras` with scaled ``K`` and the new ``width``/``height``.
        """
        if factor <= 0:
            raise ValueError(f"Cameras.scaled: factor must be positive, got {factor}")
        new_w = max(1, int(round(self.width * factor)))
        new_h = max(1, int(round(self.height * factor)))
        scale = torch.tensor(
            [new_w / self.width, new_h / self.height, 1.0], dtype=self.K.dtype, device=self.K.device
        )
        return Cameras(self.K * scale[None, :, None], self.w2c, new_w, new_h)

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any]) -> "Cameras":
        """Builds the cameras of a data batch (see ``zoo/data/schema.py``).

        Args:
            batch: A mapping with ``"K" [B, 3, 3]``, ``"w2c" [B, 4, 4]`` and
                ``"image" [B, 3, H, W]`` (only its size is read).

        The batch's ``K`` follows OpenCV's pixel-centre convention (pixel (0, 0) centred at
        (0, 0)); the returned cameras use the renderer's (centred at (0.5, 0.5)), so ``cx`` and
        ``cy`` are shifted by +0.5.

        Returns:
            :class:`Cameras` with ``C = B`` and the image's width and height.

        Raises:
            ValueError: If a key is missing or ``image`` is not ``[B, 3, H, W]``.
        """
        for key in ("K", "w2c", "image"):
            if key not in batch:
                raise ValueError(f"Cameras.from_batch: batch has no '{key}' entry")
        image = batch["image"]
        if not isinstance(image, Tensor) or image.dim() != 4:
            shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"Cameras.from_batch: batch['image'] must be [B, 3, H, W], got {shape}")
        height, width = int(image.shape[-2]), int(image.shape[-1])
        K = torch.as_tensor(batch["K"]).clone()
        K[..., 0, 2] += 0.5
        K[..., 1, 2] += 0.5
        return cls(K, batch["w2c"], width, height)
