"""Export an avatar's Gaussians as the standard 3DGS ``.ply`` (what common 3DGS viewers open).

Layout (binary little-endian, one float32 row per Gaussian, the original 3DGS order)::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3*(K-1)-1)  opacity  scale_0..2  rot_0..3

* ``f_dc`` is the degree-0 SH coefficient: ``rgb = 0.5 + C0 * f_dc`` (C0 = 0.2820948);
  ``f_rest`` holds the higher bands channel-major (all R, then G, then B), zero-padded to
  ``sh_degree`` (default 3: 45 values) for viewers that expect the full layout;
* ``opacity`` is a logit, ``scale_*`` are natural logs of the linear scales, ``rot_*`` a unit
  quaternion (w, x, y, z); ``nx ny nz`` are zero (the 3DGS convention).

The bytes come from ``gsplat.export_splats`` (CPU); the normals the original layout carries are
inserted after ``z``. Files are written through a temporary file and a rename.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from zoo.core.gaussians import Gaussians, num_sh_bases

__all__ = ["SH_C0", "ply_attributes", "ply_bytes", "write_ply", "pose_from_file", "pose_from_dataset", "export_checkpoint"]

SH_C0 = 0.28209479177387814
_EPS = 1e-6


def ply_attributes(g: Gaussians, sh_degree: int = 3) -> Dict[str, torch.Tensor]:
    """The stored (pre-activation) attributes of ``g`` in the 3DGS layout.

    Args:
        g: the Gaussians (activated values: linear scales, opacities in (0, 1), colours in [0, 1] or SH).
        sh_degree: SH degree of the file (>= the Gaussians' own degree; higher bands are zero).

    Returns:
        ``means [N,3]``, ``scales [N,3]`` (log), ``quats [N,4]`` (unit wxyz), ``opacities [N]`` (logit),
        ``sh0 [N,1,3]``, ``shN [N,K-1,3]`` with ``K = (sh_degree + 1) ** 2``.

    Raises:
        ValueError: non-finite values (named), or an SH degree below the Gaussians' own.
    """
    g = g.detach().to("cpu", torch.float32)
    n = len(g)
    bases = num_sh_bases(int(sh_degree))
    if g.sh is not None:
        if g.sh.shape[1] > bases:
            raise ValueError(f"sh_degree {sh_degree} is below the Gaussians' own degree {g.sh_degree}")
        sh = torch.zeros(n, bases, 3)
        sh[:, : g.sh.shape[1]] = g.sh
    else:
        if g.colors.shape[1] != 3:
            raise ValueError(f"exporting colours needs RGB colors [N, 3], got {list(g.colors.shape)}")
        sh = torch.zeros(n, bases, 3)
        sh[:, 0] = (g.colors - 0.5) / SH_C0
    attrs = {
        "means": g.means,
        "scales": torch.log(g.scales.clamp_min(1e-12)),
        "quats": g.quats / g.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12),
        "opacities": torch.logit(g.opacities.clamp(_EPS, 1.0 - _EPS)),
        "sh0": sh[:, :1],
        "shN": sh[:, 1:],
    }
    for name, value in attrs.items():
        bad = ~torch.isfinite(value.reshape(n, -1)).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"cannot export: {int(bad.sum())} of {n} Gaussians have non-finite {name}")
    return attrs


def ply_bytes(g: Gaussians, sh_degree: int = 3) -> bytes:
    """The standard 3DGS PLY of ``g`` (see the module docstring) as bytes."""
    from gsplat import export_splats

    attrs = ply_attributes(g, sh_degree)
    raw = export_splats(attrs["means"], attrs["scales"], attrs["quats"], attrs["opacities"], attrs["sh0"],
                        attrs["shN"], format="ply")
    marker = b"end_header\n"
    cut = raw.index(marker) + len(marker)
    header = raw[:cut].decode("ascii").splitlines(keepends=True)
    props = [line for line in header if line.startswith("property ")]
    at = header.index("property float z\n") + 1
    header[at:at] = ["property float nx\n", "property float ny\n", "property float nz\n"]
    rows = np.frombuffer(raw[cut:], dtype="<f4").reshape(len(g), len(props))
    rows = np.concatenate([rows[:, :3], np.zeros((len(g), 3), "<f4"), rows[:, 3:]], axis=1)
    return "".join(header).encode("ascii") + np.ascontiguousarray(rows, dtype="<f4").tobytes()


def write_ply(g: Gaussians, path: os.PathLike | str, sh_degree: int = 3) -> Path:
    """Write ``g`` as a standard 3DGS PLY through a temporary file and a rename.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ply_bytes(g, sh_degree)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def pose_from_file(path: os.PathLike | str, frame: int = 0) -> Dict[str, np.ndarray]:
    """Body parameters of frame ``frame`` of a pose file (`zoo.methods.base.load_pose_file` formats).

    Raises:
        ValueError: the frame index is out of range.
    """
    from zoo.methods.base import load_pose_file

    poses = load_pose_file(path)
    T = int(np.asarray(poses["body_pose"]).shape[0])
    if not 0 <= frame < T:
        raise ValueError(f"--frame {frame} is out of range: {path} holds {T} frames")
    return {k: np.asarray(v)[frame] for k, v in poses.items()
            if k != "betas" and np.asarray(v).ndim >= 1 and np.asarray(v).shape[0] == T}


def pose_from_dataset(data: Mapping[str, Any], frame_id: int) -> Dict[str, np.ndarray]:
    """Body parameters of frame ``frame_id`` of the recorded training data (parser metadata only)."""
    from zoo import runner
    from zoo.data.parsers import PARSERS

    root = runner.resolve_data_root(data)
    parser = PARSERS[str(data["format"])](root, **dict(data.get("options") or {}))
    for record in parser.records:
        if int(record.frame_id) == int(frame_id):
            return {k: np.asarray(v) for k, v in record.body.items() if k != "betas"}
    known = sorted({int(r.frame_id) for r in parser.records})
    raise ValueError(f"--frame {frame_id}: the data at {root} has no such frame (frames {known[0]}..{known[-1]})")


def export_checkpoint(ckpt: os.PathLike | str, out: os.PathLike | str, pose: Optional[os.PathLike | str] = None,
                      frame: Optional[int] = None, sh_degree: int = 3, body_models: Optional[str] = None) -> Path:
    """Load a checkpoint and write its avatar's Gaussians as a 3DGS PLY.

    Args:
        ckpt: checkpoint file (or a registry name, downloaded and verified first).
        out: the .ply to write.
        pose: a pose file: the avatar posed in its frame ``frame`` (default 0).
        frame: without ``pose``: the training data's frame id ``frame`` (with its learned correction);
            with neither: the canonical avatar.
        sh_degree: SH degree of the file.
        body_models: body-model folder override.

    Returns:
        The written path.
    """
    from zoo import checkpoints

    path = Path(ckpt)
    if not path.is_file() and str(ckpt) in checkpoints.load_registry():
        path = checkpoints.download(str(ckpt))
    model = checkpoints.load(path, body_models=body_models)
    if not hasattr(model, "gaussians"):
        raise ValueError(f"method {model.method_name!r} does not expose gaussians(body_params) yet")
    import inspect

    # view-dependent methods (gs_avatar) fit SH colours: fit them at the file's degree
    extra = {"sh_degree": int(sh_degree)} if "sh_degree" in inspect.signature(model.gaussians).parameters else {}
    if pose is not None:
        g = model.gaussians(pose_from_file(pose, 0 if frame is None else int(frame)), **extra)
    elif frame is not None:
        g = model.gaussians(pose_from_dataset(model.data_info.get("data") or {}, int(frame)), frame_id=int(frame),
                            **extra)
    else:
        J = 3 * int(getattr(getattr(model, "body", None), "num_body_joints", 23))
        g = model.gaussians({"body_pose": np.zeros(J, np.float32)}, canonical=True, **extra)
    return write_ply(g, out, sh_degree)
