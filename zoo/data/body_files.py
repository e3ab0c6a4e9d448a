"""Numpy-only access to SMPL / SMPL-X model files and body-parameter rotation helpers.

Parsers need the pelvis joint ``J0`` of the shaped zero-pose body to convert between the
EasyMocap ``Rh/Th`` convention (ZJU-MoCap, DATASETS.md §1A) or NeuMan's alignments (§3B) and the
standard SMPL ``global_orient/transl`` convention. This module computes it from the model file
with numpy alone (the chumpy-tolerant unpickling is :mod:`zoo.core.model_files`', which the
body-model core reads with too), so the data layer does not depend on smplx or the body model.

Model files are looked up as ``<root>/<model_type>/<SMPL|SMPLX>_<GENDER>.{pkl,npz}`` where
``root`` is the ``body_models=`` option of a parser or the ``ZOO_BODY_MODELS`` environment
variable. A data folder may name its body models itself: a ``body_models`` pointer file (one line,
the folder's path; ``python -m zoo data synth`` writes one) in the subject folder or the dataset
folder above it (:func:`find_pointer`), so training on it needs no environment variable. The files are licensed (https://smpl.is.tue.mpg.de, https://smpl-x.is.tue.mpg.de) and
must be supplied by the user; tests use the procedural files of ``zoo.synthetic.body``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core.model_files import ENV_VAR, ModelUnpickler, find_model_file, unchumpy

__all__ = [
    "ENV_VAR",
    "POINTER",
    "find_pointer",
    "write_pointer",
    "model_file",
    "load_model_arrays",
    "rest_joints",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "orthonormalize",
]

#: Name of the pointer file (or folder) in a data folder naming the body models it was made with.
POINTER = "body_models"

_cache: dict[tuple[str, float], dict[str, np.ndarray]] = {}


def model_file(
    model_path_or_dir: str | os.PathLike | None = None,
    model_type: str = "smpl",
    gender: str = "neutral",
) -> Path:
    """Find the SMPL / SMPL-X model file to load: the same file the body core's
    :class:`~zoo.core.body.BodyModel` loads (:func:`zoo.core.model_files.find_model_file`), so a
    parser's rest joints and the rendered body always come from one file.

    Args:
        model_path_or_dir: a model file, a folder holding ``smpl/`` and ``smplx/``, or a folder
            holding the model files directly; None uses ``$ZOO_BODY_MODELS``.
        model_type: ``"smpl"`` or ``"smplx"``.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.

    Returns:
        The path of an existing ``.pkl`` or ``.npz`` file.

    Raises:
        FileNotFoundError: naming the files looked for and ``ZOO_BODY_MODELS``.
        ValueError: for an unknown model type or gender.
    """
    return find_model_file(model_type, model_path_or_dir, gender)


def write_pointer(folder: str | os.PathLike, body_models: str | os.PathLike) -> Path:
    """Write ``<folder>/body_models``: one line, the absolute path of the body-model folder.

    Written to a temporary file and renamed, so a reader never sees half a path.

    Returns:
        The pointer file.
    """
    target = Path(body_models).expanduser().resolve()
    if not target.is_dir():
        raise FileNotFoundError(f"body-model folder not found: {target} (expected smpl/ and smplx/ inside)")
    path = Path(folder) / POINTER
    if path.is_dir():
        raise FileExistsError(f"{path} is a folder of body models; not replacing it with a pointer file")
    tmp = path.with_name(f".{POINTER}.tmp{os.getpid()}")
    tmp.write_text(f"{target}\n")
    os.replace(tmp, path)
    return path


def find_pointer(data_root: str | os.PathLike | None) -> Path | None:
    """The body-model folder a data folder names, or None.

    Looks for ``body_models`` in ``data_root`` (a subject folder) and then in its parent (the
    dataset folder): a folder of that name is the body-model folder itself; a file holds its path
    (absolute, or relative to the file's folder).

    Raises:
        ValueError: an empty pointer file.
        FileNotFoundError: a pointer to a folder that does not exist.
    """
    if data_root in (None, "", "???"):
        return None
    root = Path(data_root).expanduser()
    for folder in (root, root.parent):
        entry = folder / POINTER
        if entry.is_dir():
            return entry
        if not entry.is_file():
            continue
        text = entry.read_text(errors="replace").strip()
        if not text or "\n" in text:
            raise ValueError(f"{entry}: expected one line, the path of a folder holding smpl/ and smplx/; "
                             f"got {len(text.splitlines())} lines")
        target = Path(text).expanduser()
        target = target if target.is_absolute() else entry.parent / target
        if not target.is_dir():
            raise FileNotFoundError(f"{entry} points to {target}, which is not a folder (expected smpl/ and "
                                    "smplx/ inside; rewrite the file or pass body_models=<folder>)")
        return target
    return None


def _to_dense(value: Any, key: str, path: Path) -> np.ndarray:
    value = unchumpy(value, key, path)
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    if hasattr(value, "toarray"):  # scipy.sparse matrix (SMPL's J_regressor in .pkl files)
        value = value.toarray()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: '{key}' is not a numeric array ({type(value).__name__})") from exc


def load_model_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load the arrays needed for rest joints from a SMPL / SMPL-X ``.pkl`` or ``.npz`` file.

    Args:
        path: the model file.

    Returns:
        ``v_template [V,3]``, ``shapedirs [V,3,S]`` and ``J_regressor [J,V]`` (dense), float64.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if a key is missing or has the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: body model file not found (set {ENV_VAR} or pass body_models=)")
    key_ = (str(path.resolve()), path.stat().st_mtime)
    if key_ in _cache:
        return _cache[key_]
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=True) as data:
            raw = {k: data[k] for k in data.files}
    else:
        with open(path, "rb") as fh:
            try:
                raw = ModelUnpickler(fh, encoding="latin1").load()
            except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
                raise ValueError(f"{path}: cannot unpickle body model ({exc})") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    out: dict[str, np.ndarray] = {}
    for key in ("v_template", "shapedirs", "J_regressor"):
        if key not in raw:
            raise ValueError(f"{path}: body model has no '{key}' (keys: {sorted(raw)})")
        out[key] = _to_dense(raw[key], key, path)
    v = out["v_template"]
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{path}: v_template has shape {v.shape}, expected [V, 3]")
    if out["shapedirs"].ndim != 3 or out["shapedirs"].shape[:2] != v.shape:
        raise ValueError(f"{path}: shapedirs has shape {out['shapedirs'].shape}, expected [{v.shape[0]}, 3, S]")
    if out["J_regressor"].ndim != 2 or out["J_regressor"].shape[1] != v.shape[0]:
        raise ValueError(f"{path}: J_regressor has shape {out['J_regressor'].shape}, expected [J, {v.shape[0]}]")
    _cache[key_] = out
    return out


def rest_joints(
    model_path_or_dir: str | os.PathLike | None,
    betas: Any,
    model_type: str = "smpl",
    gender: str = "neutral",
    expression: Any = None,
) -> np.ndarray:
    """Joints of the shaped body in the zero pose (``J_regressor @ (v_template + shapedirs·betas)``).

    Row 0 is the pelvis ``J0`` used by the ZJU-MoCap ``Rh/Th`` conversion (DATASETS.md §1A) and by
    the NeuMan alignment conversion (§3B).

    Args:
        model_path_or_dir: see :func:`model_file` (None = ``$ZOO_BODY_MODELS``).
        betas: ``[S]`` shape coefficients (S may be smaller than the model's shape space).
        model_type: ``"smpl"`` or ``"smplx"``.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        expression: SMPL-X ``[E]`` expression coefficients (added after the shape space), or None.

    Returns:
        ``[J, 3]`` float64 rest joints.

    Raises:
        FileNotFoundError: if the model file is missing (names the file and ``ZOO_BODY_MODELS``).
        ValueError: if more betas are given than the model has shape directions.
    """
    arrays = load_model_arrays(model_file(model_path_or_dir, model_type, gender))
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    shapedirs = arrays["shapedirs"]
    num_dirs = shapedirs.shape[2]
    # SMPL-X files keep 300 shape then 100 expression directions in one array; reduced files
    # (fewer than 400) keep 10 shape then 10 expression directions (as the smplx package reads them).
    if model_type == "smplx":
        num_shape = 300 if num_dirs >= 400 else min(10, num_dirs)
    else:
        num_shape = num_dirs
    if betas.shape[0] > num_shape:
        raise ValueError(f"got {betas.shape[0]} betas but the {model_type} model has {num_shape} shape directions")
    v = arrays["v_template"] + shapedirs[:, :, : betas.shape[0]] @ betas
    if expression is not None:
        expression = np.asarray(expression, dtype=np.float64).reshape(-1)
        if expression.size:
            if model_type != "smplx" or num_dirs < num_shape + expression.shape[0]:
                raise ValueError(f"the {model_type} model has no room for {expression.shape[0]} expression coefficients")
            v = v + shapedirs[:, :, num_shape : num_shape + expression.shape[0]] @ expression
    return arrays["J_regressor"] @ v


# --------------------------------------------------------------------------------------------
# Rotations (numpy, float64)


def axis_angle_to_matrix(axis_angle: Any) -> np.ndarray:
    """Rodrigues' formula.

    Args:
        axis_angle: ``[..., 3]`` rotation vectors (angle = norm, radians).

    Returns:
        ``[..., 3, 3]`` rotation matrices.
    """
    aa = np.asarray(axis_angle, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    small = theta < 1e-12
    axis = aa / np.where(small, 1.0, theta)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    cross = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(aa.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), cross.shape)
    R = eye + s * cross + (1.0 - c) * (cross @ cross)
    # First-order expansion for tiny angles keeps the rotation exact to float precision.
    tiny = eye + np.stack(
        [zero, -aa[..., 2], aa[..., 1], aa[..., 2], zero, -aa[..., 0], -aa[..., 1], aa[..., 0], zero], axis=-1
    ).reshape(cross.shape)
    return np.where(small[..., None], tiny, R)


def matrix_to_axis_angle(matrix: Any) -> np.ndarray:
    """Inverse of :func:`axis_angle_to_matrix` (angle in [0, pi]), via a unit quaternion.

    Args:
        matrix: ``[..., 3, 3]`` rotation matrices.

    Returns:
        ``[..., 3]`` rotation vectors.
    """
    R = np.asarray(matrix, dtype=np.float64)
    batch = R.shape[:-2]
    R = R.reshape(-1, 3, 3)
    q = np.empty((R.shape[0], 4))
    for n, m in enumerate(R):
        tr = m[0, 0] + m[1, 1] + m[2, 2]
        if tr > 0:
            s = np.sqrt(tr + 1.0) * 2.0
            q[n] = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
        elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
            s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
            q[n] = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
        elif m[1, 1] > m[2, 2]:
            s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
            q[n] = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
        else:
            s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
            q[n] = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    vec = q[:, 1:]
    sin_half = np.linalg.norm(vec, axis=1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[:, :1])
    scale = np.where(sin_half < 1e-12, 2.0, angle / np.where(sin_half < 1e-12, 1.0, sin_half))
    return (vec * scale).reshape(batch + (3,))


def orthonormalize(matrix: Any) -> np.ndarray:
    """Nearest rotation matrix (SVD), e.g. for ZJU-MoCap's low-precision ``R`` (DATASETS.md §1A).

    Args:
        matrix: ``[3, 3]`` approximately orthonormal matrix.

    Returns:
        ``[3, 3]`` rotation with determinant +1.
    """
    U, _, Vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return R
