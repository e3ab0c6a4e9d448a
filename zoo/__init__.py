"""Avatar Zoo: animatable 3D-Gaussian human avatars side by side.

Public entry points::

    import zoo
    zoo.list_methods()                     # ['exavatar', 'gaussian_avatar', ...]
    model = zoo.create("gaussian_avatar", data_info, preset="tiny")  # untrained; data_info: zoo.runner.data_info
    model = zoo.load("runs/<run>/checkpoints/best.ckpt")        # torch.load(weights_only=True)
    model = zoo.load_pretrained("gaussian_avatar.synthetic_s0")  # registry: download, verify, load
    gaussians = model.gaussians(body)                            # one frame's body parameters -> Gaussians
    images = model.render_poses(poses, K, w2c, height, width)   # [T, 3, H, W] in [0, 1]

docs/api.md walks through it with one runnable example.
"""
from __future__ import annotations

from zoo.registry import get_method, list_methods, register_method

__all__ = ["create", "get_method", "list_methods", "load", "load_pretrained", "register_method"]
__version__ = "0.1.0"


def create(name: str, data_info=None, *, preset=None, **overrides):
    """Build the (untrained) method registered as `name` from its config plus `overrides`.

    Args:
        name: a registered method name (see `list_methods()`).
        data_info: what the method needs to know about its training sequence (subject, model_type,
            gender, betas, frame_ids, height, width, body_models, ...): the dict
            `zoo.runner.data_info(datamodule, data_cfg, body_models)` builds, which every checkpoint
            stores as `model.data_info`.
        preset: the method part of configs/experiment/<name>_<preset>.yaml on top of
            configs/method/<name>.yaml (e.g. "tiny", "synthetic").
        **overrides: keys of the method section, dotted for nested ones, e.g.
            `create("gaussian_avatar", info, preset="tiny", uv_size=64, **{"optim.lr_net": 1e-3})`;
            an unknown key raises `zoo.config.ConfigError` listing the valid ones.

    Returns:
        The LightningModule instance.
    """
    from zoo.config import method_config

    cls = get_method(name)
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
