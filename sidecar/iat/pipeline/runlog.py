"""A run's JSON-lines log: one object per line (ts, event, and what happened), appended as the run goes and stored
as the run's `run_log` asset when it ends. A resumed run appends to the same file, so the log says where it was
interrupted and that it resumed. Secret values never reach it: every line passes through the App's redactor."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

from iat.clock import format_ts, utcnow


class RunLog:
    def __init__(self, path: Path, scrub: Callable[[str], str]):
        self.path = path
        self._scrub = scrub
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        line = self._scrub(json.dumps({"ts": format_ts(utcnow()), "event": event, **fields}, ensure_ascii=False,
                                      sort_keys=True, default=str))
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # a line written is a line kept: the log must say what happened before a crash

    def read(self) -> bytes:
        return self.path.read_bytes() if self.path.exists() else b""
