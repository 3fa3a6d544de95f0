"""sRGB <-> OKLab (Björn Ottosson, 2020), vectorised, float32.

OKLab is the perceptual space every colour distance, chroma and palette operation here uses:
- L (lightness) runs 0 (black) .. 1 (white); sRGB mid-grey #808080 is L ~0.60.
- a (green-red) and b (blue-yellow) are ~0 for neutrals. Chroma C = sqrt(a^2 + b^2): 0 for greys, ~0.05 for
  muted colours, ~0.10-0.15 for vivid illustration colours, 0.26-0.32 for the sRGB primaries (red 0.258,
  blue 0.313, magenta 0.322). Euclidean distance in OKLab ~0.02 is a just-noticeable difference.
Arrays are (..., 3); 8-bit input goes through a lookup table for the sRGB transfer curve.
"""

from __future__ import annotations

import numpy as np

_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                [0.2119034982, 0.6806995451, 0.1073969566],
                [0.0883024619, 0.2817188376, 0.6299787005]], dtype=np.float64)
_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                [1.9779984951, -2.4285922050, 0.4505937099],
                [0.0259040371, 0.7827717662, -0.8086757660]], dtype=np.float64)
_M1_INV = np.linalg.inv(_M1)
_M2_INV = np.linalg.inv(_M2)
_M1_32, _M2_32 = _M1.astype(np.float32), _M2.astype(np.float32)
_M1_INV_32, _M2_INV_32 = _M1_INV.astype(np.float32), _M2_INV.astype(np.float32)


def _apply(m: np.ndarray, x: np.ndarray) -> np.ndarray:
    """m @ pixel for every pixel of x (..., 3). Written out per channel: a (n, 3) @ (3, 3) matmul goes through
    BLAS at a small fraction of this speed, and this order of operations is the same on every machine."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    c0, c1, c2 = x[..., 0], x[..., 1], x[..., 2]
    for k in range(3):
        out[..., k] = c0 * m[k, 0] + c1 * m[k, 1] + c2 * m[k, 2]
    return out


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB in 0..1 -> linear light (float32)."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB in 0..1 (float32), clipped to the gamut."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


_LUT8 = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)


def linear_to_oklab(rgb: np.ndarray) -> np.ndarray:
    return _apply(_M2_32, np.cbrt(_apply(_M1_32, rgb)))


def oklab_to_linear(lab: np.ndarray) -> np.ndarray:
    lms = _apply(_M2_INV_32, lab)
    return _apply(_M1_INV_32, lms * lms * lms)


def srgb8_to_oklab(rgb8: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> OKLab float32 (..., 3)."""
    return linear_to_oklab(_LUT8[np.asarray(rgb8, dtype=np.uint8)])


def srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """float sRGB in 0..1 (..., 3) -> OKLab."""
    return linear_to_oklab(srgb_to_linear(rgb))


def oklab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """OKLab -> float sRGB in 0..1, clipped to the gamut."""
    return linear_to_srgb(oklab_to_linear(lab))


def oklab_to_srgb8(lab: np.ndarray) -> np.ndarray:
    """OKLab -> uint8 sRGB, rounded half up (deterministic)."""
    return np.floor(oklab_to_srgb(lab) * 255.0 + 0.5).astype(np.uint8)


def chroma(lab: np.ndarray) -> np.ndarray:
    """OKLab chroma sqrt(a^2 + b^2) of (..., 3) -> (...)."""
    lab = np.asarray(lab, dtype=np.float32)
    return np.hypot(lab[..., 1], lab[..., 2])


def hex_to_rgb8(color: str) -> tuple[int, int, int]:
    """'#RRGGBB' or 'RRGGBB' (or the 3-digit forms) -> (r, g, b); ValueError otherwise."""
    s = color.strip().lstrip("#")
    if len(s) == 3:
        s = "".join(ch * 2 for ch in s)
    if len(s) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in s):
        raise ValueError(f"not a hex colour: {color!r}")
    return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)


def rgb8_to_hex(rgb) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def hex_to_oklab(colors: list[str]) -> np.ndarray:
    """A list of hex colours -> (n, 3) OKLab."""
    return srgb8_to_oklab(np.array([hex_to_rgb8(c) for c in colors], dtype=np.uint8).reshape(-1, 3))
