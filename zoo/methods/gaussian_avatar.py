"""GaussianAvatar (Hu et al., CVPR 2024): UV-space Gaussians driven by a pose-conditioned decoder.

METHODS.md §1. One Gaussian per valid texel of the body's UV map (the "query map"). Each texel
knows its canonical surface point and barycentric LBS weights from a UV-space rasterization of the
body mesh. A shared decoder (1×1 convolutions = per-texel MLP with a skip connection, BatchNorm,
separate heads) maps per-texel features to an offset (scaled by `offset_scale`, 0.02 in the paper),
an isotropic scale and an RGB colour; rotation is the identity and opacity is 1.

Features per texel are the sum of
* an optimizable feature tensor `[C, F, F]` (global appearance; stage 1 and 2), and
* in stage 2, a pose feature map from a UNet-like CNN (the pose encoder) run on the *posed* UV
  position map (texel = posed body-surface xyz with the root rotation and translation removed).

Stage 1 (feature tensor only) and stage 2 (pose encoder added, network lr lowered) run back to
back by default (`stage1_steps`, `stage2_steps`); either can be switched off. Novel-pose rendering
works after either stage: the pose encoder sees whatever pose it is given.

Per-frame body pose and translation corrections are learnable embeddings (zero-initialised deltas
on the dataset's fits), switched on after `pose_opt.start_step`, with their own learning rate.
As in the paper they are sparse embeddings optimised by SparseAdam (lr 5e-3): rows of frames outside
the batch do not move (a dense Adam's momentum would keep drifting them).

Losses: `l1`·L1 + `ssim`·(1−SSIM) + `lpips`·LPIPS (from a configurable step) + `scale`·mean
scale (metres) + `offset`·mean squared offset norm (m², decaying) + `feature`·feature-tensor L2;
predicted scales are multiplied by a warm-up ramp over the first `scale_warmup_steps`.
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
from zoo.core.render import render
from zoo.core.skinning import lbs_points
from zoo.methods.base import AvatarModule, schedule_value
from zoo.methods.common import body_model_for, body_params, posed_local_vertices
from zoo.registry import register_method


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


class PoseEncoder(nn.Module):
    """UNet-like CNN: posed UV position map `[B,3,S,S]` -> pose features `[B,C,F,F]`.

    Down-samples to S/2^depth, then up-samples with skip connections, and resamples to F.
    """

    def __init__(self, in_size: int, out_size: int, channels: int, out_channels: int, depth: int = 3):
        super().__init__()
        self.out_size = out_size
        self.stem = _conv_block(3, channels, 1)
        self.down = nn.ModuleList(_conv_block(channels * 2 ** i, channels * 2 ** (i + 1), 2) for i in range(depth))
        self.up = nn.ModuleList(
            _conv_block(channels * 2 ** (i + 1) + channels * 2 ** i, channels * 2 ** i, 1) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels, out_channels, 1)
        nn.init.normal_(self.head.weight, std=1e-3)  # stage 2 starts close to the stage-1 solution
        nn.init.zeros_(self.head.bias)

    def forward(self, posmap: torch.Tensor) -> torch.Tensor:
        x = self.stem(posmap)
        skips = [x]
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()
        for layer in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = layer(torch.cat([x, skip], dim=1))
        x = self.head(x)
        if x.shape[-1] != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return x


class TexelDecoder(nn.Module):
    """Shared per-texel decoder (1×1 convolutions as linear layers) with a skip connection,
    BatchNorm, and separate offset / scale / colour heads."""

    def __init__(self, in_dim: int, hidden: int, layers: int, batch_norm: bool = True):
        super().__init__()
        self.skip_at = layers // 2
        blocks = []
        for i in range(layers):
            cin = in_dim if i == 0 else hidden + (in_dim if i == self.skip_at else 0)
            seq: List[nn.Module] = [nn.Linear(cin, hidden)]
            if batch_norm:
                seq.append(nn.BatchNorm1d(hidden))
            seq.append(nn.LeakyReLU(0.2, inplace=True))
            blocks.append(nn.Sequential(*seq))
        self.blocks = nn.ModuleList(blocks)
        self.offset_head = nn.Linear(hidden, 3)
        self.scale_head = nn.Linear(hidden, 1)
        self.color_head = nn.Linear(hidden, 3)
        for head in (self.offset_head, self.scale_head):
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.zeros_(head.bias)

    def forward(self, feats: torch.Tensor) -> Dict[str, torch.Tensor]:
        """feats `[M, in_dim]` -> offset `[M,3]`, log-scale `[M,1]`, colour logits `[M,3]`."""
        x = feats
        for i, block in enumerate(self.blocks):
            if i == self.skip_at and i > 0:
                x = torch.cat([x, feats], dim=-1)
            x = block(x)
        return {"offset": self.offset_head(x), "log_scale": self.scale_head(x), "color": self.color_head(x)}


@register_method("gaussian_avatar")
class GaussianAvatar(AvatarModule):
    """GaussianAvatar; config: configs/method/gaussian_avatar.yaml."""

    def __init__(self, cfg, data_info: Optional[Mapping] = None):
        super().__init__(cfg, data_info)
        c = self.cfg
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
        grid = torch.stack([(cols.float() + 0.5) / size * 2 - 1, (rows.float() + 0.5) / size * 2 - 1], dim=-1)
        self.register_buffer("texel_grid", grid.view(1, 1, -1, 2))
        # input (posed position) map at a lower resolution
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
        self.pose_encoder = PoseEncoder(int(c.input_size), fr, int(c.encoder_channels), fc, int(c.encoder_depth))
        self.decoder = TexelDecoder(fc, int(c.decoder_hidden), int(c.decoder_layers), bool(c.batch_norm))
        num_frames = max(len(self.data_info.get("frame_ids", [])), 1)
        pose_dim = 3 * self.body.num_body_joints  # body pose only (hands/face keep the fit)
        self.pose_delta = nn.Embedding(num_frames, pose_dim + 3, sparse=True)  # body pose + global orient
        self.transl_delta = nn.Embedding(num_frames, 3, sparse=True)
        nn.init.zeros_(self.pose_delta.weight)
        nn.init.zeros_(self.transl_delta.weight)
        if not c.pose_opt.enabled:  # kept in the state dict (same keys either way), never trained
            self.pose_delta.weight.requires_grad_(False)
            self.transl_delta.weight.requires_grad_(False)

    # ---------------------------------------------------------------- stages and schedules
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
        """The batch's body parameters plus the learned per-frame corrections (seen frames only)."""
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
        params["global_orient"] = params["global_orient"] + delta[:, :3]
        params["body_pose"] = params["body_pose"] + delta[:, 3:3 + params["body_pose"].shape[1]]
        params["transl"] = params["transl"] + self.transl_delta(idx) * active
        return params

    def texel_features(self, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-texel features `[B, N, C]` for the current stage."""
        B = params["transl"].shape[0]
        feat = self.feature_tensor.expand(B, -1, -1, -1)
        if self.stage == 2:
            local = posed_local_vertices(self.body, params)  # [B,V,3]
            pos = position_map(local, self.body.faces, (self.in_face, self.in_bary))  # [B,S,S,3]
            feat = feat + self.pose_encoder(pos.permute(0, 3, 1, 2))
        grid = self.texel_grid.expand(B, -1, -1, -1)
        sampled = F.grid_sample(feat, grid, mode="bilinear", align_corners=False)  # [B,C,1,N]
        return sampled[:, :, 0].permute(0, 2, 1)

    def predict(self, params: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Canonical Gaussian attributes per texel for a batch of body parameters."""
        feats = self.texel_features(params)
        B, N, C = feats.shape
        raw = self.decoder(feats.reshape(B * N, C))
        offset = raw["offset"].view(B, N, 3) * float(self.cfg.offset_scale)
        log_scale = raw["log_scale"].view(B, N, 1).clamp(-6.0, 3.0)
        scale = self.base_scale * torch.exp(log_scale) * self._scale_ramp()
        color = torch.sigmoid(raw["color"].view(B, N, 3))
        return {"offset": offset, "scale": scale, "color": color, "log_scale": log_scale}

    def render_batch(self, batch: Dict[str, Any], background: torch.Tensor) -> Dict[str, torch.Tensor]:
        params = self.frame_body(batch)
        pred = self.predict(params)
        posed = self.body(params)
        to_posed = posed.transforms @ self.canon_transforms_inv.unsqueeze(0)  # canonical -> posed
        means = lbs_points(self.canon_points.unsqueeze(0) + pred["offset"], self.texel_weights, to_posed)
        cameras = Cameras.from_batch(batch)
        rgbs, alphas, depths = [], [], []
        n = means.shape[1]
        quats = means.new_zeros(n, 4)
        quats[:, 0] = 1.0
        opac = means.new_ones(n)
        for b in range(means.shape[0]):
            gs = Gaussians(means=means[b], quats=quats, scales=pred["scale"][b].expand(-1, 3), opacities=opac,
                           colors=pred["color"][b])
            out = render(gs, cameras[b:b + 1], backgrounds=background.view(1, 3), render_mode="RGB+ED")
            rgbs.append(out.rgb)
            alphas.append(out.alpha)
            depths.append(out.depth)
        return {
            "rgb": torch.cat(rgbs).permute(0, 3, 1, 2),
            "alpha": torch.cat(alphas).permute(0, 3, 1, 2),
            "depth": torch.cat(depths).permute(0, 3, 1, 2),
            "offset": pred["offset"],
            "scale": pred["scale"],
        }

    # ---------------------------------------------------------------- losses / optimisation
    def loss_terms(self, batch, out, gt) -> Dict[str, torch.Tensor]:
        pred = out["rgb"]
        terms = {
            "l1": self.weight("l1") * l1_loss(pred, gt),
            "ssim": self.weight("ssim") * (1.0 - ssim(pred, gt)),
            # priors in metric units, as in the paper: weak pulls towards small Gaussians on the surface
            "scale": self.weight("scale") * out["scale"].mean(),
            "offset": self.weight("offset") * out["offset"].pow(2).sum(-1).mean(),
            "feature": self.weight("feature") * self.feature_tensor.pow(2).mean(),
        }
        w = self.weight("lpips")
        if w > 0:
            terms["lpips"] = w * self.lpips(pred, gt).mean()
        return terms

    def param_groups(self) -> List[Dict[str, Any]]:
        o = self.cfg.optim
        stage1_steps = int(self.cfg.stage1_steps) if (self.cfg.stage1 and self.cfg.stage2) else 0
        scale2 = float(o.stage2_lr_scale)

        def net_lambda(step: int) -> float:
            return scale2 if step >= stage1_steps and stage1_steps > 0 else 1.0

        groups = [
            {"params": list(self.decoder.parameters()), "lr": float(o.lr_net), "name": "decoder", "lr_lambda": net_lambda},
            {"params": list(self.pose_encoder.parameters()), "lr": float(o.lr_net), "name": "pose_encoder",
             "lr_lambda": net_lambda},
            {"params": [self.feature_tensor], "lr": float(o.lr_feature), "name": "feature_tensor"},
        ]
        if self.cfg.pose_opt.enabled:
            groups.append({"params": list(self.pose_delta.parameters()) + list(self.transl_delta.parameters()),
                           "lr": float(self.cfg.pose_opt.lr), "name": "pose_opt", "sparse": True})
        return groups
