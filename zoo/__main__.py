"""The ``python -m zoo`` command line.

Commands are argparse subparsers, each installed by one ``add_<name>_command(subparsers)``
function listed in :data:`COMMANDS`; a command's handler takes the parsed arguments and returns
the exit status. User errors (bad option values, missing files, a folder that would be
overwritten) print one ``error: ...`` line on stderr and exit with status 2.

Commands:
    ``data synth``: render synthetic subjects and write them in a dataset layout; prints each subject
    folder as ``data.root=...`` and writes a ``body_models`` pointer beside the data, so training
    on it needs no environment variable::

        python -m zoo data synth --format zju_mocap --out data/synth_zju \\
            [--subjects N --frames N --res N --seed S --cameras C]
        python train.py data=zju_mocap data.root=<printed folder>

    ``animate``: render a trained avatar along a motion, or on a turntable (``zoo.animate``)::

        python -m zoo animate runs/<run>/checkpoints/last.ckpt --motion poses.npz --out walk.mp4
        python -m zoo animate CKPT --motion poses.npz --turntable 36 --frame 0 --out spin/

    ``checkpoints``: the pretrained-avatar registry (``zoo.checkpoints``)::

        python -m zoo checkpoints list | download NAME | verify NAME
        python -m zoo checkpoints pack runs/<run>/checkpoints/best.ckpt --name METHOD.DATASET_SUBJECT --licence L

    ``export``: the avatar's Gaussians as a standard 3DGS .ply (``zoo.export``)::

        python -m zoo export CKPT --out avatar.ply [--pose FILE] [--frame N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

__all__ = ["COMMANDS", "build_parser", "add_data_command", "add_checkpoints_command", "main"]


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
    from zoo.synthetic.subject import FORMAT_DEFAULTS, body_models_dir, synthesize
    from zoo.synthetic.motion import num_heldout

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
    # the body models travel with the data: a `body_models` pointer in the dataset folder and in each
    # subject folder, which train.py / eval.py find (zoo.data.body_files.find_pointer)
    from zoo.data.body_files import write_pointer

    for folder in [Path(args.out), *paths]:
        write_pointer(folder, body_models)
    print(f"wrote {len(paths)} {args.format} subject(s) to {Path(args.out)}: " + ", ".join(p.name for p in paths))
    print(f"{args.format}: {len(paths)} subject(s) x {args.frames} frames ({args.frames - held} train, {held} held-out "
          f"novel poses), {cam_text}, {args.res}x{args.res}, {args.model_type or defaults['model_type']}, "
          f"motion {args.style or defaults['style']}, seed {args.seed}, body models {body_models} "
          f"(pointer: {Path(args.out) / 'body_models'}) [{time.perf_counter() - start:.1f} s]")
    for path in paths:  # what to pass as data.root, one line per subject
        print(f"data.root={path.resolve()}")
    print(f"train: python train.py data={args.format} data.root={paths[0].resolve()}")
    return 0


def add_data_command(subparsers: argparse._SubParsersAction) -> None:
    """Install ``data`` (dataset tools) and its ``synth`` subcommand."""
    from zoo.synthetic.subject import FORMAT_DEFAULTS
    from zoo.synthetic.motion import STYLES

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


def _animate(args: argparse.Namespace) -> int:
    """Handler of ``animate``: a checkpoint's avatar along a motion (or on a turntable), streamed to
    a PNG folder or an mp4 (zoo.animate)."""
    import numpy as np

    from zoo.animate import animate
    from zoo.checkpoints import load as load_module
    from zoo.methods.base import load_pose_file

    if args.motion is None and not args.turntable:
        raise ValueError("animate needs --motion FILE (or --turntable N, which without a motion shows the rest pose)")
    if args.motion is not None:
        poses = load_pose_file(args.motion)  # a bad motion file fails here, before anything is written
        bp = poses["body_pose"]
        if getattr(bp, "ndim", 0) != 2 or bp.shape[0] == 0:
            raise ValueError(f"{args.motion}: 'body_pose' must be [T, 3J] with T >= 1, got {getattr(bp, 'shape', '?')}")
        for key, value in poses.items():
            arr = np.asarray(value)
            if arr.dtype.kind in "fiu" and not np.isfinite(arr).all():
                raise ValueError(f"{args.motion}: '{key}' holds non-finite values")
    model = load_module(args.ckpt, args.body_models)
    if args.motion is None:
        J3 = 3 * int(getattr(getattr(model, "body", None), "num_body_joints", 23))
        poses = {"body_pose": np.zeros((1, J3), np.float32), "global_orient": np.zeros((1, 3), np.float32),
                 "transl": np.zeros((1, 3), np.float32)}
    elif poses["body_pose"].shape[1] != 3 * int(getattr(getattr(model, "body", None), "num_body_joints", 23)):
        raise ValueError(f"{args.motion}: 'body_pose' has {poses['body_pose'].shape[1]} values per frame, the "
                         f"checkpoint's {model.method_name} body needs {3 * model.body.num_body_joints}")
    result = animate(model, poses, args.out, turntable=args.turntable, frame=args.frame, res=args.res,
                     distance=args.distance, fov=args.fov, background=tuple(args.background), fps=args.fps,
                     overwrite=args.overwrite, progress=not args.quiet)
    width, height = result["size"]
    print(f"rendered {result['frames']} frames ({result['mode']}, {width}x{height}) of {model.method_name} "
          f"to {result['out']}")
    return 0


def add_animate_command(subparsers: argparse._SubParsersAction) -> None:
    """Install ``animate``: a trained avatar along a motion or on a turntable, to PNGs or an mp4."""
    anim = subparsers.add_parser(
        "animate", help="render a trained avatar along a motion (or a turntable) to PNG frames or an mp4",
        description="Render a checkpoint's avatar (any method, through gaussians(body_params)) in the poses of a "
                    "motion file: an .npz with body_pose [T, 69|63] (+ global_orient, transl, optional SMPL-X keys) "
                    "or thetas [T, 72]. A camera in front of the body (its first frame's axes) follows the "
                    "translation; --turntable N instead orbits N views around the body's vertical axis in one "
                    "pose. Frames are rendered and written one at a time; the output appears only when complete.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    anim.add_argument("ckpt", help="checkpoint (.ckpt) written by train.py")
    anim.add_argument("--motion", "--pose", dest="motion", default=None,
                      help="motion / pose sequence .npz (--pose is an alias)")
    anim.add_argument("--out", required=True, help="a folder for frame00000.png ... or a .mp4 file (H.264)")
    anim.add_argument("--turntable", type=_positive, default=None, metavar="N",
                      help="N views around the body's vertical axis, in pose --frame of the motion (rest pose "
                           "without --motion)")
    anim.add_argument("--frame", type=int, default=0, help="the turntable's frame index in --motion")
    anim.add_argument("--res", type=_positive, default=None, help="square image size (default: training size; "
                                                                  "an mp4 rounds it up to even)")
    anim.add_argument("--fps", type=float, default=25.0, help="frames per second of an mp4")
    anim.add_argument("--distance", type=float, default=3.0, help="camera distance from the body (m)")
    anim.add_argument("--fov", type=float, default=45.0, help="vertical field of view in degrees")
    anim.add_argument("--background", type=float, nargs=3, default=(1.0, 1.0, 1.0), help="RGB in [0, 1]")
    anim.add_argument("--overwrite", action="store_true", help="replace an existing --out (once the new one is done)")
    anim.add_argument("--quiet", action="store_true", help="no progress bar")
    anim.add_argument("--body-models", default=None, help="body-model folder (default: the checkpoint's)")
    anim.set_defaults(handler=_animate)


def _checkpoints(args: argparse.Namespace) -> int:
    """Handler of ``checkpoints list | download | verify | pack``."""
    from zoo import checkpoints as ck

    if args.checkpoints_command == "list":
        entries = ck.load_registry(args.registry)
        print(f"{len(entries)} checkpoint(s) in {args.registry or ck.registry_path()} (cache {ck.cache_dir()}):")
        for line in ck.describe(entries):
            print(line)
        return 0
    if args.checkpoints_command == "download":
        path = ck.download(args.name, force=args.force, progress=not args.quiet, registry=args.registry)
        print(f"{args.name}: {path} (sha256 verified)")
        return 0
    if args.checkpoints_command == "verify":
        path = ck.verify(args.name, registry=args.registry)
        print(f"{args.name}: {path} matches its recorded size and sha256")
        return 0
    out, text = ck.pack_entry(args.ckpt, args.name, args.out_dir, args.licence, metrics_json=args.metrics,
                              train_command=args.train_command)
    print(f"# wrote {out}; append this entry to {args.registry or ck.registry_path()}:")
    print(text, end="")
    return 0


def add_checkpoints_command(subparsers: argparse._SubParsersAction) -> None:
    """Install ``checkpoints``: the pretrained-avatar registry (list, download, verify, pack)."""
    cmd = subparsers.add_parser("checkpoints", help="pretrained avatars: list, download, verify, pack",
                                description="The registry of pretrained avatars (checkpoints/registry.yaml).")
    cmd.add_argument("--registry", default=None, help="registry YAML (default: $ZOO_CHECKPOINT_REGISTRY or "
                                                      "checkpoints/registry.yaml)")
    sub = cmd.add_subparsers(dest="checkpoints_command", metavar="SUBCOMMAND")
    sub.required = True
    sub.add_parser("list", help="the registry's entries, their metrics and whether they are cached")
    dl = sub.add_parser("download", help="download into the cache, verify the sha256, then rename")
    dl.add_argument("name", help="registry name, e.g. gaussian_avatar.synthetic_s0")
    dl.add_argument("--force", action="store_true", help="download again even when cached")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    ver = sub.add_parser("verify", help="check the cached file's size and sha256 against the registry")
    ver.add_argument("name", help="registry name")
    pk = sub.add_parser("pack", help="strip a run's checkpoint to weights + config and print its registry entry",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pk.add_argument("ckpt", help="a train.py checkpoint (runs/<run>/checkpoints/best.ckpt)")
    pk.add_argument("--name", required=True, help="registry name <method>.<dataset>_<subject>")
    pk.add_argument("--out-dir", default="checkpoints", help="folder for <name>.ckpt")
    pk.add_argument("--licence", required=True, help="licence of the weights (e.g. Apache-2.0)")
    pk.add_argument("--metrics", default=None, help="the run's metrics.json (default: beside checkpoints/)")
    pk.add_argument("--train-command", default="", help="the command that trained it (recorded in the entry)")
    cmd.set_defaults(handler=_checkpoints)


def _export(args: argparse.Namespace) -> int:
    """Handler of ``export``: the avatar's Gaussians as a standard 3DGS PLY."""
    from zoo.export import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out, pose=args.pose, frame=args.frame, sh_degree=args.sh_degree,
                            body_models=args.body_models)
    what = (f"posed as frame {args.frame or 0} of {args.pose}" if args.pose else
            f"posed as training frame {args.frame}" if args.frame is not None else "canonical")
    print(f"wrote {out} ({what}, {out.stat().st_size / 1e6:.2f} MB)")
    return 0


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    """Install ``export``: write a checkpoint's Gaussians as a standard 3DGS .ply."""
    exp = subparsers.add_parser(
        "export", help="write a trained avatar's Gaussians as a standard 3DGS .ply",
        description="Write the avatar's Gaussians in the standard 3DGS PLY layout (x y z nx ny nz f_dc_* f_rest_* "
                    "opacity scale_* rot_*; opacity as a logit, scales as logs) that common viewers open: canonical "
                    "by default, posed with --pose FILE [--frame N] or --frame N (a training frame).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    exp.add_argument("ckpt", help="checkpoint (.ckpt) or a registry name")
    exp.add_argument("--out", required=True, help="the .ply to write")
    exp.add_argument("--pose", default=None, help="pose file (.npz); the avatar in its frame --frame (default 0)")
    exp.add_argument("--frame", type=int, default=None, help="frame index in --pose, or a training frame id")
    exp.add_argument("--sh-degree", type=int, default=3, choices=(0, 1, 2, 3), help="SH degree of the file")
    exp.add_argument("--body-models", default=None, help="body-model folder (default: the checkpoint's)")
    exp.set_defaults(handler=_export)


#: Installers of the top-level commands, in help order.
COMMANDS: List[Callable[[argparse._SubParsersAction], None]] = [add_data_command, add_animate_command,
                                                                 add_checkpoints_command, add_export_command]


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
