"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def body_models_root(tmp_path_factory) -> Path:
    """A folder of procedural SMPL / SMPL-X files (``smpl/``, ``smplx/``; all genders, pkl and npz).

    Usable as ``ZOO_BODY_MODELS`` or as ``model_path`` of ``zoo.core.body.BodyModel``.
    """
    from zoo.core.synthetic_body import write_body_models

    return write_body_models(tmp_path_factory.mktemp("body_models"), seed=0)
