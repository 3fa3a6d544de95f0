"""Alpha matting on a trimap, with numpy and scipy only (pure functions; the refine pass in iat.engines.refine
drives them).

- `trimap`: the three-valued map (0 background, 128 unknown, 255 foreground) built from a coarse alpha the way
  rembg builds ViTMatte's: pixels above/below the thresholds are definite, both definite regions are eroded by a
  square so the unknown band covers the whole soft edge.
- `closed_form_alpha`: closed-form matting (Levin, Lischinski, Weiss 2008, "A Closed-Form Solution to Natural
  Image Matting"). Inside every 3x3 window alpha is an affine function of the colour; the matting Laplacian L
  measures how far an alpha is from that, and the matte minimises a^T L a with the trimap's definite pixels fixed.
  Only windows touching the unknown band are built, and only the band's unknowns are solved:
  L_UU a_U = -L_UK a_K, by scipy's conjugate gradients warm-started from the coarse alpha, preconditioned by a
  near-complete incomplete LU (Jacobi where that fails). Bounded: when the band has more unknown pixels than
  `max_unknown`, the system is solved on the image shrunk by an integer factor and brought back into the band
  through the solution's local affine colour models; CG stops at `max_iter` or at the `deadline` and returns its
  last iterate (CG's error in the A-norm falls with every iteration, so the last is the best); a deadline reached
  before the solve leaves the coarse alpha in the band.
- `estimate_foreground`: the foreground colour of semi-transparent pixels (Forte & Pitie 2021, "Approximate Fast
  Foreground Colour Estimation", blur fusion): two passes of box-filtered, alpha-weighted means of the foreground
  and background colours, then each pixel's residual put back on the foreground. A soft edge's colour loses the
  background it was blended with, so the cut-out shows no fringe on another backdrop.

Images are uint8 RGB (HxWx3) or float RGB in [0, 1]; alphas float in [0, 1] or uint8.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from scipy.ndimage import binary_erosion

from iat.cancel import check_cancel
from iat.imaging import filters

BG, UNKNOWN, FG = 0, 128, 255
EPSILON = 1e-7           # the regulariser of each window's colour covariance (Levin et al.'s and pymatting's)
MAX_UNKNOWN = 120_000    # unknown pixels solved at full size; above it the solve runs on a shrunk image
WINDOWS_PER_CHUNK = 16_384   # windows assembled at once: bounds the Laplacian's scratch memory (~30 MB)
ILU_DROP_TOL, FILL_FACTOR = 1e-5, 6   # the preconditioner: memory at most ~6x the Laplacian's (~200 MB at the cap)
ILU_ITERATIONS = 25      # CG with the ILU converges in 1-3 iterations; still going after this many, Jacobi takes over
UPSAMPLE_EPS = 1e-4      # the affine maps' regulariser when a shrunk solve is brought back (as a guided filter's)


def _unit(a: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Colours or alpha in [0, 1] as floats (uint8 is divided by 255)."""
    a = np.asarray(a)
    return a.astype(dtype) / dtype(255.0) if a.dtype == np.uint8 else a.astype(dtype, copy=False)


# --- the trimap ---


def trimap(alpha: np.ndarray, *, foreground_threshold: int = 240, background_threshold: int = 10,
           erode_size: int = 10) -> np.ndarray:
    """uint8 HxW: 255 definite foreground, 0 definite background, 128 the unknown band, exactly as rembg's
    trimap_from_mask: alpha8 above the foreground threshold and below the background threshold are definite, each
    eroded by an erode_size square (the foreground also from the image border, the background not)."""
    a = np.asarray(alpha)
    a8 = a if a.dtype == np.uint8 else (np.clip(a, 0, 1) * 255).astype(np.uint8)
    # As rembg: erode_size 0 is scipy's default structure (the 3x3 cross), i.e. still one pixel of erosion.
    structure = np.ones((erode_size, erode_size), dtype=bool) if erode_size > 0 else None
    fg = binary_erosion(a8 > foreground_threshold, structure=structure)
    bg = binary_erosion(a8 < background_threshold, structure=structure, border_value=1)
    out = np.full(a8.shape, UNKNOWN, dtype=np.uint8)
    out[fg] = FG
    out[bg] = BG
    return out


# --- closed-form matting ---


@dataclass
class Solve:
    """What `closed_form_alpha` did."""

    unknown: int         # unknown pixels of the trimap at full size
    solved: int          # unknowns of the system actually solved (at the solve's scale)
    scale: int           # the image was shrunk by this factor for the solve (1: full size)
    iterations: int
    converged: bool
    hit_deadline: bool   # the deadline (or max_iter) stopped the work before convergence
    residual: float      # relative residual |b - A x| / |b| of the returned iterate (nan when nothing was solved)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stop(Exception):
    pass


def _laplacian_system(rgb: np.ndarray, known_alpha: np.ndarray, unknown: np.ndarray, eps: float,
                      deadline: float | None) -> tuple[scipy.sparse.csr_matrix, np.ndarray] | None:
    """L_UU and -L_UK a_K over the windows (3x3, inside the image) that touch an unknown pixel; None when the
    deadline passes while building. Only the windows' pixels are converted to float."""
    h, w = unknown.shape
    n = int(unknown.sum())
    index = np.full(h * w, -1, dtype=np.int64)
    index[np.flatnonzero(unknown)] = np.arange(n)
    centres = filters.dilate(unknown, 1)
    centres[0, :] = centres[-1, :] = centres[:, 0] = centres[:, -1] = False
    ky, kx = np.nonzero(centres)
    offsets = np.array([dy * w + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=np.int64)
    flat_rgb = rgb.reshape(-1, rgb.shape[-1])
    flat_known = known_alpha.ravel()
    rhs = np.zeros(n)
    parts = []
    eye = np.eye(3) * (eps / 9.0)
    for start in range(0, len(ky), WINDOWS_PER_CHUNK):
        if deadline is not None and time.monotonic() >= deadline:
            return None
        pix = (ky[start:start + WINDOWS_PER_CHUNK] * w + kx[start:start + WINDOWS_PER_CHUNK])[:, None] + offsets
        colours = _unit(flat_rgb[pix][..., :3])                    # (k, 9, 3)
        dev = colours - colours.mean(axis=1, keepdims=True)
        cov = np.einsum("kia,kib->kab", dev, dev) / 9.0 + eye
        g = dev @ np.linalg.inv(cov)                               # (k, 9, 3)
        values = -(1.0 + np.einsum("kia,kja->kij", g, dev)) / 9.0  # (k, 9, 9)
        values[:, np.arange(9), np.arange(9)] += 1.0
        rows = index[pix]                                          # (k, 9)
        ri = np.broadcast_to(rows[:, :, None], values.shape)
        cj = np.broadcast_to(rows[:, None, :], values.shape)
        both = (ri >= 0) & (cj >= 0)
        parts.append(scipy.sparse.coo_matrix((values[both], (ri[both], cj[both])), shape=(n, n)).tocsr())
        # A known neighbour's term moves to the right-hand side: -L_UK a_K.
        side = (ri >= 0) & (cj < 0)
        kcol = np.broadcast_to(pix[:, None, :], values.shape)[side]
        np.add.at(rhs, ri[side], -values[side] * flat_known[kcol])
    matrix = parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])
    return matrix.tocsr(), rhs


def _ilu(matrix: scipy.sparse.csr_matrix) -> scipy.sparse.linalg.LinearOperator | None:
    """An incomplete LU of L_UU close to a complete one (a symmetric ordering, no pivoting, fill capped at
    FILL_FACTOR times the matrix): with a sparser ILU, matting Laplacians give an indefinite preconditioner that CG
    does not converge with, while with this one it converges in a few iterations. None when SuperLU fails."""
    try:
        ilu = scipy.sparse.linalg.spilu(matrix.tocsc(), drop_tol=ILU_DROP_TOL, fill_factor=FILL_FACTOR,
                                        permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                        options={"SymmetricMode": True})
    except RuntimeError:   # an exactly singular pivot
        return None
    return scipy.sparse.linalg.LinearOperator(matrix.shape, ilu.solve)


def _jacobi(matrix: scipy.sparse.csr_matrix) -> scipy.sparse.linalg.LinearOperator:
    inv = 1.0 / np.maximum(matrix.diagonal(), 1e-12)
    return scipy.sparse.linalg.LinearOperator(matrix.shape, lambda r: inv * r)


def _residual(matrix, rhs: np.ndarray, x: np.ndarray) -> float:
    norm = float(np.linalg.norm(rhs))
    r = float(np.linalg.norm(rhs - matrix @ x))
    return r / norm if norm else r


def _cg(matrix, rhs: np.ndarray, x0: np.ndarray, *, max_iter: int, rtol: float, deadline: float | None,
        cancel: threading.Event | None, ilu_cost: float = 0.0) -> tuple[np.ndarray, int, bool, bool]:
    """Preconditioned CG from x0: the ILU first, Jacobi when there is none or CG did not converge with it.
    The factorisation cannot be stopped, so it is skipped when less than `ilu_cost` seconds are left before the
    deadline (Jacobi's iterations can be). Returns (x, iterations, converged, stopped by the deadline); x is never
    worse than x0 (residual)."""
    state: dict[str, Any] = {"x": x0, "iterations": 0, "stopped": False}

    def step(xk: np.ndarray) -> None:
        state["x"], state["iterations"] = xk, state["iterations"] + 1
        check_cancel(cancel)
        if deadline is not None and time.monotonic() >= deadline:
            state["stopped"] = True
            raise _Stop()

    def run(x: np.ndarray, precond, maxiter: int) -> bool:
        state["x"] = x
        if maxiter <= 0:
            return False
        try:
            x, info = scipy.sparse.linalg.cg(matrix, rhs, x0=x.copy(), rtol=rtol, atol=0.0, maxiter=maxiter,
                                             M=precond, callback=step)
        except _Stop:
            return False
        state["x"] = x
        return info == 0

    start = _residual(matrix, rhs, x0)
    converged = False
    if deadline is not None and time.monotonic() >= deadline:
        state["stopped"] = True
    elif max_iter > 0:
        ilu = _ilu(matrix) if deadline is None or deadline - time.monotonic() > ilu_cost else None
        if ilu is not None:
            converged = run(x0, ilu, min(ILU_ITERATIONS, max_iter))
        if not converged and not state["stopped"]:
            x = state["x"] if _residual(matrix, rhs, state["x"]) < start else x0
            converged = run(x, _jacobi(matrix), max_iter - state["iterations"])
    x = state["x"]
    if _residual(matrix, rhs, x) > start:   # an iterate worse than the coarse alpha is not returned
        x = x0
    return x, state["iterations"], converged, bool(state["stopped"])


def _shrink(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (float64; the edge replicated to a multiple of f)."""
    h, w = a.shape[:2]
    ph, pw = -h % f, -w % f
    if ph or pw:
        a = np.pad(a, [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2), mode="edge")
    H, W = a.shape[0] // f, a.shape[1] // f
    return a.reshape(H, f, W, f, *a.shape[2:]).mean(axis=(1, 3), dtype=np.float64)


def _bilinear_at(a: np.ndarray, f: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Values of a block-shrunk array `a` (H x W [x C]) at full-size pixels (ys, xs), interpolated bilinearly
    between block centres."""
    H, W = a.shape[:2]
    sy, sx = (ys + 0.5) / f - 0.5, (xs + 0.5) / f - 0.5
    y0 = np.clip(np.floor(sy).astype(np.int64), 0, H - 1)
    x0 = np.clip(np.floor(sx).astype(np.int64), 0, W - 1)
    y1, x1 = np.minimum(y0 + 1, H - 1), np.minimum(x0 + 1, W - 1)
    wy, wx = np.clip(sy - y0, 0, 1), np.clip(sx - x0, 0, 1)
    if a.ndim == 3:
        wy, wx = wy[:, None], wx[:, None]
    return (a[y0, x0] * (1 - wy) * (1 - wx) + a[y0, x1] * (1 - wy) * wx + a[y1, x0] * wy * (1 - wx)
            + a[y1, x1] * wy * wx)


def _affine_coefficients(img: np.ndarray, alpha: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The closed-form model's local affine map, alpha ~ A . colour + b, fitted in every 3x3 window of the
    shrunk image and averaged over the windows covering each pixel (as the guided filter does)."""
    h, w = alpha.shape
    mean_i = filters.box_mean(img, 1).astype(np.float64)
    mean_a = filters.box_mean(alpha, 1).astype(np.float64)
    mean_ia = filters.box_mean(img * alpha[..., None], 1).astype(np.float64)
    outer = (img[..., :, None] * img[..., None, :]).reshape(h, w, 9)
    mean_ii = filters.box_mean(outer, 1).astype(np.float64).reshape(h, w, 3, 3)
    cov = mean_ii - mean_i[..., :, None] * mean_i[..., None, :] + eps * np.eye(3)
    a = np.linalg.solve(cov, (mean_ia - mean_i * mean_a[..., None])[..., None])[..., 0]
    b = mean_a - (a * mean_i).sum(-1)
    return filters.box_mean(a, 1).astype(np.float64), filters.box_mean(b, 1).astype(np.float64)


def closed_form_alpha(rgb: np.ndarray, trimap: np.ndarray, alpha0: np.ndarray | None = None, *,
                      deadline: float | None = None, max_iter: int = 2000, rtol: float = 1e-6,
                      eps: float = EPSILON, max_unknown: int = MAX_UNKNOWN,
                      cancel: threading.Event | None = None) -> tuple[np.ndarray, Solve]:
    """The closed-form matte of `rgb` on `trimap` (uint8 0/128/255, or float with <= 0.1 background and >= 0.9
    foreground); `alpha0` (the coarse alpha) starts CG and stays in the band where nothing was solved.
    `deadline` is a time.monotonic() value. Returns (alpha float32 HxW in [0, 1], what was done).

    A band larger than `max_unknown` is solved on the image shrunk by the smallest integer factor that fits, and
    brought back with the closed-form model itself: the shrunk solution's local affine colour-to-alpha maps are
    interpolated to full size and applied to the full-size colours, which keeps detail that bilinear upsampling of
    the alpha would blur."""
    t = np.asarray(trimap)
    tf = t.astype(np.float32) / 255.0 if t.dtype == np.uint8 else t.astype(np.float32)
    fg, bg = tf >= 0.9, tf <= 0.1
    unknown = ~(fg | bg)
    shape = unknown.shape
    coarse = (np.clip(_unit(alpha0, np.float32), 0, 1) if alpha0 is not None
              else np.where(fg, 1.0, np.where(bg, 0.0, 0.5)).astype(np.float32))
    out = np.where(fg, np.float32(1), np.where(bg, np.float32(0), coarse)).astype(np.float32)
    n_full = int(unknown.sum())
    if n_full == 0:
        return out, Solve(0, 0, 1, 0, True, False, 0.0)
    if min(shape) < 3 or not (fg | bg).any():   # no 3x3 window, or nothing definite to pin the solution to
        return out, Solve(n_full, 0, 1, 0, False, False, float("nan"))
    f = max(1, math.ceil(math.sqrt(n_full / max_unknown)))
    if f > 1:   # a shrunk pixel is definite only where every pixel it stands for is
        img_s = _shrink(np.asarray(rgb)[..., :3], f)
        if np.asarray(rgb).dtype == np.uint8:
            img_s /= 255.0
        fg_s, bg_s = _shrink(fg, f) == 1.0, _shrink(bg, f) == 1.0
        coarse_s = _shrink(coarse, f)
    else:
        img_s, fg_s, bg_s, coarse_s = np.asarray(rgb), fg, bg, coarse.astype(np.float64)
    unknown_s = ~(fg_s | bg_s)
    n = int(unknown_s.sum())
    if deadline is not None and time.monotonic() >= deadline:
        return out, Solve(n_full, n, f, 0, False, True, float("nan"))
    check_cancel(cancel)
    started = time.monotonic()
    system = _laplacian_system(img_s, fg_s.astype(np.float64), unknown_s, eps, deadline)
    if system is None:
        return out, Solve(n_full, n, f, 0, False, True, float("nan"))
    matrix, rhs = system
    check_cancel(cancel)
    x0 = coarse_s[unknown_s].astype(np.float64)
    # The ILU costs about 1.5-2x the Laplacian's assembly (same windows, same fill): the measure of its cost here.
    x, iterations, converged, stopped = _cg(matrix, rhs, x0, max_iter=max_iter, rtol=rtol, deadline=deadline,
                                            cancel=cancel, ilu_cost=2.0 * (time.monotonic() - started))
    residual = _residual(matrix, rhs, x)
    if f == 1:
        out[unknown] = np.clip(x, 0, 1)
    elif iterations:
        solved = coarse_s.copy()
        solved[unknown_s] = np.clip(x, 0, 1)
        solved[fg_s], solved[bg_s] = 1.0, 0.0
        check_cancel(cancel)
        a, b = _affine_coefficients(img_s, solved, UPSAMPLE_EPS)
        ys, xs = np.nonzero(unknown)
        colours = _unit(np.asarray(rgb)[ys, xs][:, :3])
        band = (_bilinear_at(a, f, ys, xs) * colours).sum(-1) + _bilinear_at(b, f, ys, xs)
        out[ys, xs] = np.clip(band, 0, 1)
    return out, Solve(n_full, n, f, iterations, converged, stopped, float(residual))


# --- foreground colours ---


def _blur_fusion(image: np.ndarray, fore: np.ndarray, back: np.ndarray, alpha: np.ndarray,
                 radius: int) -> tuple[np.ndarray, np.ndarray]:
    """One pass of Forte & Pitie's estimator (their FB_blur_fusion_foreground_estimator, cv2.blur as box means)."""
    a = alpha[..., None]
    blurred_alpha = filters.box_mean(alpha, radius)[..., None]
    blurred_f = filters.box_mean(fore * a, radius) / (blurred_alpha + 1e-5)
    blurred_b = filters.box_mean(back * (1 - a), radius) / ((1 - blurred_alpha) + 1e-5)
    f = blurred_f + a * (image - a * blurred_f - (1 - a) * blurred_b)
    return np.clip(f, 0, 1), blurred_b


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, *, radii: tuple[int, int] = (45, 3)) -> np.ndarray:
    """The foreground colour (float32 HxWx3 in [0, 1]) under `alpha`: Forte & Pitie's blur fusion, two passes,
    a box of 2*45+1 px then one of 7 px (their kernel sizes 90 and 6). Opaque pixels keep their colour. The work
    is done on the soft pixels' bounding box with a margin the two boxes cannot see past, so a small subject in a
    large image costs little and the result is the same as on the whole image."""
    image = _unit(rgb, np.float32)[..., :3]
    a = np.clip(_unit(alpha, np.float32), 0, 1)
    out = image.copy()
    soft = (a > 0) & (a < 1)
    if not soft.any():
        return out
    margin = sum(radii) + 1
    ys, xs = np.nonzero(soft.any(axis=1))[0], np.nonzero(soft.any(axis=0))[0]
    box = (slice(max(0, ys[0] - margin), ys[-1] + margin + 1), slice(max(0, xs[0] - margin), xs[-1] + margin + 1))
    crop, crop_a = image[box], a[box]
    fore, back = _blur_fusion(crop, crop, crop, crop_a, radii[0])
    fore, _ = _blur_fusion(crop, fore, back, crop_a, radii[1])
    out[box] = fore
    return out


__all__ = ["BG", "FG", "UNKNOWN", "Solve", "closed_form_alpha", "estimate_foreground", "trimap"]
