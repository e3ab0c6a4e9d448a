"""Procedural, smooth SMPL / SMPL-X motion for the synthetic subjects.

A motion is built from a few *primitives* (turning in an A-pose, walking, arm raises, squats,
and, held out for novel-pose testing, waving, lunges, leg raises, twists ...). Each primitive
gives, at every time ``t`` (seconds), a small set of anatomical *channels* in degrees
(arm elevation, elbow flexion, hip flexion, ...) plus a forward speed and a turn rate. A
program plays primitives one after another with smooth cross-fades of the channels, the heading
and the position are integrated on a fine time grid, and the channels are turned into SMPL
axis-angle joint rotations. Everything is closed-form and seeded, so the same seed gives the
same motion, bit for bit.

Conventions: the SMPL canonical frame (y up, the body faces +z, its left side is +x), angles in
degrees inside this module and radians (axis-angle) in the output, float32 parameters. The
vertical translation is left at 0: :func:`zoo.synthetic.subject.ground_motion` puts the feet on
the floor once the body shape is known.

The training part of a sequence and its held-out part (the last ``heldout_fraction`` of the
frames, the ``test_pose`` split) are played from different programs, so no held-out pose is a
training pose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "STYLES",
    "TRAIN_PROGRAMS",
    "HELDOUT_PROGRAMS",
    "Motion",
    "make_motion",
    "num_heldout",
    "NUM_BODY_JOINTS",
]

#: Body joints in ``body_pose`` (without the root): SMPL has 23, SMPL-X 21 (hands separate).
NUM_BODY_JOINTS = {"smpl": 23, "smplx": 21}

#: Motion styles accepted by :func:`make_motion`.
STYLES = ("turn", "walk", "arm_raise", "squat", "mix")

#: Primitives played (in a seeded order) for the training frames of each style.
TRAIN_PROGRAMS: Dict[str, tuple] = {
    "turn": ("apose_turn",),
    "walk": ("walk",),
    "arm_raise": ("arm_raise",),
    "squat": ("squat",),
    "mix": ("apose_turn", "walk", "arm_raise", "squat"),
}

#: Primitives played for the held-out (novel-pose) frames of each style.
HELDOUT_PROGRAMS: Dict[str, tuple] = {
    "turn": ("turn_novel",),
    "walk": ("walk_novel",),
    "arm_raise": ("wave", "twist"),
    "squat": ("lunge",),
    "mix": ("wave", "lunge", "leg_raise", "twist"),
}

_SEGMENT_SECONDS = 2.5  # duration of one primitive in a program
#: Added to every held-out frame (degrees): a carriage never used in training (bent elbows, turned
#: wrists, a wider stance, the head turned), so even the calm moments of a held-out primitive are
#: novel poses.
_HELDOUT_OFFSETS = {"l_elbow": 30.0, "r_elbow": 30.0, "l_wrist": 25.0, "r_wrist": 25.0, "l_hip_abd": 6.0,
                    "r_hip_abd": 6.0, "neck_yaw": 12.0}
_CROSSFADE_SECONDS = 0.9  # blend time between consecutive primitives
_GRID_HZ = 240.0  # integration grid for heading and position

# Channels (degrees unless noted; "+" is the direction of a positive value) and their rest values.
# turn_rate: heading change (deg/s); speed: forward speed (m/s); pelvis_pitch: + tilts forward;
# spine_bend: + forward (split over three spine joints); spine_side: + to the body's left;
# spine_twist: + chest to the left; neck_pitch: + looks down; neck_yaw: + looks left;
# elev: arm elevation (0 hanging, 90 T-pose, 170 overhead); swing: + arm forward; elbow, knee:
# flexion; hip_flex: + thigh forward; hip_abd: + leg outwards; ankle: + toes up; jaw: SMPL-X jaw
# opening; curl: SMPL-X finger curl in [0, 1]. Paired channels have an l_ and an r_ version.
_PAIRED = ("elev", "swing", "elbow", "wrist", "hip_flex", "hip_abd", "knee", "ankle")
_REST: Dict[str, float] = {
    "turn_rate": 0.0, "speed": 0.0, "pelvis_pitch": 0.0, "pelvis_roll": 0.0, "spine_bend": 0.0,
    "spine_side": 0.0, "spine_twist": 0.0, "neck_pitch": 0.0, "neck_yaw": 0.0, "jaw": 0.0, "curl": 0.2,
    **{f"{side}_{name}": value for name, value in zip(_PAIRED, (35.0, 0.0, 10.0, 0.0, 0.0, 3.0, 2.0, 0.0))
       for side in ("l", "r")},
}
_CHANNELS = tuple(_REST)

Channels = Dict[str, np.ndarray]


def _smooth01(x: np.ndarray) -> np.ndarray:
    """C1 smooth step from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(t: np.ndarray, period: float, phase: float = 0.0) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 oscillation with the given period (seconds)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * t / period + phase)


def _sin(t: np.ndarray, period: float, phase: float = 0.0) -> np.ndarray:
    return np.sin(2.0 * np.pi * t / period + phase)


def _pose(t: np.ndarray, base: Optional[Channels] = None, **values: Any) -> Channels:
    """Channels over times ``t``: ``base`` (default: the rest values) with ``values`` (scalars or
    ``[T]``) set; a paired name without its ``l_`` / ``r_`` prefix sets both sides."""
    out = dict(base) if base is not None else {name: np.full_like(t, value) for name, value in _REST.items()}
    for name, value in values.items():
        for key in ((f"l_{name}", f"r_{name}") if name in _PAIRED else (name,)):
            out[key] = np.broadcast_to(np.asarray(value, dtype=t.dtype), t.shape).copy()
    return out


# --------------------------------------------------------------------------------------------
# Primitives: (t [T] seconds from the primitive's start, seeded variation v) -> channels


def _apose_turn(t: np.ndarray, v: Dict[str, float]) -> Channels:
    return _pose(t, elev=v["apose"], elbow=8.0, hip_abd=6.0, turn_rate=v["turn_rate"],
                 spine_bend=2.0 * _sin(t, 3.1, v["phase"]), neck_pitch=4.0 * _sin(t, 4.3, v["phase"]))


def _turn_novel(t: np.ndarray, v: Dict[str, float]) -> Channels:
    lift = _bump(t, 2.2, v["phase"])
    return _pose(t, _apose_turn(t, v), l_elev=v["apose"] - 15.0 + 55.0 * lift, l_elbow=10.0 + 40.0 * lift,
                 r_elev=v["apose"] - 15.0 + 55.0 * _bump(t, 2.2, v["phase"] + 1.7), neck_yaw=25.0 * _sin(t, 2.9),
                 l_knee=5.0 + 25.0 * _bump(t, 1.9, v["phase"]), l_hip_flex=12.0 * _bump(t, 1.9, v["phase"]))


def _walk(t: np.ndarray, v: Dict[str, float], novel: bool = False) -> Channels:
    w = 2.0 * np.pi * t / v["gait_period"] + v["phase"]
    s = v["stride"] * np.sin(w)
    c = _pose(t, elev=12.0, spine_twist=4.0 * np.sin(w), pelvis_roll=2.5 * np.cos(w), speed=v["speed"],
              turn_rate=v["walk_turn"], l_hip_flex=s, r_hip_flex=-s, l_swing=-0.7 * s, r_swing=0.7 * s,
              l_ankle=8.0 * np.sin(w + 0.9), r_ankle=-8.0 * np.sin(w + 0.9),
              l_elbow=20.0 + 10.0 * np.sin(w), r_elbow=20.0 - 10.0 * np.sin(w),
              # The knee bends most while its leg swings forward (hip flexion rising).
              l_knee=6.0 + 45.0 * (0.5 + 0.5 * np.cos(w - 0.3)) ** 3,
              r_knee=6.0 + 45.0 * (0.5 - 0.5 * np.cos(w - 0.3)) ** 3)
    if novel:  # walking with one arm up and waving, the other carried in front, looking around
        c = _pose(t, c, r_elev=120.0 + 20.0 * _sin(t, 0.9), r_elbow=35.0 + 30.0 * _bump(t, 0.9), r_swing=20.0,
                  l_elev=45.0, l_swing=40.0 + 0.5 * s, l_elbow=70.0, neck_yaw=30.0 * _sin(t, 3.0))
    return c


def _arm_raise(t: np.ndarray, v: Dict[str, float]) -> Channels:
    up_l, up_r = _bump(t, 2.4, v["phase"]), _bump(t, 2.4, v["phase"] + v["arm_offset"])
    return _pose(t, l_elev=15.0 + 145.0 * up_l, r_elev=15.0 + 145.0 * up_r, l_elbow=5.0 + 15.0 * up_l,
                 r_elbow=5.0 + 15.0 * up_r, l_swing=10.0 * up_l, r_swing=10.0 * up_r,
                 neck_pitch=-5.0 * (up_l + up_r), turn_rate=0.5 * v["turn_rate"])


def _squat(t: np.ndarray, v: Dict[str, float]) -> Channels:
    d = v["squat_depth"] * _bump(t, 2.2, v["phase"])
    # Thigh 70 degrees forward, shin 40 degrees back, the foot kept flat by the ankle.
    return _pose(t, hip_flex=90.0 * d, knee=2.0 + 108.0 * d, ankle=40.0 * d, hip_abd=6.0 + 8.0 * d,
                 pelvis_pitch=20.0 * d, spine_bend=10.0 * d, neck_pitch=-25.0 * d, elev=20.0 + 20.0 * d,
                 swing=75.0 * d, elbow=10.0 + 20.0 * d, turn_rate=0.5 * v["turn_rate"])


def _wave(t: np.ndarray, v: Dict[str, float]) -> Channels:
    up = _smooth01(t / 0.6)
    return _pose(t, r_elev=35.0 + 105.0 * up, r_elbow=10.0 + up * (55.0 + 30.0 * _sin(t, 0.8)), r_swing=25.0 * up,
                 l_elev=20.0, l_swing=15.0, l_elbow=60.0, spine_side=6.0 * _sin(t, 1.6), neck_yaw=-20.0 * up,
                 l_knee=10.0 + 10.0 * _bump(t, 1.6), turn_rate=0.4 * v["turn_rate"])


def _lunge(t: np.ndarray, v: Dict[str, float]) -> Channels:
    d = _bump(t, 2.4, v["phase"])
    return _pose(t, l_hip_flex=70.0 * d, l_knee=2.0 + 85.0 * d, l_ankle=15.0 * d, r_hip_flex=-25.0 * d,
                 r_knee=2.0 + 45.0 * d, r_ankle=-15.0 * d, spine_bend=-5.0 * d, elev=35.0 + 45.0 * d,
                 elbow=10.0 + 70.0 * d, turn_rate=0.5 * v["turn_rate"])


def _leg_raise(t: np.ndarray, v: Dict[str, float]) -> Channels:
    left, right = _bump(t, 2.6, v["phase"]), _bump(t, 2.6, v["phase"] + np.pi)
    # The standing leg balances outwards a little.
    return _pose(t, l_hip_flex=65.0 * left, l_knee=2.0 + 50.0 * left, r_hip_flex=65.0 * right,
                 r_knee=2.0 + 50.0 * right, l_hip_abd=3.0 + 15.0 * right, r_hip_abd=3.0 + 15.0 * left,
                 elev=75.0, swing=20.0, spine_bend=-6.0 * (left + right), turn_rate=0.4 * v["turn_rate"])


def _twist(t: np.ndarray, v: Dict[str, float]) -> Channels:
    s = _sin(t, 2.5, v["phase"])
    return _pose(t, spine_twist=40.0 * s, neck_yaw=20.0 * s, pelvis_roll=3.0 * s, elev=85.0, swing=55.0,
                 elbow=95.0, knee=15.0, hip_flex=10.0, turn_rate=0.3 * v["turn_rate"])


_PRIMITIVES: Dict[str, Callable[[np.ndarray, Dict[str, float]], Channels]] = {
    "apose_turn": _apose_turn,
    "turn_novel": _turn_novel,
    "walk": _walk,
    "walk_novel": lambda t, v: _walk(t, v, novel=True),
    "arm_raise": _arm_raise,
    "squat": _squat,
    "wave": _wave,
    "lunge": _lunge,
    "leg_raise": _leg_raise,
    "twist": _twist,
}


# --------------------------------------------------------------------------------------------
# Programs: primitives in sequence with cross-fades, then heading/position integration


def _program_channels(names: Sequence[str], t: np.ndarray, v: Dict[str, float]) -> Channels:
    """Blend the primitives ``names`` (each ``_SEGMENT_SECONDS`` long) over times ``t``."""
    n = len(names)
    starts = np.arange(n) * _SEGMENT_SECONDS
    # Partition of unity: segment k fades in around its start and out around its end.
    weights = []
    for k in range(n):
        fade_in = np.ones_like(t) if k == 0 else _smooth01((t - starts[k]) / _CROSSFADE_SECONDS + 0.5)
        if k == n - 1:
            fade_out = np.ones_like(t)
        else:
            fade_out = 1.0 - _smooth01((t - starts[k + 1]) / _CROSSFADE_SECONDS + 0.5)
        weights.append(fade_in * fade_out)
    w = np.stack(weights)
    w /= w.sum(axis=0, keepdims=True)
    out = {name: np.zeros_like(t) for name in _CHANNELS}
    for k, name in enumerate(names):
        active = w[k] > 0
        if not active.any():
            continue
        local = t - starts[k]  # each primitive starts its own clock
        chans = _PRIMITIVES[name](local, v)
        for ch in _CHANNELS:
            out[ch] = out[ch] + w[k] * chans[ch]
    return out


def _integrate(chans: Channels, t_grid: np.ndarray, yaw0: float, pos0: np.ndarray) -> tuple:
    """Heading (degrees) and ground position [T, 2] (x, z) from turn rate and speed."""
    dt = np.diff(t_grid, prepend=t_grid[0])
    yaw = yaw0 + np.cumsum(chans["turn_rate"] * dt)
    rad = np.deg2rad(yaw)
    # Heading yaw rotates the body's forward axis +z about +y: forward = (sin, 0, cos).
    vx = chans["speed"] * np.sin(rad)
    vz = chans["speed"] * np.cos(rad)
    pos = np.stack([pos0[0] + np.cumsum(vx * dt), pos0[1] + np.cumsum(vz * dt)], axis=1)
    return yaw, pos


def _euler(axes: str, degrees: np.ndarray) -> Rotation:
    """Rotations about the fixed axes ``axes`` (lower case = extrinsic), applied in that order."""
    return Rotation.from_euler(axes, degrees, degrees=True)


def _channels_to_pose(c: Channels, yaw: np.ndarray, model_type: str) -> tuple:
    """SMPL axis-angle ``(global_orient [T,3], body_pose [T,3J])`` from channels (degrees)."""
    T = yaw.shape[0]
    J = NUM_BODY_JOINTS[model_type]
    body = np.zeros((T, J + 1, 3))
    zeros = np.zeros(T)

    def rot(x: np.ndarray, y: np.ndarray, z: np.ndarray, order: str = "xyz") -> np.ndarray:
        # Extrinsic (fixed-axis) rotations applied in `order`: R = R_last @ ... @ R_first.
        angles = {"x": x, "y": y, "z": z}
        return _euler(order, np.stack([angles[a] for a in order], axis=1)).as_rotvec()

    root = rot(c["pelvis_pitch"], yaw, c["pelvis_roll"], "zxy")  # roll, pitch, then heading
    for j in (3, 6, 9):  # spine1..3 share the bend, side bend and twist
        body[:, j] = rot(c["spine_bend"] / 3.0, c["spine_twist"] / 3.0, c["spine_side"] / 3.0, "xzy")
    for j in (12, 15):  # neck, head
        body[:, j] = rot(c["neck_pitch"] / 2.0, c["neck_yaw"] / 2.0, zeros, "xzy")
    # Shoulders: the arm first leaves the T-pose by elevation about z, then swings about x.
    # Left arm points along +x: Rz(e - 90) lowers it; Rx(-swing) moves a hanging arm forward.
    body[:, 16] = rot(-c["l_swing"], zeros, c["l_elev"] - 90.0, "zxy")
    body[:, 17] = rot(-c["r_swing"], zeros, 90.0 - c["r_elev"], "zxy")
    # Collars shrug a little once an arm rises above the horizontal.
    body[:, 13] = rot(zeros, zeros, 0.25 * np.maximum(c["l_elev"] - 90.0, 0.0))
    body[:, 14] = rot(zeros, zeros, -0.25 * np.maximum(c["r_elev"] - 90.0, 0.0))
    # Elbows flex about the forearm's local y axis (forward for the hanging arm).
    body[:, 18] = rot(zeros, -c["l_elbow"], zeros)
    body[:, 19] = rot(zeros, c["r_elbow"], zeros)
    body[:, 20] = rot(zeros, zeros, c["l_wrist"])
    body[:, 21] = rot(zeros, zeros, -c["r_wrist"])
    # Hips: abduction about z, flexion about x (a negative x rotation lifts the thigh forward).
    body[:, 1] = rot(-c["l_hip_flex"], zeros, c["l_hip_abd"], "xzy")
    body[:, 2] = rot(-c["r_hip_flex"], zeros, -c["r_hip_abd"], "xzy")
    body[:, 4] = rot(c["l_knee"], zeros, zeros)
    body[:, 5] = rot(c["r_knee"], zeros, zeros)
    body[:, 7] = rot(-c["l_ankle"], zeros, zeros)
    body[:, 8] = rot(-c["r_ankle"], zeros, zeros)
    return root, body[:, 1:].reshape(T, 3 * J)


def _smplx_extras(c: Channels, t: np.ndarray, v: Dict[str, float]) -> Dict[str, np.ndarray]:
    """Jaw, eyes, finger curl and expression for SMPL-X, from the channels and the seed."""
    T = t.shape[0]
    jaw = np.zeros((T, 3))
    jaw[:, 0] = np.deg2rad(c["jaw"] + 6.0 * _bump(t, 1.7, v["phase"]))
    eyes = np.zeros((T, 3))
    eyes[:, 1] = np.deg2rad(0.3 * c["neck_yaw"])
    # Hand joints (index, middle, pinky, ring: 3 each, then the thumb): curl towards the palm.
    curl = np.clip(c["curl"] + 0.25 * _bump(t, 2.3, v["phase"]), 0.0, 1.0)
    left = np.zeros((T, 15, 3))
    right = np.zeros((T, 15, 3))
    left[:, :12, 2] = -0.9 * curl[:, None]
    right[:, :12, 2] = 0.9 * curl[:, None]
    left[:, 12:, 1] = -0.4 * curl[:, None]
    right[:, 12:, 1] = 0.4 * curl[:, None]
    k = np.arange(10)
    expression = 0.6 * np.sin(2.0 * np.pi * t[:, None] / (1.5 + 0.37 * k) + v["phase"] + k)
    expression *= np.exp(-0.25 * k)  # the leading components move most
    return {
        "jaw_pose": jaw,
        "leye_pose": eyes.copy(),
        "reye_pose": eyes.copy(),
        "left_hand_pose": left.reshape(T, 45),
        "right_hand_pose": right.reshape(T, 45),
        "expression": expression,
    }


@dataclass
class Motion:
    """Per-frame body parameters of one sequence (no ``betas``: those belong to the subject).

    Attributes:
        model_type: ``"smpl"`` or ``"smplx"``.
        global_orient: Root rotation, axis-angle about the pelvis joint. ``[F, 3]`` float32
        body_pose: Body joint rotations, axis-angle. ``[F, 69]`` (SMPL) or ``[F, 63]`` (SMPL-X)
        transl: Translation added last (metres). ``[F, 3]`` float32
        heldout: True for the held-out novel-pose frames (``test_pose``). ``[F]`` bool
        times: Time of each frame within its program (seconds). ``[F]`` float32
        extra: SMPL-X ``jaw_pose, leye_pose, reye_pose [F, 3]``, ``left_hand_pose,
            right_hand_pose [F, 45]``, ``expression [F, 10]``; empty for SMPL.
    """

    model_type: str
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    heldout: np.ndarray
    times: np.ndarray
    extra: Dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.global_orient.shape[0])

    def params(self) -> Dict[str, np.ndarray]:
        """All body parameters except ``betas``, keyed as in the batch contract.

        Returns:
            ``global_orient [F, 3]``, ``body_pose [F, 3J]``, ``transl [F, 3]`` (+ SMPL-X keys).
        """
        out = {"global_orient": self.global_orient, "body_pose": self.body_pose, "transl": self.transl}
        out.update(self.extra)
        return out

    def transformed(self, rotation: np.ndarray, translation: np.ndarray, pelvis: np.ndarray) -> "Motion":
        """The same motion seen in another frame: every posed vertex ``v`` becomes ``R v + t``.

        Exact for SMPL / SMPL-X because ``global_orient`` rotates about the rest pelvis joint:
        ``global_orient' = R ∘ global_orient``, ``transl' = R (J0 + transl) + t − J0``.

        Args:
            rotation: ``R [3, 3]``.
            translation: ``t [3]``.
            pelvis: Rest pelvis joint ``J0 [3]`` of the shaped body.

        Returns:
            The transformed motion.
        """
        R = np.asarray(rotation, dtype=np.float64)
        J0 = np.asarray(pelvis, dtype=np.float64)
        orient = (Rotation.from_matrix(R) * Rotation.from_rotvec(self.global_orient.astype(np.float64))).as_rotvec()
        transl = (self.transl.astype(np.float64) + J0) @ R.T + np.asarray(translation, dtype=np.float64) - J0
        return Motion(self.model_type, orient.astype(np.float32), self.body_pose, transl.astype(np.float32),
                      self.heldout, self.times, dict(self.extra))

    def replace_transl(self, transl: np.ndarray) -> "Motion":
        """A copy of this motion with another translation ``[F, 3]``."""
        transl = np.asarray(transl, dtype=np.float32)
        if transl.shape != self.transl.shape:
            raise ValueError(f"transl must have shape {self.transl.shape}, got {transl.shape}")
        return Motion(self.model_type, self.global_orient, self.body_pose, transl, self.heldout, self.times,
                      dict(self.extra))


def num_heldout(frames: int, heldout_fraction: float) -> int:
    """How many of ``frames`` frames are held-out novel poses.

    ``floor(heldout_fraction * frames)``, at least 1 when there are 2+ frames and the fraction
    is positive, at most ``frames - 1``; the training part is then ``ceil((1 - f) * frames)``
    frames, the rule the parsers use for subjects without a published split.

    Args:
        frames: Total number of frames.
        heldout_fraction: Share of held-out frames in ``[0, 1)``.

    Returns:
        The number of held-out frames at the end of the sequence.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    if frames < 2 or heldout_fraction == 0.0:
        return 0
    n = int(np.floor(frames * heldout_fraction + 1e-9))
    return min(max(n, 1), frames - 1)


def _variation(rng: np.random.Generator, duration: float) -> Dict[str, float]:
    """Per-seed motion parameters (amplitudes, rates, phases)."""
    return {
        "apose": float(rng.uniform(28.0, 45.0)),
        "phase": float(rng.uniform(0.0, 2.0 * np.pi)),
        "arm_offset": float(rng.choice([0.0, np.pi]) + rng.uniform(-0.4, 0.4)),
        "turn_rate": float(rng.choice([-1.0, 1.0]) * 360.0 / duration * rng.uniform(0.9, 1.1)),
        "gait_period": float(rng.uniform(1.0, 1.25)),
        "stride": float(rng.uniform(20.0, 28.0)),
        "speed": float(rng.uniform(0.45, 0.6)),
        "walk_turn": float(rng.choice([-1.0, 1.0]) * rng.uniform(65.0, 80.0)),
        "squat_depth": float(rng.uniform(0.75, 1.0)),
        "yaw0": float(rng.uniform(-30.0, 30.0)),
    }


def _sample_program(names: Sequence[str], n: int, v: Dict[str, float], yaw0: float, pos0: np.ndarray,
                     model_type: str, heldout: bool) -> tuple:
    """Frames of one program: (global_orient, body_pose, xz [n, 2], extras, times, yaw_end, pos_end)."""
    duration = _SEGMENT_SECONDS * len(names)
    # Heading and position are integrated on a fine grid and interpolated; the joint channels are
    # evaluated exactly at the frame times.
    grid = np.linspace(0.0, duration, int(duration * _GRID_HZ) + 1)
    yaw, pos = _integrate(_program_channels(names, grid, v), grid, yaw0, pos0)
    times = np.arange(n) * (duration / max(n, 1))
    chans = _program_channels(names, times, v)
    if heldout:
        for ch, offset in _HELDOUT_OFFSETS.items():
            chans[ch] = chans[ch] + offset
    yaw_t = np.interp(times, grid, yaw)
    pos_t = np.stack([np.interp(times, grid, pos[:, 0]), np.interp(times, grid, pos[:, 1])], axis=1)
    orient, pose = _channels_to_pose(chans, yaw_t, model_type)
    extras = _smplx_extras(chans, times, v) if model_type == "smplx" else {}
    return orient, pose, pos_t, extras, times, float(yaw[-1]), pos[-1]


def make_motion(
    frames: int,
    seed: int = 0,
    style: str = "mix",
    model_type: str = "smpl",
    heldout_fraction: float = 0.2,
) -> Motion:
    """A smooth, seeded motion: training frames first, then held-out novel-pose frames.

    Args:
        frames: Total number of frames ``F`` (>= 1).
        seed: Seed of the per-subject variation (amplitudes, phases, primitive order).
        style: One of :data:`STYLES`: ``"turn"`` (A-pose, turning on the spot, like
            PeopleSnapshot), ``"walk"`` (walking on a wide circle), ``"arm_raise"``,
            ``"squat"`` or ``"mix"`` (all four in a seeded order).
        model_type: ``"smpl"`` (``body_pose [F, 69]``) or ``"smplx"`` (``[F, 63]`` + hands,
            jaw, eyes and expression).
        heldout_fraction: Share of frames, at the end, played from the held-out program
            (:data:`HELDOUT_PROGRAMS`); they form the ``test_pose`` split.

    Returns:
        A :class:`Motion`; ``transl[:, 1]`` is 0 (see ``zoo.synthetic.subject.ground_motion``)
        and the horizontal path's bounding box is centred on the origin.

    Raises:
        ValueError: For an unknown style or model type, or ``frames < 1``.
    """
    if style not in STYLES:
        raise ValueError(f"unknown motion style {style!r}; expected one of {STYLES}")
    if model_type not in NUM_BODY_JOINTS:
        raise ValueError(f"model_type must be 'smpl' or 'smplx', got {model_type!r}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    rng = np.random.default_rng([int(seed), 7919])
    n_test = num_heldout(frames, heldout_fraction)
    n_train = frames - n_test
    train_names = list(TRAIN_PROGRAMS[style])
    test_names = list(HELDOUT_PROGRAMS[style])
    rng.shuffle(train_names)
    rng.shuffle(test_names)
    v = _variation(rng, _SEGMENT_SECONDS * len(train_names))
    parts = []
    yaw, pos = v["yaw0"], np.zeros(2)
    for names, n, held in ((train_names, n_train, False), (test_names, n_test, True)):
        if n == 0:
            continue
        orient, pose, xz, extras, times, yaw, pos = _sample_program(names, n, v, yaw, pos, model_type, held)
        parts.append((orient, pose, xz, extras, times, n))
    orient = np.concatenate([p[0] for p in parts])
    pose = np.concatenate([p[1] for p in parts])
    xz = np.concatenate([p[2] for p in parts])
    times = np.concatenate([p[4] for p in parts])
    xz = xz - 0.5 * (xz.min(axis=0, keepdims=True) + xz.max(axis=0, keepdims=True))
    transl = np.stack([xz[:, 0], np.zeros(frames), xz[:, 1]], axis=1)
    extra = {}
    if model_type == "smplx":
        extra = {k: np.concatenate([p[3][k] for p in parts]).astype(np.float32) for k in parts[0][3]}
    heldout = np.zeros(frames, dtype=bool)
    heldout[n_train:] = True
    return Motion(
        model_type=model_type,
        global_orient=orient.astype(np.float32),
        body_pose=pose.astype(np.float32),
        transl=transl.astype(np.float32),
        heldout=heldout,
        times=times.astype(np.float32),
        extra=extra,
    )
