"""Shared core of the zoo: cameras, Gaussians, rendering, body model, skinning, meshes, losses,
metrics.

Nothing in ``zoo.core`` imports from ``zoo.methods`` or ``zoo.data``. Import from the
submodules, e.g. ``from zoo.core.render import render, rasterize``; this package file imports
nothing, so light entry points (``python -m zoo.core.lpips fetch``) start without torch.
"""
