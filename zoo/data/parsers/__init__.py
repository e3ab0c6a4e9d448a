"""One parser per on-disk format, all producing :class:`zoo.data.schema.FrameSequence` objects.

Usage::

    from zoo.data.parsers import PARSERS
    seq = PARSERS["people_snapshot"]("data/PeopleSnapshot/male-3-casual", downscale=2)
    frame = seq[seq.splits["train"][0]]

Formats and their layouts are described in ``shared/reference/DATASETS.md``: ``zju_mocap``
(§1A, §1B), ``people_snapshot`` (§2B), ``neuman`` (§3A–3C), ``x_humans`` (§4A–4C).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.data.parsers.neuman import NeuMan
from zoo.data.parsers.people_snapshot import PeopleSnapshot
from zoo.data.parsers.x_humans import XHumans
from zoo.data.parsers.zju_mocap import ZJUMoCap
from zoo.data.schema import FrameSequence

__all__ = ["PARSERS", "parse", "NeuMan", "PeopleSnapshot", "XHumans", "ZJUMoCap"]

#: Parser class by format name; ``PARSERS[name](root, **options)`` returns a sequence.
PARSERS: dict[str, type[FrameSequence]] = {
    "zju_mocap": ZJUMoCap,
    "people_snapshot": PeopleSnapshot,
    "neuman": NeuMan,
    "x_humans": XHumans,
}


def parse(name: str, root: str | Path, **options: Any) -> FrameSequence:
    """Build the sequence of format ``name`` at ``root``.

    Args:
        name: a key of :data:`PARSERS`.
        root: the subject / sequence folder.
        **options: the parser's keyword options.

    Raises:
        KeyError: for an unknown format, listing the known ones.
    """
    if name not in PARSERS:
        raise KeyError(f"unknown dataset format {name!r}; known formats: {sorted(PARSERS)}")
    return PARSERS[name](root, **options)
