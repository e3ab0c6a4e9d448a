"""Shared core of the zoo: cameras, Gaussians, rendering, body model, skinning, meshes.

Nothing in ``zoo.core`` imports from ``zoo.methods`` or ``zoo.data``. Import from the
submodules, e.g. ``from zoo.core.render import render, rasterize`` (``zoo.core.render``
stays a module: it is not shadowed by the function of the same name).
"""

from zoo.core.camera import Cameras
from zoo.core.gaussians import Gaussians

__all__ = ["Cameras", "Gaussians"]
