"""The ``python -m zoo`` command line.

Commands are argparse subparsers, each installed by one ``add_<name>_command(subparsers)``
function listed in :data:`COMMANDS`; a command's handler takes the parsed arguments and returns
the exit status. User errors (bad option values, missing files, a folder that would be
overwritten) print one ``error: ...`` line on stderr and exit with status 2.

Commands:
    ``data synth``: render synthetic subjects and write them in a dataset layout::

        python -m zoo data synth --format zju_mocap --out data/synth_zju \\
            [--subjects N --frames N --res N --seed S --cameras C]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

__all__ = ["COMMANDS", "build_parser", "add_data_command", "main"]


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    """argparse type: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value}")
    return value


def _data_synth(args: argparse.Namespace) -> int:
    """Handler of ``data synth``: write the subjects, print where and a one-line summary."""
    from zoo.data.synthetic import FORMAT_DEFAULTS, body_models_dir, synthesize
    from zoo.data.synthetic_motion import num_heldout

    start = time.perf_counter()
    body_models = body_models_dir(args.body_models)
    paths = synthesize(
        args.format, args.out, subjects=args.subjects, frames=args.frames, res=args.res, seed=args.seed,
        cameras=args.cameras, style=args.style, model_type=args.model_type, body_models=body_models,
        heldout_fraction=args.heldout_fraction, supersample=args.supersample, overwrite=args.overwrite,
        progress=not args.quiet,
    )
    defaults = FORMAT_DEFAULTS[args.format]
    cams = defaults["cameras"] if args.cameras is None else args.cameras
    cam_text = f"{cams} cameras on a ring" if args.format == "zju_mocap" else (
        f"1 camera per frame on a {cams}-position circle" if args.format == "x_humans" else "1 camera")
    held = num_heldout(args.frames, args.heldout_fraction)
    print(f"wrote {len(paths)} {args.format} subject(s) to {Path(args.out)}: " + ", ".join(p.name for p in paths))
    print(f"{args.format}: {len(paths)} subject(s) x {args.frames} frames ({args.frames - held} train, {held} held-out "
          f"novel poses), {cam_text}, {args.res}x{args.res}, {args.model_type or defaults['model_type']}, "
          f"motion {args.style or defaults['style']}, seed {args.seed}, body models {body_models} "
          f"[{time.perf_counter() - start:.1f} s]")
    return 0


def add_data_command(subparsers: argparse._SubParsersAction) -> None:
    """Install ``data`` (dataset tools) and its ``synth`` subcommand."""
    from zoo.data.synthetic import FORMAT_DEFAULTS
    from zoo.data.synthetic_motion import STYLES

    data = subparsers.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True
    synth = data_sub.add_parser(
        "synth",
        help="render synthetic subjects and write them in a dataset layout",
        description="Render procedural subjects with a mesh rasterizer and write them in the on-disk layout of "
                    "a dataset; the zoo's parser for that format reads them back. The last --heldout-fraction "
                    "of the frames replay a held-out motion (the test_pose split).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    synth.add_argument("--format", required=True, choices=sorted(FORMAT_DEFAULTS), help="dataset layout to write")
    synth.add_argument("--out", required=True, help="dataset folder; each subject gets its own folder inside")
    synth.add_argument("--subjects", type=_positive, default=1, help="number of subjects (seeds seed, seed+1, ...)")
    synth.add_argument("--frames", type=_positive, default=100, help="frames per subject")
    synth.add_argument("--res", type=_positive, default=128, help="square image size in pixels")
    synth.add_argument("--seed", type=int, default=0, help="seed of the first subject (shape, clothing, motion)")
    synth.add_argument("--cameras", type=_positive, default=None,
                       help="zju_mocap: cameras on a ring (default 8); x_humans: positions on the camera circle "
                            "(default 100); people_snapshot, neuman: 1")
    synth.add_argument("--style", choices=STYLES, default=None,
                       help="motion (default: zju_mocap/x_humans mix, people_snapshot turn, neuman walk)")
    synth.add_argument("--model-type", choices=("smpl", "smplx"), default=None,
                       help="body model (default: x_humans smplx, others smpl)")
    synth.add_argument("--body-models", default=None,
                       help="folder with smpl/ and smplx/ model files (default: $ZOO_BODY_MODELS, else procedural "
                            "bodies cached in $ZOO_CACHE/body_models)")
    synth.add_argument("--heldout-fraction", type=_fraction, default=0.2,
                       help="share of frames, at the end, with held-out novel poses")
    synth.add_argument("--supersample", type=_positive, default=2, help="samples per pixel side (anti-aliasing)")
    synth.add_argument("--overwrite", action="store_true", help="replace existing subject folders")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_data_synth)


#: Installers of the top-level commands, in help order.
COMMANDS: List[Callable[[argparse._SubParsersAction], None]] = [add_data_command]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m zoo`` argument parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="python -m zoo", description="Avatar Zoo command line tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for install in COMMANDS:
        install(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on a user error (one line on stderr).
    """
    from zoo.data.writers import CaptureError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ValueError, FileExistsError, FileNotFoundError, CaptureError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
