"""ONNX inference sessions: one per model file and options, created once behind a lock and reused across images,
runs and engines (creating one costs from milliseconds for a tiny model to seconds for a large one).

Execution providers come from what the installed onnxruntime offers, best first (CUDA, DirectML, CoreML, then
CPU); IAT_ONNX_PROVIDERS (a comma list, e.g. "CPUExecutionProvider") narrows the choice. Intra-op threads leave
one core free so the desktop and the sidecar's other work stay responsive.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Any

PREFERRED = ("CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider")


def execution_providers(available: list[str] | None = None) -> list[str]:
    """The providers to ask for, in order; CPU is always last and always there."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    wanted = [p.strip() for p in os.environ.get("IAT_ONNX_PROVIDERS", "").split(",") if p.strip()]
    order = wanted or list(PREFERRED)  # a variable naming nothing (empty, " , ") is no choice
    chosen = [p for p in order if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


def intra_op_threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def session_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: onnxruntime's warnings would land on the sidecar's stderr
    return opts


class SessionCache:
    """Objects built once per key (an onnxruntime.InferenceSession, or a rembg session wrapping one).

    Keys must name everything the object depends on: the model file's path and sha256, and any options. A
    build runs under a per-key lock, so two threads asking for the same model build it once, while different
    models load in parallel.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.builds = 0  # how many objects were built: tests check reuse with it

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                return self._items[key]
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            item = build()
            with self._lock:
                self._items[key] = item
                self.builds += 1
            return item

    def evict(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drops the objects whose key matches (a removed model); returns how many."""
        with self._lock:
            gone = [k for k in self._items if predicate(k)]
            for k in gone:
                del self._items[k]
                self._locks.pop(k, None)
            return len(gone)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._locks.clear()


def inference_session(path: str, providers: list[str] | None = None):
    """A new onnxruntime session on `path` with the sidecar's options (callers cache it in a SessionCache)."""
    import onnxruntime as ort

    return ort.InferenceSession(path, sess_options=session_options(), providers=providers or execution_providers())
