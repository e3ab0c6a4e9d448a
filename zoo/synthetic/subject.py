"""Synthetic subjects: a procedural person rendered with a mesh rasterizer, written in any layout.

A subject (:func:`make_subject`) is the body model (the procedural bodies of
``zoo.synthetic.body``, or real SMPL / SMPL-X files when ``body_models`` / ``$ZOO_BODY_MODELS``
points at them) with seeded ``betas`` and a seeded clothing texture
(:mod:`zoo.synthetic.texture`). A motion (:func:`zoo.synthetic.motion.make_motion`)
poses it; mild pose-dependent cloth offsets push vertices along their normals.
:func:`render_capture` rasterizes the posed mesh into every camera with
``zoo.core.mesh.rasterize_triangles`` (z-buffer, per-pixel barycentric texture look-up, Lambert +
ambient shading under a fixed light, 2x supersampling with a box filter) — deliberately not the
Gaussian renderer, so no method scores by matching its own renderer — and returns a
``zoo.data.writers.Capture``. :func:`synthesize` writes subjects in the layouts of ZJU-MoCap,
PeopleSnapshot, NeuMan or X-Humans; the matching parser reads them back.

Conventions: world y up, floor at y = 0, metres; cameras OpenCV world-to-camera with the pixel
convention of ``zoo/data/schema.py`` (the centre of pixel (0, 0) is at (0, 0)); images uint8
with a black background, masks {0, 1} (supersampled coverage >= 1/2), depth = camera z on the
mask and 0 elsewhere. The last ``heldout_fraction`` of the frames replay a held-out motion and
are hinted as ``test_pose`` (the first of them also as ``val``). Deterministic in the seed.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from zoo.core import mesh
from zoo.synthetic import texture as tex
from zoo.synthetic.motion import Motion, make_motion

__all__ = [
    "FORMAT_DEFAULTS", "CameraRig", "Subject", "body_models_dir", "make_subject", "pose_subject", "ground_motion",
    "look_at", "intrinsics", "ring_rig", "orbit_rig", "tracking_rig", "default_rig", "render_capture", "synthesize",
    "read_manifest", "ensure_synthetic",
]

#: Per-format defaults: body model, motion style (see ``motion.STYLES``), camera count.
FORMAT_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "zju_mocap": {"model_type": "smpl", "style": "mix", "cameras": 8},
    "people_snapshot": {"model_type": "smpl", "style": "turn", "cameras": 1},
    "neuman": {"model_type": "smpl", "style": "walk", "cameras": 1},
    "x_humans": {"model_type": "smplx", "style": "mix", "cameras": 100},
}
_MANIFEST = "synthetic.json"
_VERSION = 1
_FOV_DEG = 45.0  # vertical field of view of every camera


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (restored afterwards).

    The rasterizer and texture work on many small tensors: splitting them over threads costs
    more than it gains, and on a busy machine it is many times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def body_models_dir(body_models: Optional[os.PathLike | str] = None) -> Path:
    """The folder holding ``smpl/`` and ``smplx/`` model files to build subjects from.

    Order: the argument, ``$ZOO_BODY_MODELS``, else procedural files written (once) with
    ``zoo.synthetic.body.write_body_models`` into ``$ZOO_CACHE/body_models`` (default
    ``~/.cache/avatar-zoo/body_models``).

    Args:
        body_models: Explicit folder, or None.

    Returns:
        The folder.
    """
    if body_models:
        return Path(body_models).expanduser()
    if os.environ.get("ZOO_BODY_MODELS"):
        return Path(os.environ["ZOO_BODY_MODELS"]).expanduser()
    from zoo.synthetic.body import write_body_models

    cache = Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "avatar-zoo").expanduser()
    return write_body_models(cache / "body_models")


# --------------------------------------------------------------------------------------------
# Subjects


@dataclass
class Subject:
    """A seeded synthetic person.

    Attributes:
        name: Subject name (the writers derive folder names from it).
        seed: Seed of shape and clothing.
        model_type: ``"smpl"`` or ``"smplx"``.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        betas: Shape coefficients. ``[10]`` float32
        body_models: Folder the body model was loaded from.
        appearance: Clothing, skin and hair.
        marks: Canonical landmarks of the shaped body.
        faces: Mesh faces. ``[F, 3]`` long
        features: Per-vertex texture features. ``[V, NUM_FEATURES]``
        cloth_coef: Per-vertex cloth offset weights. ``[V, NUM_CLOTH_TERMS]``
        side_left: Vertices on the body's left. ``[V]`` bool
        rest_pelvis: Pelvis joint of the shaped zero-pose body, computed as the parsers do. ``[3]``
        body: The ``zoo.core.body.BodyModel``.
    """

    name: str
    seed: int
    model_type: str
    gender: str
    betas: np.ndarray
    body_models: Path
    appearance: tex.Appearance
    marks: tex.Landmarks
    faces: Tensor
    features: Tensor
    cloth_coef: Tensor
    side_left: Tensor
    rest_pelvis: np.ndarray
    body: Any = field(repr=False)


def _body_call(body: Any, betas: np.ndarray, params: Dict[str, np.ndarray], chunk: int = 128) -> Tuple[Tensor, Tensor]:
    """Vertices ``[F, V, 3]`` and joints ``[F, J, 3]`` (float32) of per-frame parameters."""
    n = next(iter(params.values())).shape[0]
    verts, joints = [], []
    with torch.no_grad():
        for s in range(0, n, chunk):
            batch = {k: torch.as_tensor(np.asarray(v[s:s + chunk]), dtype=torch.float32) for k, v in params.items()}
            batch["betas"] = torch.as_tensor(betas, dtype=torch.float32)[None]
            out = body(batch)
            verts.append(out.vertices.float())
            joints.append(out.joints.float())
    return torch.cat(verts), torch.cat(joints)


def make_subject(seed: int, model_type: str = "smpl", gender: str = "neutral", *,
                 body_models: Optional[os.PathLike | str] = None, name: Optional[str] = None,
                 shape_scale: float = 1.0) -> Subject:
    """Build a synthetic person: seeded betas, clothing texture and cloth-offset maps.

    Args:
        seed: Subject seed (betas and clothing).
        model_type: ``"smpl"`` or ``"smplx"``.
        gender: Body model gender.
        body_models: Folder with ``smpl/`` and ``smplx/`` (see :func:`body_models_dir`).
        name: Subject name (default ``"synthetic_<seed>"``).
        shape_scale: Standard deviation of the drawn betas (clipped to +-2.5).

    Returns:
        A :class:`Subject`.
    """
    from zoo.core.body import BodyModel
    from zoo.data.body_files import rest_joints

    if model_type not in ("smpl", "smplx"):
        raise ValueError(f"model_type must be 'smpl' or 'smplx', got {model_type!r}")
    root = body_models_dir(body_models)
    rng = np.random.default_rng([int(seed), 15485863])
    betas = np.clip(rng.normal(0.0, shape_scale, 10), -2.5, 2.5).astype(np.float32)
    body = BodyModel(model_type=model_type, model_path=str(root), gender=gender, num_betas=10)
    rest_v, rest_j = _body_call(body, betas, {"global_orient": np.zeros((1, 3), dtype=np.float32)})
    weights = torch.as_tensor(body.lbs_weights, dtype=torch.float32)
    appearance = tex.make_appearance(seed)
    marks = tex.landmarks(rest_v[0], rest_j[0], weights, appearance)
    features = tex.surface_features(rest_v[0], weights, marks)
    return Subject(
        name=name or f"synthetic_{seed}", seed=int(seed), model_type=model_type, gender=gender, betas=betas,
        body_models=root, appearance=appearance, marks=marks, faces=torch.as_tensor(body.faces, dtype=torch.long),
        features=features, cloth_coef=tex.cloth_coefficients(features, appearance, marks),
        side_left=rest_v[0, :, 0] >= 0, rest_pelvis=np.asarray(rest_joints(root, betas, model_type, gender)[0]),
        body=body,
    )


def pose_subject(subject: Subject, motion: Motion) -> Tuple[Tensor, Tensor]:
    """Posed, clothed vertices and joints of every frame of a motion.

    Args:
        subject: The person.
        motion: Per-frame parameters (same model type).

    Returns:
        ``(vertices [F, V, 3], joints [F, J, 3])`` float32; cloth offsets applied along the posed
        vertex normals.
    """
    if motion.model_type != subject.model_type:
        raise ValueError(f"a {motion.model_type} motion cannot pose a {subject.model_type} subject")
    verts, joints = _body_call(subject.body, subject.betas, motion.params())
    normals = mesh.vertex_normals(verts, subject.faces)
    offsets = tex.cloth_offsets(subject.cloth_coef, subject.side_left, tex.cloth_drivers(joints))
    return verts + offsets[..., None] * normals, joints


def ground_motion(subject: Subject, motion: Motion) -> Motion:
    """Set the vertical translation so that the lowest vertex of every frame touches y = 0.

    Args:
        subject: The person (its shape sets the leg length).
        motion: A motion whose ``transl[:, 1]`` is ignored.

    Returns:
        The motion with ``transl[:, 1]`` replaced.
    """
    flat = motion.transl.copy()
    flat[:, 1] = 0.0
    verts, _ = _body_call(subject.body, subject.betas, {**motion.params(), "transl": flat})
    flat[:, 1] = -verts[..., 1].amin(dim=1).numpy()
    return motion.replace_transl(flat)


# --------------------------------------------------------------------------------------------
# Cameras


@dataclass
class CameraRig:
    """Cameras of every frame.

    Attributes:
        K: Intrinsics (schema pixel convention). ``[F, C, 3, 3]``
        w2c: World-to-camera, OpenCV. ``[F, C, 4, 4]``
        camera_ids: Physical camera label of each view. ``[F, C]`` int
        width: Image width.
        height: Image height.
    """

    K: np.ndarray
    w2c: np.ndarray
    camera_ids: np.ndarray
    width: int
    height: int

    def resized(self, width: int, height: int) -> "CameraRig":
        """The same rig at another image size (``fx' = fx sx``, ``cx' = (cx + 0.5) sx - 0.5``)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[..., 0, 0] *= sx
        K[..., 1, 1] *= sy
        K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
        K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
        return CameraRig(K, self.w2c.copy(), self.camera_ids.copy(), int(width), int(height))


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV world-to-camera ``[4, 4]`` of a camera at ``eye`` looking at ``target`` (``up`` is up)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, np.cross(forward, right), forward])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def intrinsics(width: int, height: int, fov_deg: float = _FOV_DEG) -> np.ndarray:
    """Pinhole ``K [3, 3]``: vertical field of view ``fov_deg``, principal point at the centre."""
    f = 0.5 * height / np.tan(np.deg2rad(fov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def _circle_rig(angles: np.ndarray, radius: float, heights: np.ndarray, targets: np.ndarray, ids: np.ndarray,
                res: int) -> CameraRig:
    """Cameras at ``angles [F, C]`` (0 = on +z) on a circle, at ``heights [F, C]``, looking at ``targets``."""
    eyes = np.stack([radius * np.sin(angles), heights, radius * np.cos(angles)], axis=-1)
    targets = np.broadcast_to(targets, eyes.shape)
    w2c = np.stack([[look_at(e, t) for e, t in zip(er, tr)] for er, tr in zip(eyes, targets)])
    K = np.broadcast_to(intrinsics(res, res), angles.shape + (3, 3)).copy()
    return CameraRig(K, w2c, np.asarray(ids, dtype=np.int64), res, res)


def ring_rig(frames: int, cameras: int, res: int, radius: float = 3.6, height: float = 1.25,
             target_y: float = 0.9) -> CameraRig:
    """``cameras`` static cameras evenly on a circle around the origin (camera 0 on +z), ``frames`` frames."""
    angles = np.broadcast_to(2.0 * np.pi * np.arange(cameras) / cameras, (frames, cameras))
    ids = np.broadcast_to(np.arange(cameras), (frames, cameras))
    return _circle_rig(angles, radius, np.full(angles.shape, height), np.array([0.0, target_y, 0.0]), ids, res)


def orbit_rig(frames: int, positions: int, res: int, radius: float = 3.6, height: float = 1.25,
              target_y: float = 0.9, offset: int = 25) -> CameraRig:
    """One camera per frame on a circle of ``positions`` places, frame i at (i + offset) mod positions
    (X-Humans' renderer); the camera id is the position."""
    pos = ((np.arange(frames) + offset) % positions)[:, None]
    return _circle_rig(2.0 * np.pi * pos / positions, radius, np.full(pos.shape, height),
                       np.array([0.0, target_y, 0.0]), pos, res)


def tracking_rig(targets: np.ndarray, res: int, radius: float = 3.4, height: float = 1.35,
                 sweep_deg: float = 40.0) -> CameraRig:
    """One camera sweeping ``sweep_deg`` of a circle over the sequence while looking at the
    per-frame ``targets [F, 3]`` (a handheld camera following a walker, NeuMan-like); camera id 0."""
    u = (np.arange(targets.shape[0]) / max(targets.shape[0] - 1, 1))[:, None]
    angles = np.deg2rad(sweep_deg * (u - 0.5))
    return _circle_rig(angles, radius, height + 0.08 * np.sin(2.0 * np.pi * u), targets[:, None], 0 * angles, res)


def _fits(rig: CameraRig, points: np.ndarray, margin: float) -> bool:
    """Whether every point ``[F, P, 3]`` of every frame projects inside every camera (with a margin)."""
    cam = np.einsum("fcij,fpj->fcpi", rig.w2c[..., :3, :3], points) + rig.w2c[:, :, None, :3, 3]
    if (cam[..., 2] <= 0.1).any():
        return False
    pix = np.einsum("fcij,fcpj->fcpi", rig.K, cam)
    u, v = pix[..., 0] / pix[..., 2], pix[..., 1] / pix[..., 2]
    mx, my = margin * rig.width, margin * rig.height
    inside = (u > mx) & (u < rig.width - 1 - mx) & (v > my) & (v < rig.height - 1 - my)
    return bool(inside.all())


def _fit(build: Callable[[float], CameraRig], points: np.ndarray, margin: float = 0.04) -> CameraRig:
    """The rig ``build(radius)`` of the smallest radius (to 2 cm, by bisection) that frames every point."""
    near, far = 1.0, 2.0
    while not _fits(build(far), points, margin):
        near, far = far, far * 1.5
        if far > 50.0:
            raise ValueError("cannot frame the subject: it moves too far from the origin for the cameras")
    while far - near > 0.02:
        mid = 0.5 * (near + far)
        near, far = (near, mid) if _fits(build(mid), points, margin) else (mid, far)
    return build(round(far, 2))


def default_rig(format: str, subject: Subject, motion: Motion, res: int, cameras: Optional[int] = None) -> CameraRig:
    """The per-format default cameras, as close as keeps the whole body in view in every frame.

    ZJU-MoCap: ``cameras`` static cameras on a ring (camera 0 in front). PeopleSnapshot: one
    static camera in front. NeuMan: one camera sweeping an arc and following the pelvis.
    X-Humans: one camera per frame on a circle of ``cameras`` positions, frame i at position
    (i + 25) mod ``cameras``. All look at the middle of the body's height range.

    Args:
        format: Dataset format.
        subject: The person.
        motion: Its grounded motion.
        res: Square image size.
        cameras: Camera count (None: :data:`FORMAT_DEFAULTS`).

    Returns:
        A :class:`CameraRig` of ``len(motion)`` frames.

    Raises:
        ValueError: unknown format, ``cameras < 1``, or more than one camera for a monocular format.
    """
    if format not in FORMAT_DEFAULTS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMAT_DEFAULTS)}")
    n = FORMAT_DEFAULTS[format]["cameras"] if cameras is None else int(cameras)
    if n < 1:
        raise ValueError(f"cameras must be >= 1, got {n}")
    if format in ("people_snapshot", "neuman") and n != 1:
        raise ValueError(f"{format} is monocular: cameras must be 1, got {n}")
    F = len(motion)
    verts, joints = pose_subject(subject, motion)
    points = verts[:, ::7].double().numpy()
    target_y = 0.5 * float(points[..., 1].max())
    height = target_y + 0.3
    if format == "x_humans":
        return _fit(lambda r: orbit_rig(F, n, res, radius=r, height=height, target_y=target_y), points)
    if format == "neuman":  # follow the smoothed pelvis at a fixed height
        pelvis = np.pad(joints[:, 0].double().numpy(), ((4, 4), (0, 0)), mode="edge")
        kernel = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
        smooth = np.stack([np.convolve(pelvis[:, k], kernel / kernel.sum(), mode="valid") for k in range(3)], 1)
        smooth[:, 1] = target_y
        return _fit(lambda r: tracking_rig(smooth, res, radius=r, height=height), points)
    return _fit(lambda r: ring_rig(F, n, res, radius=r, height=height, target_y=target_y), points)


# --------------------------------------------------------------------------------------------
# Rendering


def render_capture(subject: Subject, motion: Motion, cameras: CameraRig, res: Optional[int] = None, *,
                   supersample: int = 2, progress: bool = False, camera_frame: bool = False) -> Any:
    """Render every camera of every frame into a ``zoo.data.writers.Capture``.

    Args:
        subject: The person.
        motion: Its (grounded) motion, ``F`` frames; ``heldout`` frames are hinted ``test_pose``
            and the first of them ``val``.
        cameras: The rig (``F`` frames).
        res: Square output size; None keeps the rig's size.
        supersample: Samples per pixel side.
        progress: Show a tqdm bar over frames.
        camera_frame: Single static camera only: express the world in the camera's frame, so
            the capture's w2c is the identity (PeopleSnapshot's real extrinsic is).

    Returns:
        A ``Capture`` (frame ids 0..F-1, depth on every frame).
    """
    from tqdm import tqdm

    from zoo.data.writers import Capture, CaptureFrame

    if cameras.K.shape[0] != len(motion):
        raise ValueError(f"the rig has {cameras.K.shape[0]} frames but the motion {len(motion)}")
    if res is not None and (res != cameras.width or res != cameras.height):
        cameras = cameras.resized(res, res)
    w2c = cameras.w2c
    if camera_frame:
        if cameras.K.shape[1] != 1 or not np.allclose(w2c, w2c[:1, :1]):
            raise ValueError("camera_frame needs a single static camera")
        motion = motion.transformed(w2c[0, 0, :3, :3], w2c[0, 0, :3, 3], subject.rest_pelvis)
        w2c = np.broadcast_to(np.eye(4), w2c.shape).copy()
    frames = []
    with _one_thread():
        verts, _ = pose_subject(subject, motion)
        normals = mesh.vertex_normals(verts, subject.faces)
        for i in tqdm(range(len(motion)), desc=f"render {subject.name}", unit="frame", disable=not progress):
            out = tex.render_views(verts[i], normals[i], subject.faces, subject.features, subject.appearance,
                                   subject.marks, cameras.K[i], w2c[i], cameras.width, cameras.height, supersample)
            frames += [CaptureFrame(image=out["image"][c], mask=out["mask"][c], K=cameras.K[i, c].copy(),
                                    w2c=w2c[i, c].copy(), camera_id=int(cameras.camera_ids[i, c]), frame_id=i,
                                    depth=out["depth"][c]) for c in range(cameras.K.shape[1])]
    params = motion.params()
    held = [int(i) for i in np.nonzero(motion.heldout)[0]]
    splits = {"train": [int(i) for i in np.nonzero(~motion.heldout)[0]]}
    if held:
        splits.update(test_pose=held, val=held[:1])
    return Capture(subject=subject.name, model_type=subject.model_type, gender=subject.gender,
                   betas=subject.betas.copy(), rest_pelvis=subject.rest_pelvis.copy(),
                   poses={i: {k: np.asarray(v[i], dtype=np.float32) for k, v in params.items()}
                          for i in range(len(motion))},
                   frames=frames, splits=splits)


# --------------------------------------------------------------------------------------------
# Writing datasets


def _subject_naming(format: str, index: int, seed: int) -> Tuple[str, Optional[int], str]:
    """``(capture name, subject_index for the writer, gender)`` of the ``index``-th subject.

    Numbers and names avoid the real subjects (whose published splits the parsers would apply);
    PeopleSnapshot names carry the gender, as the parser reads it from the name.
    """
    gender = ("female", "male")[int(np.random.default_rng([seed, 31]).integers(2))]
    if format == "zju_mocap":
        return str(900 + index), 900 + index, "neutral"
    if format == "people_snapshot":
        return f"{gender}-{10 + index}-casual", None, gender
    if format == "neuman":
        return f"synthetic{index}", None, "neutral"
    return str(100 + index), 100 + index, gender


def synthesize(format: str, out: os.PathLike | str, subjects: int = 1, frames: int = 60, res: int = 128,
               seed: int = 0, cameras: Optional[int] = None, *, style: Optional[str] = None,
               model_type: Optional[str] = None, body_models: Optional[os.PathLike | str] = None,
               heldout_fraction: float = 0.2, supersample: int = 2, overwrite: bool = False,
               progress: bool = False) -> List[Path]:
    """Render and write synthetic subjects in a dataset layout.

    Args:
        format: ``"zju_mocap"``, ``"people_snapshot"``, ``"neuman"`` or ``"x_humans"``.
        out: Dataset folder; each subject gets its own folder inside (as the dataset arranges
            subjects: ``CoreView_900``, ``female-10-casual``, ``synthetic0``, ``00100``, ...), and
            ``synthetic.json`` records the settings and the body model folder used.
        subjects: Number of subjects (seeds ``seed .. seed + subjects - 1``).
        frames: Frames per subject; the last ``heldout_fraction`` are held-out novel poses.
        res: Square image size.
        seed: Seed of the first subject (shape, clothing, motion).
        cameras: Camera count (see :func:`default_rig`); None: the format's default.
        style: Motion style (default per format, see :data:`FORMAT_DEFAULTS`).
        model_type: Body model; default per format (X-Humans SMPL-X, others SMPL).
        body_models: Body model folder (see :func:`body_models_dir`).
        heldout_fraction: Share of held-out frames at the end.
        supersample: Samples per pixel side.
        overwrite: Replace existing subject folders.
        progress: Show progress bars.

    Returns:
        The subject folders, in subject order.
    """
    from zoo.data.writers import write

    if format not in FORMAT_DEFAULTS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMAT_DEFAULTS)}")
    if subjects < 1 or frames < 1 or res < 8:
        raise ValueError(f"need subjects >= 1, frames >= 1 and res >= 8; got {subjects}, {frames}, {res}")
    model_type = model_type or FORMAT_DEFAULTS[format]["model_type"]
    style = style or FORMAT_DEFAULTS[format]["style"]
    root, out = body_models_dir(body_models), Path(out)
    if (out / _MANIFEST).is_file():
        (out / _MANIFEST).unlink()  # rewritten below once every subject is in place
    paths = []
    for k in range(subjects):
        name, index, gender = _subject_naming(format, k, int(seed) + k)
        with _one_thread():
            subject = make_subject(int(seed) + k, model_type, gender, body_models=root, name=name)
            motion = ground_motion(subject, make_motion(frames, int(seed) + k, style, model_type, heldout_fraction))
            rig = default_rig(format, subject, motion, res, cameras)
            capture = render_capture(subject, motion, rig, supersample=supersample, progress=progress,
                                     camera_frame=format == "people_snapshot")
        paths.append(Path(write(format, capture, out, subject_index=index, overwrite=overwrite)))
    manifest = {"generator": __name__, "version": _VERSION, "format": format, "subjects": int(subjects),
                "frames": int(frames), "res": int(res), "seed": int(seed), "cameras": cameras, "style": style,
                "model_type": model_type, "heldout_fraction": heldout_fraction, "supersample": supersample,
                "body_models": str(root), "paths": [p.name for p in paths]}
    (out / f".{_MANIFEST}.tmp").write_text(json.dumps(manifest, indent=1))
    os.replace(out / f".{_MANIFEST}.tmp", out / _MANIFEST)
    return paths


def read_manifest(path: os.PathLike | str) -> Optional[Dict[str, Any]]:
    """What :func:`synthesize` wrote into a dataset folder (settings, body model folder, subjects).

    Args:
        path: The dataset folder or one of its subject folders.

    Returns:
        The ``synthetic.json`` dict, or None when neither ``path`` nor its parent holds one.
    """
    for folder in (Path(path), Path(path).parent):
        if (folder / _MANIFEST).is_file():
            try:
                found = json.loads((folder / _MANIFEST).read_text())
            except (OSError, ValueError):
                return None
            return found if isinstance(found, dict) and found.get("generator") == __name__ else None
    return None


def ensure_synthetic(root: os.PathLike | str, format: str = "zju_mocap", subjects: int = 1, frames: int = 60,
                     res: int = 128, seed: int = 0, cameras: Optional[int] = None, **options: Any) -> Path:
    """Write a synthetic dataset into ``root`` unless the same one (same settings and body model
    folder, per ``synthetic.json``) is already there; other settings rewrite it.

    Args:
        root: Dataset folder.
        format: See :func:`synthesize`, as are ``subjects``, ``frames``, ``res``, ``seed`` and
            ``cameras``.
        subjects: Number of subjects.
        frames: Frames per subject.
        res: Square image size.
        seed: Seed of the first subject.
        cameras: Camera count.
        **options: Further :func:`synthesize` keywords (style, model_type, body_models, ...).

    Returns:
        The first subject folder (what a parser reads).

    Raises:
        FileExistsError: ``root`` holds other files and no ``synthetic.json`` of this module.
    """
    root = Path(root)
    if format not in FORMAT_DEFAULTS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMAT_DEFAULTS)}")
    options["body_models"] = body_models_dir(options.get("body_models"))
    wanted = {"format": format, "subjects": int(subjects), "frames": int(frames), "res": int(res),
              "seed": int(seed), "cameras": cameras, "body_models": str(options["body_models"]),
              "style": options.get("style") or FORMAT_DEFAULTS[format]["style"],
              "model_type": options.get("model_type") or FORMAT_DEFAULTS[format]["model_type"],
              "heldout_fraction": options.get("heldout_fraction", 0.2), "supersample": options.get("supersample", 2)}
    found = read_manifest(root) if (root / _MANIFEST).is_file() else None
    if found is not None:
        paths = [root / p for p in found.get("paths", [])]
        if found.get("version") == _VERSION and all(found.get(k) == v for k, v in wanted.items()) and paths and \
                all(p.is_dir() for p in paths):
            return paths[0]
        return synthesize(format, root, subjects, frames, res, seed, cameras, overwrite=True, **options)[0]
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: exists, is not empty and has no {_MANIFEST}; refusing to write a synthetic "
                              "subject into it (choose an empty folder)")
    return synthesize(format, root, subjects, frames, res, seed, cameras, **options)[0]
