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


def test_api_doc_names_only_existing_entry_points():
    import zoo

    text = DOC.read_text()
    for name in re.findall(r"`zoo\.(\w+)\(", text):
        assert hasattr(zoo, name), f"docs/api.md names zoo.{name}(), which zoo does not define"
    for name in re.findall(r"`model\.(\w+)", text):
        assert name in ("gaussians", "render_poses", "data_info"), name
    from zoo.methods.base import AvatarModule
    from zoo.registry import get_method

    assert hasattr(AvatarModule, "render_poses")  # every method inherits it
    assert all(callable(getattr(get_method(m), "gaussians", None)) for m in ("gaussian_avatar", "gs_avatar", "exavatar"))
