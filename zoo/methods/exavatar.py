"""ExAvatar (Moon et al., ECCV 2024): a whole-body SMPL-X avatar of Gaussians with hands and face.

METHODS.md §3; facts from the paper and mks0601/ExAvatar_RELEASE (read, not copied).

* Canonical mesh: the SMPL-X template shaped by the subject's betas (refined), with the body model's
  learnable joint offsets dJ and face-vertex offsets (`zoo.core.body.BodyModel`, stock smplx
  underneath), in a legs-apart canonical pose, subdivided `subdivide` times with
  `zoo.core.mesh.subdivide` (skinning weights, part masks and UVs carried to the new vertices).
  One Gaussian per vertex: isotropic, opaque, rotation-free.
* Identity: a body triplane and a face triplane (`zoo.core.encoding.Triplane`) sampled
  at a *fixed unshaped* template (mouth open); MLPs (GroupNorm) give a position offset, a log
  scale and a colour per Gaussian.
* Pose: MLPs on (triplane features, 6D body pose without the root) give a pose-dependent offset
  and scale offset, and (with the posed vertex normals) a colour offset. Hands and the expressive
  face use SMPL-X's own pose correctives instead of the offset MLP, and every Gaussian moves with
  SMPL-X's expression blend shapes.
* Skinning: body Gaussians take the LBS weights of their nearest original SMPL-X body vertex
  (searched among `nearest_candidates` template neighbours, so hand poses and expressions never
  reach the body); hands and face keep the (subdivided) original weights. The joint transforms use
  the expression-free skeleton, so an expression only moves the face.
* Two images per frame, both supervised with L1 / SSIM / LPIPS(VGG): the pose-independent one
  (`rgb_tri`) and the pose-dependent one (`rgb`, what is scored).
* Regularisers: mesh-Laplacian smoothness (`zoo.core.regularizers.laplacian_loss` over
  `zoo.core.mesh.uniform_laplacian` of the subdivided mesh) of the position offsets, scales and
  colours with per-part weights (hands high), squared offsets / scales, hand-colour consistency,
  joint-offset size and left/right symmetry; the FLAME-textured face loss when FLAME assets are
  configured (`face_loss.*`), else a one-time message and no face loss.
* Per-frame SMPL-X pose / expression / translation corrections (sparse embeddings, SparseAdam).
  `test_fit.enabled` fits each test frame's parameters to its image with the avatar frozen and
  scores it again as `<split>_fit` beside the plain `<split>` (the paper reports both).

On SMPL data the method degrades cleanly: the SMPL mesh, its head as the face (face triplane, no
expression) and its wrist / hand bones as the hands.

Not carried over: the scene Gaussians (ours trains on masked humans), the mouth-cavity faces and
arm-colour prior (they need the real SMPL-X vertex ids), and the official initial scale clamp
(scales here start from the mesh's edge length instead). The triplanes start at N(0, 1e-3) rather
than the paper's zeros (`triplane_init_std: 0` restores them): from zeros every vertex reads the
same feature and the first layers of the identity MLPs get no gradient at the first step.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.core.body import FLAME_VERTEX_IDS_FILE, BodyModel, load_model_arrays
from zoo.core.camera import Cameras
from zoo.core.encoding import Triplane
from zoo.core.gaussians import Gaussians
from zoo.core.losses import l1_loss, ssim
from zoo.core.mesh import subdivide, subdivide_attributes, uniform_laplacian, vertex_normals
from zoo.core.regularizers import laplacian_loss
from zoo.core.render import render
from zoo.core.skinning import lbs_points, rigid_inverse
from zoo.core.textured_mesh import render_textured_mesh
from zoo.methods.base import AvatarModule, composite
from zoo.methods.common import body_models_root, body_params
from zoo.registry import register_method

log = logging.getLogger(__name__)

#: Per-frame parameters the pose optimisation and the test-time fitting correct.
POSE_KEYS_SMPL = ("global_orient", "body_pose", "transl")
POSE_KEYS_SMPLX = POSE_KEYS_SMPL + ("jaw_pose", "leye_pose", "reye_pose", "left_hand_pose", "right_hand_pose",
                                    "expression")


def make_mlp(dims: List[int], groups: int, norm_last: bool) -> nn.Sequential:
    """Linear layers, each but the last (or every one, with `norm_last`) followed by GroupNorm + ReLU."""
    layers: List[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2 or norm_last:
            layers += [nn.GroupNorm(groups, dims[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class PoseMLP(nn.Module):
    """`make_mlp` over the concatenation [per-vertex input, per-frame pose], with the pose's share of
    the first layer computed once per frame (the same network, without repeating the pose N times).

    Args:
        vertex_dim: per-vertex input width. pose_dim: per-frame input width. dims: the widths after
        the first layer's input (first hidden, ..., output). groups, norm_last: see `make_mlp`.
    """

    def __init__(self, vertex_dim: int, pose_dim: int, dims: List[int], groups: int, norm_last: bool):
        super().__init__()
        self.first = nn.Linear(vertex_dim, dims[0])
        self.pose = nn.Linear(pose_dim, dims[0], bias=False)
        self.norm = nn.Sequential(nn.GroupNorm(groups, dims[0]), nn.ReLU(inplace=True))
        self.rest = make_mlp(dims, groups, norm_last) if len(dims) > 1 else nn.Identity()

    def forward(self, x: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """x `[B, N, vertex_dim]` (or `[N, vertex_dim]`, shared), pose `[B, pose_dim]` -> `[B, N, out]`."""
        h = self.first(x) + self.pose(pose)[:, None]  # [B, N, H]
        B, N, H = h.shape
        return self.rest(self.norm(h.reshape(B * N, H))).view(B, N, -1)


def _head(width: int, out: int, std: float) -> nn.Linear:
    layer = nn.Linear(width, out)
    nn.init.normal_(layer.weight, std=std)  # small, not zero: the triplanes (zero init) need a gradient
    nn.init.zeros_(layer.bias)
    return layer


FLAME_MODEL_FILES = ("FLAME_NEUTRAL.pkl", "generic_model.pkl", "flame2023.pkl", "FLAME_NEUTRAL.npz")


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"face loss: image not found: {path}")
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


class FlameFaceLoss(nn.Module):
    """The paper's face loss: the FLAME mesh, placed at the face Gaussians (FLAME vertex k = SMPL-X
    vertex ids[k]), textured with the subject's face texture, rendered over the Gaussian image where
    the texture is valid, and compared to the ground truth with L1.

    Args:
        ids: `[Vf]` SMPL-X vertex of each FLAME vertex. faces: `[Ff, 3]` FLAME faces.
        vt: `[T, 2]` FLAME UVs, ft: `[Ff, 3]`. texture: `[3, Ht, Wt]`. texture_mask: `[1, Ht, Wt]`.
    """

    def __init__(self, ids: torch.Tensor, faces: torch.Tensor, vt: torch.Tensor, ft: torch.Tensor,
                 texture: torch.Tensor, texture_mask: torch.Tensor):
        super().__init__()
        for name, value in (("ids", ids), ("faces", faces), ("vt", vt), ("ft", ft)):
            self.register_buffer(name, value, persistent=False)
        self.register_buffer("texture", torch.cat([texture, texture_mask[:1]]), persistent=False)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], body: BodyModel, info: Mapping[str, Any]) -> Optional["FlameFaceLoss"]:
        """Build it from `method.face_loss`; None when no texture is configured (or the body is SMPL).

        Raises:
            FileNotFoundError: a texture is configured but a FLAME asset is missing (names it).
            ValueError: the assets do not fit together.
        """
        if not cfg.get("texture") or body.model_type != "smplx":
            return None
        ids_path = body.find_asset(FLAME_VERTEX_IDS_FILE)
        if ids_path is None:
            raise FileNotFoundError(f"face loss: {FLAME_VERTEX_IDS_FILE} (SMPL-X site) must lie next to the SMPL-X "
                                    f"model ({body.model_file.parent})")
        root = body_models_root(info)
        flame_dir = Path(str(cfg.get("flame_dir") or (Path(root) / "flame" if root else "flame")))
        uv_path = flame_dir / "FLAME_texture.npz"
        model = next((flame_dir / n for n in FLAME_MODEL_FILES if (flame_dir / n).is_file()), None)
        if not uv_path.is_file() or model is None:
            raise FileNotFoundError(f"face loss: {flame_dir} needs FLAME_texture.npz (vt, ft) and a FLAME model "
                                    f"({' | '.join(FLAME_MODEL_FILES)}, from https://flame.is.tue.mpg.de)")
        with np.load(uv_path) as data:
            vt, ft = data["vt"].astype(np.float32), data["ft"].astype(np.int64)
        faces = np.asarray(load_model_arrays(model)["f"], dtype=np.int64)
        ids = np.load(ids_path).astype(np.int64).reshape(-1)
        if faces.max() >= len(ids) or ft.shape != faces.shape or ft.max() >= len(vt):
            raise ValueError(f"face loss: FLAME faces {faces.shape} (max {faces.max()}), UV faces {ft.shape} and "
                             f"{len(ids)} vertex ids in {ids_path} do not fit together")
        texture = _read_image(Path(str(cfg["texture"])))
        mask = _read_image(Path(str(cfg["texture_mask"])))[:1] if cfg.get("texture_mask") else torch.ones_like(texture[:1])
        if mask.shape[-2:] != texture.shape[-2:]:
            raise ValueError(f"face loss: texture {tuple(texture.shape)} and its mask {tuple(mask.shape)} differ in size")
        return cls(torch.from_numpy(ids), torch.from_numpy(faces), torch.from_numpy(vt), torch.from_numpy(ft),
                   texture, mask)

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, smplx_verts: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """L1 between the face-composited render and the ground truth.

        Args:
            pred: `[B, 3, H, W]` rendered image. gt: `[B, 3, H, W]`.
            smplx_verts: `[B, V, 3]` posed positions of the Gaussians at the original SMPL-X vertices.
            cameras: the batch's cameras.
        """
        H, W = pred.shape[-2:]
        images = []
        for b in range(pred.shape[0]):
            tex, covered = render_textured_mesh(smplx_verts[b][self.ids], self.faces, self.vt, self.ft, self.texture,
                                                cameras.K[b], cameras.w2c[b], H, W)
            use = (covered & (tex[3] > 0.5)).to(pred.dtype)
            images.append(pred[b] * (1.0 - use) + tex[:3] * use)
        return l1_loss(torch.stack(images), gt)


@register_method("exavatar")
class ExAvatar(AvatarModule):
    """ExAvatar; config: configs/method/exavatar.yaml.

    The avatar's shape is its subject's (betas, refined, plus the learnt joint and face offsets):
    body parameters given to it (a batch, `render_poses`) drive pose, expression and translation;
    their betas are ignored. Needs `data_info` (see `zoo.runner.data_info`) with `model_type`
    "smplx" for hands and face ("smpl" runs without them).
    """

    def __init__(self, cfg, data_info: Optional[Mapping] = None):
        super().__init__(cfg, data_info)
        c = self.cfg
        info = self.data_info
        self.model_type = str(info.get("model_type", "smpl"))
        self.body = BodyModel(self.model_type, body_models_root(info), gender=info.get("gender", "neutral"),
                              num_expression_coeffs=int(c.num_expression), joint_offsets=bool(c.learn_joint_offsets),
                              face_offsets=bool(c.learn_face_offsets))
        body = self.body
        betas = torch.as_tensor(info.get("betas", [0.0] * body.num_betas), dtype=torch.float32).view(1, -1)
        self.register_buffer("betas", betas[:, :body.num_betas])
        self.betas_delta = nn.Parameter(torch.zeros_like(self.betas)) if c.learn_betas else None
        parts = body.part_vertices()
        self.part_source = parts.source
        Jb = body.num_body_joints
        pose = torch.zeros(Jb, 3)
        pose[0, 2], pose[1, 2] = float(c.canonical_hip_angle), -float(c.canonical_hip_angle)  # legs apart
        self.register_buffer("canon_body_pose", pose.reshape(-1), persistent=False)

        # fixed, unshaped template (mouth open) the triplanes are read at, and the subdivision chain
        with torch.no_grad():
            enc_params = {"body_pose": self.canon_body_pose[None]}
            if self.model_type == "smplx":
                enc_params["jaw_pose"] = torch.tensor([[float(c.encoding_jaw_open), 0.0, 0.0]])
                flat = -body.smplx.left_hand_mean[None], -body.smplx.right_hand_mean[None]
                enc_params["left_hand_pose"], enc_params["right_hand_pose"] = flat
            enc_verts = body(enc_params).vertices[0]
        masks = torch.stack([parts.face, parts.face_expr, parts.left_hand, parts.right_hand], 1).float()
        verts, faces, attrs, self._num_levels = enc_verts, body.faces, {"w": body.lbs_weights, "m": masks}, int(c.subdivide)
        uv = None
        try:
            uv = body.uv()
        except FileNotFoundError:
            log.info("exavatar: the body model has no UV layout; the canonical mesh is exported without UVs")
        for level in range(self._num_levels):
            sub = subdivide(verts, faces, attrs)
            self.register_buffer(f"_edges{level}", sub.edges, persistent=False)
            if uv is not None:
                uv_sub = subdivide(uv[0], uv[1])
                uv = (uv_sub.verts, uv_sub.faces)
            verts, faces, attrs = sub.verts, sub.faces, sub.attrs
        self.num_gaussians = int(verts.shape[0])
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("enc_verts", verts, persistent=False)
        self.register_buffer("sub_weights", attrs["w"], persistent=False)
        m = attrs["m"] > 0  # a new vertex touching a part belongs to it (as in the paper)
        self.register_buffer("is_face", m[:, 0], persistent=False)
        self.register_buffer("is_face_expr", m[:, 1], persistent=False)
        self.register_buffer("is_hand", m[:, 2] | m[:, 3], persistent=False)
        self.register_buffer("is_body", ~(m[:, 0] | m[:, 2] | m[:, 3]), persistent=False)
        self.register_buffer("uses_correctives", (self.is_hand | self.is_face_expr).float()[:, None], persistent=False)
        self.register_buffer("hand_sides", torch.stack([m[:, 2], m[:, 3]]), persistent=False)
        if uv is not None:
            self.register_buffer("uv_coords", uv[0], persistent=False)
            self.register_buffer("uv_faces", uv[1], persistent=False)
        self.register_buffer("laplacian", uniform_laplacian(faces, self.num_gaussians), persistent=False)
        for name in ("lap_position", "lap_scale", "lap_color", "offset", "scale"):
            self.register_buffer(f"w_{name}", self._part_weights(c.part_weights[name]), persistent=False)

        # nearest-original-vertex candidates of every Gaussian: the closest *body* template vertices
        with torch.no_grad():
            canon0 = body.canonical("star", self.betas, body_pose=self.canon_body_pose).vertices[0]
            body_ids = torch.nonzero(parts.body).squeeze(1)
            k = min(int(c.nearest_candidates), body_ids.numel())
            cand = []
            for chunk in self._up(canon0).split(4096):
                cand.append(body_ids[torch.cdist(chunk, canon0[body_ids]).topk(k, largest=False).indices])
            self.register_buffer("nn_candidates", torch.cat(cand), persistent=False)
            sub_canon = self._up(canon0)
            edge = (sub_canon[faces[:, [1, 2, 0]]] - sub_canon[faces]).norm(dim=-1).mean()
        self.base_scale = float(c.init_scale_factor) * float(edge)

        # identity networks: triplanes at the fixed template, MLPs to offset / scale / colour
        C, R, H, G = int(c.triplane_channels), int(c.triplane_resolution), int(c.hidden), int(c.norm_groups)
        centre = enc_verts.mean(0)
        half = 0.5 * float(c.triplane_extent)
        std = float(c.triplane_init_std)
        init = dict(reduce="concat", init="normal" if std > 0 else "zero", init_std=max(std, 1e-12))
        self.triplane = Triplane(C, R, bbox=((centre - half).tolist(), (centre + half).tolist()), **init)
        face_centre = self.enc_verts[self.is_face].mean(0)
        half = 0.5 * float(c.face_triplane_extent)
        self.triplane_face = Triplane(C, R, bbox=((face_centre - half).tolist(), (face_centre + half).tolist()), **init)
        self.geo_net = make_mlp([3 * C, H, H, H], G, norm_last=True)
        self.offset_head = _head(H, 3, 1e-3)
        self.scale_head = _head(H, 1, 1e-3)
        self.rgb_net = make_mlp([3 * C, H, H, H, 3], G, norm_last=False)
        pose_dim = 6 * Jb
        self.pose_geo_net = PoseMLP(3 * C, pose_dim, [H, H, H], G, norm_last=True)
        self.pose_offset_head = _head(H, 3, 1e-3)
        self.pose_scale_head = _head(H, 1, 1e-3)
        self.pose_rgb_net = PoseMLP(3 * C + 3, pose_dim, [H, H, H, 3], G, norm_last=False)

        # per-frame SMPL-X corrections (zero-initialised deltas on the dataset's fits)
        self.pose_keys = POSE_KEYS_SMPLX if self.model_type == "smplx" else POSE_KEYS_SMPL
        widths = {"global_orient": 3, "body_pose": 3 * Jb, "transl": 3, "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3,
                  "left_hand_pose": body.num_pca_comps, "right_hand_pose": body.num_pca_comps,
                  "expression": body.num_expression_coeffs}
        self.pose_slices: Dict[str, Tuple[int, int]] = {}
        start = 0
        for key in self.pose_keys:
            self.pose_slices[key] = (start, start + widths[key])
            start += widths[key]
        self.pose_delta = nn.Embedding(max(len(info.get("frame_ids", [])), 1), start, sparse=True)
        nn.init.zeros_(self.pose_delta.weight)
        self.pose_delta.weight.requires_grad_(bool(c.pose_opt.enabled))

        names = body.joint_names
        pairs = [(names.index(n), names.index("left" + n[5:])) for n in names if n.startswith("right")]
        self.register_buffer("_sym_pairs", torch.tensor(pairs, dtype=torch.long).view(-1, 2), persistent=False)
        hand_joint = torch.ones(body.num_joints, 1)
        hand_joint[[i for i, n in enumerate(names) if any(f in n for f in ("index", "middle", "pinky", "ring", "thumb"))
                    or n.endswith("_hand")]] = 10.0
        self.register_buffer("_joint_reg_weight", hand_joint, persistent=False)

        self.face_loss = FlameFaceLoss.from_config(c.face_loss, body, info)
        if self.face_loss is None:
            log.warning("exavatar: no face loss - FLAME assets are not configured (method.face_loss.texture is the "
                        "subject's face texture, with FLAME_texture.npz and a FLAME model in method.face_loss.flame_dir "
                        "or <body_models>/flame, and SMPL-X__FLAME_vertex_ids.npy next to the SMPL-X model); "
                        "training without it")

    # ---------------------------------------------------------------- construction helpers
    def _part_weights(self, spec: Mapping[str, float]) -> torch.Tensor:
        """Per-Gaussian multipliers `[N]` from {body, hand, face, face_expr} (face_expr wins over face)."""
        w = torch.full((self.num_gaussians,), float(spec["body"]))
        w[self.is_hand.cpu()] = float(spec["hand"])
        w[self.is_face.cpu()] = float(spec["face"])
        w[self.is_face_expr.cpu()] = float(spec["face_expr"])
        return w.to(self.is_face.device)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        """Carry per-vertex values `[..., V, C]` of the SMPL-X mesh to the subdivided mesh `[..., N, C]`."""
        for level in range(self._num_levels):
            x = subdivide_attributes(x, getattr(self, f"_edges{level}"))
        return x

    def subject_betas(self) -> torch.Tensor:
        """`[1, S]` the subject's betas (plus the learnt refinement)."""
        return self.betas if self.betas_delta is None else self.betas + self.betas_delta

    def canonical_mesh(self) -> Dict[str, torch.Tensor]:
        """The subdivided canonical mesh: `verts [N, 3]`, `faces [F, 3]`, and `uv [T, 2]` / `uv_faces [F, 3]`
        when the body model has a UV layout (carried through the subdivision)."""
        canon = self.body.canonical("star", self.subject_betas(), body_pose=self.canon_body_pose)
        out = {"verts": self._up(canon.vertices[0]), "faces": self.faces}
        if hasattr(self, "uv_coords"):
            out.update(uv=self.uv_coords, uv_faces=self.uv_faces)
        return out

    # ---------------------------------------------------------------- identity (pose-independent)
    def features(self) -> torch.Tensor:
        """Triplane features `[N, 3C]` at the fixed template (face Gaussians read the face triplane)."""
        feats = self.triplane(self.enc_verts)
        return torch.where(self.is_face[:, None], self.triplane_face(self.enc_verts), feats)

    def identity(self) -> Dict[str, Any]:
        """What does not depend on the frame: canonical mesh, Gaussian offsets, scales, colours, weights."""
        canon = self.body.canonical("star", self.subject_betas(), body_pose=self.canon_body_pose)
        verts0 = canon.vertices[0]
        verts = self._up(verts0)
        feats = self.features()
        geo = self.geo_net(feats)
        offset = self.offset_head(geo)
        log_scale = self.scale_head(geo).clamp(-6.0, 4.0)
        # body Gaussians: LBS weights of the nearest original body vertex; hands and face keep theirs
        pos = (verts + offset).detach()
        d = (pos[:, None] - verts0.detach()[self.nn_candidates]).pow(2).sum(-1)
        nearest = self.nn_candidates.gather(1, d.argmin(1, keepdim=True)).squeeze(1)
        weights = torch.where(self.is_body[:, None], self.body.lbs_weights[nearest], self.sub_weights)
        return {"canon": canon, "verts": verts, "feats": feats, "offset": offset, "log_scale": log_scale,
                "rgb_raw": self.rgb_net(feats), "weights": weights, "nearest": nearest}

    # ---------------------------------------------------------------- per frame
    def frame_body(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The batch's body parameters (subject betas) plus the per-frame corrections of seen frames."""
        params = body_params(batch["body"], self.subject_betas())
        if not self.cfg.pose_opt.enabled:
            return params
        slot = self.frame_slot(batch)
        active = (slot >= 0).float().view(-1, 1)
        return self.apply_delta(params, self.pose_delta(slot.clamp_min(0)) * active)

    def apply_delta(self, params: Dict[str, torch.Tensor], delta: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Add a packed delta `[B, D]` (layout `pose_slices`) to the body parameters."""
        out = dict(params)
        B = delta.shape[0]
        for key, (a, b) in self.pose_slices.items():
            base = out.get(key)
            if base is None:
                base = delta.new_zeros(B, b - a)
            base = base.reshape(base.shape[0], -1).to(delta)
            if base.shape[1] < b - a:
                base = F.pad(base, (0, b - a - base.shape[1]))
            out[key] = base + delta[:, a:b]
        return out

    @torch.no_grad()
    def gaussians(self, body: Mapping[str, Any], canonical: bool = False, frame_id: int = -1) -> Gaussians:
        """The avatar's Gaussians for one frame's body parameters (export, animation, the Python API).

        Args:
            body: SMPL-X parameters of one frame: ``body_pose [3J]`` and optionally ``global_orient``,
                ``transl``, ``jaw_pose``, ``left_hand_pose``, ``right_hand_pose``, ``expression``
                (leading axis of 1 optional; missing ones are zero; betas are the subject's).
            canonical: the Gaussians on the body in its zero pose at the origin.
            frame_id: a trained frame id applies that frame's learned pose correction; -1: none.

        Returns:
            ``Gaussians``: isotropic linear scales, identity rotations, opacity 1, RGB colours.
        """
        dev = self.subject_betas().device
        given = {k: torch.as_tensor(v, dtype=torch.float32).reshape(1, -1).to(dev) for k, v in body.items()
                 if k != "betas" and torch.as_tensor(v).numel() > 0}
        if "body_pose" not in given:
            raise ValueError(f"gaussians(): body needs 'body_pose' [{3 * self.body.num_body_joints}], got {sorted(body)}")
        given.setdefault("global_orient", torch.zeros(1, 3, device=dev))
        given.setdefault("transl", torch.zeros(1, 3, device=dev))
        if canonical:
            given = {k: torch.zeros_like(v) for k, v in given.items()}
            frame_id = -1
        params = self.frame_body({"body": given, "frame_id": torch.tensor([int(frame_id)], device=dev)})
        g = self.posed_gaussians(params)
        n = g["means"].shape[1]
        quats = g["means"].new_zeros(n, 4)
        quats[:, 0] = 1.0
        return Gaussians(means=g["means"][0], quats=quats, scales=g["scale"][0].expand(-1, 3).contiguous(),
                         opacities=g["means"].new_ones(n), colors=g["color"][0])

    def posed_gaussians(self, params: Dict[str, torch.Tensor], ident: Optional[Dict[str, Any]] = None) -> Dict[str, torch.Tensor]:
        """Posed Gaussians of both images for body parameters `params` (batch B).

        Returns:
            dict with `means_tri, means [B, N, 3]` (world), `scale_tri [1, N, 1]`, `scale [B, N, 1]`,
            `color_tri [1, N, 3]`, `color [B, N, 3]`, and the offsets the regularisers read:
            `offset [N, 3]`, `pose_offset [B, N, 3]`, `scale_offset [B, N, 1]`, `verts [N, 3]`.
        """
        ident = self.identity() if ident is None else ident
        body = self.body
        frame = {k: v for k, v in params.items() if k != "expression"}  # the skeleton is expression-free
        posed = body(frame)
        B = posed.transforms.shape[0]
        to_posed = posed.transforms @ rigid_inverse(ident["canon"].transforms)
        verts, feats = ident["verts"], ident["feats"]
        mean_tri = (verts + ident["offset"]).expand(B, -1, -1)
        if self.model_type == "smplx" and params.get("expression") is not None:
            expr = params["expression"].reshape(params["expression"].shape[0], -1).to(verts)
            E = body.num_expression_coeffs
            if expr.shape[1] > E:
                raise ValueError(f"body parameter 'expression' has {expr.shape[1]} coefficients; this model uses {E}")
            dirs = body.smplx.expr_dirs[..., :expr.shape[1]]
            mean_tri = mean_tri + self._up(torch.einsum("be,vce->bvc", expr, dirs)).expand(B, -1, -1)
        jb = body.num_body_joints
        pose6d = posed.rot_mats[:, 1:1 + jb, :, :2].reshape(B, -1).detach()  # body pose without the root
        N = verts.shape[0]
        h = self.pose_geo_net(feats[None], pose6d)  # [B, N, H]
        mlp_offset = self.pose_offset_head(h) * (1.0 - self.uses_correctives)
        scale_offset = self.pose_scale_head(h)
        correctives = self._up(posed.pose_offsets) * self.uses_correctives
        mean = mean_tri + mlp_offset + correctives
        means_tri = lbs_points(mean_tri, ident["weights"], to_posed)
        means = lbs_points(mean, ident["weights"], to_posed)
        normals = vertex_normals(means.detach(), self.faces)
        rgb_offset = self.pose_rgb_net(torch.cat([feats.expand(B, -1, -1), normals], -1), pose6d)  # [B, N, 3]
        raw = ident["rgb_raw"]
        return {
            "means_tri": means_tri, "means": means,
            "scale_tri": (self.base_scale * torch.exp(ident["log_scale"]))[None],
            "scale": self.base_scale * torch.exp((ident["log_scale"][None] + scale_offset).clamp(-6.0, 4.0)),
            "color_tri": (0.5 * (torch.tanh(raw) + 1.0))[None], "color": 0.5 * (torch.tanh(raw[None] + rgb_offset) + 1.0),
            "offset": ident["offset"], "pose_offset": mlp_offset, "scale_offset": scale_offset, "verts": verts,
        }

    def _splat(self, means: torch.Tensor, scale: torch.Tensor, rgb: torch.Tensor, cameras: Cameras,
               background: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = means.shape[0]
        quats = means.new_zeros(n, 4)
        quats[:, 0] = 1.0
        gs = Gaussians(means=means, quats=quats, scales=scale.expand(-1, 3), opacities=means.new_ones(n), colors=rgb)
        out = render(gs, cameras, backgrounds=background.view(1, 3), render_mode="RGB+ED")
        return out.rgb.permute(0, 3, 1, 2), out.alpha.permute(0, 3, 1, 2), out.depth.permute(0, 3, 1, 2)

    def render_params(self, params: Dict[str, torch.Tensor], batch: Dict[str, Any], background: torch.Tensor,
                      ident: Optional[Dict[str, Any]] = None, both: bool = True) -> Dict[str, torch.Tensor]:
        """Render body parameters from the batch's cameras (the pose-independent image too with `both`)."""
        g = self.posed_gaussians(params, ident)
        cameras = Cameras.from_batch(batch)
        out: Dict[str, List[torch.Tensor]] = {}
        for b in range(g["means"].shape[0]):
            cam = cameras[b:b + 1]
            views = [("", g["means"][b], g["scale"][b], g["color"][b])]
            if both:
                views.append(("_tri", g["means_tri"][b], g["scale_tri"][0], g["color_tri"][0]))
            for tag, means, scale, rgb in views:
                rgb_img, alpha, depth = self._splat(means, scale, rgb, cam, background)
                for key, value in ((f"rgb{tag}", rgb_img), (f"alpha{tag}", alpha), (f"depth{tag}", depth)):
                    out.setdefault(key, []).append(value)
        result: Dict[str, torch.Tensor] = {k: torch.cat(v) for k, v in out.items()}
        result.update(g)
        return result

    def render_batch(self, batch: Dict[str, Any], background: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.render_params(self.frame_body(batch), batch, background, both=self.training)

    # ---------------------------------------------------------------- losses / optimisation
    def photometric(self, pred: torch.Tensor, gt: torch.Tensor, lpips_weight: float) -> Dict[str, torch.Tensor]:
        """The paper's RGB terms of one image: 0.8 L1, 0.2 (1 - SSIM), 0.2 LPIPS (weights from the config)."""
        terms = {"l1": self.weight("l1") * l1_loss(pred, gt), "ssim": self.weight("ssim") * (1.0 - ssim(pred, gt))}
        if lpips_weight > 0:
            terms["lpips"] = lpips_weight * self.lpips(pred, gt).mean()
        return terms

    def laplacian_terms(self, out: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Laplacian smoothness of position offsets, scales and colours (per coordinate, part-weighted)."""
        verts = out["verts"].detach()
        L = self.laplacian
        pos = laplacian_loss(verts + out["offset"], L, reference=verts, weights=self.w_lap_position)
        pos = pos + laplacian_loss(verts + out["offset"] + out["pose_offset"], L, reference=verts,
                                   weights=self.w_lap_position)
        scale = laplacian_loss(out["scale_tri"], L, weights=self.w_lap_scale) + \
            laplacian_loss(out["scale"], L, weights=self.w_lap_scale)
        color = laplacian_loss(out["color_tri"], L, weights=self.w_lap_color) + \
            laplacian_loss(out["color"], L, weights=self.w_lap_color)
        return {"lap_position": self.weight("lap_position") * pos / 3.0,
                "lap_scale": self.weight("lap_scale") * scale,
                "lap_color": self.weight("lap_color") * color / 3.0}

    def loss_terms(self, batch, out, gt) -> Dict[str, torch.Tensor]:
        lp = self.weight("lpips")
        terms = self.photometric(out["rgb"], gt, lp)
        if "rgb_tri" in out:
            tri = float(self.weight("tri_image"))
            terms.update({f"{k}_tri": tri * v for k, v in self.photometric(out["rgb_tri"], gt, lp).items()})
        terms.update(self.laplacian_terms(out))
        w_off = self.w_offset[:, None]
        terms["offset"] = self.weight("offset") * ((out["offset"].pow(2) * w_off).mean()
                                                   + (out["pose_offset"].pow(2) * w_off).mean())
        w_s = self.w_scale[:, None]
        terms["scale"] = self.weight("scale") * ((out["scale"].pow(2) * w_s).mean()
                                                 + (out["scale_offset"].pow(2) * w_s).mean())
        hand = out["rgb"].new_zeros(())
        for rgb in (out["color_tri"], out["color"]):
            for side in self.hand_sides:
                if bool(side.any()):
                    colours = rgb[:, side]
                    hand = hand + (colours - colours.mean(1, keepdim=True).detach()).pow(2).mean()
        terms["hand_color"] = self.weight("hand_color") * hand
        dJ = self.body.joint_offsets()
        if dJ is not None:
            terms["joint_offset"] = self.weight("joint_offset") * (dJ.pow(2) * self._joint_reg_weight).mean()
            r, left = dJ[self._sym_pairs[:, 0]], dJ[self._sym_pairs[:, 1]]
            sym = (r[:, 0] + left[:, 0]).abs() + (r[:, 1] - left[:, 1]).abs() + (r[:, 2] - left[:, 2]).abs()
            terms["joint_symmetry"] = self.weight("joint_symmetry") * sym.mean()
        if self.body.face_offset is not None:
            terms["face_offset"] = self.weight("face_offset") * self.body.face_offset.pow(2).mean()
        if self.face_loss is not None:
            cameras = Cameras.from_batch(batch)
            face = 0.0
            for key in ("rgb", "rgb_tri"):
                if key not in out:
                    continue
                means = out["means" if key == "rgb" else "means_tri"]
                face = face + self.face_loss(out[key], gt, means[:, :self.body.num_vertices], cameras)
            terms["face"] = float(self.cfg.face_loss.weight) * face
        return terms

    def param_groups(self) -> List[Dict[str, Any]]:
        lr = float(self.cfg.optim.lr)
        nets = [self.geo_net, self.offset_head, self.scale_head, self.rgb_net, self.pose_geo_net, self.pose_offset_head,
                self.pose_scale_head, self.pose_rgb_net]
        groups = [
            {"params": [self.triplane.planes, self.triplane_face.planes], "lr": lr, "name": "triplanes"},
            {"params": [p for n in nets for p in n.parameters()], "lr": lr, "name": "mlps"},
            {"params": list(self.body.parameters()) + ([self.betas_delta] if self.betas_delta is not None else []),
             "lr": lr, "name": "identity_offsets"},
        ]
        if self.cfg.pose_opt.enabled:
            groups.append({"params": [self.pose_delta.weight], "lr": float(self.cfg.pose_opt.lr), "name": "pose_opt",
                           "sparse": True})
        return groups

    # ---------------------------------------------------------------- test-time pose fitting
    def fit_pose(self, batch: Dict[str, Any], background: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Fit the frame's SMPL-X parameters to its image with the avatar frozen (paper's test protocol).

        Adam on a packed delta over `pose_slices` for `test_fit.steps` steps of 0.8 L1 + 0.2 (1 - SSIM)
        (+ `test_fit.lpips` LPIPS) against the ground truth on `background`.

        Returns:
            The fitted body parameters.
        """
        fit = self.cfg.test_fit
        with torch.no_grad():
            ident = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in self.identity().items()}
        base = self.frame_body(batch)
        base = {k: v.detach() for k, v in base.items()}
        gt = composite(batch["image"], batch["mask"], background)
        delta = torch.zeros(gt.shape[0], self.pose_delta.embedding_dim, device=gt.device, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=float(fit.lr))
        for _ in range(int(fit.steps)):
            out = self.render_params(self.apply_delta(base, delta), batch, background, ident=ident, both=False)
            pred = out["rgb"]
            loss = 0.8 * l1_loss(pred, gt) + 0.2 * (1.0 - ssim(pred, gt))
            if float(fit.lpips) > 0:
                loss = loss + float(fit.lpips) * self.lpips(pred, gt).mean()
            (grad,) = torch.autograd.grad(loss, [delta])
            opt.zero_grad()
            delta.grad = grad
            opt.step()
        return {k: v.detach() for k, v in self.apply_delta(base, delta.detach()).items()}

    def test_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        super().test_step(batch, batch_idx, dataloader_idx)
        if not self.cfg.test_fit.enabled:
            return
        names = list(self.test_split_names)
        split = (names[dataloader_idx] if dataloader_idx < len(names) else f"test{dataloader_idx}") + "_fit"
        bg = self.background_color(training=False)
        with torch.inference_mode(False), torch.enable_grad():
            local = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
            local["body"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch["body"].items()}
            fitted = self.fit_pose(local, bg.clone())
            with torch.no_grad():
                pred = self.render_params(fitted, local, bg.clone(), both=False)["rgb"].clamp(0, 1)
        from zoo.core.metrics import evaluate_images

        with torch.no_grad():
            scores = evaluate_images(pred, batch["image"], batch["mask"], self.protocol, lpips=self.lpips_metric)
        self.test_metrics(split).update(scores, n=int(pred.shape[0]), device=self.device)  # reduced over DDP ranks
        if self.image_dir is not None:
            self.save_images(self.image_dir / split, batch, pred)
