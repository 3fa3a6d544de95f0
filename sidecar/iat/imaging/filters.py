"""Small neighbourhood filters with numpy only: box sums through an integral image, and binary dilation and
erosion by array shifts. Edges are treated as outside (zero / False)."""

from __future__ import annotations

import numpy as np


def _window_sum_1d(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Sum over a 2r+1 window along one axis, zero outside: shifted adds for small windows, else a cumsum."""
    n = a.shape[axis]
    if radius <= 4:
        out = a.copy()
        for k in range(1, radius + 1):
            if k >= n:
                break
            src_hi = [slice(None)] * a.ndim
            dst_lo = [slice(None)] * a.ndim
            src_hi[axis], dst_lo[axis] = slice(k, None), slice(0, n - k)
            out[tuple(dst_lo)] += a[tuple(src_hi)]
            out[tuple(src_hi)] += a[tuple(dst_lo)]
        return out
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(a, pad), axis=axis, dtype=np.float64)
    hi = [slice(None)] * a.ndim
    lo = [slice(None)] * a.ndim
    hi[axis], lo[axis] = slice(2 * radius + 1, 2 * radius + 1 + n), slice(0, n)
    return (c[tuple(hi)] - c[tuple(lo)]).astype(a.dtype)


def box_sum(arr: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the (2r+1)x(2r+1) window around each pixel (zero outside); arr is HxW or HxWxC (float32 out),
    computed separably."""
    a = np.asarray(arr, dtype=np.float32)
    if radius <= 0:
        return a.copy()
    return _window_sum_1d(_window_sum_1d(a, radius, 0), radius, 1)


def box_mean(arr: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the window, normalised by the pixels inside the image (so edges are not darkened)."""
    a = np.asarray(arr, dtype=np.float32)
    h, w = a.shape[:2]
    cy = _window_sum_1d(np.ones(h, np.float32), radius, 0)
    cx = _window_sum_1d(np.ones(w, np.float32), radius, 0)
    counts = np.outer(cy, cx)
    if a.ndim == 3:
        counts = counts[..., None]
    return box_sum(a, radius) / counts


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary dilation by a (2r+1) square, as r passes of the 8-neighbourhood."""
    m = np.asarray(mask, dtype=bool)
    for _ in range(radius):
        out = m.copy()
        out[1:, :] |= m[:-1, :]
        out[:-1, :] |= m[1:, :]
        row = out.copy()
        out[:, 1:] |= row[:, :-1]
        out[:, :-1] |= row[:, 1:]
        m = out
    return m


def erode(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary erosion by a (2r+1) square; pixels outside the image count as set (no erosion from the border)."""
    return ~dilate(~np.asarray(mask, dtype=bool), radius)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (the inner boundary; the image edge does not count)."""
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner
