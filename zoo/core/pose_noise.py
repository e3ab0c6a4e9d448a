"""Seeded, calibrated noise on body-pose sequences: a stand-in for a human-mesh-recovery estimate.

Every method's pose-robustness sweep and HumanSplatHMR's benchmark perturb exact poses with this
one model, so "noise level 1" means the same thing everywhere. It knows no dataset and no method:
it takes body parameters with a leading frame axis and returns perturbed copies.

What is perturbed (all in the standard SMPL / SMPL-X convention of the batch contract):

* **Per-joint rotations** ``body_pose [T, 3J]`` (axis-angle, radians): each joint's local rotation
  ``R_j`` becomes ``Exp(d_j) @ R_j`` with ``d_j [3]`` a rotation vector. The perturbation is
  *composed* on the rotation group, not added to the axis-angle vector (adding is only right near
  the identity; at a 90 degree elbow it would change the angle by a different amount than asked).
  Convention: ``d_j`` is expressed in the frame of the joint's parent (it is applied *after*
  (to the left of) ``R_j``), so ``log(R_noisy @ R_j^T) = d_j`` exactly whenever ``|d_j| < pi``;
  the configured statistics are therefore measured exactly by :func:`relative_rotation`.
* **Global orientation** ``global_orient [T, 3]``: ``Exp(d_0) @ R_0``, ``d_0`` in the world frame;
  as in SMPL the rotation is about the pelvis joint.
* **Translation** ``transl [T, 3]``: an additive world-frame offset in metres.

Temporal structure: every noise component (each axis of each joint, of the orientation and of the
translation) is ``sqrt(rho) * drift + sqrt(1 - rho) * jitter``, where ``jitter`` is white (a new
independent value every frame) and ``drift`` is a stationary unit-variance AR(1) process with
correlation ``exp(-|dt| / tau)`` between frames ``dt`` apart (``tau = correlation_frames``; frame
gaps are honoured when frame ids are given). Both parts have unit variance, so the per-component
standard deviation is exactly the configured one whatever ``rho = smooth_fraction`` is, and the
lag-``k`` autocorrelation is ``rho * exp(-k / tau)``. HMR estimates made frame by frame behave like
this: a slowly varying bias (the same ambiguity persists over neighbouring frames) plus per-frame
flicker.

Levels: one scalar ``level`` multiplies every standard deviation (0 = exact poses); the names of
:data:`NOISE_LEVELS` alias common values. Calibration of level 1 (``"hmr"``): per-joint rotation
std 5.5 degrees per axis (RMS rotation angle 5.5 * sqrt(3) = 9.5 degrees), global orientation 3
degrees per axis, translation 3 cm per axis, half of the variance in a drift with an 8-frame time
constant. Measured on the default synthetic subject's 48 training frames (24 SMPL kinematic joints,
root-aligned, mean over 5 seeds): level 1 gives MPJPE 79 mm, PA-MPJPE 54 mm and root-translation
error 48 mm; level 0.5 gives 39 / 27 / 24 mm and level 2 155 / 106 / 96 mm (errors grow linearly
with the level). Level 1 thus sits where HMR 2.0 sits on 3DPW (third-party numbers in METHODS.md
§4: MPJPE 75.6 mm, PA-MPJPE 56.3 mm).

Determinism: one ``torch.Generator`` seeded with ``seed`` draws every value on the CPU in float64,
in a fixed order, so the same seed, frame count and joint count give the same noise on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NOISE_LEVELS",
    "PoseNoiseConfig",
    "PoseNoise",
    "resolve_level",
    "temporal_noise",
    "sample_pose_noise",
    "apply_pose_noise",
    "perturb_poses",
    "axis_angle_to_quat",
    "quat_to_axis_angle",
    "compose_axis_angle",
    "relative_rotation",
]

#: Named noise levels (multipliers of the level-1 standard deviations).
NOISE_LEVELS: Dict[str, float] = {"none": 0.0, "low": 0.5, "hmr": 1.0, "high": 2.0}

ArrayLike = Union[Tensor, np.ndarray]


def resolve_level(level: Union[str, float, int]) -> float:
    """The numeric multiplier of a noise level given by name (:data:`NOISE_LEVELS`) or number.

    Raises:
        ValueError: for an unknown name or a negative / non-finite number.
    """
    if isinstance(level, str):
        if level not in NOISE_LEVELS:
            raise ValueError(f"noise level must be a number >= 0 or one of {sorted(NOISE_LEVELS)}, got {level!r}")
        return NOISE_LEVELS[level]
    value = float(level)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"noise level must be a finite number >= 0, got {level!r}")
    return value


@dataclass(frozen=True)
class PoseNoiseConfig:
    """Parameters of the pose-noise model (see the module docstring).

    Attributes:
        level: multiplier of every standard deviation below, a number >= 0 or a name of
            :data:`NOISE_LEVELS`.
        joint_deg: per-axis std of the per-joint rotation noise at level 1, degrees.
        orient_deg: per-axis std of the global-orientation noise at level 1, degrees.
        transl_m: per-axis std of the translation noise at level 1, metres: one value, or three
            (world x, y, z) for anisotropic noise.
        smooth_fraction: share ``rho`` in [0, 1] of the variance in the smooth drift (the rest is
            per-frame jitter).
        correlation_frames: time constant ``tau`` > 0 of the drift, in frames.
        joint_weights: optional per-joint multipliers (length J of ``body_pose``), e.g. 0 for joints
            that must stay exact.
        seed: seed of the generator.
    """

    level: Union[str, float] = 1.0
    joint_deg: float = 5.5
    orient_deg: float = 3.0
    transl_m: Union[float, Sequence[float]] = 0.03
    smooth_fraction: float = 0.5
    correlation_frames: float = 8.0
    joint_weights: Optional[Sequence[float]] = None
    seed: int = 0

    def __post_init__(self) -> None:
        resolve_level(self.level)
        for name in ("joint_deg", "orient_deg"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"pose noise {name} must be a finite number >= 0, got {getattr(self, name)!r}")
        self.transl_std()  # validates
        if not 0.0 <= float(self.smooth_fraction) <= 1.0:
            raise ValueError(f"pose noise smooth_fraction must lie in [0, 1], got {self.smooth_fraction!r}")
        if not float(self.correlation_frames) > 0:
            raise ValueError(f"pose noise correlation_frames must be > 0, got {self.correlation_frames!r}")
        if self.joint_weights is not None and any(float(w) < 0 for w in self.joint_weights):
            raise ValueError("pose noise joint_weights must be >= 0")

    @property
    def scale(self) -> float:
        """The numeric level."""
        return resolve_level(self.level)

    def transl_std(self) -> Tensor:
        """Per-axis translation std at level 1, ``[3]`` float64 metres."""
        t = torch.as_tensor(self.transl_m, dtype=torch.float64).reshape(-1)
        if t.numel() == 1:
            t = t.expand(3)
        if t.numel() != 3 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            raise ValueError(f"pose noise transl_m must be one or three finite values >= 0, got {self.transl_m!r}")
        return t.clone()

    @classmethod
    def from_mapping(cls, spec: Optional[Mapping[str, Any]]) -> "PoseNoiseConfig":
        """Build from a config mapping; an unknown key is an error naming it and the valid ones."""
        spec = dict(spec or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - names)
        if unknown:
            raise ValueError(f"unknown pose noise option(s) {unknown}; expected some of {sorted(names)}")
        if spec.get("transl_m") is not None and not isinstance(spec["transl_m"], (int, float)):
            spec["transl_m"] = tuple(float(v) for v in spec["transl_m"])
        if spec.get("joint_weights") is not None:
            spec["joint_weights"] = tuple(float(v) for v in spec["joint_weights"])
        return cls(**spec)


@dataclass
class PoseNoise:
    """One draw of the noise for a sequence of ``T`` frames and ``J`` body joints (float64).

    Attributes:
        joints: ``[T, J, 3]`` rotation vectors (radians), composed as ``Exp(d) @ R`` per joint.
        orient: ``[T, 3]`` rotation vectors (radians) of the global orientation, world frame.
        transl: ``[T, 3]`` translation offsets (metres), world frame.
    """

    joints: Tensor
    orient: Tensor
    transl: Tensor


# ---------------------------------------------------------------------------------------------
# Rotation helpers (torch, differentiable, any float dtype)


def axis_angle_to_quat(aa: Tensor) -> Tensor:
    """Unit ``wxyz`` quaternions of rotation vectors.

    Args:
        aa: ``[..., 3]`` rotation vectors (angle = norm, radians).

    Returns:
        ``[..., 4]`` quaternions ``(cos(a/2), sin(a/2) * axis)``.
    """
    angle = torch.linalg.vector_norm(aa, dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(a/2)/a, with its Taylor series below 1e-4 rad (exact to float64 precision there)
    small = angle < 1e-4
    safe = torch.where(small, torch.ones_like(angle), angle)
    k = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(half) / safe)
    return torch.cat([torch.cos(half), aa * k], dim=-1)


def quat_to_axis_angle(q: Tensor) -> Tensor:
    """Rotation vectors of ``wxyz`` quaternions (normalised first), angles in ``[0, pi]``.

    Args:
        q: ``[..., 4]`` quaternions.

    Returns:
        ``[..., 3]`` rotation vectors.
    """
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[..., :1] < 0, -q, q)  # w >= 0: the angle lies in [0, pi]
    w, v = q[..., :1], q[..., 1:]
    s = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, w)
    small = s < 1e-6
    safe = torch.where(small, torch.ones_like(s), s)
    # angle / sin(angle/2); near zero it tends to 2 / w (w ~ 1)
    k = torch.where(small, 2.0 / w.clamp_min(1e-12), angle / safe)
    return v * k


def _quat_mul(a: Tensor, b: Tensor) -> Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def compose_axis_angle(delta: Tensor, aa: Tensor) -> Tensor:
    """The rotation vector of ``Exp(delta) @ Exp(aa)`` (``aa`` first, then ``delta``).

    Args:
        delta: ``[..., 3]`` rotation vectors applied second (left factor).
        aa: ``[..., 3]`` rotation vectors applied first (broadcast against ``delta``).

    Returns:
        ``[..., 3]`` rotation vectors (angles in ``[0, pi]``).
    """
    return quat_to_axis_angle(_quat_mul(axis_angle_to_quat(delta), axis_angle_to_quat(aa)))


def relative_rotation(noisy: Tensor, clean: Tensor) -> Tensor:
    """``log(R_noisy @ R_clean^T)``: the perturbation that maps ``clean`` onto ``noisy``.

    Args:
        noisy: ``[..., 3]`` rotation vectors.
        clean: ``[..., 3]`` rotation vectors.

    Returns:
        ``[..., 3]`` rotation vectors (their norm is the rotation angle between the two).
    """
    qc = axis_angle_to_quat(clean)
    qc_inv = torch.cat([qc[..., :1], -qc[..., 1:]], dim=-1)
    return quat_to_axis_angle(_quat_mul(axis_angle_to_quat(noisy), qc_inv))


# ---------------------------------------------------------------------------------------------
# Sampling


def temporal_noise(num_frames: int, dims: Sequence[int], smooth_fraction: float, correlation_frames: float,
                   generator: torch.Generator, times: Optional[ArrayLike] = None) -> Tensor:
    """Unit-variance noise with temporal structure: ``sqrt(rho) * AR(1) drift + sqrt(1-rho) * jitter``.

    Args:
        num_frames: ``T``.
        dims: trailing shape of every frame's noise, e.g. ``(J, 3)``.
        smooth_fraction: ``rho`` in [0, 1].
        correlation_frames: drift time constant ``tau`` (frames).
        generator: the seeded generator (advanced by this call).
        times: optional ``[T]`` increasing frame times (e.g. frame ids); default ``0..T-1``.

    Returns:
        ``[T, *dims]`` float64 with per-component variance 1 and lag-``dt`` correlation
        ``rho * exp(-dt / tau)``.
    """
    T = int(num_frames)
    shape = (T, *[int(d) for d in dims])
    if T == 0:
        return torch.zeros(shape, dtype=torch.float64)
    if times is None:
        t = torch.arange(T, dtype=torch.float64)
    else:
        t = torch.as_tensor(np.asarray(times), dtype=torch.float64).reshape(-1)
        if t.numel() != T:
            raise ValueError(f"times must have {T} entries (one per frame), got {t.numel()}")
        if T > 1 and not bool((t[1:] > t[:-1]).all()):
            raise ValueError("times (frame ids) must be strictly increasing")
    # draw order is fixed: drift innovations, then jitter
    innov = torch.randn(shape, generator=generator, dtype=torch.float64)
    jitter = torch.randn(shape, generator=generator, dtype=torch.float64)
    drift = torch.empty(shape, dtype=torch.float64)
    drift[0] = innov[0]  # stationary start: unit variance
    tau = float(correlation_frames)
    for k in range(1, T):
        a = math.exp(-float(t[k] - t[k - 1]) / tau)
        drift[k] = a * drift[k - 1] + math.sqrt(max(1.0 - a * a, 0.0)) * innov[k]
    rho = float(smooth_fraction)
    return math.sqrt(rho) * drift + math.sqrt(1.0 - rho) * jitter


def sample_pose_noise(config: PoseNoiseConfig, num_frames: int, num_joints: int,
                      times: Optional[ArrayLike] = None) -> PoseNoise:
    """Draw the noise of a ``T``-frame sequence with ``J`` body joints.

    The generator is seeded with ``config.seed`` and draws, in this order, the joint rotations,
    the global orientation and the translation, so each part is reproducible on its own terms.

    Args:
        config: the noise model.
        num_frames: ``T``.
        num_joints: ``J`` (23 for SMPL's ``body_pose``, 21 for SMPL-X's).
        times: optional ``[T]`` increasing frame ids (drift correlation follows their gaps).

    Returns:
        :class:`PoseNoise` in float64.
    """
    if config.joint_weights is not None and len(config.joint_weights) != int(num_joints):
        raise ValueError(f"pose noise joint_weights has {len(config.joint_weights)} entries, expected {num_joints}")
    gen = torch.Generator().manual_seed(int(config.seed))
    rho, tau = float(config.smooth_fraction), float(config.correlation_frames)
    level = config.scale
    joints = temporal_noise(num_frames, (num_joints, 3), rho, tau, gen, times)
    orient = temporal_noise(num_frames, (3,), rho, tau, gen, times)
    transl = temporal_noise(num_frames, (3,), rho, tau, gen, times)
    joint_std = math.radians(float(config.joint_deg)) * level
    weights = (torch.ones(num_joints, dtype=torch.float64) if config.joint_weights is None
               else torch.as_tensor(list(config.joint_weights), dtype=torch.float64))
    joints = joints * (joint_std * weights).view(1, -1, 1)
    orient = orient * math.radians(float(config.orient_deg)) * level
    transl = transl * (config.transl_std() * level).view(1, 3)
    return PoseNoise(joints=joints, orient=orient, transl=transl)


def _as_tensor(value: ArrayLike, key: str) -> Tensor:
    try:
        return torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pose parameter '{key}' is not numeric ({exc})") from exc


def apply_pose_noise(params: Mapping[str, ArrayLike], noise: PoseNoise) -> Dict[str, ArrayLike]:
    """Perturb body parameters with a noise draw (see the module docstring for the convention).

    Args:
        params: ``global_orient [T, 3]``, ``body_pose [T, 3J]`` (or ``[T, J, 3]``), ``transl
            [T, 3]`` as tensors or numpy arrays; any key may be missing (it is then left out of
            the noise), other keys (``betas``, hands, ...) are copied unchanged.
        noise: from :func:`sample_pose_noise` with the same ``T`` and ``J``.

    Returns:
        A new dict; perturbed entries keep their input type, dtype, device and shape.

    Raises:
        ValueError: naming the key whose shape does not match the noise.
    """
    T, J = noise.joints.shape[:2]
    out: Dict[str, ArrayLike] = dict(params)
    for key, delta, width in (("body_pose", noise.joints, 3 * J), ("global_orient", noise.orient, 3)):
        if key not in params:
            continue
        value = params[key]
        x = _as_tensor(value, key)
        if tuple(x.shape) not in ((T, width), (T, width // 3, 3)):
            raise ValueError(f"pose parameter '{key}' has shape {tuple(x.shape)}; the noise expects [{T}, {width}]")
        aa = x.reshape(T, -1, 3).to(torch.float64)
        noisy = compose_axis_angle(delta.reshape(T, -1, 3).to(aa.device), aa).reshape(x.shape).to(x.dtype)
        out[key] = noisy.cpu().numpy() if isinstance(value, np.ndarray) else noisy.to(x.device)
    if "transl" in params:
        value = params["transl"]
        x = _as_tensor(value, "transl")
        if tuple(x.shape) != (T, 3):
            raise ValueError(f"pose parameter 'transl' has shape {tuple(x.shape)}; the noise expects [{T}, 3]")
        noisy = (x.to(torch.float64) + noise.transl.to(x.device)).to(x.dtype)
        out["transl"] = noisy.cpu().numpy() if isinstance(value, np.ndarray) else noisy
    return out


def perturb_poses(params: Mapping[str, ArrayLike], config: PoseNoiseConfig,
                  times: Optional[ArrayLike] = None) -> Dict[str, ArrayLike]:
    """Sample the noise for ``params`` (frames and joints from ``body_pose``) and apply it.

    Args:
        params: body parameters with a leading frame axis ``T`` (``body_pose`` required).
        config: the noise model.
        times: optional ``[T]`` frame ids.

    Returns:
        The perturbed parameters (see :func:`apply_pose_noise`).
    """
    if "body_pose" not in params:
        raise ValueError(f"perturb_poses needs 'body_pose' [T, 3J]; got keys {sorted(params)}")
    bp = _as_tensor(params["body_pose"], "body_pose")
    if bp.dim() not in (2, 3) or bp.reshape(bp.shape[0], -1).shape[1] % 3:
        raise ValueError(f"pose parameter 'body_pose' must be [T, 3J] or [T, J, 3], got {tuple(bp.shape)}")
    T = bp.shape[0]
    J = bp.reshape(T, -1).shape[1] // 3
    return apply_pose_noise(params, sample_pose_noise(config, T, J, times))
