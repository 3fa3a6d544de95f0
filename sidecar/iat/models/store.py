"""The models folders: the user's (IAT_MODELS_DIR, else <home>/models; writable) and the one shipped with the
installer (IAT_BUNDLED_MODELS_DIR, else `models/` beside the frozen executable; read-only). A model is found by
name, the user's folder first, so a user can replace a shipped model by installing one under the same name.

Installing copies (or moves) a file into the user's folder while hashing it, refuses it unless its sha256 is the
one given, loads it with onnxruntime and checks its I/O against its kind before the manifest names it: a model in
the manifest is always whole and loadable. Writers hold a file lock on the folder (several sidecars may share
it). Nothing here downloads: see iat.models.download, which only runs when a user asks.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from iat.clock import utcnow
from iat.errors import Conflict, Forbidden, InvalidParams, NotFound
from iat.models import manifest as mf
from iat.models.sessions import SessionCache, execution_providers, inference_session

CHUNK = 1 << 20


@dataclass(frozen=True)
class InstalledModel:
    entry: mf.ModelEntry
    path: Path
    location: str   # "user" | "bundled"

    @property
    def name(self) -> str:
        return self.entry.name

    def to_dict(self) -> dict[str, Any]:
        return {**self.entry.model_dump(mode="json"), "location": self.location}


def default_bundled_dir() -> Path | None:
    env = os.environ.get("IAT_BUNDLED_MODELS_DIR")
    if env:
        return Path(env)
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent / "models"
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _invalid(message: str, loc: str, **details: Any) -> InvalidParams:
    return InvalidParams(message, details={"errors": [{"loc": [loc], "msg": message, "type": "value_error"}],
                                           **details})


class ModelStore:
    def __init__(self, user_dir: Path, bundled_dir: Path | None = None):
        self.user_dir = Path(user_dir)
        self.bundled_dir = Path(bundled_dir) if bundled_dir else None
        self.sessions = SessionCache()
        self._lock = threading.Lock()

    # --- reading ---

    def _folder(self, folder: Path | None, location: str) -> list[InstalledModel]:
        if folder is None:
            return []
        try:
            manifest = mf.read(folder)
        except ValueError as exc:
            raise Conflict(f"the {location} models manifest {folder / mf.MANIFEST} is damaged: fix or remove it",
                           details={"path": str(folder / mf.MANIFEST), "reason": str(exc)[:500]}) from None
        return [InstalledModel(e, folder / e.file, location) for e in manifest.models]

    def list(self) -> list[InstalledModel]:
        """Every model, user's first; a bundled model replaced by a user's one of the same name is left out."""
        user = self._folder(self.user_dir, "user")
        names = {m.name for m in user}
        return user + [m for m in self._folder(self.bundled_dir, "bundled") if m.name not in names]

    def get(self, name: str) -> InstalledModel:
        for model in self.list():
            if model.name == name:
                if not model.path.is_file():
                    raise NotFound(f"model {name!r} is in the manifest but its file {model.entry.file} is missing",
                                   details={"model": name, "reason": "file_missing"})
                return model
        raise NotFound(f"no model named {name!r} is installed", details={"model": name})

    def find(self, kind: str, *, arch: str | None = None, scale: int | None = None) -> list[InstalledModel]:
        return [m for m in self.list() if m.entry.kind == kind and (arch is None or m.entry.arch == arch)
                and (scale is None or m.entry.scale == scale) and m.path.is_file()]

    # --- sessions ---

    def session(self, model: InstalledModel):
        """The model's shared onnxruntime session."""
        key = ("ort", str(model.path), model.entry.sha256, tuple(execution_providers()))
        return self.sessions.get(key, lambda: inference_session(str(model.path), list(key[3])))

    def cached(self, model: InstalledModel, variant: str, build):
        """Any object built on a model (a rembg session), once per model file and `variant`."""
        return self.sessions.get((variant, str(model.path), model.entry.sha256), build)

    # --- writing ---

    def _read_user(self) -> mf.Manifest:
        """The user's manifest for a change; a damaged one is refused (Conflict) rather than overwritten."""
        folder = self.user_dir
        try:
            return mf.read(folder)
        except ValueError as exc:
            raise Conflict(f"the user models manifest {folder / mf.MANIFEST} is damaged: fix or remove it",
                           details={"path": str(folder / mf.MANIFEST), "reason": str(exc)[:500]}) from None

    def check_free(self, name: str) -> None:
        """Conflict when the user's folder has a model `name` (a shipped one of that name may be replaced)."""
        if any(m.name == name for m in self._read_user().models):
            raise Conflict(f"a model named {name!r} is installed; remove it first or install with replace",
                           details={"model": name})

    def _locked(self):
        from filelock import FileLock

        self.user_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.user_dir / ".manifest.lock"), timeout=60)

    def install(self, src: Path, *, name: str, kind: str, sha256: str, arch: str | None = None, license: str = "",
                source: str = "file", replace: bool = False, move: bool = False) -> InstalledModel:
        """Adds `src` to the user's folder as model `name` (see the module docstring for the checks)."""
        from iat.models.signature import load_and_check

        src = Path(src)
        sha256 = sha256.lower()
        if not re.fullmatch(mf.NAME_PATTERN, name):  # checked first: the name becomes a file name
            raise _invalid(f"model name {name!r} must match {mf.NAME_PATTERN}", "name")
        if kind not in get_args(mf.Kind):
            raise _invalid(f"kind must be one of {', '.join(get_args(mf.Kind))}", "kind")
        if arch is not None and arch not in get_args(mf.Arch):
            raise _invalid(f"arch must be one of {', '.join(get_args(mf.Arch))}", "arch")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise _invalid("sha256 must be 64 hex digits", "sha256")
        _check_source(src)
        if kind == "segmentation" and arch is None:
            raise _invalid("a segmentation model needs its arch (u2net, isnet or birefnet)", "arch")
        if kind != "segmentation" and arch is not None:
            raise _invalid("arch applies to segmentation models only", "arch")
        if not replace:  # before the copy and the load, which may take long; checked again under the lock
            self.check_free(name)
        tmp = self.user_dir / f".{name}.{os.getpid()}.{threading.get_ident()}.part"
        self.user_dir.mkdir(parents=True, exist_ok=True)
        try:
            if move:
                os.replace(src, tmp)  # a download already in this folder
                actual = sha256_of(tmp)
            else:
                actual = _copy_hashing(src, tmp)
            if actual != sha256:
                raise _invalid(f"sha256 mismatch: the file is {actual}, not {sha256}", "sha256", expected=sha256,
                               actual=actual)
            io, scale = load_and_check(tmp, kind)
            entry = mf.ModelEntry(name=name, kind=kind, arch=arch, scale=scale, file=f"{name}.onnx", sha256=actual,
                                  size=tmp.stat().st_size, io=io, license=license, source=source,
                                  installed_at=utcnow().isoformat())
            with self._lock, self._locked():
                manifest = self._read_user()
                if not replace:
                    self.check_free(name)
                os.replace(tmp, self.user_dir / entry.file)
                manifest.models = [m for m in manifest.models if m.name != name] + [entry]
                mf.write(self.user_dir, manifest)
        finally:
            tmp.unlink(missing_ok=True)
        self.sessions.evict(lambda k: len(k) > 1 and k[1] == str(self.user_dir / entry.file))
        return InstalledModel(entry, self.user_dir / entry.file, "user")

    def remove(self, name: str) -> InstalledModel:
        """Removes a user-installed model (a shipped one cannot be removed: it comes back with every install)."""
        with self._lock, self._locked():
            manifest = self._read_user()
            entry = next((m for m in manifest.models if m.name == name), None)
            if entry is None:
                if any(m.name == name for m in self._folder(self.bundled_dir, "bundled")):
                    raise Conflict(f"model {name!r} ships with the installer and cannot be removed",
                                   details={"model": name, "location": "bundled"})
                raise NotFound(f"no model named {name!r} is installed", details={"model": name})
            manifest.models = [m for m in manifest.models if m.name != name]
            mf.write(self.user_dir, manifest)
            path = self.user_dir / entry.file
            path.unlink(missing_ok=True)
        self.sessions.evict(lambda k: len(k) > 1 and k[1] == str(path))
        return InstalledModel(entry, path, "user")


def _check_source(src: Path) -> None:
    """A file to install must be a regular file this process can read; what is wrong is a typed error, as for
    assets.import: a path naming nothing is NotFound, one the OS refuses is Forbidden, anything else is
    InvalidParams."""
    try:
        info = src.stat()
    except FileNotFoundError:
        raise NotFound(f"no file at {src}", details={"path": str(src)}) from None
    except PermissionError:
        raise Forbidden(f"{src}: permission denied", details={"path": str(src)}) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise _invalid(f"{src}: cannot be read ({type(exc).__name__})", "path") from None
    if not stat.S_ISREG(info.st_mode):
        raise _invalid(f"{src} is not a regular file", "path")


def _open_source(src: Path):
    try:
        return open(src, "rb")
    except PermissionError:
        raise Forbidden(f"{src}: permission denied", details={"path": str(src)}) from None
    except OSError as exc:
        raise _invalid(f"{src}: cannot be read ({exc.strerror or type(exc).__name__})", "path") from None


def _copy_hashing(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with _open_source(src) as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


def open_store(settings) -> ModelStore:
    return ModelStore(settings.models_dir, default_bundled_dir())


__all__ = ["InstalledModel", "ModelStore", "open_store", "sha256_of"]
