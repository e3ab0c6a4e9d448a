"""Bad-input matrix: hostile but realistic input across parsers (all four on-disk formats), configs,
body models, checkpoints and pose files.

Every case ends in one clear error naming the file or field and what was expected: exit code 2 with
one `error:` line and no traceback for the command-line cases, a specific exception class (a
ValueError / FileNotFoundError of ours, never a library's own) with a one-line message for the
API-level cases; and nothing is left behind (no run_dir, checkpoint or metrics).
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from zoo import runner
from zoo.data.schema import DatasetError

FORMATS = ("zju_mocap", "people_snapshot", "neuman", "x_humans")


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def subjects(tmp_path_factory, body_models_root):
    """One tiny synthetic subject per format (4 frames, 32x32), written once for the module."""
    from zoo.synthetic.subject import ensure_synthetic

    out = {}
    for fmt in FORMATS:
        root = tmp_path_factory.mktemp(f"bad_{fmt}")
        out[fmt] = ensure_synthetic(root, format=fmt, subjects=1, frames=4, res=32, seed=0,
                                    cameras=2 if fmt == "zju_mocap" else None, body_models=body_models_root)
    return out


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory, tiny_subject, body_models_root):
    """last.ckpt of a 3-step tiny GaussianAvatar run."""
    import train as train_script

    run = tmp_path_factory.mktemp("bad_ckpt_run")
    assert train_script.main(_train_args(tiny_subject, body_models_root, run / "run", "trainer.max_steps=3")) == 0
    return run / "run" / "checkpoints" / "last.ckpt"


def _train_args(root, body_models_root, run_dir, *extra):
    return ["experiment=gaussian_avatar_tiny", f"data.root={root}", "data.synthesize=null",
            f"body_models={body_models_root}", "logger=csv", f"run_dir={run_dir}", "test_after_fit=false",
            "trainer.enable_progress_bar=false", *extra]


def _one_line(msg: str, *needles: str) -> None:
    msg = msg.strip()
    assert msg and "\n" not in msg, f"expected one line, got: {msg!r}"
    assert "Traceback" not in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not named in: {msg}"


def _raises(exc: type, fn: Callable[[], object], *needles: str) -> None:
    with pytest.raises(exc) as info:
        fn()
    err = info.value
    # ours, not a library's: the message was written for the user (a ValueError or FileNotFoundError)
    assert isinstance(err, (ValueError, FileNotFoundError)), f"{type(err).__module__}.{type(err).__name__}: {err}"
    _one_line(str(err), *needles)


def _cli(capsys, main, argv, run_dir: Path | None, *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    _one_line(lines[0], *needles)
    if run_dir is not None:
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def _copy(subjects, fmt, tmp_path) -> Path:
    dst = tmp_path / fmt / subjects[fmt].name
    shutil.copytree(subjects[fmt], dst)
    return dst


def _setup(fmt, root, body_models_root):
    data_cfg = {"format": fmt, "root": str(root), "options": {}, "cache": False}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    return dm


def _truncate(path: Path, keep: float = 0.4) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(8, int(len(data) * keep))])


def _first(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert found, pattern
    return found[0]


# --------------------------------------------------------------------------------------------- parsers
def _zju_nan_pose(root):
    path = root / "new_params" / "1.npy"
    params = np.load(path, allow_pickle=True).item()
    params["poses"] = np.array(params["poses"], dtype=np.float64)
    params["poses"][0, 4] = np.nan
    np.save(path, params)
    return "body_pose"  # named with the frame's image and the field


def _zju_truncated_image(root):
    path = _first(root, "Camera_B1/*.jpg")
    _truncate(path)
    return path.name


def _zju_mask_size(root):
    from PIL import Image

    path = _first(root, "mask_cihp/Camera_B1/*.png")
    Image.new("L", (20, 12)).save(path)
    return path.name


def _zju_missing_annots(root):
    (root / "annots.npy").unlink()
    return "annots.npy"


def _zju_garbage_annots(root):
    (root / "annots.npy").write_bytes(b"not a numpy file")
    return "annots.npy"


def _zju_pose_shape(root):
    path = root / "new_params" / "0.npy"
    params = np.load(path, allow_pickle=True).item()
    params["poses"] = np.zeros((1, 10))
    np.save(path, params)
    return "0.npy"


def _ps_nan_thetas(root):
    path = root / "poses.npz"
    data = dict(np.load(path))
    key = "thetas" if "thetas" in data else sorted(data)[0]
    data[key] = np.array(data[key], dtype=np.float64)
    data[key].reshape(-1)[3] = np.nan
    np.savez(path, **data)
    return "poses.npz"


def _ps_missing_key(root):
    path = root / "poses.npz"
    data = dict(np.load(path))
    data.pop("betas")
    np.savez(path, **data)
    return "betas"


def _ps_camera_shape(root):
    path = root / "cameras.npz"
    data = dict(np.load(path))
    key = "intrinsic" if "intrinsic" in data else sorted(data)[0]
    data[key] = np.zeros((2, 2))
    np.savez(path, **data)
    return "cameras.npz"


def _ps_mask_size(root):
    path = _first(root, "masks/*.npy")
    np.save(path, np.ones((5, 7), np.uint8))
    return path.name


def _ps_truncated_image(root):
    path = _first(root, "images/*.png")
    _truncate(path)
    return path.name


def _neuman_cameras_txt(root):
    (root / "sparse" / "cameras.txt").write_text("# Camera list\n1 PINHOLE 32\n")
    return "cameras.txt"


def _neuman_truncated_smpl(root):
    _truncate(root / "smpl_output_optimized.pkl", 0.3)
    return "smpl_output_optimized.pkl"


def _neuman_missing_segmentation(root):
    path = _first(root, "segmentations/*.png")
    path.unlink()
    return path.name


def _neuman_truncated_image(root):
    path = _first(root, "images/*.png")
    _truncate(path)
    return path.name


def _xh_truncated_smplx(root):
    path = _first(root, "train/*/SMPLX/*.pkl")
    _truncate(path, 0.3)
    return path.name


def _xh_cameras_missing_key(root):
    path = _first(root, "train/*/render/cameras.npz")
    data = dict(np.load(path))
    data.pop(sorted(data)[0])
    np.savez(path, **data)
    return "cameras.npz"


def _xh_truncated_image(root):
    path = _first(root, "train/*/render/image/*.png")
    _truncate(path)
    return path.name


def _xh_bad_gender(root):
    (root / "gender.txt").write_text("robot\n")
    return "gender"


PARSER_CASES = [
    ("zju_mocap", _zju_nan_pose), ("zju_mocap", _zju_truncated_image), ("zju_mocap", _zju_mask_size),
    ("zju_mocap", _zju_missing_annots), ("zju_mocap", _zju_garbage_annots), ("zju_mocap", _zju_pose_shape),
    ("people_snapshot", _ps_nan_thetas), ("people_snapshot", _ps_missing_key),
    ("people_snapshot", _ps_camera_shape), ("people_snapshot", _ps_mask_size),
    ("people_snapshot", _ps_truncated_image),
    ("neuman", _neuman_cameras_txt), ("neuman", _neuman_truncated_smpl), ("neuman", _neuman_missing_segmentation),
    ("neuman", _neuman_truncated_image),
    ("x_humans", _xh_truncated_smplx), ("x_humans", _xh_cameras_missing_key), ("x_humans", _xh_truncated_image),
    ("x_humans", _xh_bad_gender),
]


@pytest.mark.parametrize("fmt,corrupt", PARSER_CASES,
                         ids=[c.values[1].__name__.lstrip("_") if hasattr(c, "values") else c[1].__name__.lstrip("_")
                              for c in PARSER_CASES])
def test_parser_refuses_bad_subject_before_the_first_step(fmt, corrupt, subjects, body_models_root, tmp_path):
    root = _copy(subjects, fmt, tmp_path)
    named = corrupt(root)
    _raises(DatasetError if fmt else ValueError, lambda: _setup(fmt, root, body_models_root), named)


# the issue's cases through train.py itself: exit 2, one line, nothing written
def test_issue_cases_exit_2_with_one_line(subjects, tiny_subject, body_models_root, tmp_path, capsys):
    import train as train_script

    for name, corrupt in (("nan", _zju_nan_pose), ("png", _zju_truncated_image), ("mask", _zju_mask_size)):
        root = tmp_path / name / tiny_subject.name
        shutil.copytree(tiny_subject, root)
        # the tiny subject has 3 cameras; _first picks Camera_B1 there too
        named = corrupt(root)
        run = tmp_path / f"run_{name}"
        _cli(capsys, train_script.main, _train_args(root, body_models_root, run), run, named)
    run = tmp_path / "run_override"
    _cli(capsys, train_script.main, _train_args(tiny_subject, body_models_root, run,
                                                 "data.options.frame_ranges={train:[0,3,1]"), run,
         "frame_ranges")
    assert not run.exists()


# --------------------------------------------------------------------------------------------- configs
CONFIG_CASES = [
    (["method=no_such_method"], "no_such_method"),
    (["data=no_such_data"], "no_such_data"),
    (["trainer=no_such_trainer"], "no_such_trainer"),
    (["trainer.max_steps=abc"], "trainer.max_steps"),
    (["seed=zero"], "seed"),
    (["no_such_key=1"], "no_such_key"),
    (["method.no_such_option=3"], "no_such_option"),
    (["justaword"], "justaword"),
]


@pytest.mark.parametrize("extra,named", CONFIG_CASES, ids=[(c.values if hasattr(c, "values") else c)[0][0] for c in CONFIG_CASES])
def test_config_errors_exit_2(extra, named, tiny_subject, body_models_root, tmp_path, capsys):
    import train as train_script

    run = tmp_path / "run"
    _cli(capsys, train_script.main, _train_args(tiny_subject, body_models_root, run, *extra), run, named)
    assert not run.exists()


# --------------------------------------------------------------------------------------------- body models
def _body(path, model_type="smpl"):
    from zoo.core.body import BodyModel

    return BodyModel(model_type, model_path=str(path), gender="neutral")


def test_body_model_missing_folder(tmp_path):
    _raises(FileNotFoundError, lambda: _body(tmp_path / "nowhere"), "nowhere")


def test_body_model_corrupt_pkl(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(b"\x80\x04garbage")
    _raises(ValueError, lambda: _body(path), "SMPL_NEUTRAL.pkl")


def test_body_model_corrupt_npz(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.npz"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    _raises(ValueError, lambda: _body(path), "SMPL_NEUTRAL.npz")


def test_body_model_wrong_vertex_count(body_models_root, tmp_path):
    src = dict(np.load(body_models_root / "smpl" / "SMPL_NEUTRAL.npz", allow_pickle=True))
    src["v_template"] = np.asarray(src["v_template"])[:-5]
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, **src)
    _raises(ValueError, lambda: _body(path), "SMPL_NEUTRAL.npz", "v_template")


def test_body_model_missing_array(body_models_root, tmp_path):
    src = dict(np.load(body_models_root / "smpl" / "SMPL_NEUTRAL.npz", allow_pickle=True))
    src.pop("J_regressor")
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, **src)
    _raises(ValueError, lambda: _body(path), "SMPL_NEUTRAL.npz", "J_regressor")


def test_train_with_missing_body_models_exits_2(tiny_subject, tmp_path, capsys):
    import train as train_script

    run = tmp_path / "run"
    _cli(capsys, train_script.main, _train_args(tiny_subject, tmp_path / "no_bodies", run), run, "no_bodies")


# --------------------------------------------------------------------------------------------- checkpoints
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _ckpt_variant(trained_ckpt, tmp_path, kind):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes(trained_ckpt.read_bytes()[:2000])
        return path, "truncated.ckpt"
    if kind == "random_bytes":
        path.write_bytes(b"\x00\x01 not a zip file at all" * 10)
        return path, "random_bytes.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty.ckpt"
    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    if kind == "planted":
        ckpt["extra"] = _Payload(tmp_path / "pwned")
        named = "refusing to load"
    elif kind == "not_a_checkpoint":
        ckpt = [torch.zeros(3)]
        named = "not an Avatar Zoo checkpoint"
    elif kind == "no_method_cfg":
        ckpt["hyper_parameters"] = {}
        named = "no method config"
    elif kind == "unknown_method":
        ckpt["hyper_parameters"]["cfg"]["name"] = "no_such_method"
        named = "no_such_method"
    elif kind == "mismatched_weights":
        sd = ckpt["state_dict"]
        # a parameter cut to one row (a leading size of 1 would make the slice a no-op)
        key = next(k for k, v in sd.items() if v.ndim >= 1 and v.shape[0] > 1 and v.is_floating_point())
        sd[key] = sd[key][:1]
        named = "weights do not fit"
    else:
        raise AssertionError(kind)
    torch.save(ckpt, path)
    return path, named


CKPT_KINDS = ["planted", "truncated", "random_bytes", "empty", "not_a_checkpoint", "no_method_cfg",
              "unknown_method",
              "mismatched_weights"]


@pytest.mark.parametrize("kind", CKPT_KINDS)
def test_bad_checkpoint_is_refused_by_load(kind, trained_ckpt, body_models_root, tmp_path):
    path, named = _ckpt_variant(trained_ckpt, tmp_path, kind)
    _raises(ValueError, lambda: runner.load_module(path, str(body_models_root)), path.name, named)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("kind", ["planted", "truncated", "unknown_method"])
def test_bad_checkpoint_is_refused_by_eval(kind, trained_ckpt, tmp_path, capsys):
    import eval as eval_script

    path, named = _ckpt_variant(trained_ckpt, tmp_path, kind)
    out = tmp_path / "eval"
    _cli(capsys, eval_script.main, [f"ckpt_path={path}", f"out_dir={out}"], None, path.name)
    assert not (out / "metrics.json").exists()
    assert not (tmp_path / "pwned").exists()


def test_missing_checkpoint(tmp_path):
    _raises(FileNotFoundError, lambda: runner.load_module(tmp_path / "none.ckpt"), "none.ckpt")


def test_resume_from_another_methods_checkpoint_exits_2(trained_ckpt, tiny_subject, body_models_root, tmp_path,
                                                         capsys):
    import train as train_script

    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["cfg"]["name"] = "gs_avatar"
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    run = tmp_path / "run"
    _cli(capsys, train_script.main, _train_args(tiny_subject, body_models_root, run, f"ckpt_path={other}"), run,
         "other.ckpt", "gs_avatar")
    assert not run.exists()


# --------------------------------------------------------------------------------------------- pose files
def _pose_file(tmp_path, **fields):
    path = tmp_path / "poses.npz"
    np.savez(path, **fields)
    return path


T = 3
_GOOD = dict(frame_ids=np.arange(T), global_orient=np.zeros((T, 3), np.float32),
             body_pose=np.zeros((T, 69), np.float32), transl=np.zeros((T, 3), np.float32),
             betas=np.zeros((T, 10), np.float32))

POSE_CASES = {
    "missing_frame_ids": ({k: v for k, v in _GOOD.items() if k != "frame_ids"}, "frame_ids"),
    "body_pose_wrong_width": (dict(_GOOD, body_pose=np.zeros((T, 50), np.float32)), "body_pose"),
    "rows_disagree": (dict(_GOOD, transl=np.zeros((T + 1, 3), np.float32)), "transl"),
    "nan_pose": (dict(_GOOD, body_pose=np.full((T, 69), np.nan, np.float32)), "body_pose"),
    "unsorted_frame_ids": (dict(_GOOD, frame_ids=np.array([0, 0, 1])), "frame_ids"),
}


@pytest.mark.parametrize("case", sorted(POSE_CASES))
def test_bad_pose_file(case, tmp_path):
    from zoo.data.pose_files import load_pose_file

    fields, named = POSE_CASES[case]
    path = _pose_file(tmp_path, **fields)
    _raises(DatasetError, lambda: load_pose_file(path), "poses.npz", named)


def test_pose_file_with_pickled_object(tmp_path):
    from zoo.data.pose_files import load_pose_file

    path = tmp_path / "poses.npz"
    np.savez(path, frame_ids=np.arange(2), body_pose=np.array([{"a": 1}, {"b": 2}], dtype=object))
    _raises(DatasetError, lambda: load_pose_file(path), "poses.npz")


def test_pose_file_not_npz(tmp_path):
    from zoo.data.pose_files import load_pose_file

    path = tmp_path / "poses.npz"
    path.write_bytes(pickle.dumps({"body_pose": 1}))
    _raises(DatasetError, lambda: load_pose_file(path), "poses.npz")
