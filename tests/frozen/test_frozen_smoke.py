"""The PyInstaller-frozen sidecar, started the way the Tauri shell starts it, with no Python anywhere on PATH.

- `serve --stdio`: the first stdout line is `sidecar.ready`; ping, projects.create/get, a typed not_found error and
  system.info answer; closing stdin ends the process within 2 s and leaves no process behind.
- `doctor --json`: every product dependency (onnxruntime, rembg's sessions, scipy, boto3, keyring, vosk, ...)
  imports inside the frozen build.
- the local engines through the frozen binary, on small ONNX models with the real I/O signatures installed with
  models.install over its RPC: rembg (u2net-shaped) in images.remove_background, onnx_sr in images.upscale, the
  refine pass with closed-form matting (no matting model) and with ViTMatte (a matting model); the frozen results
  equal the venv's, and no process that ran them loaded what the spec excludes. Imports that work in the venv and fail frozen are the common failure here.
- secrets: stored with secrets.set in the OS keyring's Secret Service, read back by `secrets-selftest`.
- the bundle's shape and size: under its 300 MB budget, botocore data pruned to the services the sidecar uses, no
  test suites, none of what the spec excludes (pymatting, numba, llvmlite, scikit-image, rembg's __init__
  dependencies), no top-level symlinks (the .deb would copy their targets), libpython without debug info.

The binary is dist/iat-sidecar (scripts/build-sidecar builds it). It runs in a bare environment: PATH names only an
empty folder (no Python, no tools), no PYTHONHOME/PYTHONPATH, HOME and IAT_HOME in temporary folders. When the build
is missing the tests skip, unless IAT_REQUIRE_REAL_PARTS=1 (scripts/test sets it), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist" / "iat-sidecar"
BINARY = DIST / ("iat-sidecar.exe" if os.name == "nt" else "iat-sidecar")


@pytest.fixture(scope="session")
def frozen_binary() -> Path:
    if not BINARY.is_file():
        message = f"{BINARY.relative_to(ROOT)} is missing: build it with `python scripts/build-sidecar`"
        if os.environ.get("IAT_REQUIRE_REAL_PARTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return BINARY


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which no Python can be found: the frozen binary must need nothing from outside."""
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    cache = tmp_path / "cache"  # a fresh user cache dir per test
    env = {
        "PATH": str(empty_bin),
        "HOME": str(home),
        "IAT_HOME": str(tmp_path / "iat-home"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "XDG_CACHE_HOME": str(cache),
    }
    if os.name == "nt":  # what Windows itself needs; the user cache dir there is %LOCALAPPDATA%
        env.update({k: os.environ[k] for k in ("SYSTEMROOT", "WINDIR", "TEMP", "TMP") if k in os.environ})
        env.update(USERPROFILE=str(home), LOCALAPPDATA=str(cache))
    assert shutil.which("python3", path=env["PATH"]) is None and shutil.which("python", path=env["PATH"]) is None
    assert not any(k.startswith("PYTHON") for k in env)
    return env


# Distribution names as `doctor --json` reports them under "modules".
PRODUCT_DISTRIBUTIONS = [
    "pydantic", "peewee", "aiohttp", "platformdirs", "pillow", "numpy", "onnxruntime", "rembg", "scipy",
    "boto3", "cryptography", "keyring", "openai", "vosk", "sounddevice", "pyttsx3", "psycopg2-binary",
]
BOTOCORE_SERVICES = {"s3", "sts", "sso", "sso-oidc", "signin"}
# What build/iat-sidecar.spec excludes because only rembg's package __init__ (rembg.bg) needs it: none of it may
# be in the bundle, nor loaded by a frozen process that ran the engines.
NEVER_SHIPPED = ["pymatting", "numba", "llvmlite", "skimage", "rembg.bg", "rembg.cli", "rembg.commands"]
BUDGET_BYTES = 300_000_000  # the onedir (issue 9: <= 300 MB)


class FrozenSidecar:
    """The frozen `serve --stdio` process with a reader thread per output stream (so neither pipe can fill up)."""

    def __init__(self, binary: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--stdio"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=env["HOME"], start_new_session=(os.name != "nt"),
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr = bytearray()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._next_id = 0

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self.stderr += chunk

    def log(self) -> str:
        return self.stderr.decode("utf-8", "replace")[-4000:]

    def read_message(self, timeout: float = 30.0) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output from the frozen sidecar within {timeout} s; its log:\n{self.log()}")
        if line is None:
            self.proc.wait(timeout=5)
            pytest.fail(f"the frozen sidecar closed stdout (exit {self.proc.returncode}); its log:\n{self.log()}")
        try:
            return json.loads(line)
        except ValueError:
            pytest.fail(f"stdout line is not JSON: {line[:500]!r}; its log:\n{self.log()}")

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        """Sends one request and returns its response (notifications in between are skipped)."""
        self._next_id += 1
        request = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            request["params"] = params
        self.send(request)
        deadline = time.monotonic() + timeout
        while True:
            message = self.read_message(max(0.1, deadline - time.monotonic()))
            if message.get("id") == self._next_id:
                assert message.get("jsonrpc") == "2.0", message
                return message
            assert "id" not in message, f"response to an unknown request: {message}"

    def result(self, method: str, params: dict | None = None) -> dict:
        response = self.call(method, params)
        assert "error" not in response, f"{method} failed: {response}\nlog:\n{self.log()}"
        return response["result"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state, 1 = ppid, 3 = session, 19 = starttime)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live process below `root`, from /proc."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry))
                starts[int(entry)] = stat[19]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def _in_session(sid: int) -> list[int]:
    """Live (not zombie) processes whose session is `sid`: a leftover child keeps it even once reparented."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and int(stat[3]) == sid and stat[0] != "Z":
                out.append(int(entry))
    return out


def test_frozen_serve_stdio_smoke(frozen_binary: Path, bare_env: dict[str, str]) -> None:
    started = time.monotonic()
    sidecar = FrozenSidecar(frozen_binary, bare_env)
    try:
        ready = sidecar.read_message(timeout=60)
        ready_s = time.monotonic() - started
        assert ready.get("method") == "sidecar.ready" and "id" not in ready, f"first line is not sidecar.ready: {ready}"
        params = ready["params"]
        assert params["version"] and params["schema_version"]["app"] >= 1 and params["schema_version"]["project"] >= 1
        assert params["pid"] == sidecar.proc.pid  # onedir: the process the shell spawned is the sidecar itself
        assert Path(params["home"]) == Path(bare_env["IAT_HOME"])
        assert params["tcp"] is None and params["http"] is None and params["token"]

        assert sidecar.result("system.ping")["pong"] is True

        created = sidecar.result("projects.create", {"slug": "smoke", "name": "Smoke"})
        assert created["slug"] == "smoke" and created["name"] == "Smoke"
        got = sidecar.result("projects.get", {"slug": "smoke"})
        assert got["slug"] == "smoke" and got["name"] == "Smoke"

        missing = sidecar.call("projects.get", {"slug": "no-such-project"})
        assert missing["error"]["code"] == -32004, missing
        assert missing["error"]["data"]["name"] == "not_found", missing

        info = sidecar.result("system.info")
        assert info["version"] == params["version"]
        assert info["frozen"] is True

        # The process tree is read from /proc, which only Linux has; elsewhere the exit code and time are checked.
        running = _descendants(sidecar.proc.pid) if sys.platform.startswith("linux") else {}

        sidecar.proc.stdin.close()
        closed = time.monotonic()
        try:
            code = sidecar.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the frozen sidecar still runs 2 s after stdin closed; its log:\n{sidecar.log()}")
        assert code == 0, f"exit {code} after stdin closed; its log:\n{sidecar.log()}"
        print(f"ready after {ready_s:.2f} s; exited {time.monotonic() - closed:.2f} s after stdin closed")

        if sys.platform.startswith("linux"):  # /proc again (see above)
            time.sleep(0.2)
            left = [pid for pid, start in running.items() if (_proc_stat(pid) or [None] * 20)[19] == start
                    and _proc_stat(pid)[0] != "Z"]
            assert not left, f"child processes outlived the sidecar: {left}"
            assert not _in_session(sidecar.proc.pid), "processes of the sidecar's session outlived it"
    finally:
        sidecar.kill()


def test_frozen_secrets_live_in_the_os_keyring(frozen_binary: Path, bare_env: dict[str, str]) -> None:
    """A secret stored through the frozen `serve` (secrets.set) is read back by the frozen binary after a restart
    (`secrets-selftest`), through the real Secret Service of the session scripts/test runs in
    (scripts/lib/with-keyring): the keyring backends and their D-Bus libraries must be in the bundle."""
    from tests.support import missing_real_part

    bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not bus:
        missing_real_part("a D-Bus session with a Secret Service (run under scripts/lib/with-keyring)")
    env = {**bare_env, "DBUS_SESSION_BUS_ADDRESS": bus}
    value = "sk-frozen-" + hashlib.sha256(os.urandom(16)).hexdigest()[:32]
    sidecar = FrozenSidecar(frozen_binary, env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready"
        sidecar.result("projects.create", {"slug": "vault", "name": "Vault"})
        stored = sidecar.call("secrets.set", {"slug": "vault", "provider_code": "openai", "secret_name": "api_key",
                                              "value": value})
        if "error" in stored and stored["error"]["data"]["name"] == "secrets_unavailable":
            missing_real_part(f"a usable Secret Service: {stored['error']['message']}")
        assert "error" not in stored, stored
        assert stored["result"]["kms_key_ref"].startswith("keyring:")
        listed = sidecar.result("secrets.list", {"slug": "vault"})
        assert [s["secret_name"] for s in listed["items"]] == ["api_key"]
        assert value not in json.dumps([stored, listed])
        sidecar.proc.stdin.close()
        assert sidecar.proc.wait(timeout=10) == 0
        assert value not in sidecar.log()
    finally:
        sidecar.kill()
    home = Path(bare_env["IAT_HOME"])
    assert not any(value.encode() in p.read_bytes() for p in home.rglob("*") if p.is_file())

    check = subprocess.run(
        [str(frozen_binary), "secrets-selftest", "--home", str(home), "--project", "vault", "--provider", "openai",
         "--name", "api_key", "--expect-sha256", hashlib.sha256(value.encode()).hexdigest()],
        env=env, cwd=bare_env["HOME"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"{check.stdout}\n{check.stderr[-3000:]}"
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["backend"] == "keyring.backends.SecretService.Keyring", report
    assert value not in check.stdout + check.stderr

    throwaway = subprocess.run([str(frozen_binary), "secrets-selftest"], env=env, cwd=bare_env["HOME"],
                               capture_output=True, text=True, timeout=120)
    assert throwaway.returncode == 0, f"{throwaway.stdout}\n{throwaway.stderr[-3000:]}"
    assert json.loads(throwaway.stdout.strip().splitlines()[-1])["ok"] is True


def test_frozen_demo_makes_pictures(frozen_binary: Path, bare_env: dict[str, str], tmp_path: Path) -> None:
    """The pipeline through the frozen binary: preview renderer, key cut-out, colour, upscale, QA, contact sheet
    (every module it loads lazily must be in the bundle)."""
    home = tmp_path / "demo-home"
    proc = subprocess.run([str(frozen_binary), "demo", "--quick", "--home", str(home)], env=bare_env,
                          cwd=bare_env["HOME"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    finals = re.findall(r"^  (\S+)\s+done\s+candidate \d\s+(\S+/final\.png)$", proc.stdout, re.M)
    assert [job for job, _ in finals] == ["02-market", "05-mira-sheet"], proc.stdout
    for _, path in finals:
        assert Path(path).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    sheet = re.search(r"^contact sheet: (\S+\.html)", proc.stdout, re.M).group(1)
    assert "data:image/" in Path(sheet).read_text()


def test_frozen_doctor_imports_every_product_dependency(frozen_binary: Path, bare_env: dict[str, str]) -> None:
    proc = subprocess.run([str(frozen_binary), "doctor", "--json"], env=bare_env, cwd=bare_env["HOME"],
                          capture_output=True, timeout=600)
    log = proc.stderr.decode("utf-8", "replace")[-4000:]
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"doctor --json printed no JSON (exit {proc.returncode}): {proc.stdout[:2000]!r}\n{log}")
    modules = report["modules"]
    bad = {name: modules.get(name, "not checked") for name in PRODUCT_DISTRIBUTIONS
           if not (isinstance(modules.get(name), dict) and modules[name].get("ok"))}
    assert not bad, f"product dependencies that do not import in the frozen build: {bad}\n{log}"
    for name in PRODUCT_DISTRIBUTIONS:
        assert modules[name].get("version"), f"{name}: no version reported (metadata not collected?)"
    assert report["frozen"] is True
    assert report["home"]["ok"], report["home"]
    assert report["ok"] is True and proc.returncode == 0, (report, log)


def _pyz_modules() -> set[str]:
    """Names of the modules in the executable's PYZ archive (PyInstaller's own reader, from the test extra)."""
    from PyInstaller.archive.readers import CArchiveReader

    return set(CArchiveReader(str(BINARY)).open_embedded_archive("PYZ.pyz").toc)


def _elf_sections(path: Path) -> set[str]:
    """Section names of a 64-bit little-endian ELF file (enough to tell whether debug info is there)."""
    import struct

    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path} is not ELF64 LE"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i):  # (name offset, file offset) of section i
        base = shoff + i * shentsize
        return struct.unpack_from("<I", data, base)[0], struct.unpack_from("<Q", data, base + 0x18)[0]
    names_at = header(shstrndx)[1]
    out = set()
    for i in range(shnum):
        start = names_at + header(i)[0]
        out.add(data[start:data.index(b"\0", start)].decode())
    return out


def test_frozen_bundle_shape(frozen_binary: Path) -> None:
    internal = DIST / "_internal"
    assert internal.is_dir(), "no _internal folder: the bundle is not PyInstaller >= 6 onedir"
    data = internal / "botocore" / "data"
    services = {p.name for p in data.iterdir() if p.is_dir()}
    assert services == BOTOCORE_SERVICES, f"botocore data not pruned as intended: {sorted(services)}"
    for name in ("endpoints.json", "partitions.json", "sdk-default-configuration.json"):
        assert (data / name).is_file(), name
    shipped_tests = [str(p.relative_to(DIST)) for p in internal.rglob("tests") if p.is_dir()]
    assert not shipped_tests, f"test suites shipped in the bundle: {shipped_tests[:10]}"
    for lib in ("onnxruntime", "vosk", "scipy"):
        native = [p for p in (internal / lib).rglob("*") if p.suffix in (".so", ".dll", ".dylib", ".pyd", ".dyld")
                  or ".so." in p.name]
        assert native, f"no native library of {lib} in the bundle"

    # What the spec leaves out: no folder, no module in the PYZ (so no frozen process can load them).
    pyz = _pyz_modules()
    assert "rembg.sessions.u2net_custom" in pyz and "scipy.sparse.linalg" in pyz  # the reader sees the archive
    for name in NEVER_SHIPPED:
        top = name.replace(".", "/")
        assert not (internal / top).exists(), f"{name} is in the bundle: {internal / top}"
        shipped = sorted(m for m in pyz if m == name or m.startswith(name + "."))
        assert not shipped, f"{name} is in the PYZ archive: {shipped[:5]}"
    for gone in ("optimize", "stats", "spatial", "interpolate", "signal", "fft"):
        assert not (internal / "scipy" / gone).exists(), f"scipy.{gone} is in the bundle"

    # No symlinks: the .deb bundler (Tauri) copies a symlink's target in its place.
    links = [str(p.relative_to(DIST)) for p in DIST.rglob("*") if p.is_symlink()]
    assert not links, f"symlinks in the bundle: {links[:5]}"
    if sys.platform.startswith("linux"):
        libpython = next(internal.glob("libpython3*.so*"))
        sections = _elf_sections(libpython)
        assert ".text" in sections and ".dynsym" in sections, sections
        assert not {s for s in sections if s.startswith(".debug_")}, f"{libpython.name} carries debug info"


def test_frozen_bundle_size(frozen_binary: Path) -> None:
    """The onedir within its budget; scripts/build-sidecar's size table of this very build agrees with it."""
    files = [p for p in DIST.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    sizes = json.loads((DIST.parent / "iat-sidecar.sizes.json").read_text())
    assert sizes["total_bytes"] == total, "dist/iat-sidecar.sizes.json is not of this build"
    assert sum(row["bytes"] for row in sizes["rows"]) == total
    top = ", ".join(f"{r['name']} {r['bytes'] / 1e6:.1f}" for r in sizes["rows"][:8])
    assert total <= BUDGET_BYTES, f"the bundle is {total / 1e6:.1f} MB, over {BUDGET_BYTES / 1e6:.0f} MB: {top}"


# --- the local engines, frozen ---

def _mapped_files(pid: int) -> set[str]:
    """Files a live process has mapped (its loaded shared libraries), from /proc."""
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}


def _install_model(sidecar: FrozenSidecar, proto, folder: Path, name: str, kind: str, **extra) -> dict:
    """Saves an ONNX model the test built and installs it through the frozen sidecar's models.install."""
    from tests.onnx_models import save

    path = folder / f"{name}.onnx"
    sha = save(proto, path)
    return sidecar.result("models.install", {"name": name, "kind": kind, "path": str(path), "sha256": sha,
                                             "license": "test", **extra})


def _project(sidecar: FrozenSidecar, folder: Path, slug: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sidecar.result("projects.create", {"slug": slug, "name": slug.title()})
    return Path(sidecar.result("projects.update", {"slug": slug,
                                                   "settings_json": {"import_roots": [str(folder)]}})["root_dir"])


def _import(sidecar: FrozenSidecar, slug: str, path: Path) -> dict:
    return sidecar.result("assets.import", {"slug": slug, "paths": [str(path)]})["items"][0]


def _assert_nothing_excluded_loaded(sidecar: FrozenSidecar) -> None:
    if sys.platform.startswith("linux"):
        mapped = _mapped_files(sidecar.proc.pid)
        assert any("onnxruntime" in f for f in mapped), "onnxruntime is not loaded: no inference ran in process"
        heavy = sorted(f for f in mapped if any(f"/{n}/" in f or f"/{n}." in f for n in
                                                ("llvmlite", "numba", "skimage", "pymatting")))
        assert not heavy, f"the frozen sidecar loaded what the spec excludes: {heavy}"


def test_frozen_rembg_engine_removes_backgrounds(frozen_binary: Path, bare_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    """A u2net-shaped model installed over RPC, then images.remove_background with engines ["rembg"]: rembg's
    session classes through the bare package, onnxruntime, the mask check, the asset; the mask matches the
    scene's ground truth."""
    import numpy as np
    from PIL import Image

    from tests.onnx_models import segmentation as seg

    sidecar = FrozenSidecar(frozen_binary, bare_env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready"
        model = _install_model(sidecar, seg.u2net(), tmp_path, "seg-u2net", "segmentation", arch="u2net")
        assert model["kind"] == "segmentation" and model["arch"] == "u2net" and model["present"]
        folder = tmp_path / "in"
        root = _project(sidecar, folder, "cutout")
        for seed, width, height in [(7301, 600, 400), (7302, 333, 517)]:
            rgb, truth = seg.scene(seed, width, height)
            src = folder / f"scene-{seed}.png"
            Image.fromarray(rgb).save(src)
            source = _import(sidecar, "cutout", src)
            out = sidecar.result("images.remove_background", {"slug": "cutout", "asset_id": source["id"],
                                                              "engines": ["rembg"]})
            assert out["engine"] == "rembg" and [a["engine"] for a in out["attempts"]] == ["rembg"], out
            meta = out["attempts"][0]["meta"]
            assert meta["model"] == "seg-u2net" and meta["session"] == "u2net_custom", meta
            assert out["asset"]["kind"] == "bg_removed"
            rgba = np.asarray(Image.open(root / out["asset"]["storage_uri"]))
            assert rgba.shape == (height, width, 4)
            assert seg.iou(rgba[..., 3] >= 128, truth) >= 0.9, seed
        _assert_nothing_excluded_loaded(sidecar)
    finally:
        sidecar.kill()


def test_frozen_onnx_upscale_matches_the_venv(frozen_binary: Path, bare_env: dict[str, str], tmp_path: Path,
                                              app) -> None:
    """A super-resolution model installed over RPC; images.upscale picks onnx_sr and tiles; the frozen output
    equals what the same engine computes in this venv on the same model and image."""
    import numpy as np
    from PIL import Image

    from iat.engines.base import EngineContext
    from tests.onnx_models import install
    from tests.onnx_models.superres import conv_depth_to_space

    proto = conv_depth_to_space(2, layers=3, seed=5)
    rgb = np.random.default_rng(11).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    src = folder / "pic.png"
    Image.fromarray(rgb).save(src)

    install(app.models, proto, "sr2", "super_resolution", tmp_path / "venv-model")
    expected_path = tmp_path / "venv-out.png"
    app.engines.get("onnx_sr").process(src, expected_path, {"factor": 2}, ctx=EngineContext(app))
    expected = np.asarray(Image.open(expected_path))

    sidecar = FrozenSidecar(frozen_binary, bare_env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready"
        model = _install_model(sidecar, proto, tmp_path, "sr2", "super_resolution")
        assert model["scale"] == 2
        root = _project(sidecar, folder, "upscale")
        source = _import(sidecar, "upscale", src)
        out = sidecar.result("images.upscale", {"slug": "upscale", "asset_id": source["id"], "factor": 2})
        assert (out["engine"], out["model"]) == ("onnx_sr", "sr2"), out
        assert (out["asset"]["width"], out["asset"]["height"]) == (840, 600)
        got = np.asarray(Image.open(root / out["asset"]["storage_uri"]))
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        _assert_nothing_excluded_loaded(sidecar)
    finally:
        sidecar.kill()


# A saturated figure with a soft, wavy rim (alpha known) on a grey backdrop: the u2net-shaped model (chroma)
# finds it, and the refine pass has a soft band to recover.
FIGURE_RGB, BACKDROP_RGB = (0.85, 0.2, 0.15), (0.5, 0.5, 0.5)


def _soft_scene(width: int = 360, height: int = 280):
    """(rgb uint8 HxWx3, true alpha float HxW)."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = xx - width * 0.5, yy - height * 0.5
    theta = np.arctan2(dy, dx)
    radius = np.hypot(dx / 1.25, dy)
    edge = 0.3 * height + 6 * np.sin(7 * theta) + 3 * np.sin(19 * theta + 1)
    alpha = np.clip((edge - radius) / 7 + 0.5, 0, 1)   # a rim ~7 px wide
    a = alpha[..., None]
    rgb = np.rint((a * np.array(FIGURE_RGB) + (1 - a) * np.array(BACKDROP_RGB)) * 255).astype(np.uint8)
    return rgb, alpha


def _soft_error(alpha8, truth) -> float:
    """Mean alpha error where the truth is soft (the rim), in 0..1."""
    import numpy as np

    soft = (truth > 0.02) & (truth < 0.98)
    return float(np.abs(alpha8 / 255.0 - truth)[soft].mean())


@pytest.mark.parametrize("method", ["closed_form", "vitmatte"])
def test_frozen_refine_pass_matches_the_venv(frozen_binary: Path, bare_env: dict[str, str], tmp_path: Path,
                                             method: str, client) -> None:
    """images.remove_background with rembg then refine through the frozen binary: closed-form matting (no matting
    model installed: numpy and scipy.sparse.linalg frozen) and ViTMatte (a matting model installed over RPC, on
    onnxruntime). The refined alpha is closer to the truth than the unrefined cut-out and equals, within a level,
    what the venv computes for the same call."""
    import numpy as np
    from PIL import Image

    from tests.onnx_models import matting, save, segmentation as seg

    rgb, truth = _soft_scene()
    folder = tmp_path / "in"
    folder.mkdir()
    src = folder / "soft.png"
    Image.fromarray(rgb).save(src)
    models = [(seg.u2net(), "seg-u2net", "segmentation", {"arch": "u2net"})]
    if method == "vitmatte":
        models.append((matting.colour_projection(FIGURE_RGB, BACKDROP_RGB), "matte", "matting", {}))
    refine = {"method": method, "max_seconds": 120}

    def run(call) -> tuple[dict, dict]:
        """(plain, refined) results of the two calls, through `call(method, params)`."""
        for proto, name, kind, extra in models:
            path = tmp_path / "models" / f"{name}.onnx"
            sha = save(proto, path)
            call("models.install", {"name": name, "kind": kind, "path": str(path), "sha256": sha,
                                    "license": "test", "replace": True, **extra})
        call("projects.create", {"slug": "refine", "name": "Refine"})
        root = Path(call("projects.update", {"slug": "refine",
                                             "settings_json": {"import_roots": [str(folder)]}})["root_dir"])
        source = call("assets.import", {"slug": "refine", "paths": [str(src)]})["items"][0]
        base = {"slug": "refine", "asset_id": source["id"], "engines": ["rembg"]}
        plain = call("images.remove_background", base)
        refined = call("images.remove_background", {**base, "refine": refine})
        for out in (plain, refined):
            out["alpha"] = np.asarray(Image.open(root / out["asset"]["storage_uri"]))[..., 3]
        return plain, refined

    sidecar = FrozenSidecar(frozen_binary, bare_env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready"
        plain, refined = run(lambda m, params: sidecar.result(m, params) if m != "images.remove_background"
                             else _call_long(sidecar, m, params))
        _assert_nothing_excluded_loaded(sidecar)
    finally:
        sidecar.kill()
    record = refined["refine"]
    assert record["engine"] == "refine" and record["ok"], record
    assert record["meta"]["method"] == method and record["meta"]["hit_time_bound"] is False, record["meta"]
    assert record["meta"]["model"] == ("matte" if method == "vitmatte" else None)
    assert plain["engine"] == refined["engine"] == "rembg" and plain["refine"] is None
    assert _soft_error(refined["alpha"], truth) < 0.3 * _soft_error(plain["alpha"], truth), (
        _soft_error(refined["alpha"], truth), _soft_error(plain["alpha"], truth))

    venv_plain, venv_refined = run(lambda m, params: client.call(m, **params))
    assert np.abs(plain["alpha"].astype(int) - venv_plain["alpha"].astype(int)).max() <= 1
    assert np.abs(refined["alpha"].astype(int) - venv_refined["alpha"].astype(int)).max() <= 1


def _call_long(sidecar: FrozenSidecar, method: str, params: dict) -> dict:
    response = sidecar.call(method, params, timeout=180)
    assert "error" not in response, f"{method} failed: {response}\nlog:\n{sidecar.log()}"
    return response["result"]


def test_frozen_connectors_generate_through_the_ledger(frozen_binary: Path, bare_env: dict[str, str]) -> None:
    """Each remote generation connector (openai through the openai SDK, comfyui with its websocket, a1111) makes a
    run through the frozen binary against its loopback vendor server: the SDKs, httpx2, websockets and tenacity
    must all have been frozen in, which the venv cannot show."""
    from tests.vendors import a1111, comfyui, openai
    from tests.vendors.loopback import LoopbackServer

    env = {**bare_env, "IAT_SECRETS_PASSPHRASE": "frozen-connectors-passphrase"}
    servers = {"openai": LoopbackServer(openai.make_app(openai.OpenAIState())),
               "comfyui": LoopbackServer(comfyui.make_app(comfyui.ComfyState())),
               "a1111": LoopbackServer(a1111.make_app(a1111.A1111State()))}
    configs = {"openai": lambda url: {"endpoint": url + "/v1"},
               "comfyui": lambda url: {"endpoint": url, "model": "v1-5-pruned-emaonly.safetensors"},
               "a1111": lambda url: {"endpoint": url}}
    for server in servers.values():
        server.start()
    sidecar = FrozenSidecar(frozen_binary, env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready"
        sidecar.result("projects.create", {"slug": "connectors", "name": "Connectors"})
        sidecar.result("secrets.set", {"slug": "connectors", "provider_code": "openai", "secret_name": "api_key",
                                       "value": "sk-test"})
        for code, server in servers.items():
            sidecar.result("providers.configure", {"slug": "connectors", "provider_code": code,
                                                   "config": {**configs[code](server.url), "timeout_s": 60}})
            checked = sidecar.result("providers.check", {"slug": "connectors", "provider_code": code})["items"][0]
            assert checked["ready"] and checked["probe"]["ok"], (code, checked, sidecar.log())
            run = sidecar.result("runs.start", {"slug": "connectors", "provider": code, "candidates": 1,
                                                "stages": ["style_lock", "light_time"],
                                                "shots": [{"job_key": "one", "scene": "a lighthouse at dusk"}]})
            deadline = time.monotonic() + 180
            while (got := sidecar.result("runs.get", {"slug": "connectors", "run_id": run["id"]}))["status"] in (
                    "planned", "running"):
                assert time.monotonic() < deadline, f"{code} run did not finish; log:\n{sidecar.log()}"
                time.sleep(0.5)
            assert got["status"] == "done", (code, got, sidecar.log())
            cand = sidecar.result("candidates.list", {"slug": "connectors", "run_id": run["id"]})["items"][0]
            assert cand["meta_json"]["provider"] == code and cand["meta_json"]["model"]
            calls = sidecar.result("providers.calls", {"slug": "connectors", "run_id": run["id"]})["items"]
            assert [c["outcome"] for c in calls] == ["ok", "ok"], (code, calls)
            assert server.requests_to("/") >= 2
    finally:
        sidecar.kill()
        for server in servers.values():
            server.stop()


@pytest.mark.postgres
def test_frozen_studio_project_on_postgresql(frozen_binary: Path, bare_env: dict[str, str], pg_database: str) -> None:
    """Studio mode through the frozen binary (psycopg2 is in the bundle): a project created on the suite's
    PostgreSQL, a SQLite project moved there, and their events sent with NOTIFY (heard here on a connection of our
    own, tagged with the frozen process's pid)."""
    import psycopg2

    listener = psycopg2.connect(pg_database)
    listener.autocommit = True
    listener.cursor().execute("LISTEN iat_events")
    sidecar = FrozenSidecar(frozen_binary, {**bare_env, "IAT_STUDIO_DATABASE_URL": pg_database})
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready"
        made = sidecar.result("projects.create", {"slug": "studio-smoke", "name": "Studio", "backend": "postgres"})
        assert made["backend"] == "postgres"
        assert not (Path(made["root_dir"]) / "project.db").exists()
        sidecar.result("projects.create", {"slug": "to-move", "name": "To move"})
        moved = sidecar.result("projects.move", {"slug": "to-move"})
        assert moved["project"]["backend"] == "postgres" and Path(moved["old_database"]).is_file()
        assert {p["slug"] for p in sidecar.result("studio.projects.list")["items"]} == {"studio-smoke", "to-move"}

        with listener.cursor() as cur:
            cur.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'iat_p_%'")
            assert {r[0] for r in cur.fetchall()} == {"iat_p_" + made["id"].replace("-", ""), moved["db_schema"]}
        heard: list[dict] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(h["event"] == "project.updated" for h in heard):
            sidecar.result("projects.update", {"slug": "studio-smoke", "description": "from the frozen sidecar"})
            listener.poll()  # the bridge sends from its own thread: give it a moment
            time.sleep(0.2)
            listener.poll()
            heard += [json.loads(n.payload) for n in listener.notifies]
            listener.notifies.clear()
        update = next(h for h in heard if h["event"] == "project.updated")
        assert update["origin"]["pid"] == sidecar.proc.pid and update["payload"]["project_id"] == made["id"]
    finally:
        sidecar.kill()
        listener.close()
