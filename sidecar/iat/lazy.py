"""Module-level imports that load on first attribute access.

Command modules import their domain modules this way, so loading the registry does not load peewee and the
database layer: `serve --stdio` answers its first ping sooner. (Not importlib.util.LazyLoader: on Python 3.11 two
threads touching a lazy module at once can see it half-initialised; importlib.import_module takes the import
locks.)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_import(name: str) -> Any:
    return LazyModule(name)
