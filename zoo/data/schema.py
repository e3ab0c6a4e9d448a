"""The one batch contract every parser fills, and the machinery parsers share.

Conventions (stated once here, converted at the edges by each parser):

* Cameras are OpenCV (x right, y down, z forward), ``w2c`` is a world-to-camera ``[4, 4]``
  matrix in metres (or the dataset's world unit where it has no metric scale, e.g. NeuMan's
  COLMAP world), ``K`` is a pixel-space ``[3, 3]`` intrinsic matrix whose principal point uses
  the convention "pixel (0, 0) has its centre at coordinate (0, 0)".
* ``image`` is ``[3, H, W]`` float32 in [0, 1]; ``mask`` is ``[1, H, W]`` float32 in {0, 1}
  with 1 = person; ``depth`` (when present) is ``[1, H, W]`` float32 with 0 = no value.
* ``body`` holds unbatched float32 tensors in the standard SMPL / SMPL-X convention
  (``global_orient`` rotates about the pelvis joint, ``transl`` is added last). An optional
  ``scale`` ``[1]`` means: the body model's output with ``transl = 0`` is multiplied by
  ``scale`` and then ``transl`` is added (NeuMan, DATASETS.md §3B alignments).
* ``frame_id`` is the dataset's own frame number, ``camera_id`` one label per physical camera,
  ``index`` the item's position in its sequence.

A parsed sequence (a :class:`FrameSequence` subclass) exposes ``len()``, ``seq[i]`` (a frame
dict as above), ``splits`` (``train``, ``val``, ``test_view``, ``test_pose`` -> index lists),
``protocol`` (see :func:`make_protocol`), ``model_type``, ``gender``, ``subject``,
``frame_ids``, ``num_frames`` and ``camera_ids``.

This module imports numpy, PIL and torch only, so parsers can depend on it freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import abc
import pickle

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGE",
    "MASK",
    "K",
    "W2C",
    "BODY",
    "FRAME_ID",
    "CAMERA_ID",
    "INDEX",
    "DEPTH",
    "REQUIRED_KEYS",
    "OPTIONAL_KEYS",
    "BODY_KEYS_SMPL",
    "BODY_KEYS_SMPLX",
    "OPTIONAL_BODY_KEYS",
    "SPLITS",
    "Split",
    "PROTOCOL_KEYS",
    "DatasetError",
    "MissingFileError",
    "body_keys",
    "make_protocol",
    "validate_protocol",
    "validate_frame",
    "collate",
    "FrameRecord",
    "NativeFrame",
    "FrameSequence",
    "read_image_rgb",
    "read_mask_png",
    "require_file",
    "require_dir",
    "subject_dir",
    "load_npy_dict",
    "evenly_spaced",
]

# --------------------------------------------------------------------------------------------
# Keys and shapes of one frame (unbatched); a batch adds a leading B dimension.

IMAGE = "image"  # [3, H, W] float32 in [0, 1]
MASK = "mask"  # [1, H, W] float32 in {0, 1}, 1 = person
K = "K"  # [3, 3] float32 pixel-space intrinsics
W2C = "w2c"  # [4, 4] float32 world-to-camera, OpenCV
BODY = "body"  # dict of body parameters (see BODY_KEYS_*)
FRAME_ID = "frame_id"  # int, the dataset's own frame number
CAMERA_ID = "camera_id"  # int, one label per physical camera
INDEX = "index"  # int, position of the item in its sequence
DEPTH = "depth"  # optional [1, H, W] float32, 0 = no value

REQUIRED_KEYS = (IMAGE, MASK, K, W2C, BODY, FRAME_ID, CAMERA_ID, INDEX)
OPTIONAL_KEYS = (DEPTH,)

#: SMPL body parameter keys and their last dimension (None = any length, e.g. 10 betas).
BODY_KEYS_SMPL: dict[str, int | None] = {
    "betas": None,
    "global_orient": 3,
    "body_pose": 69,
    "transl": 3,
}

#: SMPL-X body parameter keys and their last dimension (None = any length).
BODY_KEYS_SMPLX: dict[str, int | None] = {
    "betas": None,
    "global_orient": 3,
    "body_pose": 63,
    "transl": 3,
    "jaw_pose": 3,
    "leye_pose": 3,
    "reye_pose": 3,
    "left_hand_pose": 45,
    "right_hand_pose": 45,
    "expression": None,
}

#: Keys a body dict may carry in addition to its model's keys.
#: ``scale`` [1]: the body output with transl = 0 is multiplied by it, then transl is added.
OPTIONAL_BODY_KEYS: dict[str, int | None] = {"scale": 1}

Split = Literal["train", "val", "test_view", "test_pose"]
#: Split names every parser fills (possibly with empty index lists).
SPLITS: tuple[str, ...] = ("train", "val", "test_view", "test_pose")

#: Keys of ``seq.protocol`` (DATASETS.md §1E, §2F, §3E, §4D, §5): the fields of
#: ``zoo.core.metrics.EvalProtocol``, in its order, so ``EvalProtocol(**seq.protocol)`` works.
PROTOCOL_KEYS = (
    "name",
    "crop",
    "bbox_pad",
    "background",
    "lpips_net",
    "lpips_input",
    "lpips_scale",
    "resolution",
    "source",
    "mask_prediction",
)


class DatasetError(ValueError):
    """Bad or inconsistent dataset input; the message names the file and what was expected."""


class MissingFileError(DatasetError, FileNotFoundError):
    """A file or folder the dataset layout requires is missing (a ``FileNotFoundError`` too)."""


def body_keys(model_type: str) -> dict[str, int | None]:
    """The body parameter keys (and last dimensions) of a body model type.

    Args:
        model_type: ``"smpl"`` or ``"smplx"``.

    Returns:
        ``BODY_KEYS_SMPL`` or ``BODY_KEYS_SMPLX``.

    Raises:
        ValueError: for any other model type.
    """
    if model_type == "smpl":
        return BODY_KEYS_SMPL
    if model_type == "smplx":
        return BODY_KEYS_SMPLX
    raise ValueError(f"model_type must be 'smpl' or 'smplx', got {model_type!r}")


# --------------------------------------------------------------------------------------------
# Evaluation protocol


def make_protocol(
    name: str,
    *,
    crop: str = "full",
    bbox_pad: int = 0,
    background: Sequence[float] | None = None,
    lpips_net: str = "alex",
    lpips_input: str = "minus_one_one",
    lpips_scale: int = 1,
    resolution: Sequence[int] | None = None,
    source: str = "",
    mask_prediction: bool = False,
) -> dict[str, Any]:
    """Build (and check) the plain protocol description a parser exposes as ``seq.protocol``.

    The metrics module turns this dict into its own protocol object
    (``zoo.core.metrics.EvalProtocol(**protocol)``); the named presets every parser uses are in
    :mod:`zoo.data.protocols`, and DATASETS.md §5 says what each paper does.

    Args:
        name: protocol name, e.g. ``"people_snapshot"``.
        crop: ``"full"`` (whole image) or ``"bbox"`` (metrics on the person's box) as the headline
            numbers; both are always computed.
        bbox_pad: pixels added on every side of the person's box (from the GT mask), >= 0.
        background: RGB in [0, 1] the ground truth is composited on with its mask before scoring
            (the prediction is scored as rendered, on this background), or None to score the
            images as they are.
        lpips_net: ``"alex"`` or ``"vgg"``.
        lpips_input: ``"minus_one_one"`` (images mapped correctly to [-1, 1]) or
            ``"zero_one_as_is"`` ([0, 1] images fed to a network expecting [-1, 1], as several
            codebases do).
        lpips_scale: 1, or 1000 for papers reporting LPIPS x 1000.
        resolution: ``(H, W)`` the paper evaluates at, or None for the native size.
        source: which codebase's evaluation this reproduces (for reports); with
            `mask_prediction` it must name the evaluation file that masks the prediction.
        mask_prediction: the paper's own evaluation composites the *prediction* with the GT mask
            too; its numbers are reported as ``*_masked`` beside the honest unmasked ones. Never
            allowed for the ``synthetic`` protocol.

    Returns:
        A dict with exactly the keys of ``PROTOCOL_KEYS``.
    """
    protocol = {
        "name": name,
        "crop": crop,
        "bbox_pad": bbox_pad,
        "background": None if background is None else tuple(float(c) for c in background),
        "lpips_net": lpips_net,
        "lpips_input": lpips_input,
        "lpips_scale": int(lpips_scale),
        "resolution": None if resolution is None else (int(resolution[0]), int(resolution[1])),
        "source": source,
        "mask_prediction": bool(mask_prediction),
    }
    validate_protocol(protocol)
    return protocol


def validate_protocol(protocol: Mapping[str, Any]) -> None:
    """Check a protocol dict against the description in :func:`make_protocol`.

    Args:
        protocol: the dict to check.

    Raises:
        ValueError: naming the offending key and the allowed values.
    """
    missing = [k for k in PROTOCOL_KEYS if k not in protocol]
    if missing:
        raise ValueError(f"protocol is missing keys {missing}; expected {list(PROTOCOL_KEYS)}")
    if not isinstance(protocol["name"], str) or not protocol["name"]:
        raise ValueError(f"protocol['name'] must be a non-empty string, got {protocol['name']!r}")
    if protocol["crop"] not in ("full", "bbox"):
        raise ValueError(f"protocol['crop'] must be 'full' or 'bbox', got {protocol['crop']!r}")
    bg = protocol["background"]
    if bg is not None and (len(bg) != 3 or any(not 0.0 <= float(c) <= 1.0 for c in bg)):
        raise ValueError(f"protocol['background'] must be None or 3 values in [0, 1], got {bg!r}")
    if protocol["lpips_net"] not in ("alex", "vgg"):
        raise ValueError(f"protocol['lpips_net'] must be 'alex' or 'vgg', got {protocol['lpips_net']!r}")
    if protocol["lpips_input"] not in ("minus_one_one", "zero_one_as_is"):
        raise ValueError(
            "protocol['lpips_input'] must be 'minus_one_one' or 'zero_one_as_is', "
            f"got {protocol['lpips_input']!r}"
        )
    if protocol["lpips_scale"] not in (1, 1000):
        raise ValueError(f"protocol['lpips_scale'] must be 1 or 1000, got {protocol['lpips_scale']!r}")
    res = protocol["resolution"]
    if res is not None and (len(res) != 2 or any(int(v) <= 0 for v in res)):
        raise ValueError(f"protocol['resolution'] must be None or (H, W) > 0, got {res!r}")
    if not isinstance(protocol["mask_prediction"], bool):
        raise ValueError(f"protocol['mask_prediction'] must be true or false, got {protocol['mask_prediction']!r}")
    if protocol["mask_prediction"]:
        if protocol["name"] == "synthetic":
            raise ValueError("protocol 'synthetic' never masks the prediction (mask_prediction must be false)")
        if bg is None or not str(protocol["source"]).strip():
            raise ValueError(
                f"protocol {protocol['name']!r}: mask_prediction needs a background and a source naming the "
                "evaluation file that masks the prediction"
            )
    pad = protocol["bbox_pad"]
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"protocol['bbox_pad'] must be an integer >= 0, got {pad!r}")
    if not isinstance(protocol["source"], str):
        raise ValueError(f"protocol['source'] must be a string, got {protocol['source']!r}")


# --------------------------------------------------------------------------------------------
# Frame validation and collation


def _shape_str(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def _check_tensor(
    value: Any, key: str, shape: Sequence[int | None], source: str, dtype: torch.dtype | None = torch.float32
) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{source}: '{key}' must be a torch.Tensor of shape {_shape_str(shape)}, got {type(value).__name__}")
    if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        raise ValueError(
            f"{source}: '{key}' has shape {list(value.shape)}, expected {_shape_str(shape)}"
        )
    if dtype is not None and value.dtype != dtype:
        raise ValueError(f"{source}: '{key}' has dtype {value.dtype}, expected {dtype}")


def validate_frame(frame: Mapping[str, Any], source: str, model_type: str | None = None) -> None:
    """Check one unbatched frame dict against the contract.

    Args:
        frame: the dict a parser's ``seq[i]`` returns.
        source: the file the frame came from (named in every error message).
        model_type: ``"smpl"`` / ``"smplx"`` to also check the body keys of that model, or None
            to check whichever of the two key sets the body dict matches.

    Raises:
        ValueError: naming ``source``, the key and the expected shape.
    """
    for key in REQUIRED_KEYS:
        if key not in frame:
            raise ValueError(f"{source}: frame is missing key '{key}'; required keys are {list(REQUIRED_KEYS)}")
    image = frame[IMAGE]
    _check_tensor(image, IMAGE, (3, None, None), source)
    h, w = int(image.shape[1]), int(image.shape[2])
    _check_tensor(frame[MASK], MASK, (1, h, w), source)
    if DEPTH in frame:
        _check_tensor(frame[DEPTH], DEPTH, (1, h, w), source)
    _check_tensor(frame[K], K, (3, 3), source)
    _check_tensor(frame[W2C], W2C, (4, 4), source)
    for key in (FRAME_ID, CAMERA_ID, INDEX):
        if not isinstance(frame[key], (int, np.integer)) or isinstance(frame[key], bool):
            raise ValueError(f"{source}: '{key}' must be an int, got {type(frame[key]).__name__}")
    body = frame[BODY]
    if not isinstance(body, Mapping):
        raise ValueError(f"{source}: 'body' must be a dict of tensors, got {type(body).__name__}")
    if model_type is None:
        model_type = "smplx" if "jaw_pose" in body else "smpl"
    expected = body_keys(model_type)
    for key, dim in expected.items():
        if key not in body:
            raise ValueError(f"{source}: body is missing '{key}' (expected [{dim or '*'}]) for {model_type}")
        _check_tensor(body[key], f"body.{key}", (dim,), source)
    for key, value in body.items():
        if key in expected:
            continue
        if key not in OPTIONAL_BODY_KEYS:
            raise ValueError(f"{source}: unexpected body key '{key}' for {model_type}")
        _check_tensor(value, f"body.{key}", (OPTIONAL_BODY_KEYS[key],), source)


def collate(frames: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack frame dicts into a batch of the contract.

    Tensors get a leading batch dimension, ``body`` is collated key by key, and
    ``frame_id`` / ``camera_id`` / ``index`` become int64 tensors ``[B]``.

    Args:
        frames: frame dicts as returned by ``seq[i]`` (same image size, same body keys).

    Returns:
        The batch dict: ``image [B,3,H,W]``, ``mask [B,1,H,W]``, ``K [B,3,3]``, ``w2c [B,4,4]``,
        ``body`` (dict of ``[B, D]``), ``frame_id [B]``, ``camera_id [B]``, ``index [B]`` and
        ``depth [B,1,H,W]`` when every frame has depth.

    Raises:
        ValueError: if the frames cannot be stacked (different sizes or key sets).
    """
    if len(frames) == 0:
        raise ValueError("collate() needs at least one frame")
    first = frames[0]
    keys = set(first.keys())
    for f in frames[1:]:
        if set(f.keys()) != keys:
            raise ValueError(
                f"cannot collate frames with different keys: {sorted(keys)} vs {sorted(f.keys())} "
                f"(frame_id {first.get(FRAME_ID)} vs {f.get(FRAME_ID)})"
            )
    batch: dict[str, Any] = {}
    for key in first:
        if key == BODY:
            body_keys_first = set(first[BODY].keys())
            for f in frames[1:]:
                if set(f[BODY].keys()) != body_keys_first:
                    raise ValueError(
                        f"cannot collate body dicts with different keys: "
                        f"{sorted(body_keys_first)} vs {sorted(f[BODY].keys())}"
                    )
            batch[BODY] = {k: _stack([f[BODY][k] for f in frames], f"body.{k}") for k in first[BODY]}
        elif key in (FRAME_ID, CAMERA_ID, INDEX):
            batch[key] = torch.tensor([int(f[key]) for f in frames], dtype=torch.long)
        elif isinstance(first[key], torch.Tensor):
            batch[key] = _stack([f[key] for f in frames], key)
        else:
            batch[key] = [f[key] for f in frames]
    return batch


def _stack(tensors: Sequence[torch.Tensor], key: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(
            f"cannot collate '{key}' with different shapes {sorted(shapes)}; "
            "use the parser's resolution= option to give every frame one size"
        )
    return torch.stack(list(tensors), dim=0)


# --------------------------------------------------------------------------------------------
# File helpers shared by parsers


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`MissingFileError` naming it.

    Args:
        path: the file.
        what: a short description of what the file should hold.
    """
    if not path.is_file():
        raise MissingFileError(f"{path}: missing file; expected {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise :class:`MissingFileError` naming it.

    Args:
        path: the folder.
        what: a short description of what the folder should hold.
    """
    if not path.is_dir():
        raise MissingFileError(f"{path}: missing folder; expected {what}")
    return path


def subject_dir(root: str | Path, subject: str | None, what: str) -> Path:
    """The folder a parser reads: ``root``, or ``root / subject``, checked with :func:`require_dir`.

    Args:
        root: the subject / sequence folder, or the folder holding ``subject``.
        subject: a subfolder of ``root`` to read, or None for ``root`` itself.
        what: a short description of what the folder should hold.

    Raises:
        MissingFileError: if the folder does not exist.
    """
    root = Path(root)
    if subject is not None:
        root = root / subject
    return require_dir(root, what)


def load_npy_dict(path: Path, what: str) -> dict[str, Any]:
    """Load a dict saved with ``np.save`` (a pickled 0-d object array).

    Args:
        path: the ``.npy`` file.
        what: a short description of what the dict should hold (named in every error).

    Raises:
        MissingFileError: if the file does not exist.
        DatasetError: if it cannot be loaded or does not hold a dict.
    """
    require_file(path, what)
    try:
        obj = np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise DatasetError(f"{path}: cannot load ({exc}); expected {what}") from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict saved with np.save ({what}), got {type(obj).__name__}")
    return obj


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode an image file to RGB uint8 ``[H, W, 3]``.

    Grayscale images are repeated over 3 channels; an alpha channel is dropped; 16-bit images
    are scaled to 8 bits.

    Args:
        path: the image file.

    Raises:
        MissingFileError: if the file does not exist.
        DatasetError: if the file cannot be decoded.
    """
    if not path.is_file():
        raise MissingFileError(f"{path}: missing image file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64) / 257.0
                arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc


def read_mask_png(path: Path, palette_index: bool = True) -> np.ndarray:
    """Decode a mask image to its raw values ``[H, W]`` (multi-channel images: channel max).

    Args:
        path: the mask image.
        palette_index: for palette images, return the palette index (label maps such as SCHP
            parsing, where index 0 is the background) instead of the grey value of the colour.

    Returns:
        The pixel values as an integer array; the caller decides which values are foreground.

    Raises:
        MissingFileError: if the file does not exist.
        DatasetError: if the file cannot be decoded.
    """
    if not path.is_file():
        raise MissingFileError(f"{path}: missing mask file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P" and palette_index:
                # Palette-coded parsing maps: index 0 is the background label.
                arr = np.asarray(im, dtype=np.uint8)
            elif im.mode == "P":
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            elif im.mode in ("RGBA", "LA"):
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            else:
                arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode mask image ({exc})") from exc
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr.astype(np.int64)


def evenly_spaced(items: Sequence[int], count: int) -> list[int]:
    """Pick up to ``count`` items spread evenly over ``items`` (first item always included).

    Args:
        items: the candidates, in order.
        count: how many to keep.
    """
    items = list(items)
    if count <= 0 or not items:
        return []
    if len(items) <= count:
        return items
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[p] for p in sorted(set(picks.tolist()))]


# --------------------------------------------------------------------------------------------
# The base class of parsed sequences


@dataclass
class FrameRecord:
    """Everything a sequence knows about one item before decoding its pixels.

    Attributes:
        K: ``[3, 3]`` intrinsics at native resolution (float64).
        w2c: ``[4, 4]`` world-to-camera, OpenCV, metres (float64).
        body: body parameters as numpy arrays (standard SMPL / SMPL-X convention).
        frame_id: the dataset's own frame number.
        camera_id: one label per physical camera.
        source: the image file (named in error messages).
        size: native ``(H, W)`` if known without decoding, else None.
        paths: parser-specific files to decode (image, mask, depth ...).
    """

    K: np.ndarray
    w2c: np.ndarray
    body: dict[str, np.ndarray]
    frame_id: int
    camera_id: int
    source: str
    size: tuple[int, int] | None = None
    paths: dict[str, Any] = field(default_factory=dict)


@dataclass
class NativeFrame:
    """Decoded pixels of one item at native resolution.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        mask: ``[H, W]`` bool, True = person.
        depth: ``[H, W]`` float32 (0 = no value) or None.
        K: ``[3, 3]`` intrinsics matching these pixels (a parser that undistorts or otherwise
            changes the pixels may change K); None = the record's K.
    """

    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray | None = None
    K: np.ndarray | None = None


class FrameSequence(abc.ABC):
    """Base class of every parser: frames, splits, protocol and the common resize options.

    Subclasses fill ``self.records`` (one :class:`FrameRecord` per item), ``self.splits``,
    ``self.protocol``, ``self.model_type``, ``self.gender`` and ``self.subject`` in their
    constructor and implement :meth:`_read` to decode one record's pixels.

    Geometry options (applied identically to image, mask, depth and K, in this order):

    * ``crop``: None, ``"center_square"`` (the largest centred square) or
      ``(top, left, height, width)`` in native pixels.
    * ``resolution=(H, W)`` or ``downscale=k`` (output size ``round(H / k), round(W / k)``).
      Images are resampled bilinearly (antialiased), masks and depth by nearest neighbour.
      K follows the pixel-centre convention: ``fx' = fx * sx``, ``cx' = (cx + 0.5) * sx - 0.5``.

    Args:
        resolution: output ``(H, W)`` or None.
        downscale: output = native / downscale, or None.
        crop: see above.
    """

    def __init__(
        self,
        *,
        resolution: Sequence[int] | None = None,
        downscale: float | None = None,
        crop: str | Sequence[int] | None = None,
    ) -> None:
        if resolution is not None and downscale is not None:
            raise ValueError("pass either resolution=(H, W) or downscale=k, not both")
        if resolution is not None:
            if len(resolution) != 2 or int(resolution[0]) <= 0 or int(resolution[1]) <= 0:
                raise ValueError(f"resolution must be (H, W) with positive values, got {resolution!r}")
            resolution = (int(resolution[0]), int(resolution[1]))
        if downscale is not None and float(downscale) <= 0:
            raise ValueError(f"downscale must be > 0, got {downscale!r}")
        if crop is not None and not isinstance(crop, str):
            if len(crop) != 4 or int(crop[2]) <= 0 or int(crop[3]) <= 0 or int(crop[0]) < 0 or int(crop[1]) < 0:
                raise ValueError(f"crop must be (top, left, height, width) inside the image, got {crop!r}")
            crop = tuple(int(c) for c in crop)
        elif isinstance(crop, str) and crop != "center_square":
            raise ValueError(f"crop must be None, 'center_square' or (top, left, height, width), got {crop!r}")
        self.resolution = resolution
        self.downscale = None if downscale is None else float(downscale)
        self.crop = crop
        self.records: list[FrameRecord] = []
        self.splits: dict[str, list[int]] = {name: [] for name in SPLITS}
        self.protocol: dict[str, Any] = {}
        self.model_type: str = "smpl"
        self.gender: str = "neutral"
        self.subject: str = ""
        self.root: Path | None = None

    # -- subclass hook ------------------------------------------------------------------------

    @abc.abstractmethod
    def _read(self, record: FrameRecord) -> NativeFrame:
        """Decode the pixels of one record at native resolution (each parser implements it)."""

    # -- public API ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    @property
    def frame_ids(self) -> list[int]:
        """Sorted distinct frame ids of the sequence."""
        return sorted({r.frame_id for r in self.records})

    @property
    def num_frames(self) -> int:
        """Number of distinct frame ids (time steps), e.g. for per-frame embeddings."""
        return len({r.frame_id for r in self.records})

    @property
    def camera_ids(self) -> list[int]:
        """Sorted distinct camera labels."""
        return sorted({r.camera_id for r in self.records})

    def frame_position(self, frame_id: int) -> int:
        """Position of ``frame_id`` in :attr:`frame_ids` (0 .. num_frames - 1), e.g. for embeddings."""
        positions = self.__dict__.get("_frame_positions")
        if positions is None:  # records are fixed once the constructor has run
            positions = {fid: p for p, fid in enumerate(self.frame_ids)}
            self._frame_positions = positions
        if int(frame_id) not in positions:
            raise KeyError(f"frame_id {frame_id} is not in this sequence")
        return positions[int(frame_id)]

    def output_size(self, i: int = 0) -> tuple[int, int] | None:
        """Output ``(H, W)`` of item ``i`` without decoding it, or None if unknown."""
        native = self.records[i].size if self.records else None
        if native is None:
            return None
        (h, w), _ = self._geometry(native)
        return h, w

    def mask_files(self, record: FrameRecord) -> list[Path]:
        """The mask / segmentation files decoded with a record's image (each must have the image's
        size); checked by the datamodule's up-front validation. Default: ``paths["mask"]`` or
        ``paths["seg"]``; a parser that finds its masks otherwise overrides this."""
        return [Path(record.paths[k]) for k in ("mask", "seg") if isinstance(record.paths.get(k), (str, Path))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if isinstance(i, (np.integer,)):
            i = int(i)
        if not isinstance(i, int):
            raise TypeError(f"sequence indices must be int, got {type(i).__name__}")
        if i < 0:
            i += len(self.records)
        if not 0 <= i < len(self.records):
            raise IndexError(f"index {i} out of range for a sequence of {len(self.records)} items")
        rec = self.records[i]
        native = self._read(rec)
        if native.image.ndim != 3 or native.image.shape[2] != 3:
            raise DatasetError(f"{rec.source}: expected an RGB image [H, W, 3], got {native.image.shape}")
        h, w = native.image.shape[:2]
        if native.mask.shape != (h, w):
            raise DatasetError(
                f"{rec.source}: mask has shape {native.mask.shape}, expected the image size ({h}, {w})"
            )
        if native.depth is not None and native.depth.shape != (h, w):
            raise DatasetError(
                f"{rec.source}: depth has shape {native.depth.shape}, expected the image size ({h}, {w})"
            )
        K_native = rec.K if native.K is None else native.K
        (out_h, out_w), transform = self._geometry((h, w))
        image, mask, depth, K_out = self._apply_geometry(native, K_native, (out_h, out_w), transform)
        frame: dict[str, Any] = {
            IMAGE: torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            MASK: torch.from_numpy(mask.astype(np.float32))[None],
            K: torch.from_numpy(np.asarray(K_out, dtype=np.float32)),
            W2C: torch.from_numpy(np.asarray(rec.w2c, dtype=np.float32)),
            BODY: {k: torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(-1).copy()) for k, v in rec.body.items()},
            FRAME_ID: int(rec.frame_id),
            CAMERA_ID: int(rec.camera_id),
            INDEX: i,
        }
        if depth is not None:
            frame[DEPTH] = torch.from_numpy(depth.astype(np.float32))[None]
        validate_frame(frame, rec.source, self.model_type)
        return frame

    # -- geometry -----------------------------------------------------------------------------

    def _geometry(self, native: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """Output size and crop box ``(top, left, height, width)`` for a native size."""
        h, w = native
        if self.crop is None:
            box = (0, 0, h, w)
        elif self.crop == "center_square":
            s = min(h, w)
            box = ((h - s) // 2, (w - s) // 2, s, s)
        else:
            box = tuple(self.crop)  # type: ignore[assignment]
            if box[0] + box[2] > h or box[1] + box[3] > w:
                raise ValueError(f"crop {box} (top, left, height, width) exceeds the image size ({h}, {w})")
        ch, cw = box[2], box[3]
        if self.resolution is not None:
            out = self.resolution
        elif self.downscale is not None:
            out = (max(1, int(round(ch / self.downscale))), max(1, int(round(cw / self.downscale))))
        else:
            out = (ch, cw)
        return out, box  # type: ignore[return-value]

    @staticmethod
    def _apply_geometry(
        native: NativeFrame,
        K_native: np.ndarray,
        out: tuple[int, int],
        box: tuple[int, int, int, int],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        top, left, ch, cw = box
        image = native.image[top : top + ch, left : left + cw]
        mask = native.mask[top : top + ch, left : left + cw]
        depth = None if native.depth is None else native.depth[top : top + ch, left : left + cw]
        K_out = np.array(K_native, dtype=np.float64, copy=True)
        K_out[0, 2] -= left
        K_out[1, 2] -= top
        out_h, out_w = out
        if (out_h, out_w) != (ch, cw):
            sx, sy = out_w / cw, out_h / ch
            image = np.asarray(
                Image.fromarray(np.ascontiguousarray(image)).resize((out_w, out_h), Image.Resampling.BILINEAR)
            )
            mask = np.asarray(
                Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8))).resize(
                    (out_w, out_h), Image.Resampling.NEAREST
                )
            )
            if depth is not None:
                depth = np.asarray(
                    Image.fromarray(np.ascontiguousarray(depth.astype(np.float32))).resize(
                        (out_w, out_h), Image.Resampling.NEAREST
                    )
                )
            K_out[0, 0] *= sx
            K_out[0, 1] *= sx
            K_out[0, 2] = (K_out[0, 2] + 0.5) * sx - 0.5
            K_out[1, 1] *= sy
            K_out[1, 2] = (K_out[1, 2] + 0.5) * sy - 0.5
        return image, mask.astype(bool), depth, K_out

    # -- helpers for subclasses ---------------------------------------------------------------

    def _finish_splits(self, splits: Mapping[str, Sequence[int]]) -> None:
        """Store splits, checking names and index ranges."""
        out: dict[str, list[int]] = {}
        for name in SPLITS:
            idx = [int(i) for i in splits.get(name, [])]
            bad = [i for i in idx if not 0 <= i < len(self.records)]
            if bad:
                raise DatasetError(f"split '{name}' refers to items {bad[:5]} outside 0..{len(self.records) - 1}")
            out[name] = idx
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; expected {list(SPLITS)}")
        self.splits = out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(subject={self.subject!r}, items={len(self)}, frames={self.num_frames}, "
            f"cameras={len(self.camera_ids)}, model_type={self.model_type!r}, "
            f"splits={ {k: len(v) for k, v in self.splits.items()} })"
        )

