"""Locating and reading SMPL / SMPL-X model files (the user's licensed files, or the procedural
stand-ins of :mod:`zoo.synthetic.body` in the same formats).

:func:`find_model_file` resolves ``model_path`` / ``$ZOO_BODY_MODELS`` to one file, or raises one
line naming every place looked and where to obtain the model. :func:`load_model_arrays` reads
``.npz`` or ``.pkl`` (the original pickles load without chumpy installed), :func:`check_vertex_count`
checks a loaded model against the vertex count smplx hard-codes, and :func:`read_obj_uv` reads a
UV layout from a textured ``.obj``. :class:`zoo.core.body.BodyModel` builds on these; numpy only,
so the data layer's :mod:`zoo.data.body_files` shares the chumpy-tolerant reading.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np

__all__ = [
    "ENV_VAR",
    "DOWNLOAD_URLS",
    "NUM_VERTICES",
    "find_model_file",
    "load_model_arrays",
    "check_vertex_count",
    "read_obj_uv",
    "ModelUnpickler",
    "unchumpy",
]

#: Environment variable naming the folder that holds ``smpl/`` and ``smplx/``.
ENV_VAR = "ZOO_BODY_MODELS"
#: Where each model type can be obtained (registration required).
DOWNLOAD_URLS = {"smpl": "https://smpl.is.tue.mpg.de", "smplx": "https://smpl-x.is.tue.mpg.de"}
#: Vertices of each model type (smplx hard-codes landmark vertex ids for these counts).
NUM_VERTICES = {"smpl": 6890, "smplx": 10475}

_PREFIX = {"smpl": "SMPL", "smplx": "SMPLX"}
_EXTS = {"smpl": (".pkl", ".npz"), "smplx": (".npz", ".pkl")}


def _not_found(model_type: str, gender: str, looked: List[Any], where: str) -> FileNotFoundError:
    stem = f"{_PREFIX[model_type]}_{gender.upper()}"
    listed = ", ".join(str(p) for p in looked)
    return FileNotFoundError(  # one line: the command line prints it as its one `error:` line
        f"{model_type.upper()} body model file {stem}{'|'.join(_EXTS[model_type])} not found ({where}); "
        f"looked for {listed}. Download it from {DOWNLOAD_URLS[model_type]} (registration required) and put it at "
        f"<folder>/{model_type}/{stem}{_EXTS[model_type][0]}, then set {ENV_VAR}=<folder> or pass "
        f"model_path=. For tests and demos, `python -m zoo.synthetic.body --out <folder>` "
        f"writes procedural stand-ins."
    )


def find_model_file(model_type: str, model_path: Union[str, os.PathLike, None] = None, gender: str = "neutral") -> Path:
    """Locate a SMPL / SMPL-X model file.

    Args:
        model_type: ``"smpl"`` or ``"smplx"``.
        model_path: a model file; or a folder holding ``<model_type>/<PREFIX>_<GENDER>.<ext>``
            or ``<PREFIX>_<GENDER>.<ext>`` directly; ``None`` uses ``$ZOO_BODY_MODELS``.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.

    Returns:
        The existing file (``.pkl`` preferred for SMPL, ``.npz`` for SMPL-X).

    Raises:
        ValueError: for an unknown model type or gender.
        FileNotFoundError: naming the file, every place looked, ``ZOO_BODY_MODELS`` and where to
            obtain the model.
    """
    if model_type not in _PREFIX:
        raise ValueError(f"model_type must be 'smpl' or 'smplx', got {model_type!r}")
    if gender not in ("neutral", "male", "female"):
        raise ValueError(f"gender must be 'neutral', 'male' or 'female', got {gender!r}")
    stem = f"{_PREFIX[model_type]}_{gender.upper()}"
    if model_path is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            looked = [f"${ENV_VAR}/{model_type}/{stem}{ext}" for ext in _EXTS[model_type]]
            raise _not_found(model_type, gender, looked, f"model_path=None and {ENV_VAR} is not set")
        root, where = Path(env), f"{ENV_VAR}={env}"
    else:
        root = Path(model_path)
        where = f"model_path={model_path}; {ENV_VAR}={os.environ.get(ENV_VAR, '<unset>')}"
        if root.is_file():
            return root
        if root.suffix in (".pkl", ".npz"):
            raise _not_found(model_type, gender, [root], where)
    looked = [d / f"{stem}{ext}" for d in (root / model_type, root) for ext in _EXTS[model_type]]
    for cand in looked:
        if cand.is_file():
            return cand
    raise _not_found(model_type, gender, looked, where)


def check_vertex_count(model: Any, model_type: str, path: Path) -> None:
    """Every per-vertex array of a loaded model has the model type's vertex count (smplx hard-codes
    landmark vertex ids, so another count fails later in an index error far from the file)."""
    want = NUM_VERTICES[model_type]
    arrays = {"v_template": model.v_template.shape[0], "shapedirs": model.shapedirs.shape[0],
              "posedirs": model.posedirs.shape[1] // 3, "weights": model.lbs_weights.shape[0],
              "J_regressor": model.J_regressor.shape[1]}
    for key, n in arrays.items():
        if int(n) != want:
            raise ValueError(f"{path}: '{key}' has {int(n)} vertices; expected {want} for a {model_type.upper()} "
                             f"model (v_template, shapedirs, posedirs, weights and J_regressor must agree)")


class _ChumpyStandIn:
    """Receives a pickled chumpy object so original SMPL ``.pkl`` files load without chumpy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class ModelUnpickler(pickle.Unpickler):
    """Unpickles a model ``.pkl`` with chumpy objects received as stand-ins (see :func:`unchumpy`)."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy":
            return _ChumpyStandIn
        return super().find_class(module, name)


def unchumpy(value: Any, key: str, path: Path) -> Any:
    """``value`` with a chumpy stand-in of :class:`ModelUnpickler` replaced by its array."""
    if isinstance(value, _ChumpyStandIn):
        state = value.state
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
        raise ValueError(
            f"{path}: '{key}' is a chumpy object this loader cannot convert; remove chumpy from the "
            "file first (smplx's tools/clean_ch.py) or convert it to .npz"
        )
    return value


def load_model_arrays(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Every entry of a body-model file (SMPL / SMPL-X / FLAME ``.pkl`` with or without chumpy, or
    ``.npz``) as plain numpy arrays or Python values.

    Raises:
        ValueError: if the file cannot be read.
    """
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=True) as data:
                return {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read body model archive ({exc}); expected a complete .npz") from None
    with open(path, "rb") as fh:
        try:
            raw = ModelUnpickler(fh, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read body model pickle ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict of arrays, got {type(raw).__name__}")
    return {k: unchumpy(v, k, path) for k, v in raw.items()}


def read_obj_uv(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Texture coordinates ``vt [T, 2]`` and per-triangle indices ``ft [F, 3]`` of an ``.obj`` (polygons fan-triangulated)."""
    vt: List[Tuple[float, float]] = []
    ft: List[Tuple[int, int, int]] = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "vt":
                vt.append((float(parts[1]), float(parts[2])))
            elif parts[0] == "f":
                idx = []
                for tok in parts[1:]:
                    fields = tok.split("/")
                    if len(fields) < 2 or not fields[1]:
                        raise ValueError(f"{path}: face '{line.strip()}' has no texture-coordinate indices")
                    i = int(fields[1])
                    idx.append(i - 1 if i > 0 else len(vt) + i)
                for k in range(1, len(idx) - 1):  # fan-triangulate polygons
                    ft.append((idx[0], idx[k], idx[k + 1]))
    if not vt or not ft:
        raise ValueError(f"{path}: no 'vt' / 'f' entries")
    return np.asarray(vt, dtype=np.float32), np.asarray(ft, dtype=np.int64)
