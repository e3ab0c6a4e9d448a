"""One LightningDataModule for every dataset format.

``AvatarDataModule("people_snapshot", root=..., parser_options={"downscale": 2})`` builds the
sequence with :data:`zoo.data.parsers.PARSERS` (or takes an already built sequence), serves the
splits of the batch contract (:mod:`zoo.data.schema`) and optionally caches decoded frames.

Batches: ``image [B,3,H,W]``, ``mask [B,1,H,W]``, ``K [B,3,3]``, ``w2c [B,4,4]``, ``body`` (dict of
``[B, D]``), ``frame_id [B]``, ``camera_id [B]``, ``index [B]`` (int64) and ``depth [B,1,H,W]``
where the format has depth.

Methods that keep per-frame embeddings read ``dm.num_frames`` / ``dm.frame_ids`` (distinct frame
ids of the whole sequence, e.g. ``dm.sequence.frame_position(batch["frame_id"][b])``) before
training starts; ``dm.sequence`` is built on first access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.data.parsers import PARSERS
from zoo.data.sampling import eval_sampler, train_loader
from zoo.data.schema import SPLITS, DatasetError, FrameSequence, MissingFileError, collate, evenly_spaced

__all__ = ["AvatarDataModule", "FrameCache", "SplitDataset"]

#: Default memory budget of the decoded-frame cache (bytes).
DEFAULT_CACHE_BUDGET = 2 * 1024**3


def _header_size(path: Path) -> tuple[int, int]:
    """(H, W) of a mask file read from its header (an image, or an ``.npy`` array [H, W(, C)])."""
    from PIL import Image

    if not path.is_file():
        raise MissingFileError(f"{path}: missing mask file")
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            if len(shape) not in (2, 3):
                raise ValueError(f"array of shape {shape}")
            return int(shape[0]), int(shape[1])
        with Image.open(path) as im:
            size = (im.size[1], im.size[0])
            im.verify()
        return size
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read the mask ({exc}); expected an [H, W] mask file") from None


class FrameCache:
    """Decoded frames of a sequence kept in memory, filled on first access.

    Args:
        sequence: the parsed sequence.
    """

    def __init__(self, sequence: FrameSequence) -> None:
        self.sequence = sequence
        self.frames: dict[int, dict[str, Any]] = {}

    def get(self, i: int) -> dict[str, Any]:
        """Frame ``i``, decoded once."""
        frame = self.frames.get(i)
        if frame is None:
            frame = self.sequence[i]
            self.frames[i] = frame
        return frame

    def fill(self, indices: Sequence[int]) -> None:
        """Decode ``indices`` now (before DataLoader workers fork, so they share the memory)."""
        for i in indices:
            self.get(int(i))

    def __len__(self) -> int:
        return len(self.frames)


class SplitDataset(Dataset):
    """The items of one split, read from the sequence or from a :class:`FrameCache`.

    Args:
        sequence: the parsed sequence.
        indices: sequence indices of the split.
        cache: a frame cache, or None to decode on every access.
    """

    def __init__(self, sequence: FrameSequence, indices: Sequence[int], cache: FrameCache | None = None) -> None:
        self.sequence = sequence
        self.indices = [int(i) for i in indices]
        self.cache = cache

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = self.indices[j]
        return self.cache.get(i) if self.cache is not None else self.sequence[i]


class AvatarDataModule(L.LightningDataModule):
    """Train / val / test / predict loaders over one parsed sequence of any format.

    Args:
        parser: a format name of :data:`zoo.data.parsers.PARSERS` or an already built sequence.
        root: the subject folder (required with a format name, not allowed with a sequence).
        parser_options: keyword options of the parser (``downscale``, ``protocol`` ...).
        batch_size: frames per batch.
        num_workers: DataLoader workers.
        cache: ``"auto"`` (cache decoded frames when the estimate fits ``cache_budget``),
            True (always) or False (never).
        cache_budget: memory budget of the cache in bytes (default 2 GiB).
        train_split: split served by ``train_dataloader``.
        val_split: split served by ``val_dataloader``.
        test_splits: splits served by ``test_dataloader`` (one loader per non-empty split).
        shuffle: shuffle the training loader.
        max_val_frames: keep at most this many evenly spaced validation frames.
        predict_split: split served by ``predict_dataloader`` (None = every item in order).
        seed: seed of the training shuffle.
    """

    def __init__(
        self,
        parser: str | FrameSequence,
        root: str | Path | None = None,
        parser_options: Mapping[str, Any] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        cache: bool | str = "auto",
        cache_budget: int = DEFAULT_CACHE_BUDGET,
        train_split: str = "train",
        val_split: str = "val",
        test_splits: Sequence[str] = ("test_view", "test_pose"),
        shuffle: bool = True,
        max_val_frames: int | None = None,
        predict_split: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(parser, str):
            if parser not in PARSERS:
                raise KeyError(f"unknown dataset format {parser!r}; known formats: {sorted(PARSERS)}")
            if root is None:
                raise ValueError(f"AvatarDataModule({parser!r}) needs root= (the subject folder)")
            self._sequence: FrameSequence | None = None
        elif isinstance(parser, FrameSequence):
            if root is not None or parser_options:
                raise ValueError("pass root= and parser_options= only with a format name, not with a built sequence")
            self._sequence = parser
        else:
            raise TypeError(f"parser must be a format name or a FrameSequence, got {type(parser).__name__}")
        if cache not in ("auto", True, False):
            raise ValueError(f"cache must be 'auto', True or False, got {cache!r}")
        for name in (train_split, val_split, *test_splits, *([predict_split] if predict_split else [])):
            if name not in SPLITS:
                raise ValueError(f"unknown split {name!r}; expected one of {list(SPLITS)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.parser_name = parser if isinstance(parser, str) else type(parser).__name__
        self.root = None if root is None else Path(root)
        self.parser_options = dict(parser_options or {})
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.cache_mode = cache
        self.cache_budget = int(cache_budget)
        self.train_split = train_split
        self.val_split = val_split
        self.test_splits = tuple(test_splits)
        self.shuffle = bool(shuffle)
        self.max_val_frames = max_val_frames
        self.predict_split = predict_split
        self.seed = int(seed)
        self.cache: FrameCache | None = None
        self.estimated_cache_bytes: int | None = None
        self._is_setup = False

    # -- the sequence -------------------------------------------------------------------------

    @property
    def sequence(self) -> FrameSequence:
        """The parsed sequence (built on first access)."""
        if self._sequence is None:
            assert isinstance(self.parser_name, str) and self.root is not None
            self._sequence = PARSERS[self.parser_name](self.root, **self.parser_options)
        return self._sequence

    @property
    def frame_ids(self) -> list[int]:
        """Sorted distinct frame ids of the sequence."""
        return self.sequence.frame_ids

    @property
    def num_frames(self) -> int:
        """Number of distinct frame ids (for per-frame embeddings)."""
        return self.sequence.num_frames

    @property
    def camera_ids(self) -> list[int]:
        """Sorted distinct camera labels."""
        return self.sequence.camera_ids

    @property
    def protocol(self) -> dict[str, Any]:
        """The sequence's evaluation protocol description (:func:`zoo.data.schema.make_protocol`)."""
        return self.sequence.protocol

    @property
    def model_type(self) -> str:
        """``"smpl"`` or ``"smplx"``."""
        return self.sequence.model_type

    @property
    def gender(self) -> str:
        """Body model gender of the subject."""
        return self.sequence.gender

    @property
    def splits(self) -> dict[str, list[int]]:
        """Split name -> sequence indices."""
        return self.sequence.splits

    @property
    def test_split_names(self) -> list[str]:
        """Names of the loaders ``test_dataloader`` returns, in order (non-empty splits only)."""
        return [name for name in self.test_splits if self.sequence.splits[name]]

    def split_indices(self, name: str) -> list[int]:
        """Sequence indices served for split ``name``.

        The validation split (model selection) never serves an item that a test split scores:
        items of ``val`` that are also in ``test_view`` or ``test_pose`` are dropped (e.g.
        PeopleSnapshot's official val frame is the first test frame), then it is subsampled to
        ``max_val_frames``. An empty result means no honest model selection is possible:
        :attr:`has_validation` is False and training keeps the last checkpoint.
        """
        indices = list(self.sequence.splits[name])
        if name == self.val_split:
            scored = {int(i) for test in ("test_view", "test_pose") for i in self.sequence.splits.get(test, [])}
            indices = [i for i in indices if int(i) not in scored]
            if self.max_val_frames is not None:
                indices = evenly_spaced(indices, int(self.max_val_frames))
        return indices

    @property
    def has_validation(self) -> bool:
        """Whether held-out validation items exist (frames and cameras no test split scores)."""
        return bool(self.split_indices(self.val_split))

    # -- Lightning hooks ------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build the sequence and decide (and, with workers, fill) the frame cache."""
        seq = self.sequence
        if self._is_setup:
            return
        used = sorted(
            {
                i
                for name in {self.train_split, self.val_split, *self.test_splits}
                for i in self.split_indices(name)
            }
        )
        self.validate(used)
        if self.cache_mode is False or not used:
            self.cache = None
        else:
            self.estimated_cache_bytes = self._estimate_bytes(used)
            if self.cache_mode is True or self.estimated_cache_bytes <= self.cache_budget:
                self.cache = FrameCache(seq)
                self.cache.fill(used)  # decode now: bad frames fail before the first step
        self._is_setup = True

    def validate(self, indices: Sequence[int]) -> None:
        """Check the items a run will use before its first step; the first problem is raised as a
        :class:`~zoo.data.schema.DatasetError` naming the file or field and what was expected.

        Every item's camera (``K [3,3]``, ``w2c [4,4]``) and body parameters must be finite; every
        image file named by a record must exist and have a readable header (PNGs are verified
        chunk by chunk, which finds truncated files). When the frames are cached, :meth:`setup` then
        decodes them all at once (image / mask / depth sizes are checked by the parsers), so a bad
        frame fails before training rather than deep in it.

        Args:
            indices: sequence indices (train, val and test items).
        """
        from PIL import Image

        seq = self.sequence
        for i in indices:
            rec = seq.records[int(i)]
            for name, value, shape in (("K", rec.K, (3, 3)), ("w2c", rec.w2c, (4, 4))):
                arr = np.asarray(value, dtype=np.float64)
                if arr.shape != shape or not np.isfinite(arr).all():
                    raise DatasetError(f"{rec.source}: camera {name} must be a finite {shape} matrix, got "
                                       f"shape {arr.shape}{'' if arr.shape != shape else ' with non-finite values'}")
            for key, value in rec.body.items():
                arr = np.asarray(value, dtype=np.float64)
                if not np.isfinite(arr).all():
                    bad = np.argwhere(~np.isfinite(arr.reshape(-1)))[:3].ravel().tolist()
                    raise DatasetError(f"{rec.source}: body parameter '{key}' of frame {rec.frame_id} is not finite "
                                       f"(entries {bad}); expected finite values")
            image = rec.paths.get("image")
            if isinstance(image, (str, Path)) and Path(image).suffix.lower() in (".png", ".jpg", ".jpeg"):
                path = Path(image)
                if not path.is_file():
                    raise MissingFileError(f"{path}: missing image file")
                try:
                    with Image.open(path) as im:
                        size = (im.size[1], im.size[0])
                        im.verify()
                except (OSError, ValueError, SyntaxError) as exc:
                    raise DatasetError(f"{path}: cannot read the image ({exc}); expected a complete image file") \
                        from None
                mask_files = getattr(seq, "mask_files", None)
                for mask in mask_files(rec) if mask_files is not None else []:
                    mask_size = _header_size(mask)
                    if mask_size != size:
                        raise DatasetError(f"{mask}: mask is {mask_size[0]}x{mask_size[1]} (HxW), expected the size of "
                                           f"its image {path.name}, {size[0]}x{size[1]}")

    def _estimate_bytes(self, indices: Sequence[int]) -> int:
        seq = self.sequence
        sample = seq[indices[0]]
        h, w = sample["image"].shape[-2:]
        per_pixel = sum(
            t.numel() * t.element_size() for k, t in sample.items() if isinstance(t, torch.Tensor) and t.dim() == 3
        ) / float(h * w)
        total = 0.0
        for i in indices:
            size = seq.output_size(i)
            hi, wi = size if size is not None else (h, w)
            total += hi * wi * per_pixel + 4096  # + small tensors and dict overhead
        return int(total)

    @property
    def cache_enabled(self) -> bool:
        """Whether decoded frames are cached (decided in :meth:`setup`)."""
        return self.cache is not None

    def _loader(self, indices: Sequence[int]) -> DataLoader:
        if not self._is_setup:
            self.setup()
        dataset = SplitDataset(self.sequence, indices, self.cache)
        # evaluation: in order, each rank of a DDP run scoring its own unpadded shard (zoo.data.sampling);
        # its own generator, so the global RNG is not drawn from when an iterator starts
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            sampler=eval_sampler(self, len(dataset)),
            num_workers=self.num_workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Loader over ``train_split``: the order a function of (seed, epoch) (shuffled unless
        ``shuffle=False``), frames sharded across DDP ranks, its position saved in checkpoints so a
        resumed run continues with the very next batch (:mod:`zoo.data.sampling`)."""
        indices = self.split_indices(self.train_split)
        if not indices:
            raise ValueError(f"split {self.train_split!r} of {self.sequence.subject!r} is empty; nothing to train on")
        if not self._is_setup:
            self.setup()
        return train_loader(self, SplitDataset(self.sequence, indices, self.cache), self.batch_size, self.shuffle,
                            self.seed, num_workers=self.num_workers, collate_fn=collate,
                            persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        """Loader over ``val_split`` in order (possibly empty)."""
        return self._loader(self.split_indices(self.val_split))

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per non-empty test split, named by :attr:`test_split_names`."""
        return [self._loader(self.split_indices(name)) for name in self.test_split_names]

    def predict_dataloader(self) -> DataLoader:
        """Loader over ``predict_split`` (default: every item of the sequence in order)."""
        if self.predict_split is None:
            indices = list(range(len(self.sequence)))
        else:
            indices = self.split_indices(self.predict_split)
        return self._loader(indices)
