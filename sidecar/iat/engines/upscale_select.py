"""Which upscale engine a call uses: `auto` is `onnx_sr` when an installed super-resolution model suits the factor
(see iat.engines.onnx_upscale.choose_model), else the model-free `lanczos`; any other code names an engine that
must upscale and be ready. Shared by images.upscale and a run's post-processing (resolved once at runs.start and
recorded in the snapshot, with the model's name and sha256, so a replay runs the same model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iat.engines.base import EngineContext
from iat.errors import Conflict, EngineError, InvalidParams

AUTO = "auto"
ONNX = "onnx_sr"
FALLBACK = "lanczos"
OP = "upscale"


@dataclass(frozen=True)
class Upscaler:
    engine: str
    model: Any = None   # iat.models.store.InstalledModel for onnx_sr

    def options(self, factor: int) -> dict:
        """The engine's options: the model named and pinned when there is one."""
        if self.model is None:
            return {"factor": factor}
        return {"factor": factor, "model": self.model.name, "sha256": self.model.entry.sha256}

    def record(self) -> dict:
        """What a run's snapshot keeps of the choice."""
        return {"upscale_engine": self.engine,
                "upscale_model": self.model.name if self.model is not None else None,
                "upscale_model_sha256": self.model.entry.sha256 if self.model is not None else None}


def select(app, code: str, factor: int, ctx: EngineContext | None = None) -> Upscaler:
    """The engine (and model) for `code` and `factor`. InvalidParams: not an upscale engine; Conflict: onnx_sr
    asked for with no suitable model installed (a state of this machine, not a bad request); EngineError: another
    engine that is not ready."""
    from iat.engines.onnx_upscale import choose_model, resolve_model

    if code == AUTO:
        model = choose_model(app.models, factor)
        return Upscaler(ONNX, model) if model is not None else Upscaler(FALLBACK)
    if code not in app.engines or getattr(app.engines.get(code), "op", None) != OP:
        raise InvalidParams(f"engine {code!r} does not upscale", details={
            "engine": code, "errors": [{"loc": ["engine"], "msg": "not an upscale engine", "type": "value_error"}]})
    if code == ONNX:
        try:
            return Upscaler(ONNX, resolve_model(app.models, factor))
        except EngineError as exc:
            raise Conflict(exc.message, details=exc.details) from None
    status = app.engines.get(code).available(ctx or EngineContext(app))
    if not status.ready:
        raise EngineError(f"upscaler {code!r} is unavailable: {status.reason}",
                          details={"engine": code, "reason": status.reason})
    return Upscaler(code)
