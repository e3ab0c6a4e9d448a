"""3DGS-Avatar (Qian et al., CVPR 2024): free 3D Gaussians in a canonical space, deformed by a
pose-conditioned hash-grid field and a learned skinning field, coloured by a small MLP.

METHODS.md §2; facts from the official code (mikeqzy/3dgs-avatar-release, read, not copied).

* **Gaussians.** Full 3DGS attributes (``means [N,3]``, log ``scales [N,3]``, wxyz ``quats
  [N,4]``, logit ``opacities [N]``) plus a per-Gaussian feature ``f [N,32]``, initialised by sampling
  the canonical (star-pose) body surface: scale from the mean squared distance to the 3 nearest
  samples, opacity 0.1, identity rotation, zero feature. Densified and pruned by gsplat's
  ``DefaultStrategy`` on our renderer's meta (``zoo.core.densify``), with the opacity reset; the
  Gaussians are frozen for the first ``gaussian_delay`` iterations (the networks warm up first).
* **Non-rigid deformation.** Hash grid (16 levels x 2, table 2^16, resolution 16..2048) of the
  canonical position + a pose latent (a hierarchical encoder of the joint rotations along the
  kinematic tree, LEAP-style, with 0.1-radian rotation noise on half the training steps) -> MLP (3 x
  128, LeakyReLU) -> ``dx``, ``d log scale``, ``dq`` (the rotation ``(1, dq)`` composed with the
  Gaussian's) and a feature ``z [N,16]``. Off before ``non_rigid_delay``.
* **Rigid transformation.** A skinning MLP (4 x 128) of the normalised canonical position gives
  LBS weights through a softmax along the kinematic tree (the official hierarchical softmax,
  generalised to any tree; 25 logits for SMPL); ``lbs_points`` / ``lbs_quats`` pose positions and
  rotations. The skinning loss compares the field with the body model's weights at 1024 random
  canonical surface samples per step (weight 10 until iteration 1000, then 0.1).
* **Colour.** MLP (2 x 64) on ``[f, SH basis (degree 3, band 0 dropped) of the view direction
  canonicalised by the inverse of the blended LBS rotation, z, per-frame latent (16-d)]`` -> sigmoid
  RGB. Training rotates view directions by a random rotation of 45-degree spread. Frames never
  trained (novel poses) use the latent of the last training frame, as the official code does.
* **Pose correction.** Per-frame body-pose / translation deltas (sparse, SparseAdam, lr 1e-4) from
  ``pose_opt_start``.
* **AIAP.** Canonical-space kNN (4 neighbours besides the point itself), recomputed after every
  densification and every ``aiap.knn_every`` steps; position and covariance isometry losses between
  canonical and posed Gaussians.
* **Losses.** L1 1.0, LPIPS 0.01 (on the ground-truth mask's bounding box), mask L1 0.1, skinning,
  AIAP-xyz 1, AIAP-cov 100. Learning rates: position 1.6e-4 x scene extent decaying exponentially
  to 1.6e-6 x extent over 30k iterations; feature 1e-3, opacity 0.05, scaling 5e-3, rotation
  1e-3 (constant); non-rigid 1e-3, skinning 1e-4, colour 1e-3, latents 1e-3 (weight decay 0.05),
  all decaying exponentially to 0.1x over the run; gradient norm of the networks clipped at 0.1.

Every iteration count of the recipe is written for 15k iterations (``schedule.reference_steps``)
and, with ``schedule.scale_to_run``, scaled to the run's ``max_steps`` (intervals never below
``schedule.min_interval``); the opacity recovery pause after a reset is a number of optimizer
steps and is not scaled.

Known differences from the official code: our renderer's covariance uses the rotation factor of the
blended LBS matrix (``lbs_quats``) where the official code multiplies by the blended matrix itself;
the non-rigid MLP's last layer starts at ``N(0, 1e-5)`` (an official option) so switching it on
does not jolt the avatar; betas are not optimised.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import ListConfig

from zoo.core.body import BodyModel
from zoo.core.camera import Cameras
from zoo.core.densify import Densifier, GaussianParameters
from zoo.core.encoding import MLP, HashGridEncoding
from zoo.core.gaussians import Gaussians
from zoo.core.losses import l1_loss
from zoo.core.mesh import sample_surface
from zoo.core.projection import quat_scale_to_covar, spherical_harmonics
from zoo.core.quaternion import quat_multiply
from zoo.core.regularizers import aiap_covariance_loss, aiap_position_loss, knn
from zoo.core.render import render
from zoo.core.skinning import lbs_matrices, lbs_points, lbs_quats, rigid_inverse
from zoo.methods.base import AvatarModule
from zoo.methods.common import body_model_for, body_params
from zoo.registry import register_method


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------


def _children(parents: Sequence[int]) -> List[List[int]]:
    kids: List[List[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            kids[p].append(j)
    return kids


def tree_logit_count(parents: Sequence[int]) -> int:
    """Logits :func:`tree_softmax` needs: one gate per non-leaf joint, one per joint with siblings."""
    kids = _children(parents)
    return sum(1 for k in kids if k) + sum(len(k) for k in kids if len(k) > 1)


def tree_softmax(logits: torch.Tensor, parents: Sequence[int]) -> torch.Tensor:
    """Skinning weights that flow down the kinematic tree (3DGS-Avatar's hierarchical softmax).

    The root starts with all the mass. A non-leaf joint keeps ``1 - sigmoid(gate)`` of the mass it
    receives and passes the rest to its children, split by a softmax over the children's logits
    (all of it to an only child); a leaf keeps what it receives. The rows sum to one exactly.
    Logit layout: the gates of the non-leaf joints in joint order, then the child logits of the
    joints whose parent has several children, in joint order (25 logits for SMPL's 24 joints).

    Args:
        logits: ``[N, tree_logit_count(parents)]``.
        parents: parent index of every joint (``-1`` for the root); parents precede children.

    Returns:
        ``[N, J]`` weights.
    """
    kids = _children(parents)
    if logits.shape[-1] != tree_logit_count(parents):
        raise ValueError(f"tree_softmax: expected {tree_logit_count(parents)} logits, got {logits.shape[-1]}")
    gate_of, child_of, col = {}, {}, 0
    for j, k in enumerate(kids):
        if k:
            gate_of[j] = col
            col += 1
    for j, p in enumerate(parents):
        if p >= 0 and len(kids[p]) > 1:
            child_of[j] = col
            col += 1
    mass: List[Optional[torch.Tensor]] = [None] * len(parents)
    keep: List[Optional[torch.Tensor]] = [None] * len(parents)
    mass[0] = torch.ones_like(logits[..., 0])
    for j, k in enumerate(kids):
        if mass[j] is None:
            raise ValueError("tree_softmax: parents must precede their children")
        if not k:
            keep[j] = mass[j]
            continue
        g = torch.sigmoid(logits[..., gate_of[j]])
        keep[j] = mass[j] * (1.0 - g)
        passed = mass[j] * g
        if len(k) == 1:
            mass[k[0]] = passed
        else:
            share = torch.softmax(torch.stack([logits[..., child_of[c]] for c in k], dim=-1), dim=-1)
            for i, c in enumerate(k):
                mass[c] = passed * share[..., i]
    return torch.stack(keep, dim=-1)


class HierarchicalPoseEncoder(nn.Module):
    """Pose latent from joint rotations, joint by joint down the kinematic tree (LEAP, as in 3DGS-Avatar).

    A global feature ``Linear([R_1..R_J, J_1..J_J]) -> d`` seeds the root; joint ``j`` maps
    ``[R_j (9), J_j (3), bone length, feature of its parent (d)]`` through ``Linear-ReLU-Linear`` to
    its own ``d`` values. The latent is the concatenation ``[B, J * d]``.

    Args:
        parents: parent of every joint (-1 for the root), parents first.
        dim_per_joint: ``d`` (paper: 6).
    """

    def __init__(self, parents: Sequence[int], dim_per_joint: int = 6):
        super().__init__()
        self.parents = [int(p) for p in parents]
        J, d = len(self.parents), int(dim_per_joint)
        self.global_layer = nn.Linear(12 * J, d)
        self.joint_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(13 + d, 13 + d), nn.ReLU(), nn.Linear(13 + d, d)) for _ in range(J))
        self.out_dim = J * d

    def forward(self, rots: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """rots ``[B, J, 9]`` local rotations, joints ``[B, J, 3]`` normalised rest joints -> ``[B, J*d]``."""
        B = rots.shape[0]
        feat = [None] * len(self.parents)
        glob = self.global_layer(torch.cat([rots.reshape(B, -1), joints.reshape(B, -1)], dim=-1))
        for j, p in enumerate(self.parents):
            bone = joints[:, j] if p < 0 else joints[:, j] - joints[:, p]
            prev = glob if p < 0 else feat[p]
            feat[j] = self.joint_layers[j](torch.cat([rots[:, j], joints[:, j], bone.norm(dim=-1, keepdim=True), prev], -1))
        return torch.cat(feat, dim=-1)


class TcnnHashGrid(nn.Module):
    """tiny-cuda-nn's hash grid with the zoo encoder's interface (optional CUDA backend).

    Same hyper-parameters as :class:`zoo.core.encoding.HashGridEncoding` (tiny-cuda-nn's own table
    layout and grid offsets, so the two agree as functions after fitting, not entry by entry).
    """

    def __init__(self, n_levels: int, n_features: int, log2_table_size: int, base_resolution: int,
                 max_resolution: int, bbox):
        super().__init__()
        import tinycudann as tcnn

        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(n_levels - 1, 1))
        self.encoding = tcnn.Encoding(3, {"otype": "HashGrid", "n_levels": int(n_levels),
                                          "n_features_per_level": int(n_features),
                                          "log2_hashmap_size": int(log2_table_size),
                                          "base_resolution": int(base_resolution), "per_level_scale": growth})
        self.register_buffer("bbox_min", torch.as_tensor(bbox[0], dtype=torch.float32), persistent=False)
        self.register_buffer("bbox_max", torch.as_tensor(bbox[1], dtype=torch.float32), persistent=False)
        self.out_dim = int(n_levels) * int(n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = ((x - self.bbox_min) / (self.bbox_max - self.bbox_min)).clamp(0.0, 1.0)
        return self.encoding(x01.reshape(-1, 3)).float().reshape(*x.shape[:-1], self.out_dim)


def tcnn_available() -> bool:
    """Whether tiny-cuda-nn imports and CUDA is present."""
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a broken build raising at import
        return False
    return torch.cuda.is_available()


def make_hash_grid(cfg: Mapping[str, Any], bbox) -> nn.Module:
    """The non-rigid field's hash grid: ``backend`` torch (default), tcnn, or auto (tcnn when usable).

    Raises:
        ValueError: an unknown backend, or tcnn asked for where it is not installed.
    """
    backend = str(cfg.get("backend", "torch"))
    if backend not in ("torch", "tcnn", "auto"):
        raise ValueError(f"method.non_rigid.backend must be torch, tcnn or auto, got {backend!r}")
    args = (int(cfg.n_levels), int(cfg.n_features), int(cfg.log2_table_size), int(cfg.base_resolution),
            int(cfg.max_resolution))
    if backend == "tcnn" or (backend == "auto" and tcnn_available()):
        if not tcnn_available():
            raise ValueError("method.non_rigid.backend=tcnn needs tiny-cuda-nn and CUDA; use backend=torch")
        return TcnnHashGrid(*args, bbox=bbox)
    return HashGridEncoding(3, *args, bbox=bbox)


def view_noise_rotation(degrees: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random rotation ``[3, 3]`` for view-direction augmentation (the official ``augm_rots``).

    Roll and yaw are ``N(0, degrees)`` clipped to ``±2 degrees``, pitch ``U(0, degrees)``; the
    rotation is ``R_x(roll) R_y(pitch) R_z(yaw)``.
    """
    r = torch.randn(2, generator=generator).clamp(-2.0, 2.0) * degrees
    pitch = torch.rand(1, generator=generator)[0] * degrees
    a, b, c = (math.radians(float(v)) for v in (r[0], pitch, r[1]))
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return (rx @ ry @ rz).float()


# ------------------------------------------------------------------------------------------------
# the method
# ------------------------------------------------------------------------------------------------


@register_method("gs_avatar")
class GSAvatar(AvatarModule):
    """3DGS-Avatar; config: configs/method/gs_avatar.yaml (every field commented)."""

    GAUSSIAN_LR_KEYS = {"means": "position_lr", "features": "feature", "opacities": "opacity",
                        "scales": "scaling", "quats": "rotation"}

    def __init__(self, cfg, data_info: Optional[Mapping] = None):
        super().__init__(cfg, data_info)
        c = self.cfg
        self.body: BodyModel = body_model_for(self.data_info)
        betas = torch.as_tensor(self.data_info.get("betas", [0.0] * self.body.num_betas), dtype=torch.float32).view(1, -1)
        self.register_buffer("betas", betas)
        # iterations trained so far: schedules (delays) stay where training left them after a reload
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        with torch.no_grad():
            canon = self.body.canonical(str(c.canonical), betas)
            rest = self.body({"betas": betas}).rest_joints[0]
        verts = canon.vertices[0]
        pad = float(c.aabb_padding) * (verts.max(0).values - verts.min(0).values)
        lo, hi = verts.min(0).values - pad, verts.max(0).values + pad
        self.register_buffer("canon_verts", verts, persistent=False)
        self.register_buffer("canon_inv", rigid_inverse(canon.transforms[0]), persistent=False)
        self.register_buffer("aabb_min", lo, persistent=False)
        self.register_buffer("aabb_max", hi, persistent=False)
        self.register_buffer("rest_joints", 2.0 * (rest - lo) / (hi - lo) - 1.0, persistent=False)
        self.register_buffer("sh_eye", torch.eye((int(c.color.sh_degree) + 1) ** 2), persistent=False)
        self.parents = [int(p) for p in self.body.parents.tolist()]
        self.parents[0] = -1
        J = len(self.parents)

        # Gaussians on the canonical surface
        n = int(c.num_gaussians)
        if n < 4:
            raise ValueError(f"method.num_gaussians must be at least 4, got {n}")
        gen = torch.Generator().manual_seed(int(c.init_seed))
        points, _, _ = sample_surface(verts, self.body.faces, n, generator=gen)
        _, dist = knn(points, 3)
        log_scale = dist.pow(2).mean(-1).clamp_min(1e-7).sqrt().log()
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        init_op = float(c.init_opacity)
        self.gs = GaussianParameters({
            "means": points, "scales": log_scale[:, None].repeat(1, 3).contiguous(), "quats": quats,
            "opacities": torch.full((n,), math.log(init_op / (1.0 - init_op))),
            "features": torch.zeros(n, int(c.feature_dim)),
        })

        # non-rigid field: hash grid + pose latent -> MLP
        nr = c.non_rigid
        self.hash_grid = make_hash_grid(nr, (lo.tolist(), hi.tolist()))
        self.pose_encoder = HierarchicalPoseEncoder(self.parents, int(nr.pose_dim_per_joint))
        self.z_dim = int(nr.feature_dim)
        self.non_rigid = MLP(self.hash_grid.out_dim + self.pose_encoder.out_dim, int(nr.hidden), 9 + self.z_dim,
                             int(nr.layers), activation="leaky_relu")
        nn.init.normal_(self.non_rigid.layers[-1].weight, std=float(nr.last_layer_std))
        nn.init.zeros_(self.non_rigid.layers[-1].bias)
        # skinning field
        sk = c.skinning
        self.hierarchical = bool(sk.hierarchical)
        n_logits = tree_logit_count(self.parents) if self.hierarchical else J
        self.skinning = MLP(3, int(sk.hidden), n_logits, int(sk.layers), activation="leaky_relu")
        # colour
        col = c.color
        n_sh = (int(col.sh_degree) + 1) ** 2 - 1
        self.num_frames = max(len(self.data_info.get("frame_ids", [])), 1)
        self.latent = nn.Embedding(self.num_frames, int(col.latent_dim))
        self.color_mlp = MLP(int(c.feature_dim) + n_sh + self.z_dim + int(col.latent_dim), int(col.hidden), 3,
                             int(col.layers), activation="leaky_relu", out_activation="sigmoid")
        # per-frame pose corrections
        pose_dim = 3 * self.body.num_body_joints
        self.pose_delta = nn.Embedding(self.num_frames, pose_dim + 3, sparse=True)
        self.transl_delta = nn.Embedding(self.num_frames, 3, sparse=True)
        nn.init.zeros_(self.pose_delta.weight)
        nn.init.zeros_(self.transl_delta.weight)
        if not c.pose_opt.enabled:
            self.pose_delta.weight.requires_grad_(False)
            self.transl_delta.weight.requires_grad_(False)

        d = c.densify
        if int(d.reset_recovery_steps) >= self.interval("opacity_reset_every"):
            raise ValueError("method.densify.reset_recovery_steps must be shorter than the opacity reset interval")
        self.densifier = Densifier(
            scene_scale=float(c.scene_extent), reset_opacity=float(d.reset_opacity),
            grow_grad2d=float(d.grad_threshold), grow_scale3d=float(d.percent_dense), prune_opa=float(d.prune_opacity),
            prune_scale3d=float(d.prune_scale),
            refine_start_iter=max(self.iters("densify_start"), self.iters("gaussian_delay")),
            refine_stop_iter=self.iters("densify_stop") if d.enabled else 0,
            refine_every=self.interval("densify_every"), reset_every=self.interval("opacity_reset_every"),
            pause_refine_after_reset=int(d.reset_recovery_steps))
        self._knn: Optional[torch.Tensor] = None
        self._knn_step = -1

    # ---------------------------------------------------------------- schedules
    @property
    def step(self) -> int:
        """The iteration schedules read: pinned, else the Trainer's step or, after a reload, the
        number of steps the checkpoint had trained (so delays do not restart at evaluation)."""
        pinned = getattr(self, "_pinned_step", None)
        if pinned is not None:
            return int(pinned)
        return max(int(self.global_step), int(self.trained_steps))

    def _scale(self) -> float:
        s = self.cfg.schedule
        total = int(self.cfg.get("max_steps", 0) or 0)
        if not s.scale_to_run or total <= 0:
            return 1.0
        return total / float(s.reference_steps)

    def iters(self, name: str) -> int:
        """An iteration count of `cfg.schedule`, scaled to the run length when configured."""
        return int(round(float(self.cfg.schedule[name]) * self._scale()))

    def interval(self, name: str) -> int:
        """A scaled interval of `cfg.schedule`, at least `schedule.min_interval` (and 1)."""
        floor = int(self.cfg.schedule.min_interval) if self._scale() != 1.0 else 1
        return max(self.iters(name), floor, 1)

    def weight(self, name: str) -> float:
        """Loss weight; a list ``[w0, step1, w1, step2, w2, ...]`` is piecewise constant (official
        form), its steps scaled like the schedule."""
        spec = self.cfg.loss.get(name)
        if isinstance(spec, (list, tuple, ListConfig)):
            values = [float(v) for v in spec]
            w = values[0]
            for k in range(1, len(values) - 1, 2):
                if self.step >= int(round(values[k] * self._scale())):
                    w = values[k + 1]
            return w
        return super().weight(name)

    def non_rigid_active(self) -> bool:
        """The non-rigid field is on from `schedule.non_rigid_delay`."""
        return self.step >= self.iters("non_rigid_delay")

    # ---------------------------------------------------------------- fields
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical points ``[..., 3]`` -> the bounding box's ``[-1, 1]`` cube."""
        return 2.0 * (x - self.aabb_min) / (self.aabb_max - self.aabb_min) - 1.0

    def skinning_weights(self, x: torch.Tensor) -> torch.Tensor:
        """LBS weights ``[N, J]`` of canonical points ``[N, 3]`` from the skinning field."""
        logits = self.skinning(self.normalise(x))
        return tree_softmax(logits, self.parents) if self.hierarchical else torch.softmax(logits, dim=-1)

    def skinning_loss(self, field=None) -> torch.Tensor:
        """Mean over canonical surface samples of ``sum_j (w_field - w_body)^2`` (official form).

        Args:
            field: weights function ``[M,3] -> [M,J]``; the module's skinning field when None.
        """
        faces = self.body.faces.to(self.canon_verts.device)
        pts, face_idx, bary = sample_surface(self.canon_verts, faces, int(self.cfg.skinning.samples))
        target = (self.body.lbs_weights.to(pts)[faces[face_idx]] * bary[..., None]).sum(1)
        pred = (field or self.skinning_weights)(pts)
        return (pred - target).pow(2).sum(-1).mean()

    def pose_latent(self, rot_mats: torch.Tensor) -> torch.Tensor:
        """Pose latent ``[B, P]`` from local joint rotations ``[B, J, 3, 3]`` (root set to identity)."""
        rots = rot_mats.clone()
        rots[:, 0] = torch.eye(3, dtype=rots.dtype, device=rots.device)
        rots = rots.reshape(rots.shape[0], -1, 9)
        noise = float(self.cfg.non_rigid.pose_noise)
        if self.training and noise > 0 and float(torch.rand(())) < 0.5:
            rots = rots + torch.randn_like(rots) * noise
        joints = self.rest_joints.unsqueeze(0).expand(rots.shape[0], -1, -1)
        return self.pose_encoder(rots, joints)

    def deform(self, to_posed: torch.Tensor, pose_latent: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Canonical Gaussians -> posed ones for one frame.

        Args:
            to_posed: ``[J, 4, 4]`` canonical-to-posed bone transforms.
            pose_latent: ``[P]``, or None to skip the non-rigid field.

        Returns:
            ``x`` (canonical after the non-rigid offset) ``[N,3]``, ``means [N,3]``, ``quats [N,4]``,
            ``log_scales [N,3]``, ``linear [N,3,3]`` (blended LBS matrix), ``z [N,Z]``.
        """
        g = self.gs
        x, log_s, q = g["means"], g["scales"], g["quats"]
        n = x.shape[0]
        z = x.new_zeros(n, self.z_dim)
        if pose_latent is not None:
            h = self.hash_grid(x)
            out = self.non_rigid(torch.cat([h, pose_latent.view(1, -1).expand(n, -1)], dim=-1))
            x = x + out[:, :3]
            log_s = log_s + out[:, 3:6]
            q = quat_multiply(torch.cat([torch.ones_like(out[:, :1]), out[:, 6:9]], dim=-1), q)
            z = out[:, 9:]
        w = self.skinning_weights(x)
        T = to_posed.unsqueeze(0)
        return {"x": x, "means": lbs_points(x, w, T)[0], "quats": lbs_quats(q, w, T)[0], "log_scales": log_s,
                "linear": lbs_matrices(w, T)[0, :, :3, :3], "z": z}

    def colors(self, d: Dict[str, torch.Tensor], w2c: torch.Tensor, slot: int) -> torch.Tensor:
        """Colour MLP on feature, canonicalised-view SH basis, z and the frame latent -> ``[N, 3]``."""
        centre = -w2c[:3, :3].T @ w2c[:3, 3]
        return self.colors_along(d, d["means"] - centre, slot)

    def colors_along(self, d: Dict[str, torch.Tensor], dirs: torch.Tensor, slot: int) -> torch.Tensor:
        """The colour MLP for world view directions ``dirs`` (``[N, 3]`` or ``[3]``, camera to Gaussian)."""
        dirs = dirs.expand_as(d["means"])
        dirs = (d["linear"].transpose(-1, -2) @ dirs.unsqueeze(-1)).squeeze(-1)
        deg = float(self.cfg.color.view_noise)
        if self.training and deg > 0:
            dirs = dirs @ view_noise_rotation(deg).to(dirs).T
        basis = spherical_harmonics(int(self.cfg.color.sh_degree), dirs, self.sh_eye)[..., 1:]
        idx = torch.tensor([slot if slot >= 0 else self.num_frames - 1], device=dirs.device)
        latent = self.latent(idx).expand(dirs.shape[0], -1)
        return self.color_mlp(torch.cat([self.gs["features"], basis, d["z"], latent], dim=-1))

    @torch.no_grad()
    def gaussians(self, body: Mapping[str, Any], canonical: bool = False, frame_id: int = -1,
                  sh_degree: int = 3, num_dirs: int = 64) -> Gaussians:
        """The avatar's Gaussians for one frame's body parameters (export, animation, the Python API).

        The colour MLP is view-dependent; a static 3DGS file needs SH coefficients, so the MLP is
        evaluated along ``num_dirs`` view directions (a Fibonacci sphere) and each Gaussian's SH of
        degree ``sh_degree`` is the least-squares fit (``rgb = 0.5 + SH``, the 3DGS convention).

        Args:
            body: body parameters of one frame: ``global_orient [3]``, ``body_pose [3J]``, ``transl [3]``
                (leading axis of 1 optional; missing orient/transl are zero; betas are the subject's).
            canonical: the Gaussians in the canonical space (non-rigid offsets of this pose, not skinned).
            frame_id: a training frame id: that frame's pose correction and colour latent; -1: none
                (the last frame's latent, as at test time).
            sh_degree: SH degree of the fitted colours (0..3).
            num_dirs: view directions of the fit (>= the number of SH bases).

        Returns:
            ``Gaussians`` with linear scales, unit quaternions, opacities in (0, 1) and ``sh [N, K, 3]``.
        """
        dev = self.betas.device
        given = {k: torch.as_tensor(v, dtype=torch.float32).reshape(1, -1).to(dev) for k, v in body.items()
                 if k != "betas" and torch.as_tensor(v).numel() > 0}
        if "body_pose" not in given:
            raise ValueError(f"gaussians(): body needs 'body_pose' [{3 * self.body.num_body_joints}], got {sorted(body)}")
        given.setdefault("global_orient", torch.zeros(1, 3, device=dev))
        given.setdefault("transl", torch.zeros(1, 3, device=dev))
        K = (int(sh_degree) + 1) ** 2
        if not 0 <= int(sh_degree) <= 3 or int(num_dirs) < K:
            raise ValueError(f"gaussians(): sh_degree must be 0..3 and num_dirs >= {K}, got {sh_degree}, {num_dirs}")
        fid = torch.tensor([int(frame_id)], device=dev)
        params = self.frame_body({"body": given, "frame_id": fid})
        posed = self.body(params)
        to_posed = posed.transforms @ self.canon_inv.unsqueeze(0)
        latent = self.pose_latent(posed.rot_mats)[0] if self.non_rigid_active() else None
        if canonical:
            to_posed = torch.eye(4, device=dev).expand_as(to_posed)
        d = self.deform(to_posed[0], latent)
        slot = int(self.frame_slot({"frame_id": fid})[0]) if frame_id >= 0 else -1
        # least-squares SH fit of the view-dependent colour over a Fibonacci sphere of directions
        i = torch.arange(int(num_dirs), device=dev, dtype=torch.float32) + 0.5
        z = 1.0 - 2.0 * i / int(num_dirs)
        phi = i * math.pi * (3.0 - math.sqrt(5.0))
        r = (1.0 - z * z).clamp_min(0).sqrt()
        dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)  # [M, 3]
        cols = torch.stack([self.colors_along(d, u, slot) for u in dirs], dim=0)  # [M, N, 3]
        basis = spherical_harmonics(int(sh_degree), dirs, torch.eye(K, device=dev)).expand(len(dirs), K)
        n = d["means"].shape[0]
        sh = torch.linalg.lstsq(basis, (cols - 0.5).reshape(len(dirs), -1)).solution  # [K, N*3]
        sh = sh.reshape(K, n, 3).permute(1, 0, 2).contiguous()
        return Gaussians(means=d["means"], quats=F.normalize(d["quats"], dim=-1), scales=torch.exp(d["log_scales"]),
                         opacities=torch.sigmoid(self.gs["opacities"]), sh=sh)

    def frame_body(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The batch's body parameters plus the learned per-frame corrections (seen frames only)."""
        params = body_params(batch["body"], self.betas)
        c = self.cfg
        if not c.pose_opt.enabled or (self.training and self.step < self.iters("pose_opt_start")):
            return params
        slot = self.frame_slot(batch)
        active = (slot >= 0).float().view(-1, 1)
        idx = slot.clamp_min(0)
        delta = self.pose_delta(idx) * active
        params["global_orient"] = params["global_orient"] + delta[:, :3]
        params["body_pose"] = params["body_pose"] + delta[:, 3:3 + params["body_pose"].shape[1]]
        params["transl"] = params["transl"] + self.transl_delta(idx) * active
        return params

    # ---------------------------------------------------------------- rendering
    def render_batch(self, batch: Dict[str, Any], background: torch.Tensor) -> Dict[str, torch.Tensor]:
        params = self.frame_body(batch)
        posed = self.body(params)
        to_posed = posed.transforms @ self.canon_inv.unsqueeze(0)
        latents = self.pose_latent(posed.rot_mats) if self.non_rigid_active() else None
        slots = self.frame_slot(batch).tolist()
        cameras = Cameras.from_batch(batch)
        opac = torch.sigmoid(self.gs["opacities"])
        track = self.training and torch.is_grad_enabled()
        rgbs, alphas, depths, means, covs = [], [], [], [], []
        for b in range(to_posed.shape[0]):
            d = self.deform(to_posed[b], None if latents is None else latents[b])
            scales = torch.exp(d["log_scales"])
            gs = Gaussians(means=d["means"], quats=d["quats"], scales=scales, opacities=opac,
                           colors=self.colors(d, cameras.w2c[b], int(slots[b])))
            out = render(gs, cameras[b:b + 1], backgrounds=background.view(1, 3), render_mode="RGB+ED")
            if track:
                self.densifier.before_backward(out.meta)
            rgbs.append(out.rgb)
            alphas.append(out.alpha)
            depths.append(out.depth)
            means.append(d["means"])
            covs.append(quat_scale_to_covar(d["quats"], scales))
        return {"rgb": torch.cat(rgbs).permute(0, 3, 1, 2), "alpha": torch.cat(alphas).permute(0, 3, 1, 2),
                "depth": torch.cat(depths).permute(0, 3, 1, 2), "posed_means": torch.stack(means),
                "posed_covs": torch.stack(covs)}

    # ---------------------------------------------------------------- losses
    def neighbours(self) -> torch.Tensor:
        """Canonical kNN ``[N, k]`` (cached; recomputed after densification and every `aiap.knn_every` steps)."""
        n = self.gs.num
        every = max(int(self.cfg.aiap.knn_every), 1)
        stale = self._knn is None or self._knn.shape[0] != n or (self.training and self.step - self._knn_step >= every)
        if stale:
            self._knn = knn(self.gs["means"].detach(), min(int(self.cfg.aiap.neighbours), n - 1))[0]
            self._knn_step = self.step
        return self._knn

    def aiap_losses(self, posed_means: torch.Tensor, posed_covs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """AIAP position and covariance terms between the canonical Gaussians and posed ``[B, N, ...]``."""
        nbr = self.neighbours()
        g = self.gs
        cov_c = quat_scale_to_covar(g["quats"], torch.exp(g["scales"]))
        xyz = torch.stack([aiap_position_loss(g["means"], m, nbr) for m in posed_means]).mean()
        cov = torch.stack([aiap_covariance_loss(cov_c, s, nbr) for s in posed_covs]).mean()
        return xyz, cov

    def _crop_lpips(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """LPIPS on each frame's ground-truth mask bounding box (at least 32 px a side)."""
        vals = []
        H, W = pred.shape[-2:]
        for b in range(pred.shape[0]):
            ys, xs = torch.nonzero(mask[b, 0] > 0.5, as_tuple=True)
            if ys.numel() == 0:
                y0, y1, x0, x1 = 0, H, 0, W
            else:
                y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            y0, y1 = _widen(y0, y1, H, 32)
            x0, x1 = _widen(x0, x1, W, 32)
            vals.append(self.lpips(pred[b:b + 1, :, y0:y1, x0:x1], gt[b:b + 1, :, y0:y1, x0:x1]).mean())
        return torch.stack(vals).mean()

    def loss_terms(self, batch, out, gt) -> Dict[str, torch.Tensor]:
        pred = out["rgb"]
        mask = batch["mask"].float()
        terms = {"l1": self.weight("l1") * l1_loss(pred, gt),
                 "mask": self.weight("mask") * (out["alpha"] - mask).abs().mean()}
        if self.weight("lpips") > 0:
            terms["lpips"] = self.weight("lpips") * self._crop_lpips(pred, gt, mask)
        if self.weight("skinning") > 0:
            terms["skinning"] = self.weight("skinning") * self.skinning_loss()
        w_xyz, w_cov = self.weight("aiap_xyz"), self.weight("aiap_cov")
        if w_xyz > 0 or w_cov > 0:
            xyz, cov = self.aiap_losses(out["posed_means"], out["posed_covs"])
            terms["aiap_xyz"] = w_xyz * xyz
            terms["aiap_cov"] = w_cov * cov
        return terms

    # ---------------------------------------------------------------- optimisation
    def network_parameters(self) -> List[nn.Parameter]:
        """The networks' parameters (hash grid, pose encoder, non-rigid, skinning, colour, latents)."""
        mods = (self.hash_grid, self.pose_encoder, self.non_rigid, self.skinning, self.color_mlp, self.latent)
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def param_groups(self) -> List[Dict[str, Any]]:
        o = self.cfg.optim
        extent = float(self.cfg.scene_extent)
        ratio = float(o.position_lr_final) / float(o.position_lr)
        decay = max(self.iters("position_decay_steps"), 1)
        groups: List[Dict[str, Any]] = []
        for name, key in self.GAUSSIAN_LR_KEYS.items():
            g = {"params": [self.gs[name]], "lr": float(o[key]) * (extent if name == "means" else 1.0),
                 "name": name, "schedule": False}
            if name == "means":
                g["lr_lambda"] = lambda step: ratio ** min(step / decay, 1.0)
            groups.append(g)
        groups += [
            {"params": list(self.hash_grid.parameters()) + list(self.pose_encoder.parameters())
             + list(self.non_rigid.parameters()), "lr": float(o.non_rigid), "name": "non_rigid"},
            {"params": list(self.skinning.parameters()), "lr": float(o.skinning), "name": "skinning"},
            {"params": list(self.color_mlp.parameters()), "lr": float(o.color), "name": "color"},
            {"params": list(self.latent.parameters()), "lr": float(o.latent), "name": "latent",
             "weight_decay": float(o.latent_weight_decay)},
        ]
        if self.cfg.pose_opt.enabled:
            groups.append({"params": list(self.pose_delta.parameters()) + list(self.transl_delta.parameters()),
                           "lr": float(self.cfg.pose_opt.lr), "name": "pose_opt", "sparse": True})
        return groups

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the networks' gradient norm at `optim.grad_clip` (the official code clips those only)."""
        clip = float(self.cfg.optim.get("grad_clip", 0.0) or 0.0)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.network_parameters(), clip)
        if gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Before `schedule.gaussian_delay` the Gaussians get no update (no gradient, no Adam moments)."""
        if self.step < self.iters("gaussian_delay"):
            for p in self.gs.values():
                p.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Densify / prune / reset opacities after the optimizer step, then refresh the kNN."""
        step = int(self.global_step)
        self.trained_steps.fill_(step)
        before = self.gs.num
        changed = self.densifier.step(self.gs, self.trainer.optimizers[0], step,
                                      accumulate=step > self.iters("gaussian_delay"))
        if changed:
            self._knn = None
        if self.gs.num != before or step % max(int(self.trainer.log_every_n_steps or 1), 1) == 0:
            self.log("train/num_gaussians", float(self.gs.num), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["gs_avatar_densify"] = self.densifier.state_dict()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("gs_avatar_densify")
        if state is not None:
            self.densifier.load_state_dict(state)
        self._knn = None


def _widen(lo: int, hi: int, size: int, minimum: int) -> tuple[int, int]:
    """``[lo, hi)`` grown about its centre to at least ``minimum`` (at most ``size``) inside ``[0, size)``."""
    want = min(minimum, size)
    if hi - lo >= want:
        return lo, hi
    start = int(round((lo + hi - want) / 2.0))
    start = min(max(start, 0), size - want)
    return start, start + want
