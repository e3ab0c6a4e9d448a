"""Procedural SMPL / SMPL-X body model files, for tests and the demo.

The real SMPL and SMPL-X files are licensed and cannot be shipped or downloaded here. This module
builds a plausible human body procedurally and writes it in the official file layouts (the keys
and array shapes that ``smplx`` reads), so the real ``smplx`` loading and LBS code runs on it:

* SMPL: exactly 6890 vertices and 24 joints; ``posedirs [V, 3, 207]``, ``shapedirs [V, 3, 10]``,
  a sparse ``J_regressor`` in the ``.pkl`` (like the original) and a dense one in the ``.npz``.
* SMPL-X: exactly 10475 vertices and 55 joints (22 body, jaw, two eyes, 2 x 15 finger joints);
  ``posedirs [V, 3, 486]``, ``shapedirs [V, 3, 20]`` (10 shape + 10 expression directions, the
  layout smplx falls back to when a file has fewer than 300 + 100 directions, as SMPL-X v1.0),
  hand PCA ``hands_components{l,r} [45, 45]`` and ``hands_mean{l,r} [45]``, face landmarks
  ``lmk_faces_idx [51]``, ``lmk_bary_coords [51, 3]``, ``dynamic_lmk_faces_idx [79, 17]``,
  ``dynamic_lmk_bary_coords [79, 17, 3]``.
* Both: UV coordinates ``vt [T, 2]`` and ``ft [F, 3]`` as extra keys (smplx ignores them), one
  non-overlapping rectangular chart per body part (the part's surface unrolled, one texel density
  for all parts), skyline-packed into ``[0, 1]^2``; the triangles cover about 80 % of the square.

The body (rest pose, metres, +y up, facing +z, subject's left = +x; pelvis joint near the origin
at y = -0.2, soles at y ~ -1.13, crown at y ~ +0.59) is a union of closed, outward-oriented
surfaces of revolution with elliptic / super-elliptic cross-sections, one per body part: torso,
neck, head, upper arms, forearms, hands (SMPL: mittens; SMPL-X: palms, 5 three-segment fingers
and eyeballs), thighs, shins and feet. Skinning weights blend smoothly between a bone and its
neighbours near each joint (rows sum to 1). Shape directions change stature, girth, leg length,
shoulder width, arm length, torso length, belly depth, hip width, head size and limb bulk; SMPL-X
expression directions move the mouth, cheeks, brows and eyelids. Pose correctives of joint ``j``
are small bulges along the normal, confined to the vertices that blend joint ``j`` with another
bone. The ``J_regressor`` rows sum to 1 and reproduce the joints exactly. Vertices at the
indices smplx uses for its extra keypoints (nose, eyes, ears, finger tips, toes, heels) sit at
those body landmarks.

The ``.pkl`` files store ``posedirs`` as a pickle expression (``numpy.bincount`` of its
non-zeros, reshaped) that any ``pickle.load`` turns back into the dense ``[V, 3, P]`` array, so
a file is a few MB rather than 60; ``.npz`` files are compressed.

Generation is deterministic from ``seed`` (the seed perturbs proportions by a few percent; male
bodies are taller with broader shoulders, female ones shorter with wider hips) and cached per
``(model_type, seed, gender)`` in-process. Like the official models, every seed and gender of a
model type shares one topology: faces, vertex order, UV layout and landmark faces. CLI::

    python -m zoo.synthetic.body --out DIR [--seed S]

The generator is split along what it does: :mod:`zoo.synthetic.skeleton` (kinematic trees,
proportions, rest joints), :mod:`zoo.synthetic.mesh` (body parts, mesh, UV charts,
keypoint vertices) and :mod:`zoo.synthetic.rig` (skinning weights, blend shapes, joint
regressor, hand PCA, face landmarks); this module assembles them (shared topology, per-seed
arrays) and writes the files.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from zoo.synthetic.mesh import (
    _apply_permutation,
    _body_parts,
    _build_mesh,
    _pack_charts,
    _place_keypoints,
    _resolve_resolution,
    _vertex_normals,
    uv_coverage,
)
from zoo.synthetic.rig import (
    _expression_dirs,
    _hand_pca,
    _joint_regressor,
    _landmarks,
    _pose_dirs,
    _shape_dirs,
    _skinning_weights,
)
from zoo.synthetic.skeleton import (
    NUM_JOINTS,
    SMPL_PARENTS,
    SMPLX_PARENTS,
    _GENDERS,
    _Proportions,
    _proportions,
    _skeleton,
)

__all__ = [
    "GENERATOR_VERSION",
    "NUM_VERTICES",
    "NUM_JOINTS",
    "SMPL_PARENTS",
    "SMPLX_PARENTS",
    "make_body_arrays",
    "write_body_model",
    "write_body_models",
    "uv_coverage",
    "main",
]

#: Bumped whenever the generated arrays change; part of the manifest that decides re-writing.
GENERATOR_VERSION = 1
_GENERATOR = "zoo.synthetic.body"  # manifest tag (fixed: the CLI runs this module as __main__)
#: Tags earlier releases wrote (the module lived at zoo/core/synthetic_body.py); their caches stay valid.
_OLD_GENERATORS = ("zoo.core.synthetic_body",)
#: Vertex count of each model type (as the official models).
NUM_VERTICES = {"smpl": 6890, "smplx": 10475}

_PREFIX = {"smpl": "SMPL", "smplx": "SMPLX"}
_MANIFEST = "synthetic_body.json"


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

_CACHE: Dict[Tuple[str, int, str], Dict[str, np.ndarray]] = {}


@dataclass
class _Topology:
    """What every seed and gender of a model type shares: resolution, vertex order, UV layout."""

    resolution: Dict[str, Tuple[int, int]]
    perm: np.ndarray
    vt: np.ndarray
    landmarks: Dict[str, np.ndarray]


_TOPOLOGY: Dict[str, _Topology] = {}


def _topology(model_type: str) -> _Topology:
    """Resolution, keypoint vertex order and UV layout, fixed on the nominal body (all factors 1)."""
    if model_type not in _TOPOLOGY:
        nominal = _Proportions(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
        sk = _skeleton(model_type, nominal)
        parts = _body_parts(model_type, sk, nominal)
        _resolve_resolution(parts, NUM_VERTICES[model_type])
        mesh = _build_mesh(parts)
        _pack_charts(mesh)
        perm = _place_keypoints(model_type, mesh, sk, parts)
        _apply_permutation(mesh, perm)
        landmarks = _landmarks(mesh, parts, sk) if model_type == "smplx" else {}
        _TOPOLOGY[model_type] = _Topology({p.name: (p.rings, p.segments) for p in parts}, perm, mesh.vt, landmarks)
    return _TOPOLOGY[model_type]


def _generate(model_type: str, seed: int, gender: str) -> Dict[str, np.ndarray]:
    topo = _topology(model_type)
    P = _proportions(seed, gender)
    sk = _skeleton(model_type, P)
    parts = _body_parts(model_type, sk, P)
    for p in parts:
        p.rings, p.segments = topo.resolution[p.name]
    mesh = _build_mesh(parts)
    mesh.vt = topo.vt
    _apply_permutation(mesh, topo.perm)
    parents = SMPL_PARENTS if model_type == "smpl" else SMPLX_PARENTS
    W = _skinning_weights(model_type, mesh, parts, sk)
    normals = _vertex_normals(mesh.verts, mesh.faces)
    shapedirs = _shape_dirs(model_type, mesh, parts, sk)
    if model_type == "smplx":
        shapedirs = np.concatenate([shapedirs, _expression_dirs(mesh, parts, sk, normals)], axis=2)
    posedirs = _pose_dirs(W, normals, amp=0.008 * P.scale)
    Jreg = _joint_regressor(mesh.verts, sk.joints, W, parents)
    s = P.scale
    kintree = np.stack([np.array(parents, dtype=np.int64), np.arange(len(parents))]).astype(np.uint32)
    kintree[0, 0] = np.iinfo(np.uint32).max
    arrays: Dict[str, np.ndarray] = {
        "v_template": (mesh.verts * s).astype(np.float32),
        "f": mesh.faces.astype(np.int32),
        "J_regressor": Jreg.astype(np.float32),
        "J": (sk.joints * s).astype(np.float32),
        "weights": W.astype(np.float32),
        "posedirs": posedirs,
        "shapedirs": (shapedirs * s).astype(np.float32),
        "kintree_table": kintree,
        "vt": mesh.vt.astype(np.float32),
        "ft": mesh.ft.astype(np.int32),
    }
    if model_type == "smplx":
        for tag, side in (("l", 1), ("r", -1)):
            comps, mean = _hand_pca(sk, side, seed)
            arrays[f"hands_components{tag}"] = comps.astype(np.float32)
            arrays[f"hands_mean{tag}"] = mean.astype(np.float32)
        arrays.update({k: v.copy() for k, v in topo.landmarks.items()})
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def make_body_arrays(model_type: str, seed: int = 0, gender: str = "neutral") -> Dict[str, np.ndarray]:
    """Arrays of a procedural SMPL / SMPL-X model, keyed as in the official files.

    Args:
        model_type: ``"smpl"`` or ``"smplx"``.
        seed: perturbs the body's proportions by a few percent (deterministic).
        gender: ``"neutral"``, ``"male"`` (taller, broader shoulders) or ``"female"``
            (shorter, wider hips).

    Returns:
        A new dict of read-only arrays (cached per ``(model_type, seed, gender)``):
        ``v_template [V, 3]``, ``f [F, 3]``, ``J_regressor [J, V]`` (dense), ``J [J, 3]``,
        ``weights [V, J]``, ``posedirs [V, 3, 9 (J - 1)]``, ``shapedirs [V, 3, 10]``
        (SMPL-X ``[V, 3, 20]``: 10 shape + 10 expression), ``kintree_table [2, J]``,
        ``vt [T, 2]``, ``ft [F, 3]``; SMPL-X also ``hands_components{l,r} [45, 45]``,
        ``hands_mean{l,r} [45]``, ``lmk_faces_idx [51]``, ``lmk_bary_coords [51, 3]``,
        ``dynamic_lmk_faces_idx [79, 17]``, ``dynamic_lmk_bary_coords [79, 17, 3]``.

    Raises:
        ValueError: for an unknown model type or gender.
    """
    if model_type not in NUM_VERTICES:
        raise ValueError(f"model_type must be 'smpl' or 'smplx', got {model_type!r}")
    if gender not in _GENDERS:
        raise ValueError(f"gender must be one of {_GENDERS}, got {gender!r}")
    key = (model_type, int(seed), gender)
    if key not in _CACHE:
        _CACHE[key] = _generate(model_type, int(seed), gender)
    return dict(_CACHE[key])


class _Dense:
    """Pickles a mostly-zero array as ``reshape(float32(bincount(idx, vals, n)), shape)``."""

    class _Flat:
        def __init__(self, idx: np.ndarray, vals: np.ndarray, size: int) -> None:
            self.args = (idx, vals, size)

        def __reduce__(self):
            return (np.bincount, self.args)

    class _Cast:
        def __init__(self, inner: "_Dense._Flat") -> None:
            self.inner = inner

        def __reduce__(self):
            return (np.float32, (self.inner,))

    def __init__(self, array: np.ndarray) -> None:
        flat = np.ascontiguousarray(array).reshape(-1)
        idx = np.flatnonzero(flat)
        self.shape = tuple(array.shape)
        self.cast = _Dense._Cast(_Dense._Flat(idx.astype(np.int64), flat[idx].astype(np.float64), flat.size))

    def __reduce__(self):
        return (np.reshape, (self.cast, self.shape))


def _file_payload(model_type: str, fmt: str, arrays: Dict[str, np.ndarray]) -> dict:
    data: dict = dict(arrays)
    if fmt == "pkl":
        data["posedirs"] = _Dense(arrays["posedirs"])
        if model_type == "smpl":
            from scipy import sparse

            data["J_regressor"] = sparse.csc_matrix(arrays["J_regressor"].astype(np.float64))
            data["bs_style"] = "lbs"
            data["bs_type"] = "lrotmin"
    return data


def _atomic_write(path: Path, write: Callable[[object], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_npz(fh, arrays: Dict[str, np.ndarray]) -> None:
    """A standard compressed ``.npz`` (what ``np.savez_compressed`` writes), at deflate level 1."""
    import zipfile

    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", mode="w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(arr), allow_pickle=False)


def write_body_model(path, model_type: str, fmt: str = "pkl", seed: int = 0, gender: str = "neutral") -> Path:
    """Write one procedural model file in the official layout, atomically (temp file + rename).

    Args:
        path: output file (its folder is created).
        model_type: ``"smpl"`` or ``"smplx"``.
        fmt: ``"pkl"`` (pickled dict; SMPL's ``J_regressor`` as a ``scipy.sparse.csc_matrix``)
            or ``"npz"`` (compressed; all arrays dense).
        seed: see :func:`make_body_arrays`.
        gender: see :func:`make_body_arrays`.

    Returns:
        The written path.

    Raises:
        ValueError: for an unknown format, model type or gender.
    """
    if fmt not in ("pkl", "npz"):
        raise ValueError(f"fmt must be 'pkl' or 'npz', got {fmt!r}")
    path = Path(path)
    data = _file_payload(model_type, fmt, make_body_arrays(model_type, seed, gender))
    if fmt == "pkl":
        _atomic_write(path, lambda fh: pickle.dump(data, fh, protocol=4))
    else:
        _atomic_write(path, lambda fh: _write_npz(fh, data))
    return path


def _expected_files() -> List[Tuple[str, str, str, str]]:
    out = []
    for model_type, fmts in (("smpl", ("pkl", "npz")), ("smplx", ("npz", "pkl"))):
        for gender in _GENDERS:
            for fmt in fmts:
                out.append((f"{model_type}/{_PREFIX[model_type]}_{gender.upper()}.{fmt}", model_type, fmt, gender))
    return out


def write_body_models(root, seed: int = 0) -> Path:
    """Write ``root/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.{pkl,npz}`` and ``root/smplx/SMPLX_*.{npz,pkl}``.

    A manifest (``root/synthetic_body.json``: generator version and seed) records what was
    written; when it matches and every file is present nothing is rewritten. Files that exist
    without a manifest are never overwritten (they may be real, licensed models).

    Args:
        root: output folder (usable as ``ZOO_BODY_MODELS``).
        seed: see :func:`make_body_arrays`.

    Returns:
        ``root`` as a Path.

    Raises:
        FileExistsError: when a model file exists in ``root`` that this generator did not write.
    """
    root = Path(root)
    manifest_path = root / _MANIFEST
    files = _expected_files()
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
    ours = isinstance(manifest, dict) and manifest.get("generator") in (_GENERATOR, *_OLD_GENERATORS)
    if ours and manifest.get("version") == GENERATOR_VERSION and manifest.get("seed") == int(seed) and all(
        (root / rel).is_file() for rel, *_ in files
    ):
        return root
    if not ours:
        foreign = [str(root / rel) for rel, *_ in files if (root / rel).exists()]
        if foreign:
            raise FileExistsError(
                f"{foreign[0]} exists and was not written by {_GENERATOR} (no {_MANIFEST} in {root}); "
                "refusing to overwrite what may be a real body model - choose another folder"
            )
    if manifest_path.exists():
        manifest_path.unlink()  # a crash below must not leave a manifest claiming stale files
    for rel, model_type, fmt, gender in files:
        write_body_model(root / rel, model_type, fmt, seed, gender)
    payload = {"generator": _GENERATOR, "version": GENERATOR_VERSION, "seed": int(seed), "files": [f[0] for f in files]}
    _atomic_write(manifest_path, lambda fh: fh.write(json.dumps(payload, indent=1).encode()))
    return root


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m zoo.synthetic.body --out DIR [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m zoo.synthetic.body",
        description="Write procedural SMPL / SMPL-X model files (usable as ZOO_BODY_MODELS).",
    )
    parser.add_argument("--out", required=True, help="output folder; gets smpl/ and smplx/")
    parser.add_argument("--seed", type=int, default=0, help="proportion perturbation seed")
    args = parser.parse_args(argv)
    try:
        root = write_body_models(args.out, seed=args.seed)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
