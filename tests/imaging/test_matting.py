"""Closed-form matting, the trimap and foreground decontamination on composites with a known alpha and known
foreground and background colours; pymatting (left out of the product, installed for the tests) is the
independent reference for the closed-form solve."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from iat.cancel import Cancelled
from iat.imaging import matting


def composite(n: int = 128, seed: int = 0):
    """(image float HxWx3, true alpha, true foreground, background): an anti-aliased blob with thin strands
    (hair-like, mostly semi-transparent) over a different smooth colour field."""
    rng = np.random.default_rng(seed)
    ss = 4
    big = Image.new("L", (n * ss, n * ss), 0)
    d = ImageDraw.Draw(big)
    d.ellipse([n * ss * 0.25, n * ss * 0.3, n * ss * 0.75, n * ss * 0.85], fill=255)
    for _ in range(25):
        x, y = rng.uniform(0.3, 0.7) * n * ss, rng.uniform(0.35, 0.5) * n * ss
        d.line([(x, y), (x + rng.uniform(-1, 1) * n * ss * 0.12, y - n * ss * 0.2)], fill=255, width=2)
    alpha = np.asarray(big.resize((n, n), Image.Resampling.BOX), np.float64) / 255.0
    yy, xx = np.mgrid[0:n, 0:n] / n
    fg = np.dstack([0.8 + 0.1 * xx, 0.3 + 0.2 * yy, 0.2 + 0.05 * xx])
    bg = np.dstack([0.1 + 0.3 * yy, 0.6 + 0.2 * xx, 0.4 + 0.1 * xx])
    a = alpha[..., None]
    return a * fg + (1 - a) * bg, alpha, fg, bg


def coarse_of(alpha: np.ndarray) -> np.ndarray:
    """What a segmentation model gives: the hard mask, slightly blurred (strands lost or thickened)."""
    hard = Image.fromarray(((alpha > 0.5) * 255).astype(np.uint8))
    return np.asarray(hard.filter(ImageFilter.GaussianBlur(1.5)), np.float64) / 255.0


@pytest.fixture(scope="module")
def scene():
    image, alpha, fg, bg = composite()
    coarse = coarse_of(alpha)
    tri = matting.trimap(coarse, erode_size=6)
    return image, alpha, fg, bg, coarse, tri


# --- the trimap ---


def test_the_trimap_is_rembgs():
    from rembg.matting import trimap_from_mask  # rembg is in the test venv; the product builds its own

    _, alpha, _, _ = composite(96, seed=3)
    coarse8 = (coarse_of(alpha) * 255).astype(np.uint8)
    for kw in ({}, {"foreground_threshold": 200, "background_threshold": 40, "erode_size": 3},
               {"erode_size": 0}):
        ours = matting.trimap(coarse8, **kw)
        theirs = np.asarray(trimap_from_mask(Image.fromarray(coarse8), **kw))
        assert np.array_equal(ours, theirs), kw
    tri = matting.trimap(coarse8)
    assert set(np.unique(tri)) == {0, 128, 255}
    # The band covers every soft pixel of the coarse mask.
    assert np.all(tri[(coarse8 > 10) & (coarse8 <= 240)] == 128)


# --- closed form ---


def test_closed_form_agrees_with_pymatting_and_beats_the_coarse_mask(scene):
    from pymatting import estimate_alpha_cf

    image, alpha, _, _, coarse, tri = scene
    ours, solve = matting.closed_form_alpha(image, tri, coarse)
    reference = estimate_alpha_cf(image, tri / 255.0, cg_kwargs={"rtol": 1e-10, "maxiter": 20000})
    assert solve.converged and not solve.hit_deadline and solve.scale == 1
    assert solve.unknown == solve.solved == int((tri == 128).sum()) > 1000
    assert ours.dtype == np.float32 and ours.shape == alpha.shape
    assert np.abs(ours - reference).mean() < 1e-4 and np.abs(ours - reference).max() < 0.01
    band = tri == 128
    err_coarse = np.abs(coarse - alpha)[band].mean()
    err_ours = np.abs(ours - alpha)[band].mean()
    assert err_ours < 0.2 * err_coarse, (err_ours, err_coarse)
    # Definite pixels are exactly the trimap's.
    assert np.all(ours[tri == 255] == 1) and np.all(ours[tri == 0] == 0)


def test_closed_form_same_input_same_alpha(scene):
    image, _, _, _, coarse, tri = scene
    a, _ = matting.closed_form_alpha(image, tri, coarse)
    b, _ = matting.closed_form_alpha((image * 255).round().astype(np.uint8), tri, coarse)
    c, _ = matting.closed_form_alpha((image * 255).round().astype(np.uint8), tri, coarse)
    assert np.array_equal(b, c)
    assert np.abs(a - b).mean() < 2e-3   # uint8 quantisation of the colours only


def test_a_band_over_the_budget_is_solved_shrunk_and_upsampled(scene):
    image, alpha, _, _, coarse, tri = scene
    n = int((tri == 128).sum())
    refined, solve = matting.closed_form_alpha(image, tri, coarse, max_unknown=n // 5)
    assert solve.scale == 3 and solve.solved <= n // 5 + n // 20 and solve.converged
    band = tri == 128
    # Brought back through the local affine colour models, the detail of the full-size solve mostly survives.
    full, _ = matting.closed_form_alpha(image, tri, coarse)
    err_shrunk, err_full = np.abs(refined - alpha)[band].mean(), np.abs(full - alpha)[band].mean()
    assert err_shrunk < 0.2 * np.abs(coarse - alpha)[band].mean() and err_shrunk < 3 * err_full
    assert np.all(refined[tri == 255] == 1) and np.all(refined[tri == 0] == 0)
    assert 0 <= refined.min() and refined.max() <= 1


def test_the_time_bound_still_returns_a_valid_alpha(scene):
    image, alpha, _, _, coarse, tri = scene
    band = tri == 128
    # One CG iteration: a valid alpha, not yet converged.
    one, solve = matting.closed_form_alpha(image, tri, coarse, max_iter=1)
    assert solve.iterations == 1 and not solve.hit_deadline
    assert 0 <= one.min() and one.max() <= 1 and np.all(one[tri == 255] == 1) and np.all(one[tri == 0] == 0)
    # A deadline already passed: the coarse alpha in the band, the definite pixels from the trimap.
    late, solve = matting.closed_form_alpha(image, tri, coarse, deadline=time.monotonic() - 1)
    assert solve.hit_deadline and solve.iterations == 0 and not solve.converged
    assert np.allclose(late[band], coarse[band], atol=1e-6)
    assert np.all(late[tri == 255] == 1) and np.all(late[tri == 0] == 0)
    # No iteration allowed at all: the same.
    none, solve = matting.closed_form_alpha(image, tri, coarse, max_iter=0)
    assert solve.iterations == 0 and np.allclose(none[band], coarse[band], atol=1e-6)


def test_a_set_cancel_event_stops_the_solve(scene):
    image, _, _, _, coarse, tri = scene
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        matting.closed_form_alpha(image, tri, coarse, cancel=cancel)


def test_degenerate_trimaps():
    image, alpha, _, _ = composite(32)
    # Nothing unknown: the trimap itself.
    tri = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    out, solve = matting.closed_form_alpha(image, tri, alpha)
    assert solve.unknown == 0 and np.array_equal(out, (tri / 255).astype(np.float32))
    # Nothing definite: no solution is pinned, the coarse alpha stays.
    out, solve = matting.closed_form_alpha(image, np.full((32, 32), 128, np.uint8), alpha)
    assert solve.solved == 0 and np.allclose(out, alpha, atol=1e-6)


# --- foreground colours ---


def test_decontamination_removes_the_background_tint_at_soft_edges(scene):
    image, alpha, fg, bg, _, _ = scene
    estimated = matting.estimate_foreground(image, alpha)
    soft = (alpha > 0.05) & (alpha < 0.95)
    assert soft.sum() > 500
    raw_error = np.abs(image - fg)[soft].mean()
    est_error = np.abs(estimated - fg)[soft].mean()
    assert est_error < 0.4 * raw_error, (est_error, raw_error)
    # The tint: how far a soft pixel's colour leans toward the background, along the foreground-background line.
    direction = (bg - fg) / np.linalg.norm(bg - fg, axis=-1, keepdims=True)
    lean_raw = ((image - fg) * direction).sum(-1)[soft].mean()
    lean_est = ((estimated - fg) * direction).sum(-1)[soft].mean()
    assert lean_raw > 0.2 and abs(lean_est) < 0.3 * lean_raw, (lean_est, lean_raw)
    # Opaque pixels keep their colour.
    opaque = alpha >= 0.999
    assert np.abs(estimated - image)[opaque].max() < 1e-6
    assert 0 <= estimated.min() and estimated.max() <= 1


def test_decontamination_works_on_the_soft_pixels_box_with_the_whole_images_result():
    image, alpha, _, _ = composite(256, seed=4)
    small = np.zeros_like(alpha)
    small[100:164, 90:154] = alpha[::4, ::4]   # a subject well inside a large frame
    whole, back = matting._blur_fusion(image.astype(np.float32), image.astype(np.float32),
                                       image.astype(np.float32), small.astype(np.float32), 45)
    whole, _ = matting._blur_fusion(image.astype(np.float32), whole, back, small.astype(np.float32), 3)
    boxed = matting.estimate_foreground(image, small)
    seen = small > 0
    assert np.abs(boxed - whole)[seen].max() < 1e-5
    assert np.array_equal(boxed[:40], image.astype(np.float32)[:40])   # beyond the boxes' reach: untouched


def test_decontamination_takes_uint8():
    image, alpha, fg, _ = composite(64, seed=2)
    a8 = (alpha * 255).round().astype(np.uint8)
    i8 = (image * 255).round().astype(np.uint8)
    out = matting.estimate_foreground(i8, a8)
    assert out.shape == image.shape and np.abs(out - matting.estimate_foreground(image, alpha)).max() < 0.05
