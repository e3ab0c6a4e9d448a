"""Procedural test and demo data: nothing here is imported by a method at run time.

* :mod:`zoo.synthetic.body` — SMPL / SMPL-X model files in the official formats
  (split into :mod:`~zoo.synthetic.skeleton`, :mod:`~zoo.synthetic.mesh`, :mod:`~zoo.synthetic.rig`).
* :mod:`zoo.synthetic.motion` — motion styles (walk, dance, ...) as body-pose sequences.
* :mod:`zoo.synthetic.texture` — procedural clothing textures on the body's UV layout.
* :mod:`zoo.synthetic.subject` — whole subjects rendered with a mesh rasterizer and written in
  any dataset's on-disk layout (``python -m zoo data synth``).
"""
