"""Every registered method through the same checks, from its tiny preset on a tiny synthetic subject:
builds, trains a few CPU steps, every trainable parameter gets a finite gradient, a checkpoint
round-trips to the identical render, and eval.py scores the checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from zoo import runner
from zoo.config import compose

METHODS = zoo.list_methods()


@pytest.fixture(scope="module")
def tiny_data(tiny_subject, body_models_root):
    data_cfg = {"format": "zju_mocap", "root": str(tiny_subject), "options": {}, "batch_size": 1, "num_workers": 0,
                "cache": "auto"}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    info = runner.data_info(dm, data_cfg, str(body_models_root))
    return data_cfg, dm, info


def _batch(dm):
    return next(iter(dm.train_dataloader()))


def test_registry_lists_and_rejects_duplicates():
    assert "gaussian_avatar" in METHODS
    cls = zoo.get_method("gaussian_avatar")
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_method("gaussian_avatar")(type("Other", (cls,), {}))
    with pytest.raises(KeyError, match="gaussian_avatar"):
        zoo.get_method("nope")


@pytest.mark.parametrize("name", METHODS)
def test_every_parameter_gets_a_finite_gradient(name, tiny_data):
    _, dm, info = tiny_data
    torch.manual_seed(0)
    model = zoo.create(name, preset="tiny", data_info=info)
    model.train()
    model.pin_step(10 ** 6)  # past every stage switch and delay: every part is active
    batch = _batch(dm)
    bg = model.background_color(training=True)
    out = model.render_batch(batch, bg)
    H, W = batch["image"].shape[-2:]
    assert out["rgb"].shape == (1, 3, H, W) and out["alpha"].shape == (1, 1, H, W)
    assert torch.isfinite(out["rgb"]).all()
    gt = batch["image"] * batch["mask"]
    terms = model.loss_terms(batch, out, gt)
    total = sum(t for t in terms.values())
    total.backward()
    missing, bad = [], []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        grad = p.grad.coalesce().values() if p.grad is not None and p.grad.is_sparse else p.grad
        if grad is None or grad.abs().sum() == 0:
            missing.append(pname)
        elif not torch.isfinite(grad).all():
            bad.append(pname)
    assert not missing, f"parameters without gradient: {missing}"
    assert not bad, f"parameters with non-finite gradient: {bad}"


@pytest.mark.parametrize("name", METHODS)
def test_train_save_load_eval(name, tiny_subject, body_models_root, tmp_path):
    import train as train_script
    import eval as eval_script

    run = tmp_path / "run"
    code = train_script.main([f"experiment={name}_tiny", "data=synthetic", f"data.root={tiny_subject}",
                              "data.synthesize=null", f"body_models={body_models_root}", "logger=csv", f"run_dir={run}", "trainer.enable_progress_bar=false"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    # the resolved config lives inside the checkpoint
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["cfg"]["name"] == name
    model = runner.load_module(last)
    model2 = runner.load_module(last)
    data_cfg = dict(model.data_info["data"])
    dm = runner.build_datamodule(data_cfg, model.data_info["body_models"])
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()[0] if isinstance(dm.test_dataloader(), list) else dm.test_dataloader()))
    with torch.no_grad():
        a = model(batch)["rgb"]
        b = model2(batch)["rgb"]
    assert torch.equal(a, b)
    out = tmp_path / "eval"
    code = eval_script.main([f"ckpt_path={last}", f"out_dir={out}"])
    assert code == 0
    scores = json.loads((out / "metrics.json").read_text())["metrics"]
    assert scores and all("psnr" in v and "lpips" in v for v in scores.values())
    assert any(out.rglob("*.png"))
