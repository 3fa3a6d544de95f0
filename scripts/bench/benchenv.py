"""What every benchmark script shares: where the project and its venv are, and running under that venv."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"


def ensure_venv(script: str) -> None:
    """Re-runs `script` under the project's venv when started by another interpreter that cannot import iat."""
    try:
        import iat  # noqa: F401
    except ImportError:
        if VENV_PY.exists() and Path(sys.prefix).resolve() != VENV.resolve():
            os.execv(str(VENV_PY), [str(VENV_PY), str(Path(script).resolve()), *sys.argv[1:]])
        raise


def timed(fn):
    """(seconds fn() took, what it returned)."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out
