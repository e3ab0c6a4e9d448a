"""Avatar Zoo: animatable 3D-Gaussian human avatars side by side.

Public entry points::

    import zoo
    zoo.list_methods()                     # ['gaussian_avatar', ...]
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=...)
    model = zoo.load("runs/<run>/checkpoints/best.ckpt")        # torch.load(weights_only=True)
    model = zoo.load_pretrained("gaussian_avatar.synthetic_s0")  # registry: download, verify, load
"""
from __future__ import annotations

from zoo.registry import get_method, list_methods, register_method

__all__ = ["create", "get_method", "list_methods", "load", "load_pretrained", "register_method"]
__version__ = "0.1.0"


def create(name: str, **overrides):
    """Build the method registered as `name` from its default config plus `overrides`.

    Args:
        name: a registered method name (see `list_methods()`).
        **overrides: dotted or nested config values for the method section, e.g.
            `create("gaussian_avatar", preset="tiny", data_info=info, **{"optim.lr": 1e-3})`.
            `preset` selects configs/method/<name>_<preset>.yaml deltas (e.g. "tiny");
            `data_info` describes the sequence (see `zoo.config.data_info`).

    Returns:
        The LightningModule instance.
    """
    from zoo.config import method_config

    cls = get_method(name)
    preset = overrides.pop("preset", None)
    data_info = overrides.pop("data_info", None)
    cfg = method_config(name, preset=preset, overrides=overrides)
    return cls(cfg, data_info=data_info)


def load(path, body_models=None, map_location: str = "cpu"):
    """Rebuild a trained method from a checkpoint file (see :func:`zoo.checkpoints.load`)."""
    from zoo.checkpoints import load as _load

    return _load(path, body_models=body_models, map_location=map_location)


def load_pretrained(name: str, body_models=None, map_location: str = "cpu", progress: bool = True):
    """Download (once), verify and load a registry checkpoint (see :func:`zoo.checkpoints.load_pretrained`)."""
    from zoo.checkpoints import load_pretrained as _load_pretrained

    return _load_pretrained(name, body_models=body_models, map_location=map_location, progress=progress)
