"""Tiled inference for image-to-image models that upscale by an integer factor (super-resolution), in bounded
memory, with an output equal to whole-frame inference within a small tolerance.

Geometry, per axis: the image is cut into n = ceil(size / tile) cores of equal size (+-1 px, so never a sliver
at the edge); each tile is its core plus `overlap` px of context on each side (clamped at the image border), and
the model sees one tile at a time (batch 1). Two neighbouring tiles share 2*overlap input px around their seam.
Their outputs are blended there with weights that form a partition of unity: the left tile's weight is 1 up to
overlap/2 before the seam, falls on a cosine ramp to 0 at overlap/2 after it, and the right tile's weight is its
complement. So each tile's outermost overlap/2 px (where zero padding at the tile's edge changes what the model
computes) carry no weight, and a model whose receptive field reaches at most overlap/2 input px gives exactly the
whole-frame output (up to float rounding); a wider field leaves differences that the ramp spreads into a smooth,
small blend instead of a seam. In 2-D the weight is the product of the two axes' weights, which sums to 1 too.

Memory: the input stays uint8 and each tile is turned into float on its own. Tile rows are processed as bands:
a float accumulator holds only the output rows the current band touches (about (tile + overlap) * scale rows of
the full output width); rows that no later band touches are finished and written straight into the uint8 output.
Peak float memory is one band plus one tile's input and output, never the frame.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iat.cancel import check_cancel

# float32 [1, 3, h, w] in [0, 1] -> float32 [1, 3, h * scale, w * scale]
TileFn = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]   # (tiles done, tiles in all), after each tile


@dataclass(frozen=True)
class Span:
    """One tile along one axis: its input extent [lo, hi) and its weights over the output px [lo*s, hi*s)."""

    lo: int
    hi: int
    weight: np.ndarray   # float32, (hi - lo) * scale values
    nz_lo: int           # the output px where its weight is nonzero: [nz_lo, nz_hi), in output coordinates
    nz_hi: int


def cores(size: int, tile: int) -> list[int]:
    """The core boundaries along an axis: n + 1 values from 0 to size, cores of equal size (+-1)."""
    n = max(1, math.ceil(size / tile))
    return [k * size // n for k in range(n + 1)]


def _ramp(u: np.ndarray, seam: float, overlap: int) -> np.ndarray:
    """Rises from 0 at seam - overlap/2 to 1 at seam + overlap/2 (a step at the seam when overlap is 0)."""
    if overlap == 0:
        return (u >= seam).astype(np.float64)
    t = np.clip((u - (seam - overlap / 2)) / overlap, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def spans(size: int, tile: int, overlap: int, scale: int) -> list[Span]:
    """The tiles along one axis (see the module docstring)."""
    if tile < 1 or overlap < 0 or scale < 1:
        raise ValueError("tile and scale must be >= 1 and overlap >= 0")
    if 2 * overlap > tile:
        raise ValueError(f"overlap {overlap} is more than half the tile {tile}: the blend ramps of a tile's two "
                         "seams would meet")
    bounds = cores(size, tile)
    out = []
    for k in range(len(bounds) - 1):
        lo, hi = max(0, bounds[k] - overlap), min(size, bounds[k + 1] + overlap)
        u = (np.arange(lo * scale, hi * scale, dtype=np.float64) + 0.5) / scale   # output px centres, input units
        w = np.ones_like(u)
        if k > 0:
            w *= _ramp(u, bounds[k], overlap)
        if k < len(bounds) - 2:
            w *= 1.0 - _ramp(u, bounds[k + 1], overlap)
        nz = np.flatnonzero(w > 0)
        out.append(Span(lo, hi, w.astype(np.float32), lo * scale + int(nz[0]), lo * scale + int(nz[-1]) + 1))
    return out


def tile_count(height: int, width: int, tile: int) -> int:
    return (len(cores(height, tile)) - 1) * (len(cores(width, tile)) - 1)


def to_input(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 [1, 3, H, W] in [0, 1]."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def _store(dst: np.ndarray, src: np.ndarray) -> None:
    """Float HxWx3 values into `dst`: rounded to uint8 levels, or copied as they are into a float array."""
    if dst.dtype == np.uint8:
        np.clip(src, 0.0, 1.0, out=src)
        src *= 255.0
        src += 0.5
        np.floor(src, out=src)
        dst[...] = src
    else:
        dst[...] = src


def _run(fn: TileFn, x: np.ndarray, scale: int) -> np.ndarray:
    """The model on one tile, as float32 HxWx3 of the expected size."""
    y = fn(x)
    want = (1, 3, x.shape[2] * scale, x.shape[3] * scale)
    if tuple(y.shape) != want:
        raise ValueError(f"the model returned {list(y.shape)} for a {list(x.shape)} input, not {list(want)}")
    return np.asarray(y[0], dtype=np.float32).transpose(1, 2, 0)


def upscale_tiled(rgb: np.ndarray, fn: TileFn, scale: int, *, tile: int = 256, overlap: int = 16,
                  out: np.ndarray | None = None, cancel: threading.Event | None = None,
                  progress: Progress | None = None) -> np.ndarray:
    """Runs `fn` tile by tile over a uint8 HxWx3 image and blends the outputs into `out` (default: a new uint8
    (H*scale)x(W*scale)x3 array; a float32 one receives the blended values unrounded). Cancel is checked before
    each tile, `progress` called after each."""
    h, w = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got {list(rgb.shape)}")
    oh, ow = h * scale, w * scale
    if out is None:
        out = np.empty((oh, ow, 3), dtype=np.uint8)
    if out.shape != (oh, ow, 3):
        raise ValueError(f"out is {list(out.shape)}, not {[oh, ow, 3]}")
    rows, cols = spans(h, tile, overlap, scale), spans(w, tile, overlap, scale)
    total, done = len(rows) * len(cols), 0
    band_rows = max(r.nz_hi - r.nz_lo for r in rows)
    acc = np.zeros((band_rows, ow, 3), dtype=np.float32)   # output rows [acc_lo, acc_lo + band_rows)
    acc_lo = 0
    for k, row in enumerate(rows):
        for col in cols:
            check_cancel(cancel)
            y = _run(fn, to_input(rgb[row.lo:row.hi, col.lo:col.hi]), scale)
            # Only the rows and columns where this tile's weight is nonzero: the rest adds nothing.
            r0, r1 = row.nz_lo - row.lo * scale, row.nz_hi - row.lo * scale
            c0, c1 = col.nz_lo - col.lo * scale, col.nz_hi - col.lo * scale
            part = y[r0:r1, c0:c1]
            part *= row.weight[r0:r1, None, None]
            part *= col.weight[None, c0:c1, None]
            acc[row.nz_lo - acc_lo:row.nz_hi - acc_lo, col.nz_lo:col.nz_hi] += part
            del y, part
            done += 1
            if progress:
                progress(done, total)
        # Rows no later band reaches are finished: write them out, carry the rest to the top of the accumulator.
        finished = rows[k + 1].nz_lo if k + 1 < len(rows) else oh
        n = finished - acc_lo
        _store(out[acc_lo:finished], acc[:n])
        carry = row.nz_hi - finished
        if carry > 0:
            acc[:carry] = acc[n:n + carry]
        acc[max(carry, 0):] = 0.0
        acc_lo = finished
    return out


def upscale_whole(rgb: np.ndarray, fn: TileFn, scale: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """The same model on the whole frame at once: the reference the tiled output is checked against."""
    y = _run(fn, to_input(rgb), scale)
    if out is None:
        out = np.empty(y.shape, dtype=np.uint8)
    _store(out, y)
    return out
