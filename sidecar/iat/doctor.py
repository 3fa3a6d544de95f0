"""`iat-sidecar doctor`: is this installation whole? The data folder, the databases, and every library the
product carries (imported for real, so a frozen build that forgot one fails here and not in front of a user)."""

from __future__ import annotations

import importlib
import json
import platform
import sys

from iat import __version__
from iat.settings import Settings

# import name -> distribution shown to the user
PRODUCT_MODULES = {
    "pydantic": "pydantic", "peewee": "peewee", "aiohttp": "aiohttp", "platformdirs": "platformdirs",
    "PIL": "pillow", "numpy": "numpy", "onnxruntime": "onnxruntime", "rembg.sessions.u2net_custom": "rembg",
    "scipy.sparse.linalg": "scipy",
    "boto3": "boto3", "cryptography": "cryptography", "keyring": "keyring", "openai": "openai", "vosk": "vosk",
    "sounddevice": "sounddevice", "pyttsx3": "pyttsx3", "psycopg2": "psycopg2-binary",
}


def check_modules() -> dict[str, dict]:
    out = {}
    for module_name, dist in PRODUCT_MODULES.items():
        try:
            module = _import(module_name)
            out[dist] = {"ok": True, "version": str(getattr(module, "__version__", "") or _dist_version(dist))}
        except Exception as exc:  # noqa: BLE001 - report every failure, whatever it is
            out[dist] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


def _import(name: str):
    """rembg's modules load through iat.models.rembg's bare package: rembg's own __init__ (pymatting, numba) is not
    in the frozen build."""
    if name.startswith("rembg."):
        from iat.models.rembg import submodule

        return submodule(name.removeprefix("rembg."))
    return importlib.import_module(name)


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return ""


def check_home(settings: Settings) -> dict:
    from iat.app import App

    app = App(settings)
    try:
        projects = app.projects.list(None)
        return {"ok": True, "home": str(settings.home), "projects": len(projects),
                "app_schema_version": app.app_store.schema_version()}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "home": str(settings.home), "error": f"{type(exc).__name__}: {exc}"}
    finally:
        app.close()


def run_doctor(settings: Settings, *, as_json: bool) -> int:
    report = {"version": __version__, "python": platform.python_version(), "platform": platform.platform(),
              "frozen": bool(getattr(sys, "frozen", False)), "home": check_home(settings),
              "modules": check_modules()}
    ok = report["home"]["ok"] and all(m["ok"] for m in report["modules"].values())
    report["ok"] = ok
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"IAT Toolkit {__version__} (Python {report['python']}, frozen: {report['frozen']})")
        print(f"home: {report['home']}")
        for name, m in report["modules"].items():
            print(f"  {'ok ' if m['ok'] else 'BAD'} {name} {m.get('version') or m.get('error')}")
    return 0 if ok else 1
