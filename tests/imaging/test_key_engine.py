"""The key engine on generated flat-background art with a known ground truth (see imaging_art.py)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image, ImageDraw

from iat.engines.base import Cancelled, EngineResult, ImageEngine
from iat.engines.key import KeyEngine, KeyOptions, key_image
from iat.errors import InvalidParams
from iat.imaging.filters import dilate

from imaging_art import SS, SKIN, SHIRT, PANTS, Art, background, character, compose, gallery, iou

WHO = {"head": SKIN, "body": SHIRT, "legs": PANTS}


@pytest.fixture(scope="module")
def arts() -> dict[str, Art]:
    cases = gallery()
    size = (512, 512)
    cases["two_tone_backdrop"] = compose(character(size, WHO), background(size, "split", (150, 200, 240),
                                                                          (90, 160, 80)))
    clean = compose(character(size, WHO), background(size, "vertical", (120, 170, 230), (215, 230, 250)))
    buf = io.BytesIO()
    Image.fromarray(clean.rgb).save(buf, "JPEG", quality=85)
    cases["jpeg_gradient"] = Art(np.asarray(Image.open(buf).convert("RGB")), clean.coverage, clean.fg_rgb)
    return cases


def _key_file(tmp_path, art: Art, options: dict | None = None) -> tuple[np.ndarray, EngineResult]:
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(art.rgb).save(src)
    result = KeyEngine().process(src, dst, options or {})
    out = Image.open(dst)
    assert out.mode == "RGBA" and out.size == (art.rgb.shape[1], art.rgb.shape[0])
    return np.asarray(out), result


CASES = ["flat_white", "flat_green", "flat_dark", "noisy_beige", "very_noisy_gray", "gradient_sky", "diagonal_warm",
         "vignette", "close_to_background", "close_hue", "touching_bottom", "two_subjects", "two_tone_backdrop",
         "jpeg_gradient"]


@pytest.mark.parametrize("name", CASES)
def test_mask_iou_on_flat_background_art(tmp_path, arts, name):
    art = arts[name]
    rgba, result = _key_file(tmp_path, art)
    score = iou(rgba[..., 3] > 127, art.truth)
    assert score >= 0.95, f"{name}: IoU {score:.4f} ({result.meta})"
    assert result.meta["engine"] == "key" and result.width == art.rgb.shape[1]


def test_the_engine_fits_the_interface():
    engine = KeyEngine()
    assert isinstance(engine, ImageEngine)
    assert (engine.code, engine.op) == ("key", "remove_background")
    assert engine.available().ready


def test_background_estimate_ignores_a_subject_touching_the_edge(arts):
    _, _, facts = key_image(arts["touching_bottom"].rgb)
    assert facts["background"] == ["#c8dcf0"]
    _, _, facts = key_image(arts["two_tone_backdrop"].rgb)
    assert sorted(facts["background"]) == sorted(["#96c8f0", "#5aa050"])


def test_edges_are_decontaminated(arts):
    """Composited over magenta, the cut-out's edges match the truth; without un-mixing they carry the backdrop."""
    magenta = np.array([255, 0, 255], np.float32)
    for name in ("flat_white", "gradient_sky"):
        art = arts[name]
        truth = art.fg_rgb * art.coverage[..., None] + magenta * (1 - art.coverage[..., None])
        band = (art.coverage > 0.05) & (art.coverage < 0.95)
        errors = {}
        for deco in (True, False):
            alpha, rgb, _ = key_image(art.rgb, KeyOptions(decontaminate=deco))
            comp = rgb * alpha[..., None] + magenta * (1 - alpha[..., None])
            errors[deco] = float(np.abs(comp - truth)[band].mean())
        assert errors[True] < 3.0 and errors[False] > 10.0, (name, errors)


def test_soft_alpha_follows_coverage(arts):
    art = arts["flat_green"]
    alpha, _, _ = key_image(art.rgb)
    band = (art.coverage > 0.02) & (art.coverage < 0.98)
    assert band.sum() > 500
    assert float(np.abs(alpha[band] - art.coverage[band]).mean()) < 0.05


def test_eye_whites_on_a_white_backdrop_stay_and_a_ring_keeps_its_hole(tmp_path, arts):
    rgba, result = _key_file(tmp_path, arts["flat_white"])
    assert result.meta["holes_filled_px"] > 0
    assert iou(rgba[..., 3] > 127, arts["flat_white"].truth) > 0.99
    size = (256, 256)
    ring = Image.new("RGBA", (size[0] * SS, size[1] * SS), (0, 0, 0, 0))
    d = ImageDraw.Draw(ring)
    d.ellipse([200, 200, 1080, 1080], fill=(200, 50, 50, 255))
    d.ellipse([440, 440, 840, 840], fill=(0, 0, 0, 0))
    art = compose(ring, background(size, "flat", (255, 255, 255)))
    alpha, _, _ = key_image(art.rgb)
    assert alpha[128, 128] == 0.0 and iou(alpha > 0.5, art.truth) > 0.99


def test_line_art_keeps_its_counters_with_fill_holes_off():
    size = (256, 256)
    img = Image.new("RGBA", (size[0] * SS, size[1] * SS), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    rng = np.random.default_rng(3)
    for _ in range(10):
        d.line([tuple(rng.uniform(0.15, 0.85, 2) * SS * size[0]) for _ in range(4)], fill=(20, 20, 20, 255),
               width=int(rng.choice([5, 8, 10])))
    art = compose(img, background(size, "flat", (255, 255, 255)))
    alpha, _, facts = key_image(art.rgb, KeyOptions(fill_holes=0))
    assert facts["holes_filled_px"] == 0
    assert iou(alpha > 0.5, art.truth) >= 0.95


def test_noise_specks_are_removed():
    rng = np.random.default_rng(11)
    art = compose(character((256, 256), WHO), background((256, 256), "flat", (240, 240, 240)))
    rgb = art.rgb.copy()
    ys, xs = rng.integers(0, 256, 40), rng.integers(0, 256, 40)
    keep = ~dilate(art.truth, 3)[ys, xs]     # clear of the subject
    rgb[ys[keep], xs[keep]] = (20, 20, 20)   # single dark pixels on the backdrop
    alpha, _, facts = key_image(rgb)
    assert facts["specks_removed_px"] >= len(set(zip(ys[keep], xs[keep])))
    assert not (alpha[ys[keep], xs[keep]] > 0).any()
    assert iou(alpha > 0.5, art.truth) > 0.99


def test_an_existing_cutout_keeps_its_alpha(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (0, 255, 0)          # leftover colour under transparency
    rgba[16:48, 16:48] = (200, 30, 30, 255)
    src, dst = tmp_path / "cut.png", tmp_path / "out.png"
    Image.fromarray(rgba, "RGBA").save(src)
    result = KeyEngine().process(src, dst, {})
    out = np.asarray(Image.open(dst))
    assert result.meta["already_transparent"] is True
    assert np.array_equal(out[..., 3], rgba[..., 3])
    assert (out[out[..., 3] == 0][:, :3] == 0).all()


def test_given_background_colour_is_used(arts):
    art = arts["flat_green"]
    alpha, _, facts = key_image(art.rgb, KeyOptions(background=["#28c846"]))
    assert facts["background"] == ["#28c846"]
    assert iou(alpha > 0.5, art.truth) >= 0.95


def test_same_input_gives_byte_identical_png(tmp_path, arts):
    src = tmp_path / "in.png"
    Image.fromarray(arts["noisy_beige"].rgb).save(src)
    KeyEngine().process(src, tmp_path / "a.png", {})
    KeyEngine().process(src, tmp_path / "b.png", {})
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("options", [{"lo": 0.1}, {"low": 0.1, "high": 0.05}, {"background": ["#zz0000"]},
                                     {"ring": 0}, {"fill_holes": 2}])
def test_bad_options_are_invalid_params(tmp_path, options):
    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "in.png")
    with pytest.raises(InvalidParams):
        KeyEngine().process(tmp_path / "in.png", tmp_path / "out.png", options)
    assert not (tmp_path / "out.png").exists()


def test_unreadable_source_is_invalid_params(tmp_path):
    (tmp_path / "in.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InvalidParams) as info:
        KeyEngine().process(tmp_path / "in.png", tmp_path / "out.png", {})
    assert str(tmp_path) not in info.value.message


def test_cancel_writes_nothing(tmp_path, arts):
    Image.fromarray(arts["flat_green"].rgb).save(tmp_path / "in.png")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        KeyEngine().process(tmp_path / "in.png", tmp_path / "out.png", {}, cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (9, 7)])
def test_tiny_images_do_not_break(tmp_path, size):
    Image.new("RGB", size, (250, 250, 250)).save(tmp_path / "in.png")
    result = KeyEngine().process(tmp_path / "in.png", tmp_path / "out.png", {})
    assert (result.width, result.height) == size
