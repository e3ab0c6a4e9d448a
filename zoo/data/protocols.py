"""Named evaluation-protocol presets: how each paper scores renders of each dataset.

One table, :data:`PROTOCOLS`, maps a preset name to a plain protocol dict built by
:func:`zoo.data.schema.make_protocol` (keys :data:`zoo.data.schema.PROTOCOL_KEYS`, which are the
fields of ``zoo.core.metrics.EvalProtocol``, so ``EvalProtocol(**get_protocol(name))`` works).
:data:`DATASET_PROTOCOLS` lists, per on-disk format (the keys of ``zoo.data.parsers.PARSERS``),
the presets that belong to it, the headline one first. Every parser takes its ``seq.protocol``
from here: the headline preset by default, another one of its dataset's presets through the
parser option ``eval_protocol=`` (ZJU-MoCap's default follows its split option ``protocol=``).

The facts and their sources are in ``shared/reference/DATASETS.md`` §1E (ZJU-MoCap), §2F
(PeopleSnapshot), §3E (NeuMan), §4D (X-Humans) and §5 (metric implementations).

This module imports nothing but :mod:`zoo.data.schema`, so parsers may depend on it.
"""

from __future__ import annotations

from typing import Any

from zoo.data.schema import make_protocol

__all__ = ["PROTOCOLS", "DATASET_PROTOCOLS", "GENERIC_PROTOCOLS", "get_protocol", "protocol_for"]

_WHITE = (1.0, 1.0, 1.0)
_BLACK = (0.0, 0.0, 0.0)

#: Preset name -> protocol dict (treat as read-only; :func:`get_protocol` hands out copies).
PROTOCOLS: dict[str, dict[str, Any]] = {
    # ---- PeopleSnapshot (DATASETS.md §2F / §5) -----------------------------------------------
    # InstantAvatar, GaussianAvatar, GoMAvatar eval.py: torchmetrics PSNR/SSIM (data_range 1),
    # torchmetrics LPIPS(alex) with normalize=False fed [0,1] images, full image, 540x540, white
    # background (3DGS-Avatar uses black: `people_snapshot_3dgs_avatar`). No x1000 anywhere.
    "people_snapshot": make_protocol(
        "people_snapshot", crop="full", background=_WHITE, lpips_net="alex", lpips_input="zero_one_as_is",
        lpips_scale=1, resolution=(540, 540),
        source="InstantAvatar/GaussianAvatar eval.py (torchmetrics, LPIPS alex on [0,1] as-is, white bg)",
    ),
    # 3DGS-Avatar PSEvaluator: as above but on black (`white_background: false`; DATASETS.md §2F
    # flags this as inconsistent with InstantAvatar's loader).
    "people_snapshot_3dgs_avatar": make_protocol(
        "people_snapshot_3dgs_avatar", crop="full", background=_BLACK, lpips_net="alex",
        lpips_input="zero_one_as_is", lpips_scale=1, resolution=(540, 540),
        source="3DGS-Avatar PSEvaluator (black bg, torchmetrics LPIPS alex on [0,1] as-is)",
    ),
    # ---- ZJU-MoCap (DATASETS.md §1E / §5) ----------------------------------------------------
    # 3DGS-Avatar (the gs_avatar paper), monocular ARAH split: full image, black background,
    # 512x512, lpips.LPIPS(net='vgg') with normalize=True (correct [-1,1] inputs). Its paper prints
    # LPIPS x1000 while its code does not scale (UNVERIFIED); `zju_mocap_gomavatar` has GoMAvatar's
    # explicit x1000. The parser's default for the raw release (split protocol "mono_3dgs_avatar").
    "zju_mocap": make_protocol(
        "zju_mocap", crop="full", background=_BLACK, lpips_net="vgg", lpips_input="minus_one_one",
        lpips_scale=1, resolution=(512, 512),
        source="3DGS-Avatar render.py Evaluator (full image, black bg, LPIPS vgg normalize=True)",
    ),
    # Neural Body multi-view split (parser split protocol "neuralbody_4view"): metrics on the box of
    # the projected SMPL bounds (here: the GT mask's bounding box), black background, 512x512.
    # Neural Body reports no LPIPS; VGG on [-1,1] is given so the column is filled.
    "zju_mocap_neuralbody": make_protocol(
        "zju_mocap_neuralbody", crop="bbox", background=_BLACK, lpips_net="vgg", lpips_input="minus_one_one",
        lpips_scale=1, resolution=(512, 512),
        source="Neural Body lib/evaluators/if_nerf.py (box-cropped metrics, black bg; mask bbox stands in "
        "for the projected SMPL box)",
    ),
    # Refined release, Instant-NVR / GauHuman / GART split (parser split protocol "refined", the
    # default for my_XXX): full image, black background, 512x512, lpips.LPIPS(net='vgg') fed [0,1]
    # as-is (GauHuman render.py). Instant-NVR's own box-cropped evaluation is `zju_mocap_neuralbody`.
    "zju_mocap_refined": make_protocol(
        "zju_mocap_refined", crop="full", background=_BLACK, lpips_net="vgg", lpips_input="zero_one_as_is",
        lpips_scale=1, resolution=(512, 512),
        source="Instant-NVR/GauHuman refined split (full image, black bg, LPIPS vgg on [0,1] as-is)",
    ),
    # GoMAvatar eval.py on the HumanNeRF->MonoHuman split: full image, black, LPIPS vgg on x*2-1, x1000.
    "zju_mocap_gomavatar": make_protocol(
        "zju_mocap_gomavatar", crop="full", background=_BLACK, lpips_net="vgg", lpips_input="minus_one_one",
        lpips_scale=1000, resolution=(512, 512),
        source="GoMAvatar eval.py (MonoHuman split, LPIPS vgg on x*2-1, x1000)",
    ),
    # GauHuman render.py: full image, LPIPS vgg on [0,1] as-is. Its setting of the pixels outside
    # the projected SMPL box to the background is not replicated.
    "zju_mocap_gauhuman": make_protocol(
        "zju_mocap_gauhuman", crop="full", background=_BLACK, lpips_net="vgg", lpips_input="zero_one_as_is",
        lpips_scale=1, resolution=(512, 512),
        source="GauHuman render.py (LPIPS vgg on [0,1] as-is; its outside-SMPL-box masking is not replicated)",
    ),
    # ---- NeuMan (DATASETS.md §3E / §5) -------------------------------------------------------
    # ExAvatar tools/eval_neuman.py: human only, prediction and GT composited on white with the
    # mask, native resolution, torchmetrics PSNR/SSIM, LPIPS alex on [-1,1]. Its masking of the
    # prediction is replicated under the `*_masked` keys; the plain keys score the render as is.
    "neuman": make_protocol(
        "neuman", crop="full", background=_WHITE, lpips_net="alex", lpips_input="minus_one_one",
        lpips_scale=1, resolution=None, mask_prediction=True,
        source="mks0601/ExAvatar_RELEASE avatar/tools/eval_neuman.py (prediction and GT composited on white "
        "with the mask: *_masked keys; LPIPS alex [-1,1])",
    ),
    # HUGS gs_trainer.validate: full-image and tight mask-bbox-crop metrics (the crop is the
    # headline), images as rendered, LPIPS alex fed [0,1] as-is.
    "neuman_hugs": make_protocol(
        "neuman_hugs", crop="bbox", bbox_pad=0, background=None, lpips_net="alex", lpips_input="zero_one_as_is",
        lpips_scale=1, resolution=None,
        source="HUGS gs_trainer.validate (full image and tight mask-bbox crop, LPIPS alex on [0,1] as-is)",
    ),
    # ml-neuman render_test_views.py: human + scene, whole image including the background,
    # native size, LPIPS alex on [-1,1].
    "neuman_full_scene": make_protocol(
        "neuman_full_scene", crop="full", background=None, lpips_net="alex", lpips_input="minus_one_one",
        lpips_scale=1, resolution=None,
        source="ml-neuman render_test_views.py (whole image incl. background, LPIPS alex [-1,1])",
    ),
    # ---- X-Humans (DATASETS.md §4D / §5) -----------------------------------------------------
    # ExAvatar tools/eval_xhumans.py: full 800x1200 (W x H) images, prediction and GT composited
    # on white with the depth-derived mask (replicated under `*_masked`), torchmetrics PSNR/SSIM,
    # LPIPS alex on [-1,1].
    "x_humans": make_protocol(
        "x_humans", crop="full", background=_WHITE, lpips_net="alex", lpips_input="minus_one_one",
        lpips_scale=1, resolution=(1200, 800), mask_prediction=True,
        source="mks0601/ExAvatar_RELEASE@X-Humans tools/eval_xhumans.py (prediction and GT composited on "
        "white with the depth mask: *_masked keys; LPIPS alex [-1,1])",
    ),
    # ---- the zoo's own synthetic subjects (any format) ---------------------------------------
    # Scored the correct way (LPIPS alex on [-1,1]) on white at the rendered size; the person-crop
    # numbers (box padded by 4 px) come alongside in every evaluation. The prediction is never
    # masked (schema.validate_protocol refuses mask_prediction here).
    "synthetic": make_protocol(
        "synthetic", crop="full", bbox_pad=4, background=_WHITE, lpips_net="alex", lpips_input="minus_one_one",
        lpips_scale=1, resolution=None,
        source="avatar-zoo synthetic subject (full image on white; crop metrics alongside)",
    ),
}

#: Format name -> the presets of that dataset, the headline (default) one first.
DATASET_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "people_snapshot": ("people_snapshot", "people_snapshot_3dgs_avatar"),
    "zju_mocap": (
        "zju_mocap",
        "zju_mocap_neuralbody",
        "zju_mocap_refined",
        "zju_mocap_gomavatar",
        "zju_mocap_gauhuman",
    ),
    "neuman": ("neuman", "neuman_hugs", "neuman_full_scene"),
    "x_humans": ("x_humans",),
}

#: Presets any format accepts (synthetic subjects are written in every layout).
GENERIC_PROTOCOLS: tuple[str, ...] = ("synthetic",)


def get_protocol(name: str) -> dict[str, Any]:
    """A copy of the preset ``name`` from :data:`PROTOCOLS`.

    Args:
        name: a key of :data:`PROTOCOLS`, e.g. ``"people_snapshot"`` or ``"zju_mocap_gomavatar"``.

    Returns:
        The protocol dict (keys ``PROTOCOL_KEYS``); changing it leaves the table alone.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    if name not in PROTOCOLS:
        raise KeyError(f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return dict(PROTOCOLS[name])


def protocol_for(dataset: str, eval_protocol: str | None = None, *, default: str | None = None) -> dict[str, Any]:
    """The protocol a parser of ``dataset`` attaches to its sequence.

    Args:
        dataset: a key of :data:`DATASET_PROTOCOLS` (the parser's format name).
        eval_protocol: the parser option: one of the dataset's presets (or a
            :data:`GENERIC_PROTOCOLS` one), or None for the default.
        default: the preset used when ``eval_protocol`` is None; None = the dataset's headline
            preset (the first of ``DATASET_PROTOCOLS[dataset]``).

    Returns:
        A copy of the preset.

    Raises:
        KeyError: for an unknown dataset.
        ValueError: for an ``eval_protocol`` that is not one of the dataset's presets, listing them.
    """
    if dataset not in DATASET_PROTOCOLS:
        raise KeyError(f"no evaluation protocols for dataset {dataset!r}; known: {sorted(DATASET_PROTOCOLS)}")
    allowed = DATASET_PROTOCOLS[dataset] + GENERIC_PROTOCOLS
    name = eval_protocol if eval_protocol is not None else (default or DATASET_PROTOCOLS[dataset][0])
    if name not in allowed:
        raise ValueError(f"eval_protocol must be one of {list(allowed)} for {dataset}, got {name!r}")
    return get_protocol(name)

