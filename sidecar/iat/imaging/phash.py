"""Perceptual hash (DCT pHash, as in the `imagehash` package) and Hamming distance, numpy only.

The image (alpha composited over mid-grey, so a cut-out hashes by its silhouette and colours) is reduced to
32x32 greyscale with Lanczos, transformed with an orthonormal 2-D DCT-II (two 32x32 matrix products), and the
8x8 lowest frequencies are compared with their median: 64 bits, written as 16 hex digits. Re-encoding, mild
resizing or colour shifts move a few bits; a different picture differs in ~32. Two images whose hashes differ
in <= ~6 bits look alike.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_N = 32
_k = np.arange(_N)[:, None]
_n = np.arange(_N)[None, :]
_DCT = np.sqrt(2.0 / _N) * np.cos(np.pi * (2 * _n + 1) * _k / (2 * _N))
_DCT[0, :] = np.sqrt(1.0 / _N)


def phash(img: Image.Image) -> str:
    """64-bit pHash of a PIL image as 16 lowercase hex digits."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        img = Image.alpha_composite(base, rgba)
    grey = np.asarray(img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS), dtype=np.float64)
    coeffs = _DCT @ grey @ _DCT.T
    low = coeffs[:8, :8]
    bits = (low > np.median(low)).ravel()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hashes of the same length (hex strings)."""
    if len(a) != len(b):
        raise ValueError("hashes of different lengths")
    return (int(a, 16) ^ int(b, 16)).bit_count()
