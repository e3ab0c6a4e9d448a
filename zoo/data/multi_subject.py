"""Multi-subject data for feed-forward (generalizable) avatars: context views + target views.

A feed-forward method (NoPo-Avatar) trains one network across many people. Each *item* is one
subject: ``V`` **context** views (the images the network turns into an avatar) and ``T``
**target** views of the same subject (what the avatar is rendered into and scored against),
taken across that subject's frames. Items never mix subjects.

Subjects come from several subject folders of one format (``roots=[...]``) or from one dataset
root that holds many (``root=...``: the subjects ``synthetic.json`` lists, as written by
``python -m zoo data synth --subjects N``, else every sub-folder the format's parser accepts, e.g.
an X-Humans root). Every subject is parsed by its format's one parser (:data:`PARSERS`).

Splits (subject-level; a held-out subject is never trained on):

* ``train``: the training subjects, their *motion* frames (every frame the parser does not hint
  as a held-out novel pose). Context and targets are drawn at random per item (seeded): context =
  ``V`` cameras of one frame, spread around the ring (monocular formats: ``V`` different frames);
  targets = ``T`` other views of the same subject. With probability ``same_frame_targets`` (a
  schedule over the run, see :meth:`MultiSubjectDataModule.set_progress`) a target comes from the
  context frame (same pose, another camera), else from another frame (another pose).
* ``val`` (model selection): the training subjects' held-out-motion frames, from a fixed context;
  never a test subject.
* ``test_view``: the held-out subjects' motion frames, every camera but the context views.
* ``test_pose``: the held-out subjects' held-out-motion frames (poses no training item shows).

Evaluation items use one fixed context per subject: its first motion frame, cameras evenly spread
starting at the first camera (monocular formats: evenly spaced frames).

Batch (the shared contract of :mod:`zoo.data.schema`, one row per *target* view, plus):

* ``subject_id [B]`` int64: index into :attr:`MultiSubjectDataModule.subjects`.
* ``context`` dict, the V views of the row's subject: ``image [B,V,3,R,R]`` (composited on black
  with its mask), ``mask [B,V,1,R,R]``, ``K [B,V,3,3]``, ``w2c [B,V,4,4]``, ``body`` (dict of
  ``[B,V,D]``), ``frame_id [B,V]``, ``camera_id [B,V]``, and ``group [B]`` int64 (rows with the
  same group share the very same context: a method encodes it once). With ``context_crop`` the
  views are cut to a square around the person's mask box and resized to ``R = context_res`` (K
  follows). ``K``, ``w2c`` and ``body`` of the context exist for training losses only: a
  pose-free method must not read them to build its avatar.

Target poses can be perturbed for robustness studies (``target_pose_noise``: the zoo's pose-noise
model, :mod:`zoo.core.pose_noise`, one draw per subject over its frame ids) in the scored splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from zoo.data.parsers import PARSERS
from zoo.data.sampling import EpochSampler, ResumableLoader, dist_info, eval_sampler, trainer_progress
from zoo.data.schema import BODY, DatasetError, FrameSequence, MissingFileError, collate, evenly_spaced

__all__ = ["MultiSubjectDataModule", "discover_subjects", "collate_items", "crop_views", "SPLITS"]

#: Split names served (subject-level, see the module docstring).
SPLITS = ("train", "val", "test_view", "test_pose")
_MANIFEST = "synthetic.json"


def discover_subjects(format: str, root: str | Path | None = None, roots: Sequence[str | Path] | None = None,
                      subjects: Sequence[str] | None = None, parser_options: Mapping[str, Any] | None = None
                      ) -> List[Path]:
    """The subject folders of a multi-subject dataset.

    Args:
        format: dataset format (a key of :data:`PARSERS`).
        root: a dataset folder holding many subjects: those its ``synthetic.json`` lists, else every
            sub-folder (sorted by name) the format's parser accepts.
        roots: explicit subject folders (instead of ``root``).
        subjects: keep only these subject folder names, in this order.
        parser_options: options of the parser when sub-folders are probed (e.g. ``body_models``).

    Returns:
        Subject folders.

    Raises:
        MissingFileError: ``root`` (or a listed folder) is missing. DatasetError: no subject found, a
        named subject is absent, or fewer than two subjects remain.
    """
    if format not in PARSERS:
        raise KeyError(f"unknown dataset format {format!r}; known formats: {sorted(PARSERS)}")
    if (root is None) == (roots is None):
        raise ValueError("pass either root= (a folder holding many subjects) or roots= (subject folders), not both")
    if roots is not None:
        paths = [Path(r).expanduser() for r in roots]
        for p in paths:
            if not p.is_dir():
                raise MissingFileError(f"{p}: subject folder not found (data.roots)")
    else:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise MissingFileError(f"{base}: dataset root not found (data.root: a folder holding one folder per subject)")
        manifest = base / _MANIFEST
        if manifest.is_file():
            try:
                listed = json.loads(manifest.read_text()).get("paths") or []
            except ValueError as err:
                raise DatasetError(f"{manifest}: not valid JSON ({err})") from None
            paths = [base / p for p in listed if (base / p).is_dir()]
        else:
            paths = []
            for child in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
                try:
                    PARSERS[format](child, **dict(parser_options or {}))
                except (DatasetError, FileNotFoundError, ValueError):
                    continue
                paths.append(child)
        if not paths:
            raise DatasetError(f"{base}: no {format} subject folder found inside (expected one folder per subject, "
                               f"e.g. written by `python -m zoo data synth --format {format} --subjects N`)")
    if subjects:
        by_name = {p.name: p for p in paths}
        absent = [s for s in subjects if str(s) not in by_name]
        if absent:
            raise DatasetError(f"data.subjects names {absent} that are not among {sorted(by_name)}")
        paths = [by_name[str(s)] for s in subjects]
    return paths


def crop_views(image: torch.Tensor, mask: torch.Tensor, K: torch.Tensor, res: int, pad: float = 0.15
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut a square around the person's mask box and resize it to ``res x res``.

    Args:
        image: ``[3, H, W]``; mask: ``[1, H, W]``; K: ``[3, 3]`` (pixel-centre convention of the
            schema).
        res: output side.
        pad: margin around the box, a fraction of its longer side.

    Returns:
        ``(image [3,res,res], mask [1,res,res], K [3,3])``; outside the source image is black / 0.
        An empty mask keeps the whole image (resized).
    """
    H, W = image.shape[-2:]
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    if len(ys) == 0:
        x0, y0, side = 0.0, 0.0, float(max(H, W))
    else:
        top, bottom = float(ys.min()), float(ys.max()) + 1.0
        left, right = float(xs.min()), float(xs.max()) + 1.0
        side = max(bottom - top, right - left) * (1.0 + 2.0 * pad)
        side = max(side, 4.0)
        x0 = 0.5 * (left + right) - 0.5 * side
        y0 = 0.5 * (top + bottom) - 0.5 * side
    s = side / res  # source pixels per output pixel
    # output pixel centre u -> source coordinate x0 + (u + 0.5) s (pixel-edge coordinates)
    u = (torch.arange(res, dtype=torch.float32) + 0.5) * s
    gx = (x0 + u) / W * 2.0 - 1.0
    gy = (y0 + u) / H * 2.0 - 1.0
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]  # [1,res,res,2] (x, y)
    stacked = torch.cat([image, mask], dim=0)[None]
    if s > 1.0:  # shrinking: pre-blur by area averaging so the result is not aliased
        k = int(np.floor(s))
        if k > 1:
            stacked = F.avg_pool2d(stacked, k, stride=1, padding=k // 2, count_include_pad=False)[..., :H, :W]
    out = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    K2 = K.clone().double()
    K2[0, 0] /= s
    K2[0, 1] /= s
    K2[1, 1] /= s
    K2[0, 2] = (K[0, 2] + 0.5 - x0) / s - 0.5
    K2[1, 2] = (K[1, 2] + 0.5 - y0) / s - 0.5
    return out[:3].contiguous(), (out[3:] > 0.5).float(), K2.float()


def collate_items(items: Sequence[Sequence[Mapping[str, Any]]]) -> Dict[str, Any]:
    """Collate items (each a list of target rows sharing one context) into one batch of rows.

    Args:
        items: per item, its rows: target frame dicts (schema keys) with ``subject_id``, ``group``
            and ``context`` (dict of per-view tensors, ``body`` a dict).

    Returns:
        The batch (see the module docstring).
    """
    rows = [row for item in items for row in item]
    if not rows:
        raise ValueError("collate_items() needs at least one row")
    targets = [{k: v for k, v in r.items() if k not in ("context", "subject_id", "group")} for r in rows]
    batch = collate(targets)
    batch["subject_id"] = torch.tensor([int(r["subject_id"]) for r in rows], dtype=torch.long)
    ctx0 = rows[0]["context"]
    context: Dict[str, Any] = {}
    for key, value in ctx0.items():
        if key == BODY:
            context[BODY] = {k: torch.stack([r["context"][BODY][k] for r in rows]) for k in value}
        else:
            shapes = {tuple(r["context"][key].shape) for r in rows}
            if len(shapes) != 1:
                raise ValueError(f"cannot collate context '{key}' of shapes {sorted(shapes)}: every item needs the "
                                 "same number of context views and context_res")
            context[key] = torch.stack([r["context"][key] for r in rows])
    context["group"] = torch.tensor([int(r["group"]) for r in rows], dtype=torch.long)
    batch["context"] = context
    return batch


class _Subject:
    """One subject's parsed sequence, its frame classes and a decoded-frame cache."""

    def __init__(self, sequence: FrameSequence, cache: bool) -> None:
        self.seq = sequence
        self.name = str(sequence.subject)
        held = {int(sequence.records[i].frame_id) for i in sequence.splits.get("test_pose", [])}
        self.heldout = [i for i, r in enumerate(sequence.records) if int(r.frame_id) in held]
        self.motion = [i for i, r in enumerate(sequence.records) if int(r.frame_id) not in held]
        if not self.motion:
            raise DatasetError(f"{sequence.root or self.name}: subject has no frames outside its held-out poses")
        by_frame: Dict[int, List[int]] = {}
        for i in self.motion:
            by_frame.setdefault(int(sequence.records[i].frame_id), []).append(i)
        for ids in by_frame.values():
            ids.sort(key=lambda i: int(sequence.records[i].camera_id))
        self.by_frame = by_frame
        self.frames = sorted(by_frame)
        self.cache: Optional[Dict[int, Dict[str, Any]]] = {} if cache else None
        self.noisy_body: Dict[int, Dict[str, np.ndarray]] = {}

    def frame(self, i: int) -> Dict[str, Any]:
        if self.cache is None:
            return self.seq[i]
        got = self.cache.get(i)
        if got is None:
            got = self.seq[i]
            self.cache[i] = got
        return got

    def context_records(self, V: int, rng: Optional[np.random.Generator] = None) -> List[int]:
        """``V`` context records: cameras of one frame spread around (random frame and offset with
        ``rng``, else the first frame from its first camera); monocular: ``V`` spread frames."""
        multi = [f for f in self.frames if len(self.by_frame[f]) >= V]
        if multi:
            f = multi[int(rng.integers(len(multi)))] if rng is not None else multi[0]
            cams = self.by_frame[f]
            n = len(cams)
            start = int(rng.integers(n)) if rng is not None else 0
            return [cams[(start + int(round(j * n / V))) % n] for j in range(V)]
        if len(self.frames) < V:
            raise DatasetError(f"{self.name}: {V} context views need {V} cameras of one frame or {V} frames; the "
                               f"subject has {len(self.frames)} frames with at most "
                               f"{max(len(c) for c in self.by_frame.values())} cameras")
        if rng is not None:
            frames = sorted(rng.choice(len(self.frames), size=V, replace=False).tolist())
        else:
            frames = [int(round(j * (len(self.frames) - 1) / max(V - 1, 1))) for j in range(V)]
        return [self.by_frame[self.frames[k]][0] for k in frames]


class _ItemDataset(Dataset):
    """Items of one split: a list of (subject, context records, target records) specs, or random
    training items drawn from a seeded generator per index."""

    def __init__(self, dm: "MultiSubjectDataModule", split: str, specs: Optional[List[tuple]] = None,
                 length: int = 0) -> None:
        self.dm = dm
        self.split = split
        self.specs = specs
        self.length = int(length) if specs is None else len(specs)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, j: int) -> List[Dict[str, Any]]:
        dm = self.dm
        if self.specs is not None:
            s, ctx, targets, group = self.specs[j]
        else:  # j = rank * length + item (_SubjectShardSampler): the item's subject is one of the rank's
            rank, j = divmod(int(j), self.length)
            pool = dm.rank_subjects(rank)
            rng = np.random.default_rng([dm.seed, int(j), int(dm.epoch_counter[0])])
            s = pool[int(rng.integers(len(pool)))]
            ctx, targets = dm.sample_train_item(s, rng)
            group = 1_000_000 + int(j)
        return dm.make_rows(s, ctx, targets, group, noisy=self.split in dm.noise_splits)


class _SubjectShardSampler(EpochSampler):
    """The training items of one rank (an :class:`EpochSampler` over the epoch's items), offset by
    ``rank * items``: the dataset draws each item's subject among that rank's subjects only."""

    def __iter__(self) -> Iterator[int]:
        offset = self.rank * len(self.dataset)
        return iter([i + offset for i in super().__iter__()])


class MultiSubjectDataModule(L.LightningDataModule):
    """Context + target views across many subjects (see the module docstring).

    Args:
        format: the subjects' format (a key of :data:`PARSERS`).
        root: a dataset folder holding many subjects (or pass ``roots``).
        roots: subject folders.
        subjects: keep only these subject names (in this order).
        parser_options: options of the format's parser (``resolution`` ...).
        test_subjects: held-out subjects: a count (the last ones in order) or a list of names.
        num_context: context views ``V`` per item.
        num_target: target views ``T`` per training item.
        context_crop: cut context views to the person's box (see :func:`crop_views`).
        context_res: side of the context views with ``context_crop`` (default: the image height).
        items_per_epoch: training items per epoch (drawn at random, seeded).
        batch_size: items per training batch (rows = items x num_target); evaluation batches hold
            ``batch_size x num_target`` rows.
        num_workers: DataLoader workers.
        cache: keep decoded frames in memory.
        max_val_targets: target rows of the val split per training subject (evenly spaced).
        max_test_targets: target rows per held-out subject and split (None: all).
        same_frame_targets: probability that a training target comes from the context frame: a
            number, or ``{start, end, ramp}`` (from ``start`` to ``end`` over the first ``ramp``
            fraction of training; the module's :meth:`set_progress` advances it).
        target_pose_noise: pose-noise config (:class:`zoo.core.pose_noise.PoseNoiseConfig` fields)
            applied to the target bodies of ``noise_splits``; None: exact poses.
        noise_splits: the splits whose target poses get the noise.
        seed: seed of the training items.
    """

    def __init__(self, format: str, root: str | Path | None = None, roots: Sequence[str | Path] | None = None,
                 subjects: Sequence[str] | None = None, parser_options: Mapping[str, Any] | None = None,
                 test_subjects: int | Sequence[str] = 2, num_context: int = 3, num_target: int = 2,
                 context_crop: bool = True, context_res: Optional[int] = None, items_per_epoch: int = 1000,
                 batch_size: int = 1, num_workers: int = 0, cache: bool = True, max_val_targets: int = 4,
                 max_test_targets: Optional[int] = None, same_frame_targets: Any = 0.25,
                 target_pose_noise: Optional[Mapping[str, Any]] = None,
                 noise_splits: Sequence[str] = ("test_view", "test_pose"), seed: int = 0) -> None:
        super().__init__()
        if int(num_context) < 1 or int(num_target) < 1:
            raise ValueError(f"num_context and num_target must be >= 1, got {num_context}, {num_target}")
        if int(batch_size) < 1 or int(items_per_epoch) < 1:
            raise ValueError(f"batch_size and items_per_epoch must be >= 1, got {batch_size}, {items_per_epoch}")
        bad = [s for s in noise_splits if s not in SPLITS]
        if bad:
            raise ValueError(f"noise_splits {bad} are not splits; expected some of {list(SPLITS)}")
        self.format = str(format)
        self.parser_options = dict(parser_options or {})
        self.paths = discover_subjects(self.format, root, roots, subjects, self.parser_options)
        self.num_context, self.num_target = int(num_context), int(num_target)
        self.context_crop = bool(context_crop)
        self.context_res = None if context_res is None else int(context_res)
        self.items_per_epoch, self.batch_size = int(items_per_epoch), int(batch_size)
        self.num_workers = int(num_workers)
        self.cache = bool(cache)
        self.max_val_targets = int(max_val_targets)
        self.max_test_targets = None if max_test_targets is None else int(max_test_targets)
        self.same_frame_spec = same_frame_targets
        self.noise_cfg = dict(target_pose_noise) if target_pose_noise else None
        self.noise_splits = tuple(noise_splits) if self.noise_cfg else ()
        self.seed = int(seed)
        self.test_subjects_spec = test_subjects
        # shared with DataLoader workers (forked): training progress in [0, 1] and an epoch counter
        self.progress = torch.zeros(1).share_memory_()
        self.epoch_counter = torch.zeros(1, dtype=torch.long).share_memory_()
        self._subjects: Optional[List[_Subject]] = None
        self.val_split, self.test_splits = "val", ("test_view", "test_pose")
        self.train_world = 1  # DDP ranks of the training loader (train_dataloader sets it)

    # -- subjects and splits --------------------------------------------------------------------

    def _build(self) -> None:
        if self._subjects is not None:
            return
        subs = [_Subject(PARSERS[self.format](p, **self.parser_options), self.cache) for p in self.paths]
        names = [s.name for s in subs]
        if len(set(names)) != len(names):
            raise DatasetError(f"subject names repeat among {[str(p) for p in self.paths]}: {names}")
        spec = self.test_subjects_spec
        if isinstance(spec, (int, np.integer)):
            n = int(spec)
            if not 0 <= n < len(subs):
                raise DatasetError(f"test_subjects={n} must leave at least one of the {len(subs)} subjects for training")
            test = list(range(len(subs) - n, len(subs)))
        else:
            missing = [s for s in spec if s not in names]
            if missing:
                raise DatasetError(f"test_subjects names {missing} that are not among {names}")
            test = [names.index(s) for s in spec]
        self.test_subject_ids = test
        self.train_subjects = [i for i in range(len(subs)) if i not in test]
        if not self.train_subjects:
            raise DatasetError("every subject is held out (test_subjects); none is left for training")
        models = {s.seq.model_type for s in subs}
        if len(models) != 1:
            raise DatasetError(f"subjects mix body models {sorted(models)}; one model type per dataset")
        self._subjects = subs
        if self.noise_cfg:
            self._draw_noise()
        self._specs = {name: self._eval_specs(name) for name in ("val", "test_view", "test_pose")}

    @property
    def subjects(self) -> List[str]:
        """Subject names, indexed by ``batch["subject_id"]``."""
        self._build()
        return [s.name for s in self._subjects]

    @property
    def model_type(self) -> str:
        self._build()
        return self._subjects[0].seq.model_type

    @property
    def protocol(self) -> Dict[str, Any]:
        self._build()
        return dict(self._subjects[0].seq.protocol)

    def _draw_noise(self) -> None:
        from zoo.core.pose_noise import PoseNoiseConfig, perturb_poses

        cfg = PoseNoiseConfig.from_mapping(self.noise_cfg)
        for k, sub in enumerate(self._subjects):
            first: Dict[int, Any] = {}
            for r in sub.seq.records:
                first.setdefault(int(r.frame_id), r)
            ids = sorted(first)
            keys = [k2 for k2 in ("global_orient", "body_pose", "transl") if k2 in first[ids[0]].body]
            params = {key: np.stack([np.asarray(first[f].body[key], np.float64).reshape(-1) for f in ids]) for key in keys}
            cfg_k = PoseNoiseConfig(**{**cfg.__dict__, "seed": int(cfg.seed) + 1009 * k})
            noisy = perturb_poses(params, cfg_k, times=np.asarray(ids))
            sub.noisy_body = {f: {key: np.asarray(noisy[key][t], np.float32) for key in keys} for t, f in enumerate(ids)}

    def _eval_specs(self, split: str) -> List[tuple]:
        specs: List[tuple] = []
        subs = self.train_subjects if split == "val" else self.test_subject_ids
        for s in subs:
            sub = self._subjects[s]
            ctx = sub.context_records(self.num_context)
            pool = sub.heldout if split in ("val", "test_pose") else [i for i in sub.motion if i not in ctx]
            if split == "val":
                pool = evenly_spaced(pool, self.max_val_targets)
            elif self.max_test_targets is not None:
                pool = evenly_spaced(pool, self.max_test_targets)
            specs += [(s, ctx, [t], s) for t in pool]
        return specs

    def split_rows(self, name: str) -> List[tuple]:
        """``(subject index, context records, [target record], group)`` of every row of an evaluation split."""
        self._build()
        if name not in self._specs:
            raise ValueError(f"unknown evaluation split {name!r}; expected val, test_view or test_pose")
        return list(self._specs[name])

    def split_indices(self, name: str) -> List[int]:
        """Row positions of a split (train: one per item of an epoch); their count is the split size."""
        self._build()
        return list(range(self.items_per_epoch if name == "train" else len(self._specs[name])))

    @property
    def has_validation(self) -> bool:
        """Whether validation rows exist (training subjects' held-out poses)."""
        return bool(self.split_indices("val"))

    @property
    def test_split_names(self) -> List[str]:
        """Non-empty test splits (held-out subjects), in order."""
        self._build()
        return [n for n in self.test_splits if self._specs[n]]

    # -- items ------------------------------------------------------------------------------------

    def same_frame_probability(self) -> float:
        """The current probability that a training target comes from the context frame."""
        spec = self.same_frame_spec
        if isinstance(spec, (int, float)):
            return float(spec)
        spec = dict(spec)
        start, end, ramp = float(spec.get("start", 1.0)), float(spec.get("end", 0.25)), float(spec.get("ramp", 0.5))
        t = min(float(self.progress[0]) / ramp, 1.0) if ramp > 0 else 1.0
        return start + (end - start) * t

    def set_progress(self, fraction: float) -> None:
        """Tell the sampler how far training is (0..1); workers see it through shared memory."""
        self.progress[0] = float(min(max(fraction, 0.0), 1.0))

    def sample_train_item(self, s: int, rng: np.random.Generator) -> tuple[List[int], List[int]]:
        """Context and target records of one random training item of subject ``s``."""
        sub = self._subjects[s]
        ctx = sub.context_records(self.num_context, rng)
        ctx_frame = int(sub.seq.records[ctx[0]].frame_id)
        same = [i for i in sub.by_frame.get(ctx_frame, []) if i not in ctx]
        other = [i for i in sub.motion if int(sub.seq.records[i].frame_id) != ctx_frame]
        p_same = self.same_frame_probability()
        targets = []
        for _ in range(self.num_target):
            pool = same if (same and (not other or rng.random() < p_same)) else (other or same or ctx)
            targets.append(pool[int(rng.integers(len(pool)))])
        return ctx, targets

    def _context(self, s: int, ctx: Sequence[int]) -> Dict[str, Any]:
        sub = self._subjects[s]
        views = [sub.frame(i) for i in ctx]
        res = self.context_res or int(views[0]["image"].shape[-2])
        images, masks, Ks = [], [], []
        for v in views:
            img, msk, K = v["image"], v["mask"], v["K"]
            if self.context_crop:
                img, msk, K = crop_views(img, msk, K, res)
            elif img.shape[-1] != res or img.shape[-2] != res:
                raise DatasetError(f"{sub.name}: context_res={res} needs context_crop=true (images are "
                                   f"{tuple(img.shape[-2:])})")
            images.append(img * msk)
            masks.append(msk)
            Ks.append(K)
        return {
            "image": torch.stack(images), "mask": torch.stack(masks), "K": torch.stack(Ks),
            "w2c": torch.stack([v["w2c"] for v in views]),
            BODY: {k: torch.stack([v[BODY][k] for v in views]) for k in views[0][BODY]},
            "frame_id": torch.tensor([int(v["frame_id"]) for v in views], dtype=torch.long),
            "camera_id": torch.tensor([int(v["camera_id"]) for v in views], dtype=torch.long),
        }

    def make_rows(self, s: int, ctx: Sequence[int], targets: Sequence[int], group: int,
                  noisy: bool = False) -> List[Dict[str, Any]]:
        """The rows of one item: every target view with the shared context."""
        sub = self._subjects[s]
        context = self._context(s, ctx)
        rows = []
        for t in targets:
            frame = dict(sub.frame(t))
            if noisy and sub.noisy_body:
                body = dict(frame[BODY])
                for key, value in sub.noisy_body[int(frame["frame_id"])].items():
                    body[key] = torch.from_numpy(value.copy())
                frame[BODY] = body
            frame.update(subject_id=int(s), group=int(group), context=context)
            rows.append(frame)
        return rows

    # -- Lightning --------------------------------------------------------------------------------

    def setup(self, stage: Optional[str] = None) -> None:
        """Parse every subject and check the first item of each split decodes."""
        self._build()
        if self.cache:
            for sub in self._subjects:
                for i in range(len(sub.seq)):
                    sub.frame(i)

    def rank_subjects(self, rank: int) -> List[int]:
        """The training subjects rank ``rank`` of ``train_world`` draws its items from: every
        ``train_world``-th one (disjoint across ranks; all of them with one process)."""
        self._build()
        return self.train_subjects[int(rank)::max(int(self.train_world), 1)]

    def train_dataloader(self) -> DataLoader:
        """Items of an epoch in an order fixed by (seed, epoch), resumable mid-epoch; under DDP each
        rank trains on its own subjects (:meth:`rank_subjects`), see :mod:`zoo.data.sampling`."""
        self._build()
        self.epoch_counter += 1
        world, rank = dist_info(self.trainer)
        if world > len(self.train_subjects):
            raise DatasetError(f"{world} DDP ranks need at least {world} training subjects to shard (each rank trains "
                               f"on its own); the data has {len(self.train_subjects)}")
        self.train_world = world
        dataset = _ItemDataset(self, "train", length=self.items_per_epoch)
        sampler = _SubjectShardSampler(len(dataset), num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return ResumableLoader(dataset, sampler, progress=trainer_progress(self) if self.trainer is not None else None,
                               batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_items,
                               generator=torch.Generator().manual_seed(self.seed),
                               persistent_workers=self.num_workers > 0)

    def _eval_loader(self, name: str) -> DataLoader:
        self._build()
        dataset = _ItemDataset(self, name, specs=self._specs[name])
        # in order; under DDP each rank scores its own unpadded shard of the rows
        return DataLoader(dataset, batch_size=self.batch_size * self.num_target, shuffle=False,
                          sampler=eval_sampler(self, len(dataset)), num_workers=self.num_workers,
                          collate_fn=collate_items, generator=torch.Generator().manual_seed(self.seed),
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> List[DataLoader]:
        return [self._eval_loader(name) for name in self.test_split_names]

    # -- what train.py / eval.py need -------------------------------------------------------------

    def avatar_context(self) -> Dict[str, Any]:
        """The fixed context of the first held-out subject (else the first training subject): the
        default avatar a checkpoint animates. Keys ``image [V,3,R,R]``, ``mask``, ``betas [S]``,
        ``subject``."""
        self._build()
        s = (self.test_subject_ids or self.train_subjects)[0]
        sub = self._subjects[s]
        ctx = self._context(s, sub.context_records(self.num_context))
        return {"image": ctx["image"], "mask": ctx["mask"], "betas": ctx[BODY]["betas"][0], "subject": sub.name}

    def data_info(self, data_cfg: Mapping[str, Any], body_models: Optional[str]) -> Dict[str, Any]:
        """What a method needs to know (stored in its checkpoint): see ``zoo.runner.data_info``."""
        from omegaconf import DictConfig, OmegaConf

        self._build()
        first = self._subjects[self.train_subjects[0]]
        H, W = first.frame(first.motion[0])["image"].shape[-2:]
        res = self.context_res or int(H)
        avatar = self.avatar_context()
        data = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
        return {
            "subject": f"{len(self.train_subjects)} training subjects ({self.format})",
            "subjects": self.subjects,
            "train_subjects": [self._subjects[i].name for i in self.train_subjects],
            "test_subjects": [self._subjects[i].name for i in self.test_subject_ids],
            "avatar_subject": avatar["subject"],
            "model_type": self.model_type,
            "gender": "neutral",
            "betas": [float(b) for b in avatar["betas"]],
            "frame_ids": [],
            "height": int(H), "width": int(W),
            "num_context": self.num_context, "context_res": int(res),
            "protocol": {**self.protocol, **dict(data.get("protocol") or {})},
            "test_splits": self.test_split_names,
            "body_models": body_models,
            "data": data,
        }

    def baseline_scores(self, splits: Sequence[str], protocol: Optional[Mapping[str, Any]] = None,
                        body_models: Optional[str] = None) -> Dict[str, Dict[str, float]]:
        """The mean-colour template baseline on the same rows: the target's posed body mesh (its
        own, exact body parameters) rasterized in the target camera and filled with the mean colour
        of the context views' person pixels, on the protocol's background; scored by
        ``evaluate_images`` like the methods."""
        from zoo.core.body import BodyModel
        from zoo.core.mesh import render_mesh_attributes
        from zoo.core.metrics import EvalProtocol, MetricAccumulator, evaluate_images

        self._build()
        proto = EvalProtocol(**dict(protocol or self.protocol))
        bg = torch.tensor(proto.background if proto.background is not None else (0.0, 0.0, 0.0), dtype=torch.float32)
        body = BodyModel(model_type=self.model_type, model_path=body_models)
        out: Dict[str, Dict[str, float]] = {}
        for name in splits:
            if name not in self._specs or not self._specs[name]:
                continue
            acc = MetricAccumulator()
            for s, ctx, targets, group in self._specs[name]:
                row = self.make_rows(s, ctx, targets, group, noisy=name in self.noise_splits)[0]
                c = row["context"]
                colour = (c["image"] * c["mask"]).sum((0, 2, 3)) / c["mask"].sum().clamp_min(1.0)
                with torch.no_grad():
                    verts = body({k: v[None] for k, v in row[BODY].items()}).vertices[0]
                H, W = row["image"].shape[-2:]
                hit = render_mesh_attributes(verts, body.faces, row["K"], row["w2c"], H, W)["mask"].float()
                pred = hit[None] * colour.view(3, 1, 1) + (1.0 - hit[None]) * bg.view(3, 1, 1)
                acc.update(evaluate_images(pred[None], row["image"][None], row["mask"][None], proto), n=1)
            out[name] = {**acc.compute(), "frames": len(self._specs[name])}
        return out


def build_multi_subject(data_cfg: Mapping[str, Any], body_models: Optional[str] = None,
                        seed: Optional[int] = None) -> MultiSubjectDataModule:
    """A :class:`MultiSubjectDataModule` from a data config section (configs/data/synthetic_multi.yaml):
    ``format``, ``root`` or ``roots``, ``synthesize`` (write synthetic subjects into ``root`` first),
    ``options`` (parser options), ``multi_subject`` (this module's arguments), ``batch_size``,
    ``num_workers``; ``seed``: the run's seed (``multi_subject.seed`` wins)."""
    from omegaconf import DictConfig, OmegaConf

    def plain(x: Any) -> Any:
        return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x

    cfg = {k: plain(v) for k, v in dict(data_cfg).items()}
    root, roots = cfg.get("root"), cfg.get("roots")
    synth = cfg.get("synthesize")
    if synth:
        if not root:
            raise ValueError("data.synthesize needs data.root (the folder the subjects are written into)")
        from zoo.synthetic.subject import ensure_synthetic

        ensure_synthetic(Path(str(root)).expanduser(), progress=True, **dict(synth))
    options = dict(cfg.get("multi_subject") or {})
    if seed is not None and "seed" not in options:  # the run's seed, unless the data section fixes its own
        options["seed"] = int(seed)
    allowed = set(MultiSubjectDataModule.__init__.__code__.co_varnames[1:MultiSubjectDataModule.__init__.__code__.co_argcount])
    misplaced = {"format", "root", "roots", "parser_options", "batch_size", "num_workers"}
    bad = sorted((set(options) - allowed) | (set(options) & misplaced))
    if bad:
        raise ValueError(f"data.multi_subject: unknown or misplaced keys {bad}; expected some of "
                         f"{sorted(allowed - misplaced)} (format, root/roots, options, batch_size, num_workers sit "
                         "one level up in data)")
    parser_options = dict(cfg.get("options") or {})
    if body_models and "body_models" not in parser_options and cfg.get("format") in ("zju_mocap", "neuman"):
        parser_options["body_models"] = body_models
    if not root and not roots:
        raise ValueError("data.root (a folder holding many subjects) or data.roots (subject folders) is not set")
    return MultiSubjectDataModule(
        format=str(cfg["format"]), root=None if roots else root, roots=roots, parser_options=parser_options,
        batch_size=int(cfg.get("batch_size", 1)), num_workers=int(cfg.get("num_workers", 0)), **options)
