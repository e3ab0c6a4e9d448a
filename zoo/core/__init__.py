"""Shared core of the zoo: cameras, Gaussians, rendering, body model, skinning, meshes.

Nothing in ``zoo.core`` imports from ``zoo.methods`` or ``zoo.data``.
"""
