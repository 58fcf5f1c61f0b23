"""Registry names, the cache folder, and downloads (against a local http.server only, never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from test_checkpoints_pickle import run_cli  # one in-process CLI runner for both files

from facebatch.errors import CheckpointError, ModelNotAvailable
from facebatch.nets import cache, registry
from facebatch.nets.checkpoints import load_networks
from facebatch.nets.native_format import write_native
from facebatch.nets.stylegan2 import Generator

G_KWARGS = dict(
    z_dim=8,
    c_dim=0,
    w_dim=8,
    img_resolution=4,
    img_channels=3,
    mapping_kwargs=dict(num_layers=1),
    synthesis_kwargs=dict(channel_base=32, channel_max=8),
)
NVLABS_HOSTS = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/",
    "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/",
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEBATCH_OFFLINE", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    return tmp_path / "cache"


class Server:
    """A bounded local HTTP server: serves `files`, counts GETs, can be slow or cut a body short."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        self.delay = 0.0
        self.short = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                time.sleep(server.delay)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if server.short else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    torch.manual_seed(3)
    path = write_native(
        tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", G_KWARGS, Generator(**G_KWARGS).state_dict()
    )
    return path.read_bytes()


def register(monkeypatch, name: str, url: str, sha256: str | None) -> registry.ModelEntry:
    entry = registry.ModelEntry(name=name, url=url, resolution=4, format="facebatch-safetensors", sha256=sha256)
    known = {**registry.models(), name: entry}
    monkeypatch.setattr(registry, "models", lambda: known)
    return entry


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or ".part" in p.name)


def test_registry_names_the_required_official_checkpoints():
    models = registry.models()
    for name, res in (
        ("ffhq-1024-ada", 1024),
        ("stylegan2-ffhq-1024", 1024),
        ("stylegan2-ffhq-512", 512),
        ("stylegan2-ffhq-256", 256),
    ):
        assert models[name].resolution == res
    paths = set()
    downloads = [e for e in models.values() if not e.builtin]
    for entry in downloads:
        assert entry.url.startswith(NVLABS_HOSTS) and entry.url.endswith(".pkl"), entry
        assert str(entry.resolution) in entry.name and entry.resolution & (entry.resolution - 1) == 0
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.format == "nvlabs-pickle" and entry.license
        paths.add(entry.cache_path())
    assert len(paths) == len(downloads), "two names must never share a cache file"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FACEBATCH_CACHE_DIR")
    assert cache.cache_dir() == tmp_path / "xdg" / "facebatch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "facebatch"


def test_offline_names_the_url_and_the_exact_path(monkeypatch, isolated_cache, capsys):
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    entry = registry.get("stylegan2-ffhq-256")
    with pytest.raises(ModelNotAvailable) as info:
        load_networks("stylegan2-ffhq-256")
    message = str(info.value)
    assert entry.url in message and str(isolated_cache / "models" / "stylegan2-ffhq-256" / entry.filename) in message
    assert "\n" not in message
    code, _, err = run_cli(["models", "fetch", "stylegan2-ffhq-256"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and entry.url in err
    assert not (isolated_cache / "models").exists() or not list((isolated_cache / "models").rglob("*.pkl"))


def test_download_lands_atomically_verifies_and_is_reused(monkeypatch, server, checkpoint_bytes, isolated_cache):
    server.files["/tiny.safetensors"] = checkpoint_bytes
    digest = hashlib.sha256(checkpoint_bytes).hexdigest()
    entry = register(monkeypatch, "tiny-4", f"{server.base}/tiny.safetensors", digest)

    loaded = load_networks("tiny-4")

    assert loaded.path == entry.cache_path() and loaded.path.read_bytes() == checkpoint_bytes
    assert loaded.sha256 == digest and cache.read_sidecar(loaded.path) == digest
    assert loaded.name == "tiny-4" and loaded.G.img_resolution == 4
    assert leftovers(isolated_cache) == []
    load_networks("tiny-4")
    assert server.hits == {"/tiny.safetensors": 1}, "a cached model must not be downloaded again"


def test_wrong_sha256_is_refused_and_leaves_nothing(monkeypatch, server, checkpoint_bytes, isolated_cache):
    server.files["/tiny.safetensors"] = checkpoint_bytes
    entry = register(monkeypatch, "tiny-4", f"{server.base}/tiny.safetensors", "0" * 64)
    with pytest.raises(CheckpointError, match="sha256 mismatch .* the download was discarded"):
        load_networks("tiny-4")
    assert not entry.cache_path().exists()
    assert leftovers(isolated_cache) == []


def test_concurrent_workers_download_once(monkeypatch, server, checkpoint_bytes):
    server.files["/tiny.safetensors"] = checkpoint_bytes
    server.delay = 0.3  # keep the first download open while the others arrive
    entry = register(
        monkeypatch, "tiny-4", f"{server.base}/tiny.safetensors", hashlib.sha256(checkpoint_bytes).hexdigest()
    )
    results, errors = [], []

    def worker():
        try:
            results.append(entry.fetch(progress=False))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and len(results) == 4 and len(set(results)) == 1
    assert server.hits["/tiny.safetensors"] == 1


@pytest.mark.parametrize("case", ["refused", "404", "short"])
def test_network_failures_are_one_line_naming_url_and_path(monkeypatch, server, checkpoint_bytes, isolated_cache, case):
    server.files["/tiny.safetensors"] = checkpoint_bytes
    server.short = case == "short"
    if case == "refused":
        url = "http://127.0.0.1:9/tiny.safetensors"  # discard port: nothing listens
    else:
        url = f"{server.base}/{'missing' if case == '404' else 'tiny'}.safetensors"
    entry = register(monkeypatch, "tiny-4", url, None)
    with pytest.raises(ModelNotAvailable) as info:
        load_networks("tiny-4")
    message = str(info.value)
    assert url in message and str(entry.cache_path()) in message, message
    assert {"refused": "Connection refused", "404": "Not Found", "short": "ended early"}[case] in message
    assert "\n" not in message
    assert not entry.cache_path().exists() and leftovers(isolated_cache) == []


def test_models_cli_fetch_list_verify_and_tamper(monkeypatch, server, checkpoint_bytes, isolated_cache, capsys):
    server.files["/tiny.safetensors"] = checkpoint_bytes
    entry = register(monkeypatch, "tiny-4", f"{server.base}/tiny.safetensors", None)  # unpinned: trust on first use
    code, out, err = run_cli(["models", "fetch", "tiny-4"], capsys)
    assert code == 0 and "downloaded" in out, err
    recorded = cache.read_sidecar(entry.cache_path())
    assert recorded == hashlib.sha256(checkpoint_bytes).hexdigest()

    code, out, _ = run_cli(["models", "list"], capsys)
    row = next(line for line in out.splitlines() if "tiny-4" in line)
    assert "yes" in row and f"recorded {recorded[:12]}" in row
    assert re.search(r"stylegan2-ffhq-1024 .*\bno\b", out)

    code, out, _ = run_cli(["models", "verify", "tiny-4"], capsys)
    assert code == 0 and "matches the recorded at download sha256" in out
    code, out, _ = run_cli(["info"], capsys)
    assert str(isolated_cache) in out and "tiny-4" in out
    from facebatch.invert.projector import resolve_autocast  # info says what autocast=auto means on this CPU

    bf16 = resolve_autocast("auto", torch.device("cpu")) == "bf16"
    assert ("bf16 autocast" in out) == bf16 and ("no bf16 on this CPU" in out) != bf16

    data = bytearray(entry.cache_path().read_bytes())
    data[-1] ^= 0xFF
    entry.cache_path().write_bytes(bytes(data))
    code, _, err = run_cli(["models", "verify", "tiny-4"], capsys)
    assert code == 1 and "sha256 mismatch" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match="cached tiny-4 .* has sha256 .* expected"):
        load_networks("tiny-4")
    code, _, err = run_cli(["models", "verify", str(entry.cache_path()), "--sha256", "ab" * 32], capsys)
    assert code == 1 and "--sha256" in err


def test_builtin_models_are_pinned_and_load_without_download(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    builtins = {e.name: e for e in registry.models().values() if e.builtin}
    assert {"celeba64", "celeba-attrs"} <= set(builtins)
    for entry in builtins.values():
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and entry.license
        assert entry.fetch() == entry.cache_path() and cache.sha256_of(entry.cache_path()) == entry.sha256
    nets = load_networks("celeba64", with_d=False)
    assert nets.G.img_resolution == 64 and nets.G.num_ws == 10
    assert not (tmp_path / "cache").exists()  # nothing was downloaded or cached


def test_a_builtin_model_that_no_longer_matches_its_pin_is_refused(monkeypatch, tmp_path):
    real = registry.get("celeba64")
    damaged = tmp_path / "celeba64.safetensors"
    damaged.write_bytes(real.cache_path().read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(registry, "builtin_path", lambda rel: damaged)
    with pytest.raises(CheckpointError, match="does not match its pinned sha256"):
        real.fetch()


def test_models_fetch_downloads_an_open_clip_clip_once_for_offline_use(isolated_cache, server, monkeypatch, capsys):
    from facebatch.nets import clip

    code, _, err = run_cli(["models", "fetch", "ViT-B-32:no-such-tag"], capsys)
    assert code == 2 and "no pretrained tag" in err and len(err.strip().splitlines()) == 1
    weights = safetensors_bytes(1)
    server.files["/open_clip_model.safetensors"] = weights
    url = f"{server.base}/open_clip_model.safetensors"
    monkeypatch.setattr(clip, "_pretrained_source", lambda arch, tag: (url, "open_clip_model.safetensors"))
    dest = isolated_cache / "models" / "clip" / "ViT-B-32-openai" / "open_clip_model.safetensors"
    code, out, err = run_cli(["models", "fetch", "ViT-B-32:openai"], capsys)
    assert code == 0 and f"downloaded: CLIP ViT-B-32:openai -> {dest}" in out, err
    assert dest.read_bytes() == weights and cache.read_sidecar(dest) == hashlib.sha256(weights).hexdigest()
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")  # what --clip ViT-B-32:openai then reads, offline
    assert clip.resolve_clip("ViT-B-32:openai").path == dest.resolve()
    code, out, _ = run_cli(["models", "fetch", "ViT-B-32:openai"], capsys)
    assert code == 0 and "already cached" in out and server.hits["/open_clip_model.safetensors"] == 1
    code, _, err = run_cli(["models", "fetch", "ViT-B-16:openai"], capsys)  # offline and not cached
    assert code == 2 and len(err.strip().splitlines()) == 1 and "put it at" in err


def safetensors_bytes(value: float) -> bytes:
    from safetensors.torch import save

    return save({"w": torch.full((4,), float(value))})


class _Response(io.BytesIO):
    """What urlopen returns, as far as the download reads it."""

    def __init__(self, body: bytes, length: int):
        super().__init__(body)
        self.headers = {"Content-Length": str(length)}


# How a --force download can fail: each must leave the cached copy as it was.
FAILED_DOWNLOADS = {
    "offline": ("FACEBATCH_OFFLINE", None, "downloads are off"),
    "no network": ("urlopen", OSError("network is unreachable"), "network is unreachable"),
    "cut short": ("urlopen", lambda: _Response(b"\0" * 10, 1000), "ended early"),
    "an error page": ("urlopen", lambda: _Response(b"<html>sign in</html>", 20), "not a weights file"),
}


def _fail_downloads(monkeypatch, case: str) -> str:
    how, what, message = FAILED_DOWNLOADS[case]
    if how == "FACEBATCH_OFFLINE":
        monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    else:

        def urlopen(*args, **kwargs):
            if isinstance(what, Exception):
                raise what
            return what()

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return message


@pytest.mark.parametrize("case", sorted(FAILED_DOWNLOADS))
def test_a_forced_fetch_that_fails_keeps_the_cached_copy_as_it_was(monkeypatch, isolated_cache, capsys, case):
    """`models fetch NAME --force` downloads beside the cached file and swaps only a whole, sound download in:
    an offline node, a dropped connection, a short body or an error page never cost it the weights it had.
    Both kinds of name: an open_clip CLIP (ARCH:TAG) and a registry model."""
    from facebatch.nets import clip

    monkeypatch.setattr(clip, "_pretrained_source", lambda arch, tag: ("https://example.invalid/w", "w.safetensors"))
    entry = register(monkeypatch, "tiny-4", "https://example.invalid/tiny.safetensors", None)
    cached = {}
    for path in (clip.pretrained_cache_path("ViT-B-32", "openai"), entry.cache_path()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(safetensors_bytes(7))
        cache.sidecar_path(path).write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
        cached[path] = (path.read_bytes(), cache.sidecar_path(path).read_text(), path.stat().st_mtime_ns)
    message = _fail_downloads(monkeypatch, case)
    for name, path in (
        ("ViT-B-32:openai", clip.pretrained_cache_path("ViT-B-32", "openai")),
        ("tiny-4", entry.cache_path()),
    ):
        code, out, err = run_cli(["models", "fetch", name, "--force"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (name, out, err)
        assert message in err and f"the cached copy at {path} is kept" in err, (name, err)
    for path, (data, sidecar, mtime) in cached.items():
        assert (path.read_bytes(), cache.sidecar_path(path).read_text(), path.stat().st_mtime_ns) == (
            data,
            sidecar,
            mtime,
        )
    assert leftovers(isolated_cache) == []
    # and a sound download is swapped in, with its hash recorded
    monkeypatch.delenv("FACEBATCH_OFFLINE", raising=False)
    fresh = safetensors_bytes(8)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Response(fresh, len(fresh)))
    code, out, err = run_cli(["models", "fetch", "ViT-B-32:openai", "--force"], capsys)
    path = clip.pretrained_cache_path("ViT-B-32", "openai")
    assert code == 0 and "downloaded" in out and path.read_bytes() == fresh, err
    assert cache.read_sidecar(path) == hashlib.sha256(fresh).hexdigest()


@pytest.mark.parametrize(
    "spec, needle",
    [
        (":", "ARCH:TAG"),
        ("::", "ARCH:TAG"),
        ("ViT-B-32:", "ARCH:TAG"),
        (":openai", "ARCH:TAG"),
        (" : ", "ARCH:TAG"),
        (":/etc/hostname", "ARCH:TAG"),
        ("NoArch:openai", "no architecture 'NoArch'"),
        ("a:b:c", "no architecture 'a'"),
        ("ViT-B-32:nosuchtag", "no pretrained tag 'nosuchtag'"),
        ("ViT-B-32:openai:x", "no pretrained tag 'openai:x'"),
    ],
)
def test_models_fetch_of_a_malformed_clip_name_says_what_is_wrong(spec, needle, isolated_cache, capsys):
    code, _, err = run_cli(["models", "fetch", spec], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert "local file" not in err and not (isolated_cache / "models").exists()
