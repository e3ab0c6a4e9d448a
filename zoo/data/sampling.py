"""Training and evaluation samplers that resume exactly and shard across DDP ranks.

The data modules build their own samplers (Lightning keeps a loader whose sampler is already a
``DistributedSampler`` as it is), so that:

* the training order is a function of ``(seed, epoch)`` only (:class:`EpochSampler`): a run killed
  mid-epoch and resumed from ``last.ckpt`` sees exactly the batches an uninterrupted run sees.
  :class:`ResumableLoader` is the DataLoader Lightning saves and restores (``state_dict`` /
  ``load_state_dict``): its state is the epoch and the batches of it already trained, read from
  the trainer's own progress counters (the loader's iterator runs ahead by the fetcher's prefetch);
* with several processes each rank gets its share (frames for per-subject data; the multi-subject
  data module shards subjects, see :mod:`zoo.data.multi_subject`), disjoint across ranks;
* evaluation splits are cut into disjoint, unpadded shards (:class:`ShardSampler`), so the
  metrics reduced across ranks count every item once, as one process does.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSampler", "ShardSampler", "ResumableLoader", "dist_info"]


def dist_info(trainer: Any = None) -> Tuple[int, int]:
    """``(world_size, rank)`` of a Lightning trainer (``(1, 0)`` without one, or outside DDP)."""
    if trainer is None:
        return 1, 0
    try:
        return max(int(trainer.world_size), 1), int(trainer.global_rank)
    except (AttributeError, RuntimeError):
        return 1, 0


class EpochSampler(DistributedSampler):
    """A rank's share of a permutation drawn from ``(seed, epoch)``; resumable mid-epoch.

    Several ranks: the order of every epoch is ``torch.randperm(size)`` under a generator seeded
    with ``seed + epoch`` (``DistributedSampler``'s own recipe), padded to a multiple of the number
    of ranks, rank ``r`` taking positions ``r, r + W, ...``. One process: the order a shuffled,
    seeded DataLoader gives (see ``_single``). ``skip(n)`` drops the first ``n``
    indices of the next iteration only (a resumed epoch continues where the saved one stopped).

    Args:
        size: number of items.
        num_replicas: ranks (W).
        rank: this rank.
        shuffle: permute (else the items in order).
        seed: the run's seed.
    """

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(range(int(size)), num_replicas=int(num_replicas), rank=int(rank), shuffle=shuffle,
                         seed=int(seed), drop_last=False)
        self._skip = 0

    def skip(self, n: int) -> None:
        """Leave out the first ``n`` indices of the next iteration."""
        self._skip = max(int(n), 0)

    def _single(self) -> list:
        """One process: the order a shuffled DataLoader with a generator seeded ``seed`` gives in
        its ``epoch``-th pass (each pass draws the workers' base seed, a permutation and RandomSampler's empty tail), replayed
        from the seed, so a single-process run trains in the very order it always did."""
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(int(self.seed))
        for _ in range(int(self.epoch)):  # each earlier pass: base seed, permutation, RandomSampler's tail
            torch.empty((), dtype=torch.int64).random_(generator=g)
            torch.randperm(n, generator=g)
            torch.randperm(n, generator=g)
        torch.empty((), dtype=torch.int64).random_(generator=g)
        return torch.randperm(n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        indices = self._single() if self.num_replicas == 1 else list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


class ShardSampler(DistributedSampler):
    """Evaluation items of one rank: positions ``rank, rank + W, ...`` in order, never padded
    (ranks may hold one item more than others; each item is scored exactly once in all)."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(int(size)), num_replicas=int(num_replicas), rank=int(rank), shuffle=False,
                         drop_last=False)
        self.num_samples = len(range(self.rank, int(size), self.num_replicas))
        self.total_size = int(size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A training DataLoader over an :class:`EpochSampler` that Lightning checkpoints.

    ``state_dict()`` holds the epoch and the number of its batches already trained, read through
    ``progress()`` (``(epoch, batches)`` from the trainer; without it, the batches this loader has
    handed out). ``load_state_dict`` sets the sampler to that epoch and skips those batches on the
    next iteration; a state at the end of an epoch starts the next one from its first batch.

    Args:
        dataset: the training dataset.
        sampler: its :class:`EpochSampler`.
        progress: callable returning ``(epoch, batches trained in it)``, or None.
        **kwargs: DataLoader arguments (batch_size, collate_fn, num_workers, generator ...).
    """

    def __init__(self, dataset: Any, sampler: EpochSampler, progress: Optional[Callable[[], Tuple[int, int]]] = None,
                 **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.progress = progress
        self._handed_out = 0

    def __iter__(self):
        self._handed_out = 0
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> Dict[str, int]:
        """``{"epoch", "batches", "batch_size", "seed"}`` of the position training has reached."""
        epoch, batches = self.progress() if self.progress is not None else (self.sampler.epoch, self._handed_out)
        return {"epoch": int(epoch), "batches": int(batches), "batch_size": int(self.batch_size or 1),
                "seed": int(self.sampler.seed)}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continue at ``state``: its epoch's order, its trained batches left out."""
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        if batches >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.skip(batches * int(self.batch_size or 1))


def trainer_progress(owner: Any) -> Callable[[], Tuple[int, int]]:
    """``progress`` for :class:`ResumableLoader`: the epoch and its trained batches from
    ``owner.trainer`` (a data module), read when a checkpoint is written."""

    def progress() -> Tuple[int, int]:
        trainer = getattr(owner, "trainer", None)
        loop = trainer.fit_loop
        return int(trainer.current_epoch), int(loop.epoch_loop.batch_progress.current.processed)

    return progress


def train_loader(owner: Any, dataset: Any, batch_size: int, shuffle: bool, seed: int, **kwargs: Any) -> ResumableLoader:
    """The training loader of a data module: an :class:`EpochSampler` over ``dataset`` sharded by
    the attached trainer's ranks, its own seeded generator (worker seeds; the global RNG is not
    drawn from), the position saved in checkpoints."""
    world, rank = dist_info(getattr(owner, "trainer", None))
    sampler = EpochSampler(len(dataset), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    generator = torch.Generator().manual_seed(int(seed))
    has_trainer = getattr(owner, "trainer", None) is not None
    return ResumableLoader(dataset, sampler, progress=trainer_progress(owner) if has_trainer else None,
                           batch_size=batch_size, generator=generator, **kwargs)


def eval_sampler(owner: Any, size: int) -> Optional[ShardSampler]:
    """A :class:`ShardSampler` for an evaluation loader under several ranks (None with one)."""
    world, rank = dist_info(getattr(owner, "trainer", None))
    return ShardSampler(size, world, rank) if world > 1 else None
