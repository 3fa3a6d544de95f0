"""`onnx_sr`: upscaling with an installed super-resolution model (Real-ESRGAN's I/O: [1, 3, H, W] float in [0, 1]
-> [1, 3, sH, sW]) on the shared onnxruntime session, tile by tile (iat.imaging.tiling), in bounded memory.

The model: `options.model` names an installed super_resolution model; by default the first installed one whose
scale equals the factor (the user's folder before the shipped one, then install order), else the one with the
smallest scale above the factor, whose output is then brought to the exact size with a Lanczos downscale. A model
with a smaller scale than the factor is never used (a 2x model does not make a 4x image). `options.sha256` pins
the model file: a run records it so that its replay uses the same model or fails.

Transparency: only the colour goes through the model. First the colour under fully transparent pixels (often black
or leftover backdrop) is replaced by the colour of the nearest covered pixels (a push-pull fill), so the model
never blends it into the edges as a halo; alpha is upscaled with Lanczos (Pillow's 8-bit resize, which clips the
overshoot and needs no float frame); fully transparent output pixels are zeroed. An RGB image stays RGB.

A model with a fixed input size (static H and W) gets tiles that fit it, padded at the right and bottom by edge
replication; the padding only touches output px that carry no blend weight or lie on the image border.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from iat.engines.base import EngineContext, EngineResult, EngineStatus, check_cancel, parse_options
from iat.engines.lanczos import MAX_SIDE
from iat.errors import EngineError, InvalidParams, NotFound
from iat.imaging import tiling
from iat.imaging.io import from_arrays, open_image, save_png, to_arrays
from iat.models.manifest import NAME_PATTERN

KIND = "super_resolution"
ZERO_ROWS = 1024   # rows per chunk when zeroing transparent output px (a bool mask of the whole output is large)


class OnnxUpscaleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: Literal[2, 3, 4] = 2
    model: str | None = Field(None, pattern=NAME_PATTERN, description=(
        "An installed super_resolution model; default: one whose scale is the factor, else the smallest scale "
        "above it (then downscaled with Lanczos to the exact size)"))
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="The model file must have this sha256 (a replay pins its run's model)")
    tile: int = Field(256, strict=True, ge=32, le=2048, description="Tile side in input px, context not counted")
    overlap: int = Field(16, strict=True, ge=0, le=256, description=(
        "Context px on each side of a tile; tiles are blended over the middle half of their shared context"))

    @model_validator(mode="after")
    def _geometry(self) -> OnnxUpscaleOptions:
        if 2 * self.overlap > self.tile:
            raise ValueError("overlap may be at most half the tile")
        return self


def choose_model(models, factor: int):
    """The installed model `onnx_sr` uses for `factor` by default (see the module docstring), or None."""
    found = [m for m in models.find(KIND) if (m.entry.scale or 0) >= factor]
    exact = [m for m in found if m.entry.scale == factor]
    if exact:
        return exact[0]
    return min(found, key=lambda m: m.entry.scale) if found else None


def resolve_model(models, factor: int, name: str | None = None, sha256: str | None = None):
    """The model to run: the one named (checked), else the default choice. EngineError when there is none or the
    pinned file changed; InvalidParams when the named model cannot make this factor."""
    if name is None:
        model = choose_model(models, factor)
        if model is None:
            raise EngineError(f"no super-resolution model of scale {factor} or more is installed "
                              "(models.install with kind super_resolution)",
                              details={"engine": OnnxUpscaleEngine.code, "factor": factor, "reason": "no_model"})
    else:
        try:
            model = models.get(name)
        except NotFound as exc:
            raise EngineError(f"super-resolution model {name!r} is not installed: {exc.message}",
                              details={"engine": OnnxUpscaleEngine.code, "model": name, "reason": "model_missing"}
                              ) from None
        if model.entry.kind != KIND:
            raise InvalidParams(f"model {name!r} is a {model.entry.kind} model, not {KIND}",
                                details={"model": name, "kind": model.entry.kind})
        if (model.entry.scale or 0) < factor:
            raise InvalidParams(f"model {name!r} upscales by {model.entry.scale}: too little for a factor of {factor}",
                                details={"model": name, "scale": model.entry.scale, "factor": factor})
    if sha256 is not None and model.entry.sha256 != sha256:
        raise EngineError(f"super-resolution model {model.name!r} changed: its file is {model.entry.sha256}, "
                          f"not {sha256} as pinned", details={"engine": OnnxUpscaleEngine.code, "model": model.name,
                                                              "sha256": model.entry.sha256, "expected": sha256,
                                                              "reason": "model_changed"})
    return model


def _pool(c: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of 2x2 blocks (an odd side padded with nothing)."""
    h, wd = w.shape
    ph, pw = h + h % 2, wd + wd % 2
    c = np.pad(c, ((0, ph - h), (0, pw - wd), (0, 0))).reshape(ph // 2, 2, pw // 2, 2, 3).sum((1, 3))
    w = np.pad(w, ((0, ph - h), (0, pw - wd))).reshape(ph // 2, 2, pw // 2, 2).sum((1, 3))
    return c, w


def fill_transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The colour under fully transparent px replaced by the average colour of the covered px nearby (push-pull:
    sum 2x2 blocks of the covered px level by level down to one px, then fill each hole from the finest level that
    has coverage around it). Covered px keep their colour. Float work starts at half the input's size and the
    full-size fill goes in row chunks, so a large input needs no full-size float copy."""
    known = alpha > 0
    if known.all() or not known.any():
        return rgb
    h, w = known.shape
    ph, pw = h + h % 2, w + w % 2
    rgb_p = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)))
    known_p = np.pad(known, ((0, ph - h), (0, pw - w)))
    c = np.zeros((ph // 2, pw // 2, 3), np.float32)
    wt = np.zeros((ph // 2, pw // 2), np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            k = known_p[dy::2, dx::2]
            c += rgb_p[dy::2, dx::2] * k[..., None]
            wt += k
    del rgb_p, known_p
    levels = [(c, wt)]
    while levels[-1][1].size > 1:
        levels.append(_pool(*levels[-1]))
    c, wt = levels[-1]
    colour = c / np.maximum(wt, 1e-6)[..., None]
    for c, wt in reversed(levels[:-1]):
        up = np.repeat(np.repeat(colour, 2, 0), 2, 1)[:wt.shape[0], :wt.shape[1]]
        colour = np.where(wt[..., None] > 0, c / np.maximum(wt, 1e-6)[..., None], up)
    out = rgb.copy()
    for r in range(0, h, ZERO_ROWS):   # ZERO_ROWS is even: a chunk starts on a level-1 row
        holes = ~known[r:r + ZERO_ROWS]
        up = np.repeat(np.repeat(colour[r // 2:(r + ZERO_ROWS) // 2], 2, 0), 2, 1)[:holes.shape[0], :w]
        out[r:r + ZERO_ROWS][holes] = np.floor(up[holes] + 0.5).clip(0, 255).astype(np.uint8)
    return out


def _static_side(model) -> tuple[int, int] | None:
    shape = model.entry.io.inputs[0].shape
    h, w = shape[2], shape[3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def _tile_fn(session, model, scale: int, fixed: tuple[int, int] | None):
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        if fixed is not None and (h, w) != fixed:
            x = np.pad(x, ((0, 0), (0, 0), (0, fixed[0] - h), (0, fixed[1] - w)), mode="edge")
        try:
            y = session.run(None, {name: x})[0]
        except Exception as exc:  # onnxruntime's own errors (out of memory, a node that fails)
            raise EngineError(f"super-resolution model {model.name!r} failed on a {w}x{h} tile "
                              f"({type(exc).__name__}: {str(exc)[:200]})",
                              details={"engine": OnnxUpscaleEngine.code, "model": model.name}) from None
        return y[:, :, :h * scale, :w * scale] if fixed is not None else y

    return run


class OnnxUpscaleEngine:
    code: ClassVar[str] = "onnx_sr"
    op: ClassVar[str] = "upscale"

    def available(self, ctx: EngineContext | None = None) -> EngineStatus:
        if ctx is None or getattr(ctx, "app", None) is None:
            return EngineStatus(False, "onnx_sr needs the App's models folder (no engine context given)")
        if not any(m.entry.scale for m in ctx.app.models.find(KIND)):
            return EngineStatus(False, "no super-resolution model is installed (models.install with kind "
                                       "super_resolution)")
        return EngineStatus(True, "")

    def process(self, src: Path, dst: Path, options: dict[str, Any] | None = None, *,
                cancel: threading.Event | None = None, ctx: EngineContext | None = None) -> EngineResult:
        opt = parse_options(OnnxUpscaleOptions, options, self.code)
        if ctx is None or getattr(ctx, "app", None) is None:
            raise EngineError("onnx_sr needs the App's models folder (no engine context given)",
                              details={"engine": self.code, "reason": "no_context"})
        model = resolve_model(ctx.app.models, opt.factor, opt.model, opt.sha256)
        scale = int(model.entry.scale)
        img = open_image(src)
        width, height = img.size
        for what, s in (("the output", opt.factor), (f"model {model.name!r}'s intermediate output", scale)):
            if max(width, height) * s > MAX_SIDE:
                raise InvalidParams(f"upscaling {width}x{height} by {s} ({what}) exceeds {MAX_SIDE} px",
                                    details={"width": width, "height": height, "factor": opt.factor, "scale": scale,
                                             "model": model.name, "max_side": MAX_SIDE})
        rgb, alpha = to_arrays(img)
        del img
        if alpha is not None:
            rgb = fill_transparent(rgb, alpha)
        check_cancel(cancel)
        try:
            session = ctx.app.models.session(model)
        except Exception as exc:
            raise EngineError(f"super-resolution model {model.name!r} could not be loaded ({type(exc).__name__})",
                              details={"engine": self.code, "model": model.name}) from None
        fixed = _static_side(model)
        tile, overlap = opt.tile, opt.overlap
        if fixed is not None:
            room = min(fixed) - 2 * overlap
            if room < max(1, 2 * overlap):
                raise EngineError(f"model {model.name!r} takes {fixed[1]}x{fixed[0]} inputs only: too small for "
                                  f"{overlap} px of overlap", details={"engine": self.code, "model": model.name})
            tile = min(tile, room)
        try:
            out = tiling.upscale_tiled(rgb, _tile_fn(session, model, scale, fixed), scale, tile=tile,
                                       overlap=overlap, cancel=cancel)
        except ValueError as exc:  # the model's output is not the input times its recorded scale
            raise EngineError(f"super-resolution model {model.name!r}: {exc}",
                              details={"engine": self.code, "model": model.name}) from None
        size = (width * opt.factor, height * opt.factor)
        if scale != opt.factor:
            check_cancel(cancel)
            out = np.asarray(Image.fromarray(out, "RGB").resize(size, Image.Resampling.LANCZOS))
        out_alpha = None
        if alpha is not None:
            check_cancel(cancel)
            # 8-bit Lanczos: clipped overshoot, no float copy of the (large) output frame
            out_alpha = np.asarray(Image.fromarray(alpha, "L").resize(size, Image.Resampling.LANCZOS))
            if not out.flags.writeable:
                out = out.copy()
            for r in range(0, size[1], ZERO_ROWS):
                out[r:r + ZERO_ROWS][out_alpha[r:r + ZERO_ROWS] == 0] = 0
        check_cancel(cancel)
        save_png(from_arrays(out, out_alpha), dst)
        return EngineResult(Path(dst), size[0], size[1], {
            "engine": self.code, "factor": opt.factor, "model": model.name, "sha256": model.entry.sha256,
            "scale": scale, "tile": tile, "overlap": overlap, "tiles": tiling.tile_count(height, width, tile),
            "providers": list(session.get_providers()), "source_width": width, "source_height": height})
