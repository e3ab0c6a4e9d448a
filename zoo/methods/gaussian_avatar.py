"""GaussianAvatar (Hu et al., CVPR 2024): UV-space Gaussians driven by a pose-conditioned decoder.

METHODS.md §1; facts from the official code (aipixel/GaussianAvatar: model/network.py,
model/modules.py, model/avatar_model.py, train.py, arguments/__init__.py). One Gaussian per valid
texel of the body's UV map (the "query map"). Each texel knows its canonical surface point and
barycentric LBS weights from a UV-space rasterization of the body mesh; rotation is the identity,
opacity 1, the scale isotropic.

Per texel the decoder sees a feature and the texel's UV coordinate in [0, 1]². The feature is
* the optimizable feature tensor `[C, F, F]` after three trainable 5×5 convolutions
  (`FeatureSmoother`, official `GeomConvLayers`), plus
* in stage 2, the pose feature map of the 5-level pose UNet (`PoseEncoder`, official
  `UnetNoCond5DS`: 4×4 stride-2 convolutions, BatchNorm, transposed-convolution up-sampling; a
  4×4 bottleneck at a 128² input) run on the *posed* UV position map (texel = posed body-surface
  xyz with the root rotation and translation removed).
The decoder (`TexelDecoder`, official `ShapeDecoder`) is a 5-layer trunk with the input skipped
into layer 5 and three 3-layer heads (offset ×`offset_scale` = 0.02, scale, colour), BatchNorm and
Softplus.

Training, as the official code: stage 1 trains the feature tensor, the smoothing convolutions, the
decoder and (optionally, after `pose_opt.start_step`) per-frame body pose / translation
corrections (sparse embeddings, SparseAdam lr 5e-3: rows of frames outside the batch do not move).
Losses 0.8·L1 + 0.2·(1−SSIM) + LPIPS (from a step) + 0.03·mean scale + offset prior (decaying) +
feature-tensor L2. Stage 2 freezes the feature tensor and the pose corrections, trains the pose
encoder at the full lr (3e-3) and the decoder + smoothing at ×0.1 with a fresh optimizer (Adam
state cleared at the switch) and a schedule that restarts; its losses drop the scale and feature
terms and add 10·mean(pose_feature²).

Deviations from the official code, and why:
* Both stages run back to back in one run (`stage1_steps`; the official code runs two scripts with
  an export in between); the fresh optimizer and restarted schedule reproduce the second run.
* Position maps are computed on the fly from the body model (no pre-rendered `inp_map/` files),
  for any pose, so novel-pose animation works after either stage and on SMPL-X too.
* The scale head predicts a log-factor on the texel spacing (`base_scale·exp(·)`, times the
  warm-up ramp) instead of a sigmoid in metres: the texel spacing changes with `uv_size`, which we
  vary for CPU runs; the official sigmoid range is tuned to 512².
* The smoothing convolutions start at the identity and the last pose-UNet layer near zero (default
  initialisation in the official code), so stage 1 starts from the raw tensor and stage 2 from the
  stage-1 solution — it matters in short CPU runs.
* The pose UNet's output (at `input_size`) is resampled to `feature_size` when they differ (both
  128 in the official code; the CPU presets use smaller, different sizes).
* The step decay uses milestones at fractions of each stage's length (the official MultiStepLR
  counts its epoch milestones in iterations, so its lr drops after 66 and 133 iterations).
* The BatchNorm of the pose UNet has no affine parameters, as the official one; the decoder's has.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.core.body import BodyModel
from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians
from zoo.core.losses import l1_loss, ssim
from zoo.core.mesh import position_map, uv_rasterize
from zoo.core.skinning import lbs_points
from zoo.methods.base import AvatarModule, schedule_value
from zoo.methods.common import body_model_for, body_params, posed_local_vertices, render_views
from zoo.registry import register_method


class FeatureSmoother(nn.Module):
    """Three trainable 5×5 convolutions (no bias, no activation) that spatially smooth the feature
    tensor before it is sampled (the official `GeomConvLayers`). Initialised to the identity (a
    Dirac kernel plus small noise) so stage 1 starts from the unsmoothed tensor."""

    def __init__(self, channels: int, layers: int = 3, kernel: int = 5):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
                                   for _ in range(layers))
        for conv in self.convs:
            nn.init.dirac_(conv.weight)
            with torch.no_grad():
                conv.weight.add_(torch.randn_like(conv.weight) * 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x


class PoseEncoder(nn.Module):
    """The official pose UNet (`UnetNoCond5DS`): posed UV position map `[B,3,S,S]` -> pose features.

    `depth` down-sampling levels of 4×4 stride-2 convolutions (channels ``nf·(1, 2, 4, 8, 8)``;
    LeakyReLU(0.2) before every convolution but the first, BatchNorm after all but the first and the
    last), then as many 4×4 stride-2 transposed convolutions (ReLU before, BatchNorm after, the
    matching encoder map concatenated) back to `S`. Five levels at S = 128 leave a 4×4 bottleneck.
    The output `[B, out_channels, S, S]` is resampled to the feature tensor's size when it differs.
    The last layer starts near zero so stage 2 starts from the stage-1 solution.
    """

    def __init__(self, in_size: int, out_size: int, nf: int, out_channels: int, depth: int = 5):
        super().__init__()
        if depth < 1 or in_size % (2 ** depth) != 0:
            raise ValueError(f"GaussianAvatar input_size {in_size} must be divisible by 2**encoder_depth = {2 ** depth}")
        self.out_size = out_size
        self.bottleneck_size = in_size // 2 ** depth
        widths = [nf * min(2 ** i, 8) for i in range(depth)]
        self.down = nn.ModuleList()
        for i, cout in enumerate(widths):
            cin = 3 if i == 0 else widths[i - 1]
            layers: List[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False))
            if 0 < i < depth - 1:
                layers.append(nn.BatchNorm2d(cout, affine=False))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for j in range(depth):  # j-th up-sampling mirrors encoder level depth-1-j
            level = depth - 1 - j
            cin = widths[-1] if j == 0 else 2 * widths[level]
            last = j == depth - 1
            cout = out_channels if last else widths[level - 1]
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=last)]
            if not last:
                layers.append(nn.BatchNorm2d(cout, affine=False))
            self.up.append(nn.Sequential(*layers))
        head = self.up[-1][1]
        nn.init.normal_(head.weight, std=1e-4)
        nn.init.zeros_(head.bias)

    def forward(self, posmap: torch.Tensor) -> torch.Tensor:
        skips = []
        x = posmap
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for j, layer in enumerate(self.up):
            x = layer(x)
            if j < len(self.up) - 1:
                x = torch.cat([x, skips.pop()], dim=1)
        if x.shape[-1] != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return x


def _dense(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Linear(cin, cout)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(cout))
    layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class TexelDecoder(nn.Module):
    """The official shared decoder (`ShapeDecoder`; 1×1 convolutions = per-texel linear layers).

    Input per texel: its feature and its UV coordinate in [0, 1]². A trunk of `trunk_layers` layers
    (BatchNorm + Softplus) whose last layer also receives the input again (the skip, at layer 5 of
    5 in the official code), then three heads of `head_layers` layers each (hidden layers with
    BatchNorm + Softplus, a linear output): offset (3), scale (1) and colour (3).
    """

    def __init__(self, in_dim: int, hidden: int, trunk_layers: int = 5, head_layers: int = 3,
                 batch_norm: bool = True):
        super().__init__()
        if trunk_layers < 2 or head_layers < 1:
            raise ValueError("GaussianAvatar decoder needs trunk_layers >= 2 and head_layers >= 1")
        trunk = [_dense(in_dim, hidden, batch_norm)]
        trunk += [_dense(hidden, hidden, batch_norm) for _ in range(trunk_layers - 2)]
        trunk.append(_dense(hidden + in_dim, hidden, batch_norm))
        self.trunk = nn.ModuleList(trunk)

        def head(out: int) -> nn.Sequential:
            hidden_layers = [_dense(hidden, hidden, batch_norm) for _ in range(head_layers - 1)]
            return nn.Sequential(*hidden_layers, nn.Linear(hidden, out))

        self.offset_head = head(3)
        self.scale_head = head(1)
        self.color_head = head(3)
        for h in (self.offset_head, self.scale_head):
            nn.init.normal_(h[-1].weight, std=1e-3)
            nn.init.zeros_(h[-1].bias)

    def forward(self, feats: torch.Tensor) -> Dict[str, torch.Tensor]:
        """feats `[M, in_dim]` -> offset `[M,3]`, log-scale `[M,1]`, colour logits `[M,3]`."""
        x = feats
        for layer in self.trunk[:-1]:
            x = layer(x)
        x = self.trunk[-1](torch.cat([x, feats], dim=-1))
        return {"offset": self.offset_head(x), "log_scale": self.scale_head(x), "color": self.color_head(x)}


@register_method("gaussian_avatar")
class GaussianAvatar(AvatarModule):
    """GaussianAvatar; config: configs/method/gaussian_avatar.yaml."""

    def __init__(self, cfg, data_info: Optional[Mapping] = None):
        super().__init__(cfg, data_info)
        c = self.cfg
        if c.optim.schedule not in ("none", "step"):
            raise ValueError(f"gaussian_avatar optim.schedule must be none or step, got {c.optim.schedule!r}")
        self.body: BodyModel = body_model_for(self.data_info)
        betas = torch.as_tensor(self.data_info.get("betas", [0.0] * self.body.num_betas), dtype=torch.float32).view(1, -1)
        self.register_buffer("betas", betas)
        with torch.no_grad():
            canon = self.body.canonical(c.canonical, betas)
        self.register_buffer("canon_transforms_inv", torch.linalg.inv(canon.transforms[0]))
        vt, ft = self.body.uv()
        faces = self.body.faces
        # query map: one Gaussian per covered texel
        qface, qbary = uv_rasterize(vt, ft, int(c.uv_size))
        valid = qface >= 0
        if int(valid.sum()) == 0:
            raise ValueError("the body's UV map covers no texel at uv_size=%d" % int(c.uv_size))
        rows, cols = torch.nonzero(valid, as_tuple=True)
        tex_face = qface[valid]
        tex_bary = qbary[valid].float()
        corners = faces[tex_face]  # [N,3]
        canon_v = canon.vertices[0]
        self.register_buffer("canon_points", (canon_v[corners] * tex_bary[..., None]).sum(1))
        self.register_buffer("texel_weights", (self.body.lbs_weights[corners] * tex_bary[..., None]).sum(1))
        size = float(c.uv_size)
        uv = torch.stack([(cols.float() + 0.5) / size, (rows.float() + 0.5) / size], dim=-1)  # [N,2] in [0,1]
        self.register_buffer("texel_uv", uv)
        self.register_buffer("texel_grid", (uv * 2 - 1).view(1, 1, -1, 2))
        # input (posed position) map
        iface, ibary = uv_rasterize(vt, ft, int(c.input_size))
        self.register_buffer("in_face", iface)
        self.register_buffer("in_bary", ibary.float())
        # texel spacing -> initial isotropic scale
        tri = canon_v[faces]
        area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1).sum()
        self.base_scale = float(c.init_scale_factor) * math.sqrt(float(area) / len(tex_face))
        n = len(tex_face)
        self.num_gaussians = n
        fc, fr = int(c.feature_channels), int(c.feature_size)
        self.feature_tensor = nn.Parameter(torch.randn(1, fc, fr, fr) * 0.01)
        self.smoother = FeatureSmoother(fc, int(c.smoothing_layers)) if int(c.smoothing_layers) > 0 else nn.Identity()
        self.pose_encoder = PoseEncoder(int(c.input_size), fr, int(c.encoder_channels), fc, int(c.encoder_depth))
        self.decoder = TexelDecoder(fc + 2, int(c.decoder_hidden), int(c.decoder_trunk_layers),
                                    int(c.decoder_head_layers), bool(c.batch_norm))
        num_frames = max(len(self.data_info.get("frame_ids", [])), 1)
        pose_dim = 3 * self.body.num_body_joints  # body pose only (hands/face keep the fit)
        self.pose_delta = nn.Embedding(num_frames, pose_dim + 3, sparse=True)  # body pose + global orient
        self.transl_delta = nn.Embedding(num_frames, 3, sparse=True)
        nn.init.zeros_(self.pose_delta.weight)
        nn.init.zeros_(self.transl_delta.weight)
        if not c.pose_opt.enabled:  # kept in the state dict (same keys either way), never trained
            self.pose_delta.weight.requires_grad_(False)
            self.transl_delta.weight.requires_grad_(False)
        self._optimizer_stage = 1 if self._both_stages else 2

    # ---------------------------------------------------------------- stages and schedules
    @property
    def _both_stages(self) -> bool:
        return bool(self.cfg.stage1) and bool(self.cfg.stage2)

    @property
    def stage(self) -> int:
        """1 while `global_step < stage1_steps`, else 2 (or the only enabled stage)."""
        c = self.cfg
        if not c.stage2:
            return 1
        if not c.stage1:
            return 2
        return 1 if self.step < int(c.stage1_steps) else 2

    def _scale_ramp(self) -> float:
        warm = int(self.cfg.scale_warmup_steps)
        if not self.training or warm <= 0:
            return 1.0
        start = float(self.cfg.scale_warmup_start)
        return start + (1.0 - start) * min(self.step / warm, 1.0)

    # ---------------------------------------------------------------- forward
    def frame_body(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The batch's body parameters plus the learned per-frame corrections (seen frames only).

        The corrections are learnt in stage 1 only; stage 2 uses them frozen (`apply_stage`)."""
        params = body_params(batch["body"], self.betas)
        c = self.cfg
        if not c.pose_opt.enabled:
            return params
        slot = self.frame_slot(batch)
        active = (slot >= 0).float().view(-1, 1)
        if self.training and self.step < int(c.pose_opt.start_step):
            return params
        idx = slot.clamp_min(0)
        delta = self.pose_delta(idx) * active
        dtransl = self.transl_delta(idx) * active
        params["global_orient"] = params["global_orient"] + delta[:, :3]
        params["body_pose"] = params["body_pose"] + delta[:, 3:3 + params["body_pose"].shape[1]]
        params["transl"] = params["transl"] + dtransl
        return params

    def texel_features(self, params: Dict[str, torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per-texel features `[B, N, C]` for the current stage, and the pose feature map
        `[B, C, F, F]` (stage 2; None in stage 1).

        The feature tensor goes through the smoothing convolutions; in stage 2 it is frozen
        (`apply_stage`) and the pose encoder's features of the posed position map are added to it."""
        B = params["transl"].shape[0]
        feat = self.smoother(self.feature_tensor).expand(B, -1, -1, -1)
        pose_feat = None
        if self.stage == 2:
            local = posed_local_vertices(self.body, params)  # [B,V,3]
            pos = position_map(local, self.body.faces, (self.in_face, self.in_bary))  # [B,S,S,3]
            pose_feat = self.pose_encoder(pos.permute(0, 3, 1, 2))
            feat = feat + pose_feat
        grid = self.texel_grid.expand(B, -1, -1, -1)
        sampled = F.grid_sample(feat, grid, mode="bilinear", align_corners=False)  # [B,C,1,N]
        return sampled[:, :, 0].permute(0, 2, 1), pose_feat

    def predict(self, params: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Canonical Gaussian attributes per texel for a batch of body parameters."""
        feats, pose_feat = self.texel_features(params)
        B, N, C = feats.shape
        uv = self.texel_uv.unsqueeze(0).expand(B, -1, -1)
        raw = self.decoder(torch.cat([feats, uv], dim=-1).reshape(B * N, C + 2))
        offset = raw["offset"].view(B, N, 3) * float(self.cfg.offset_scale)
        log_scale = raw["log_scale"].view(B, N, 1).clamp(-6.0, 3.0)
        scale = self.base_scale * torch.exp(log_scale) * self._scale_ramp()
        color = torch.sigmoid(raw["color"].view(B, N, 3))
        return {"offset": offset, "scale": scale, "color": color, "log_scale": log_scale, "pose_feature": pose_feat}

    def apply_stage(self) -> None:
        """Freeze what the current stage does not train: in stage 2 the feature tensor and the
        per-frame pose corrections stop requiring gradients (official stage 2: they are not in its
        optimizer), so no optimizer moves them; in stage 1 they train again."""
        stage1 = self.stage == 1
        self.feature_tensor.requires_grad_(stage1)
        pose = bool(self.cfg.pose_opt.enabled) and stage1
        self.pose_delta.weight.requires_grad_(pose)
        self.transl_delta.weight.requires_grad_(pose)

    def render_batch(self, batch: Dict[str, Any], background: torch.Tensor) -> Dict[str, torch.Tensor]:
        self.apply_stage()
        params = self.frame_body(batch)
        pred = self.predict(params)
        posed = self.body(params)
        to_posed = posed.transforms @ self.canon_transforms_inv.unsqueeze(0)  # canonical -> posed
        means = lbs_points(self.canon_points.unsqueeze(0) + pred["offset"], self.texel_weights, to_posed)
        n = means.shape[1]
        quats = means.new_zeros(n, 4)
        quats[:, 0] = 1.0
        opac = means.new_ones(n)

        def view(b: int) -> Gaussians:
            return Gaussians(means=means[b], quats=quats, scales=pred["scale"][b].expand(-1, 3), opacities=opac,
                             colors=pred["color"][b])

        return {
            **render_views(view, Cameras.from_batch(batch), background),
            "offset": pred["offset"],
            "scale": pred["scale"],
            "pose_feature": pred["pose_feature"],
        }

    @torch.no_grad()
    def gaussians(self, body: Mapping[str, Any], canonical: bool = False, frame_id: int = -1) -> Gaussians:
        """The avatar's Gaussians for one frame's body parameters (export, animation, the Python API).

        Args:
            body: body parameters of one frame: `global_orient [3]`, `body_pose [3J]`, `transl [3]`
                (leading axis of 1 optional; missing orient/transl are zero; betas are the subject's).
            canonical: the Gaussians in the canonical pose (the offsets this pose predicts, not skinned).
            frame_id: a training frame id applies that frame's learned pose correction; -1: none.

        Returns:
            `Gaussians` with N texels: isotropic linear scales, identity rotations, opacity 1, RGB colours.
        """
        dev = self.betas.device
        given = {k: torch.as_tensor(v, dtype=torch.float32).reshape(1, -1).to(dev) for k, v in body.items()
                 if k != "betas" and torch.as_tensor(v).numel() > 0}
        given.setdefault("global_orient", torch.zeros(1, 3, device=dev))
        given.setdefault("transl", torch.zeros(1, 3, device=dev))
        if "body_pose" not in given:
            raise ValueError(f"gaussians(): body needs 'body_pose' [{3 * self.body.num_body_joints}], got {sorted(body)}")
        params = self.frame_body({"body": given, "frame_id": torch.tensor([int(frame_id)], device=dev)})
        pred = self.predict(params)
        points = self.canon_points.unsqueeze(0) + pred["offset"]
        if not canonical:
            to_posed = self.body(params).transforms @ self.canon_transforms_inv.unsqueeze(0)
            points = lbs_points(points, self.texel_weights, to_posed)
        n = points.shape[1]
        quats = points.new_zeros(n, 4)
        quats[:, 0] = 1.0
        return Gaussians(means=points[0], quats=quats, scales=pred["scale"][0].expand(-1, 3).contiguous(),
                         opacities=points.new_ones(n), colors=pred["color"][0])

    # ---------------------------------------------------------------- losses / optimisation
    def loss_terms(self, batch, out, gt) -> Dict[str, torch.Tensor]:
        pred = out["rgb"]
        terms = {
            "l1": self.weight("l1") * l1_loss(pred, gt),
            "ssim": self.weight("ssim") * (1.0 - ssim(pred, gt)),
            # metric-unit prior pulling the Gaussians towards the surface (decaying), both stages
            "offset": self.weight("offset") * out["offset"].pow(2).sum(-1).mean(),
        }
        if self.stage == 1:  # the official stage 2 drops the scale and feature-tensor terms
            terms["scale"] = self.weight("scale") * out["scale"].mean()
            terms["feature"] = self.weight("feature") * self.feature_tensor.pow(2).mean()
        else:
            terms["pose_feature"] = self.weight("pose_feature") * out["pose_feature"].pow(2).mean()
        w = self.weight("lpips")
        if w > 0:
            terms["lpips"] = w * self.lpips(pred, gt).mean()
        return terms

    def _stage_factor(self, step: int, stage: int) -> float:
        """Step decay inside one stage: ``gamma`` per milestone passed (milestones are fractions of
        the stage's own length: stage 2 restarts its schedule, as its fresh optimizer does)."""
        o = self.cfg.optim
        total = int(self.cfg.get("max_steps", 0) or 0)
        if total == 0 and self._trainer is not None:
            total = int(self.trainer.max_steps or 0)
        s1 = int(self.cfg.stage1_steps) if self._both_stages else 0
        begin, length = (0, s1) if (stage == 1 and self._both_stages) else (s1, max(total - s1, 0))
        if o.schedule != "step" or length <= 0:
            return 1.0
        local = step - begin
        return float(o.gamma) ** sum(local >= int(length * float(m)) for m in o.milestones)

    def param_groups(self) -> List[Dict[str, Any]]:
        o = self.cfg.optim
        s1 = int(self.cfg.stage1_steps) if self._both_stages else 0
        only2 = bool(self.cfg.stage2) and not bool(self.cfg.stage1)
        only1 = bool(self.cfg.stage1) and not bool(self.cfg.stage2)

        def in_stage2(step: int) -> bool:
            return only2 or (not only1 and step >= s1)

        def net(step: int) -> float:  # decoder + smoothing: full lr in stage 1, x stage2_lr_scale in stage 2
            if in_stage2(step):
                return float(o.stage2_lr_scale) * self._stage_factor(step, 2)
            return self._stage_factor(step, 1)

        def encoder(step: int) -> float:  # the pose encoder trains in stage 2 only, at the full lr
            return self._stage_factor(step, 2) if in_stage2(step) else 0.0

        def feature(step: int) -> float:  # frozen (no gradient) in stage 2
            return 0.0 if in_stage2(step) else self._stage_factor(step, 1)

        groups = [
            {"params": list(self.decoder.parameters()) + list(self.smoother.parameters()), "lr": float(o.lr_net),
             "name": "decoder", "lr_lambda": net, "schedule": False},
            {"params": list(self.pose_encoder.parameters()), "lr": float(o.lr_net), "name": "pose_encoder",
             "lr_lambda": encoder, "schedule": False},
            {"params": [self.feature_tensor], "lr": float(o.lr_feature), "name": "feature_tensor",
             "lr_lambda": feature, "schedule": False},
        ]
        if self.cfg.pose_opt.enabled:
            groups.append({"params": list(self.pose_delta.parameters()) + list(self.transl_delta.parameters()),
                           "lr": float(self.cfg.pose_opt.lr), "name": "pose_opt", "sparse": True})
        return groups

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """At the first stage-2 step, start a fresh optimizer: Adam's moments and step counts of
        every group are cleared (the official code builds a new Adam and schedule for stage 2)."""
        if self._optimizer_stage == 1 and self.stage == 2:
            for opt in self.trainer.optimizers:
                opt.state.clear()
            self._optimizer_stage = 2

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["gaussian_avatar_optimizer_stage"] = self._optimizer_stage

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._optimizer_stage = int(checkpoint.get("gaussian_avatar_optimizer_stage", self._optimizer_stage))
