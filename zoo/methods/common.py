"""Small pieces several methods share: building the body model from a sequence's data_info,
preparing batch body parameters and rendering one posed avatar per batch view."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import torch

from zoo.core.body import BodyModel
from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians
from zoo.core.render import render


def body_models_root(data_info: Mapping[str, Any]) -> Optional[str]:
    """The body-model folder: data_info["body_models"] if it exists, else $ZOO_BODY_MODELS."""
    recorded = data_info.get("body_models")
    if recorded and Path(recorded).exists():
        return str(recorded)
    env = os.environ.get("ZOO_BODY_MODELS")
    return env or recorded


def body_model_for(data_info: Mapping[str, Any]) -> BodyModel:
    """BodyModel of the sequence's type and gender (data_info keys model_type, gender, body_models)."""
    return BodyModel(
        model_type=data_info.get("model_type", "smpl"),
        model_path=body_models_root(data_info),
        gender=data_info.get("gender", "neutral"),
    )


def body_params(body: Mapping[str, torch.Tensor], betas: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Copy of a batch's body dict with float tensors and the subject's `betas [1,S]` broadcast.

    The subject's betas (the mean shape of the sequence) replace per-frame betas so that one
    canonical body is shared by every frame.
    """
    params = {k: v.float() for k, v in body.items() if torch.is_tensor(v)}
    B = next(iter(params.values())).shape[0]
    params["betas"] = betas.expand(B, -1).to(next(iter(params.values())).device)
    return params


def posed_local_vertices(body: BodyModel, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Posed body vertices `[B,V,3]` with the root rotation and translation removed (pose-only)."""
    local = dict(params)
    local["global_orient"] = torch.zeros_like(params["global_orient"])
    local["transl"] = torch.zeros_like(params["transl"])
    local.pop("scale", None)
    return body(local).vertices


def render_views(gaussians_of: Callable[[int], Gaussians], cameras: Cameras, background: torch.Tensor,
                 **render_kwargs: Any) -> Dict[str, torch.Tensor]:
    """Render one Gaussian set per batch view (each frame has its own posed avatar).

    Args:
        gaussians_of: view index b -> the `Gaussians` to draw from ``cameras[b]``.
        cameras: `Cameras` of the B views.
        background: RGB `[3]`.
        **render_kwargs: passed to `zoo.core.render.render` (e.g. ``backend``).

    Returns:
        ``rgb [B,3,H,W]``, ``alpha [B,1,H,W]``, ``depth [B,1,H,W]`` (expected depth, RGB+ED).
    """
    outs = [render(gaussians_of(b), cameras[b:b + 1], backgrounds=background.view(1, 3), render_mode="RGB+ED",
                   **render_kwargs) for b in range(len(cameras))]
    return {
        "rgb": torch.cat([o.rgb for o in outs]).permute(0, 3, 1, 2),
        "alpha": torch.cat([o.alpha for o in outs]).permute(0, 3, 1, 2),
        "depth": torch.cat([o.depth for o in outs]).permute(0, 3, 1, 2),
    }


class SyncedMeans:
    """Frame-weighted means of an epoch's metric values, one torchmetrics ``MeanMetric`` per key,
    reduced across DDP ranks when computed: the numbers equal a single process's on the same items.

    The interface of :class:`zoo.core.metrics.MetricAccumulator` (``update(values, n)``,
    ``compute()``, ``reset()``). Under DDP every rank must call `compute` (it is a collective); the
    ranks first agree on the keys, so a rank that scored no item still takes part. The states are
    float64, on the device of the values' module (NCCL reduces only GPU tensors).
    """

    def __init__(self) -> None:
        self.metrics: Dict[str, Any] = {}

    def _metric(self, key: str, device: Optional[torch.device] = None):
        metric = self.metrics.get(key)
        if metric is None:
            from torchmetrics import MeanMetric

            metric = MeanMetric(nan_strategy="disable").set_dtype(torch.float64)  # NaN stays NaN
            self.metrics[key] = metric.to(device) if device is not None else metric
        return metric

    def update(self, values: Mapping[str, Any], n: int = 1, device: Optional[torch.device] = None) -> None:
        """Add one batch: each value is the mean over its ``n`` frames (a float or a 0-d tensor)."""
        for key, value in values.items():
            metric = self._metric(key, device)
            value = torch.as_tensor(value.detach() if torch.is_tensor(value) else value, dtype=torch.float64)
            metric.update(value.reshape(()).to(metric.device), weight=float(n))

    def compute(self) -> Dict[str, float]:
        """The means over every rank's frames (NaN for a key no frame has)."""
        import warnings

        import torch.distributed as dist

        keys = set(self.metrics)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, sorted(keys))
            keys = set().union(*map(set, gathered))
        device = next((m.device for m in self.metrics.values()), None)
        out: Dict[str, float] = {}
        with warnings.catch_warnings():  # a rank without items: "compute before update" is expected
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            for key in sorted(keys):
                out[key] = float(self._metric(key, device).compute())
        return out

    def reset(self) -> None:
        """Forget every value (the keys too)."""
        self.metrics = {}
