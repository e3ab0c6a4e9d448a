"""Honest scoring: the prediction is scored as rendered (only the ground truth is composited with its
mask), model selection never sees a test split, and the reported numbers are what an independent
re-scoring of the saved renders gives. Also the nearest-training-frame baseline."""
from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from zoo import runner
from zoo.baseline import nearest_frame_scores, nearest_training_items, viewpoint_in_body_frame
from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians
from zoo.core.losses import l1_loss
from zoo.core.metrics import EvalProtocol
from zoo.core.render import render
from zoo.methods.base import AvatarModule, composite


def _data_cfg(root: Path) -> dict:
    # the synthetic protocol on black (as configs/data/synthetic.yaml), so a white floater is bright
    return {"format": "zju_mocap", "root": str(root), "options": {"eval_protocol": "synthetic"},
            "protocol": {"background": [0.0, 0.0, 0.0]}, "batch_size": 1, "num_workers": 0, "cache": "auto"}


class OracleAvatar(AvatarModule):
    """Draws the ground-truth person exactly, on the evaluation background; optionally also one bright
    Gaussian floater through the real renderer, in front of the camera, where the person is not."""

    def __init__(self, data_info, floater: bool):
        super().__init__({"name": "oracle", "background": "black"}, data_info)
        self.floater = floater
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def render_batch(self, batch, background):
        image = composite(batch["image"], batch["mask"], background)
        alpha = batch["mask"].clone()
        if self.floater:
            cams = Cameras.from_batch(batch)
            outs = []
            for b in range(image.shape[0]):
                # the ray through pixel (3, 3) (background in every synthetic view), 1 m deep
                K, w2c = batch["K"][b].double(), batch["w2c"][b].double()
                ray = torch.linalg.solve(K, torch.tensor([3.0, 3.0, 1.0], dtype=torch.float64))
                c2w = torch.linalg.inv(w2c)
                point = (c2w[:3, :3] @ ray + c2w[:3, 3]).float()
                gs = Gaussians(means=point[None], quats=torch.tensor([[1.0, 0, 0, 0]]),
                               scales=torch.full((1, 3), 0.03), opacities=torch.tensor([0.99]),
                               colors=torch.ones(1, 3))
                out = render(gs, cams[b:b + 1], backgrounds=torch.zeros(1, 3), render_mode="RGB+ED")
                rgb, a = out.rgb.permute(0, 3, 1, 2), out.alpha.permute(0, 3, 1, 2)
                outs.append((rgb + (1 - a) * image[b:b + 1], a))
            image = torch.cat([o[0] for o in outs])
            alpha = torch.maximum(alpha, torch.cat([o[1] for o in outs]))
        return {"rgb": image, "alpha": alpha}

    def loss_terms(self, batch, out, gt):
        return {"l1": l1_loss(out["rgb"], gt) + 0 * self.dummy.sum()}

    def param_groups(self):
        return [{"params": [self.dummy], "lr": 1e-3, "name": "dummy"}]


@pytest.fixture(scope="module")
def honest_dm(tiny_subject, body_models_root):
    data_cfg = _data_cfg(tiny_subject)
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("test")
    return data_cfg, dm, runner.data_info(dm, data_cfg, str(body_models_root))


def _test(model, dm):
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    model.test_results = {}
    trainer.test(model, datamodule=dm, verbose=False)
    return model.test_results


def test_a_floater_outside_the_person_lowers_the_score(honest_dm):
    _, dm, info = honest_dm
    assert info["protocol"]["background"] == [0.0, 0.0, 0.0] and not info["protocol"]["mask_prediction"]
    clean = _test(OracleAvatar(info, floater=False), dm)["test_view"]
    dirty_model = OracleAvatar(info, floater=True)
    batch = next(iter(dm.test_dataloader()[0]))
    with torch.no_grad():
        drawn = dirty_model(batch)["rgb"] - composite(batch["image"], batch["mask"], torch.zeros(3))
    outside = (1 - batch["mask"]) * drawn.abs().sum(1, keepdim=True)
    assert float(outside.max()) > 0.5 and float((batch["mask"] * drawn.abs()).max()) < 1e-6  # the floater is off-body
    dirty = _test(dirty_model, dm)["test_view"]
    assert math.isinf(clean["psnr"]) and clean["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isfinite(dirty["psnr"]) and dirty["psnr"] < 40.0
    assert dirty["ssim"] < clean["ssim"] and dirty["lpips"] > clean["lpips"]
    # the old scoring (prediction composited with the GT mask) would have hidden it completely
    paper = EvalProtocol(**{**info["protocol"], "mask_prediction": True, "source": "test"})
    dirty_model.protocol = paper
    hidden = _test(dirty_model, dm)["test_view"]
    assert math.isinf(hidden["psnr_masked"]) and hidden["psnr"] == pytest.approx(dirty["psnr"])


def _numpy_psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    mse = np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2)
    return float(-10.0 * np.log10(mse))


def test_saved_renders_rescored_independently_match_eval(tiny_subject, body_models_root, tmp_path):
    import eval as eval_script
    import train as train_script

    run = tmp_path / "run"
    code = train_script.main(["experiment=gaussian_avatar_tiny", "data=synthetic", f"data.root={tiny_subject}",
                              "data.synthesize=null", f"body_models={body_models_root}", "logger=csv",
                              f"run_dir={run}", "trainer.max_steps=20", "trainer.enable_progress_bar=false"])
    assert code == 0
    out = tmp_path / "eval"
    assert eval_script.main([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"out_dir={out}"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    background = np.asarray(report["protocol"]["background"], dtype=np.float64)
    assert report["protocol"]["mask_prediction"] is False
    pngs = sorted((out / "test_view").glob("*.png"))
    assert pngs
    values = []
    for png in pngs:
        # frame000003_cam02.png -> the raw ZJU files Camera_B3/000003.jpg and mask_cihp/Camera_B3/000003.png
        frame, cam = int(png.stem[5:11]), int(png.stem[-2:])
        rel = Path(f"Camera_B{cam + 1}") / f"{frame:06d}.jpg"
        gt = np.asarray(Image.open(tiny_subject / rel).convert("RGB"), dtype=np.float64) / 255.0
        masks = [tiny_subject / d / rel.with_suffix(".png") for d in ("mask_cihp", "mask")]
        mask = np.zeros(gt.shape[:2], bool)
        for m in masks:
            if m.is_file():
                mask |= np.asarray(Image.open(m)) > 0
        gt = np.where(mask[..., None], gt, background)
        pred = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64) / 255.0
        values.append(_numpy_psnr(pred, gt))
    assert abs(float(np.mean(values)) - report["metrics"]["test_view"]["psnr"]) < 0.05
    assert "test_view" in report["baseline"]["metrics"]


def test_validation_never_overlaps_a_test_split(honest_dm):
    _, dm, _ = honest_dm
    val = set(dm.split_indices("val"))
    assert val and dm.has_validation
    for split in ("train", "test_view", "test_pose"):
        assert not val & set(dm.sequence.splits[split]), split
    # val items are novel views of training frames, not scored by test_view
    seq = dm.sequence
    train_frames = {seq.records[i].frame_id for i in seq.splits["train"]}
    view_frames = {seq.records[i].frame_id for i in seq.splits["test_view"]}
    assert {seq.records[i].frame_id for i in val} <= train_frames - view_frames


def test_people_snapshot_val_inside_test_falls_back_to_last_checkpoint(body_models_root, tmp_path):
    import train as train_script
    from zoo.data.datamodule import AvatarDataModule
    from zoo.synthetic.subject import ensure_synthetic

    root = ensure_synthetic(tmp_path / "ps", format="people_snapshot", subjects=1, frames=10, res=64, seed=1,
                            body_models=body_models_root)
    # InstantAvatar-style ranges (DATASETS.md §2): the val frame is the first test frame
    dm = AvatarDataModule("people_snapshot", root=root)
    val = dm.sequence.splits["val"]
    assert val and set(val) <= set(dm.sequence.splits["test_pose"])
    assert dm.split_indices("val") == [] and not dm.has_validation
    run = tmp_path / "run"
    code = train_script.main(["experiment=gaussian_avatar_tiny", "data=people_snapshot", f"data.root={root}",
                              f"body_models={body_models_root}", "logger=csv", f"run_dir={run}",
                              "trainer.enable_progress_bar=false"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model_selection"].startswith("last checkpoint")
    assert metrics["checkpoint"].endswith("last.ckpt")


def test_nearest_frame_baseline_picks_the_same_view_and_scores_it(honest_dm):
    _, dm, _ = honest_dm
    seq = dm.sequence
    train = dm.split_indices("train")
    # a training item is its own nearest neighbour, and its copy scores perfectly against itself
    assert nearest_training_items(seq, train, train) == train
    rec = seq.records[train[0]]
    d = viewpoint_in_body_frame(rec.w2c, rec.body)
    assert d.shape == (3,) and np.linalg.norm(d) == pytest.approx(1.0)
    # rotating the body by the same amount as the camera leaves the body-frame viewpoint unchanged
    turn = np.array([0.0, 0.7, 0.0])
    from zoo.baseline import _rotation

    R = _rotation(turn)
    w2c = np.asarray(rec.w2c, dtype=np.float64).copy()
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    moved = w2c.copy()
    moved[:3, :3] = w2c[:3, :3] @ R.T
    moved[:3, 3] = -moved[:3, :3] @ (R @ centre)
    body = {"global_orient": turn, "transl": np.zeros(3)}
    assert np.allclose(viewpoint_in_body_frame(moved, body), viewpoint_in_body_frame(w2c, {"transl": np.zeros(3)}))
    plain = nearest_frame_scores(dm)
    aligned = nearest_frame_scores(dm, body_models=dm.parser_options["body_models"])
    assert set(plain) == set(aligned) == {"test_view", "test_pose"}
    for values in list(plain.values()) + list(aligned.values()):
        assert 5.0 < values["psnr"] < 60.0 and values["frames"] >= 1
        assert {"psnr_crop", "ssim", "lpips"} <= set(values)


def test_aligned_copy_moves_and_scales_by_the_projected_centre():
    from zoo.baseline import aligned_copy

    image = torch.zeros(1, 3, 21, 21)
    image[..., 10, 10] = 1.0
    mask = (image[:, :1] > 0).float()
    same, same_mask = aligned_copy(image, mask, (np.array([10.0, 10.0]), 2.0, 100.0),
                                   (np.array([10.0, 10.0]), 2.0, 100.0), (21, 21))
    assert torch.allclose(same, image, atol=1e-6) and torch.allclose(same_mask, mask, atol=1e-6)
    moved, _ = aligned_copy(image, mask, (np.array([10.0, 10.0]), 2.0, 100.0),
                            (np.array([4.0, 13.0]), 2.0, 100.0), (21, 21))
    assert float(moved[0, 0, 13, 4]) == pytest.approx(1.0) and float(moved.sum()) == pytest.approx(3.0)
    # twice as close: twice as large around the destination centre, a point 2 px off lands 4 px off
    image2 = torch.zeros(1, 3, 21, 21)
    image2[..., 10, 12] = 1.0
    near, _ = aligned_copy(image2, mask, (np.array([10.0, 10.0]), 2.0, 100.0),
                           (np.array([10.0, 10.0]), 1.0, 100.0), (21, 21))
    assert float(near[0, 0, 10, 14]) == pytest.approx(1.0)


def test_data_poses_drive_training_with_a_pose_file(tiny_subject, body_models_root, tmp_path):
    """`data.poses=FILE` (e.g. HumanSplatHMR's refined_poses.npz) replaces the dataset's poses by
    frame id for any method; a file that lacks a training frame is a clear error."""
    from zoo.data.parsers import PARSERS
    from zoo.data.pose_files import save_pose_file, sequence_poses

    seq = PARSERS["zju_mocap"](tiny_subject, body_models=str(body_models_root))
    poses = sequence_poses(seq, None)
    shifted = dict(poses.params)
    shifted["transl"] = shifted["transl"] + np.float32(0.05)
    path = save_pose_file(tmp_path / "poses.npz", poses.frame_ids, shifted, "smpl")
    data_cfg = {"format": "zju_mocap", "root": str(tiny_subject), "options": {}, "poses": str(path)}
    dm = runner.build_datamodule(data_cfg, str(body_models_root))
    dm.setup("fit")
    i = dm.split_indices("train")[0]
    fid = int(dm.sequence.records[i].frame_id)
    row = list(poses.frame_ids).index(fid)
    assert np.allclose(dm.sequence.records[i].body["transl"], poses.params["transl"][row] + 0.05)
    short = save_pose_file(tmp_path / "short.npz", poses.frame_ids[:2], {k: v[:2] for k, v in poses.params.items()})
    with pytest.raises(ValueError, match="lacks frame ids"):
        runner.build_datamodule({**data_cfg, "poses": str(short)}, str(body_models_root))
