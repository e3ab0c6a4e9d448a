"""Checkpoint registry and downloads over the real HTTP code path (a local server on 127.0.0.1):
a redirect, a 404, a truncated body, a wrong hash; nothing unverified ever reaches the cache."""
from __future__ import annotations

import hashlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zoo import checkpoints as ck

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, several torch.hub read chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()
REV = "0123456789abcdef0123456789abcdef01234567"


class _Handler(BaseHTTPRequestHandler):
    hits: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        if self.path == "/ckpt.bin" or self.path == f"/org/avatars/resolve/{REV}/ga/ckpt.bin":
            self._send(PAYLOAD)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ckpt.bin")
            self.end_headers()
        elif self.path == "/truncated":  # promises the whole file, sends half, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/tampered":  # right size, one byte changed
            body = bytearray(PAYLOAD)
            body[-1] ^= 0xFF
            self._send(bytes(body))
        else:
            self.send_error(404, "Not Found")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _entry(url: str, sha: str = SHA, size: int = len(PAYLOAD), method: str = "gaussian_avatar") -> str:
    return (f"  url: {url}\n  sha256: {sha}\n  size: {size}\n  method: {method}\n  dataset: synthetic\n"
            "  config: {train: python train.py}\n  metrics: {test_view: {psnr: 20.0}}\n  protocol: {lpips_net: alex}\n"
            "  licence: Apache-2.0\n")


@pytest.fixture()
def registry(tmp_path, monkeypatch, server):
    """A registry with one entry per server route, and an empty cache."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    routes = {"redirect": "/redirect", "missing": "/missing", "truncated": "/truncated", "tampered": "/tampered",
              "direct": "/ckpt.bin"}
    text = "".join(f"gaussian_avatar.http_{key}:\n" + _entry(server + route) for key, route in routes.items())
    text += "gaussian_avatar.hub_s0:\n" + _entry(f"hf://org/avatars@{REV}/ga/ckpt.bin")
    path = tmp_path / "checkpoints" / "registry.yaml"
    path.parent.mkdir()
    path.write_text(text)
    monkeypatch.setenv("ZOO_CHECKPOINT_REGISTRY", str(path))
    return path


def _cache_files(tmp_path: Path) -> list:
    root = tmp_path / "cache" / "checkpoints"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_redirect_downloads_verifies_and_caches(registry, tmp_path):
    _Handler.hits.clear()
    path = ck.download("gaussian_avatar.http_redirect", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.hits == ["/redirect", "/ckpt.bin"]  # the redirect was followed over HTTP
    assert path.parent.parent.parent == tmp_path / "cache" / "checkpoints"
    assert _cache_files(tmp_path) == ["gaussian_avatar.http_redirect.ckpt"]  # no temporary file left behind
    assert ck.verify("gaussian_avatar.http_redirect") == path
    # a second call uses the verified cache, no request
    assert ck.download("gaussian_avatar.http_redirect", progress=False) == path
    assert _Handler.hits == ["/redirect", "/ckpt.bin"]


@pytest.mark.parametrize("name, message", [
    ("gaussian_avatar.http_missing", "HTTP 404"),
    ("gaussian_avatar.http_truncated", "does not match"),
    ("gaussian_avatar.http_tampered", "does not match its recorded hash"),
])
def test_failed_download_never_reaches_the_cache(registry, tmp_path, name, message):
    with pytest.raises(ck.CheckpointError, match=message):
        ck.download(name, progress=False)
    assert _cache_files(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="not in the cache"):
        ck.verify(name)


def test_wrong_full_hash_with_matching_prefix_is_refused(tmp_path, monkeypatch, server):
    """torch.hub checks only a prefix; the full sha256 is checked here too."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    wrong = SHA[:16] + ("0" if SHA[16] != "0" else "1") + SHA[17:]
    reg = tmp_path / "checkpoints" / "registry.yaml"
    reg.parent.mkdir()
    reg.write_text("gaussian_avatar.http_s0:\n" + _entry(server + "/ckpt.bin", sha=wrong))
    with pytest.raises(ck.CheckpointError, match="sha256"):
        ck.download("gaussian_avatar.http_s0", progress=False, registry=reg)
    assert _cache_files(tmp_path) == []


def test_tampered_cache_fails_verify_and_is_fetched_again(registry, tmp_path):
    path = ck.download("gaussian_avatar.http_direct", progress=False)
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match="sha256"):
        ck.verify("gaussian_avatar.http_direct")
    assert ck.download("gaussian_avatar.http_direct", progress=False).read_bytes() == PAYLOAD


def test_hub_url_pinned_to_a_commit(registry, tmp_path, monkeypatch, server):
    """hf://org/repo@commit/path, fetched over the Hub's resolve url (huggingface_hub hidden)."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the plain-HTTP fallback
    monkeypatch.setenv("HF_ENDPOINT", server)
    _Handler.hits.clear()
    path = ck.download("gaussian_avatar.hub_s0", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.hits == [f"/org/avatars/resolve/{REV}/ga/ckpt.bin"]


@pytest.mark.parametrize("field, value, message", [
    ("sha256", "abc123", "full 64-hex"),
    ("url", "http://example.com/a.ckpt", "plain http"),
    ("url", "ftp://example.com/a.ckpt", "must start with"),
    ("url", "hf://org/repo@main/a.ckpt", "pinned to a commit"),
    ("size", "0", "positive byte count"),
    ("method", "gs_avatar", "must start with its method"),
])
def test_bad_registry_entries_name_the_field(tmp_path, field, value, message):
    lines = [line if not line.startswith(f"  {field}:") else f"  {field}: {value}"
             for line in _entry("https://example.com/a.ckpt").splitlines()]
    reg = tmp_path / "registry.yaml"
    reg.write_text("gaussian_avatar.synthetic_s0:\n" + "\n".join(lines) + "\n")
    with pytest.raises(ck.CheckpointError, match=message) as info:
        ck.load_registry(reg)
    assert "gaussian_avatar.synthetic_s0" in str(info.value)


def test_missing_field_and_unknown_name(tmp_path):
    reg = tmp_path / "registry.yaml"
    reg.write_text("gaussian_avatar.synthetic_s0:\n" + _entry("https://example.com/a.ckpt").replace("  licence: Apache-2.0\n", ""))
    with pytest.raises(ck.CheckpointError, match="licence"):
        ck.load_registry(reg)
    reg.write_text("gaussian_avatar.synthetic_s0:\n" + _entry("https://example.com/a.ckpt"))
    with pytest.raises(ck.CheckpointError, match="unknown checkpoint 'nope.x'.*gaussian_avatar.synthetic_s0"):
        ck.get_entry("nope.x", reg)


def test_cli_list_download_verify(registry, tmp_path, capsys):
    from zoo.__main__ import main

    assert main(["checkpoints", "list"]) == 0
    out = capsys.readouterr().out
    assert "gaussian_avatar.http_redirect" in out and "20.00 dB" in out
    assert main(["checkpoints", "download", "gaussian_avatar.http_redirect", "--quiet"]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    assert main(["checkpoints", "verify", "gaussian_avatar.http_redirect"]) == 0
    assert main(["checkpoints", "download", "gaussian_avatar.http_missing", "--quiet"]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert main(["checkpoints", "verify", "gaussian_avatar.http_missing"]) == 2


def test_shipped_registry_is_valid_and_its_files_match():
    """Every shipped entry parses; every file:// entry's file is in the repository with its recorded hash."""
    entries = ck.load_registry(ck.registry_path() if "ZOO_CHECKPOINT_REGISTRY" not in __import__("os").environ
                               else Path(__file__).resolve().parent.parent / "checkpoints" / "registry.yaml")
    assert entries, "checkpoints/registry.yaml lists no checkpoint"
    for entry in entries.values():
        assert entry.metrics and all("psnr" in v for v in entry.metrics.values()), entry.name
        if entry.url.startswith("file://"):
            local = entry.base_dir / entry.url[len("file://"):]
            assert local.stat().st_size == entry.size, entry.name
            assert ck.sha256_file(local) == entry.sha256, entry.name


def _reproduce(name: str, splits: list, tmp_path, monkeypatch) -> dict:
    """eval.py checkpoint=NAME in a fresh folder: the recorded synthetic subject is regenerated from the
    checkpoint's own data section, the file is copied into an empty cache and verified, then scored."""
    import json

    import eval as eval_script

    monkeypatch.setattr(ck, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv("ZOO_CHECKPOINT_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)  # the recorded data root (data/synthetic/...) is written here
    out = tmp_path / "eval"
    assert eval_script.main([f"checkpoint={name}", f"out_dir={out}", f"splits=[{','.join(splits)}]",
                             "save_images=false", "baseline=false", "trainer.enable_progress_bar=false"]) == 0
    assert ck.verify(name).is_file()
    return json.loads((out / "metrics.json").read_text())


def _shipped(name: str):
    reg = Path(__file__).resolve().parent.parent / "checkpoints" / "registry.yaml"
    return ck.load_registry(reg)[name]


def test_eval_reproduces_the_shipped_gaussian_avatar(tmp_path, monkeypatch):
    """The shipped GaussianAvatar scores its recorded metrics within 0.1 dB (the test_pose split only,
    to keep this fast; the slow twin below scores every recorded split)."""
    entry = _shipped("gaussian_avatar.synthetic_s0")
    scored = _reproduce(entry.name, ["test_pose"], tmp_path, monkeypatch)
    assert scored["method"] == "gaussian_avatar" and scored["checkpoint"] == entry.name
    for key in ("psnr", "psnr_crop"):
        assert abs(scored["metrics"]["test_pose"][key] - entry.metrics["test_pose"][key]) < 0.1, key
    # and it is a trained avatar, not a blank render: far above the nearest-frame baseline
    assert entry.metrics["test_pose"]["psnr"] > 30.0


@pytest.mark.slow
def test_eval_reproduces_every_shipped_checkpoint_on_every_split(tmp_path, monkeypatch):
    reg = Path(__file__).resolve().parent.parent / "checkpoints" / "registry.yaml"
    for i, entry in enumerate(ck.load_registry(reg).values()):
        work = tmp_path / str(i)
        work.mkdir()
        scored = _reproduce(entry.name, list(entry.metrics), work, monkeypatch)
        for split, values in entry.metrics.items():
            assert abs(scored["metrics"][split]["psnr"] - values["psnr"]) < 0.1, (entry.name, split)


def test_load_pretrained_pins_the_trained_step(tmp_path, monkeypatch):
    """zoo.load_pretrained verifies and rebuilds; the module renders at its saved step (stages and
    schedules as they were when it was saved), not at step 0."""
    import torch

    import zoo

    monkeypatch.setattr(ck, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv("ZOO_CHECKPOINT_REGISTRY", raising=False)
    model = zoo.load_pretrained("gaussian_avatar.synthetic_s0", progress=False)
    assert model.method_name == "gaussian_avatar" and not model.training
    saved = torch.load(ck.verify("gaussian_avatar.synthetic_s0"), map_location="cpu", weights_only=True)
    assert "optimizer_states" not in saved  # shipped stripped of the training state
    assert model.step == int(saved["global_step"]) > 0
    assert model.stage == (1 if model.step < int(model.cfg.stage1_steps) else 2)
    with pytest.raises(FileNotFoundError):
        zoo.load(tmp_path / "nope.ckpt")
