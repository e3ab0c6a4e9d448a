"""NoPo-Avatar (Wen, Schwing, Wang, NeurIPS 2025): a pose-free, feed-forward, generalizable avatar.

METHODS.md §5; facts from the official code (wenj/NoPo-Avatar: encoder_template_uv_concat_bone.py,
decoder_lbs_splatting_cuda.py, loss/loss_{mse,lpips,chamfer,projection,lbs_weights}.py,
model_wrapper.py, config/experiment/train_thuman2.0_3views_res256.yaml, config/main.yaml).

One network for every person. From 1..V context images of someone it has never seen (with their
person masks, and **no camera and no body pose**) one forward pass predicts 3D Gaussians in a
canonical body space (the zero-shape body in the canonical pose), each with its own skinning
weights, from two branches:

* the **pixel branch**: one Gaussian per person pixel of every context view (canonical position,
  colour as a correction of the pixel's colour, scale, rotation, opacity, skinning logits), from a
  DPT head over the image tokens;
* the **template branch**: one Gaussian per covered texel of the body's UV layout (an offset from
  the canonical surface point, colour as a correction of a base colour that the texel gathers from
  the context's person pixels by learned attention (uniform at initialisation: their mean),
  scale, rotation, opacity, skinning logits as a correction of the template's weights), from a DPT
  head over the template tokens. The template (canonical positions, skinning weights, coverage
  per texel) joins the ViT's cross-view decoder as one more view (`nopo_backbone.CrossViewViT`).

The target body (shape and pose) and camera then pose the Gaussians by LBS (the per-bone
transforms canonical -> target, with each bone carried from the zero-shape rest joint to the
subject's, the official `warp_by_shape`) and the tile renderer draws them.

Losses (official weights): MSE 1.0, LPIPS 0.05, Chamfer 0.1 (pixel Gaussians, posed, to the
posed body's vertices, one-directional, squared), projection 1.0 (pixel Gaussians posed to their
own context view's pose and projected with its camera must land on their pixel, normalised
coordinates, clipped at 1) and skinning-weight supervision 0.01 (cross-entropy of the pixel
logits against the body's weights rasterized into the context view; template logits against the
template's). The context poses and cameras enter these training losses only.

Optimisation (official): AdamW (betas 0.9 / 0.95, weight decay 0.05), a linear warm-up over
2000 of 300k steps then cosine decay to 0.1 x lr; backbone at 0.1 x lr when pretrained weights are
loaded (the heads at the full lr); gradient clipping 0.5 (trainer preset). The view-sampler
warm-up (150k of 300k steps) is the multi-subject datamodule's ``same_frame_targets`` schedule.
Scaled to the run: ``warmup_fraction`` and the data ``ramp`` are fractions of max_steps.

Inference: optional test-time pose alignment (official `test_step_align`: 400 Adam steps, lr 5e-3
on a camera rotation and translation delta, MSE + LPIPS on the target view, the network frozen),
here with the target body pose too (lr 5e-4). It sees the scored pixels: results with it are
reported beside those without.

Without a `context` group in the batch (single-subject data, `render_poses`, `gaussians`) the
model uses its stored avatar context: `avatar_image/avatar_mask` (the first held-out subject's
context views, set when training starts on multi-subject data; on single-subject data the last
V training views, whole images resized, each pushed after it was used as a target).

Deviations: a small ViT trained from scratch (CroCo ViT-L from NoPoSplat upstream), fixed
sine-cosine positions (RoPE upstream), SMPL/SMPL-X joint weights (24 / 55 bones) instead of the
official bone-weight layout, RGB colours (SH degree 4 upstream), the pixel branch keeps person
pixels only (official `apply_mask`), and the template's base colour is gathered from the context
pixels by attention (`template.colour_attention` key/query channels; upstream the DPT head
regresses it) — a pointer to the right pixels is learnt in far fewer CPU steps than a colour.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.core.body import BodyModel
from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians
from zoo.core.losses import mse_loss
from zoo.core.mesh import interpolate, render_mesh_attributes, uv_rasterize
from zoo.core.metrics import evaluate_images
from zoo.core.skinning import lbs_points, lbs_quats, rigid_inverse
from zoo.methods.base import AvatarModule, composite
from zoo.methods.common import body_model_for, render_views
from zoo.methods.nopo_backbone import CrossViewViT, DPTHead, load_pretrained
from zoo.registry import register_method

_POSE_KEYS = ("global_orient", "body_pose", "transl", "jaw_pose", "leye_pose", "reye_pose", "left_hand_pose",
              "right_hand_pose", "expression", "betas", "scale")


def _axis_angle_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues `[..., 3]` -> `[..., 3, 3]` (differentiable, safe at 0)."""
    theta = v.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    k = v / theta
    K = torch.zeros(*v.shape[:-1], 3, 3, dtype=v.dtype, device=v.device)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - K.transpose(-1, -2)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(K)
    return eye + s * K + (1.0 - c) * (K @ K)


@register_method("nopo_avatar")
class NoPoAvatar(AvatarModule):
    """NoPo-Avatar; config: configs/method/nopo_avatar.yaml."""

    def __init__(self, cfg, data_info: Optional[Mapping] = None):
        super().__init__(cfg, data_info)
        c = self.cfg
        self.body: BodyModel = body_model_for(self.data_info)
        J = self.body.num_joints
        self.num_joints = J
        zero = torch.zeros(1, self.body.num_betas)
        with torch.no_grad():
            canon = self.body.canonical(str(c.canonical), zero)
            rest0 = self.body({"betas": zero}).rest_joints[0]
        canon_v = canon.vertices[0]
        self.register_buffer("canon_inv", rigid_inverse(canon.transforms[0]), persistent=False)
        self.register_buffer("rest_joints0", rest0, persistent=False)
        self.register_buffer("vertex_weights", self.body.lbs_weights.float(), persistent=False)
        centre = 0.5 * (canon_v.amax(0) + canon_v.amin(0))
        extent = float((canon_v.amax(0) - canon_v.amin(0)).max())
        self.register_buffer("canon_centre", centre, persistent=False)
        self.extent = extent
        # template branch: the body's UV layout
        S = int(c.template.uv_size)
        if S % int(c.backbone.template_patch):
            raise ValueError(f"nopo_avatar template.uv_size {S} must be divisible by backbone.template_patch "
                             f"{int(c.backbone.template_patch)}")
        vt, ft = self.body.uv()
        face, bary = uv_rasterize(vt, ft, S)
        valid = face >= 0
        if int(valid.sum()) == 0:
            raise ValueError(f"the body's UV map covers no texel at template.uv_size={S}")
        faces = self.body.faces
        corners = faces[face[valid]]
        b = bary[valid].float()[..., None]
        texel_pos = (canon_v[corners] * b).sum(1)
        texel_w = (self.body.lbs_weights[corners].float() * b).sum(1)
        self.register_buffer("texel_index", torch.nonzero(valid.view(-1), as_tuple=True)[0], persistent=False)
        self.register_buffer("texel_pos", texel_pos, persistent=False)
        self.register_buffer("texel_weights", texel_w, persistent=False)
        self.register_buffer("texel_logw", torch.log(texel_w.clamp_min(1e-6)), persistent=False)
        tmap = torch.zeros(3 + J + 1, S * S)
        tmap[:3, self.texel_index] = ((texel_pos - centre) / (0.5 * extent)).T
        tmap[3:3 + J, self.texel_index] = texel_w.T
        tmap[3 + J, self.texel_index] = 1.0
        self.register_buffer("template_map", tmap.view(1, 3 + J + 1, S, S), persistent=False)
        tri = canon_v[faces]
        area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1).sum()
        self.texel_scale = float(c.template.init_scale_factor) * math.sqrt(float(area) / len(texel_pos))
        # context views
        self.num_context = int(self.data_info.get("num_context", c.num_context))
        res = self.data_info.get("context_res") or c.get("context_res") or self.data_info.get("height", 64)
        self.context_res = int(res)
        self.pixel_scale = float(c.pixel.init_scale_factor) * self.extent / self.context_res
        bb = c.backbone
        self.backbone = CrossViewViT(4, 3 + J + 1, int(bb.dim), int(bb.enc_depth), int(bb.dec_depth), int(bb.heads),
                                     float(bb.mlp_ratio), int(bb.patch), int(bb.template_patch), int(bb.hooks))
        self.out_channels = 3 + 3 + 3 + 4 + 1 + J  # xyz | rgb | log-scale | quat | opacity | skinning logits
        # template colours gathered from the context pixels: keys per pixel, queries per texel
        self.attn_dim = int(c.template.colour_attention) if c.template.get("colour_attention") else 0
        self.pixel_head = DPTHead(int(bb.dim), int(bb.dpt_features), self.out_channels + self.attn_dim, 4,
                                  int(bb.hooks))
        self.template_head = DPTHead(int(bb.dim), int(bb.dpt_features), self.out_channels + self.attn_dim, 3 + J + 1,
                                     int(bb.hooks))
        self.pretrained_report: Optional[Dict[str, List[str]]] = None
        pre = bb.get("pretrained") or {}
        if pre.get("path"):
            self.pretrained_report = load_pretrained(self.backbone, pre["path"], pre.get("sha256"),
                                                     str(pre.get("prefix") or ""), bool(pre.get("strict", False)))
        V, R = self.num_context, self.context_res
        betas = torch.as_tensor(self.data_info.get("betas", [0.0] * self.body.num_betas), dtype=torch.float32)
        self.register_buffer("avatar_image", torch.zeros(V, 3, R, R))
        self.register_buffer("avatar_mask", torch.zeros(V, 1, R, R))
        self.register_buffer("avatar_betas", betas.view(-1))
        self.register_buffer("avatar_filled", torch.zeros((), dtype=torch.long))  # views of the bank in use
        self._bank_geometry: List[Optional[Dict[str, Any]]] = [None] * V  # training-only (single-subject mode)
        self._bank_next = 0

    # ------------------------------------------------------------------ context
    def _resize_view(self, image: torch.Tensor, mask: torch.Tensor, K: torch.Tensor) -> tuple:
        """Whole view -> `context_res` square (single-subject mode), K following (pixel-centre convention)."""
        R = self.context_res
        H, W = image.shape[-2:]
        img = F.interpolate(image[None], size=(R, R), mode="bilinear", antialias=True, align_corners=False)[0]
        msk = (F.interpolate(mask[None], size=(R, R), mode="bilinear", antialias=True, align_corners=False)[0] > 0.5)
        K2 = K.clone()
        sx, sy = R / W, R / H
        K2[0, 0], K2[0, 1], K2[1, 1] = K[0, 0] * sx, K[0, 1] * sx, K[1, 1] * sy
        K2[0, 2], K2[1, 2] = (K[0, 2] + 0.5) * sx - 0.5, (K[1, 2] + 0.5) * sy - 0.5
        msk = msk.float()
        return img * msk, msk, K2

    def set_avatar(self, images: torch.Tensor, masks: torch.Tensor, betas: Optional[torch.Tensor] = None) -> None:
        """Store the context views `[V,3,R,R]` / `[V,1,R,R]` the model uses when a batch has none."""
        images = torch.as_tensor(images, dtype=torch.float32, device=self.avatar_image.device)
        masks = torch.as_tensor(masks, dtype=torch.float32, device=self.avatar_image.device)
        if tuple(images.shape) != tuple(self.avatar_image.shape) or tuple(masks.shape) != tuple(self.avatar_mask.shape):
            raise ValueError(f"set_avatar: expected images {tuple(self.avatar_image.shape)} and masks "
                             f"{tuple(self.avatar_mask.shape)}, got {tuple(images.shape)} and {tuple(masks.shape)}")
        with torch.no_grad():
            self.avatar_image.copy_(images * masks)
            self.avatar_mask.copy_(masks)
            if betas is not None:
                self.avatar_betas.copy_(torch.as_tensor(betas, dtype=torch.float32).view(-1)[: self.avatar_betas.numel()])
            self.avatar_filled.fill_(self.num_context)

    def _push_bank(self, batch: Mapping[str, Any]) -> None:
        """Single-subject mode: the batch's views become context views (oldest replaced)."""
        with torch.no_grad():
            for b in range(batch["image"].shape[0]):
                img, msk, K = self._resize_view(batch["image"][b], batch["mask"][b], batch["K"][b].float())
                k = self._bank_next % self.num_context
                self.avatar_image[k], self.avatar_mask[k] = img, msk
                self._bank_geometry[k] = {"K": K, "w2c": batch["w2c"][b].float(),
                                          "body": {n: v[b].float() for n, v in batch["body"].items()}}
                self._bank_next += 1
                self.avatar_filled.fill_(min(int(self.avatar_filled) + 1, self.num_context))

    def context_of(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        """The batch's context groups: ``image [G,V,3,R,R]``, ``mask``, ``rows`` (row -> group) and,
        for training losses, the first row of each group (to read its context geometry)."""
        ctx = batch.get("context")
        B = batch["image"].shape[0]
        dev = batch["image"].device
        if ctx is not None:
            groups, row_group = torch.unique(ctx["group"], return_inverse=True)
            first = torch.stack([torch.nonzero(row_group == g)[0, 0] for g in range(len(groups))])
            return {"image": ctx["image"][first].float(), "mask": ctx["mask"][first].float(), "rows": row_group,
                    "first": first, "source": "batch"}
        if self.training and int(self.avatar_filled) == 0:
            self._push_bank(batch)  # the very first step has nothing else to build an avatar from
        filled = max(int(self.avatar_filled), 1)
        idx = torch.arange(self.num_context, device=dev) % filled  # a half-filled bank repeats its views
        return {"image": self.avatar_image[idx][None], "mask": self.avatar_mask[idx][None],
                "rows": torch.zeros(B, dtype=torch.long, device=dev), "first": None, "source": "avatar", "idx": idx}

    # ------------------------------------------------------------------ the network
    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """Context views `[G,V,3,R,R]`, masks `[G,V,1,R,R]` -> per group the canonical Gaussians.

        Each dict: ``means [N,3]``, ``quats [N,4]``, ``scales [N,3]``, ``opacities [N]``,
        ``colors [N,3]``, ``logits [N,J]`` (skinning), ``num_pixel`` (the first ones are the pixel
        branch's), ``pixel_src [Np,3]`` (view, row, col) and the template's ``template_logits``.
        Nothing but the images and masks is read.
        """
        c = self.cfg
        G, V, _, R, _ = images.shape
        J = self.num_joints
        masks = (masks > 0.5).float()
        x = torch.cat([images * masks, masks], dim=2)
        template = self.template_map.expand(G, -1, -1, -1)
        ihooks, thooks, grid, tgrid = self.backbone(x, template)
        C = self.out_channels
        pix = self.pixel_head(ihooks, grid, x.flatten(0, 1)).view(G, V, C + self.attn_dim, R, R)
        tmp = self.template_head(thooks, tgrid, template).flatten(2)[:, :, self.texel_index].transpose(1, 2)  # [G,Nt,C]
        out = []
        ident = torch.tensor([1.0, 0.0, 0.0, 0.0], device=images.device)
        for g in range(G):
            person = masks[g, :, 0] > 0.5  # [V,R,R]
            src = torch.nonzero(person)  # [Np,3] (view, row, col)
            raw_p = pix[g].permute(0, 2, 3, 1)[person]  # [Np,C]
            rgb_in = images[g].permute(0, 2, 3, 1)[person].clamp(0.02, 0.98)
            mean_rgb = (images[g] * masks[g]).sum((0, 2, 3)) / masks[g].sum().clamp_min(1.0)
            raw_t = tmp[g]
            if self.attn_dim and len(src):
                # each texel's base colour: attention over every context person pixel (uniform at
                # initialisation = the context's mean colour), keys and queries from the two heads
                attn = torch.softmax(raw_t[:, C:] @ raw_p[:, C:].T, dim=-1)
                base_rgb = attn @ rgb_in
            else:
                base_rgb = mean_rgb.expand(len(raw_t), 3)
            parts = []
            if bool(c.pixel.enabled):
                parts.append({
                    "means": self.canon_centre + raw_p[:, 0:3] * float(c.pixel.xyz_scale),
                    "colors": torch.sigmoid(torch.logit(rgb_in) + raw_p[:, 3:6]),
                    "scales": self.pixel_scale * torch.exp(raw_p[:, 6:9].clamp(-5.0, 3.0)),
                    "quats": ident + raw_p[:, 9:13],
                    "opacities": torch.sigmoid(raw_p[:, 13] + float(c.pixel.init_opacity_logit)),
                    "logits": raw_p[:, 14:14 + J],
                })
            if bool(c.template.enabled):
                parts.append({
                    "means": self.texel_pos + raw_t[:, 0:3] * float(c.template.offset_scale),
                    "colors": torch.sigmoid(torch.logit(base_rgb.clamp(0.02, 0.98)) + raw_t[:, 3:6]),
                    "scales": self.texel_scale * torch.exp(raw_t[:, 6:9].clamp(-5.0, 3.0)),
                    "quats": ident + raw_t[:, 9:13],
                    "opacities": torch.sigmoid(raw_t[:, 13] + float(c.template.init_opacity_logit)),
                    "logits": self.texel_logw + raw_t[:, 14:14 + J],
                })
            if not parts:
                raise ValueError("nopo_avatar: enable at least one of pixel.enabled / template.enabled")
            merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            merged["num_pixel"] = int(len(src)) if bool(c.pixel.enabled) else 0
            merged["pixel_src"] = src
            merged["template_logits"] = self.texel_logw + raw_t[:, 14:14 + J]
            out.append(merged)
        return out

    def bone_transforms(self, body: Mapping[str, torch.Tensor]):
        """Per-bone transforms canonical (zero shape) -> posed `[B,J,4,4]` and the body output.

        Each bone is carried from the zero-shape rest joint to the subject's rest joint, then posed
        (the official `warp_by_shape`)."""
        params = {k: v.float() for k, v in body.items() if torch.is_tensor(v) and k in _POSE_KEYS}
        out = self.body(params)
        shift = torch.eye(4, device=out.transforms.device).repeat(*out.transforms.shape[:2], 1, 1)
        shift[..., :3, 3] = out.rest_joints - self.rest_joints0
        return out.transforms @ shift @ self.canon_inv, out

    def pose(self, g: Dict[str, torch.Tensor], transforms: torch.Tensor) -> Gaussians:
        """Canonical Gaussians of one group posed by `transforms [1,J,4,4]`."""
        w = torch.softmax(g["logits"], dim=-1)
        means = lbs_points(g["means"], w, transforms)[0]
        quats = lbs_quats(g["quats"], w, transforms)[0]
        return Gaussians(means=means, quats=quats, scales=g["scales"], opacities=g["opacities"], colors=g["colors"])

    def render_batch(self, batch: Dict[str, Any], background: torch.Tensor) -> Dict[str, torch.Tensor]:
        ctx = self.context_of(batch)
        groups = self.encode(ctx["image"], ctx["mask"])
        transforms, body_out = self.bone_transforms(batch["body"])
        rows = ctx["rows"]
        posed = [self.pose(groups[int(rows[b])], transforms[b:b + 1]) for b in range(len(rows))]
        out = render_views(lambda b: posed[b], Cameras.from_batch(batch), background,
                           backend=str(self.cfg.render_backend))
        out["nopo"] = {"groups": groups, "context": ctx, "posed": posed, "vertices": body_out.vertices}
        if ctx["source"] == "avatar" and self.training:
            self._pending_push = batch  # this batch's views join the bank after the step
        return out

    # ------------------------------------------------------------------ losses
    def _context_geometry(self, batch: Mapping[str, Any], ctx: Mapping[str, Any], g: int) -> Optional[Dict[str, Any]]:
        """K/w2c/body of group g's context views (training losses only), or None when unknown."""
        if ctx["source"] == "batch":
            row = int(ctx["first"][g])
            c = batch["context"]
            return {"K": c["K"][row].float(), "w2c": c["w2c"][row].float(),
                    "body": {k: v[row].float() for k, v in c["body"].items()}}
        geo = [self._bank_geometry[int(i)] for i in ctx["idx"]]
        if any(x is None for x in geo):
            return None
        return {"K": torch.stack([x["K"] for x in geo]), "w2c": torch.stack([x["w2c"] for x in geo]),
                "body": {k: torch.stack([x["body"][k] for x in geo]) for k in geo[0]["body"]}}

    def loss_terms(self, batch, out, gt) -> Dict[str, torch.Tensor]:
        pred = out["rgb"]
        extra = out["nopo"]
        terms = {"mse": self.weight("mse") * mse_loss(pred, gt)}
        w = self.weight("lpips")
        if w > 0:
            terms["lpips"] = w * self.lpips(pred, gt).mean()
        groups, ctx = extra["groups"], extra["context"]
        w = self.weight("chamfer")
        if w > 0 and groups[0]["num_pixel"] > 0:
            dists = []
            for b, g in enumerate(ctx["rows"].tolist()):
                n = groups[g]["num_pixel"]
                pts = extra["posed"][b].means[:n]
                dists.append(_one_sided_chamfer(pts, extra["vertices"][b].detach()))
            terms["chamfer"] = w * torch.stack(dists).mean()
        wp, wl = self.weight("projection"), self.weight("lbs")
        if (wp > 0 or wl > 0) and groups[0]["num_pixel"] > 0:
            proj, lbs = [], []
            for g, group in enumerate(groups):
                geo = self._context_geometry(batch, ctx, g)
                if geo is None:
                    continue
                p, l = self._context_losses(group, geo, ctx["mask"][g])
                proj.append(p)
                lbs.append(l)
            if proj:
                if wp > 0:
                    terms["projection"] = wp * torch.stack(proj).mean()
                if wl > 0:
                    terms["lbs"] = wl * torch.stack(lbs).mean()
        if wl > 0 and bool(self.cfg.template.enabled):
            tl = torch.stack([-(self.texel_weights * torch.log_softmax(g["template_logits"], -1)).sum(-1).mean()
                              for g in groups]).mean()
            terms["lbs_template"] = wl * tl
        return terms

    def _context_losses(self, group: Dict[str, torch.Tensor], geo: Mapping[str, Any], masks: torch.Tensor):
        """Projection and skinning-weight losses of one group's pixel Gaussians in their own views."""
        n = group["num_pixel"]
        src = group["pixel_src"]
        view = src[:, 0]
        R = self.context_res
        transforms, body_out = self.bone_transforms(geo["body"])  # [V,J,4,4]
        w = torch.softmax(group["logits"][:n], dim=-1)
        blended = torch.einsum("nj,njab->nab", w, transforms[view])
        means = (blended[:, :3, :3] @ group["means"][:n, :, None])[..., 0] + blended[:, :3, 3]
        cam = (geo["w2c"][view][:, :3, :3] @ means[..., None])[..., 0] + geo["w2c"][view][:, :3, 3]
        uvw = (geo["K"][view] @ cam[..., None])[..., 0]
        uv = uvw[:, :2] / uvw[:, 2:].clamp_min(1e-4)
        target = torch.stack([src[:, 2], src[:, 1]], dim=1).float()
        proj = (((uv - target) / R) ** 2).mean().clamp(max=1.0)
        # ground-truth skinning weights: the posed context body rasterized into each context view
        with torch.no_grad():
            gt_w = torch.zeros(masks.shape[0], R, R, self.num_joints, device=means.device)
            hit = torch.zeros(masks.shape[0], R, R, dtype=torch.bool, device=means.device)
            for v in range(masks.shape[0]):
                K = geo["K"][v].clone()
                K[0, 2] += 0.5
                K[1, 2] += 0.5
                r = render_mesh_attributes(body_out.vertices[v], self.body.faces, K, geo["w2c"][v], R, R)
                hit[v] = r["mask"]
                gt_w[v] = interpolate(self.vertex_weights, self.body.faces, r["face_index"], r["bary"])
        valid = hit[src[:, 0], src[:, 1], src[:, 2]]
        target_w = gt_w[src[:, 0], src[:, 1], src[:, 2]]
        ce = -(target_w * torch.log_softmax(group["logits"][:n], dim=-1)).sum(-1)
        lbs = (ce * valid).sum() / valid.sum().clamp_min(1)
        return proj, lbs

    # ------------------------------------------------------------------ optimisation
    def param_groups(self) -> List[Dict[str, Any]]:
        o = self.cfg.optim
        lr = float(o.lr)
        backbone_lr = lr * (float(o.backbone_lr_multiplier) if self.pretrained_report else 1.0)
        return [
            {"params": list(self.backbone.parameters()), "lr": backbone_lr, "name": "backbone"},
            {"params": list(self.pixel_head.parameters()) + list(self.template_head.parameters()), "lr": lr,
             "name": "heads"},
        ]

    def configure_optimizers(self):
        """AdamW (official: betas 0.9/0.95, weight decay 0.05), linear warm-up over `warmup_fraction`
        of the run from lr/warmup_steps, then cosine decay to `final_ratio` x lr."""
        o = self.cfg.optim
        groups = [g for g in self.param_groups() if any(p.requires_grad for p in g["params"])]
        optimizer = torch.optim.AdamW(groups, betas=tuple(o.betas), weight_decay=float(o.weight_decay))
        total = int(self.cfg.get("max_steps", 0)) or int(getattr(self.trainer, "max_steps", 0) or 0) or 1
        warm = max(int(round(float(o.warmup_fraction) * total)), 1)
        final = float(o.final_ratio)

        def factor(step: int) -> float:
            if step < warm:
                return 1.0 / warm + (1.0 - 1.0 / warm) * step / warm
            t = min((step - warm) / max(total - warm, 1), 1.0)
            return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "avatar_context"):
            avatar = dm.avatar_context()
            if tuple(avatar["image"].shape) == tuple(self.avatar_image.shape):
                self.set_avatar(avatar["image"], avatar["mask"], avatar["betas"])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_progress"):
            total = int(self.cfg.get("max_steps", 0)) or int(self.trainer.max_steps or 0) or 1
            dm.set_progress(self.step / total)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        pending = getattr(self, "_pending_push", None)
        if pending is not None:
            self._push_bank(pending)
            self._pending_push = None

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "epoch_counter"):
            dm.epoch_counter += 1

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: Dict[str, Any]):
        align = self.cfg.get("pose_align") or {}
        if not bool(align.get("enabled", False)):
            return super()._evaluate(batch)
        with torch.inference_mode(False), torch.enable_grad():
            bg = self.background_color(training=False)  # made here: an inference-mode tensor cannot enter autograd
            batch = _clone_tree(batch)
            batch = self.align_pose(batch, bg)
            with torch.no_grad():
                out = self.render_batch(batch, bg)
        pred = out["rgb"].clamp(0, 1)
        scores = evaluate_images(pred, batch["image"], batch["mask"], self.protocol, lpips=self.lpips_metric)
        return out, scores, pred

    def align_pose(self, batch: Dict[str, Any], background: torch.Tensor) -> Dict[str, Any]:
        """Test-time pose alignment: with the network frozen (the Gaussians encoded once), Adam
        optimises a camera rotation / translation delta (lr `pose_align.lr_camera`, official 5e-3)
        and, with `pose_align.body`, a body-pose delta (lr `lr_body`) per target view for `steps`
        steps on MSE + `lpips` x LPIPS against the target image. Returns the batch with the aligned
        `w2c` and body."""
        a = self.cfg.pose_align
        with torch.no_grad():
            ctx = self.context_of(batch)
            groups = [{k: (v.detach() if torch.is_tensor(v) else v) for k, v in g.items()}
                      for g in self.encode(ctx["image"], ctx["mask"])]
        B = batch["image"].shape[0]
        dev = batch["image"].device
        rot = torch.zeros(B, 3, device=dev, requires_grad=True)
        trans = torch.zeros(B, 3, device=dev, requires_grad=True)
        params = [{"params": [rot, trans], "lr": float(a.lr_camera)}]
        pose_delta = None
        if bool(a.body):
            pose_delta = torch.zeros_like(batch["body"]["body_pose"], requires_grad=True)
            params.append({"params": [pose_delta], "lr": float(a.lr_body)})
        opt = torch.optim.Adam(params)
        gt = composite(batch["image"], batch["mask"], background)
        rows = ctx["rows"]
        H, W = batch["image"].shape[-2:]

        def current():
            w2c = batch["w2c"].float().clone()
            delta = torch.eye(4, device=dev).repeat(B, 1, 1)
            delta[:, :3, :3] = _axis_angle_matrix(rot)
            delta[:, :3, 3] = trans
            body = dict(batch["body"])
            if pose_delta is not None:
                body["body_pose"] = body["body_pose"].float() + pose_delta
            return delta @ w2c, body

        for _ in range(int(a.steps)):
            opt.zero_grad(set_to_none=True)
            w2c, body = current()
            transforms, _ = self.bone_transforms(body)
            cams = Cameras.from_batch({"K": batch["K"], "w2c": w2c, "image": batch["image"]})
            posed = [self.pose(groups[int(rows[b])], transforms[b:b + 1]) for b in range(B)]
            pred = render_views(lambda b: posed[b], cams, background, backend=str(self.cfg.render_backend))["rgb"]
            loss = mse_loss(pred, gt)
            if float(a.lpips) > 0:
                loss = loss + float(a.lpips) * self.lpips(pred, gt).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            w2c, body = current()
        out = dict(batch)
        out["w2c"], out["body"] = w2c.detach(), {k: v.detach() for k, v in body.items()}
        return out

    def save_images(self, folder, batch, pred) -> None:
        """As the base, in one sub-folder per subject (held-out subjects share frame ids)."""
        if "subject_id" not in batch:
            return super().save_images(folder, batch, pred)
        names = list(self.data_info.get("subjects") or [])
        for s in torch.unique(batch["subject_id"]).tolist():
            keep = batch["subject_id"] == s
            sub = {"frame_id": batch["frame_id"][keep], "camera_id": batch["camera_id"][keep]}
            super().save_images(folder / (names[s] if s < len(names) else f"subject{s}"), sub, pred[keep])

    # ------------------------------------------------------------------ animation / export
    def render_poses(self, poses, K, w2c, height, width, betas=None, background=(1.0, 1.0, 1.0)):
        """The stored avatar (see the module doc) in novel poses; betas default to the avatar's."""
        if betas is None:
            betas = self.avatar_betas
        return super().render_poses(poses, K, w2c, height, width, betas=betas, background=background)

    @torch.no_grad()
    def gaussians(self, body: Mapping[str, Any], canonical: bool = False, frame_id: int = -1) -> Gaussians:
        """The stored avatar's Gaussians for one frame's body parameters (export, animation, the API).

        Args:
            body: `global_orient [3]`, `body_pose [3J]`, `transl [3]` (leading 1 optional; missing
                orient/transl are zero; betas default to the avatar's).
            canonical: the canonical (zero-shape, canonical-pose) Gaussians, not skinned.
            frame_id: unused (a feed-forward avatar has no per-frame state).

        Returns:
            `Gaussians` (pixel branch first, then the template's texels), RGB colours.
        """
        dev = self.avatar_image.device
        given = {k: torch.as_tensor(v, dtype=torch.float32).reshape(1, -1).to(dev) for k, v in body.items()
                 if torch.as_tensor(v).numel() > 0 and k in _POSE_KEYS}
        if "body_pose" not in given:
            raise ValueError(f"gaussians(): body needs 'body_pose' [{3 * self.body.num_body_joints}], got {sorted(body)}")
        given.setdefault("global_orient", torch.zeros(1, 3, device=dev))
        given.setdefault("transl", torch.zeros(1, 3, device=dev))
        given.setdefault("betas", self.avatar_betas.view(1, -1))
        was = self.training
        self.eval()
        filled = max(int(self.avatar_filled), 1)
        idx = torch.arange(self.num_context, device=dev) % filled
        g = self.encode(self.avatar_image[idx][None], self.avatar_mask[idx][None])[0]
        self.train(was)
        if canonical:
            return Gaussians(means=g["means"], quats=F.normalize(g["quats"], dim=-1), scales=g["scales"],
                             opacities=g["opacities"], colors=g["colors"])
        transforms, _ = self.bone_transforms(given)
        return self.pose(g, transforms)


def _one_sided_chamfer(points: torch.Tensor, surface: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Mean squared distance from each of `points [N,3]` to its nearest `surface [M,3]` point (the
    official single-directional pytorch3d chamfer_distance), in chunks of points."""
    if len(points) == 0:
        return surface.new_zeros(())
    mins = [torch.cdist(points[i:i + chunk], surface).min(dim=1).values for i in range(0, len(points), chunk)]
    return torch.cat(mins).pow(2).mean()


def _clone_tree(x: Any) -> Any:
    """Clone every tensor of a (nested) batch into a normal tensor (outside inference mode)."""
    if torch.is_tensor(x):
        return x.clone()
    if isinstance(x, dict):
        return {k: _clone_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clone_tree(v) for v in x]
    return x
