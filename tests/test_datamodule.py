"""AvatarDataModule: contract batches for every format, caching, loaders, Lightning integration."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from zoo.data.datamodule import AvatarDataModule
from zoo.data.parsers import PARSERS
from zoo.data.schema import BODY_KEYS_SMPL, BODY_KEYS_SMPLX
from zoo.data.writers import write

# shared capture builders and the body-model fixture (pytest puts tests/ on sys.path)
from test_parsers import _neuman_capture, _ps_capture, _xh_capture, _zju_capture, body_env  # noqa: F401


@pytest.fixture
def datasets(body_env: Path, tmp_path: Path) -> dict[str, tuple[Path, dict]]:
    """One small subject per format: format -> (subject folder, parser options)."""
    return {
        "zju_mocap": (write("zju_mocap", _zju_capture(body_env, camera_ids=(0, 1), frame_ids=[0, 1, 2, 3]), tmp_path), {}),
        "people_snapshot": (write("people_snapshot", _ps_capture(body_env), tmp_path), {"train_step": 2}),
        "neuman": (write("neuman", _neuman_capture(body_env), tmp_path), {}),
        "x_humans": (write("x_humans", _xh_capture(body_env), tmp_path), {}),
    }


def _check_batch(batch: dict, batch_size: int, model_type: str, depth: bool) -> None:
    B = batch["image"].shape[0]
    assert 1 <= B <= batch_size
    H, W = batch["image"].shape[-2:]
    assert batch["image"].shape == (B, 3, H, W) and batch["image"].dtype == torch.float32
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    assert batch["mask"].shape == (B, 1, H, W)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    assert batch["K"].shape == (B, 3, 3) and batch["w2c"].shape == (B, 4, 4)
    for key in ("frame_id", "camera_id", "index"):
        assert batch[key].shape == (B,) and batch[key].dtype == torch.long
    keys = BODY_KEYS_SMPL if model_type == "smpl" else BODY_KEYS_SMPLX
    for key, dim in keys.items():
        assert batch["body"][key].shape == (B, dim or batch["body"][key].shape[1]), key
    assert ("depth" in batch) == depth
    if depth:
        assert batch["depth"].shape == (B, 1, H, W)


def _batches(loader) -> list[dict]:
    return list(loader)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if key == "body":
                for k in value:
                    assert torch.equal(value[k], y["body"][k]), k
            else:
                assert torch.equal(value, y[key]), key


@pytest.mark.parametrize("fmt", ["zju_mocap", "people_snapshot", "neuman", "x_humans"])
def test_contract_batches_and_cache_equivalence(datasets, fmt: str):
    root, options = datasets[fmt]
    model_type = "smplx" if fmt == "x_humans" else "smpl"
    has_depth = fmt in ("neuman", "x_humans")
    runs = {}
    for cache in (False, True):
        dm = AvatarDataModule(fmt, root=root, parser_options=options, batch_size=3, cache=cache)
        dm.setup("fit")
        assert dm.cache_enabled is cache
        train = _batches(dm.train_dataloader())
        val = _batches(dm.val_dataloader())
        tests = [_batches(loader) for loader in dm.test_dataloader()]
        predict = _batches(dm.predict_dataloader())
        runs[cache] = (train, val, tests, predict)
        for batch in train + val + [b for t in tests for b in t] + predict:
            _check_batch(batch, 3, model_type, has_depth)
        seq = dm.sequence
        assert sorted(torch.cat([b["index"] for b in train]).tolist()) == sorted(seq.splits["train"])
        assert torch.cat([b["index"] for b in predict]).tolist() == list(range(len(seq)))
        assert dm.test_split_names == [n for n in ("test_view", "test_pose") if seq.splits[n]]
        for name, batches in zip(dm.test_split_names, tests):
            assert torch.cat([b["index"] for b in batches]).tolist() == seq.splits[name]
        assert dm.frame_ids == seq.frame_ids and dm.num_frames == len(seq.frame_ids)
        assert dm.model_type == model_type and dm.protocol == seq.protocol
        if cache:
            # every frame served (predict covers the whole sequence) was decoded once and kept
            assert len(dm.cache) == len(seq)
    # caching on / off gives identical batches (same shuffle seed)
    (train0, val0, tests0, pred0), (train1, val1, tests1, pred1) = runs[False], runs[True]
    _assert_same(train0, train1)
    _assert_same(val0, val1)
    _assert_same(pred0, pred1)
    assert len(tests0) == len(tests1)
    for a, b in zip(tests0, tests1):
        _assert_same(a, b)


def test_zju_test_loaders_are_named_by_split(datasets):
    root, _ = datasets["zju_mocap"]
    dm = AvatarDataModule("zju_mocap", root=root, batch_size=2, shuffle=False)
    # 2 cameras x 4 frames, unknown subject: train cam 0 on frames 0..2, view/pose tests on cam 1
    assert dm.test_split_names == ["test_view", "test_pose"]
    view, pose = dm.test_dataloader()
    assert [int(x) for b in view for x in b["camera_id"]] == [1]
    assert [int(x) for b in pose for x in b["frame_id"]] == [3]
    assert [int(x) for b in dm.train_dataloader() for x in b["frame_id"]] == [0, 1, 2]


def test_cache_auto_budget_and_workers(datasets):
    root, options = datasets["people_snapshot"]
    small = AvatarDataModule("people_snapshot", root=root, parser_options=options, cache="auto", cache_budget=1000)
    small.setup()
    assert not small.cache_enabled and small.estimated_cache_bytes > 1000
    # per item: 40 x 48 pixels x (3 + 1) float32 channels (+ small tensors)
    assert small.estimated_cache_bytes >= 40 * 48 * 16 * len(small.splits["train"])
    big = AvatarDataModule("people_snapshot", root=root, parser_options=options, cache="auto", num_workers=1,
                           batch_size=2, shuffle=False)
    big.setup()
    assert big.cache_enabled and len(big.cache) == 6  # filled before workers fork: train 0,2,4,6 + val/test 8,9
    reference = AvatarDataModule("people_snapshot", root=root, parser_options=options, cache=False, batch_size=2,
                                 shuffle=False)
    _assert_same(_batches(big.train_dataloader()), _batches(reference.train_dataloader()))


def test_max_val_frames_shuffle_and_prebuilt_sequence(datasets):
    root, _ = datasets["x_humans"]
    seq = PARSERS["x_humans"](root)
    dm = AvatarDataModule(seq, batch_size=2, max_val_frames=2, seed=3)
    assert dm.sequence is seq and len(dm.split_indices("val")) == 2
    first = [int(x) for b in dm.train_dataloader() for x in b["index"]]
    again = [int(x) for b in dm.train_dataloader() for x in b["index"]]
    assert sorted(first) == seq.splits["train"] and first == again  # seeded shuffle
    with pytest.raises(ValueError, match="root="):
        AvatarDataModule(seq, root=root)
    with pytest.raises(ValueError, match="needs root="):
        AvatarDataModule("neuman")
    with pytest.raises(KeyError, match="known formats"):
        AvatarDataModule("h36m", root=root)
    with pytest.raises(ValueError, match="unknown split"):
        AvatarDataModule(seq, val_split="validation")
    empty = AvatarDataModule(seq, train_split="test_view")
    with pytest.raises(ValueError, match="'test_view' of '00034' is empty"):
        empty.train_dataloader()


class _TinyModule(L.LightningModule):
    """Fits a per-frame colour to the masked pixels: exercises fit / validate / test hooks."""

    def __init__(self, num_frames: int) -> None:
        super().__init__()
        self.colors = torch.nn.Parameter(torch.zeros(num_frames, 3))
        self.seen_test: list[int] = []

    def _loss(self, batch: dict) -> torch.Tensor:
        ids = batch["index"] % self.colors.shape[0]
        pred = self.colors[ids][:, :, None, None] * batch["mask"]
        return ((pred - batch["image"] * batch["mask"]) ** 2).mean()

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch), batch_size=batch["image"].shape[0])

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen_test.append(dataloader_idx)
        self.log("test_loss", self._loss(batch), batch_size=batch["image"].shape[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_and_test(datasets, tmp_path: Path):
    root, _ = datasets["zju_mocap"]
    dm = AvatarDataModule("zju_mocap", root=root, batch_size=2)
    model = _TinyModule(dm.num_frames)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    before = model.colors.detach().clone()
    trainer.fit(model, datamodule=dm)
    assert not torch.equal(before, model.colors.detach())
    trainer.test(model, datamodule=dm, verbose=False)
    assert sorted(set(model.seen_test)) == [0, 1]  # one loader per non-empty test split
    assert np.isfinite(float(trainer.callback_metrics["test_loss/dataloader_idx_0"]))
