"""Avatar Zoo: animatable 3D-Gaussian human avatars side by side.

Public entry points::

    import zoo
    zoo.list_methods()                     # ['gaussian_avatar', ...]
    model = zoo.create("gaussian_avatar", preset="tiny", data_info=...)
"""
from __future__ import annotations

from zoo.registry import get_method, list_methods, register_method

__all__ = ["create", "get_method", "list_methods", "register_method"]
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
