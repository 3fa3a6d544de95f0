"""`key`: model-free background removal for art on a flat or near-flat background.

1. Background from the border ring: the ring's dominant colour cluster seeds a robust quadratic fit in OKLab
   (re-fitted with outliers dropped), so a gradient or noise is background and a subject touching an edge is an
   outlier. A second flat colour counts as background only when it reaches three sides of the ring (a two-tone
   backdrop; a subject touches one side, or two at a corner).
2. A background plate grown from the explained border cells inward through homogeneous cells that continue
   their neighbours (so a radial vignette, which no border-only fit can describe, is followed), diffused under
   the subject and upsampled.
3. Distance of every pixel to the plate (or an extra colour) in OKLab, on a box-smoothed image when the border
   is noisy, keyed with a linear alpha ramp between `low` and `high`, adaptive to the border's own spread.
4. Edges: in a band around the transition each pixel is un-mixed against its background colour and the
   farthest neighbour colour on the same line (see `_refine_edges`); the background is un-premultiplied out of
   the colour, so the cut-out shows no fringe on another backdrop.
5. Clean-up on the hard mask (alpha > 0.5): specks under `min_speck` of the image go, faint haze away from the
   subject goes, and enclosed background-coloured regions under `fill_holes` of the subject's area (eye whites
   on a white backdrop) stay opaque. Larger enclosed regions (the hole of a ring) become transparent; set
   `fill_holes` to 0 for line art or lettering whose enclosed counters are background.
Output: RGBA PNG, colour zeroed where alpha is 0. Deterministic: the same input gives the same bytes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iat.engines.base import EngineContext, EngineResult, EngineStatus, check_cancel, parse_options
from iat.imaging import components, filters
from iat.imaging.io import from_arrays, open_image, save_png, to_arrays
from iat.imaging.oklab import hex_to_oklab, hex_to_rgb8, oklab_to_srgb, oklab_to_srgb8, rgb8_to_hex, srgb8_to_oklab


class KeyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float | None = Field(None, gt=0, le=1, description="OKLab distance at or below which a pixel is "
                              "background (alpha 0); default: adaptive, at least 0.02")
    high: float | None = Field(None, gt=0, le=2, description="OKLab distance at or above which a pixel is "
                               "foreground (alpha 1); default: adaptive, at least low + 0.03")
    background: list[str] | None = Field(None, min_length=1, max_length=8,
                                         description="background colours (hex) instead of the border estimate")
    ring: int | None = Field(None, ge=1, le=256, description="border ring width in px; default 1% of the short "
                             "side, at least 2")
    min_speck: float = Field(2e-5, ge=0, le=0.1, description="foreground pieces smaller than this fraction of "
                             "the image (and at least 4 px) are removed")
    fill_holes: float = Field(0.02, ge=0, le=1, description="enclosed background-coloured regions up to this "
                              "fraction of the subject's area stay opaque (eye whites on a white backdrop); 0 "
                              "fills none, 1 fills all")
    refine_edges: bool = True
    decontaminate: bool = True

    @field_validator("background")
    @classmethod
    def _hex(cls, v: list[str] | None) -> list[str] | None:
        for c in v or []:
            hex_to_rgb8(c)
        return v

    @model_validator(mode="after")
    def _order(self) -> "KeyOptions":
        if self.low is not None and self.high is not None and self.high <= self.low:
            raise ValueError("high must be greater than low")
        return self


@dataclass
class BackgroundModel:
    """The background: a full-resolution OKLab plate (from a quadratic fit of the ring) plus extra flat colours."""

    coeffs: np.ndarray | None      # (6, 3) quadratic over x, y in [-1, 1]: 1, x, y, x^2, y^2, xy (None: given)
    colors: np.ndarray             # (k, 3) OKLab: extra flat colours, or the colours the caller gave
    sigma: float                   # per-channel noise of the border around the model
    explained: float               # fraction of the border ring the model explains
    ring_rows: np.ndarray
    ring_cols: np.ndarray
    ring_bg: np.ndarray            # which ring samples are background
    plate: np.ndarray | None = None   # HxWx3 OKLab, see build_plate()

    def at(self, rows: np.ndarray, cols: np.ndarray, lab: np.ndarray) -> np.ndarray:
        """The nearest background colour (OKLab) for the given pixels, whose colours are `lab` (n, 3)."""
        cands = [np.broadcast_to(c, lab.shape) for c in self.colors]
        if self.plate is not None:
            cands.insert(0, self.plate[rows, cols])
        stack = np.stack(cands)                                  # (m, n, 3)
        best = np.argmin(((stack - lab[None]) ** 2).sum(-1), axis=0)
        return stack[best, np.arange(len(lab))].astype(np.float32)

    def hex_colors(self) -> list[str]:
        out = []
        if self.coeffs is not None:
            out.append(rgb8_to_hex(oklab_to_srgb8(self.coeffs[0].astype(np.float32))))  # the plate's centre
        out += [rgb8_to_hex(oklab_to_srgb8(c)) for c in self.colors]
        return out


def _norm(idx: np.ndarray, n: int) -> np.ndarray:
    return (idx.astype(np.float64) + 0.5) / n * 2 - 1


def _design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)


def _mode_center(samples: np.ndarray, bin_size: float = 0.04) -> np.ndarray:
    """Median of the most populated OKLab bin: the dominant colour, insensitive to the rest."""
    q = np.floor(samples / bin_size).astype(np.int64) + 512
    key = (q[:, 0] << 20) | (q[:, 1] << 10) | q[:, 2]
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    return np.median(samples[inv.ravel() == np.argmax(counts)], axis=0)


def _ring(h: int, w: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    m = np.zeros((h, w), dtype=bool)
    m[:width, :] = m[-width:, :] = True
    m[:, :width] = m[:, -width:] = True
    rows, cols = np.nonzero(m)
    step = max(1, len(rows) // 40000)   # enough samples for 6 coefficients; bounded cost on huge images
    return rows[::step], cols[::step]


def estimate_background(lab: np.ndarray, ring: int, colors: np.ndarray | None = None) -> BackgroundModel:
    """The background seen in the border ring (`ring` px wide) of an OKLab image, or the given `colors`.

    Seeded by the ring's dominant colour, a quadratic surface is fitted to the ring and re-fitted on the samples
    within 3.5 median residuals (at least 0.03) until the inlier set settles; `sigma` is the inliers' noise.
    """
    h, w = lab.shape[:2]
    rows, cols = _ring(h, w, ring)
    samples = lab[rows, cols].astype(np.float64)
    n = len(samples)
    if colors is not None:  # the caller named the background
        d = np.sqrt(((samples[:, None] - colors[None]) ** 2).sum(-1)).min(axis=1)
        bg = d < max(0.04, 3.5 * float(np.median(d)))
        sigma = float(np.median(d[bg])) / 1.54 if bg.any() else 0.0
        return BackgroundModel(None, colors.astype(np.float32), sigma, float(bg.mean()), rows, cols, bg)
    X = _design(_norm(cols, w), _norm(rows, h))
    centre = _mode_center(samples)
    inl = np.sqrt(((samples - centre) ** 2).sum(-1)) < 0.08
    ridge = np.diag([0.0] + [1e-4] * 5)
    coeffs = np.zeros((6, 3))
    coeffs[0] = centre
    res = np.sqrt(((samples - centre) ** 2).sum(-1))
    thr = 0.03
    for _ in range(10 if inl.sum() >= 6 else 0):
        Xi = X[inl]
        # einsum, not BLAS: the same sums in the same order on every machine and thread count (replays
        # must give the same bytes)
        coeffs = np.linalg.solve(np.einsum("ni,nj->ij", Xi, Xi) + ridge * len(Xi),
                                 np.einsum("ni,nk->ik", Xi, samples[inl]))
        res = np.sqrt(((samples - np.einsum("ni,ik->nk", X, coeffs)) ** 2).sum(-1))
        thr = max(0.03, 3.5 * float(np.median(res[inl])))
        new = res < thr
        if np.array_equal(new, inl) or new.sum() < 6:
            break
        inl = new
    sigma = float(np.median(res[inl])) / 1.54 if inl.any() else 0.0   # a 3-D normal's norm: median ~1.54 sigma
    # A second flat colour counts as background only when it reaches three sides of the ring.
    side = np.argmin(np.stack([rows, h - 1 - rows, cols, w - 1 - cols]), axis=0)
    side_total = np.bincount(side, minlength=4)
    extras: list[np.ndarray] = []
    bg = inl.copy()
    out = ~inl
    for _ in range(2):
        if out.sum() < 0.08 * n:
            break
        centre = _mode_center(samples[out])
        member = out & (np.sqrt(((samples - centre) ** 2).sum(-1)) < max(0.04, thr))
        hits = np.bincount(side[member], minlength=4)
        if member.sum() < 0.08 * n or (hits >= np.maximum(3, 0.05 * side_total)).sum() < 3:
            break
        extras.append(np.median(samples[member], axis=0))
        bg |= member
        out &= ~member
    colors_out = np.array(extras, dtype=np.float32).reshape(-1, 3)
    return BackgroundModel(coeffs, colors_out, sigma, float(bg.mean()), rows, cols, bg)


def build_plate(lab: np.ndarray, model: BackgroundModel, tol: float) -> np.ndarray:
    """A smooth background plate for the whole image, grown from the border into the interior.

    The image is cut into cells (~64 across). Border cells the model explains are known background; a cell
    joins when it is homogeneous and its mean is within `tol` of the mean of its known neighbours, so the plate
    follows any smooth gradient (a radial vignette a quadratic cannot describe) but never crosses an edge. Cells
    under the subject are filled by diffusion from the known ones; the plate is then upsampled bilinearly.
    """
    h, w = lab.shape[:2]
    cs = max(4, -(-max(h, w) // 64))
    gh, gw = -(-h // cs), -(-w // cs)
    padded = np.pad(lab, ((0, gh * cs - h), (0, gw * cs - w), (0, 0)), mode="edge")
    rows_sum = padded.reshape(gh, cs, gw * cs, 3).sum(axis=1, dtype=np.float64)
    rows_sq = np.square(padded).reshape(gh, cs, gw * cs, 3).sum(axis=1, dtype=np.float64)
    mean = rows_sum.reshape(gh, gw, cs, 3).sum(axis=2) / (cs * cs)
    sq = rows_sq.reshape(gh, gw, cs, 3).sum(axis=2) / (cs * cs)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0).sum(-1))
    homogeneous = std < max(0.012, 2.0 * np.sqrt(3.0) * model.sigma)
    cy, cx = (np.arange(gh) + 0.5) * cs, (np.arange(gw) + 0.5) * cs
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    guess = np.einsum("ni,ik->nk", _design(_norm(xx.ravel() - 0.5, w), _norm(yy.ravel() - 0.5, h)), model.coeffs)
    guess = guess.reshape(gh, gw, 3)
    border = np.zeros((gh, gw), dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    known = border & homogeneous & (np.sqrt(((mean - guess) ** 2).sum(-1)) < tol * 1.5)
    if not known.any():
        known = border & (np.sqrt(((mean - guess) ** 2).sum(-1)) < tol * 1.5)
    plate = np.where(known[..., None], mean, guess)
    for _ in range(gh * gw):
        k = known.astype(np.float64)
        ksum = np.zeros_like(k)
        vsum = np.zeros_like(plate)
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            src = (slice(max(0, -dy), gh - max(0, dy)), slice(max(0, -dx), gw - max(0, dx)))
            dst = (slice(max(0, dy), gh - max(0, -dy)), slice(max(0, dx), gw - max(0, -dx)))
            ksum[dst] += k[src]
            vsum[dst] += (plate * k[..., None])[src]
        pred = vsum / np.maximum(ksum, 1)[..., None]
        grow = ~known & homogeneous & (ksum > 0) & (np.sqrt(((mean - pred) ** 2).sum(-1)) < tol)
        if not grow.any():
            break
        known |= grow
        plate[grow] = mean[grow]
    # Diffuse into the unknown cells (Jacobi iterations with the known cells fixed).
    unknown = ~known
    if unknown.any() and known.any():
        p = np.pad(plate, ((1, 1), (1, 1), (0, 0)), mode="edge")
        inner = p[1:-1, 1:-1]
        for _ in range(4 * max(gh, gw)):
            p[0], p[-1], p[:, 0], p[:, -1] = p[1], p[-2], p[:, 1], p[:, -2]   # edge-replicated border
            avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4
            inner[unknown] = avg[unknown]
        plate = inner.copy()
    full = np.empty((h, w, 3), dtype=np.float32)
    for ch in range(3):
        up = Image.fromarray(plate[..., ch].astype(np.float32), "F").resize((gw * cs, gh * cs),
                                                                           Image.Resampling.BILINEAR)
        full[..., ch] = np.asarray(up)[:h, :w]
    return full


def _distance(lab: np.ndarray, model: BackgroundModel) -> np.ndarray:
    d = None
    if model.plate is not None:
        diff = lab - model.plate
        d = np.einsum("ijk,ijk->ij", diff, diff)
    for c in model.colors:
        diff = lab - c.astype(np.float32)
        dc = np.einsum("ijk,ijk->ij", diff, diff)
        d = dc if d is None else np.minimum(d, dc)
    return np.sqrt(d)


def key_image(rgb: np.ndarray, options: KeyOptions | None = None, *,
              cancel: threading.Event | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Keys out the background of an sRGB uint8 image: (alpha float32 0..1, rgb uint8 decontaminated, facts)."""
    opt = options or KeyOptions()
    h, w = rgb.shape[:2]
    lab = srgb8_to_oklab(rgb)
    ring = opt.ring or max(2, round(min(h, w) * 0.01))
    ring = min(ring, max(1, min(h, w) // 4))
    given = hex_to_oklab(opt.background) if opt.background else None
    model = estimate_background(lab, ring, given)
    if model.coeffs is not None:
        model.plate = build_plate(lab, model, tol=0.015 + 2.0 * model.sigma)
    check_cancel(cancel)

    # Smooth only a noisy image: a box filter keeps straight edges where they are but blurs 1-px lines.
    radius = 0 if model.sigma < 0.004 else (1 if model.sigma < 0.012 else 2)
    lab_s = filters.box_mean(lab, radius).astype(np.float32) if radius else lab
    d = _distance(lab_s, model)
    ring_d = d[model.ring_rows, model.ring_cols][model.ring_bg]
    spread = float(np.quantile(ring_d, 0.998)) if len(ring_d) else 0.0
    low = opt.low if opt.low is not None else max(0.02, 1.25 * spread)
    high = opt.high if opt.high is not None else max(low + 0.03, 1.6 * low)
    alpha = np.clip((d - low) / (high - low), 0.0, 1.0).astype(np.float32)
    check_cancel(cancel)

    # Drop specks and haze before the edges are refined, so they lend no colour to the refinement.
    min_speck = max(4, round(opt.min_speck * h * w))
    mask = alpha > 0.5
    kept = components.remove_small(mask, min_speck)
    specks = int((mask & ~kept).sum())
    alpha[mask & ~kept] = 0.0
    alpha[~mask & ~filters.dilate(kept, 2)] = 0.0
    out_rgb = rgb.copy()
    if opt.refine_edges or opt.decontaminate:
        # The band reaches as far as an anti-aliased edge (2 px) plus what the smoothing spread.
        band = (alpha > 0) & filters.dilate(alpha < 1, 2 + radius)
        if band.any():
            alpha, out_rgb = _refine_edges(rgb, lab, alpha, band, model, opt, radius)
    check_cancel(cancel)

    # Final clean-up on the hard mask: specks the refinement left, and small enclosed background-coloured
    # regions (eye whites on a white backdrop) made opaque with their own colour.
    mask = alpha > 0.5
    kept = components.remove_small(mask, min_speck)
    specks += int((mask & ~kept).sum())
    if opt.fill_holes > 0:
        kept = components.fill_holes(kept, None if opt.fill_holes >= 1 else round(opt.fill_holes * kept.sum()))
    filled = kept & ~mask
    alpha[filled] = 1.0
    out_rgb[filled] = rgb[filled]
    alpha[mask & ~kept] = 0.0
    alpha[~mask & ~filters.dilate(kept, 2)] = 0.0
    out_rgb[alpha <= 0] = 0
    facts = {"background": model.hex_colors(), "background_explained": round(model.explained, 4),
             "noise_sigma": round(model.sigma, 5), "smoothing_radius": radius, "low": round(low, 5),
             "high": round(high, 5), "specks_removed_px": specks, "holes_filled_px": int(filled.sum()),
             "coverage": round(float((alpha > 0.5).mean()), 5)}
    return alpha, out_rgb, facts


def _refine_edges(rgb: np.ndarray, lab: np.ndarray, alpha: np.ndarray, band: np.ndarray, model: BackgroundModel,
                  opt: KeyOptions, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Matting in the band: each pixel C is taken as a mix of the background B and a foreground colour F.

    F is the neighbour (within 2 px plus the smoothing radius) farthest from B along the B->C line among those
    with C on the B-F segment (so an outline darker than the backdrop is never read as a mix of a lighter fill);
    alpha is C's position on that segment. A pixel with no such neighbour (a third colour, a thin line that never
    reaches its full colour) keeps its keyed alpha. Colour: the background un-premultiplied from C. On a noisy
    image the colours are box-smoothed as for keying: a symmetric blur leaves an edge's 50 % crossing in place.
    """
    h, w = alpha.shape
    rows, cols = np.nonzero(band)
    reach = 2 + radius
    r0, r1 = max(0, rows.min() - reach), min(h, rows.max() + reach + 1)
    c0, c1 = max(0, cols.min() - reach), min(w, cols.max() + reach + 1)
    raw = rgb[r0:r1, c0:c1].astype(np.float32) / 255.0
    smooth = filters.box_mean(raw, radius).astype(np.float32) if radius else raw
    br, bc = rows - r0, cols - c0
    C, C_raw = smooth[br, bc], raw[br, bc]
    B = oklab_to_srgb(model.at(rows, cols, lab[rows, cols]))
    CB = C - B
    cb_len = np.sqrt((CB * CB).sum(-1))
    tol = 0.02 + 0.2 * cb_len + 3.0 * model.sigma / (2 * radius + 1)
    best = np.full(len(C), np.inf, dtype=np.float32)
    F = C_raw.copy()
    hh, ww = smooth.shape[:2]
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            N = smooth[np.clip(br + dy, 0, hh - 1), np.clip(bc + dx, 0, ww - 1)]
            NB = N - B
            nb2 = (NB * NB).sum(-1)
            t = (CB * NB).sum(-1) / np.maximum(nb2, 1e-6)
            resid = np.sqrt(((CB - t[:, None] * NB) ** 2).sum(-1))
            take = (nb2 > 0.06 ** 2) & (t > 0) & (t <= 1.02) & (resid < tol) & (t < best)
            best[take] = t[take]
            F[take] = N[take]
    found = np.isfinite(best)
    a = alpha[rows, cols].copy()
    alpha = alpha.copy()
    if opt.refine_edges:
        a[found] = np.minimum(best[found], 1.0)
        alpha[rows, cols] = a
    out = rgb.copy()
    if opt.decontaminate:
        frac = (a > 0) & (a < 1)
        Fd = np.clip((C_raw - (1 - a)[:, None] * B) / np.maximum(a, 1e-3)[:, None], 0.0, 1.0)
        weak = found & (a < 0.25)   # too little foreground in the pixel to un-mix: take the neighbour's colour
        Fd[weak] = F[weak]
        Fd = np.where(frac[:, None], Fd, C_raw)
        out[rows, cols] = np.floor(Fd * 255.0 + 0.5).astype(np.uint8)
    return alpha, out


class KeyEngine:
    code: ClassVar[str] = "key"
    op: ClassVar[str] = "remove_background"

    def available(self, ctx: EngineContext | None = None) -> EngineStatus:
        return EngineStatus(True, "")

    def process(self, src: Path, dst: Path, options: dict[str, Any] | None = None, *,
                cancel: threading.Event | None = None, ctx: EngineContext | None = None) -> EngineResult:
        opt = parse_options(KeyOptions, options, self.code)
        img = open_image(src)
        rgb, src_alpha = to_arrays(img)
        check_cancel(cancel)
        h, w = rgb.shape[:2]
        ring = max(2, round(min(h, w) * 0.01))
        if src_alpha is not None and (np.concatenate([src_alpha[:ring].ravel(), src_alpha[-ring:].ravel(),
                                                      src_alpha[:, :ring].ravel(),
                                                      src_alpha[:, -ring:].ravel()]) < 128).mean() > 0.5:
            # Already a cut-out: its own alpha is the answer (the colours under it are not a background).
            alpha8, out_rgb = src_alpha, rgb.copy()
            out_rgb[alpha8 == 0] = 0
            facts: dict[str, Any] = {"already_transparent": True,
                                     "coverage": round(float((alpha8 >= 128).mean()), 5)}
        else:
            alpha, out_rgb, facts = key_image(rgb, opt, cancel=cancel)
            if src_alpha is not None:
                alpha = alpha * (src_alpha.astype(np.float32) / 255.0)
            alpha8 = np.floor(alpha * 255.0 + 0.5).astype(np.uint8)
            out_rgb[alpha8 == 0] = 0
        check_cancel(cancel)
        save_png(from_arrays(out_rgb, alpha8), dst)
        return EngineResult(Path(dst), w, h, {"engine": self.code, **facts})
