"""NoPo-Avatar's network body: a ViT encoder with cross-view attention and DPT-style heads.

Facts from the official code (wenj/NoPo-Avatar: model/encoder/backbone/backbone_croco_multiview2.py,
encoder_template_uv_concat_bone.py, heads/dpt_gs_head.py; configs croco_multi2.yaml,
template_uv_concat_bone.yaml): a CroCo/DUSt3R ViT (ViT-L encoder, ViT-B decoder, patch 16)
encodes every context image with shared weights; the body template, laid out on the UV map
(canonical positions and skinning weights per texel), is patch-embedded *without* an encoder
(`template_encoder_free: true`) and joins the decoder as one more "view"; the decoder blocks
alternate self-attention inside a view with cross-attention to the other views' tokens, with
separate weights for the template and the images (`asymmetry_decoder: true`); DPT heads read 4
hooked layers (`n_hooks: 4`), fuse them coarse to fine and concatenate the full-resolution input
(images: RGB; template: its UV maps, `img_nchan = 55 + 3`) before the last convolutions.

Here every size is a config value (the tiny preset trains on CPU): width, depths, heads, patch
sizes, DPT feature width. Positions are fixed 2D sine-cosine embeddings (CroCo uses RoPE); there
is no view-index embedding, so the image views are treated as a set (the output is equivariant to
their order). External weights load from a user-named file whose sha256 must match
(`load_pretrained`); nothing is ever fetched.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding `[h*w, dim]` (half the channels for rows, half for
    columns; `dim` divisible by 4)."""
    if dim % 4:
        raise ValueError(f"nopo_avatar backbone width must be divisible by 4, got {dim}")
    quarter = dim // 4
    freq = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angle = coord[:, None] * freq[None]
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=1)


class Attention(nn.Module):
    """Multi-head attention; `forward(x)` is self-attention, `forward(x, memory)` cross-attention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"nopo_avatar backbone width {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: Optional[torch.Tensor] = None) -> torch.Tensor:
        memory = x if memory is None else memory
        B, L, D = x.shape
        h = self.heads
        q = self.q(x).view(B, L, h, D // h).transpose(1, 2)
        k, v = self.kv(memory).view(B, memory.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: self-attention + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """CroCo decoder block: self-attention in the view, cross-attention to the other views, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_q, self.norm_m, self.cross_attn = nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, heads)
        self.norm3, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.cross_attn(self.norm_q(x), self.norm_m(memory))
        return x + self.mlp(self.norm3(x))


class CrossViewViT(nn.Module):
    """Images `[N,V,Ci,H,W]` + template UV maps `[N,Ct,S,S]` -> hooked token maps of both.

    Args:
        image_channels: channels of a context view (RGB + mask = 4).
        template_channels: channels of the template maps (xyz + skinning weights + valid).
        dim: token width; enc_depth / dec_depth: encoder / decoder blocks; heads; mlp_ratio.
        patch: image patch size; template_patch: template patch size.
        hooks: token maps handed to the DPT heads (the encoder output, then decoder layers evenly
            spaced up to the last).
    """

    def __init__(self, image_channels: int, template_channels: int, dim: int = 64, enc_depth: int = 2,
                 dec_depth: int = 2, heads: int = 4, mlp_ratio: float = 4.0, patch: int = 8,
                 template_patch: int = 4, hooks: int = 4):
        super().__init__()
        if hooks < 2:
            raise ValueError(f"nopo_avatar needs at least 2 DPT hooks, got {hooks}")
        if dec_depth < hooks - 1:
            raise ValueError(f"nopo_avatar dec_depth ({dec_depth}) must be >= hooks - 1 ({hooks - 1})")
        self.dim, self.patch, self.template_patch, self.n_hooks = dim, patch, template_patch, hooks
        self.patch_embed = nn.Conv2d(image_channels, dim, patch, stride=patch)
        self.template_embed = nn.Conv2d(template_channels, dim, template_patch, stride=template_patch)
        self.type_embed = nn.Parameter(torch.zeros(2, dim))  # 0: image tokens, 1: template tokens
        nn.init.normal_(self.type_embed, std=0.02)
        self.encoder = nn.ModuleList(EncoderBlock(dim, heads, mlp_ratio) for _ in range(enc_depth))
        self.enc_norm = nn.LayerNorm(dim)
        self.dec_embed = nn.Linear(dim, dim)
        self.image_decoder = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio) for _ in range(dec_depth))
        self.template_decoder = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio) for _ in range(dec_depth))
        # decoder layers whose outputs are hooked (the last always)
        picks = [round(dec_depth * (k + 1) / (hooks - 1)) - 1 for k in range(hooks - 1)]
        self.hook_layers = sorted(set(max(p, 0) for p in picks))
        while len(self.hook_layers) < hooks - 1:  # tiny depths: repeat the last
            self.hook_layers.append(dec_depth - 1)
        self._pos_cache: Dict[Tuple[int, int], torch.Tensor] = {}

    def _pos(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w)
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(h, w, self.dim)
        return self._pos_cache[key].to(device)

    def forward(self, images: torch.Tensor, template: torch.Tensor
                ) -> Tuple[List[torch.Tensor], List[torch.Tensor], Tuple[int, int], Tuple[int, int]]:
        """Returns `(image_hooks, template_hooks, image_grid, template_grid)`: hooks are lists of
        `[N*V, L, D]` (image) and `[N, Lt, D]` (template) tokens; grids are `(h, w)` token layouts."""
        N, V = images.shape[:2]
        x = self.patch_embed(images.flatten(0, 1))  # [NV, D, h, w]
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + self._pos(h, w, x.device) + self.type_embed[0]
        for blk in self.encoder:
            x = blk(x)
        x = self.enc_norm(x)
        t = self.template_embed(template)
        th, tw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2) + self._pos(th, tw, t.device) + self.type_embed[1]
        image_hooks, template_hooks = [x], [t]
        x = self.dec_embed(x)
        L = x.shape[1]
        for i, (iblk, tblk) in enumerate(zip(self.image_decoder, self.template_decoder)):
            xs = x.view(N, V * L, self.dim)
            # every image view attends to all views' tokens and the template; the template to all images
            memory = torch.cat([xs, t], dim=1).unsqueeze(1).expand(-1, V, -1, -1).reshape(N * V, -1, self.dim)
            x_new = iblk(x, memory)
            t = tblk(t, xs)
            x = x_new
            if i in self.hook_layers:
                for _ in range(self.hook_layers.count(i)):
                    image_hooks.append(x)
                    template_hooks.append(t)
        return image_hooks, template_hooks, (h, w), (th, tw)


class ResidualConvUnit(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class DPTHead(nn.Module):
    """DPT head: reassemble hooked tokens at 4 scales, fuse coarse to fine, predict per pixel.

    Hook k (of `hooks`) is projected to `features` channels and resampled to ``4, 2, 1, 1/2`` x the
    token grid (more hooks: the finest gets the first scales, extra ones stay at x1), fused with
    residual convolution units from the coarsest up (x2 upsampling between levels), upsampled to the
    output size, concatenated with a convolution of the full-resolution `skip` input (official
    dpt_gs head: the image / template maps) and mapped to `out_channels`.
    """

    def __init__(self, dim: int, features: int, out_channels: int, skip_channels: int, hooks: int = 4):
        super().__init__()
        self.scales = [4.0, 2.0, 1.0, 0.5][:hooks] + [1.0] * max(hooks - 4, 0)
        self.project = nn.ModuleList(nn.Conv2d(dim, features, 1) for _ in range(hooks))
        self.refine = nn.ModuleList(ResidualConvUnit(features) for _ in range(hooks))
        self.merge = nn.ModuleList(ResidualConvUnit(features) for _ in range(hooks))
        self.skip = nn.Sequential(nn.Conv2d(skip_channels, features // 2, 3, padding=1), nn.ReLU())
        self.out = nn.Sequential(nn.Conv2d(features + features // 2, features, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(features, out_channels, 1))
        nn.init.normal_(self.out[-1].weight, std=1e-3)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, hooks: Sequence[torch.Tensor], grid: Tuple[int, int], skip: torch.Tensor) -> torch.Tensor:
        """hooks: `[M, L, D]` tokens (L = h*w); skip: `[M, Cs, H, W]` -> `[M, out_channels, H, W]`."""
        h, w = grid
        maps = []
        for k, tok in enumerate(hooks):
            x = self.project[k](tok.transpose(1, 2).reshape(tok.shape[0], -1, h, w))
            size = (max(int(round(h * self.scales[k])), 1), max(int(round(w * self.scales[k])), 1))
            if size != (h, w):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(self.refine[k](x))
        order = sorted(range(len(maps)), key=lambda k: maps[k].shape[-1])  # coarsest first
        y = self.merge[order[0]](maps[order[0]])
        for k in order[1:]:
            y = F.interpolate(y, size=maps[k].shape[-2:], mode="bilinear", align_corners=False)
            y = self.merge[k](y + maps[k])
        y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(torch.cat([y, self.skip(skip)], dim=1))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pretrained(module: nn.Module, path: str | Path, sha256: Optional[str], prefix: str = "",
                    strict: bool = False) -> Dict[str, List[str]]:
    """Load external backbone weights from a file the user names; its sha256 is checked first.

    Never fetches anything: `path` must be a local file. The file holds a state dict (or a dict
    with ``state_dict`` / ``model``) read with ``torch.load(weights_only=True)``; keys starting
    with `prefix` are taken with the prefix removed; tensors whose shape differs from the module's
    are skipped and reported.

    Args:
        module: the backbone.
        path: the weights file.
        sha256: its expected hex sha256 (required).
        prefix: key prefix to select and strip (e.g. ``"backbone."``).
        strict: every module key must be loaded.

    Returns:
        ``{"loaded": [...], "missing": [...], "skipped": [...]}`` key lists.

    Raises:
        FileNotFoundError: no such file. ValueError: no or wrong sha256, unreadable file, nothing
            matching, or (strict) missing keys.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"method.backbone.pretrained.path: {path} not found (weights are never downloaded: "
                                "put the file there)")
    if not sha256:
        raise ValueError(f"method.backbone.pretrained.sha256 is required with path {path} (its hex sha256)")
    got = sha256_of(path)
    if got.lower() != str(sha256).lower():
        raise ValueError(f"{path}: sha256 {got} does not match method.backbone.pretrained.sha256 {sha256}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise ValueError(f"{path}: not a readable weights file ({type(err).__name__}: {err})") from None
    if isinstance(raw, Mapping) and not any(torch.is_tensor(v) for v in raw.values()):
        raw = raw.get("state_dict") or raw.get("model") or raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(raw).__name__}")
    own = module.state_dict()
    picked: Dict[str, torch.Tensor] = {}
    skipped = []
    for key, value in raw.items():
        if not torch.is_tensor(value) or not str(key).startswith(prefix):
            continue
        name = str(key)[len(prefix):]
        if name in own and tuple(own[name].shape) == tuple(value.shape):
            picked[name] = value
        elif name in own:
            skipped.append(f"{name} {tuple(value.shape)} != {tuple(own[name].shape)}")
    if not picked:
        raise ValueError(f"{path}: no tensor matches the backbone (prefix {prefix!r}; e.g. expected keys "
                         f"{list(own)[:3]})")
    missing = [k for k in own if k not in picked]
    if strict and missing:
        raise ValueError(f"{path}: strict loading, but {len(missing)} backbone tensors are missing (e.g. {missing[:3]})")
    module.load_state_dict(picked, strict=False)
    return {"loaded": sorted(picked), "missing": missing, "skipped": skipped}
