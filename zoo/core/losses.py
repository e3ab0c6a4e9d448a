"""Training losses shared by every method: photometric (L1, MSE, SSIM, LPIPS), mask, depth, Chamfer.

Conventions: images `[B, 3, H, W]` float in [0, 1]; masks and alphas `[B, 1, H, W]` in [0, 1]
(1 = person); depth `[B, 1, H, W]` in metres (or any unit, for the scale-and-shift invariant form).
Every function is differentiable in its prediction argument and returns a scalar unless a
``reduction="none"`` argument says otherwise.

LPIPS lives in one place, `zoo.core.lpips`; `LPIPSLoss` is a thin view onto the shared network
there, so the loss and the evaluation metrics use the very same weights.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.core import lpips as _lpips

_REDUCTIONS = ("mean", "sum", "none")


def _check_same_shape(pred: torch.Tensor, gt: torch.Tensor, what: str) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(gt, torch.Tensor):
        raise TypeError(f"{what}: expected tensors, got {type(pred).__name__} and {type(gt).__name__}")
    if pred.shape != gt.shape:
        raise ValueError(f"{what}: prediction {tuple(pred.shape)} and target {tuple(gt.shape)} differ in shape")


def _check_mask(mask: torch.Tensor, like: torch.Tensor, what: str) -> None:
    """A mask must be `[B, 1, H, W]` (broadcast over channels) or exactly `like`'s shape."""
    if like.ndim != 4:
        raise ValueError(f"{what}: a mask needs [B,C,H,W] inputs, got {tuple(like.shape)}")
    b, _, h, w = like.shape
    if tuple(mask.shape) not in ((b, 1, h, w), tuple(like.shape)):
        raise ValueError(f"{what}: mask {tuple(mask.shape)} must be [{b},1,{h},{w}] or {tuple(like.shape)}")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _masked_mean(err: torch.Tensor, mask: Optional[torch.Tensor], what: str) -> torch.Tensor:
    """Mean of `err` `[B, C, H, W]` over the pixels (and all channels) where `mask` is set.

    With a soft mask the mean is weighted. An all-zero mask gives 0 (not NaN).
    """
    if mask is None:
        return err.mean()
    _check_mask(mask, err, what)
    weight = mask.to(err.dtype).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1e-8)


def l1_loss(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error, optionally restricted to a mask.

    Args:
        pred: prediction `[B, C, H, W]` (any shape without a mask).
        gt: target, same shape as `pred`.
        mask: optional `[B, 1, H, W]` (or `pred`'s shape) weights in [0, 1]; the mean is taken
            over the masked pixels and all channels.

    Returns:
        Scalar loss.
    """
    _check_same_shape(pred, gt, "l1_loss")
    return _masked_mean((pred - gt).abs(), mask, "l1_loss")


def mse_loss(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error, optionally restricted to a mask (see `l1_loss` for the arguments).

    Returns:
        Scalar loss.
    """
    _check_same_shape(pred, gt, "mse_loss")
    return _masked_mean((pred - gt).square(), mask, "mse_loss")


def gaussian_window(window: int, sigma: float, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian `[window]` centred on the middle tap.

    Args:
        window: odd number of taps.
        sigma: standard deviation in pixels.
    """
    if window <= 0 or window % 2 == 0:
        raise ValueError(f"SSIM window must be a positive odd number, got {window}")
    if sigma <= 0:
        raise ValueError(f"SSIM sigma must be positive, got {sigma}")
    offsets = torch.arange(window, dtype=dtype, device=device) - (window - 1) / 2
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def ssim(pred: torch.Tensor, gt: torch.Tensor, window: int = 11, sigma: float = 1.5, reduction: str = "mean",
         data_range: float = 1.0) -> torch.Tensor:
    """Differentiable SSIM with a Gaussian window (Wang et al. 2004), per image.

    Computed as torchmetrics' `structural_similarity_index_measure` does by default: both images
    are reflect-padded by ``window // 2``, local statistics come from a separable Gaussian filter,
    variances are clamped at 0, C1 = (0.01·data_range)², C2 = (0.03·data_range)², and the SSIM map
    is averaged over channels and all pixels. (torchmetrics derives its window size from sigma,
    ``2·int(3.5σ + 0.5) + 1``, which is 11 for σ = 1.5; here `window` is used as given.)

    Args:
        pred: prediction `[B, C, H, W]` (C = 3 for RGB).
        gt: target `[B, C, H, W]`.
        window: Gaussian window size (odd).
        sigma: Gaussian standard deviation in pixels.
        reduction: "mean" (over the batch), "sum", or "none" for per-image values `[B]`.
        data_range: value range of the images (1 for [0, 1]).

    Returns:
        Scalar, or `[B]` with ``reduction="none"``; 1 for identical images.

    Raises:
        ValueError: on non-4-D or mismatched inputs, or images too small for the padding.
    """
    _check_same_shape(pred, gt, "ssim")
    if pred.ndim != 4:
        raise ValueError(f"ssim expects [B,C,H,W] images, got {tuple(pred.shape)}")
    pad = window // 2
    if min(pred.shape[-2:]) <= pad:
        raise ValueError(f"ssim with window {window} needs images larger than {pad} px, got {tuple(pred.shape[-2:])}")
    channels = pred.shape[1]
    gt = gt.to(pred.dtype)
    taps = gaussian_window(window, sigma, dtype=pred.dtype, device=pred.device)
    kernel_x = taps.view(1, 1, 1, window).expand(channels, 1, 1, window)
    kernel_y = taps.view(1, 1, window, 1).expand(channels, 1, window, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kernel_x, groups=channels), kernel_y, groups=channels)

    pred_p = F.pad(pred, (pad, pad, pad, pad), mode="reflect")
    gt_p = F.pad(gt, (pad, pad, pad, pad), mode="reflect")
    stats = blur(torch.cat([pred_p, gt_p, pred_p * pred_p, gt_p * gt_p, pred_p * gt_p], dim=0))
    mu_p, mu_g, e_pp, e_gg, e_pg = stats.chunk(5, dim=0)
    var_p = (e_pp - mu_p.square()).clamp_min(0.0)
    var_g = (e_gg - mu_g.square()).clamp_min(0.0)
    cov = e_pg - mu_p * mu_g
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_p * mu_g + c1) * (2 * cov + c2)) / ((mu_p.square() + mu_g.square() + c1) * (var_p + var_g + c2))
    return _reduce(ssim_map.flatten(1).mean(dim=1), reduction)


def ssim_loss(pred: torch.Tensor, gt: torch.Tensor, window: int = 11, sigma: float = 1.5,
              reduction: str = "mean", data_range: float = 1.0) -> torch.Tensor:
    """``1 - ssim(pred, gt)`` (see `ssim`); 0 for identical images.

    Returns:
        Scalar, or `[B]` with ``reduction="none"``.
    """
    return 1.0 - ssim(pred, gt, window=window, sigma=sigma, reduction=reduction, data_range=data_range)


class LPIPSLoss(nn.Module):
    """LPIPS v0.1 perceptual loss over the shared network of `zoo.core.lpips`.

    The network is frozen and lives outside this module's parameters and state dict (one shared
    instance per backbone and device, built on first use); this module therefore has no
    parameters, adds nothing to checkpoints, and `.to(device)` is free: the input's device picks
    the network copy. Gradients flow to the inputs only.

    Args:
        net: backbone, "alex" or "vgg".
        normalize: True (default) takes images in [0, 1] and maps them to [-1, 1] as LPIPS
            expects; False passes the inputs through unchanged (they must already be in [-1, 1]).
        reduction: "mean" (over the batch), "sum", or "none" for per-image values `[B]`.

    Raises:
        FileNotFoundError: at construction, when the weights are not in the cache (the message
            says to run ``python -m zoo.core.lpips fetch``).

    Example:
        >>> loss = LPIPSLoss("vgg")
        >>> value = loss(pred, gt)          # pred, gt [B,3,H,W] in [0,1] -> scalar
    """

    def __init__(self, net: str = "alex", normalize: bool = True, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.net_name = net
        self.normalize = normalize
        self.reduction = reduction
        _lpips.get_lpips(net)  # load now so that missing weights fail at construction, not mid-training

    def network(self, device: torch.device | str | None = None) -> _lpips.LPIPS:
        """The shared frozen `LPIPS` network of this loss's backbone on `device` (default CPU)."""
        return _lpips.get_lpips(self.net_name, device)

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """LPIPS between prediction and target.

        Args:
            pred: `[B, 3, H, W]` in [0, 1] (or [-1, 1] with ``normalize=False``).
            gt: `[B, 3, H, W]`, same range.

        Returns:
            Scalar, or `[B]` with ``reduction="none"``.
        """
        _check_same_shape(pred, gt, "LPIPSLoss")
        distances = self.network(pred.device)(pred, gt, normalize=self.normalize)
        return _reduce(distances, self.reduction)

    def extra_repr(self) -> str:
        return f"net={self.net_name!r}, normalize={self.normalize}, reduction={self.reduction!r}"


def mask_loss(alpha: torch.Tensor, mask: torch.Tensor, kind: str = "l1", eps: float = 1e-6) -> torch.Tensor:
    """Loss between a rendered opacity and the person mask.

    Args:
        alpha: rendered accumulated opacity `[B, 1, H, W]` in [0, 1].
        mask: target mask `[B, 1, H, W]` in [0, 1] (1 = person).
        kind: "l1" (mean absolute difference) or "bce" (binary cross-entropy; alpha is used as
            ``log(alpha + eps)`` / ``log(1 - alpha + eps)`` so that saturated alphas still get a
            gradient).
        eps: the BCE's log offset.

    Returns:
        Scalar loss.
    """
    _check_same_shape(alpha, mask, "mask_loss")
    mask = mask.to(alpha.dtype)
    if kind == "l1":
        return (alpha - mask).abs().mean()
    if kind == "bce":
        return -(mask * torch.log(alpha + eps) + (1.0 - mask) * torch.log(1.0 - alpha + eps)).mean()
    raise ValueError(f"mask_loss kind must be 'l1' or 'bce', got {kind!r}")


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      eps: float = 1e-8) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image least-squares scale and shift that map `pred` onto `target` over `mask`.

    Solves ``min_{s,t} Σ m (s·pred + t − target)²`` in closed form, in centred form for numerical
    stability: ``s = cov(pred, target) / var(pred)``, ``t = mean(target) − s·mean(pred)`` (weighted
    by `m`). Where the prediction is constant over the valid pixels (relative variance below 1e-10,
    or fewer than two valid pixels) the scale falls back to 1 and the shift to the mean offset.
    Differentiable in `pred`.

    Args:
        pred: `[B, 1, H, W]`.
        target: `[B, 1, H, W]`.
        mask: `[B, 1, H, W]` weights (1 = use the pixel).
        eps: guard for empty masks.

    Returns:
        scale `[B]`, shift `[B]`.
    """
    m = mask.to(pred.dtype).flatten(1)
    p = pred.flatten(1)
    g = target.to(pred.dtype).flatten(1)
    weight = m.sum(1).clamp_min(eps)
    mean_p = (m * p).sum(1) / weight
    mean_g = (m * g).sum(1) / weight
    dp = p - mean_p[:, None]
    var = (m * dp * dp).sum(1)
    cov = (m * dp * (g - mean_g[:, None])).sum(1)
    second_moment = (m * p * p).sum(1)
    ok = var > 1e-10 * second_moment + eps * eps
    scale = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.ones_like(var))
    shift = mean_g - scale * mean_p
    return scale, shift


def depth_loss(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None,
               scale_shift_invariant: bool = False) -> torch.Tensor:
    """L1 depth loss over valid pixels, optionally invariant to scale and shift.

    Non-finite target values are never valid. With ``scale_shift_invariant=True`` (monocular depth
    estimates, known only up to an affine map) the prediction is first aligned to the target per
    image by `align_scale_shift` (least squares over the valid pixels); the alignment is part of
    the graph, as in MiDaS/MonoSDF.

    Args:
        pred: rendered depth `[B, 1, H, W]`.
        gt: target depth `[B, 1, H, W]`.
        mask: optional `[B, 1, H, W]` validity weights (e.g. the person mask).
        scale_shift_invariant: align `pred` to `gt` with a per-image scale and shift first.

    Returns:
        Scalar: mean absolute error over the valid pixels of the batch (0 if there are none).
    """
    _check_same_shape(pred, gt, "depth_loss")
    if pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"depth_loss expects [B,1,H,W] depth, got {tuple(pred.shape)}")
    finite = torch.isfinite(gt)
    valid = finite.to(pred.dtype)
    if mask is not None:
        _check_mask(mask, pred, "depth_loss")
        valid = valid * mask.to(pred.dtype)
    target = torch.where(finite, gt, torch.zeros_like(gt))
    if scale_shift_invariant:
        scale, shift = align_scale_shift(pred, target, valid)
        pred = scale.view(-1, 1, 1, 1) * pred + shift.view(-1, 1, 1, 1)
    return ((pred - target).abs() * valid).sum() / valid.sum().clamp_min(1e-8)


def chamfer_distance(a: torch.Tensor, b: torch.Tensor, chunk_size: int = 1024, squared: bool = True,
                     reduction: str = "sum") -> torch.Tensor:
    """Symmetric Chamfer distance between two point sets, computed in chunks.

    ``d(a→b) = mean_i min_j ||a_i − b_j||`` (squared with ``squared=True``), likewise ``d(b→a)``.
    Pairwise distances are formed for at most ``chunk_size × chunk_size`` pairs at a time, so memory
    stays bounded for large sets. Differentiable in both inputs (the square root, when taken, is
    guarded so that coincident points give a zero, finite gradient).

    Args:
        a: points `[N, 3]`.
        b: points `[M, 3]`.
        chunk_size: rows and columns per block.
        squared: use squared distances (the usual training loss) or plain distances (the usual
            metric, e.g. X-Avatar's Chamfer in mm when the points are in mm).
        reduction: "sum" → ``d(a→b) + d(b→a)``, "mean" → their average, "none" → both as `[2]`.

    Returns:
        Scalar, or `[2]` with ``reduction="none"``.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"chamfer_distance expects [N,D] and [M,D] points, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("chamfer_distance needs non-empty point sets")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    b = b.to(a.dtype)
    rows = []
    col_min = torch.full((b.shape[0],), float("inf"), dtype=a.dtype, device=a.device)
    for i in range(0, a.shape[0], chunk_size):
        a_chunk = a[i:i + chunk_size]
        row_min = None
        col_parts = []
        for j in range(0, b.shape[0], chunk_size):
            d2 = (a_chunk[:, None, :] - b[None, j:j + chunk_size, :]).square().sum(-1)
            block_row = d2.min(dim=1).values
            row_min = block_row if row_min is None else torch.minimum(row_min, block_row)
            col_parts.append(d2.min(dim=0).values)
        rows.append(row_min)
        col_min = torch.minimum(col_min, torch.cat(col_parts))
    a_to_b = torch.cat(rows)
    b_to_a = col_min
    if not squared:
        a_to_b = _safe_sqrt(a_to_b)
        b_to_a = _safe_sqrt(b_to_a)
    both = torch.stack([a_to_b.mean(), b_to_a.mean()])
    if reduction == "sum":
        return both.sum()
    if reduction == "mean":
        return both.mean()
    if reduction == "none":
        return both
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with value 0 and gradient 0 at 0 (plain sqrt has an infinite gradient there)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))
