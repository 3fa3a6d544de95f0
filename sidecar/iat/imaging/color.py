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
from iat.imaging.oklab import (chroma, hex_to_oklab, hex_to_rgb8, linear_to_oklab, linear_to_srgb, oklab_to_linear,
                               oklab_to_srgb8, srgb8_to_oklab, srgb_to_linear)

_Y = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)   # linear-light luminance weights (sRGB primaries)


class ColorCorrection(BaseModel):
    """Options of `correct_colors`; a style guide supplies `palette` and `max_chroma`."""

    model_config = ConfigDict(extra="forbid")

    palette: list[str] = Field(default_factory=list, max_length=64, description="hex colours; empty: no matching")
    palette_strength: float = Field(0.3, ge=0, le=1, description="0 keeps hues, 1 snaps (a, b) to the palette")
    max_chroma: float | None = Field(None, gt=0, le=0.5, description="OKLab chroma limit; None: no clamp")
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


def match_palette(lab: np.ndarray, palette_lab: np.ndarray, strength: float, *, chunk: int = 262144) -> np.ndarray:
    """(n, 3) OKLab pixels with (a, b) pulled toward their nearest palette colour's (a, b) by `strength`."""
    out = lab.copy()
    if strength <= 0 or len(palette_lab) == 0:
        return out
    w = np.array([0.5, 1.0, 1.0], dtype=np.float32)   # lightness at half weight when choosing the nearest
    pal = palette_lab.astype(np.float32) * w
    pal_sq = (pal * pal).sum(-1)
    for start in range(0, len(lab), chunk):
        x = lab[start:start + chunk] * w
        nearest = np.argmin(pal_sq[None, :] - 2.0 * (x @ pal.T), axis=1)
        target = palette_lab[nearest, 1:].astype(np.float32)
        out[start:start + chunk, 1:] += strength * (target - out[start:start + chunk, 1:])
    return out


def clamp_chroma(lab: np.ndarray, max_chroma: float) -> np.ndarray:
    """(n, 3) OKLab with chroma scaled down to at most `max_chroma`, L and hue kept."""
    c = chroma(lab)
    scale = np.minimum(1.0, max_chroma / np.maximum(c, 1e-9)).astype(np.float32)
    out = lab.copy()
    out[:, 1:] *= scale[:, None]
    return out


def _to_srgb8_within(lab: np.ndarray, max_chroma: float | None) -> np.ndarray:
    """OKLab -> uint8, re-pulling any pixel whose rounded colour lands over `max_chroma`."""
    rgb8 = oklab_to_srgb8(lab)
    if max_chroma is None:
        return rgb8
    for shrink in (0.995, 0.98, 0.95, 0.9):
        over = chroma(srgb8_to_oklab(rgb8)) > max_chroma
        if not over.any():
            break
        rgb8[over] = oklab_to_srgb8(clamp_chroma(lab[over], max_chroma * shrink))
    return rgb8


def correct_arrays(rgb: np.ndarray, alpha: np.ndarray | None,
                   opts: ColorCorrection) -> tuple[np.ndarray, dict[str, Any]]:
    """Corrects uint8 sRGB pixels (HxWx3, alpha HxW or None); returns the new RGB and facts about the change."""
    shape = rgb.shape
    flat = rgb.reshape(-1, 3)
    visible = None if alpha is None else alpha.reshape(-1) >= 128
    linear = srgb_to_linear(flat.astype(np.float32) / 255.0)
    lab_in = linear_to_oklab(linear)
    gains = np.ones(3, dtype=np.float32)
    if opts.white_balance != "none" and opts.white_balance_strength > 0:
        gains = white_balance_gains(linear, visible, opts.white_balance, opts.white_balance_strength,
                                    opts.max_gain)
        linear = np.clip(linear * gains, 0.0, 1.0)
    lab = linear_to_oklab(linear)
    if opts.palette:
        lab = match_palette(lab, hex_to_oklab(opts.palette), opts.palette_strength)
    if opts.max_chroma is not None:
        lab = clamp_chroma(lab, opts.max_chroma)
    out = _to_srgb8_within(lab, opts.max_chroma)
    sel = slice(None) if visible is None else visible
    c_in, c_out = chroma(lab_in[sel]), chroma(srgb8_to_oklab(out[sel]))
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
           "white_balance_gains", "linear_to_srgb", "oklab_to_linear"]
