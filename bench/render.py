"""Renderer benchmark: the torch backend against the dense reference, an earlier tree and gsplat.

For every scene size (``--gaussians`` x ``--sizes``, default 2k / 20k / 200k Gaussians at 128 / 256 /
512 px, :func:`random_scene`) and pass (forward; forward + backward with a loss on colour and
alpha, ``render_mode="RGB+ED"``) it times each renderer (median of ``--repeats``, calls of the
renderers interleaved so that a busy machine slows them alike) and measures its peak memory, and
prints every number as a ratio to the torch backend taken in the same run:

* ``torch``: :func:`zoo.core.render.rasterize` with ``backend="torch"`` on CPU (the reference row);
* ``before``: the same function from another checkout (``--baseline-tree DIR``, or
  ``--baseline-commit REV``, which makes a temporary ``git worktree`` of that commit and removes it
  after), e.g. the commit before a renderer change;
* ``dense``: :func:`zoo.core.dense_raster.dense_render`, every pixel against every Gaussian (float32,
  CPU), only where it fits (``gaussians <= --dense-max-gaussians`` and ``gaussians * H * W <=
  --dense-max-pairs``; skipped with a note elsewhere);
* ``torch-cuda`` and ``gsplat``: with CUDA present, the torch backend on the GPU and
  ``gsplat.rasterization`` (skipped cleanly without CUDA or gsplat's kernels).

Peak memory: on CPU the growth of the process's peak resident set during one call (the kernel's
``VmHWM`` from /proc/self/status, reset through /proc/self/clear_refs after ``malloc_trim``; where
that reset is unavailable, the growth of ``ru_maxrss``, which only sees growth past the earlier
peak); on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.
The method used is printed.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/render.py [--quick] [--baseline-commit HEAD~1]
[--gaussians 20000] [--sizes 256] [--repeats 5] [--threads 1] [--garden]``.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zoo.core.dense_raster import dense_render  # noqa: E402
from zoo.core.render import rasterize  # noqa: E402

GARDEN = ROOT.parent / "shared" / "reference" / "gsplat" / "test_garden.npz"
PASSES = ("fwd", "fwd+bwd")
DIFF_KEYS = ("means", "quats", "scales", "opacities", "colors", "viewmats")


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


# ----------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------


def _status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Resets the kernel's peak-RSS mark of this process (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """Peak memory growth of the code inside the ``with`` block, in MiB (``.mib``); ``.method`` says how."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.mib = float("nan")
        self.method = ""

    def __enter__(self) -> "PeakMemory":
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated - allocated before"
        else:
            _malloc_trim()
            self.hwm = _reset_hwm()
            if self.hwm:
                self.base = _status_kib("VmRSS") or 0
                self.method = "peak RSS growth (VmHWM after clear_refs, malloc_trim before)"
            else:
                self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                self.method = "ru_maxrss growth (only growth past the earlier peak)"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.hwm:
            self.mib = ((_status_kib("VmHWM") or 0) - self.base) / 1024.0
        else:
            self.mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base) / 1024.0


# ----------------------------------------------------------------------------------------
# Renderers
# ----------------------------------------------------------------------------------------


def load_tree_rasterize(tree: Path) -> Callable[..., Any]:
    """``zoo.core.render.rasterize`` of another checkout, imported beside this tree's ``zoo``.

    The other tree's ``zoo`` package is imported under its own name with this tree's modules
    set aside, then this tree's modules are put back; the returned function keeps the other
    tree's module globals, so both versions run in one process.
    """
    tree = Path(tree).resolve()
    if not (tree / "zoo" / "core" / "render.py").is_file():
        raise SystemExit(f"bench/render.py: --baseline-tree {tree}: no zoo/core/render.py there")
    ours = {k: v for k, v in sys.modules.items() if k == "zoo" or k.startswith("zoo.")}
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, str(tree))
    try:
        module = importlib.import_module("zoo.core.render")
        if not Path(module.__file__).resolve().is_relative_to(tree):
            raise SystemExit(f"bench/render.py: imported {module.__file__}, not the tree {tree}")
        return module.rasterize
    finally:
        sys.path.remove(str(tree))
        for k in [k for k in sys.modules if k == "zoo" or k.startswith("zoo.")]:
            del sys.modules[k]
        sys.modules.update(ours)


def _dense(**kw: Any) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
    colors, alphas = dense_render(**kw)[:2]
    return colors, alphas, {}


class Renderer:
    """One renderer under test: a ``rasterize``-like function, its device and dtype."""

    def __init__(self, name: str, fn: Callable[..., Any], device: str, **options: Any) -> None:
        self.name, self.fn, self.device, self.options = name, fn, device, options

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def prepare(self, scene: Dict[str, Any]) -> Dict[str, Any]:
        """The scene's tensors on this renderer's device, differentiable ones as leaves."""
        out = {k: (v.to(self.device).detach().requires_grad_(k in DIFF_KEYS) if torch.is_tensor(v) else v)
               for k, v in scene.items()}  # fmt: skip
        return out

    def call(self, inputs: Dict[str, Any], backward: bool) -> None:
        with torch.set_grad_enabled(backward):
            img, alpha, _ = self.fn(**inputs, render_mode="RGB+ED", **self.options)
        if backward:
            (img[..., :3].mean() + alpha.mean()).backward()
            for k in DIFF_KEYS:
                inputs[k].grad = None
        del img, alpha
        self.sync()


def build_renderers(baseline: Optional[Path], with_dense: bool) -> Tuple[List[Renderer], List[str]]:
    """The renderers this run compares (torch first) and notes on the ones skipped."""
    renderers = [Renderer("torch", rasterize, "cpu", backend="torch")]
    notes: List[str] = []
    if baseline is not None:
        renderers.append(Renderer("before", load_tree_rasterize(baseline), "cpu", backend="torch"))
    if with_dense:
        renderers.append(Renderer("dense", _dense, "cpu"))
    if torch.cuda.is_available():
        renderers.append(Renderer("torch-cuda", rasterize, "cuda", backend="torch"))
        try:
            import gsplat  # noqa: F401

            renderers.append(Renderer("gsplat", rasterize, "cuda", backend="gsplat"))
        except Exception as err:  # gsplat missing or its kernels failed to build
            notes.append(f"gsplat skipped: {type(err).__name__}: {err}")
    else:
        notes.append("gsplat and torch-cuda skipped: CUDA is not available")
    return renderers, notes


# ----------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------


def dense_fits(n: int, width: int, height: int, max_gaussians: int, max_pairs: int) -> Optional[str]:
    """None when the dense reference runs at this size, else why it is skipped."""
    if n > max_gaussians:
        return f"dense skipped: {n} Gaussians > --dense-max-gaussians {max_gaussians} (one Python step per Gaussian)"
    if n * width * height > max_pairs:
        return (f"dense skipped: {n} x {width} x {height} pixel-Gaussian pairs > --dense-max-pairs {max_pairs} "
                f"(its backward keeps about ten image-sized tensors per Gaussian)")
    return None


def bench_scene(scene: Dict[str, Any], renderers: Sequence[Renderer], passes: Sequence[str], repeats: int,
                skip: Dict[str, str]) -> List[Dict[str, Any]]:
    """Rows ``{renderer, pass, seconds, mib, memory_method}`` (or ``skipped``) for one scene."""
    rows: List[Dict[str, Any]] = []
    active = [r for r in renderers if r.name not in skip]
    for p in passes:
        backward = p == "fwd+bwd"
        live = []
        for r in active:
            inputs = r.prepare(scene)
            try:
                with PeakMemory(r.device) as mem:  # also the warm-up call
                    r.call(inputs, backward)
            except (RuntimeError, MemoryError) as err:  # e.g. out of memory at a large size
                rows.append({"renderer": r.name, "pass": p, "skipped": f"failed: {str(err).splitlines()[0][:80]}"})
                continue
            live.append((r, inputs, mem))
        times: Dict[str, List[float]] = {r.name: [] for r, _, _ in live}
        for _ in range(repeats):  # interleaved: renderer A, B, C, A, B, C, ...
            for r, inputs, _ in live:
                r.sync()
                t0 = time.perf_counter()
                r.call(inputs, backward)
                times[r.name].append(time.perf_counter() - t0)
        for r, _, mem in live:
            rows.append({"renderer": r.name, "pass": p, "seconds": statistics.median(times[r.name]),
                         "mib": mem.mib, "memory_method": mem.method})  # fmt: skip
        rows.extend({"renderer": r.name, "pass": p, "skipped": skip[r.name]} for r in renderers if r.name in skip)
    return rows


def format_rows(label: str, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Table lines of one scene, every renderer as a ratio to the torch row of the same pass."""
    ref = {r["pass"]: r for r in rows if r["renderer"] == "torch" and "seconds" in r}
    lines = []
    for p in PASSES:
        for r in (r for r in rows if r["pass"] == p):
            if "skipped" in r:
                lines.append(f"| {label} | {p} | {r['renderer']} | - | - | - | - | {r['skipped']} |")
                continue
            base = ref.get(p)
            t_ratio = f"{r['seconds'] / base['seconds']:.2f}" if base else "-"
            m_ratio = f"{r['mib'] / base['mib']:.2f}" if base and base["mib"] > 0.5 else "-"
            lines.append(f"| {label} | {p} | {r['renderer']} | {r['seconds']:.4f} | {r['mib']:.1f} | "
                         f"{t_ratio} | {m_ratio} | |")
    return lines


TABLE_HEAD = ("| scene | pass | renderer | seconds (median) | peak MiB | time / torch | memory / torch | note |\n"
              "|---|---|---|---|---|---|---|---|")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, nargs="+", default=[2_000, 20_000, 200_000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="square image sizes (px)")
    parser.add_argument("--passes", nargs="+", default=list(PASSES), choices=PASSES)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per renderer (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--baseline-tree", default=None, help="another checkout whose torch backend to time beside")
    parser.add_argument("--baseline-commit", default=None, help="git revision to check out as --baseline-tree")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    parser.add_argument("--dense-max-gaussians", type=int, default=2_000)
    parser.add_argument("--dense-max-pairs", type=int, default=1 << 25, help="max Gaussians x pixels for dense")
    parser.add_argument("--garden", action="store_true", help="also gsplat's garden scene (3 cameras), full and half size")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny scenes, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.gaussians, args.sizes, args.repeats = [200, 2_000], [32], 1
        args.dense_max_gaussians = 200
    if args.repeats < 1 or min(args.gaussians) < 1 or min(args.sizes) < 1:
        parser.error("--repeats, --gaussians and --sizes must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)

    worktree: Optional[Path] = None
    baseline = Path(args.baseline_tree) if args.baseline_tree else None
    if args.baseline_commit:
        worktree = Path(tempfile.mkdtemp(prefix="render_base_")) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline_commit],
                       check=True, capture_output=True)  # fmt: skip
        baseline = worktree
    try:
        renderers, notes = build_renderers(baseline, not args.no_dense)
        threads = torch.get_num_threads()
        print(f"torch {torch.__version__}, {threads} CPU thread(s), CUDA: {torch.cuda.is_available()}"
              + (f", before = {args.baseline_commit or baseline}" if baseline else ""))
        for note in notes:
            print(note)
        scenes: List[Tuple[str, Dict[str, Any]]] = [
            (f"{n // 1000}k@{size}" if n >= 1000 else f"{n}@{size}", random_scene(n, size))
            for n in args.gaussians for size in args.sizes
        ]  # fmt: skip
        if args.garden:
            for scale, name in ((0.5, "garden_half"), (1.0, "garden")):
                scene = garden_scene(scale)
                if scene is None:
                    print(f"{name} skipped: {GARDEN} not found")
                else:
                    scenes.append((name, scene))
        print(TABLE_HEAD)
        method = ""
        for label, scene in scenes:
            n = scene["means"].shape[0]
            skip = {}
            reason = dense_fits(n, scene["width"], scene["height"] * scene["viewmats"].shape[0],
                                args.dense_max_gaussians, args.dense_max_pairs)
            if reason:
                skip["dense"] = reason
            rows = bench_scene(scene, renderers, args.passes, args.repeats, skip)
            method = method or next((r["memory_method"] for r in rows if "memory_method" in r), "")
            print("\n".join(format_rows(label, rows)), flush=True)
        print(f"peak memory: {method}; time / torch and memory / torch are ratios to the torch row of the same "
              f"scene and pass, taken in this run")
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], capture_output=True)
            shutil.rmtree(worktree.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
