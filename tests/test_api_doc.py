"""docs/api.md: its one Python example runs as written (the shipped checkpoint, a few seconds on CPU)."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_api_doc_example_runs(capsys, monkeypatch):
    monkeypatch.delenv("ZOO_BODY_MODELS", raising=False)  # the checkpoint's synthetic bodies, as a user has them
    blocks = _python_blocks(DOC.read_text())
    assert len(blocks) == 1, f"docs/api.md should hold exactly one runnable ```python block, found {len(blocks)}"
    namespace: dict = {"__name__": "api_doc"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "gaussian_avatar" in out and "exavatar" in out  # list_methods() printed
    model, gaussians, images = namespace["model"], namespace["gaussians"], namespace["images"]
    assert model.method_name == "gaussian_avatar"
    n = gaussians.means.shape[0]
    assert n > 1000 and gaussians.colors.shape == (n, 3)
    # an adult-sized body, and an image the avatar partly covers (not blank, not all foreground)
    height = float(gaussians.means[:, 1].max() - gaussians.means[:, 1].min())
    assert 1.3 < height < 2.2, height
    covered = float(namespace["covered"])
    assert 0.03 < covered < 0.6, covered
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # model.render: camera 0 is the render_poses camera, camera 1 a different (side) view
    views = namespace["views"]
    assert (views[0] - images[0]).abs().max() < 1e-5
    assert (views[1] - views[0]).abs().mean() > 0.01


def test_api_doc_names_only_existing_entry_points():
    import zoo

    text = DOC.read_text()
    for name in re.findall(r"`zoo\.(\w+)\(", text):
        assert hasattr(zoo, name), f"docs/api.md names zoo.{name}(), which zoo does not define"
    from zoo.registry import get_method

    named = set(re.findall(r"`model\.(\w+)", text))
    assert {"gaussians", "render", "render_poses"} <= named, named
    for method in zoo.list_methods():
        cls = get_method(method)
        for name in named - {"data_info"}:  # data_info is an attribute set at construction
            assert callable(getattr(cls, name, None)), f"docs/api.md names model.{name}, which {method} lacks"


def test_model_render_equals_the_test_forward_pass():
    """`model.render(body, cameras)` of a test frame's body and camera is the image eval.py scores
    (for methods without per-frame state; gs_avatar / humansplat_hmr add per-frame latents / poses)."""
    import pytest
    import torch

    import zoo
    from zoo import runner
    from zoo.core.camera import Cameras

    for name in ("gaussian_avatar.synthetic_s0", "exavatar.x_humans_s0"):
        model = zoo.load_pretrained(name, progress=False)
        info = model.data_info
        dm = runner.build_datamodule(dict(info["data"]), info["body_models"])
        dm.setup("test")
        loaders = dm.test_dataloader()
        batch = next(iter(loaders[0] if isinstance(loaders, list) else loaders))
        with torch.no_grad():
            want = model(batch)["rgb"][:1]
        H, W = batch["image"].shape[-2:]
        cams = Cameras(K=batch["K"][:1].float(), w2c=batch["w2c"][:1].float(), width=W, height=H)
        body = {k: v[0] for k, v in batch["body"].items()}
        got = model.render(body, cams, background=model.background_color(training=False).tolist())
        assert got.shape == want.shape and float(want.std()) > 0.01
        assert torch.allclose(got, want, atol=1e-6), name
        with pytest.raises(TypeError, match="Cameras"):
            model.render(body, {"K": batch["K"], "w2c": batch["w2c"]})
