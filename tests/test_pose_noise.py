"""The pose-noise model (zoo.core.pose_noise): seeded, composed on the rotation group, with the
configured statistics (standard deviations, temporal correlation, levels), clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from smplx.lbs import batch_rodrigues

from zoo.core.pose_noise import (NOISE_LEVELS, PoseNoiseConfig, apply_pose_noise, compose_axis_angle,
                                 perturb_poses, quat_to_axis_angle, axis_angle_to_quat, relative_rotation,
                                 resolve_level, sample_pose_noise)


def _poses(T: int, J: int = 23, seed: int = 1, spread: float = 1.2):
    gen = torch.Generator().manual_seed(seed)
    return {
        "global_orient": (torch.rand(T, 3, generator=gen, dtype=torch.float64) - 0.5) * 2 * spread,
        "body_pose": (torch.rand(T, 3 * J, generator=gen, dtype=torch.float64) - 0.5) * 2 * spread,
        "transl": torch.randn(T, 3, generator=gen, dtype=torch.float64),
        "betas": torch.randn(T, 10, generator=gen, dtype=torch.float64),
    }


def test_same_seed_same_noise_other_seed_other_noise():
    p = _poses(20)
    a = perturb_poses(p, PoseNoiseConfig(seed=3))
    b = perturb_poses(p, PoseNoiseConfig(seed=3))
    c = perturb_poses(p, PoseNoiseConfig(seed=4))
    for key in ("global_orient", "body_pose", "transl"):
        assert torch.equal(a[key], b[key])
        assert not torch.allclose(a[key], c[key])
        assert not torch.allclose(a[key], p[key])
    assert torch.equal(a["betas"], p["betas"])  # untouched keys are copied
    zero = perturb_poses(p, PoseNoiseConfig(level="none", seed=3))
    for key in ("global_orient", "body_pose", "transl"):
        assert torch.allclose(zero[key], p[key], atol=1e-9)


def test_composition_is_left_multiplication_on_the_rotation_group():
    gen = torch.Generator().manual_seed(0)
    aa = (torch.rand(200, 3, generator=gen, dtype=torch.float64) - 0.5) * 5.0  # angles up to ~2.5 rad
    d = (torch.rand(200, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.0
    composed = compose_axis_angle(d, aa)
    expected = batch_rodrigues(d) @ batch_rodrigues(aa)  # smplx's Rodrigues as the oracle
    assert torch.allclose(batch_rodrigues(composed), expected, atol=1e-9)
    # the naive sum of axis-angle vectors is a different rotation at these angles
    assert not torch.allclose(batch_rodrigues(aa + d), expected, atol=1e-2)
    # the recovered perturbation is the one applied, exactly
    assert torch.allclose(relative_rotation(composed, aa), d, atol=1e-9)
    # quaternion round trip, including tiny angles
    small = torch.tensor([[1e-9, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, -0.2, 0.1]], dtype=torch.float64)
    assert torch.allclose(quat_to_axis_angle(axis_angle_to_quat(small)), small, atol=1e-12)


def test_configured_standard_deviations_and_correlation_are_measured():
    T, J = 6000, 23
    cfg = PoseNoiseConfig(level=1.0, joint_deg=5.0, orient_deg=3.0, transl_m=(0.02, 0.03, 0.05),
                          smooth_fraction=0.6, correlation_frames=5.0, seed=11)
    p = _poses(T, J)
    noisy = perturb_poses(p, cfg)
    d_joint = relative_rotation(noisy["body_pose"].view(T, J, 3), p["body_pose"].view(T, J, 3))
    d_orient = relative_rotation(noisy["global_orient"], p["global_orient"])
    d_transl = noisy["transl"] - p["transl"]
    # per-axis standard deviations (the drift makes samples correlated: 4% tolerance)
    assert d_joint.std().item() == pytest.approx(math.radians(5.0), rel=0.04)
    assert d_orient.std().item() == pytest.approx(math.radians(3.0), rel=0.04)
    assert d_transl.std(dim=0).tolist() == pytest.approx([0.02, 0.03, 0.05], rel=0.06)
    assert abs(d_joint.mean().item()) < 0.03 * math.radians(5.0)
    # RMS rotation angle = sqrt(3) * per-axis std
    rms = d_joint.norm(dim=-1).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(math.sqrt(3) * math.radians(5.0), rel=0.04)
    # lag-1 and lag-10 autocorrelation: rho * exp(-k / tau)
    x = d_joint.reshape(T, -1)
    x = (x - x.mean(0)) / x.std(0)
    lag1 = (x[1:] * x[:-1]).mean().item()
    lag10 = (x[10:] * x[:-10]).mean().item()
    assert lag1 == pytest.approx(0.6 * math.exp(-1 / 5.0), abs=0.03)
    assert lag10 == pytest.approx(0.6 * math.exp(-10 / 5.0), abs=0.03)


def test_levels_scale_every_std_and_names_alias_numbers():
    p = _poses(3000)
    base = sample_pose_noise(PoseNoiseConfig(level=1.0, seed=2), 3000, 23)
    high = sample_pose_noise(PoseNoiseConfig(level="high", seed=2), 3000, 23)
    assert torch.allclose(high.joints, NOISE_LEVELS["high"] * base.joints)
    assert torch.allclose(high.transl, NOISE_LEVELS["high"] * base.transl)
    assert resolve_level("hmr") == 1.0 and resolve_level(0.25) == 0.25
    # frame gaps: frames far apart are uncorrelated in the drift
    times = np.arange(3000) * 100  # gaps of 100 frames, tau = 8: no drift correlation left
    gapped = sample_pose_noise(PoseNoiseConfig(seed=2, smooth_fraction=1.0), 3000, 23, times=times)
    x = gapped.joints.reshape(3000, -1)
    assert abs((x[1:] * x[:-1]).mean().item() / x.var().item()) < 0.03
    # joint weights: zero-weight joints stay exact
    w = [0.0] * 5 + [1.0] * 18
    noisy = perturb_poses(p, PoseNoiseConfig(joint_weights=w, seed=2))
    assert torch.allclose(noisy["body_pose"][:, :15], p["body_pose"][:, :15], atol=1e-9)


def test_numpy_in_numpy_out_and_clear_errors():
    p = {k: v.numpy().astype(np.float32) for k, v in _poses(8).items()}
    out = perturb_poses(p, PoseNoiseConfig(seed=0))
    assert isinstance(out["body_pose"], np.ndarray) and out["body_pose"].dtype == np.float32
    assert out["body_pose"].shape == (8, 69)
    with pytest.raises(ValueError, match="noise level"):
        PoseNoiseConfig(level="loud")
    with pytest.raises(ValueError, match="joint_deg"):
        PoseNoiseConfig(joint_deg=-1.0)
    with pytest.raises(ValueError, match="smooth_fraction"):
        PoseNoiseConfig(smooth_fraction=1.5)
    with pytest.raises(ValueError, match="unknown pose noise option"):
        PoseNoiseConfig.from_mapping({"levle": 1.0})
    noise = sample_pose_noise(PoseNoiseConfig(), 8, 23)
    bad = dict(p, transl=p["transl"][:5])
    with pytest.raises(ValueError, match="'transl'"):
        apply_pose_noise(bad, noise)
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_pose_noise(PoseNoiseConfig(), 3, 23, times=[0, 2, 1])
