"""Evaluation metrics and the evaluation protocol object.

Image metrics (all per image, images `[B, 3, H, W]` in [0, 1]):

* PSNR and SSIM through ``torchmetrics.functional`` with ``data_range=1`` (SSIM: Gaussian window,
  σ = 1.5, 11 taps, reflect padding — torchmetrics' defaults). Predictions are clamped to [0, 1]
  first, as every reference evaluation script does with its renders.
* LPIPS v0.1 through `zoo.core.lpips` (the same shared network the LPIPS loss uses), with the
  backbone, input range and ×1000 scaling the protocol asks for.

Pose metrics (joints `[B, J, 3]`): MPJPE, PA-MPJPE (similarity Procrustes: scale, rotation,
translation, per sample) and translation error. They are returned in the unit of the input;
pass millimetres (metres × 1000) to get the numbers papers print — that is the caller's choice.

`EvalProtocol` holds what differs between papers' evaluations (crop, background, LPIPS
backbone/input/scale, resolution); its defaults score the full image as given with LPIPS alex on
[-1, 1]. It knows no dataset: the named presets are plain dicts in the data layer
(``zoo.data.protocols``), each sequence carries one as ``seq.protocol``, and
``EvalProtocol(**seq.protocol)`` builds the object. `evaluate_images` applies one and returns
full-image and person-crop metrics; `MetricAccumulator` averages them over an epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from zoo.core import lpips as _lpips

CROPS = ("full", "bbox")
LPIPS_INPUTS = ("minus_one_one", "zero_one_as_is")
IMAGE_METRICS = ("psnr", "ssim", "lpips")
SSIM_MIN_SIDE = 11  # torchmetrics reflect-pads by 5 px, which needs more than 5 px per side


# ---------------------------------------------------------------------------------------------
# Image metrics
# ---------------------------------------------------------------------------------------------
def _check_images(pred: torch.Tensor, gt: torch.Tensor, what: str) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(gt, torch.Tensor):
        raise TypeError(f"{what}: expected tensors, got {type(pred).__name__} and {type(gt).__name__}")
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"{what}: expected images [B,3,H,W], got prediction {tuple(pred.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(f"{what}: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, data range 1 (torchmetrics).

    Args:
        pred: `[B, 3, H, W]` in [0, 1] (clamped).
        gt: `[B, 3, H, W]` in [0, 1].

    Returns:
        `[B]` in dB; +inf for an image identical to its target.
    """
    _check_images(pred, gt, "psnr")
    pred = pred.detach().float().clamp(0.0, 1.0)
    return peak_signal_noise_ratio(pred, gt.detach().float(), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """SSIM per image, data range 1, torchmetrics defaults (Gaussian σ = 1.5, 11 taps).

    Args:
        pred: `[B, 3, H, W]` in [0, 1] (clamped), at least 11 px per side.
        gt: `[B, 3, H, W]` in [0, 1].

    Returns:
        `[B]`; 1 for identical images.
    """
    _check_images(pred, gt, "ssim")
    if min(pred.shape[-2:]) < SSIM_MIN_SIDE:
        raise ValueError(f"ssim needs images of at least {SSIM_MIN_SIDE} px per side, got {tuple(pred.shape[-2:])}")
    pred = pred.detach().float().clamp(0.0, 1.0)
    return structural_similarity_index_measure(pred, gt.detach().float(), data_range=1.0, reduction="none")


def lpips_score(pred: torch.Tensor, gt: torch.Tensor, net: str = "alex", input_mode: str = "minus_one_one",
                scale: float = 1.0, network: Optional[_lpips.LPIPS] = None) -> torch.Tensor:
    """LPIPS v0.1 per image, as a given codebase computes it.

    Args:
        pred: `[B, 3, H, W]` in [0, 1] (clamped).
        gt: `[B, 3, H, W]` in [0, 1].
        net: backbone, "alex" or "vgg".
        input_mode: "minus_one_one" feeds ``2x − 1`` (the correct use); "zero_one_as_is" feeds the
            [0, 1] images unchanged, replicating codebases that call torchmetrics' LPIPS with its
            default ``normalize=False`` (or ``lpips.LPIPS``) on [0, 1] images.
        scale: multiply the result (1, or 1000 for papers that print LPIPS×10³).
        network: an `LPIPS` module to use; default the shared one (`zoo.core.lpips.get_lpips`).

    Returns:
        `[B]` distances (times `scale`); 0 for identical images.
    """
    _check_images(pred, gt, "lpips")
    if input_mode not in LPIPS_INPUTS:
        raise ValueError(f"LPIPS input mode must be one of {LPIPS_INPUTS}, got {input_mode!r}")
    if network is None:
        network = _lpips.get_lpips(net, pred.device)
    elif network.net != net:
        raise ValueError(f"LPIPS network is '{network.net}' but '{net}' was asked for")
    pred = pred.detach().float().clamp(0.0, 1.0)
    gt = gt.detach().float()
    with torch.no_grad():
        return network(pred, gt, normalize=input_mode == "minus_one_one") * float(scale)


# ---------------------------------------------------------------------------------------------
# Pose metrics
# ---------------------------------------------------------------------------------------------
def _check_joints(pred: torch.Tensor, gt: torch.Tensor, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != gt.shape:
        raise ValueError(f"{what}: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"{what}: expected joints [B,J,3] or [J,3], got {tuple(pred.shape)}")
    return pred, gt.to(pred.dtype)


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, root_index: Optional[int] = None) -> torch.Tensor:
    """Mean per-joint position error per sample.

    Args:
        pred: joints `[B, J, 3]` (or `[J, 3]`, treated as B = 1).
        gt: joints, same shape.
        root_index: if given, both sets are made relative to this joint first (root-aligned MPJPE,
            e.g. the pelvis, as Human3.6M protocols do).

    Returns:
        `[B]` mean Euclidean joint error, in the unit of the input (×1000 metres → mm).
    """
    pred, gt = _check_joints(pred, gt, "mpjpe")
    if root_index is not None:
        pred = pred - pred[:, root_index:root_index + 1]
        gt = gt - gt[:, root_index:root_index + 1]
    return (pred - gt).norm(dim=-1).mean(dim=-1)


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Similarity transform (scale, rotation, translation) of `pred` that best fits `gt`, per sample.

    Umeyama's closed form: centre both sets, ``U S Vᵀ = svd(Xᵀ Y)``, ``R = V D Uᵀ`` with
    ``D = diag(1, 1, sign det(V Uᵀ))`` (no reflections), ``s = tr(D S) / ||X||²``. Solved in float64.

    Args:
        pred: joints `[B, J, 3]` (or `[J, 3]`).
        gt: joints, same shape.

    Returns:
        The aligned prediction `[B, J, 3]` in `pred`'s dtype.
    """
    pred, gt = _check_joints(pred, gt, "procrustes_align")
    x = pred.double()
    y = gt.double()
    mu_x = x.mean(dim=1, keepdim=True)
    mu_y = y.mean(dim=1, keepdim=True)
    xc = x - mu_x
    yc = y - mu_y
    u, s, vh = torch.linalg.svd(xc.transpose(1, 2) @ yc)
    v = vh.transpose(1, 2)
    sign = torch.sign(torch.linalg.det(v @ u.transpose(1, 2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.ones_like(s)
    d[:, -1] = sign
    rot = v @ torch.diag_embed(d) @ u.transpose(1, 2)
    scale = (s * d).sum(dim=1) / xc.square().sum(dim=(1, 2)).clamp_min(1e-300)
    aligned = scale[:, None, None] * xc @ rot.transpose(1, 2) + mu_y
    return aligned.to(pred.dtype)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """MPJPE after per-sample similarity Procrustes alignment (`procrustes_align`).

    Args:
        pred: joints `[B, J, 3]` (or `[J, 3]`).
        gt: joints, same shape.

    Returns:
        `[B]` in the unit of the input; 0 for a rotated, scaled and translated copy of `gt`.
    """
    pred, gt = _check_joints(pred, gt, "pa_mpjpe")
    return mpjpe(procrustes_align(pred, gt), gt)


def translation_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between predicted and true global translations.

    Args:
        pred: translations `[B, 3]` (or `[3]`).
        gt: translations, same shape.

    Returns:
        `[B]` in the unit of the input.
    """
    if pred.shape != gt.shape or pred.shape[-1] != 3 or pred.ndim not in (1, 2):
        raise ValueError(f"translation_error expects [B,3] and [B,3], got {tuple(pred.shape)} and {tuple(gt.shape)}")
    return (pred - gt.to(pred.dtype)).reshape(-1, 3).norm(dim=-1)


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalProtocol:
    """How rendered images are scored; `evaluate_images` applies it.

    The fields match the keys of the protocol dicts the data layer builds
    (``zoo.data.schema.PROTOCOL_KEYS``), so ``EvalProtocol(**protocol_dict)`` works.

    Attributes:
        name: protocol name (for logs and tables).
        crop: the region the papers report: "full" (whole image) or "bbox" (the person's bounding
            box from the GT mask, grown by `bbox_pad`, cut from both images). `evaluate_images`
            always returns both; this picks the headline keys (`primary_keys`).
        bbox_pad: pixels added on every side of the mask's bounding box (clamped to the image).
        background: RGB in [0, 1] onto which the *ground truth* is composited with its mask before
            scoring (the prediction is scored as rendered: a method renders on this colour at
            evaluation, so floaters and silhouette errors count), or None to score both as given.
        mask_prediction: also composite the *prediction* with the GT mask, as a few papers' own
            evaluation scripts do (name the file in `source`). The honest unmasked numbers keep the
            plain keys (``psnr``...); the paper's masked ones come beside them as ``psnr_masked``...
            It hides floaters outside the person, so it is never the default.
        lpips_net: LPIPS backbone, "alex" or "vgg".
        lpips_input: "minus_one_one" (images mapped to [-1, 1], the correct use) or
            "zero_one_as_is" ([0, 1] images fed unchanged, as several codebases do).
        lpips_scale: factor on LPIPS (1, or 1000 for ×10³ tables).
        resolution: `(H, W)` the images are scored at (both are resized if they differ), or None
            for the resolution given.
        source: which codebase's evaluation this reproduces.
    """

    name: str = "default"
    crop: str = "full"
    bbox_pad: int = 0
    background: Optional[Tuple[float, float, float]] = None
    lpips_net: str = "alex"
    lpips_input: str = "minus_one_one"
    lpips_scale: float = 1.0
    resolution: Optional[Tuple[int, int]] = None
    source: str = ""
    mask_prediction: bool = False

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"EvalProtocol.crop must be one of {CROPS}, got {self.crop!r}")
        if int(self.bbox_pad) < 0:
            raise ValueError(f"EvalProtocol.bbox_pad must be >= 0, got {self.bbox_pad}")
        object.__setattr__(self, "bbox_pad", int(self.bbox_pad))
        if self.background is not None:
            background = tuple(float(c) for c in self.background)
            if len(background) != 3 or not all(0.0 <= c <= 1.0 for c in background):
                raise ValueError(f"EvalProtocol.background must be 3 values in [0, 1] or None, got {self.background!r}")
            object.__setattr__(self, "background", background)
        if self.lpips_net not in _lpips.NETS:
            raise ValueError(f"EvalProtocol.lpips_net must be one of {_lpips.NETS}, got {self.lpips_net!r}")
        if self.lpips_input not in LPIPS_INPUTS:
            raise ValueError(f"EvalProtocol.lpips_input must be one of {LPIPS_INPUTS}, got {self.lpips_input!r}")
        if not float(self.lpips_scale) > 0:
            raise ValueError(f"EvalProtocol.lpips_scale must be positive, got {self.lpips_scale}")
        object.__setattr__(self, "lpips_scale", float(self.lpips_scale))
        if self.resolution is not None:
            resolution = tuple(int(v) for v in self.resolution)
            if len(resolution) != 2 or min(resolution) <= 0:
                raise ValueError(f"EvalProtocol.resolution must be (H, W) or None, got {self.resolution!r}")
            object.__setattr__(self, "resolution", resolution)
        if not isinstance(self.mask_prediction, bool):
            raise ValueError(f"EvalProtocol.mask_prediction must be true or false, got {self.mask_prediction!r}")
        if self.mask_prediction and self.background is None:
            raise ValueError("EvalProtocol.mask_prediction needs a background to composite the prediction onto")

    @property
    def primary_keys(self) -> Tuple[str, str, str]:
        """The keys of `evaluate_images`' result that the papers report for this protocol."""
        suffix = "_crop" if self.crop == "bbox" else ""
        return tuple(f"{m}{suffix}" for m in IMAGE_METRICS)  # type: ignore[return-value]

    def as_dict(self) -> Dict[str, Any]:
        """Plain-type dict (lists, not tuples) that ``EvalProtocol(**d)`` turns back into this."""
        out: Dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            out[item.name] = list(value) if isinstance(value, tuple) else value
        return out


# ---------------------------------------------------------------------------------------------
# Image evaluation under a protocol
# ---------------------------------------------------------------------------------------------
def composite(image: torch.Tensor, mask: torch.Tensor, background: Tuple[float, float, float]) -> torch.Tensor:
    """Composite images onto a constant colour: ``image·mask + background·(1 − mask)``.

    Args:
        image: `[B, 3, H, W]`.
        mask: `[B, 1, H, W]` in [0, 1].
        background: RGB in [0, 1].

    Returns:
        `[B, 3, H, W]`.
    """
    colour = torch.tensor(background, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    mask = mask.to(image.dtype)
    return image * mask + colour * (1.0 - mask)


def _grow(lo: int, hi: int, size: int, min_len: int) -> Tuple[int, int]:
    """Grow the half-open interval [lo, hi) symmetrically to at least min_len, inside [0, size)."""
    if hi - lo >= min_len:
        return lo, hi
    need = min_len - (hi - lo)
    lo -= need // 2
    hi += need - need // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > size:
        lo, hi = max(lo - (hi - size), 0), size
    return lo, hi


def person_bbox(mask: torch.Tensor, pad: int = 0, min_size: int = 1) -> Tuple[int, int, int, int]:
    """Bounding box of the person in a mask, padded and clamped to the image.

    Args:
        mask: `[H, W]` or `[1, H, W]`; pixels > 0.5 are the person.
        pad: pixels added on every side.
        min_size: the box is grown symmetrically (staying inside the image) to at least this many
            pixels per side, so that SSIM/LPIPS can run on it; an image smaller than that gives the
            whole image.

    Returns:
        ``(y0, y1, x0, x1)``, half-open (rows y0..y1-1, columns x0..x1-1). An empty mask gives the
        whole image (a frame without a person has no person box).
    """
    if mask.ndim == 3:
        if mask.shape[0] != 1:
            raise ValueError(f"person_bbox expects a [H,W] or [1,H,W] mask, got {tuple(mask.shape)}")
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"person_bbox expects a [H,W] or [1,H,W] mask, got {tuple(mask.shape)}")
    height, width = mask.shape
    person = mask > 0.5
    rows = torch.nonzero(person.any(dim=1)).flatten()
    cols = torch.nonzero(person.any(dim=0)).flatten()
    if rows.numel() == 0:
        return 0, height, 0, width
    y0 = max(int(rows[0]) - pad, 0)
    y1 = min(int(rows[-1]) + 1 + pad, height)
    x0 = max(int(cols[0]) - pad, 0)
    x1 = min(int(cols[-1]) + 1 + pad, width)
    y0, y1 = _grow(y0, y1, height, min_size)
    x0, x1 = _grow(x0, x1, width, min_size)
    return y0, y1, x0, x1


def _resolve_lpips_network(lpips: Any, net: str, device: torch.device) -> _lpips.LPIPS:
    """An `LPIPS` network from what the caller passed (an LPIPSLoss, an LPIPS, or None)."""
    if lpips is None:
        return _lpips.get_lpips(net, device)
    if isinstance(lpips, _lpips.LPIPS):
        network = lpips
    elif hasattr(lpips, "network") and callable(lpips.network):  # zoo.core.losses.LPIPSLoss
        network = lpips.network(device)
    else:
        raise TypeError(f"lpips must be an LPIPSLoss, an LPIPS module or None, got {type(lpips).__name__}")
    if network.net != net:
        raise ValueError(f"the LPIPS network passed is '{network.net}', but the protocol asks for '{net}'")
    return network


def evaluate_images(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
                    protocol: Optional[EvalProtocol] = None, lpips: Any = None, reduction: str = "mean",
                    crop_metrics: bool = True) -> Dict[str, Union[float, torch.Tensor]]:
    """PSNR, SSIM and LPIPS of rendered images under a protocol, on the full image and the person crop.

    Steps: clamp the prediction to [0, 1]; resize all three to ``protocol.resolution`` if set and
    different (bilinear with antialiasing; the mask too, then thresholded at 0.5 for the box);
    composite the *ground truth* onto ``protocol.background`` with its mask if set (the prediction
    is scored as rendered, so anything it draws outside the person costs); score the full images;
    cut each image pair to its person box (`person_bbox` with ``protocol.bbox_pad``, grown to the
    smallest size SSIM and the LPIPS backbone accept) and score the crops. With
    ``protocol.mask_prediction`` the whole scoring runs a second time on the prediction composited
    with the GT mask too (the paper's way), under ``*_masked`` keys.

    Args:
        pred: rendered images `[B, 3, H, W]` in [0, 1].
        gt: ground-truth images `[B, 3, H, W]` in [0, 1].
        mask: GT person masks `[B, 1, H, W]` in [0, 1].
        protocol: the `EvalProtocol` (default ``EvalProtocol()``: full image, no compositing,
            LPIPS alex on [-1, 1]).
        lpips: the LPIPS network to use: an `LPIPSLoss` (its shared network is used) or an `LPIPS`
            module, of the protocol's backbone; None takes the shared network.
        reduction: "mean" gives floats averaged over the batch (each image scored on its own
            first); "none" gives per-image tensors `[B]`.
        crop_metrics: also compute the ``*_crop`` keys.

    Returns:
        ``{"psnr", "ssim", "lpips"}`` and, with `crop_metrics`, ``{"psnr_crop", "ssim_crop",
        "lpips_crop"}``; with ``protocol.mask_prediction`` also the same keys with ``_masked``
        appended (``psnr_masked``, ``psnr_crop_masked``...). LPIPS is multiplied by
        ``protocol.lpips_scale``.

    Raises:
        ValueError: on mismatched or malformed shapes, or an unknown reduction.
    """
    protocol = protocol if protocol is not None else EvalProtocol()
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    _check_images(pred, gt, "evaluate_images")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1 \
            or mask.shape[0] != pred.shape[0] or mask.shape[-2:] != pred.shape[-2:]:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        b, _, h, w = pred.shape
        raise ValueError(f"evaluate_images: mask must be [{b},1,{h},{w}] like the images, got {shape}")
    with torch.no_grad():
        pred = pred.detach().float().clamp(0.0, 1.0)
        gt = gt.detach().float().to(pred.device)
        mask = mask.detach().float().to(pred.device).clamp(0.0, 1.0)
        if protocol.resolution is not None and tuple(pred.shape[-2:]) != protocol.resolution:
            size = protocol.resolution
            pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
            gt = F.interpolate(gt, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        if protocol.background is not None:
            gt = composite(gt, mask, protocol.background)
        network = _resolve_lpips_network(lpips, protocol.lpips_net, pred.device)
        results = _score_all(pred, gt, mask, protocol, network, crop_metrics)
        if protocol.mask_prediction:
            masked = _score_all(composite(pred, mask, protocol.background), gt, mask, protocol, network, crop_metrics)
            results.update({f"{key}_masked": value for key, value in masked.items()})
    if reduction == "none":
        return results
    return {key: float(value.mean()) for key, value in results.items()}


def _score_all(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, protocol: EvalProtocol,
               network: _lpips.LPIPS, crop_metrics: bool) -> Dict[str, torch.Tensor]:
    """Per-image full-image (and person-crop) PSNR, SSIM, LPIPS of prepared image pairs."""

    def score(p: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            psnr(p, g),
            ssim(p, g),
            lpips_score(p, g, protocol.lpips_net, protocol.lpips_input, protocol.lpips_scale, network),
        )

    results: Dict[str, torch.Tensor] = dict(zip(IMAGE_METRICS, score(pred, gt)))
    if crop_metrics:
        min_size = max(SSIM_MIN_SIDE, _lpips.MIN_SIDE[protocol.lpips_net])
        per_image: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for b in range(pred.shape[0]):
            y0, y1, x0, x1 = person_bbox(mask[b, 0], protocol.bbox_pad, min_size)
            per_image.append(score(pred[b:b + 1, :, y0:y1, x0:x1], gt[b:b + 1, :, y0:y1, x0:x1]))
        for index, metric in enumerate(IMAGE_METRICS):
            results[f"{metric}_crop"] = torch.cat([values[index] for values in per_image])
    return results


class MetricAccumulator:
    """Collects per-frame metric values over an epoch and reports their means.

    `update` takes a dict of metric values, either per frame (1-D tensors / sequences, one value per
    frame) or as a batch mean with its frame count ``n`` (as `evaluate_images` returns with
    ``reduction="mean"``); either way every frame weighs the same in `compute`.

    Example:
        >>> acc = MetricAccumulator()
        >>> acc.update(evaluate_images(pred, gt, mask, protocol), n=pred.shape[0])
        >>> acc.compute()                  # {"psnr": ..., "ssim": ..., ...}
    """

    def __init__(self) -> None:
        self._entries: Dict[str, List[Tuple[float, int]]] = {}

    def update(self, values: Mapping[str, Any], n: Optional[int] = None) -> None:
        """Add one batch of metric values.

        Args:
            values: metric name → a scalar (one frame, or the mean of ``n`` frames), or a 1-D
                tensor/sequence of per-frame values.
            n: frames behind each scalar value (default 1). For per-frame values it must equal
                their length if given.

        Raises:
            ValueError: ``n`` < 1, or ``n`` disagreeing with a per-frame value's length.
        """
        if n is not None and int(n) < 1:
            raise ValueError(f"MetricAccumulator.update: n must be >= 1, got {n}")
        for key, value in values.items():
            flat = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value,
                                   dtype=torch.float64).cpu().flatten()
            entries = self._entries.setdefault(key, [])
            if not _is_sequence(value):  # one frame, or the mean of n frames
                if flat.numel() != 1:
                    raise ValueError(f"MetricAccumulator.update: '{key}' is neither a scalar nor a 1-D sequence")
                entries.append((float(flat[0]), int(n) if n is not None else 1))
            else:
                if n is not None and int(n) != flat.numel():
                    raise ValueError(f"MetricAccumulator.update: '{key}' has {flat.numel()} values but n={n}")
                entries.extend((float(v), 1) for v in flat.tolist())

    def compute(self) -> Dict[str, float]:
        """Frame-weighted mean of every metric seen since the last `reset` (NaN if none)."""
        out: Dict[str, float] = {}
        for key, entries in self._entries.items():
            total = sum(weight for _, weight in entries)
            if total == 0:
                out[key] = math.nan
                continue
            out[key] = sum(value * weight for value, weight in entries) / total
        return out

    def count(self, key: str) -> int:
        """Number of frames recorded for one metric."""
        return sum(weight for _, weight in self._entries.get(key, []))

    def reset(self) -> None:
        """Forget everything (call at the start or end of each epoch)."""
        self._entries = {}


def _is_sequence(value: Any) -> bool:
    """True for per-frame containers (non-scalar tensors or arrays, lists, tuples)."""
    if hasattr(value, "ndim"):  # torch tensors, numpy arrays and numpy scalars
        return int(value.ndim) > 0
    return isinstance(value, (list, tuple))
