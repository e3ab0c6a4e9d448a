"""The data layer: the batch contract, one parser and one writer per on-disk format, one datamodule.

* :mod:`zoo.data.schema` — keys, shapes, splits, protocol description, ``validate_frame``, ``collate``.
* :mod:`zoo.data.parsers` — ``PARSERS[name](root, **options)`` for ``zju_mocap``,
  ``people_snapshot``, ``neuman`` and ``x_humans``.
* :mod:`zoo.data.writers` — ``write(format, capture, out_dir)``: the inverse of the parsers.
* :mod:`zoo.data.datamodule` — ``AvatarDataModule``, one LightningDataModule for every format.
* :mod:`zoo.data.body_files` — numpy access to SMPL / SMPL-X files (rest joints) and rotations.
* :mod:`zoo.data.protocols` — the evaluation protocol presets of every dataset (one table).
* (procedural subjects in any layout live in :mod:`zoo.synthetic`, outside the runtime data layer.)

Submodules are imported on first use so ``import zoo.data`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AvatarDataModule", "PARSERS", "Capture", "CaptureFrame", "write"]

_LAZY = {
    "AvatarDataModule": "zoo.data.datamodule",
    "PARSERS": "zoo.data.parsers",
    "Capture": "zoo.data.writers",
    "CaptureFrame": "zoo.data.writers",
    "write": "zoo.data.writers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
