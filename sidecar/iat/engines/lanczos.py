"""`lanczos`: the model-free upscaler, Pillow's Lanczos filter behind the engine interface the ONNX upscaler
will share.

Transparency: the colour channels are premultiplied by alpha before resampling and divided back after, so the
colour of fully transparent pixels (often black or leftover backdrop) never bleeds into the edges as a dark or
coloured halo. Lanczos overshoot is clipped. An image without alpha stays without alpha.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from iat.engines.base import EngineContext, EngineResult, EngineStatus, check_cancel, parse_options
from iat.errors import InvalidParams
from iat.imaging.io import from_arrays, open_image, save_png, to_arrays

MAX_SIDE = 16384   # the largest output side we write: beyond it the PNG and its memory are not reasonable


class LanczosOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: Literal[2, 3, 4] = 2


def _resize_channel(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(channel.astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS))


def upscale(rgb: np.ndarray, alpha: np.ndarray | None, factor: int, *,
            cancel: threading.Event | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Lanczos upscale of uint8 arrays; with alpha, in premultiplied form."""
    h, w = rgb.shape[:2]
    size = (w * factor, h * factor)
    if alpha is None:
        return np.asarray(Image.fromarray(rgb, "RGB").resize(size, Image.Resampling.LANCZOS)), None
    a = alpha.astype(np.float32) / 255.0
    a_raw = _resize_channel(a, size)
    a_up = np.clip(a_raw, 0.0, 1.0)
    out = np.empty((size[1], size[0], 3), dtype=np.uint8)
    safe = np.maximum(a_raw, 1e-6)   # divide by the alpha the colours were resampled with, overshoot included
    for ch in range(3):
        check_cancel(cancel)
        premult = rgb[..., ch].astype(np.float32) * a
        colour = np.clip(_resize_channel(premult, size) / safe, 0.0, 255.0)
        out[..., ch] = np.floor(colour + 0.5).astype(np.uint8)
    alpha8 = np.floor(a_up * 255.0 + 0.5).astype(np.uint8)
    out[alpha8 == 0] = 0
    return out, alpha8


class LanczosEngine:
    code: ClassVar[str] = "lanczos"
    op: ClassVar[str] = "upscale"

    def available(self, ctx: EngineContext | None = None) -> EngineStatus:
        return EngineStatus(True, "")

    def process(self, src: Path, dst: Path, options: dict[str, Any] | None = None, *,
                cancel: threading.Event | None = None, ctx: EngineContext | None = None) -> EngineResult:
        opt = parse_options(LanczosOptions, options, self.code)
        img = open_image(src)
        if max(img.size) * opt.factor > MAX_SIDE:
            raise InvalidParams(f"upscaling {img.size[0]}x{img.size[1]} by {opt.factor} exceeds {MAX_SIDE} px",
                                details={"width": img.size[0], "height": img.size[1], "factor": opt.factor,
                                         "max_side": MAX_SIDE})
        rgb, alpha = to_arrays(img)
        check_cancel(cancel)
        out_rgb, out_alpha = upscale(rgb, alpha, opt.factor, cancel=cancel)
        check_cancel(cancel)
        save_png(from_arrays(out_rgb, out_alpha), dst)
        h, w = out_rgb.shape[:2]
        return EngineResult(Path(dst), w, h, {"engine": self.code, "factor": opt.factor,
                                              "source_width": img.size[0], "source_height": img.size[1]})
