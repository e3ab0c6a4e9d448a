"""Pretrained checkpoints: a registry of trained avatars, verified downloads, a cache, safe loading.

The registry (``checkpoints/registry.yaml``; ``$ZOO_CHECKPOINT_REGISTRY`` points elsewhere) maps a
name ``<method>.<dataset>_<subject>`` to one entry::

    gaussian_avatar.synthetic_s0:
      url: file://checkpoints/gaussian_avatar.synthetic_s0.ckpt   # https://..., file://..., hf://org/repo@<commit>/path
      sha256: <64 hex digits>          # of the whole file
      size: 5400000                    # bytes
      method: gaussian_avatar          # registered method name (the checkpoint's own config must agree)
      dataset: synthetic               # data config the model was trained on
      subject: synthetic_000           # subject within the dataset
      config: {train: "python train.py experiment=...", experiment: ..., data: {...}}  # how to rebuild / retrain
      protocol: {...}                  # zoo.core.metrics.EvalProtocol fields the metrics were scored with
      metrics: {test_view: {psnr: ...}, test_pose: {...}}   # what eval.py scores on it
      licence: Apache-2.0

Adding a checkpoint is adding one entry: ``python -m zoo checkpoints pack RUN/checkpoints/best.ckpt
--name NAME`` strips the training state, writes ``checkpoints/NAME.ckpt`` and prints the entry.

URLs:
    * ``https://...`` (``http://`` only for a loopback host, as the tests use).
    * ``file://PATH``: a relative PATH is resolved against the folder above the registry's folder
      (the repository root for ``checkpoints/registry.yaml``); ``file:///abs/path`` is absolute.
    * ``hf://ORG/REPO@REVISION/PATH``: a Hugging Face Hub file pinned to a 40-hex commit. Fetched with
      ``huggingface_hub.hf_hub_download`` when that package is installed, else over the Hub's plain
      ``{HF_ENDPOINT}/ORG/REPO/resolve/REVISION/PATH`` URL.

Downloads land in ``$ZOO_CACHE/checkpoints/<name>/`` (default ``~/.cache/avatar-zoo``): bytes go to
a temporary file in that folder (``torch.hub.download_url_to_file``: progress bar, its own
``.partial`` file, the hash prefix checked), then the size and the full sha256 are checked, and
only then is the file renamed to its final name. An interrupted, truncated or tampered download
never reaches the cached name. Loading always uses ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import shutil
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "CheckpointEntry", "CheckpointError", "registry_path", "load_registry", "get_entry", "cache_dir",
    "cached_path", "download", "verify", "sha256_file", "load", "load_pretrained", "pack", "entry_yaml",
]

NAME_RE = re.compile(r"^[a-z0-9_]+\.[A-Za-z0-9_\-]+$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
HF_RE = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)@(?P<rev>[0-9a-f]{40})/(?P<path>.+)$")
REQUIRED = ("url", "sha256", "size", "method", "dataset", "config", "metrics", "protocol", "licence")
#: what pack() drops from a Lightning checkpoint: training state a pretrained avatar does not need
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "callbacks", "loops", "MixedPrecision", "native_amp_scaling_state")


class CheckpointError(ValueError):
    """A bad registry entry, a failed download or a file that does not match its recorded hash."""


@dataclass
class CheckpointEntry:
    """One registry entry (see the module docstring for the fields)."""

    name: str
    url: str
    sha256: str
    size: int
    method: str
    dataset: str
    config: Dict[str, Any]
    metrics: Dict[str, Dict[str, float]]
    protocol: Dict[str, Any]
    licence: str
    subject: str = ""
    description: str = ""
    base_dir: Path = field(default_factory=Path.cwd)  # resolves relative file:// urls

    @property
    def filename(self) -> str:
        """The file name in the cache: ``<name>.ckpt``."""
        return f"{self.name}.ckpt"


def registry_path() -> Path:
    """``$ZOO_CHECKPOINT_REGISTRY`` or the repository's ``checkpoints/registry.yaml``."""
    env = os.environ.get("ZOO_CHECKPOINT_REGISTRY")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "checkpoints" / "registry.yaml"


def _check_url(name: str, url: str) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "https" and parsed.netloc:
        return
    if parsed.scheme == "http":
        host = parsed.hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
        raise CheckpointError(f"checkpoint {name!r}: url {url!r} is plain http; use https (http only for a loopback host)")
    if parsed.scheme == "file" and url[len("file://"):]:
        return
    if parsed.scheme == "hf":
        if not HF_RE.match(url):
            raise CheckpointError(f"checkpoint {name!r}: url {url!r} must be hf://ORG/REPO@<40-hex commit>/PATH "
                                  "(a Hub file pinned to a commit)")
        return
    raise CheckpointError(f"checkpoint {name!r}: url {url!r} must start with https://, file:// or hf://")


def _entry(name: str, raw: Any, base_dir: Path, source: Path) -> CheckpointEntry:
    where = f"{source}: checkpoint {name!r}"
    if not NAME_RE.match(str(name)):
        raise CheckpointError(f"{source}: checkpoint name {name!r} must be <method>.<dataset>_<subject>")
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{where} must be a mapping of fields, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{where} lacks the field(s) {missing} (required: {list(REQUIRED)})")
    sha = str(raw["sha256"]).lower()
    if not SHA_RE.match(sha):
        raise CheckpointError(f"{where}: sha256 must be the full 64-hex digest, got {raw['sha256']!r}")
    try:
        size = int(raw["size"])
    except (TypeError, ValueError):
        size = -1
    if size <= 0:
        raise CheckpointError(f"{where}: size must be a positive byte count, got {raw['size']!r}")
    if str(name).split(".", 1)[0] != str(raw["method"]):
        raise CheckpointError(f"{where}: the name must start with its method {raw['method']!r}")
    for key in ("config", "metrics", "protocol"):
        if not isinstance(raw[key], Mapping):
            raise CheckpointError(f"{where}: {key} must be a mapping, got {type(raw[key]).__name__}")
    _check_url(str(name), str(raw["url"]))
    return CheckpointEntry(
        name=str(name), url=str(raw["url"]), sha256=sha, size=size, method=str(raw["method"]),
        dataset=str(raw["dataset"]), config=dict(raw["config"]), metrics={k: dict(v) for k, v in raw["metrics"].items()},
        protocol=dict(raw["protocol"]), licence=str(raw["licence"]), subject=str(raw.get("subject", "")),
        description=str(raw.get("description", "")), base_dir=base_dir)


def load_registry(path: Optional[os.PathLike | str] = None) -> Dict[str, CheckpointEntry]:
    """Read and validate the registry.

    Args:
        path: the registry YAML (default :func:`registry_path`).

    Returns:
        Entries by name, in file order.

    Raises:
        FileNotFoundError: no registry file. CheckpointError: a malformed entry (names the entry and field).
    """
    from omegaconf import OmegaConf

    path = Path(path) if path is not None else registry_path()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint registry not found: {path}")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a mapping name -> entry")
    base = path.resolve().parent.parent
    return {str(name): _entry(str(name), value, base, path) for name, value in raw.items()}


def get_entry(name: str, registry: Optional[os.PathLike | str] = None) -> CheckpointEntry:
    """The entry called ``name``; an unknown name is a CheckpointError listing the known ones."""
    entries = load_registry(registry)
    if name not in entries:
        raise CheckpointError(f"unknown checkpoint {name!r}; known: {', '.join(entries) or '(none)'}")
    return entries[name]


def cache_dir() -> Path:
    """``$ZOO_CACHE/checkpoints`` (default ``~/.cache/avatar-zoo/checkpoints``)."""
    root = Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "avatar-zoo").expanduser()
    return root / "checkpoints"


def cached_path(entry: CheckpointEntry) -> Path:
    """Where the verified file of ``entry`` lives in the cache (its sha256 prefix in the folder name,
    so a registry update with a new file never reuses an old one)."""
    return cache_dir() / entry.name / entry.sha256[:16] / entry.filename


def sha256_file(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(entry: CheckpointEntry, path: Path) -> Optional[str]:
    """Why ``path`` is not the recorded file, or None when size and sha256 match."""
    size = path.stat().st_size
    if size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return f"sha256 {digest}, expected {entry.sha256}"
    return None


def _source_url(entry: CheckpointEntry) -> str:
    """The url torch.hub fetches: file:// made absolute, hf:// mapped to the Hub's resolve url."""
    url = entry.url
    if url.startswith("file://"):
        rest = url[len("file://"):]
        path = Path(rest) if rest.startswith("/") else entry.base_dir / rest
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {entry.name!r}: {path} not found (url {url})")
        return path.resolve().as_uri()
    match = HF_RE.match(url)
    if match:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        return f"{endpoint}/{match['repo']}/resolve/{match['rev']}/{match['path']}"
    return url


def _fetch(entry: CheckpointEntry, dst: Path, progress: bool) -> None:
    """Bring the bytes of ``entry`` to ``dst`` (a temporary name; the caller verifies and renames)."""
    import torch.hub

    match = HF_RE.match(entry.url)
    if match:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            hf_hub_download = None
        if hf_hub_download is not None:
            local = hf_hub_download(repo_id=match["repo"], filename=match["path"], revision=match["rev"])
            shutil.copyfile(local, dst)
            return
    url = _source_url(entry)
    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=entry.sha256[:16], progress=progress)
    except urllib.error.HTTPError as err:
        raise CheckpointError(f"download of {entry.name!r} failed: HTTP {err.code} {err.reason} from {url}") from None
    except urllib.error.URLError as err:
        raise CheckpointError(f"download of {entry.name!r} failed: {err.reason} ({url})") from None
    except RuntimeError as err:  # torch.hub's hash-prefix check
        raise CheckpointError(f"download of {entry.name!r} from {url} does not match its recorded hash ({err}); "
                              "nothing was cached") from None
    except (OSError, http.client.HTTPException) as err:  # a body cut short, a connection reset
        raise CheckpointError(f"download of {entry.name!r} from {url} was interrupted ({err}); nothing was cached") from None


def download(name: str, force: bool = False, progress: bool = True,
             registry: Optional[os.PathLike | str] = None) -> Path:
    """The verified cached file of checkpoint ``name``, downloading it first when needed.

    Args:
        name: registry name.
        force: download again even when a verified file is cached.
        progress: show a progress bar on stderr.
        registry: registry file (default :func:`registry_path`).

    Returns:
        Path of the cached file (its size and sha256 match the entry).

    Raises:
        CheckpointError: unknown name, HTTP error, truncated or tampered bytes (nothing is cached then).
    """
    entry = get_entry(name, registry)
    final = cached_path(entry)
    if final.is_file() and not force:
        problem = _mismatch(entry, final)
        if problem is None:
            return final
        final.unlink()  # a cached file that no longer matches is dropped and fetched again
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.download")
    try:
        _fetch(entry, tmp, progress)
        problem = _mismatch(entry, tmp)
        if problem is not None:
            raise CheckpointError(f"download of {entry.name!r} from {entry.url} does not match the registry: "
                                  f"{problem}; nothing was cached")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def verify(name: str, registry: Optional[os.PathLike | str] = None) -> Path:
    """Check the cached file of ``name`` against its recorded size and sha256.

    Raises:
        FileNotFoundError: not downloaded yet. CheckpointError: the cached file does not match.
    """
    entry = get_entry(name, registry)
    path = cached_path(entry)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {name!r} is not in the cache ({path}); run: python -m zoo checkpoints "
                                f"download {name}")
    problem = _mismatch(entry, path)
    if problem is not None:
        raise CheckpointError(f"cached checkpoint {path} does not match the registry: {problem}")
    return path


def _body_models_for(info: Mapping[str, Any], body_models: Optional[str]) -> Optional[str]:
    """The body-model folder to rebuild with: the given one, the recorded one when it exists, else
    what the runner resolves for the recorded data (the procedural bodies for synthetic subjects)."""
    if body_models:
        return str(body_models)
    recorded = info.get("body_models")
    if recorded and Path(str(recorded)).exists():
        return str(recorded)
    from zoo import runner

    return runner.resolve_body_models(None, dict(info.get("data") or {})) or recorded


def load(path: os.PathLike | str, body_models: Optional[str] = None, map_location: str = "cpu"):
    """Rebuild a trained method from a checkpoint file (``torch.load(weights_only=True)``).

    Args:
        path: a checkpoint written by train.py or :func:`pack`.
        body_models: body-model folder; default the recorded one when it exists here, else the one
            the recorded data resolves to ($ZOO_BODY_MODELS, or the procedural bodies of synthetic data).
        map_location: device for the weights.

    Returns:
        The method module in eval mode.

    Raises:
        FileNotFoundError: no such file. ValueError: not a loadable Avatar Zoo checkpoint.
    """
    import torch

    from zoo import runner

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        peek = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - load_module below reports the reason with the file name
        peek = {}
    hp = peek.get("hyper_parameters") or {} if isinstance(peek, Mapping) else {}
    resolved = _body_models_for(dict(hp.get("data_info") or {}), body_models)
    # load_module pins the module to its saved step (schedules and stages read the Trainer's step)
    module = runner.load_module(path, resolved)
    return module.to(map_location)


def load_pretrained(name: str, body_models: Optional[str] = None, map_location: str = "cpu",
                    registry: Optional[os.PathLike | str] = None, progress: bool = True):
    """Download (if needed), verify and load the registry's checkpoint ``name``.

    Raises:
        CheckpointError: see :func:`download`; also when the checkpoint's method is not the entry's.
    """
    entry = get_entry(name, registry)
    path = download(name, progress=progress, registry=registry)
    module = load(path, body_models=body_models, map_location=map_location)
    if module.method_name != entry.method:
        raise CheckpointError(f"checkpoint {name!r} holds method {module.method_name!r}, the registry says {entry.method!r}")
    return module


# ---------------------------------------------------------------------------------------- packing
def pack(ckpt: os.PathLike | str, out: os.PathLike | str) -> Dict[str, Any]:
    """Write a pretrained-avatar copy of a training checkpoint: weights, config and data_info only.

    The training state (optimizer, schedulers, loops, callbacks) is dropped and the machine-specific
    body-model folder is forgotten (:func:`load` resolves it again). Written through a temporary file
    and a rename.

    Args:
        ckpt: a train.py checkpoint.
        out: the file to write.

    Returns:
        ``{"path", "sha256", "size", "method", "hyper_parameters"}`` of the written file.
    """
    import torch

    ckpt = Path(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = state.get("hyper_parameters") or {}
    if "cfg" not in hp or "state_dict" not in state:
        raise CheckpointError(f"{ckpt}: not an Avatar Zoo checkpoint (no state_dict / method config)")
    info = dict(hp.get("data_info") or {})
    info["body_models"] = None
    kept = {k: v for k, v in state.items() if k not in TRAINING_STATE}
    kept["hyper_parameters"] = {**hp, "data_info": info}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(kept, tmp)
    os.replace(tmp, out)
    return {"path": out, "sha256": sha256_file(out), "size": out.stat().st_size, "method": str(hp["cfg"]["name"]),
            "hyper_parameters": kept["hyper_parameters"]}


def entry_yaml(name: str, fields: Mapping[str, Any]) -> str:
    """One registry entry as YAML text (``name:`` then the indented fields)."""
    from omegaconf import OmegaConf

    body = OmegaConf.to_yaml(OmegaConf.create(dict(fields)), sort_keys=False)
    return f"{name}:\n" + "".join(f"  {line}\n" for line in body.splitlines())


def pack_entry(ckpt: os.PathLike | str, name: str, out_dir: os.PathLike | str, licence: str,
               metrics_json: Optional[os.PathLike | str] = None, train_command: str = "",
               repo_root: Optional[os.PathLike | str] = None) -> tuple[Path, str]:
    """:func:`pack` a run's checkpoint into ``out_dir/NAME.ckpt`` and build its registry entry.

    Metrics and protocol come from the run's metrics.json (default ``<run>/metrics.json`` beside the
    ``checkpoints/`` folder).

    Returns:
        The written file and the entry's YAML text (to append to the registry).
    """
    import json

    ckpt = Path(ckpt)
    if not NAME_RE.match(name):
        raise CheckpointError(f"checkpoint name {name!r} must be <method>.<dataset>_<subject>")
    metrics_path = Path(metrics_json) if metrics_json else ckpt.parent.parent / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: the run's metrics.json (the metrics the entry records)")
    run = json.loads(metrics_path.read_text())
    packed = pack(ckpt, Path(out_dir) / f"{name}.ckpt")
    if name.split(".", 1)[0] != packed["method"]:
        raise CheckpointError(f"checkpoint name {name!r} must start with its method {packed['method']!r}")
    info = packed["hyper_parameters"]["data_info"]
    data = dict(info.get("data") or {})
    root = Path(repo_root) if repo_root else Path(out_dir).resolve().parent
    try:
        rel = packed["path"].resolve().relative_to(root.resolve())
        url = f"file://{rel.as_posix()}"
    except ValueError:
        url = packed["path"].resolve().as_uri()
    fields = {
        "url": url, "sha256": packed["sha256"], "size": packed["size"], "method": packed["method"],
        "dataset": str(data.get("_name") or data.get("format") or "unknown"), "subject": str(info.get("subject", "")),
        "config": {"train": train_command, "data": {k: v for k, v in data.items() if k != "_name"},
                   "note": "the checkpoint stores the full method config and data_info (hyper_parameters)"},
        "protocol": run.get("protocol") or info.get("protocol") or {},
        "model_selection": run.get("model_selection", ""),
        "metrics": run.get("metrics") or {},
        "baseline": (run.get("baseline") or {}).get("metrics") or {},
        "licence": licence,
    }
    return packed["path"], entry_yaml(name, fields)


def describe(entries: Mapping[str, CheckpointEntry]) -> List[str]:
    """One line per entry for ``checkpoints list``: name, method, dataset, size, headline metrics."""
    lines = []
    for entry in entries.values():
        cached = "cached" if cached_path(entry).is_file() else "-"
        scores = "  ".join(f"{split} {vals['psnr']:.2f} dB" for split, vals in entry.metrics.items()
                           if isinstance(vals, Mapping) and "psnr" in vals)
        lines.append(f"{entry.name:<36} {entry.method:<16} {entry.dataset:<16} {entry.size / 1e6:7.2f} MB  "
                     f"{cached:<6}  {scores}  [{entry.licence}]")
    return lines
