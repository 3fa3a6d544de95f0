"""`rembg`: local background removal on the bundled ONNX runtime, through rembg's model sessions.

The model is a segmentation model from the models folder (`app.models`): its arch picks rembg's session (u2net ->
U2netCustomSession, isnet -> DisCustomSession, birefnet -> BiRefNet general; see iat.models.rembg), built once per
model file and cached on the App's models store, so every image and every run reuse it. Without a `model` option
the engine takes the first installed segmentation model in PREFERENCE order (BiRefNet's masks are the finest,
then IS-Net's, then U^2-Net's).

Output: an RGBA PNG of the source's own pixels (its stored orientation, like every engine of the chain, so the
cut-out lines up with the input asset) with the model's mask as alpha (multiplied into an alpha the source
already has); fully transparent pixels get colour 0. The chain checks the mask; this engine does not judge it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from iat.engines.base import EngineContext, EngineResult, EngineStatus, check_cancel, parse_options
from iat.errors import EngineError, IATError, InvalidParams, NotFound

KIND = "segmentation"
PREFERENCE = ("birefnet", "isnet", "u2net")   # default model: the first installed of these archs
VARIANT = "rembg"                             # the models store's cache key for a rembg session


class RembgOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=64,
                              description="An installed segmentation model's name; default: the first installed "
                                          "BiRefNet, else IS-Net, else U^2-Net model")


def default_model(store):
    """The installed segmentation model the engine uses without a `model` option, or None."""
    for arch in PREFERENCE:
        found = store.find(KIND, arch=arch)
        if found:
            return found[0]
    return None


def _install_hint() -> str:
    return ("no segmentation model installed: models.install a u2net, isnet or birefnet ONNX file with "
            "kind 'segmentation' and its arch")


class RembgEngine:
    code: ClassVar[str] = "rembg"
    op: ClassVar[str] = "remove_background"

    def available(self, ctx: EngineContext | None = None) -> EngineStatus:
        if ctx is None or getattr(ctx, "app", None) is None:
            return EngineStatus(False, "needs the app's models folder (called without an engine context)")
        try:
            model = default_model(ctx.app.models)
        except IATError as exc:   # a damaged manifest
            return EngineStatus(False, exc.message)
        if model is None:
            return EngineStatus(False, _install_hint())
        return EngineStatus(True, "")

    def _model(self, store, name: str | None):
        if name is None:
            model = default_model(store)
            if model is None:
                raise EngineError(_install_hint(), details={"engine": self.code})
            return model
        try:
            model = store.get(name)
        except NotFound as exc:
            if (exc.details or {}).get("reason") == "file_missing":
                raise EngineError(exc.message, details={"engine": self.code, "model": name}) from None
            raise InvalidParams(f"invalid options for engine 'rembg': no model named {name!r} is installed",
                                details={"engine": self.code, "errors": [{"loc": "model", "msg": exc.message}]}
                                ) from None
        if model.entry.kind != KIND:
            raise InvalidParams(f"invalid options for engine 'rembg': model {name!r} is a {model.entry.kind} model, "
                                "not a segmentation model",
                                details={"engine": self.code, "errors": [{"loc": "model", "msg": "not segmentation"}]})
        if model.entry.arch is None:
            raise EngineError(f"model {name!r} has no arch in its manifest (u2net, isnet or birefnet)",
                              details={"engine": self.code, "model": name})
        return model

    def session(self, ctx: EngineContext, model):
        """The model's rembg session, built once per model file (the models store caches it)."""
        from iat.models.rembg import new_session

        def build():
            try:
                return new_session(model.entry.arch, model.path)
            except Exception as exc:   # onnxruntime cannot load it (the file changed since its install)
                raise EngineError(f"model {model.name!r} could not be loaded ({type(exc).__name__})",
                                  details={"engine": self.code, "model": model.name}) from None

        return ctx.app.models.cached(model, VARIANT, build)

    def process(self, src: Path, dst: Path, options: dict[str, Any] | None = None, *,
                cancel: threading.Event | None = None, ctx: EngineContext | None = None) -> EngineResult:
        from PIL import Image

        from iat.imaging.io import from_arrays, open_image, save_png, to_arrays

        opt = parse_options(RembgOptions, options, self.code)
        if ctx is None or getattr(ctx, "app", None) is None:
            raise EngineError("the rembg engine needs the app's models folder (no engine context)",
                              details={"engine": self.code})
        model = self._model(ctx.app.models, opt.model)
        img = open_image(src)
        rgb, src_alpha = to_arrays(img)
        session = self.session(ctx, model)
        check_cancel(cancel)
        try:
            # rembg min-max normalises the prediction: a flat one is 0/0, which becomes an empty mask.
            with np.errstate(divide="ignore", invalid="ignore"):
                mask = session.predict(Image.fromarray(rgb, "RGB"))[0]
        except Exception as exc:   # onnxruntime's errors (and rembg's on an odd output) are the engine failing
            raise EngineError(f"model {model.name!r} failed on the image ({type(exc).__name__}: {exc})"[:500],
                              details={"engine": self.code, "model": model.name}) from None
        check_cancel(cancel)
        alpha = np.asarray(mask.convert("L"), dtype=np.uint8)
        if alpha.shape != rgb.shape[:2]:
            raise EngineError(f"model {model.name!r} gave a {alpha.shape[1]}x{alpha.shape[0]} mask for a "
                              f"{rgb.shape[1]}x{rgb.shape[0]} image", details={"engine": self.code})
        if src_alpha is not None:
            alpha = ((alpha.astype(np.uint16) * src_alpha + 127) // 255).astype(np.uint8)
        out = rgb.copy()
        out[alpha == 0] = 0
        save_png(from_arrays(out, alpha), dst)
        h, w = rgb.shape[:2]
        return EngineResult(Path(dst), w, h, {
            "engine": self.code, "model": model.name, "arch": model.entry.arch, "sha256": model.entry.sha256,
            "session": type(session).name(), "providers": list(session.inner_session.get_providers())})
