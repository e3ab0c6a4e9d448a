"""Resume: a run killed with SIGKILL mid-epoch and resumed with ckpt_path=<run>/checkpoints/last.ckpt
continues in the same run folder and the same W&B run, and ends with bitwise the parameters (and
optimizer state) of an uninterrupted run on CPU. Also the resumable sampler's arithmetic."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
K = 12  # steps of the run (the tiny subject has 7 training frames: two epochs, a resume mid-epoch)
EVERY = 3  # checkpoints/last.ckpt every 3 steps


def _train(args, cwd: Path, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
    # each run its own wandb service: a WANDB_SERVICE token left in this process's environment by an
    # earlier in-process test would make the children share its service, where the killed victim's
    # stream stays open and the resumed run's id is refused as "in use"
    env.pop("WANDB_SERVICE", None)
    cmd = [sys.executable, str(REPO / "train.py"), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _step_of(path: Path):
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # not there yet, or being written
        return None


def test_killed_run_resumes_bitwise(tiny_subject, body_models_root, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    common = ["experiment=gaussian_avatar_tiny", f"data.root={tiny_subject}", "data.synthesize=null",
              f"body_models={body_models_root}", "test_after_fit=false", "trainer.enable_progress_bar=false",
              f"method.max_steps={K}", f"checkpoint_every={EVERY}", "seed=3"]
    full, victim = tmp_path / "full", tmp_path / "victim"
    # the uninterrupted run (in the background while the victim starts: both are single-threaded)
    reference = _train([*common, "logger=csv", f"trainer.max_steps={K}", f"run_dir={full}"], cwd)
    # the victim would train far past K (method.max_steps pins every schedule to the K-step run); it is
    # killed as soon as its first last.ckpt is on disk, well before step K
    # its own process group: the kill takes wandb's service process with it, as a killed job's would
    proc = _train([*common, "logger=wandb", "trainer.max_steps=100000", f"run_dir={victim}"], cwd,
                  start_new_session=True)
    last = victim / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (_step_of(last) or 0) < EVERY:
        time.sleep(0.01)
    assert proc.poll() is None, f"the victim ended before it was killed:\n{proc.communicate()[0][-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = _step_of(last)
    assert saved is not None and EVERY <= saved < K and saved % EVERY == 0, saved
    assert not (victim / "metrics.json").exists()
    wandb_id = (victim / "wandb_id").read_text().strip()
    assert wandb_id

    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out[-3000:]
    # resume: no run_dir given; the run folder is the checkpoint's
    resumed = _train([*common, "logger=wandb", f"trainer.max_steps={K}", f"ckpt_path={last}"], cwd)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert f"resuming {victim} from step {saved} ({last})" in out
    assert not (cwd / "runs").exists(), "the resumed run made a new run folder"
    assert (victim / "metrics.json").is_file() and (victim / "config.yaml").is_file()
    assert (victim / "wandb_id").read_text().strip() == wandb_id
    runs = sorted(p.name for p in (victim / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith("-" + wandb_id) for name in runs), runs  # the same W&B run

    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == K
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])]
    assert not differ, f"parameters differ from the uninterrupted run: {differ[:8]}"
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"]):
        for key, state in sa["state"].items():
            for name, value in state.items():
                if torch.is_tensor(value):
                    assert torch.equal(value, sb["state"][key][name]), (key, name)


def test_resumable_sampler_positions():
    from zoo.data.sampling import EpochSampler, ResumableLoader

    epoch0 = list(EpochSampler(10, seed=5))
    sampler = EpochSampler(10, seed=5)
    sampler.set_epoch(2)
    epoch2 = list(sampler)
    assert sorted(epoch2) == list(range(10)) and epoch2 != epoch0  # a new permutation per epoch
    loader = ResumableLoader(list(range(10)), EpochSampler(10, seed=5), batch_size=3)
    loader.load_state_dict({"epoch": 2, "batches": 2})  # 2 batches of epoch 2 trained: continue at the third
    assert [int(x) for batch in loader for x in batch] == epoch2[6:]
    assert [int(x) for batch in loader for x in batch] == epoch2  # the skip applies once
    loader.load_state_dict({"epoch": 2, "batches": 4})  # saved at the end of epoch 2: epoch 3 from the start
    sampler.set_epoch(3)
    assert [int(x) for batch in loader for x in batch] == list(sampler)
    state = loader.state_dict()  # without a trainer: the batches this loader handed out
    assert state["batches"] == 4 and state["epoch"] == 3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
