"""3DGS-Avatar on the default synthetic subject (ZJU-MoCap layout, 128x128, monocular training camera,
7 novel-view cameras, held-out novel poses), trained on CPU, beside GaussianAvatar on the same
subject and the copy-the-nearest-training-frame baseline, in one run: seconds per training step and
the person-crop / full-image metrics of both test splits.

    .venv/bin/python bench/bench_gs_avatar.py [--steps 3000] [--ga-steps 2000] [--no-ga] [--out runs/bench_gs]

The same run (without GaussianAvatar) backs the slow test (tests/test_slow_gs_avatar.py).
Seconds per step are the fit time over the steps (validation every steps/8 included).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the sibling benches
sys.path.insert(0, str(ROOT))  # ahead of bench/: `import train` is the root's train.py, not bench/train.py


def run(steps: int, out: Path, data_root: Path | None = None, extra: list[str] | None = None) -> dict:
    """Train and test 3DGS-Avatar with the synthetic preset; returns metrics.json plus the wall time."""
    from bench_gaussian_avatar import run_preset

    return run_preset("gs_avatar_synthetic", steps, out, data_root, extra)


def _rows(name: str, result: dict) -> list[str]:
    m = result["metrics"]
    per_step = result["fit_seconds"] / max(result["steps"], 1)
    lines = [f"{name}: {result['steps']} steps, fit {result['fit_seconds']} s ({per_step:.3f} s/step), "
             f"total {result['wall_seconds']} s"]
    for split in ("test_view", "test_pose"):
        if split in m:
            v = m[split]
            lines.append(f"  {split:<10} crop PSNR {v['psnr_crop']:6.2f} SSIM {v['ssim_crop']:.4f} "
                         f"LPIPS {v['lpips_crop']:.4f} | full PSNR {v['psnr']:6.2f} SSIM {v['ssim']:.4f} "
                         f"LPIPS {v['lpips']:.4f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="3DGS-Avatar training steps")
    parser.add_argument("--ga-steps", type=int, default=2000, help="GaussianAvatar training steps (its preset)")
    parser.add_argument("--no-ga", action="store_true", help="skip the GaussianAvatar run")
    parser.add_argument("--out", default="runs/bench_gs_avatar", help="run folder (gs/ and ga/ inside)")
    parser.add_argument("--data-root", default=None, help="synthetic subject folder (default: configs/data/synthetic.yaml)")
    args = parser.parse_args()
    root = Path(args.out)
    data_root = Path(args.data_root) if args.data_root else None
    gs = run(args.steps, root / "gs", data_root)
    lines = _rows("3DGS-Avatar", gs)
    if not args.no_ga:
        from bench_gaussian_avatar import run as run_ga

        ga = run_ga(args.ga_steps, root / "ga", data_root)
        lines += _rows("GaussianAvatar", ga)
    base = gs.get("baseline", {}).get("metrics", {})
    for split in ("test_view", "test_pose"):
        if split in base:
            v = base[split]
            lines.append(f"nearest training frame {split:<10} crop PSNR {v['psnr_crop']:6.2f} SSIM {v['ssim_crop']:.4f} "
                         f"LPIPS {v['lpips_crop']:.4f} | full PSNR {v['psnr']:6.2f}")
    if "test_view" in base and "test_view" in gs["metrics"]:
        gain = gs["metrics"]["test_view"]["psnr_crop"] - base["test_view"]["psnr_crop"]
        lines.append(f"3DGS-Avatar - nearest frame, novel views, crop PSNR: {gain:+.2f} dB")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
