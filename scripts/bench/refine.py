#!/usr/bin/env python3
"""The refine pass's closed-form matting against pymatting's (the numba implementation the product leaves out).

    .venv/bin/python scripts/bench/refine.py [--side N] [--big N] [--rounds R] [--strict]

The scene: a SIDE x SIDE composite (default 1024) of a blob with hair-like strands over a different background,
both smooth colour fields with a little noise, with its true alpha; the coarse mask is the hard mask slightly
blurred (what a segmentation model gives), the trimap the refine pass's (rembg's thresholds, 10 px erosion).

1. Time: iat.imaging.matting.closed_form_alpha (the sparse Laplacian over the band, CG with the ILU) against
   pymatting.estimate_alpha_cf (its Laplacian, CG with its incomplete Cholesky) on the same image and trimap,
   alternating, R rounds after a warm-up each (numba's compile is not counted); the ratio of the medians.
   Target: <= 1.5x. Reported too: each side's mean error against the true alpha in the band, the coarse mask's,
   and the two alphas' difference.
2. Reported (no target): the whole refine pass (iat.engines.refine.refine with the closed form: read, trimap,
   solve, decontaminate, write) on the same scene; a BIG x BIG scene (default 2048) whose band is over the
   unknown-pixel budget, solved shrunk (scale, time, error against the full-size solve's); and the time bound:
   refine with max_seconds = a quarter of the full solve's time, how long it took and whether it said so.

A report: exit code 0 whatever the results, unless --strict (1 when the time target is missed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from benchenv import ROOT, ensure_venv, timed  # noqa: E402 - beside this script

TARGET = 1.5


def scene(side: int, seed: int = 0):
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    ss = 4
    big = Image.new("L", (side * ss, side * ss), 0)
    d = ImageDraw.Draw(big)
    d.ellipse([side * ss * 0.2, side * ss * 0.2, side * ss * 0.8, side * ss * 0.85], fill=255)
    for _ in range(60):
        x, y = rng.uniform(0.25, 0.75) * side * ss, rng.uniform(0.22, 0.5) * side * ss
        d.line([(x, y), (x + rng.uniform(-1, 1) * side * ss * 0.15, y - side * ss * 0.18)], fill=255,
               width=max(2, side // 256))
    alpha = np.asarray(big.resize((side, side), Image.Resampling.BOX), np.float64) / 255.0
    yy, xx = np.mgrid[0:side, 0:side] / side
    fg = np.dstack([0.8 + 0.1 * xx, 0.3 + 0.2 * yy, 0.2 + 0.05 * xx])
    bg = np.dstack([0.1 + 0.3 * yy, 0.6 + 0.2 * xx, 0.4 + 0.1 * xx])
    a = alpha[..., None]
    image = np.clip(a * fg + (1 - a) * bg + rng.normal(0, 0.01, fg.shape), 0, 1)
    rgb8 = np.rint(image * 255).astype(np.uint8)
    hard = Image.fromarray(((alpha > 0.5) * 255).astype(np.uint8))
    coarse8 = np.asarray(hard.filter(ImageFilter.GaussianBlur(1.0)))
    return rgb8, alpha, coarse8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--big", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from PIL import Image
    from pymatting import estimate_alpha_cf

    from iat.engines.refine import refine
    from iat.imaging import matting

    rgb8, alpha, coarse8 = scene(args.side)
    tri = matting.trimap(coarse8)
    band = tri == matting.UNKNOWN
    image = rgb8 / 255.0
    ours_fn = lambda: matting.closed_form_alpha(rgb8, tri, coarse8)[0]  # noqa: E731
    theirs_fn = lambda: estimate_alpha_cf(image, tri / 255.0)  # noqa: E731
    ours_fn(), theirs_fn()   # warm-up: numba's compile (cached) and first-touch allocations
    ours_t, theirs_t = [], []
    for _ in range(args.rounds):
        t, ours = timed(ours_fn)
        ours_t.append(t)
        t, theirs = timed(theirs_fn)
        theirs_t.append(t)
    ratio = statistics.median(ours_t) / statistics.median(theirs_t)
    err = lambda a: float(np.abs(a - alpha)[band].mean())  # noqa: E731
    print(f"scene {args.side}x{args.side}, {int(band.sum())} unknown px, {args.rounds} rounds")
    print(f"1. closed form: ours {statistics.median(ours_t):.3f} s, pymatting {statistics.median(theirs_t):.3f} s "
          f"(median): ratio {ratio:.2f}x (target <= {TARGET}x) {'PASS' if ratio <= TARGET else 'FAIL'}")
    print(f"   error in the band vs the true alpha: ours {err(ours):.4f}, pymatting {err(theirs):.4f}, coarse "
          f"{err(coarse8 / 255.0):.4f}; ours vs pymatting {float(np.abs(ours - theirs)[band].mean()):.2e}")
    with tempfile.TemporaryDirectory(prefix="iat-bench-refine-") as tmp:
        src, cut = Path(tmp) / "src.png", Path(tmp) / "cut.png"
        Image.fromarray(rgb8).save(src)
        Image.fromarray(np.dstack([rgb8, coarse8])).save(cut)
        t, result = timed(lambda: refine(None, src, cut, Path(tmp) / "out.png", {"method": "closed_form"}))
        print(f"2. refine pass (closed form, decontaminated, PNG written): {t:.3f} s")
        bound = statistics.median(ours_t) / 4
        t, result = timed(lambda: refine(None, src, cut, Path(tmp) / "late.png",
                                         {"method": "closed_form", "max_seconds": bound}))
        print(f"   with max_seconds {bound:.3f}: {t:.3f} s, hit_time_bound {result.meta['hit_time_bound']}, "
              f"{result.meta['solve']['iterations']} CG iterations")
    rgb8, alpha, coarse8 = scene(args.big, seed=1)
    tri = matting.trimap(coarse8)
    band = tri == matting.UNKNOWN
    t, (shrunk, solve) = timed(lambda: matting.closed_form_alpha(rgb8, tri, coarse8))
    print(f"   {args.big}x{args.big}: {solve.unknown} unknown px over the budget of {matting.MAX_UNKNOWN}: solved "
          f"{solve.solved} at 1/{solve.scale} in {t:.3f} s, error {err(shrunk):.4f} (coarse "
          f"{err(coarse8 / 255.0):.4f})")
    t, (full, solve) = timed(lambda: matting.closed_form_alpha(rgb8, tri, coarse8, max_unknown=solve.unknown))
    print(f"   the same at full size: {t:.3f} s, error {err(full):.4f}")
    return 1 if args.strict and ratio > TARGET else 0


if __name__ == "__main__":
    ensure_venv(__file__)
    sys.exit(main())
