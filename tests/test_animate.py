"""`python -m zoo animate CKPT --motion FILE --out DIR_or.mp4 [--turntable N]`: an mp4 read back with
imageio-ffmpeg, a turntable whose first view is the model's own render, atomic output, clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def ckpt(tiny_subject, body_models_root, tmp_path_factory):
    """A 3-step GaussianAvatar tiny run's checkpoint."""
    import train as train_script

    run = tmp_path_factory.mktemp("animate") / "run"
    assert train_script.main(["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "test_after_fit=false", "trainer.enable_progress_bar=false"]) == 0
    return run / "checkpoints" / "last.ckpt"


def _motion(path, T=5, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, body_pose=rng.normal(0, 0.15, (T, 69)).astype(np.float32),
             global_orient=np.zeros((T, 3), np.float32),
             transl=np.stack([np.linspace(0, 0.2, T), np.zeros(T), np.zeros(T)], 1).astype(np.float32))
    return path


def test_mp4_has_every_frame_at_the_size(ckpt, tmp_path, capsys):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    from zoo.__main__ import main

    motion = _motion(tmp_path / "walk.npz", T=5)
    out = tmp_path / "out" / "walk.mp4"
    assert main(["animate", str(ckpt), "--motion", str(motion), "--out", str(out), "--res", "32", "--quiet",
                 "--fps", "10"]) == 0
    assert "rendered 5 frames" in capsys.readouterr().out
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(32, 32, 3) for f in reader]
    assert meta["size"] == (32, 32) and meta["fps"] == 10.0 and len(frames) == 5
    # white background, a body in front of it that moves (H.264 is lossy: compare coarsely)
    assert all((f.astype(int).sum(axis=2) < 600).sum() > 20 for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0
    assert sorted(p.name for p in out.parent.iterdir()) == ["walk.mp4"]  # no temporary file left
    # an existing output is kept unless --overwrite
    assert main(["animate", str(ckpt), "--motion", str(motion), "--out", str(out), "--res", "32", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # odd sizes are rounded up to even (yuv420p)
    odd = tmp_path / "odd.mp4"
    assert main(["animate", str(ckpt), "--pose", str(motion), "--out", str(odd), "--res", "31", "--quiet"]) == 0
    assert next(imageio_ffmpeg.read_frames(str(odd)))["size"] == (32, 32)


def test_turntable_orbits_and_its_first_view_is_a_direct_render(ckpt, tmp_path):
    from zoo import checkpoints
    from zoo.__main__ import main
    from zoo.animate import body_axes, intrinsics, turntable_cameras
    from zoo.core.camera import Cameras

    motion = _motion(tmp_path / "m.npz", T=3, seed=1)
    out = tmp_path / "spin"
    assert main(["animate", str(ckpt), "--motion", str(motion), "--turntable", "4", "--frame", "2", "--out", str(out),
                 "--res", "32", "--distance", "2.5", "--quiet"]) == 0
    frames = [np.asarray(Image.open(p)).astype(int) for p in sorted(out.glob("frame*.png"))]
    assert len(frames) == 4 and all(f.shape == (32, 32, 3) for f in frames)
    for i in range(4):  # every view differs from the others
        for j in range(i + 1, 4):
            assert np.abs(frames[i] - frames[j]).mean() > 1.0, (i, j)

    # the first view is the method's own render (render_batch, not the animate path) of that pose
    model = checkpoints.load(ckpt)
    data = dict(np.load(motion))
    body = {k: v[2] for k, v in data.items()}
    center = model.gaussians(body).means.double().mean(0).numpy()
    up, forward = body_axes(body["global_orient"])
    w2c = turntable_cameras(center, up, forward, 2.5, 4)
    cams = Cameras(K=torch.as_tensor(intrinsics(32, 32, 45.0), dtype=torch.float32)[None].expand(4, 3, 3),
                   w2c=torch.as_tensor(w2c, dtype=torch.float32), width=32, height=32)
    direct = model.render(body, cams)  # [4, 3, H, W]
    ref = (direct.permute(0, 2, 3, 1).numpy() * 255).round().astype(int)
    for k in range(4):
        assert np.abs(frames[k] - ref[k]).max() <= 1, k

    # the cameras: a circle of radius 2.5 around the vertical axis through the centre, view 0 in front,
    # view k at 90 k degrees
    eyes = np.stack([-m[:3, :3].T @ m[:3, 3] for m in w2c]) - center
    np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), 2.5, atol=1e-9)
    np.testing.assert_allclose(eyes @ up, 0.0, atol=1e-9)
    np.testing.assert_allclose(eyes[0] / 2.5, forward, atol=1e-9)
    for k in range(4):
        cos = float(eyes[k] @ eyes[0]) / 2.5 ** 2
        assert math.isclose(cos, math.cos(math.pi / 2 * k), abs_tol=1e-9)


def test_a_bad_motion_file_is_one_error_and_leaves_nothing(ckpt, tmp_path, capsys):
    from zoo.__main__ import main

    bad = tmp_path / "bad.npz"
    np.savez(bad, body_pose=np.zeros((4, 69), np.float32), transl=np.zeros((3, 3), np.float32))
    out = tmp_path / "frames"
    assert main(["animate", str(ckpt), "--motion", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.npz" in err[0] and "'transl' must be [4, 3]" in err[0]
    nan = tmp_path / "nan.npz"
    np.savez(nan, body_pose=np.full((2, 69), np.nan, np.float32))
    assert main(["animate", str(ckpt), "--motion", str(nan), "--out", str(tmp_path / "v.mp4")]) == 2
    assert "non-finite" in capsys.readouterr().err
    smplx = tmp_path / "smplx.npz"
    np.savez(smplx, body_pose=np.zeros((2, 63), np.float32))
    assert main(["animate", str(ckpt), "--motion", str(smplx), "--out", str(out)]) == 2
    assert "needs 69" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "nan.npz", "smplx.npz"]


def test_an_error_mid_sequence_leaves_no_output(ckpt, tmp_path):
    from zoo import checkpoints
    from zoo.animate import animate

    model = checkpoints.load(ckpt)
    real, calls = model.gaussians, []

    def failing(body, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("renderer exploded")
        return real(body, **kw)

    model.gaussians = failing
    poses = dict(np.load(_motion(tmp_path / "m.npz", T=5)))
    for out in (tmp_path / "frames", tmp_path / "clip.mp4"):
        calls.clear()
        with pytest.raises(RuntimeError, match="exploded"):
            animate(model, poses, out, res=16, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
