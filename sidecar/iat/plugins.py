"""Registries of pluggable parts (generation providers, image engines), owned by each App and resolved lazily.

An entry is a code and a `"module:Class"` path; the class is imported on first use, so heavy libraries
(openai, onnxruntime, rembg) stay out of start-up, and an App can register its own parts (tests do) without
touching any module-level state.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Generic, Iterator, TypeVar

from iat.errors import InvalidParams

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    def __init__(self, kind: str, entries: dict[str, str] | None = None):
        self.kind = kind  # "provider", "engine": used in error messages
        self._paths: dict[str, str] = dict(entries or {})
        self._instances: dict[str, T] = {}
        self._lock = threading.Lock()

    def register(self, code: str, target: str | Any) -> None:
        """Adds a part by `"module:Class"` path, or an already built instance (tests)."""
        with self._lock:
            if isinstance(target, str):
                self._paths[code] = target
                self._instances.pop(code, None)
            else:
                self._paths[code] = f"{type(target).__module__}:{type(target).__qualname__}"
                self._instances[code] = target

    def codes(self) -> list[str]:
        return sorted(self._paths)

    def __contains__(self, code: object) -> bool:
        return code in self._paths

    def get(self, code: str) -> T:
        """The part's single instance, built on first use; an unknown code is invalid_params."""
        with self._lock:
            instance = self._instances.get(code)
            if instance is not None:
                return instance
            path = self._paths.get(code)
            if path is None:
                raise InvalidParams(f"unknown {self.kind} {code!r}; known: {', '.join(sorted(self._paths))}",
                                    details={self.kind: code, "known": sorted(self._paths)})
            module_name, _, attr = path.partition(":")
            instance = getattr(importlib.import_module(module_name), attr)()
            self._instances[code] = instance
            return instance

    def __iter__(self) -> Iterator[str]:
        return iter(self.codes())
