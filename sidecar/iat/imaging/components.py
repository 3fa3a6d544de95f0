"""Connected components of a boolean mask, vectorised without scipy.

The mask is cut into horizontal runs; runs on adjacent rows that touch are joined by a label propagation over
the (small) run graph with pointer jumping. Clean cutout masks have a few thousand runs, so labelling a
1024x1024 mask costs a few milliseconds; salt-and-pepper masks have many more runs but still label in well under
a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Components:
    labels: np.ndarray   # int32 HxW, 0 outside the mask, 1..count inside
    count: int
    areas: np.ndarray    # int64 (count + 1,), areas[0] = pixels outside the mask
    touches_border: np.ndarray  # bool (count + 1,)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, end) of every run of True, sorted by row then start; end is exclusive."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rs, cs = np.nonzero(d == 1)
    _, ce = np.nonzero(d == -1)
    return rs.astype(np.int64), cs.astype(np.int64), ce.astype(np.int64)


def label(mask: np.ndarray, *, connectivity: int = 8) -> Components:
    """Labels the True pixels of `mask` (4- or 8-connected)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    rows, starts, ends = _runs(mask)
    n = len(rows)
    if n == 0:
        return Components(np.zeros((h, w), np.int32), 0, np.array([h * w], np.int64), np.zeros(1, bool))
    stride = w + 2
    skey = rows * stride + starts
    ekey = rows * stride + ends
    # Runs of the next row that touch run i form a contiguous index range [lo, hi).
    slack = 1 if connectivity == 8 else 0
    lo = np.searchsorted(ekey, (rows + 1) * stride + starts - slack, side="right")
    hi = np.searchsorted(skey, (rows + 1) * stride + ends + slack, side="left")
    counts = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    b = np.repeat(lo, counts) + offsets
    lab = np.arange(n)
    while len(a):
        # Hook the larger root of every edge under the smaller, flatten, and drop the edges already joined.
        ra, rb = lab[a], lab[b]
        np.minimum.at(lab, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = lab[lab]
            if np.array_equal(jumped, lab):
                break
            lab = jumped
        live = lab[a] != lab[b]
        a, b = a[live], b[live]
    roots, run_label = np.unique(lab, return_inverse=True)
    run_label = run_label.astype(np.int32) + 1
    count = len(roots)
    lengths = ends - starts
    # Paint each run: +label at its start, -label just past its end (never another run's start, runs are
    # separated by a gap), then a cumulative sum along the row.
    flat = np.zeros(h * (w + 1), dtype=np.int32)
    flat[rows * (w + 1) + starts] = run_label
    flat[rows * (w + 1) + ends] = -run_label
    labels = np.cumsum(flat.reshape(h, w + 1), axis=1, dtype=np.int32)[:, :w]
    areas = np.bincount(run_label, weights=lengths, minlength=count + 1).astype(np.int64)
    areas[0] = h * w - int(lengths.sum())
    touches = np.zeros(count + 1, dtype=bool)
    edge_run = (rows == 0) | (rows == h - 1) | (starts == 0) | (ends == w)
    touches[run_label[edge_run]] = True
    return Components(labels, count, areas, touches)


def remove_small(mask: np.ndarray, min_area: int, *, connectivity: int = 8) -> np.ndarray:
    """`mask` without its components smaller than `min_area` pixels."""
    mask = np.asarray(mask, dtype=bool)
    if min_area <= 1:
        return mask.copy()
    comp = label(mask, connectivity=connectivity)
    keep = comp.areas >= min_area
    keep[0] = False
    return keep[comp.labels]


def fill_holes(mask: np.ndarray, max_area: int | None = None) -> np.ndarray:
    """`mask` with its holes filled: components of the complement that do not touch the border, all of them or
    those up to `max_area` pixels. The complement is 4-connected, the dual of an 8-connected mask."""
    mask = np.asarray(mask, dtype=bool)
    comp = label(~mask, connectivity=4)
    hole = ~comp.touches_border
    if max_area is not None:
        hole &= comp.areas <= max_area
    hole[0] = False
    return mask | hole[comp.labels]
