"""The multi-subject datamodule (zoo/data/multi_subject.py): subject discovery, subject-level splits,
items that never mix subjects, context crops whose K still projects the body, the target-frame
schedule, target-pose noise, the mean-colour template baseline and the runner's dispatch."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from zoo.data.multi_subject import MultiSubjectDataModule, collate_items, crop_views, discover_subjects
from zoo.data.schema import DatasetError, MissingFileError


@pytest.fixture(scope="module")
def multi_root(tmp_path_factory, body_models_root):
    """Four tiny synthetic subjects (ZJU-MoCap layout, 5 frames, 3 cameras, 32x32) in one root."""
    from zoo.synthetic.subject import synthesize

    root = tmp_path_factory.mktemp("multi")
    synthesize("zju_mocap", root, subjects=4, frames=5, res=32, seed=7, cameras=3, body_models=body_models_root)
    return root


def _dm(root, body_models_root, **kw):
    opts = {"parser_options": {"body_models": str(body_models_root)}, "test_subjects": 1, "num_context": 3,
            "num_target": 2, "context_res": 24, "items_per_epoch": 40}
    opts.update(kw)
    dm = MultiSubjectDataModule("zju_mocap", root=root, **opts)
    dm.setup()
    return dm


def _record_of(dm, s, frame_id, camera_id):
    sub = dm._subjects[s]
    hits = [i for i, r in enumerate(sub.seq.records) if r.frame_id == frame_id and r.camera_id == camera_id]
    assert len(hits) == 1
    return hits[0]


def test_discovery_from_manifest_folders_and_list(multi_root, tmp_path, body_models_root):
    found = discover_subjects("zju_mocap", root=multi_root)
    assert [p.name for p in found] == json.loads((multi_root / "synthetic.json").read_text())["paths"]
    # without a manifest: every sub-folder the parser accepts (a stray folder is skipped)
    copy = tmp_path / "copy"
    for p in found[:2]:
        shutil.copytree(p, copy / p.name)
    (copy / "notes").mkdir()
    probe = {"body_models": str(body_models_root)}
    assert [p.name for p in discover_subjects("zju_mocap", root=copy, parser_options=probe)] == \
        [p.name for p in found[:2]]
    assert discover_subjects("zju_mocap", roots=found[1:3]) == found[1:3]
    with pytest.raises(MissingFileError, match="dataset root not found"):
        discover_subjects("zju_mocap", root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no zju_mocap subject folder"):
        discover_subjects("zju_mocap", root=tmp_path / "empty")
    with pytest.raises(DatasetError, match="not among"):
        discover_subjects("zju_mocap", root=multi_root, subjects=["CoreView_1"])
    with pytest.raises(DatasetError, match="test_subjects names"):
        _dm(multi_root, body_models_root, test_subjects=["nobody"])


def test_items_never_mix_subjects(multi_root, body_models_root):
    dm = _dm(multi_root, body_models_root, batch_size=3, items_per_epoch=39)
    seen = set()
    for batch in dm.train_dataloader():
        B = batch["image"].shape[0]
        assert B == 6 and batch["context"]["image"].shape[:2] == (6, 3)
        for b in range(B):
            s = int(batch["subject_id"][b])
            seen.add(s)
            sub = dm._subjects[s]
            # the target pixels are that subject's frame, the context pixels that subject's crops
            t = sub.frame(_record_of(dm, s, int(batch["frame_id"][b]), int(batch["camera_id"][b])))
            assert torch.equal(t["image"], batch["image"][b])
            for v in range(3):
                fid, cid = int(batch["context"]["frame_id"][b, v]), int(batch["context"]["camera_id"][b, v])
                f = sub.frame(_record_of(dm, s, fid, cid))
                img, msk, _ = crop_views(f["image"], f["mask"], f["K"], 24)
                assert torch.equal(img * msk, batch["context"]["image"][b, v])
            # one shape per subject: every view of the row carries its betas
            assert torch.equal(batch["context"]["body"]["betas"][b], batch["body"]["betas"][b].expand(3, -1))
        # rows of one item share one group id (and one subject)
        for g in batch["context"]["group"].unique():
            assert batch["subject_id"][batch["context"]["group"] == g].unique().numel() == 1
    assert seen == set(dm.train_subjects) and dm.test_subject_ids[0] not in seen


def test_subject_level_splits(multi_root, body_models_root):
    dm = _dm(multi_root, body_models_root, max_val_targets=2)
    test = dm.test_subject_ids
    assert dm.test_split_names == ["test_view", "test_pose"] and dm.has_validation
    assert {r[0] for r in dm.split_rows("val")} == set(dm.train_subjects)
    for name in ("test_view", "test_pose"):
        assert {r[0] for r in dm.split_rows(name)} == set(test)
    sub = dm._subjects[test[0]]
    held = {int(sub.seq.records[i].frame_id) for i in sub.heldout}
    ctx = dm.split_rows("test_view")[0][1]
    for s, c, targets, group in dm.split_rows("test_view"):
        assert c == ctx and group == s and not set(targets) & set(ctx)
        assert int(sub.seq.records[targets[0]].frame_id) not in held
    assert all(int(sub.seq.records[t[0]].frame_id) in held for _, _, t, _ in dm.split_rows("test_pose"))
    # every motion record but the context is a test_view target
    assert len(dm.split_rows("test_view")) == len(sub.motion) - 3
    info = dm.data_info({"format": "zju_mocap"}, str(body_models_root))
    assert info["test_subjects"] == [sub.name] and info["num_context"] == 3 and info["context_res"] == 24


def test_same_frame_schedule(multi_root, body_models_root):
    dm = _dm(multi_root, body_models_root, num_context=2, same_frame_targets={"start": 1.0, "end": 0.0, "ramp": 0.5})
    rng = np.random.default_rng(0)

    def share(progress):
        dm.set_progress(progress)
        same = 0
        for _ in range(30):
            s = dm.train_subjects[0]
            ctx, targets = dm.sample_train_item(s, rng)
            rec = dm._subjects[s].seq.records
            same += sum(rec[t].frame_id == rec[ctx[0]].frame_id for t in targets)
            assert not set(targets) & set(ctx)
        return same / 60

    assert share(0.0) == 1.0
    assert share(0.6) == 0.0
    dm.set_progress(0.25)
    assert dm.same_frame_probability() == pytest.approx(0.5)


def test_crop_keeps_the_camera_consistent():
    H = W = 40
    image = torch.zeros(3, H, W)
    mask = torch.zeros(1, H, W)
    mask[0, 10:30, 16:24] = 1.0  # rows 10..29, cols 16..23
    image[:, 10:30, 16:24] = 0.7
    K = torch.tensor([[50.0, 0.0, 19.5], [0.0, 50.0, 19.5], [0.0, 0.0, 1.0]])
    img, msk, K2 = crop_views(image, mask, K, 32, pad=0.0)
    # a square box of side 20 around the mask: 32/20 = 1.6 output pixels per input pixel
    assert K2[0, 0] == pytest.approx(80.0) and K2[1, 1] == pytest.approx(80.0)
    ys, xs = torch.nonzero(msk[0] > 0.5, as_tuple=True)
    # a point at input pixel centre (col 16, row 10) maps through K -> K2 onto the crop's first mask pixel
    ray = torch.linalg.inv(K) @ torch.tensor([16.0, 10.0, 1.0])
    uv = K2 @ ray
    assert abs(float(uv[1] / uv[2]) - float(ys.min())) <= 1.0
    assert abs(float(uv[0] / uv[2]) - float(xs.min())) <= 1.0
    assert torch.allclose(img[:, 16, 16], torch.full((3,), 0.7), atol=1e-5)


def test_target_pose_noise_only_on_scored_splits(multi_root, body_models_root):
    clean = _dm(multi_root, body_models_root)
    noisy = _dm(multi_root, body_models_root, target_pose_noise={"level": "hmr", "seed": 3})
    again = _dm(multi_root, body_models_root, target_pose_noise={"level": "hmr", "seed": 3})
    a = next(iter(clean.test_dataloader()[0]))
    b = next(iter(noisy.test_dataloader()[0]))
    c = next(iter(again.test_dataloader()[0]))
    assert not torch.allclose(a["body"]["body_pose"], b["body"]["body_pose"])
    assert torch.equal(b["body"]["body_pose"], c["body"]["body_pose"])  # seeded
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["body"]["betas"], b["body"]["betas"])
    # context bodies and the validation split keep their exact poses
    assert torch.equal(a["context"]["body"]["body_pose"], b["context"]["body"]["body_pose"])
    va, vb = next(iter(clean.val_dataloader())), next(iter(noisy.val_dataloader()))
    assert torch.equal(va["body"]["body_pose"], vb["body"]["body_pose"])


def test_baseline_and_runner_dispatch(multi_root, body_models_root):
    from zoo import runner

    cfg = {"format": "zju_mocap", "root": str(multi_root), "options": {},
           "multi_subject": {"test_subjects": 1, "context_res": 24, "max_test_targets": 3}, "batch_size": 2}
    dm = runner.build_datamodule(cfg, str(body_models_root))
    assert isinstance(dm, MultiSubjectDataModule) and dm.batch_size == 2
    dm.setup()
    info = runner.data_info(dm, cfg, str(body_models_root))
    assert info["test_splits"] == ["test_view", "test_pose"] and len(info["subjects"]) == 4
    scores = runner.baseline_scores(dm, ["test_view"], str(body_models_root), {"name": "synthetic",
                                                                               "background": [0, 0, 0]})
    assert scores["test_view"]["frames"] == 3 and 5.0 < scores["test_view"]["psnr_crop"] < 40.0
    with pytest.raises(ValueError, match="unknown or misplaced keys"):
        runner.build_datamodule({**cfg, "multi_subject": {"num_views": 2}}, str(body_models_root))
    batch = collate_items([dm.make_rows(*dm.split_rows("test_view")[0])])
    assert batch["context"]["group"].tolist() == [dm.test_subject_ids[0]]


def test_x_humans_preset_serves_monocular_contexts(tmp_path, body_models_root):
    """experiment=nopo_avatar_x_humans's data section (configs/data/x_humans_multi.yaml) on an X-Humans
    root: the contexts of a monocular format are V different frames of one subject, from its train takes."""
    from zoo import runner
    from zoo.config import compose
    from zoo.synthetic.subject import synthesize

    root = tmp_path / "x_humans"
    synthesize("x_humans", root, subjects=3, frames=5, res=32, seed=11, body_models=body_models_root)
    (root / "synthetic.json").unlink()  # a real X-Humans root has no manifest: subjects are probed
    cfg = compose("train", ["experiment=nopo_avatar_x_humans", f"data.root={root}",
                            "data.multi_subject.test_subjects=1", "data.multi_subject.context_res=16",
                            "data.multi_subject.items_per_epoch=6", "data.num_workers=0"])
    assert cfg.data.format == "x_humans" and cfg.trainer.accelerator == "gpu"
    dm = runner.build_datamodule(cfg.data, str(body_models_root))
    dm.setup("fit")
    assert len(dm.subjects) == 3 and len(dm.train_subjects) == 2 and "test_pose" in dm.test_split_names
    batch = next(iter(dm.train_dataloader()))
    ctx = batch["context"]
    assert ctx["image"].shape[1:] == (3, 3, 16, 16)
    for row in range(ctx["frame_id"].shape[0]):
        frames = ctx["frame_id"][row].tolist()
        assert len(set(frames)) == 3, frames  # one camera per frame: V different frames
    assert batch["subject_id"].unique().numel() <= cfg.data.batch_size
