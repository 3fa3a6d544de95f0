"""The image-engine interface: background removal and upscaling, one small class per engine.

An engine reads one image file and writes one PNG; it never touches the database, and it spends nothing in
`available()`. Engines are registered by code in an `iat.plugins.LazyRegistry` ("module:Class") and built once
per App, so an engine holds no per-call state and must be safe to call from several threads.

    class MyEngine:
        code: ClassVar[str] = "mine"
        op: ClassVar[str] = "remove_background"          # or "upscale"
        def available(self, ctx=None) -> EngineStatus: ...  # ready, or why not (a missing model file, no key)
        def process(self, src, dst, options, *, cancel=None, ctx=None) -> EngineResult: ...

`ctx` (an `EngineContext`) is what an engine needs beyond its inputs: the App (its models folder, ONNX sessions,
provider accounts and call ledger) and, inside a project, the project handle and the run, so that a paid call is
charged to them. Local pure engines (key, lanczos) ignore it; an engine that needs it and gets none says so in
`available()` rather than failing later.

Errors: bad `options` -> InvalidParams (checked before any work); an unreadable source -> InvalidParams; the
engine's own failure (a vendor error, a model that fails to run) -> EngineError; a set `cancel` event ->
`Cancelled`, which is a control-flow signal, not a client error: the runner and commands turn it into a cancelled
status. `dst` is written atomically (see `iat.imaging.io.save_png`) and only on success.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from iat.cancel import Cancelled, check_cancel
from iat.errors import EngineError, InvalidParams

__all__ = ["Cancelled", "EngineContext", "EngineError", "EngineResult", "EngineStatus", "ImageEngine", "Op", "check_cancel",
           "parse_options"]

Op = Literal["remove_background", "upscale"]
OPS: tuple[str, ...] = ("remove_background", "upscale")


@dataclass(frozen=True)
class EngineStatus:
    ready: bool
    reason: str = ""   # why not ready ("" when ready): shown to the user as is


@dataclass(frozen=True)
class EngineResult:
    path: Path
    width: int
    height: int
    meta: dict[str, Any] = field(default_factory=dict)   # JSON-serialisable facts about the run (thresholds, ...)


@dataclass(frozen=True)
class EngineContext:
    app: Any                      # iat.app.App: models, sessions, accounts, ledger
    handle: Any | None = None     # the project the work is for (paid engines charge it); None outside a project
    run_id: str | None = None     # the run, when the work is a run's post-processing
    enforce_budget: bool = True   # False once the user confirmed going over the project's budget for this run


@runtime_checkable
class ImageEngine(Protocol):
    code: ClassVar[str]
    op: ClassVar[str]

    def available(self, ctx: EngineContext | None = None) -> EngineStatus: ...

    def process(self, src: Path, dst: Path, options: dict[str, Any], *,
                cancel: threading.Event | None = None, ctx: EngineContext | None = None) -> EngineResult: ...


def parse_options(model: type[BaseModel], options: dict[str, Any] | None, engine: str) -> BaseModel:
    """Validates an engine's options with its pydantic model; any problem is InvalidParams with the details."""
    try:
        return model.model_validate(options or {})
    except ValidationError as exc:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise InvalidParams(f"invalid options for engine {engine!r}: "
                            + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors),
                            details={"engine": engine, "errors": errors}) from None
