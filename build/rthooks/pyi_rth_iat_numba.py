# Runtime hook of the frozen sidecar: numba (through pymatting, which rembg imports) compiles its kernels with
# cache=True. Inside a frozen bundle there is no writable __pycache__ next to the sources, so point numba's cache at a
# writable folder under the user cache dir. Kept free of imports beyond os/sys: it runs before every start.
import os
import sys


def _user_cache_dir() -> str:
    home = os.path.expanduser("~")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return os.path.join(base, "iat-toolkit", "Cache")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Caches", "iat-toolkit")
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "iat-toolkit")


if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_user_cache_dir(), "numba")
