"""Benchmark of the rasterizer: the pure-PyTorch backend, and gsplat beside it when CUDA is present.

Scenes:

* ``random128``: 20k random Gaussians in front of one 128x128 camera (the CPU training target).
* ``garden``: gsplat's own test scene (``shared/reference/gsplat/test_garden.npz``: the
  Mip-NeRF 360 garden points cropped to [-2, 2]^3, colours / 255, random scales in
  [1e-4, 0.02], random unit quaternions and opacities, fixed seed), its 3 cameras at the real
  648x420 size, and downscaled by 2.

For every scene it prints the forward and forward+backward wall time of ``backend="torch"``
on CPU (median over repeats) and, with CUDA, of ``backend="gsplat"`` and the torch/gsplat
ratio in the same run. Run: ``python bench/bench_render.py [--repeats 5] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from zoo.core.render import rasterize

GARDEN = Path(__file__).resolve().parents[2] / "shared" / "reference" / "gsplat" / "test_garden.npz"


def random_scene(n: int = 20_000, size: int = 128, seed: int = 0) -> Dict[str, object]:
    """``n`` Gaussians in a 0.6-sigma blob 3 m in front of a ``size`` x ``size`` camera."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.6
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.05), generator=g))
    viewmats = torch.eye(4)[None].clone()
    viewmats[0, 2, 3] = 3.0
    Ks = torch.tensor([[[float(size), 0, size / 2], [0, float(size), size / 2], [0, 0, 1]]])
    return dict(
        means=means, quats=torch.randn(n, 4, generator=g), scales=scales,
        opacities=0.05 + 0.9 * torch.rand(n, generator=g), colors=torch.rand(n, 3, generator=g),
        viewmats=viewmats, Ks=Ks, width=size, height=size,
    )  # fmt: skip


def garden_scene(scale: float = 1.0, seed: int = 42) -> Optional[Dict[str, object]]:
    """gsplat's garden test scene (None when the file is absent)."""
    if not GARDEN.exists():
        return None
    data = np.load(GARDEN)
    means = torch.from_numpy(data["means3d"]).float()
    colors = torch.from_numpy(data["colors"]).float() / 255.0
    keep = (means.abs() <= 2).all(-1)
    means, colors = means[keep], colors[keep]
    n = means.shape[0]
    g = torch.Generator().manual_seed(seed)
    Ks = torch.from_numpy(data["Ks"]).float().clone()
    Ks[:, :2] *= scale
    return dict(
        means=means, quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        scales=1e-4 + (0.02 - 1e-4) * torch.rand(n, 3, generator=g),
        opacities=torch.rand(n, generator=g), colors=colors,
        viewmats=torch.from_numpy(data["viewmats"]).float(), Ks=Ks,
        width=int(round(int(data["width"]) * scale)), height=int(round(int(data["height"]) * scale)),
    )  # fmt: skip


def _timed(fn: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_scene(scene: Dict[str, object], backend: str, device: str, repeats: int) -> Dict[str, float]:
    """Median seconds of the forward pass and of forward + backward (RGB+ED, loss on both outputs)."""
    tensors = {k: v.to(device) for k, v in scene.items() if torch.is_tensor(v)}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    leaves = {k: tensors[k].clone().requires_grad_(k not in ("Ks",)) for k in tensors}

    def forward(grad: bool):
        with torch.set_grad_enabled(grad):
            img, alpha, meta = rasterize(
                **leaves, width=scene["width"], height=scene["height"], render_mode="RGB+ED", backend=backend
            )
        return img, alpha, meta

    def fwd_bwd():
        img, alpha, _ = forward(True)
        (img[..., :3].mean() + alpha.mean()).backward()
        for v in leaves.values():
            v.grad = None

    stats = {
        "forward": _timed(lambda: forward(False), repeats, sync),
        "forward+backward": _timed(fwd_bwd, repeats, sync),
    }
    _, _, meta = forward(False)
    stats["intersections"] = float(meta["flatten_ids"].numel())
    stats["visible"] = float((meta["radii"] > 0).all(-1).sum())
    stats["tile_size"] = float(meta.get("tile_size", 16))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--scenes", nargs="*", default=["random128", "garden_half", "garden"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    scenes = {
        "random128": lambda: random_scene(),
        "garden_half": lambda: garden_scene(0.5),
        "garden": lambda: garden_scene(1.0),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA: {cuda}")
    header = f"{'scene':<12} {'size':>9} {'gauss':>7} {'visible':>8} {'isects':>9} {'ts':>3} | "
    header += f"{'torch fwd':>9} {'torch f+b':>9}"
    if cuda:
        header += f" | {'gsplat fwd':>10} {'gsplat f+b':>10} | {'ratio fwd':>9} {'ratio f+b':>9}"
    print(header)
    for name in args.scenes:
        scene = scenes[name]()
        if scene is None:
            print(f"{name:<12} skipped: {GARDEN} not found")
            continue
        cams = scene["viewmats"].shape[0]
        size = f"{cams}x{scene['width']}x{scene['height']}"
        ours = bench_scene(scene, "torch", "cpu", args.repeats)
        line = (
            f"{name:<12} {size:>9} {scene['means'].shape[0]:>7} {int(ours['visible']):>8} "
            f"{int(ours['intersections']):>9} {int(ours['tile_size']):>3} | "
            f"{ours['forward']:>8.3f}s {ours['forward+backward']:>8.3f}s"
        )
        if cuda:
            ref = bench_scene(scene, "gsplat", "cuda", args.repeats)
            ratio_f = ours["forward"] / ref["forward"]
            ratio_fb = ours["forward+backward"] / ref["forward+backward"]
            line += f" | {ref['forward']:>9.4f}s {ref['forward+backward']:>9.4f}s"
            line += f" | {ratio_f:>8.0f}x {ratio_fb:>8.0f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
