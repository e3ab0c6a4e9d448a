"""SMPL / SMPL-X body model: posed vertices, joints and per-bone LBS transforms.

:class:`BodyModel` wraps the ``smplx`` package (which loads the model files and holds their
arrays) and runs linear blend skinning itself so that it can return what avatar methods need and
``smplx`` does not expose: the per-bone transforms, the shaped rest body and the pose-corrective
offsets, plus canonical poses (T-pose, A-pose, "star"/Da-pose).

Conventions:

* Metres; the model's own frame (+y up, facing +z for SMPL and SMPL-X).
* ``transforms [B, J, 4, 4]`` map the *shaped rest body* (zero pose, after the shape (and
  expression) blend shapes, before the pose blend shapes) to posed space, translation included:
  ``vertices = lbs_points(v_shaped + pose_offsets, lbs_weights, transforms)``.
* Axis-angle poses, ``body_pose [B, 3 * J_body]`` with ``J_body`` = 23 (SMPL) or 21 (SMPL-X).
  For SMPL-X the hand mean pose is added unless ``flat_hand_mean=True`` (as in smplx).

Model files are licensed and supplied by the user: ``model_path`` is a file, or a folder holding
``smpl/SMPL_{NEUTRAL,MALE,FEMALE}.{pkl,npz}`` and ``smplx/SMPLX_*.{npz,pkl}`` (or those files
directly); ``None`` uses the ``ZOO_BODY_MODELS`` environment variable (found and read by
:mod:`zoo.core.model_files`). Tests and the demo use
:mod:`zoo.synthetic.body`, which writes files in the same formats.

The smplx buffers are registered as non-persistent, so a module that holds a ``BodyModel`` does
not copy the (licensed, large) model arrays into its checkpoints; the body model is rebuilt from
its file when the module is constructed.

Learnable identity offsets (opt-in, ExAvatar): ``joint_offsets=True`` adds a parameter
``joint_offset [J, 3]`` (the root's row is held at zero: it would only translate the body) that
moves every rest joint, ``J = J_regressor @ v_shaped + dJ``, and the bone transforms are re-derived
from the moved joints; ``face_offsets=True`` adds ``face_offset [F_v, 3]`` on the face vertices
(:meth:`BodyModel.part_vertices`), added to the template before the blend shapes (so the regressed
joints see them). Both start at zero, where the model reproduces ``smplx`` exactly; they are the
only parameters a ``BodyModel`` ever has (and the only entries of its state dict).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import smplx
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints
from smplx.utils import Struct
from torch import Tensor, nn

from zoo.core.model_files import (
    DOWNLOAD_URLS,
    ENV_VAR,
    check_vertex_count,
    find_model_file,
    load_model_arrays,
    read_obj_uv,
)
from zoo.core.skinning import lbs_points, rigid_inverse

__all__ = [
    "ENV_VAR",
    "DOWNLOAD_URLS",
    "FLAME_VERTEX_IDS_FILE",
    "MANO_VERTEX_IDS_FILE",
    "BodyOutput",
    "BodyParts",
    "Canonical",
    "BodyModel",
    "find_model_file",
    "load_model_arrays",
    "canonical_body_pose",
]

_NUM_JOINTS = {"smpl": 24, "smplx": 55}
_NUM_BODY_JOINTS = {"smpl": 23, "smplx": 21}
_SMPL_JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
]
_SMPLX_JOINT_NAMES = _SMPL_JOINT_NAMES[:22] + ["jaw", "left_eye", "right_eye"] + [
    f"{side}_{finger}{k}"
    for side in ("left", "right")
    for finger in ("index", "middle", "pinky", "ring", "thumb")
    for k in (1, 2, 3)
]
_SMPLX_ONLY = ("jaw_pose", "leye_pose", "reye_pose", "left_hand_pose", "right_hand_pose", "expression")
#: Official vertex-index files looked for next to the SMPL-X model (see :meth:`BodyModel.part_vertices`).
FLAME_VERTEX_IDS_FILE = "SMPL-X__FLAME_vertex_ids.npy"
MANO_VERTEX_IDS_FILE = "MANO_SMPLX_vertex_ids.pkl"
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")


@dataclass
class BodyOutput:
    """Result of :meth:`BodyModel.forward`.

    Attributes:
        vertices: ``[B, V, 3]`` posed vertices (translation included).
        joints: ``[B, J, 3]`` posed kinematic-tree joints (24 SMPL, 55 SMPL-X), translation included.
        transforms: ``[B, J, 4, 4]`` per-bone transforms from the shaped rest body to posed space.
        v_shaped: ``[B, V, 3]`` shaped rest vertices (zero pose, shape + expression applied).
        rest_joints: ``[B, J, 3]`` joints of the shaped rest body.
        pose_offsets: ``[B, V, 3]`` pose blend-shape displacement, in rest space.
        full_pose: ``[B, J, 3]`` axis-angle rotation of every joint (hand PCA and mean applied).
        rot_mats: ``[B, J, 3, 3]`` local (parent-relative) joint rotations.
    """

    vertices: Tensor
    joints: Tensor
    transforms: Tensor
    v_shaped: Tensor
    rest_joints: Tensor
    pose_offsets: Tensor
    full_pose: Tensor
    rot_mats: Tensor


@dataclass
class Canonical:
    """A canonical pose of the shaped body (see :meth:`BodyModel.canonical`).

    Attributes:
        vertices: ``[B, V, 3]`` canonical vertices (LBS of the shaped rest body, no pose correctives).
        joints: ``[B, J, 3]`` canonical joints.
        transforms: ``[B, J, 4, 4]`` per-bone transforms rest -> canonical.
        body_pose: ``[B, 3 * J_body]`` the canonical body pose (axis-angle).
        kind: ``"tpose"``, ``"apose"`` or ``"star"``.
    """

    vertices: Tensor
    joints: Tensor
    transforms: Tensor
    body_pose: Tensor
    kind: str = "tpose"


@dataclass
class BodyParts:
    """Vertex masks of the body's parts (see :meth:`BodyModel.part_vertices`).

    Attributes:
        face: ``[V]`` bool, the head / face region (FLAME's vertices for SMPL-X when the official
            index file is present); always contains ``face_expr``.
        face_expr: ``[V]`` bool, face vertices the expression blend shapes move (eyeballs
            excluded); all False for SMPL.
        left_hand: ``[V]`` bool, the left hand (MANO's vertices when the official file is present).
        right_hand: ``[V]`` bool, the right hand.
        source: where the masks came from (the files, or the skinning-weight rule).
    """

    face: Tensor
    face_expr: Tensor
    left_hand: Tensor
    right_hand: Tensor
    source: str = ""

    @property
    def hands(self) -> Tensor:
        """``[V]`` bool, either hand."""
        return self.left_hand | self.right_hand

    @property
    def body(self) -> Tensor:
        """``[V]`` bool, everything that is neither face nor hand."""
        return ~(self.face | self.hands)


def canonical_body_pose(kind: str, model_type: str = "smpl") -> Tensor:
    """Axis-angle body pose of a canonical space.

    Args:
        kind: ``"tpose"`` (all zeros), ``"apose"`` (arms 45 degrees down: shoulders rotated by
            -45 / +45 degrees about z) or ``"star"`` (the Da-pose / "big pose" of 3DGS-Avatar and
            ARAH: legs spread, hips rotated by +30 / -30 degrees about z).
        model_type: ``"smpl"`` (23 body joints) or ``"smplx"`` (21).

    Returns:
        ``[3 * J_body]`` float32 body pose.

    Raises:
        ValueError: for an unknown kind or model type.
    """
    if model_type not in _NUM_BODY_JOINTS:
        raise ValueError(f"model_type must be 'smpl' or 'smplx', got {model_type!r}")
    pose = torch.zeros(_NUM_BODY_JOINTS[model_type], 3)
    if kind == "apose":
        pose[16 - 1, 2] = -np.pi / 4  # left shoulder: the arm (+x) turns down
        pose[17 - 1, 2] = np.pi / 4  # right shoulder
    elif kind == "star":
        pose[1 - 1, 2] = np.pi / 6  # left hip: the leg (-y) turns out towards +x
        pose[2 - 1, 2] = -np.pi / 6  # right hip
    elif kind != "tpose":
        raise ValueError(f"canonical kind must be 'tpose', 'apose' or 'star', got {kind!r}")
    return pose.reshape(-1)


class BodyModel(nn.Module):
    """SMPL / SMPL-X over ``smplx``, returning bone transforms and canonical poses as well.

    Args:
        model_type: ``"smpl"`` or ``"smplx"``.
        model_path: model file or folder (see :func:`find_model_file`); None = ``$ZOO_BODY_MODELS``.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        num_betas: shape coefficients used (capped by the file's shape space, as in smplx).
        num_expression_coeffs: SMPL-X expression coefficients used.
        use_pca: SMPL-X hand poses given as ``num_pca_comps`` PCA coefficients instead of 45
            axis-angle values per hand.
        num_pca_comps: PCA coefficients per hand when ``use_pca``.
        flat_hand_mean: if False (smplx's default) the file's mean hand pose is added to the
            hand poses, so zero hand parameters give relaxed hands.
        dtype: floating dtype of the buffers.
        joint_offsets: add the learnable joint offsets ``joint_offset [J, 3]`` (zeros; the
            root's row is not applied) to the regressed rest joints.
        face_offsets: add the learnable face-vertex offsets ``face_offset [F_v, 3]`` (zeros) to
            the template on the face vertices (``part_vertices().face``).

    Raises:
        FileNotFoundError: if the model file is missing (names it, where it looked,
            ``ZOO_BODY_MODELS`` and where to obtain it).
        ValueError: if the file cannot be read or is not a model of ``model_type``.
    """

    def __init__(
        self,
        model_type: str = "smpl",
        model_path: Union[str, os.PathLike, None] = None,
        gender: str = "neutral",
        num_betas: int = 10,
        num_expression_coeffs: int = 10,
        use_pca: bool = False,
        flat_hand_mean: bool = False,
        num_pca_comps: int = 6,
        dtype: torch.dtype = torch.float32,
        joint_offsets: bool = False,
        face_offsets: bool = False,
    ) -> None:
        super().__init__()
        self.model_type = model_type
        self.gender = gender
        self.model_file = find_model_file(model_type, model_path, gender)
        self._root_hint = Path(model_path) if model_path is not None else None
        self.use_pca = bool(use_pca) and model_type == "smplx"
        self._uv: Optional[Tuple[Tensor, Tensor]] = None
        off = dict(create_betas=False, create_global_orient=False, create_body_pose=False, create_transl=False)
        quiet = contextlib.redirect_stdout(io.StringIO())  # smplx prints warnings for 10-beta files
        try:
            if model_type == "smpl":
                raw = load_model_arrays(self.model_file)
                self._file_uv = (raw.get("vt"), raw.get("ft"))
                with quiet:
                    model = smplx.SMPL(str(self.model_file), data_struct=Struct(**raw), num_betas=num_betas,
                                       gender=gender, dtype=dtype, **off)
            else:
                self._file_uv = None
                off.update(create_left_hand_pose=False, create_right_hand_pose=False, create_expression=False,
                           create_jaw_pose=False, create_leye_pose=False, create_reye_pose=False)
                with quiet:
                    model = smplx.SMPLX(str(self.model_file), ext=self.model_file.suffix.lstrip("."),
                                        num_betas=num_betas, num_expression_coeffs=num_expression_coeffs,
                                        use_pca=self.use_pca, num_pca_comps=num_pca_comps,
                                        flat_hand_mean=flat_hand_mean, gender=gender, dtype=dtype, **off)
        except ModuleNotFoundError as exc:
            raise ValueError(
                f"{self.model_file}: loading needs module '{exc.name}'; for chumpy-based SMPL-X .pkl files "
                "use the .npz version of the model"
            ) from exc
        except (KeyError, AttributeError, IndexError, pickle.UnpicklingError, OSError, RuntimeError,
                zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{self.model_file}: not a readable {model_type.upper()} model file ({exc!r})") from None
        J = int(model.J_regressor.shape[0])
        if J != _NUM_JOINTS[model_type]:
            raise ValueError(
                f"{self.model_file}: has {J} joints but a {model_type.upper()} model has "
                f"{_NUM_JOINTS[model_type]} - wrong model_type?"
            )
        check_vertex_count(model, model_type, self.model_file)
        # Keep the model arrays out of state_dict (licensed, large, rebuilt from the file).
        for module in model.modules():
            for name, buf in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buf, persistent=False)
        self.smplx = model
        self.num_pca_comps = num_pca_comps if self.use_pca else 45
        self._parts: Optional[BodyParts] = None
        self.joint_offset: Optional[nn.Parameter] = None
        self.face_offset: Optional[nn.Parameter] = None
        if joint_offsets:
            self.joint_offset = nn.Parameter(torch.zeros(J, 3, dtype=dtype))
            keep = torch.ones(J, 1, dtype=dtype)
            keep[0] = 0.0  # the root's offset would only translate the whole body
            self.register_buffer("_joint_offset_keep", keep, persistent=False)
        if face_offsets:
            ids = torch.nonzero(self.part_vertices().face).squeeze(1)
            self.register_buffer("face_vertex_ids", ids, persistent=False)
            self.face_offset = nn.Parameter(torch.zeros(ids.numel(), 3, dtype=dtype))

    # ------------------------------------------------------------------------------------------
    # Properties
    # ------------------------------------------------------------------------------------------

    @property
    def faces(self) -> Tensor:
        """``[F, 3]`` long triangle indices."""
        return self.smplx.faces_tensor

    @property
    def parents(self) -> Tensor:
        """``[J]`` long parent of each joint (-1 for the root)."""
        return self.smplx.parents

    @property
    def lbs_weights(self) -> Tensor:
        """``[V, J]`` skinning weights."""
        return self.smplx.lbs_weights

    @property
    def v_template(self) -> Tensor:
        """``[V, 3]`` template (mean-shape, zero-pose) vertices."""
        return self.smplx.v_template

    @property
    def num_joints(self) -> int:
        """Kinematic-tree joints: 24 (SMPL) or 55 (SMPL-X)."""
        return int(self.smplx.J_regressor.shape[0])

    @property
    def num_body_joints(self) -> int:
        """Joints in ``body_pose``: 23 (SMPL) or 21 (SMPL-X)."""
        return _NUM_BODY_JOINTS[self.model_type]

    @property
    def num_vertices(self) -> int:
        """``V``: 6890 (SMPL) or 10475 (SMPL-X) for the official topology."""
        return int(self.smplx.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        """Shape coefficients in use."""
        return int(self.smplx.num_betas)

    @property
    def num_expression_coeffs(self) -> int:
        """Expression coefficients in use (0 for SMPL)."""
        return int(self.smplx.num_expression_coeffs) if self.model_type == "smplx" else 0

    @property
    def joint_names(self) -> List[str]:
        """Names of the ``J`` kinematic-tree joints, in order."""
        return list(_SMPL_JOINT_NAMES if self.model_type == "smpl" else _SMPLX_JOINT_NAMES)

    def extra_repr(self) -> str:
        return f"model_type={self.model_type}, gender={self.gender}, file={self.model_file}"

    # ------------------------------------------------------------------------------------------
    # Body parts
    # ------------------------------------------------------------------------------------------

    def _asset_dirs(self) -> List[Path]:
        """Folders searched for files that accompany the model (UV layouts, vertex-index files)."""
        dirs: List[Path] = [self.model_file.parent]
        if self._root_hint is not None and self._root_hint.is_dir():
            dirs += [self._root_hint / self.model_type, self._root_hint]
        env = os.environ.get(ENV_VAR)
        if env:
            dirs.append(Path(env) / self.model_type)
        out: List[Path] = []
        for d in dirs:
            if d not in out:
                out.append(d)
        return out

    def find_asset(self, name: str) -> Optional[Path]:
        """A file that accompanies the model (e.g. ``SMPL-X__FLAME_vertex_ids.npy``): the first of
        ``<model folder>/<name>``, ``<model_path>/<type>/<name>``, ``<model_path>/<name>`` and
        ``$ZOO_BODY_MODELS/<type>/<name>`` that exists, or None."""
        for d in self._asset_dirs():
            if (d / name).is_file():
                return d / name
        return None

    def _ids_to_mask(self, ids: Any, path: Path, what: str) -> Tensor:
        V = self.num_vertices
        arr = np.asarray(ids).reshape(-1)
        if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= V:
            raise ValueError(f"{path}: {what} must be integer vertex indices in [0, {V}), got {arr.dtype} "
                             f"values of shape {arr.shape}")
        mask = torch.zeros(V, dtype=torch.bool)
        mask[torch.from_numpy(arr.astype(np.int64))] = True
        return mask

    def _find_parts(self) -> BodyParts:
        names = self.joint_names
        weights = self.smplx.lbs_weights.detach().cpu()
        dominant = weights.argmax(dim=1)

        def dominated_by(selected: List[str]) -> Tensor:
            idx = torch.tensor([names.index(n) for n in selected])
            return torch.isin(dominant, idx)

        def touched_by(selected: List[str]) -> Tensor:
            return weights[:, [names.index(n) for n in selected]].sum(1) > 0

        sources = []
        if self.model_type == "smpl":
            face = dominated_by(["head"])
            left = dominated_by(["left_wrist"]) | touched_by(["left_hand"])
            right = dominated_by(["right_wrist"]) | touched_by(["right_hand"])
            expr = torch.zeros_like(face)
            sources.append("skinning weights (face: dominant head; hands: dominant wrist or any hand weight)")
            return BodyParts(face, expr, left, right, "; ".join(sources))
        fingers = {side: [n for n in names if n.startswith(side + "_") and any(f in n for f in _FINGERS)]
                   for side in ("left", "right")}
        face = dominated_by(["head"]) | touched_by(["jaw", "left_eye", "right_eye"])
        left = dominated_by(["left_wrist"]) | touched_by(fingers["left"])
        right = dominated_by(["right_wrist"]) | touched_by(fingers["right"])
        rule = ["face: dominant weight on the head or any jaw / eye weight",
                "hands: dominant weight on the wrist or any finger weight"]
        flame = self.find_asset(FLAME_VERTEX_IDS_FILE)
        if flame is not None:
            face = self._ids_to_mask(np.load(flame, allow_pickle=False), flame, "FLAME vertex ids")
            rule[0] = f"face: {flame}"
        mano = self.find_asset(MANO_VERTEX_IDS_FILE)
        if mano is not None:
            with open(mano, "rb") as fh:
                try:
                    ids = pickle.load(fh, encoding="latin1")
                except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
                    raise ValueError(f"{mano}: cannot read the MANO vertex ids ({exc})") from exc
            if not isinstance(ids, dict) or "left_hand" not in ids or "right_hand" not in ids:
                raise ValueError(f"{mano}: expected a dict with 'left_hand' and 'right_hand' vertex ids")
            left = self._ids_to_mask(ids["left_hand"], mano, "left_hand")
            right = self._ids_to_mask(ids["right_hand"], mano, "right_hand")
            rule[1] = f"hands: {mano}"
        moved = self.smplx.expr_dirs.detach().cpu().abs().sum(dim=(1, 2)) > 0
        eyes = dominated_by(["left_eye", "right_eye"])
        expr = moved & ~eyes
        face = face | expr  # whatever an expression moves is face
        left, right = left & ~face, right & ~face
        return BodyParts(face, expr, left, right, "; ".join(rule))

    def part_vertices(self) -> BodyParts:
        """Masks of the face, the expression region and the hands.

        SMPL-X: the face is FLAME's vertices when ``SMPL-X__FLAME_vertex_ids.npy`` (from the
        SMPL-X site) lies next to the model file or in ``$ZOO_BODY_MODELS/smplx``, else the
        vertices whose largest skinning weight is on the head or that have any jaw / eye weight;
        the hands are ``MANO_SMPLX_vertex_ids.pkl``'s when present, else the vertices whose
        largest weight is on that side's wrist or that have any weight on its fingers (so a hand
        pose moves nothing outside the hands). ``face_expr`` are the vertices the expression
        blend shapes move, eyeballs excluded (the face always contains them). SMPL: face = head
        dominated, hands = wrist dominated or any ``*_hand`` weight, no expression region.

        Returns:
            :class:`BodyParts` (masks on the model's device).
        """
        if self._parts is None:
            self._parts = self._find_parts()
        device = self.smplx.v_template.device
        p = self._parts
        return BodyParts(p.face.to(device), p.face_expr.to(device), p.left_hand.to(device),
                         p.right_hand.to(device), p.source)

    # ------------------------------------------------------------------------------------------
    # Parameters
    # ------------------------------------------------------------------------------------------

    def _expected(self) -> Dict[str, Tuple[int, bool]]:
        """key -> (width, may be shorter and zero-padded)."""
        out = {
            "betas": (self.num_betas, True),
            "global_orient": (3, False),
            "body_pose": (3 * self.num_body_joints, False),
            "transl": (3, False),
        }
        if self.model_type == "smplx":
            hand = self.num_pca_comps if self.use_pca else 45
            out.update({
                "jaw_pose": (3, False), "leye_pose": (3, False), "reye_pose": (3, False),
                "left_hand_pose": (hand, False), "right_hand_pose": (hand, False),
                "expression": (self.num_expression_coeffs, True),
            })
        return out

    def _params(self, params: Mapping[str, Any]) -> Tuple[Dict[str, Tensor], int]:
        buf = self.smplx.v_template
        device, dtype = buf.device, buf.dtype
        expected = self._expected()
        given: Dict[str, Tensor] = {}
        for key, value in params.items():
            if value is None:
                continue
            if key not in expected:
                if self.model_type == "smpl" and key in _SMPLX_ONLY:
                    t = torch.as_tensor(value)
                    if bool((t != 0).any()):
                        raise ValueError(f"body parameter '{key}' is SMPL-X only but this is a SMPL model")
                continue  # other keys (e.g. 'scale') belong to the caller
            t = torch.as_tensor(value).to(device=device, dtype=dtype)
            width, pad = expected[key]
            if key in ("body_pose", "left_hand_pose", "right_hand_pose", "global_orient") and t.dim() == 3 and t.shape[-1] == 3:
                t = t.reshape(t.shape[0], -1)
            ok = t.dim() == 2 and (t.shape[1] <= width if pad else t.shape[1] == width)
            if not ok:
                hint = ""
                if key == "body_pose" and t.dim() == 2 and t.shape[1] in (63, 69):
                    hint = f" (a {'SMPL' if t.shape[1] == 69 else 'SMPL-X'} body pose given to a {self.model_type.upper()} model)"
                want = f"[B, <={width}]" if pad else f"[B, {width}]"
                raise ValueError(f"body parameter '{key}' has shape {tuple(t.shape)}; expected {want}{hint}")
            if pad and t.shape[1] < width:
                t = torch.cat([t, t.new_zeros(t.shape[0], width - t.shape[1])], dim=1)
            given[key] = t
        sizes = {k: v.shape[0] for k, v in given.items()}
        B = max(sizes.values(), default=1)
        for key, n in sizes.items():
            if n not in (1, B):
                raise ValueError(f"body parameter '{key}' has batch size {n} but others have {B}")
        out = {}
        for key, (width, _) in expected.items():
            if key in given:
                out[key] = given[key].expand(B, -1)
            else:
                out[key] = torch.zeros(B, width, device=device, dtype=dtype)
        return out, B

    def _full_pose(self, p: Dict[str, Tensor], B: int) -> Tensor:
        """``[B, J, 3]`` axis-angle pose of every joint (PCA and hand mean applied for SMPL-X)."""
        parts = [p["global_orient"], p["body_pose"]]
        if self.model_type == "smplx":
            lh, rh = p["left_hand_pose"], p["right_hand_pose"]
            if self.use_pca:
                lh = lh @ self.smplx.left_hand_components
                rh = rh @ self.smplx.right_hand_components
            parts += [p["jaw_pose"], p["leye_pose"], p["reye_pose"], lh, rh]
            pose = torch.cat(parts, dim=1) + self.smplx.pose_mean
        else:
            pose = torch.cat(parts, dim=1)
        return pose.reshape(B, -1, 3)

    def template(self) -> Tensor:
        """``[V, 3]`` the template with the learnable face offsets (if any) applied."""
        v = self.smplx.v_template
        if self.face_offset is not None:
            v = v.index_add(0, self.face_vertex_ids, self.face_offset.to(v.dtype))
        return v

    def joint_offsets(self) -> Optional[Tensor]:
        """``[J, 3]`` the applied joint offsets (root row zero), or None without ``joint_offsets``."""
        if self.joint_offset is None:
            return None
        return self.joint_offset * self._joint_offset_keep

    def _shaped(self, betas: Tensor, expression: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Shaped rest vertices ``[B, V, 3]`` and their joints ``[B, J, 3]`` (offsets applied)."""
        m = self.smplx
        v_shaped = self.template() + blend_shapes(betas, m.shapedirs)
        if self.model_type == "smplx" and expression is not None:
            v_shaped = v_shaped + blend_shapes(expression, m.expr_dirs)
        joints = vertices2joints(m.J_regressor, v_shaped)
        offsets = self.joint_offsets()
        if offsets is not None:
            joints = joints + offsets.to(joints.dtype)
        return v_shaped, joints

    def _pose(self, full_pose: Tensor, rest_joints: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Rotations ``[B, J, 3, 3]``, posed joints ``[B, J, 3]``, transforms ``[B, J, 4, 4]``."""
        B, J = full_pose.shape[:2]
        rot = batch_rodrigues(full_pose.reshape(-1, 3)).reshape(B, J, 3, 3)
        joints, transforms = batch_rigid_transform(rot, rest_joints, self.smplx.parents, dtype=rot.dtype)
        return rot, joints, transforms

    # ------------------------------------------------------------------------------------------
    # Forward and canonical spaces
    # ------------------------------------------------------------------------------------------

    def forward(self, params: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> BodyOutput:
        """Pose the body.

        Args:
            params: body parameters (any subset; missing ones are zeros): ``betas [B, S]``
                (``S <= num_betas``, zero-padded), ``global_orient [B, 3]``, ``body_pose
                [B, 69]`` (SMPL) / ``[B, 63]`` (SMPL-X) or ``[B, J_body, 3]``, ``transl [B, 3]``;
                SMPL-X also ``jaw_pose, leye_pose, reye_pose [B, 3]``, ``left_hand_pose,
                right_hand_pose [B, 45]`` (or ``[B, num_pca_comps]`` with ``use_pca``),
                ``expression [B, E]``; optional ``scale [B, 1]`` (NeuMan): the posed body with
                ``transl = 0`` is multiplied by it before ``transl`` is added. Tensors with batch 1
                broadcast. Other keys are ignored,
                except SMPL-X-only keys with non-zero values given to a SMPL model.
            **kwargs: the same parameters as keywords (merged over ``params``).

        Returns:
            :class:`BodyOutput` with ``vertices [B, V, 3]``, ``joints [B, J, 3]``,
            ``transforms [B, J, 4, 4]``, ``v_shaped``, ``rest_joints``, ``pose_offsets``,
            ``full_pose [B, J, 3]`` and ``rot_mats [B, J, 3, 3]``.

        Raises:
            ValueError: naming the parameter and its expected shape when a shape is wrong.
        """
        merged = dict(params or {})
        merged.update(kwargs)
        p, B = self._params(merged)
        v_shaped, rest_joints = self._shaped(p["betas"], p.get("expression"))
        full_pose = self._full_pose(p, B)
        rot, joints, transforms = self._pose(full_pose, rest_joints)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).reshape(B, -1)
        pose_offsets = (pose_feature @ self.smplx.posedirs).reshape(B, -1, 3)
        transl = p["transl"]
        scale = merged.get("scale")
        if scale is not None:
            # the posed body with transl = 0 is scaled about the origin, then translated
            s = torch.as_tensor(scale, dtype=rot.dtype, device=rot.device).reshape(-1, 1, 1)
            if s.shape[0] not in (1, B):
                raise ValueError(f"body parameter 'scale' has batch size {s.shape[0]}; expected 1 or {B}")
            transforms = torch.cat([transforms[:, :, :3] * s[:, :, :, None], transforms[:, :, 3:]], dim=2)
            joints = joints * s
        transforms = transforms + torch.nn.functional.pad(transl[:, None, :, None], (3, 0, 0, 1))
        vertices = lbs_points(v_shaped + pose_offsets, self.smplx.lbs_weights, transforms)
        return BodyOutput(
            vertices=vertices,
            joints=joints + transl[:, None],
            transforms=transforms,
            v_shaped=v_shaped,
            rest_joints=rest_joints,
            pose_offsets=pose_offsets,
            full_pose=full_pose,
            rot_mats=rot,
        )

    def canonical(self, kind: str = "tpose", betas: Optional[Tensor] = None, expression: Optional[Tensor] = None,
                  body_pose: Optional[Tensor] = None) -> Canonical:
        """The shaped body in a canonical pose (hands flat, no global rotation or translation).

        Args:
            kind: ``"tpose"``, ``"apose"`` or ``"star"`` (see :func:`canonical_body_pose`).
            betas: ``[B, S]`` shape (zeros when None, ``B = 1``).
            expression: SMPL-X ``[B, E]`` expression (zeros when None).
            body_pose: ``[3 * J_body]`` a custom canonical body pose (axis-angle) used instead of
                ``kind``'s (which then only names it), e.g. ExAvatar's legs-apart pose.

        Returns:
            :class:`Canonical`; its vertices are the LBS of the shaped rest body without pose
            correctives, so ``lbs_points(canonical.vertices, w, canonical_to_posed(...))`` needs
            no corrective either.
        """
        params: Dict[str, Any] = {}
        if betas is not None:
            params["betas"] = betas
        if expression is not None:
            params["expression"] = expression
        p, B = self._params(params)
        v_shaped, rest_joints = self._shaped(p["betas"], p.get("expression"))
        if body_pose is None:
            body_pose = canonical_body_pose(kind, self.model_type).to(v_shaped)
        else:
            body_pose = torch.as_tensor(body_pose).to(v_shaped).reshape(-1)
            if body_pose.numel() != 3 * self.num_body_joints:
                raise ValueError(f"canonical body_pose must have {3 * self.num_body_joints} values, got {body_pose.numel()}")
        full_pose = torch.zeros(B, self.num_joints, 3, dtype=v_shaped.dtype, device=v_shaped.device)
        full_pose[:, 1: 1 + self.num_body_joints] = body_pose.view(-1, 3)
        _, joints, transforms = self._pose(full_pose, rest_joints)
        vertices = lbs_points(v_shaped, self.smplx.lbs_weights, transforms)
        return Canonical(vertices, joints, transforms, body_pose.expand(B, -1).clone(), kind)

    @staticmethod
    def canonical_to_posed(canonical: Canonical, output: BodyOutput) -> Tensor:
        """Per-bone transforms from a canonical space to posed space: ``T_posed @ T_canonical^-1``.

        Skinning canonical points with these transforms (and weights) poses them. On the
        canonical mesh this reproduces the posed mesh without pose correctives exactly where a
        vertex's weight is on one bone (and everywhere for the T-pose); where weights blend bones
        whose canonical rotations differ (e.g. the shoulders in the A-pose), blending the
        composed transforms differs slightly from skinning the rest vertex - the usual
        approximation of canonical-space avatars (3DGS-Avatar, ARAH).

        Args:
            canonical: from :meth:`canonical` (batch 1 or ``B``).
            output: from :meth:`forward` (batch ``B``).

        Returns:
            ``[B, J, 4, 4]`` transforms.
        """
        return output.transforms @ rigid_inverse(canonical.transforms)

    # ------------------------------------------------------------------------------------------
    # UV layout
    # ------------------------------------------------------------------------------------------

    def _uv_candidates(self) -> List[Path]:
        stem = f"{self.model_type}_uv"
        seen, out = set(), []
        for d in self._asset_dirs():
            for ext in (".npz", ".obj"):
                p = d / f"{stem}{ext}"
                if str(p) not in seen:
                    seen.add(str(p))
                    out.append(p)
        return out

    def uv(self) -> Tuple[Tensor, Tensor]:
        """UV layout of the mesh.

        Read from the model file's ``vt`` / ``ft`` entries when present (SMPL-X ``.npz`` files
        have them), else from ``<type>_uv.npz`` (keys ``vt``, ``ft``) or ``<type>_uv.obj`` next to
        the model file or in ``$ZOO_BODY_MODELS/<type>/``.

        Returns:
            ``vt [T, 2]`` float UV coordinates in ``[0, 1]`` and ``ft [F, 3]`` long UV faces (one
            row per mesh face, same order as :attr:`faces`), on the model's device.

        Raises:
            FileNotFoundError: if no UV layout is found (says which files are looked for).
            ValueError: if the UV faces do not match the mesh's faces.
        """
        if self._uv is None:
            vt = ft = None
            source = str(self.model_file)
            if self._file_uv is None:
                if self.model_file.suffix == ".npz":
                    with np.load(self.model_file, allow_pickle=True) as data:
                        if "vt" in data.files and "ft" in data.files:
                            vt, ft = data["vt"], data["ft"]
                else:
                    raw = load_model_arrays(self.model_file)
                    vt, ft = raw.get("vt"), raw.get("ft")
                self._file_uv = (vt, ft)
            vt, ft = self._file_uv
            if vt is None or ft is None:
                cands = self._uv_candidates()
                for cand in cands:
                    if not cand.is_file():
                        continue
                    source = str(cand)
                    if cand.suffix == ".npz":
                        with np.load(cand) as data:
                            if "vt" not in data.files or "ft" not in data.files:
                                raise ValueError(f"{cand}: UV file needs keys 'vt' and 'ft', has {data.files}")
                            vt, ft = data["vt"], data["ft"]
                    else:
                        vt, ft = read_obj_uv(cand)
                    break
                else:
                    listed = "\n  ".join(str(c) for c in cands)
                    raise FileNotFoundError(
                        f"the UV template of the {self.model_type.upper()} model is needed: {self.model_file} has no "
                        f"'vt'/'ft' entries and none of these files exists:\n  {listed}\n"
                        f"Put the UV layout (from {DOWNLOAD_URLS[self.model_type]}, e.g. the model's textured .obj) at "
                        f"<{ENV_VAR}>/{self.model_type}/{self.model_type}_uv.obj or .npz (keys vt [T,2], ft [F,3])."
                    )
            vt = np.asarray(vt, dtype=np.float32)
            ft = np.asarray(ft, dtype=np.int64)
            F = self.faces.shape[0]
            if vt.ndim != 2 or vt.shape[1] != 2 or ft.shape != (F, 3) or ft.min() < 0 or ft.max() >= len(vt):
                raise ValueError(
                    f"{source}: UV layout vt {vt.shape} / ft {ft.shape} does not fit the mesh (expected vt [T, 2] "
                    f"and ft [{F}, 3] indexing it)"
                )
            self._uv = (torch.from_numpy(vt), torch.from_numpy(ft))
        device = self.smplx.v_template.device
        return self._uv[0].to(device), self._uv[1].to(device)
