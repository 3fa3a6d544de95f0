"""models.* through the in-process client (the dispatcher every transport uses): the answers, the events, the app's
audit trail, the error shapes; models.download against a loopback HTTP server serving real model files, and every
way a download fails leaving nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

from iat.models import manifest as mf
from iat.models.download import PROGRESS_INTERVAL_S
from iat.models.store import ModelStore
from tests.onnx_models import install, save
from tests.onnx_models.superres import conv_depth_to_space
from tests.vendors.loopback import Fault, LoopbackServer

SIDECAR = Path(__file__).resolve().parents[2] / "sidecar" / "iat"


def leftovers(folder: Path) -> list[str]:
    """What is in a models folder besides the manifest, its lock and the files the manifest names (a .part file
    of a failed download would show here)."""
    if not folder.is_dir():
        return []
    named = {e.file for e in mf.read(folder).models} | {mf.MANIFEST, ".manifest.lock"}
    return sorted(p.name for p in folder.iterdir() if p.name not in named)


class Events:
    """The app's events, collected from its bus."""

    def __init__(self, app):
        self.app = app
        self.items: list[tuple[str, dict]] = []
        app.events.subscribe(lambda name, payload: self.items.append((name, payload)))

    def named(self, name: str) -> list[dict]:
        self.app.events.drain()
        return [p for n, p in self.items if n == name]


@pytest.fixture
def events(app) -> Events:
    return Events(app)


@pytest.fixture
def models_dir(app) -> Path:
    return app.settings.models_dir


@pytest.fixture
def sr_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "sr2.onnx"
    return path, save(conv_depth_to_space(2), path)


# --- list, get, install, remove ---


def test_list_shows_the_folders_and_the_execution_providers(client, app, monkeypatch):
    import onnxruntime as ort

    monkeypatch.delenv("IAT_ONNX_PROVIDERS", raising=False)
    out = client.call("models.list")
    assert out["items"] == [] and out["models_dir"] == str(app.settings.models_dir)
    assert out["bundled_dir"] is None  # a venv has no shipped models unless IAT_BUNDLED_MODELS_DIR says so
    assert out["execution_providers"]["available"] == ort.get_available_providers()
    assert out["execution_providers"]["chosen"][-1] == "CPUExecutionProvider"
    assert out["intra_op_threads"] >= 1


def test_install_get_remove_with_events_and_the_apps_audit_trail(client, app, events, sr_file, models_dir):
    path, sha = sr_file
    out = client.call("models.install", path=str(path), name="sr2", kind="super_resolution", sha256=sha,
                      license="BSD-3-Clause")
    assert {k: out[k] for k in ("name", "kind", "arch", "scale", "sha256", "size", "license", "source", "location",
                                "present")} == {
        "name": "sr2", "kind": "super_resolution", "arch": None, "scale": 2, "sha256": sha,
        "size": path.stat().st_size, "license": "BSD-3-Clause", "source": "file", "location": "user",
        "present": True}
    assert out["path"] == str(models_dir / "sr2.onnx") and out["io"]["outputs"][0]["shape"][1] == 3
    assert client.call("models.get", name="sr2") == out
    assert [m["name"] for m in client.call("models.list")["items"]] == ["sr2"]

    removed = client.call("models.remove", name="sr2")
    assert removed["name"] == "sr2" and removed["present"] is False and not (models_dir / "sr2.onnx").exists()
    assert client.call("models.list")["items"] == []
    assert [e["name"] for e in events.named("model.installed")] == ["sr2"]
    assert [e["sha256"] for e in events.named("model.removed")] == [sha]
    audit = client.call("audit.list")["items"]  # no slug: the app's trail, newest first
    assert [(a["event_code"], a["payload_json"]["name"], a["project_id"]) for a in audit[:2]] == [
        ("model.removed", "sr2", None), ("model.installed", "sr2", None)]


def test_install_errors_have_the_one_error_shape(client, sr_file, models_dir, tmp_path):
    path, sha = sr_file
    base = {"name": "sr2", "kind": "super_resolution", "sha256": sha}
    cases = [
        ({"path": str(tmp_path / "absent.onnx")}, "not_found", "no file at"),
        ({"path": str(tmp_path)}, "invalid_params", "not a regular file"),
        ({"path": "relative/sr2.onnx"}, "invalid_params", "absolute path"),
        ({"path": str(path), "sha256": "f" * 64}, "invalid_params", "sha256 mismatch"),
        ({"path": str(path), "sha256": "xyz"}, "invalid_params", "invalid params"),
        ({"path": str(path), "kind": "segmentation"}, "invalid_params", "needs its arch"),
        ({"path": str(path), "arch": "u2net"}, "invalid_params", "segmentation models only"),
        ({"path": str(path), "kind": "matting"}, "invalid_params", "signature its kind needs"),
        ({"path": str(path), "name": "../up"}, "invalid_params", "invalid params"),
        ({"path": str(path), "extra": 1}, "invalid_params", "invalid params"),
    ]
    for fields, name, words in cases:
        err = client.error("models.install", **{**base, **fields})
        obj = err.to_object()
        assert obj["data"]["name"] == name and words in obj["message"], (fields, obj)
        assert set(obj) == {"code", "message", "data"} and set(obj["data"]) == {"name", "details"}
        if name == "invalid_params":
            assert obj["data"]["details"]["errors"], fields
    client.call("models.install", path=str(path), **base)
    err = client.error("models.install", path=str(path), **base)
    assert err.name == "conflict" and err.details == {"model": "sr2"}
    assert client.call("models.install", path=str(path), **base, replace=True)["name"] == "sr2"
    assert client.error("models.get", name="absent").name == "not_found"
    assert client.error("models.remove", name="absent").name == "not_found"
    assert leftovers(models_dir) == []


def test_a_damaged_manifest_answers_conflict_naming_the_file(client, models_dir):
    models_dir.mkdir(parents=True)
    (models_dir / mf.MANIFEST).write_text("{", encoding="utf-8")
    for method, params in (("models.list", {}), ("models.get", {"name": "x"}), ("models.remove", {"name": "x"})):
        err = client.error(method, **params)
        assert err.name == "conflict" and err.details["path"] == str(models_dir / mf.MANIFEST), method


def test_shipped_models_from_the_bundled_folder(client, app, monkeypatch, tmp_path, sr_file, models_dir):
    bundled = tmp_path / "bundled"
    install(ModelStore(bundled), conv_depth_to_space(4), "sr", "super_resolution", tmp_path / "b")
    monkeypatch.setenv("IAT_BUNDLED_MODELS_DIR", str(bundled))
    out = client.call("models.list")  # the App's store opens on first use, with the variable set
    assert out["bundled_dir"] == str(bundled)
    assert [(m["name"], m["location"], m["scale"]) for m in out["items"]] == [("sr", "bundled", 4)]
    err = client.error("models.remove", name="sr")
    assert err.name == "conflict" and "ships with the installer" in err.message
    path, sha = sr_file
    client.call("models.install", path=str(path), name="sr", kind="super_resolution", sha256=sha)
    assert [(m["name"], m["location"], m["scale"]) for m in client.call("models.list")["items"]] == [
        ("sr", "user", 2)]
    client.call("models.remove", name="sr")
    assert client.call("models.get", name="sr")["location"] == "bundled"


# --- download ---


class ModelHost:
    """A loopback HTTP server handing out files: /files/<name> with its Content-Length, /slow/<name> in pieces with
    pauses, /chunked/<name> without a length, /endless (chunked, never ends by itself), /huge (announces 8 GiB),
    /redirect/<name> (302 to /files/<name>). Faults (tests/vendors/loopback.py) go in front of any of them."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.pieces = 12
        self.pause_s = 0.1
        app = web.Application()
        app.router.add_get("/files/{name}", self.whole)
        app.router.add_get("/slow/{name}", self.slow)
        app.router.add_get("/chunked/{name}", self.chunked)
        app.router.add_get("/endless", self.endless)
        app.router.add_get("/huge", self.huge)
        app.router.add_get("/redirect/{name}", self.redirect)
        self.server = LoopbackServer(app)
        self.sent: dict[str, int] = {}

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def _body(self, request) -> bytes:
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound(text="no such file")
        return self.files[name]

    async def whole(self, request):
        return web.Response(body=self._body(request), content_type="application/octet-stream")

    async def slow(self, request):
        body = self._body(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(body)
        await resp.prepare(request)
        step = -(-len(body) // self.pieces)
        for i in range(0, len(body), step):
            await resp.write(body[i:i + step])
            await asyncio.sleep(self.pause_s)
        return resp

    async def chunked(self, request):
        body = self._body(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 1000):
            await resp.write(body[i:i + 1000])
        return resp

    async def endless(self, request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.sent["endless"] = 0
        try:
            while self.sent["endless"] < 64 << 20:  # stops at 64 MiB whatever happens: a test must not hang
                await resp.write(b"\0" * 65536)
                self.sent["endless"] += 65536
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        return resp

    async def huge(self, request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = 8 << 30
        await resp.prepare(request)
        self.sent["huge"] = 0
        try:
            while self.sent["huge"] < 64 << 20:
                await resp.write(b"\0" * 65536)
                self.sent["huge"] += 65536
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def redirect(self, request):
        raise web.HTTPFound(f"/files/{request.match_info['name']}")


@pytest.fixture
def model_bytes(tmp_path) -> bytes:
    path = tmp_path / "served.onnx"
    save(conv_depth_to_space(2, layers=3), path)
    return path.read_bytes()


@pytest.fixture
def host(model_bytes):
    h = ModelHost({"sr.onnx": model_bytes, "noise.bin": bytes(range(256)) * 4096})
    with h.server:
        yield h


def _download(client, url: str, sha: str, **kw):
    return client.call("models.download", url=url, sha256=sha, name=kw.pop("name", "sr"),
                       kind=kw.pop("kind", "super_resolution"), **kw)


def test_download_installs_the_model_with_progress(client, app, host, model_bytes, events, models_dir):
    sha = hashlib.sha256(model_bytes).hexdigest()
    url = host.url("/files/sr.onnx")
    out = _download(client, url, sha, license="Apache-2.0")
    assert (out["name"], out["scale"], out["sha256"], out["size"], out["source"], out["license"]) == (
        "sr", 2, sha, len(model_bytes), url, "Apache-2.0")
    assert (models_dir / "sr.onnx").read_bytes() == model_bytes
    assert app.models.session(app.models.get("sr")) is not None  # loadable and usable
    progress = events.named("model.download.progress")
    assert progress[0] == {"name": "sr", "received": 0, "total": len(model_bytes)}
    assert progress[-1] == {"name": "sr", "received": len(model_bytes), "total": len(model_bytes)}
    assert [e["name"] for e in events.named("model.installed")] == ["sr"]
    assert client.call("audit.list")["items"][0]["payload_json"]["source"] == url
    assert leftovers(models_dir) == [] and host.server.requests_to("/files/") == 1


def test_progress_is_throttled_not_per_chunk(client, host, events, models_dir):
    body = host.files["noise.bin"]  # 1 MiB in 12 pieces over about 1.2 s
    sha = hashlib.sha256(body).hexdigest()
    started = time.monotonic()
    err = client.error("models.download", url=host.url("/slow/noise.bin"), sha256=sha, name="noise",
                       kind="matting")
    elapsed = time.monotonic() - started
    assert err.name == "invalid_params" and "signature" not in err.message  # not a model: refused at the load
    received = [e["received"] for e in events.named("model.download.progress")]
    assert received == sorted(received) and received[0] == 0 and received[-1] == len(body)
    # The start, one per PROGRESS_INTERVAL_S at most, the end: never one per piece.
    assert 3 <= len(received) <= 2 + elapsed / PROGRESS_INTERVAL_S and len(received) < host.pieces, received
    assert leftovers(models_dir) == []


def test_a_redirect_is_followed_and_the_source_is_the_url_asked_for(client, host, model_bytes):
    url = host.url("/redirect/sr.onnx")
    out = _download(client, url, hashlib.sha256(model_bytes).hexdigest())
    assert out["source"] == url and host.server.requests_to("/files/sr.onnx") == 1


def test_a_chunked_body_without_a_length_downloads(client, host, model_bytes, events):
    out = _download(client, host.url("/chunked/sr.onnx"), hashlib.sha256(model_bytes).hexdigest())
    assert out["size"] == len(model_bytes)
    assert events.named("model.download.progress")[-1] == {"name": "sr", "received": len(model_bytes),
                                                           "total": None}


def test_a_sha256_mismatch_installs_nothing(client, host, model_bytes, events, models_dir):
    err = client.error("models.download", url=host.url("/files/sr.onnx"), sha256="0" * 64, name="sr",
                       kind="super_resolution")
    assert err.name == "invalid_params" and "sha256 mismatch" in err.message
    assert err.details["actual"] == hashlib.sha256(model_bytes).hexdigest() and err.details["expected"] == "0" * 64
    assert client.call("models.list")["items"] == [] and leftovers(models_dir) == []
    assert events.named("model.installed") == []


@pytest.mark.parametrize("fault, name, detail, words", [
    (Fault.status(404, text="gone"), "not_found", {"http_status": 404}, "answered 404: gone"),
    (Fault.status(410), "not_found", {"http_status": 410}, "nothing to download at"),
    (Fault.status(401, json_body={"error": "token required"}), "provider_auth_failed", {"http_status": 401},
     "token required"),
    (Fault.status(400, json_body={"error": {"message": "bad file"}}), "provider_bad_request", {"http_status": 400},
     "bad file"),
    (Fault.status(503, text="maintenance"), "provider_unavailable", {"http_status": 503}, "maintenance"),
    (Fault.status(429, headers={"Retry-After": "7"}), "rate_limited", {"http_status": 429, "retry_after": 7.0},
     "answered 429"),
    (Fault.truncate(), "provider_unavailable", {}, "broke the connection off"),  # the connection drops mid-body
    (Fault.drop(), "provider_unavailable", {}, "broke the connection off"),  # no answer at all
])
def test_server_failures_are_typed_and_leave_nothing(client, host, model_bytes, models_dir, fault, name, detail,
                                                     words):
    host.server.faults.add("/files/", fault)
    url = host.url("/files/sr.onnx")
    err = client.error("models.download", url=url, sha256=hashlib.sha256(model_bytes).hexdigest(), name="sr",
                       kind="super_resolution")
    assert err.name == name and err.details["url"] == url, err.to_object()
    assert detail.items() <= err.details.items() and words in err.message, err.to_object()
    assert client.call("models.list")["items"] == [] and leftovers(models_dir) == []


def test_nothing_listening_is_provider_unavailable(client, models_dir):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = client.error("models.download", url=f"http://127.0.0.1:{port}/m.onnx", sha256="a" * 64, name="m",
                       kind="matting")
    assert err.name == "provider_unavailable" and "not reachable" in err.message
    assert leftovers(models_dir) == []


def test_a_content_length_over_max_bytes_is_refused_before_the_body(client, host, events, models_dir):
    err = client.error("models.download", url=host.url("/huge"), sha256="a" * 64, name="m", kind="matting")
    assert err.name == "payload_too_large" and err.details["content_length"] == 8 << 30
    assert err.details["max_bytes"] == 4 << 30 and "nothing was installed" in err.message
    assert events.named("model.download.progress") == []  # the body was never read
    err = client.error("models.download", url=host.url("/files/sr.onnx"), sha256="a" * 64, name="m",
                       kind="matting", max_bytes=100)
    assert err.name == "payload_too_large" and err.details["max_bytes"] == 100
    assert leftovers(models_dir) == []


def test_a_server_sending_more_than_max_bytes_without_saying_is_stopped_at_the_cap(client, host, models_dir):
    err = client.error("models.download", url=host.url("/endless"), sha256="a" * 64, name="m", kind="matting",
                       max_bytes=1 << 20)
    assert err.name == "payload_too_large" and err.details["received"] > 1 << 20
    assert err.details["received"] <= (1 << 20) + (1 << 16)  # stopped within a chunk of the cap
    assert leftovers(models_dir) == []
    deadline = time.monotonic() + 5
    while host.sent.get("endless", 0) < 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.sent["endless"] < 64 << 20  # the server saw the client hang up long before its own limit


def test_a_download_stopped_by_shutdown_leaves_nothing(client, app, host, models_dir):
    body = host.files["noise.bin"]

    def stop_once_started(name, payload):
        if name == "model.download.progress" and payload["received"] > 0:
            app.stopping.set()  # what shutdown does first

    app.events.subscribe(stop_once_started)
    host.pieces = 30  # about 3 s in all
    started = time.monotonic()
    err = client.error("models.download", url=host.url("/slow/noise.bin"), sha256=hashlib.sha256(body).hexdigest(),
                       name="noise", kind="matting")
    assert err.name == "shutting_down" and "nothing was installed" in err.message
    assert time.monotonic() - started < 2.0  # stopped before the rest of the body came
    assert leftovers(models_dir) == [] and client.call("models.list")["items"] == []


def test_a_name_in_use_is_a_conflict_before_anything_is_fetched(client, host, model_bytes, sr_file):
    path, sha = sr_file
    client.call("models.install", path=str(path), name="sr", kind="super_resolution", sha256=sha)
    err = client.error("models.download", url=host.url("/files/sr.onnx"),
                       sha256=hashlib.sha256(model_bytes).hexdigest(), name="sr", kind="super_resolution")
    assert err.name == "conflict" and host.server.log == []
    out = _download(client, host.url("/files/sr.onnx"), hashlib.sha256(model_bytes).hexdigest(), replace=True)
    assert out["sha256"] == hashlib.sha256(model_bytes).hexdigest()


@pytest.mark.parametrize("url, words", [
    ("ftp://127.0.0.1/m.onnx", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("http://user:secret@127.0.0.1:{port}/files/sr.onnx", "credentials"),
    ("http://:80/m.onnx", "no host"),
    ("http://127.0.0.1:99999/m.onnx", "port"),
    ("http://127.0.0.1/a b", "without spaces"),
    ("http://127.0.0.1/\x01", "not valid"),
    ("http://127.0.0.1/" + "a" * 2000, "at most 2000"),
])
def test_urls_are_checked_before_any_request(client, host, url, words):
    err = client.error("models.download", url=url.format(port=host.server.port), sha256="a" * 64, name="m",
                       kind="matting")
    assert err.name == "invalid_params" and words in err.message and err.details["errors"][0]["loc"] == ["url"]
    assert host.server.log == []


def test_download_params_are_checked_before_any_request(client, host):
    url = host.url("/files/sr.onnx")
    for fields in ({"kind": "segmentation"}, {"sha256": "abc"}, {"max_bytes": 0}, {"name": "A"},
                   {"arch": "u2net"}, {"max_bytes": (64 << 30) + 1}):
        err = client.error("models.download", **{"url": url, "sha256": "a" * 64, "name": "m", "kind": "matting",
                                                  **fields})
        assert err.name == "invalid_params", fields
    assert host.server.log == []


def test_only_models_download_downloads_a_model():
    """Nothing in the product fetches a model unless a user asks: the download module is imported by the command
    alone (engines take what is installed)."""
    imports = re.compile(r"^\s*(from|import)\s.*\bdownload\b|import(_module)?\(\s*[\"']iat\.models\.download")
    users = sorted(str(p.relative_to(SIDECAR)) for p in SIDECAR.rglob("*.py")
                   if any(imports.search(line) for line in p.read_text(encoding="utf-8").splitlines()))
    assert users == ["commands/models.py"]


def test_two_downloads_of_different_models_at_once(client, host, model_bytes, models_dir):
    sha = hashlib.sha256(model_bytes).hexdigest()
    results: dict[str, dict] = {}

    def fetch(name):
        results[name] = _download(client, host.url("/slow/sr.onnx"), sha, name=name)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["a", "b"] and leftovers(models_dir) == []
    assert sorted(m["name"] for m in client.call("models.list")["items"]) == ["a", "b"]
