"""Render a trained avatar along a motion, or on a turntable, streaming frames to disk.

``python -m zoo animate CKPT --motion FILE --out DIR_or.mp4 [--turntable N]`` (zoo.__main__) calls
:func:`animate`. Every method goes through the same path: ``model.gaussians(body)`` gives the posed
Gaussians of one frame (for view-dependent methods, gs_avatar, colours fitted as SH), which
:func:`zoo.core.render.render` splats from a camera; one frame is rendered, written and dropped
before the next, so memory does not grow with the sequence length.

Cameras: a pinhole of vertical field of view ``fov`` looks at the avatar's centre (the mean of its
Gaussians) from ``distance`` metres in front of the body. "In front" and "up" are the body's own
axes in the first frame (SMPL's +z and +y rotated by ``global_orient``), so a y-up synthetic world
and a z-up capture stage both give an upright, frontal view. Along a motion the camera keeps its
direction and follows the translation; a turntable (``turntable=N``) holds one pose and moves the
camera through ``N`` views evenly spaced around the body's vertical axis, the first one frontal.

Output: a folder of ``frame00000.png`` ... or an ``.mp4`` (H.264 through imageio-ffmpeg's writer,
frame sizes rounded up to even numbers as yuv420p needs). Either is written under a temporary name
and renamed when complete, so an error or an interrupt leaves no half-written output.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

__all__ = ["look_at", "intrinsics", "body_axes", "turntable_cameras", "motion_cameras", "FrameSink", "animate"]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera ``[4, 4]`` of a camera at ``eye`` looking at ``target``, ``up`` up
    (image y points along ``-up``)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    norm = np.linalg.norm(right)
    if norm < 1e-8:
        raise ValueError("look_at: the viewing direction is parallel to the up axis")
    right /= norm
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, np.cross(forward, right), forward])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """Pinhole ``K [3, 3]``: vertical field of view ``fov_deg``, principal point at the image centre, in
    the batch contract's convention (pixel (0, 0) centred at (0, 0), as ``Model.render`` takes it)."""
    if not 0.0 < float(fov_deg) < 180.0:
        raise ValueError(f"--fov must be in (0, 180) degrees, got {fov_deg}")
    f = 0.5 * height / math.tan(math.radians(float(fov_deg)) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def body_axes(global_orient: Any) -> tuple[np.ndarray, np.ndarray]:
    """(up, forward) unit vectors of a body in the world: SMPL's canonical +y and +z rotated by the
    axis-angle ``global_orient [3]`` (forward made orthogonal to up)."""
    aa = np.asarray(global_orient, dtype=np.float64).reshape(3)
    angle = float(np.linalg.norm(aa))
    R = np.eye(3)
    if angle > 1e-12:
        k = aa / angle
        Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        R = np.eye(3) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx
    up, forward = R[:, 1], R[:, 2]
    forward = forward - up * float(forward @ up)
    return up / np.linalg.norm(up), forward / np.linalg.norm(forward)


def turntable_cameras(center: np.ndarray, up: np.ndarray, forward: np.ndarray, distance: float,
                      views: int) -> np.ndarray:
    """``[views, 4, 4]`` world-to-camera matrices on a circle of radius ``distance`` around the axis
    ``up`` through ``center``; view k at angle ``2 pi k / views`` from ``forward`` (view 0 frontal)."""
    side = np.cross(up, forward)
    out = []
    for k in range(int(views)):
        theta = 2.0 * math.pi * k / int(views)
        eye = center + distance * (math.cos(theta) * forward + math.sin(theta) * side)
        out.append(look_at(eye, center, up))
    return np.stack(out)


def motion_cameras(center0: np.ndarray, transl: np.ndarray, up: np.ndarray, forward: np.ndarray,
                   distance: float) -> np.ndarray:
    """``[T, 4, 4]``: a camera ``distance`` in front of the body that keeps its direction and follows
    the translation (``center0`` moves with ``transl[t] - transl[0]``)."""
    transl = np.asarray(transl, dtype=np.float64).reshape(-1, 3)
    return np.stack([look_at(c + distance * forward, c, up) for c in center0 + (transl - transl[0])])


class FrameSink:
    """Frames written one at a time into a PNG folder or an mp4, under a temporary name until
    :meth:`close`; :meth:`abort` (or leaving a ``with`` block by an exception) removes everything.

    Args:
        out: a folder (``frame00000.png`` ...) or a path ending in ``.mp4``.
        fps: frames per second of an mp4.
        overwrite: replace an existing output (else FileExistsError before anything is written).
    """

    def __init__(self, out: os.PathLike | str, fps: float = 25.0, overwrite: bool = False):
        self.out = Path(out)
        self.video = self.out.suffix.lower() == ".mp4"
        if self.out.suffix and not self.video:
            raise ValueError(f"--out {self.out}: expected a folder or a .mp4 file, got a {self.out.suffix} file")
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"--out {self.out} exists; pass --overwrite to replace it")
        if self.video:
            import imageio_ffmpeg  # noqa: F401  (fail before rendering when it is missing)
        self.fps = float(fps)
        self.tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp{'.mp4' if self.video else ''}")
        self.count = 0
        self.size: Optional[tuple[int, int]] = None
        self._writer = None

    def __enter__(self) -> "FrameSink":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, image: np.ndarray) -> None:
        """Append one ``[H, W, 3]`` uint8 frame (every frame of one output has one size)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"frames must be [H, W, 3] uint8, got {image.dtype} {image.shape}")
        size = (int(image.shape[1]), int(image.shape[0]))
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise ValueError(f"frame {self.count} is {size}, the first was {self.size}")
        if self.video:
            if self._writer is None:
                import imageio_ffmpeg

                self.out.parent.mkdir(parents=True, exist_ok=True)
                self._writer = imageio_ffmpeg.write_frames(str(self.tmp), size, fps=self.fps, codec="libx264",
                                                           pix_fmt_out="yuv420p", quality=8, macro_block_size=2,
                                                           ffmpeg_log_level="error")
                self._writer.send(None)
            self._writer.send(np.ascontiguousarray(image))
        else:
            from PIL import Image

            self.tmp.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(self.tmp / f"frame{self.count:05d}.png", format="PNG")
        self.count += 1

    def close(self) -> Path:
        """Finish the file and rename it to ``out``; returns ``out``."""
        if self.count == 0:
            self.abort()
            raise ValueError("no frames were rendered")
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.out.exists():  # --overwrite: the old output goes only once the new one is complete
            if self.out.is_dir() and not self.out.is_symlink():
                shutil.rmtree(self.out)
            else:
                self.out.unlink()
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        """Drop what was written (the previous output, if any, stays)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # a half-written file: deleted below anyway
                self._writer.close()
            self._writer = None
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp.exists():
            self.tmp.unlink()


def _frame_body(poses: Mapping[str, np.ndarray], t: int, T: int) -> Dict[str, np.ndarray]:
    """Frame t's body parameters (per-frame arrays only; betas stay the model's)."""
    return {k: np.asarray(v)[t] for k, v in poses.items()
            if k != "betas" and np.asarray(v).ndim >= 1 and np.asarray(v).shape[0] == T}


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.detach().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)


@torch.no_grad()
def animate(model, poses: Mapping[str, np.ndarray], out: os.PathLike | str, turntable: Optional[int] = None,
            frame: int = 0, res: Optional[int] = None, distance: float = 3.0, fov: float = 45.0,
            background: Sequence[float] = (1.0, 1.0, 1.0), fps: float = 25.0, overwrite: bool = False,
            progress: bool = True) -> Dict[str, Any]:
    """Render ``model`` along ``poses`` (or, with ``turntable``, frame ``frame`` of them from N views).

    Args:
        model: a loaded method exposing ``gaussians(body) -> Gaussians``.
        poses: body parameters with a leading frame axis (``zoo.methods.base.load_pose_file``).
        out: a folder for PNG frames or a ``.mp4`` path.
        turntable: number of views around the body's vertical axis (None: follow the motion).
        frame: the turntable's pose (frame index in ``poses``).
        res: square image size (default: the training image size).
        distance, fov: camera distance (metres) and vertical field of view (degrees).
        background: RGB in [0, 1].
        fps: frames per second of an mp4.
        overwrite: replace an existing ``out``.
        progress: a tqdm progress bar.

    Returns:
        ``{"out", "frames", "size" (W, H), "mode"}``.

    Raises:
        ValueError: a method without ``gaussians``, a bad frame index or option. FileExistsError:
            ``out`` exists without ``overwrite``.
    """
    from tqdm.auto import tqdm

    from zoo.core.camera import Cameras
    from zoo.core.render import render

    if not callable(getattr(model, "gaussians", None)):
        raise ValueError(f"method {getattr(model, 'method_name', type(model).__name__)!r} has no gaussians(body_params)")
    T = int(np.asarray(poses["body_pose"]).shape[0])
    if T == 0:
        raise ValueError("the motion holds no frames")
    if turntable is not None and int(turntable) < 1:
        raise ValueError(f"--turntable must be >= 1 views, got {turntable}")
    if not 0 <= int(frame) < T:
        raise ValueError(f"--frame {frame} is out of range: the motion holds {T} frames")
    height = int(res or model.data_info.get("height", 512))
    width = int(res or model.data_info.get("width", 512))
    sink = FrameSink(out, fps=fps, overwrite=overwrite)
    if sink.video:  # yuv420p: even sizes
        height, width = height + height % 2, width + width % 2
    K = torch.as_tensor(intrinsics(width, height, fov), dtype=torch.float32)
    K[:2, 2] += 0.5  # the renderer centres pixel (0, 0) at (0.5, 0.5) (Cameras.from_batch)
    bg = torch.tensor([float(c) for c in background], dtype=torch.float32)
    extra = {"sh_degree": 3} if "sh_degree" in inspect.signature(model.gaussians).parameters else {}
    backend = str((getattr(model, "cfg", None) or {}).get("render_backend", "auto") or "auto")

    def splat(g, w2c: np.ndarray) -> np.ndarray:
        cams = Cameras(K=K.to(g.means), w2c=torch.as_tensor(w2c, dtype=torch.float32).to(g.means),
                       width=width, height=height)
        return _to_uint8(render(g, cams, backgrounds=bg.to(g.means), render_mode="RGB", backend=backend).rgb[0])

    first = int(frame) if turntable else 0
    body0 = _frame_body(poses, first, T)
    g0 = model.gaussians(body0, **extra)
    center0 = g0.means.detach().double().mean(0).cpu().numpy()
    up, forward = body_axes(body0.get("global_orient", np.zeros(3)))
    n = int(turntable) if turntable else T
    with sink, tqdm(total=n, desc=f"animate {getattr(model, 'method_name', 'avatar')}", unit="frame",
                    disable=not progress) as bar:
        if turntable:
            for w2c in turntable_cameras(center0, up, forward, float(distance), n):
                sink.write(splat(g0, w2c))
                bar.update(1)
        else:
            transl = np.asarray(poses.get("transl", np.zeros((T, 3))), dtype=np.float64).reshape(T, 3)
            cams = motion_cameras(center0, transl, up, forward, float(distance))
            for t in range(T):
                g = g0 if t == 0 else model.gaussians(_frame_body(poses, t, T), **extra)
                sink.write(splat(g, cams[t]))
                bar.update(1)
    return {"out": sink.out, "frames": sink.count, "size": (width, height),
            "mode": f"turntable of frame {first}, {n} views" if turntable else f"motion of {T} frames"}
