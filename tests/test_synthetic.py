"""Synthetic subjects: motion, texture, rasterized images, cameras and the ``python -m zoo data synth`` CLI.

Everything runs on tiny images and few frames; the body models are the procedural ones of the
session fixture ``body_models_root`` (conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.core import mesh
from zoo.synthetic import subject as syn
from zoo.synthetic import texture as tex
from zoo.synthetic.motion import HELDOUT_PROGRAMS, STYLES, make_motion, num_heldout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def subject(body_models_root):
    return syn.make_subject(3, "smpl", body_models=body_models_root)


@pytest.fixture(scope="module")
def capture(subject):
    """Eight frames (the last one held out) seen by two ring cameras at 48x48."""
    motion = syn.ground_motion(subject, make_motion(8, 3, "mix", heldout_fraction=0.125))
    rig = syn.ring_rig(len(motion), 2, 48)
    return motion, rig, syn.render_capture(subject, motion, rig)


def _render_one(body_models_root, seed):
    subject = syn.make_subject(seed, "smpl", body_models=body_models_root)
    motion = syn.ground_motion(subject, make_motion(2, seed, "turn"))
    cap = syn.render_capture(subject, motion, syn.ring_rig(2, 1, 40))
    return subject, cap


# --------------------------------------------------------------------------------------------
# Motion


@pytest.mark.parametrize("style", STYLES)
def test_motion_is_smooth_and_heldout_poses_are_novel(style):
    m = make_motion(150, seed=1, style=style)
    assert m.body_pose.shape == (150, 69) and m.global_orient.shape == (150, 3) and m.transl.shape == (150, 3)
    assert m.heldout.sum() == num_heldout(150, 0.2) == 30 and m.heldout[-30:].all()
    assert np.isfinite(m.body_pose).all() and np.all(m.transl[:, 1] == 0)
    train, test = m.body_pose[~m.heldout], m.body_pose[m.heldout]
    # Smooth and humanly fast: no joint angle changes faster than 6 rad/s (~340 deg/s), at any
    # sampling density (a dense resampling of the same program checks between the frames too).
    dense = make_motion(1000, seed=1, style=style)
    for part in (~dense.heldout, dense.heldout):
        speed = np.abs(np.diff(dense.body_pose[part], axis=0)) / np.diff(dense.times[part])[:, None]
        assert speed.max() < 6.0
    # Novel: every held-out pose has a joint at least ~17 degrees away from every training pose.
    nearest = np.array([np.abs(train - p).max(axis=1).min() for p in test])
    assert nearest.min() > 0.3
    assert set(HELDOUT_PROGRAMS[style]).isdisjoint({"apose_turn", "walk", "arm_raise", "squat"})


def test_motion_smplx_keys_and_split_rule():
    m = make_motion(7, seed=0, style="mix", model_type="smplx")
    shapes = {k: v.shape for k, v in m.params().items()}
    assert shapes == {"global_orient": (7, 3), "body_pose": (7, 63), "transl": (7, 3), "jaw_pose": (7, 3),
                      "leye_pose": (7, 3), "reye_pose": (7, 3), "left_hand_pose": (7, 45),
                      "right_hand_pose": (7, 45), "expression": (7, 10)}
    # Training part = ceil(0.8 N), as the parsers' default split rule (N = 13 -> 11 train).
    assert [num_heldout(n, 0.2) for n in (1, 2, 5, 10, 13)] == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="style"):
        make_motion(5, style="dance")


# --------------------------------------------------------------------------------------------
# Determinism, texture, images


def test_same_seed_is_identical_and_other_seeds_differ(body_models_root):
    s1, c1 = _render_one(body_models_root, 5)
    s2, c2 = _render_one(body_models_root, 5)
    s3, c3 = _render_one(body_models_root, 6)
    assert np.array_equal(s1.betas, s2.betas)
    for a, b in zip(c1.frames, c2.frames):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.depth, b.depth)
    assert not np.allclose(s1.betas, s3.betas)
    assert not np.allclose(s1.appearance.shirt, s3.appearance.shirt) or s1.appearance.shirt_pattern != \
        s3.appearance.shirt_pattern
    assert not np.array_equal(c1.frames[0].image, c3.frames[0].image)


def test_texture_has_clothing_and_face_regions(subject):
    """Dense surface samples show every colour region: shirt (two colours), trousers, shoes, skin,
    hair, eyes and mouth, and the shirt differs clearly from the trousers."""
    gen = torch.Generator().manual_seed(0)
    v = subject.features[:, :3]
    _, face_idx, bary = mesh.sample_surface(v, subject.faces, 60000, generator=gen)
    feats = mesh.interpolate(subject.features, subject.faces, face_idx, bary)
    colors = tex.texture_color(feats, subject.appearance, subject.marks).numpy()
    a = subject.appearance

    def matches(c):
        return np.all(np.abs(colors - np.asarray(c, dtype=np.float32)) < 1e-5, axis=1)

    for name in ("shirt", "shirt_alt", "trousers", "shoes", "skin", "hair", "lips"):
        assert matches(getattr(a, name)).sum() > 20, name
    assert matches([0.95, 0.95, 0.95]).sum() > 0  # eye whites
    assert np.linalg.norm(a.shirt - a.trousers) > 0.3 and np.linalg.norm(a.shirt - a.skin) > 0.3
    # Upper torso is shirt-coloured, thighs trouser-coloured.
    parts = tex.split_features(feats)
    torso = (parts["parts"][:, 0] > 0.9) & (feats[:, 1] > float(subject.marks.waist_y) + 0.1)
    thigh = (parts["parts"][:, 3] > 0.9) & (parts["s_leg"] > 0.1) & (parts["s_leg"] < 0.3)
    shirtish = matches(a.shirt) | matches(a.shirt_alt) | matches(a.print_color)
    assert shirtish[torso.numpy()].mean() > 0.9
    assert thigh.sum() > 100 and matches(a.trousers)[thigh.numpy()].all()


def test_appearances_vary_and_keep_regions_apart():
    looks = [tex.make_appearance(seed) for seed in range(200)]
    for a in looks:
        assert np.linalg.norm(a.shirt - a.trousers) > 0.3 and np.linalg.norm(a.shirt - a.skin) > 0.3
        assert np.linalg.norm(a.shirt - a.shirt_alt) > 0.3 and np.linalg.norm(a.trousers - a.skin) > 0.2
    assert {a.shirt_pattern for a in looks} == set(tex.SHIRT_PATTERNS)
    assert len({tuple(np.round(a.shirt, 3)) for a in looks}) > 50  # jittered palette colours
    assert any(a.sleeve < 0.5 for a in looks) and any(a.sleeve > 0.8 for a in looks)  # short and long sleeves


def test_cloth_offsets_are_mild_and_pose_dependent(subject):
    motion = make_motion(12, 3, "arm_raise")
    clothed, _ = syn.pose_subject(subject, motion)
    with torch.no_grad():
        params = {k: torch.as_tensor(v) for k, v in motion.params().items()}
        params["betas"] = torch.as_tensor(subject.betas)[None].expand(len(motion), -1)
        plain = subject.body(params).vertices
    offset = (clothed - plain).norm(dim=-1)  # [F, V]
    assert 0.0 < offset.max() < 0.03
    per_frame = offset.amax(dim=1)
    assert per_frame.max() - per_frame.min() > 0.003  # raised arms flare the sleeves


def test_images_masks_depth_and_pelvis(capture, subject):
    motion, rig, cap = capture
    assert len(cap.frames) == 16 and cap.splits["test_pose"] == [7] and cap.splits["train"] == list(range(7))
    _, joints = syn.pose_subject(subject, motion)
    for fr in cap.frames:
        img, mask, depth = fr.image, fr.mask, fr.depth
        assert img.dtype == np.uint8 and img.shape == (48, 48, 3) and set(np.unique(mask)) <= {0, 1}
        assert 0.02 < mask.mean() < 0.5  # a person, not a speck and not the whole frame
        assert (depth[mask == 1] > 0).all() and (depth[mask == 0] == 0).all()
        # Black background: nothing drawn beyond one pixel of the mask (anti-aliased edges only).
        near = torch.nn.functional.max_pool2d(torch.as_tensor(mask, dtype=torch.float32)[None, None], 3, 1, 1)[0, 0]
        assert (img[near.numpy() == 0] == 0).all()
        # The pelvis joint projects inside the mask, at a depth within the body's depth range.
        uv, z = mesh.project_points(joints[fr.frame_id, :1], torch.as_tensor(fr.K).float(),
                                    torch.as_tensor(fr.w2c).float())
        u, v = np.round(uv[0].numpy()).astype(int)
        assert mask[v, u] == 1
        assert depth[mask == 1].min() - 0.3 < float(z[0]) < depth[mask == 1].max() + 0.3


def test_cameras_look_at_the_target():
    rig = syn.ring_rig(3, 8, 64, radius=3.0, height=1.2, target_y=0.9)
    assert rig.w2c.shape == (3, 8, 4, 4) and rig.K.shape == (3, 8, 3, 3)
    centres = -np.einsum("cji,cj->ci", rig.w2c[0, :, :3, :3], rig.w2c[0, :, :3, 3])
    assert np.allclose(np.linalg.norm(centres[:, [0, 2]], axis=1), 3.0) and np.allclose(centres[:, 1], 1.2)
    uv, z = mesh.project_points(torch.tensor([[0.0, 0.9, 0.0]]).double(), torch.as_tensor(rig.K[0]),
                                torch.as_tensor(rig.w2c[0]))
    assert torch.allclose(uv, torch.full_like(uv, 31.5)) and (z > 0).all()  # principal point (W - 1) / 2
    fov = 2 * np.degrees(np.arctan(32.0 / rig.K[0, 0, 1, 1]))
    assert 40.0 <= fov <= 50.0
    small = rig.resized(32, 32)
    assert np.allclose(small.K[0, 0, :2, 2], 15.5) and np.allclose(small.K[0, 0, 1, 1], rig.K[0, 0, 1, 1] / 2)
    orbit = syn.orbit_rig(5, 100, 32)
    assert orbit.camera_ids[:, 0].tolist() == [25, 26, 27, 28, 29]


# --------------------------------------------------------------------------------------------
# Writing every format through the CLI, reading it back with the parsers


_CLI = {
    "zju_mocap": (["--cameras", "3"], {"body_models": True}, 3),
    "people_snapshot": ([], {}, 1),
    "neuman": ([], {"body_models": True}, 1),
    "x_humans": (["--cameras", "50"], {}, 1),
}


@pytest.mark.parametrize("fmt", sorted(_CLI))
def test_cli_writes_format_and_parser_reads_it_back(fmt, tmp_path, body_models_root, capsys):
    from zoo.__main__ import main
    from zoo.core.body import BodyModel
    from zoo.data.parsers import PARSERS

    extra, opts, cams = _CLI[fmt]
    frames = 5
    out = tmp_path / fmt
    code = main(["data", "synth", "--format", fmt, "--out", str(out), "--frames", str(frames), "--res", "40",
                 "--body-models", str(body_models_root), "--quiet", *extra])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote 1 {fmt} subject(s) to {out}" in printed and "4 train, 1 held-out" in printed
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1 and (out / "synthetic.json").is_file()
    options = {"body_models": body_models_root} if opts.get("body_models") else {}
    seq = PARSERS[fmt](folders[0], **options)
    assert seq.num_frames == frames and len(seq) == frames * cams
    assert len(seq.splits["test_pose"]) >= 1 and len(seq.splits["train"]) >= 1
    # Conventions survive the round trip: the parsed body, posed and projected with the parsed
    # camera, covers the written mask.
    item = seq[seq.splits["train"][0]]
    body = {k: v[None] for k, v in item["body"].items()}
    scale = body.pop("scale", None)
    transl = body["transl"].clone()
    if scale is not None:
        body["transl"] = torch.zeros_like(transl)
    model = BodyModel(seq.model_type, body_models_root, gender=seq.gender)
    with torch.no_grad():
        verts = model(body).vertices[0]
    if scale is not None:
        verts = verts * scale[0] + transl[0]
    uv, z = mesh.project_points(verts, item["K"].float(), item["w2c"].float())
    face_index, _ = mesh.rasterize_triangles(uv + 0.5, z, model.faces, 40, 40)
    ours, theirs = face_index >= 0, item["mask"][0] > 0.5
    assert (ours & theirs).sum() / (ours | theirs).sum() > 0.75


def test_cli_errors_are_one_line(tmp_path, body_models_root, capsys):
    from zoo.__main__ import main

    code = main(["data", "synth", "--format", "people_snapshot", "--out", str(tmp_path / "ps"), "--cameras", "3",
                 "--frames", "3", "--res", "32", "--body-models", str(body_models_root), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "monocular" in err[0]
    assert not (tmp_path / "ps").exists() or not any((tmp_path / "ps").iterdir())
    with pytest.raises(SystemExit):
        main(["data", "synth", "--format", "not_a_format", "--out", str(tmp_path)])


def test_ensure_synthetic_writes_once(tmp_path, body_models_root):
    root = tmp_path / "synth"
    first = syn.ensure_synthetic(root, format="people_snapshot", frames=4, res=32, body_models=body_models_root)
    image = next((first / "images").iterdir())
    stamp = image.stat().st_mtime_ns
    again = syn.ensure_synthetic(root, format="people_snapshot", frames=4, res=32, body_models=body_models_root)
    assert again == first and image.stat().st_mtime_ns == stamp
    info = syn.read_manifest(first)
    assert info["body_models"] == str(body_models_root) and info["paths"] == [first.name] and info["frames"] == 4
    other = syn.ensure_synthetic(root, format="people_snapshot", frames=5, res=32, body_models=body_models_root)
    assert other == first and len(list((first / "images").iterdir())) == 5  # other settings: rewritten
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="synthetic.json"):
        syn.ensure_synthetic(foreign, format="people_snapshot", frames=4, res=32, body_models=body_models_root)


def test_several_subjects_share_one_dataset_folder(tmp_path, body_models_root):
    paths = syn.synthesize("zju_mocap", tmp_path, subjects=2, frames=2, res=24, cameras=2,
                           body_models=body_models_root)
    assert [p.name for p in paths] == ["CoreView_900", "CoreView_901"] and all(p.parent == tmp_path for p in paths)


def test_python_m_zoo_entry_point():
    r = subprocess.run([sys.executable, "-m", "zoo", "data", "synth", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--format" in r.stdout and "x_humans" in r.stdout
