"""Process lifecycle: the ready file for power users, and the watchdog that ends the sidecar with its parent."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def write_ready_file(path: Path, params: dict) -> None:
    """Writes the ready params (token included) readable by this user only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(params, f)
    os.replace(tmp, path)


def remove_ready_file(path: Path, pid: int) -> None:
    """Removes the ready file if it is still ours (a newer sidecar may have replaced it)."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def watch_parent(on_death: Callable[[], None], interval: float = 0.25) -> None:
    """Calls on_death once the process that started us is gone, so the desktop shell never leaves an orphan."""
    if sys.platform == "win32":
        target = _windows_parent_waiter()
        if target is None:
            return
    else:
        original = os.getppid()
        if original == 1:  # started by init/a reaper: no parent to follow
            return
        _linux_death_signal()

        def target() -> None:
            stop = threading.Event()
            while not stop.wait(interval):
                if os.getppid() != original:
                    return

    def run() -> None:
        target()
        log.warning("parent process is gone; shutting down")
        on_death()

    threading.Thread(target=run, name="iat-parent-watch", daemon=True).start()


def _linux_death_signal() -> None:
    """Linux delivers SIGTERM the moment the parent dies (the poll above covers macOS and races)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable; polling only")


def _windows_parent_waiter() -> Callable[[], None] | None:  # pragma: no cover - Windows only
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    synchronize = 0x00100000
    kernel32.OpenProcess.restype = wintypes.HANDLE
    handle = kernel32.OpenProcess(synchronize, False, os.getppid())
    if not handle:
        return None

    def wait() -> None:
        kernel32.WaitForSingleObject(handle, 0xFFFFFFFF)

    return wait


def pid_alive(pid: int) -> bool | None:
    """Whether a process of this machine with this pid exists; None where that cannot be asked safely (Windows:
    os.kill there sends a console event or terminates the process instead of probing it)."""
    if os.name == "nt":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
