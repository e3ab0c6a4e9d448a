"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def body_models_root(tmp_path_factory) -> Path:
    """A folder of procedural SMPL / SMPL-X files (``smpl/``, ``smplx/``; all genders, pkl and npz).

    Usable as ``ZOO_BODY_MODELS`` or as ``model_path`` of ``zoo.core.body.BodyModel``.
    """
    from zoo.synthetic.body import write_body_models

    return write_body_models(tmp_path_factory.mktemp("body_models"), seed=0)


@pytest.fixture(scope="session")
def tiny_subject(tmp_path_factory, body_models_root) -> Path:
    """A tiny synthetic subject in the ZJU-MoCap layout (8 frames, 3 cameras, 32x32), written once.

    Returns the subject folder a parser reads.
    """
    from zoo.synthetic.subject import ensure_synthetic

    root = tmp_path_factory.mktemp("tiny_zju")
    return ensure_synthetic(root, format="zju_mocap", subjects=1, frames=8, res=32, seed=0, cameras=3,
                            body_models=body_models_root)
