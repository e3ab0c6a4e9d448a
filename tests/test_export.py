"""`python -m zoo export`: the standard 3DGS PLY, read back with plyfile and compared with the
method's `gaussians(body_params)`; and what `gaussians()` itself must satisfy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.export import SH_C0

EXPORTING = ["gaussian_avatar", "gs_avatar", "exavatar", "humansplat_hmr"]
STANDARD = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@pytest.fixture(scope="module", params=EXPORTING)
def trained(request, tiny_subject, body_models_root, tmp_path_factory):
    """(method name, checkpoint) of a 3-step run of the method's tiny preset."""
    import train as train_script

    run = tmp_path_factory.mktemp(f"export_{request.param}") / "run"
    assert train_script.main([f"experiment={request.param}_tiny", "data=synthetic", f"data.root={tiny_subject}",
                              "data.synthesize=null", f"body_models={body_models_root}", "logger=csv",
                              f"run_dir={run}", "trainer.max_steps=3", "test_after_fit=false",
                              "trainer.enable_progress_bar=false"]) == 0
    return request.param, run / "checkpoints" / "last.ckpt"


def _poses(tmp_path, J3: int):
    rng = np.random.default_rng(0)
    poses = {"global_orient": rng.normal(0, 0.2, (2, 3)).astype(np.float32),
             "body_pose": rng.normal(0, 0.2, (2, J3)).astype(np.float32),
             "transl": np.array([[0.0, 0.1, 2.0], [0.3, -0.2, 2.5]], np.float32)}
    path = tmp_path / "poses.npz"
    np.savez(path, **poses)
    return path, poses


def test_export_ply_reads_back_as_the_gaussians(trained, tmp_path, capsys):
    from plyfile import PlyData

    from zoo import checkpoints
    from zoo.__main__ import main

    name, ckpt = trained
    model = checkpoints.load(ckpt)
    J3 = 3 * model.body.num_body_joints
    pose_path, poses = _poses(tmp_path, J3)
    out = tmp_path / "avatar.ply"
    assert main(["export", str(ckpt), "--out", str(out), "--pose", str(pose_path), "--frame", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar.ply", "poses.npz"]  # no temporary file left
    ply = PlyData.read(str(out))
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == STANDARD
    assert all(p.val_dtype in ("f4", "float32", "float") for p in vertex.properties)
    g = model.gaussians({k: v[1] for k, v in poses.items()})
    assert vertex.count == len(g)
    col = {p: np.asarray(vertex[p], dtype=np.float64) for p in STANDARD}
    xyz = np.stack([col["x"], col["y"], col["z"]], 1)
    np.testing.assert_allclose(xyz, g.means.numpy(), atol=1e-5)
    assert np.all(col["nx"] == 0) and np.all(col["ny"] == 0) and np.all(col["nz"] == 0)
    f_dc = np.stack([col[f"f_dc_{i}"] for i in range(3)], 1)
    f_rest = np.stack([col[f"f_rest_{i}"] for i in range(45)], 1)  # channel-major: 15 R, 15 G, 15 B
    if g.sh is None:  # RGB colours: degree 0 only
        np.testing.assert_allclose(0.5 + SH_C0 * f_dc, g.colors.numpy(), atol=1e-5)
        assert np.all(f_rest == 0)
    else:  # view-dependent colours fitted as SH (gs_avatar): band-major [N, K, 3] in the model
        sh = g.sh.numpy()
        np.testing.assert_allclose(f_dc, sh[:, 0], atol=1e-5)
        rest = np.zeros((len(g), 15, 3))
        rest[:, : sh.shape[1] - 1] = sh[:, 1:]
        np.testing.assert_allclose(f_rest, rest.transpose(0, 2, 1).reshape(len(g), 45), atol=1e-5)
        assert np.abs(f_rest).max() > 0  # the colour really depends on the view
    np.testing.assert_allclose(1 / (1 + np.exp(-col["opacity"])), g.opacities.numpy().clip(1e-6, 1 - 1e-6), atol=1e-5)
    scales = np.exp(np.stack([col[f"scale_{i}"] for i in range(3)], 1))
    np.testing.assert_allclose(scales, g.scales.numpy(), rtol=1e-5)
    quats = np.stack([col[f"rot_{i}"] for i in range(4)], 1)
    ref = g.quats.numpy() / np.linalg.norm(g.quats.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(quats, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0, atol=1e-5)

    # canonical export: the avatar before posing, not the posed one
    canon = tmp_path / "canon.ply"
    assert main(["export", str(ckpt), "--out", str(canon), "--sh-degree", "0"]) == 0
    cv = PlyData.read(str(canon))["vertex"]
    assert [p.name for p in cv.properties] == [p for p in STANDARD if not p.startswith("f_rest")]
    gc = model.gaussians({"body_pose": np.zeros(J3, np.float32)}, canonical=True)
    np.testing.assert_allclose(np.stack([cv["x"], cv["y"], cv["z"]], 1), gc.means.numpy(), atol=1e-5)
    assert np.abs(gc.means.numpy() - g.means.numpy()).max() > 0.1


def test_gaussians_follow_the_body_translation(trained):
    """A pure translation of the body moves every Gaussian by exactly that vector and changes nothing else."""
    from zoo import checkpoints

    _, ckpt = trained
    model = checkpoints.load(ckpt)
    J3 = 3 * model.body.num_body_joints
    pose = {"global_orient": np.array([0.1, 0.4, -0.2], np.float32),
            "body_pose": np.random.default_rng(1).normal(0, 0.2, J3).astype(np.float32),
            "transl": np.zeros(3, np.float32)}
    a = model.gaussians(pose)
    shift = np.array([0.5, -0.25, 1.0], np.float32)
    b = model.gaussians({**pose, "transl": shift})
    torch.testing.assert_close(b.means - a.means, torch.as_tensor(shift).expand_as(a.means), atol=1e-4, rtol=0)
    torch.testing.assert_close(b.scales, a.scales)
    if a.sh is None:
        torch.testing.assert_close(b.colors, a.colors)
    else:  # view directions are global (a Fibonacci sphere), so a translation leaves the colours
        torch.testing.assert_close(b.sh, a.sh, atol=1e-4, rtol=0)
    assert torch.isfinite(a.means).all() and len(a) > 100
    with pytest.raises(ValueError, match="body_pose"):
        model.gaussians({"transl": shift})


def test_export_refuses_non_finite(tmp_path):
    from zoo.core.gaussians import Gaussians
    from zoo.export import write_ply

    n = 4
    g = Gaussians(means=torch.zeros(n, 3), quats=torch.tensor([[1.0, 0, 0, 0]] * n), scales=torch.ones(n, 3),
                  opacities=torch.full((n,), 0.5), colors=torch.full((n, 3), 0.5))
    g.means[2, 0] = float("nan")
    with pytest.raises(ValueError, match="1 of 4 Gaussians have non-finite means"):
        write_ply(g, tmp_path / "bad.ply")
    assert not list(tmp_path.iterdir())
