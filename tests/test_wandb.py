"""W&B comparison runs: grouped by dataset + subject, named and tagged by method, the config, per-step
losses and learning rates (LearningRateMonitor), validation image panels, and a summary holding the
protocol's headline metrics; `eval.py compare` logs its table and chart. Read back from the offline
run's .wandb file (a LevelDB-style log of protobuf records, the format `wandb sync` uploads)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402


def _records(path: Path):
    """The protobuf records of a .wandb file (header ':W&B' 0xBEE1 v0, 32 KiB blocks of chunks with a
    7-byte header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B" and raw[4:6] == b"\xe1\xbe", f"{path} is not a .wandb file"
    block, pos, chunks = 32768, 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:  # zero padding up to the block end
            pos += left
            continue
        if pos + 7 + length > len(raw):  # a record still being written
            return
        data = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        chunks = data if kind in (1, 2) else chunks + data
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record
            chunks = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _read_run(folder: Path, wait_s: float = 30.0):
    """(run record, config items, history rows, summary) of the one offline run under `folder`, once
    its writer has closed it (an `exit` record: wandb's service writes the file asynchronously)."""
    import time

    runs = sorted(folder.rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, f"expected one offline run under {folder}, found {runs}"
    deadline = time.monotonic() + wait_s
    while not any(r.WhichOneof("record_type") == "exit" for r in _records(runs[0])):
        assert time.monotonic() < deadline, f"{runs[0]} was never closed"
        time.sleep(0.2)
    run, config, history, summary = None, {}, [], {}
    for record in _records(runs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    assert run is not None
    return run, config, history, summary, runs[0].parent


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    wandb.teardown()  # wandb keeps the settings of its first setup per process: start from this env
    yield
    wandb.finish()
    wandb.teardown()


def test_training_run_is_grouped_named_and_summarised(offline, tiny_subject, body_models_root, tmp_path):
    import train as train_script

    run_dir = tmp_path / "run"
    assert train_script.main(["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
                              f"body_models={body_models_root}", "logger=wandb", f"run_dir={run_dir}",
                              "logger.tags=[tiny]", "trainer.log_every_n_steps=1",
                              "trainer.enable_progress_bar=false"]) == 0
    wandb.finish()
    run, config, history, summary, folder = _read_run(run_dir / "wandb")
    # grouped by dataset + subject, named and tagged by method
    assert run.run_group == f"synthetic_{tiny_subject.name}"
    assert run.display_name == "gaussian_avatar"
    assert {"gaussian_avatar", "synthetic", tiny_subject.name, "tiny"} <= set(run.tags)
    assert config["method"]["name"] == "gaussian_avatar" and config["trainer"]["max_steps"] == 3
    assert config["data"]["root"] == str(tiny_subject)

    # per-step losses and every optimizer param group's learning rate, per step
    steps = [row for row in history if "train/loss" in row]
    assert len(steps) == 3 and all(row["train/loss"] > 0 for row in steps)
    lr_rows = [row for row in history if any(k.startswith("lr-Adam") for k in row)]
    assert len(lr_rows) == 3
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    logged = [{k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("lr-Adam/")} for row in lr_rows]
    assert set(logged[0]) == {g["name"] for g in groups} == {"decoder", "pose_encoder", "feature_tensor"}
    # GaussianAvatar's two stages, each with its own step schedule (milestones 0.6 / 0.85 of the
    # stage, gamma 0.33). Tiny preset: stage 1 = step 0 (length 1: both milestones at 0 -> 0.33^2),
    # stage 2 = steps 1-2 (milestones at local step 1). Stage 1: decoder lr_net 3e-3, feature tensor
    # lr_feature 5e-3, pose encoder waiting (0); stage 2: encoder lr_net, decoder x stage2_lr_scale 0.1,
    # feature tensor frozen (0)
    g2 = 0.33 ** 2
    assert logged[0] == pytest.approx({"decoder": 3e-3 * g2, "pose_encoder": 0.0, "feature_tensor": 5e-3 * g2})
    assert logged[1] == pytest.approx({"decoder": 3e-4, "pose_encoder": 3e-3, "feature_tensor": 0.0})
    assert logged[2] == pytest.approx({"decoder": 3e-4 * g2, "pose_encoder": 3e-3 * g2, "feature_tensor": 0.0})

    # a validation image panel (render | ground truth | error) was logged as a file of the run
    panels = [row for row in history if "val/render_gt_error" in {k.rsplit("/", 1)[0] for k in row}]
    assert panels and panels[0]["val/render_gt_error/width"] == 96
    assert list((folder / "files" / "media" / "images" / "val").glob("render_gt_error_*.png"))

    # the summary holds the protocol's headline: val/* best over the run, the scored test results
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    for split in ("test_view", "test_pose"):
        for key in ("psnr", "ssim", "lpips"):
            assert summary[f"{split}/{key}"] == pytest.approx(metrics[split][key], rel=1e-6)
    assert summary["protocol"] == "synthetic" and summary["headline_keys"] == "psnr,ssim,lpips"
    vals = [row["val/psnr"] for row in history if "val/psnr" in row]
    assert vals and summary["val/psnr"] == {"max": pytest.approx(max(vals))}
    assert set(summary["val/lpips"]) == {"min"}


def test_disabled_mode_writes_nothing(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    from zoo import runner

    monkeypatch.setenv("WANDB_MODE", "disabled")
    wandb.teardown()
    cfg = OmegaConf.create({"logger": {"kind": "wandb", "project": "p", "group": None, "name": None, "tags": []},
                            "method": {"name": "gaussian_avatar"}, "data": {"_name": "synthetic", "multi_subject": True}})
    logger = runner.build_logger(cfg, tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    logger.experiment.summary["x"] = 1.0
    wandb.finish()
    wandb.teardown()
    assert not list(tmp_path.rglob("*.wandb"))


def test_no_credentials_falls_back_to_offline_and_says_so(monkeypatch, tmp_path, capsys):
    """wandb picks the mode (no forced offline); only a refusal for lack of any credentials -> offline."""
    from omegaconf import OmegaConf

    from zoo import runner

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.teardown()
    cfg = OmegaConf.create({"logger": {"kind": "wandb", "project": "p", "group": "g", "name": "n", "tags": []},
                            "method": {"name": "gs_avatar"}, "data": {"_name": "synthetic", "multi_subject": True}})
    logger = runner.build_logger(cfg, tmp_path / "run")
    try:
        assert logger.experiment.settings.mode == "offline"
        assert "no credentials" in capsys.readouterr().err
    finally:
        wandb.finish()
        wandb.teardown()
    run, *_ = _read_run(tmp_path / "run")
    assert run.run_group == "g" and run.display_name == "n" and "gs_avatar" in run.tags


def test_compare_logs_table_and_chart(offline, tmp_path):
    import eval as eval_script

    for name, method, psnr in (("ga", "gaussian_avatar", 31.5), ("hs", "humansplat_hmr", 27.25)):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text("data:\n  _name: synthetic\n")
        (folder / "metrics.json").write_text(json.dumps({
            "method": method, "subject": "CoreView_900", "protocol": {"name": "synthetic", "crop": "full"},
            "metrics": {"test_pose": {"psnr": psnr, "ssim": 0.9, "lpips": 0.05}},
            "baseline": {"metrics": {"test_pose": {"psnr": 20.0}}}}))
    out = tmp_path / "cmp"
    assert eval_script.main(["compare", str(tmp_path / "runs" / "ga"), str(tmp_path / "runs" / "hs"),
                             "--out", str(out)]) == 0  # WANDB_MODE=offline: logged without --wandb
    run, config, history, summary, folder = _read_run(out / "wandb")
    assert run.job_type == "compare" and run.run_group == "synthetic_CoreView_900"
    row = next(r for r in history if "compare/table/_type" in r)
    assert row["compare/table/_type"] == "table-file" and row["compare/table/nrows"] == 2
    table = json.loads((folder / "files" / row["compare/table/path"]).read_text())
    col = table["columns"]
    assert [r[col.index("method")] for r in table["data"]] == ["gaussian_avatar", "humansplat_hmr"]
    assert [r[col.index("psnr")] for r in table["data"]] == [31.5, 27.25]
    assert [r[col.index("gain_db")] for r in table["data"]] == [11.5, 7.25]
    assert row["compare/chart/_type"] == "image-file"
    assert (folder / "files" / row["compare/chart/path"]).is_file()
