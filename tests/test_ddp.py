"""DDP with Lightning's own strategy on CPU (gloo): trainer=ddp trains with 2 processes; the test
metrics reduced over 2 ranks equal a single process's on the same checkpoint and data; each rank's
training indices (frames) and subjects (multi-subject data) are disjoint and cover the set;
evaluation shards count every item once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(script: str, args, cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def test_two_process_training_and_synced_test_metrics(tiny_subject, body_models_root, tmp_path):
    run = tmp_path / "ddp"
    out = _run("train.py", ["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
                            f"body_models={body_models_root}", "logger=csv", "trainer=ddp", "trainer.accelerator=cpu",
                            "trainer.devices=2", "trainer.max_steps=4", "trainer.val_check_interval=4",
                            "trainer.limit_val_batches=1.0", "trainer.enable_progress_bar=false", f"run_dir={run}"],
               tmp_path)
    assert "test_view" in out  # the table is printed once, by rank 0
    two = json.loads((run / "metrics.json").read_text())
    assert two["steps"] == 4 and two["metrics"]
    ckpt = Path(two["checkpoint"])
    assert ckpt.is_file()
    # the same checkpoint scored by one process (eval.py); the 2-rank numbers were reduced by torchmetrics
    _run("eval.py", [f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'one'}", f"body_models={body_models_root}",
                     "save_images=false"], tmp_path)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    assert set(one) == set(two["metrics"]) == {"test_view", "test_pose"}
    # eval.py itself under trainer=ddp: 2 ranks score shards; rank 0 alone prints and writes metrics.json
    out = _run("eval.py", [f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'two'}", f"body_models={body_models_root}",
                           "save_images=false", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], tmp_path)
    assert out.count("metrics: ") == 1
    two_eval = json.loads((tmp_path / "two" / "metrics.json").read_text())["metrics"]
    assert two_eval.keys() == one.keys()
    for split, values in one.items():
        for key, value in values.items():
            assert two_eval[split][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (split, key)
    for split, values in one.items():
        assert set(values) == set(two["metrics"][split])
        for key, value in values.items():
            assert two["metrics"][split][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (split, key)


def test_frame_shards_are_disjoint_and_cover(tiny_subject, body_models_root):
    from zoo.data.datamodule import AvatarDataModule
    from zoo.data.sampling import EpochSampler, ShardSampler

    for epoch in (0, 3):
        shards = []
        for rank in range(2):
            sampler = EpochSampler(10, num_replicas=2, rank=rank, seed=1)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        assert len(shards[0]) == len(shards[1]) == 5
        assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(10))
    evals = [list(ShardSampler(7, 2, rank)) for rank in range(2)]  # unpadded: each item once
    assert evals == [[0, 2, 4, 6], [1, 3, 5]]
    # the data module shards its training frames by the attached trainer's ranks
    dm = AvatarDataModule("zju_mocap", root=tiny_subject, parser_options={"body_models": str(body_models_root)},
                          batch_size=1, seed=2)
    dm.setup()
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, current_epoch=0, fit_loop=None)
        seen.append([int(i) for i in dm.train_dataloader().sampler])
    n = len(dm.split_indices("train"))
    assert len(seen[0]) == len(seen[1]) == (n + 1) // 2
    assert set(seen[0]) | set(seen[1]) == set(range(n))
    if n % 2 == 0:
        assert not set(seen[0]) & set(seen[1])


def test_subject_shards_are_disjoint(tmp_path_factory, body_models_root):
    from zoo.data.multi_subject import MultiSubjectDataModule
    from zoo.synthetic.subject import synthesize

    root = tmp_path_factory.mktemp("multi")
    synthesize("zju_mocap", root, subjects=5, frames=4, res=24, seed=3, cameras=3, body_models=body_models_root)
    dm = MultiSubjectDataModule("zju_mocap", root=root, parser_options={"body_models": str(body_models_root)},
                                test_subjects=1, num_context=2, num_target=1, context_res=16, items_per_epoch=12,
                                seed=4)
    dm.setup()
    subjects, items = [], []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, current_epoch=0, fit_loop=None)
        loader = dm.train_dataloader()
        indices = list(loader.sampler)
        assert len(indices) == 6
        items.append({i % 12 for i in indices})
        subjects.append({int(row["subject_id"]) for i in indices for row in loader.dataset[i]})
    assert not items[0] & items[1] and items[0] | items[1] == set(range(12))
    assert not subjects[0] & subjects[1], subjects  # each rank trains on its own subjects
    assert subjects[0] | subjects[1] <= set(dm.train_subjects) and len(subjects[0] | subjects[1]) > 2
    dm.trainer = SimpleNamespace(world_size=5, global_rank=0, current_epoch=0, fit_loop=None)
    with pytest.raises(ValueError, match="5 DDP ranks need at least 5 training subjects"):
        dm.train_dataloader()
