"""Colour correction toward a style guide: white balance, palette matching in OKLab, chroma clamp.

All three keep each pixel's lightness where they can and never touch alpha. Chroma is OKLab chroma
sqrt(a^2 + b^2) (scale in `iat.imaging.oklab`: ~0 neutral, ~0.05 muted, 0.10-0.15 vivid, up to 0.32 for sRGB
primaries); `max_chroma` of a style guide is on that scale.

- White balance (linear light, statistics over visible pixels only, near-clipped pixels ignored):
  `gray_world` scales the channels so their means become equal, `white_patch` so their 99th percentiles do;
  the target grey keeps the luminance of the measured means, the gains are raised to `strength` and bounded to
  [1/max_gain, max_gain], so a scene that really is warm is tempered, never inverted.
- Palette matching: each pixel's (a, b) moves toward the (a, b) of its nearest palette colour by `strength`
  (nearest in OKLab with lightness at half weight, so a shadow of a red still finds the red); L is kept.
- Chroma clamp: (a, b) scaled down to `max_chroma` at constant L and hue; pixels the 8-bit rounding pushes back
  over the limit are pulled in again, so the output's chroma never exceeds it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from iat.imaging.io import from_arrays, to_arrays
from iat.imaging.oklab import (chroma, hex_to_oklab, hex_to_rgb8, linear_to_oklab, oklab_to_srgb8, srgb8_to_oklab,
                               srgb_to_linear)

_Y = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)   # linear-light luminance weights (sRGB primaries)


class ColorCorrection(BaseModel):
    """Options of `correct_colors`; a style guide supplies `palette` and `max_chroma`."""

    model_config = ConfigDict(extra="forbid")

    palette: list[str] = Field(default_factory=list, max_length=64, description="hex colours; empty: no matching")
    palette_strength: float = Field(0.3, ge=0, le=1, description="0 keeps hues, 1 snaps (a, b) to the palette")
    max_chroma: float | None = Field(None, ge=0, le=0.5, description="OKLab chroma limit (0: greys only); None: no clamp")
    white_balance: Literal["none", "gray_world", "white_patch"] = "gray_world"
    white_balance_strength: float = Field(1.0, ge=0, le=1)
    max_gain: float = Field(1.5, ge=1, le=4, description="bound on each channel's white-balance gain")

    @field_validator("palette")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        for c in v:
            hex_to_rgb8(c)
        return v


def white_balance_gains(linear: np.ndarray, weight: np.ndarray | None, method: str, strength: float,
                        max_gain: float) -> np.ndarray:
    """Per-channel gains (3,) for linear-light pixels (n, 3); `weight` selects the pixels that count."""
    px = linear if weight is None else linear[weight]
    px = px[(px.max(axis=1) < 0.99) & (px.max(axis=1) > 0.002)]   # clipped highlights and black say nothing
    if len(px) < 16:
        return np.ones(3, dtype=np.float32)
    ref = px.mean(axis=0) if method == "gray_world" else np.percentile(px, 99, axis=0)
    ref = np.maximum(ref, 1e-6)
    grey = float(ref @ _Y)
    gains = (grey / ref) ** strength
    return np.clip(gains, 1.0 / max_gain, max_gain).astype(np.float32)


def match_palette(lab: np.ndarray, palette_lab: np.ndarray, strength: float) -> np.ndarray:
    """(n, 3) OKLab pixels with (a, b) pulled toward their nearest palette colour's (a, b) by `strength`."""
    out = np.array(lab, dtype=np.float32, copy=True)
    if strength <= 0 or len(palette_lab) == 0:
        return out
    # Nearest palette colour with lightness at half weight, one palette colour at a time on contiguous planes
    # (a (n, 3) @ (3, p) product goes through BLAS's slow path for such thin matrices).
    L, a, b = (np.ascontiguousarray(out[:, k]) for k in range(3))
    best = np.full(len(out), np.inf, dtype=np.float32)
    nearest = np.zeros(len(out), dtype=np.int32)
    for i, (pl, pa, pb) in enumerate(np.asarray(palette_lab, dtype=np.float32)):
        d = 0.25 * (L - pl) ** 2 + (a - pa) ** 2 + (b - pb) ** 2
        closer = d < best
        best[closer] = d[closer]
        nearest[closer] = i
    target = np.asarray(palette_lab, dtype=np.float32)[nearest]
    out[:, 1:] += strength * (target[:, 1:] - out[:, 1:])
    return out


def clamp_chroma(lab: np.ndarray, max_chroma: float) -> np.ndarray:
    """(n, 3) OKLab with chroma scaled down to at most `max_chroma`, L and hue kept."""
    c = chroma(lab)
    scale = np.minimum(1.0, max_chroma / np.maximum(c, 1e-9)).astype(np.float32)
    out = lab.copy()
    out[:, 1:] *= scale[:, None]
    return out


def _to_srgb8_within(lab: np.ndarray, max_chroma: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """OKLab (n, 3) -> uint8, re-pulling the pixels whose rounded colour lands over `max_chroma` (dark pixels,
    where one 8-bit step is a large chroma step); returns the pixels and, with a limit, their final chroma."""
    rgb8 = oklab_to_srgb8(lab)
    if max_chroma is None:
        return rgb8, None
    c_out = chroma(srgb8_to_oklab(rgb8))
    idx = np.nonzero(c_out > max_chroma)[0]
    for shrink in (0.995, 0.98, 0.95, 0.9, 0.0):
        if not len(idx):
            break
        rgb8[idx] = oklab_to_srgb8(clamp_chroma(lab[idx], max_chroma * shrink))
        c_new = chroma(srgb8_to_oklab(rgb8[idx]))
        c_out[idx] = c_new
        idx = idx[c_new > max_chroma]
    return rgb8, c_out


def correct_arrays(rgb: np.ndarray, alpha: np.ndarray | None,
                   opts: ColorCorrection) -> tuple[np.ndarray, dict[str, Any]]:
    """Corrects uint8 sRGB pixels (HxWx3, alpha HxW or None); returns the new RGB and facts about the change."""
    shape = rgb.shape
    flat = rgb.reshape(-1, 3)
    visible = None if alpha is None else alpha.reshape(-1) >= 128
    linear = srgb_to_linear(flat.astype(np.float32) / 255.0)
    lab = lab_in = linear_to_oklab(linear)
    gains = np.ones(3, dtype=np.float32)
    if opts.white_balance != "none" and opts.white_balance_strength > 0:
        gains = white_balance_gains(linear, visible, opts.white_balance, opts.white_balance_strength,
                                    opts.max_gain)
        if not np.all(gains == 1.0):
            lab = linear_to_oklab(np.clip(linear * gains, 0.0, 1.0))
    if opts.palette:
        lab = match_palette(lab, hex_to_oklab(opts.palette), opts.palette_strength)
    if opts.max_chroma is not None:
        lab = clamp_chroma(lab, opts.max_chroma)
    out, c_out = _to_srgb8_within(lab, opts.max_chroma)
    if c_out is None:
        c_out = chroma(srgb8_to_oklab(out))
    c_in = chroma(lab_in)
    if visible is not None:
        c_in, c_out = c_in[visible], c_out[visible]
    facts = {"white_balance_gains": [round(float(g), 4) for g in gains],
             "chroma_max_before": round(float(c_in.max()), 4) if c_in.size else 0.0,
             "chroma_max_after": round(float(c_out.max()), 4) if c_out.size else 0.0,
             "chroma_mean_before": round(float(c_in.mean()), 4) if c_in.size else 0.0,
             "chroma_mean_after": round(float(c_out.mean()), 4) if c_out.size else 0.0}
    return out.reshape(shape), facts


def correct_colors(img: Image.Image, opts: ColorCorrection | None = None) -> tuple[Image.Image, dict[str, Any]]:
    """Colour-corrects a PIL image (alpha kept as is); returns the new image (RGB or RGBA) and the facts."""
    rgb, alpha = to_arrays(img)
    out, facts = correct_arrays(rgb, alpha, opts or ColorCorrection())
    return from_arrays(out, alpha), facts


__all__ = ["ColorCorrection", "clamp_chroma", "correct_arrays", "correct_colors", "match_palette",
           "white_balance_gains"]
