"""rembg's model sessions (u2net, isnet, BiRefNet), built on a file from our models folder, without `import rembg`.

Why not `import rembg`: rembg/__init__.py imports rembg.bg, which imports pymatting (numba and llvmlite, ~170 MB
frozen), scikit-image and scipy, none of which a session needs; the frozen bundle leaves them out, so there that
import fails. rembg/sessions/__init__.py likewise imports every session module, and its `sam` imports
scipy.ndimage and jsonschema. So, unless the real package is already imported (then it is used as is), `rembg` and
`rembg.sessions` are registered as bare package modules (their `__path__` from importlib.util.find_spec, which
locates a package without executing it) and only the session modules we run are imported: `base`,
`u2net_custom`, `dis_custom` and `birefnet_general` (numpy, Pillow, onnxruntime, and pooch, which is small). A
later `import rembg.bg` in the same process then fails: the product never needs it (its refine pass must import
`rembg.matting` the same way, through `submodule`).

The sessions are rembg's own classes (its pre- and post-processing: resize, normalisation, the mask), subclassed
only so that `download_models` returns our sha256-verified file: rembg's would resolve a file under its own home
(and its non-custom sessions fetch from the network). Nothing here downloads, and no rembg home is read or made.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

# arch (iat.models.manifest.Arch) -> (the rembg.sessions module, its session class): the session whose pre- and
# post-processing the architecture's models expect.
SESSIONS: dict[str, tuple[str, str]] = {
    "u2net": ("u2net_custom", "U2netCustomSession"),        # 320x320, ImageNet mean/std, min-max of output 0
    "isnet": ("dis_custom", "DisCustomSession"),            # 1024x1024, mean 0.5 std 1, min-max of output 0
    "birefnet": ("birefnet_general", "BiRefNetSessionGeneral"),  # 1024x1024, ImageNet, sigmoid then min-max
}

BARE = "__iat_bare_package__"   # set on the placeholder package modules this module registers

_lock = threading.RLock()   # session_class holds it around submodule
_classes: dict[str, type] = {}


def _bare_package(name: str) -> None:
    """Registers package `name` without running its __init__.py (its parent must be importable already)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(f"no package {name!r}", name=name)
    module = types.ModuleType(name, f"{name}, registered without running its __init__ (see iat.models.rembg)")
    module.__spec__ = spec
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = name
    module.__loader__ = spec.loader
    if spec.origin:
        module.__file__ = spec.origin
    setattr(module, BARE, True)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def submodule(name: str) -> types.ModuleType:
    """`rembg.<name>` (e.g. "sessions.u2net_custom", "matting"), imported without rembg's package __init__s."""
    with _lock:
        _bare_package("rembg")
        if name.startswith("sessions."):
            _bare_package("rembg.sessions")
        return importlib.import_module(f"rembg.{name}")


def _static_imports() -> None:  # pragma: no cover - never called: tells PyInstaller's analysis what we import
    import rembg.sessions.base  # noqa: F401
    import rembg.sessions.birefnet_general  # noqa: F401
    import rembg.sessions.dis_custom  # noqa: F401
    import rembg.sessions.u2net_custom  # noqa: F401


def session_class(arch: str) -> type:
    """rembg's session class for `arch`, with `download_models` returning the `model_path` it is given."""
    if arch not in SESSIONS:
        raise ValueError(f"no rembg session for arch {arch!r}")
    with _lock:
        return _classes.get(arch) or _classes.setdefault(arch, _local_class(arch))


def _local_class(arch: str) -> type:
    module, name = SESSIONS[arch]
    base = getattr(submodule(f"sessions.{module}"), name)

    def download_models(cls, *args: Any, **kwargs: Any) -> str:
        return str(kwargs["model_path"])   # our verified file: never rembg's home, never the network

    return type(f"Local{name}", (base,), {"download_models": classmethod(download_models), "__module__": __name__,
                                          "__doc__": f"rembg's {name} on a file from the models folder."})


def new_session(arch: str, path: Path | str, *, providers: list[str] | None = None):
    """A rembg session of `arch` on the model file `path`, with the sidecar's session options and providers.

    Callers cache it (`app.models.cached(model, "rembg", ...)`): building one loads the model.
    """
    from iat.models.sessions import execution_providers, session_options

    cls = session_class(arch)
    return cls(cls.name(), session_options(), providers=list(providers or execution_providers()),
               model_path=str(path))


__all__ = ["SESSIONS", "new_session", "session_class", "submodule"]
