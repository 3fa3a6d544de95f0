"""Colour correction toward a style guide: white balance, palette pull, chroma clamp; alpha untouched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from iat.imaging.color import ColorCorrection, correct_arrays, correct_colors
from iat.imaging.oklab import chroma, hex_to_oklab, linear_to_srgb, srgb8_to_oklab, srgb_to_linear
from iat.imaging.quality import check_image


def _scene() -> np.ndarray:
    """Grey patches and pairs of opposite colours: the scene's average is neutral."""
    img = np.zeros((128, 256, 3), np.uint8)
    img[:, :64] = 128
    img[:, 64:128] = 200
    img[:, 128:160] = (200, 60, 60)
    img[:, 160:192] = (60, 200, 200)
    img[:, 192:224] = (60, 60, 200)
    img[:, 224:] = (200, 200, 60)
    return img


def _cast(img: np.ndarray, gains) -> np.ndarray:
    lin = srgb_to_linear(img / 255.0) * np.asarray(gains, np.float32)
    return np.floor(linear_to_srgb(lin) * 255 + 0.5).astype(np.uint8)


def _grey_cast(img: np.ndarray) -> float:
    """Mean OKLab chroma of the grey patches."""
    return float(chroma(srgb8_to_oklab(img[:, :128])).mean())


@pytest.mark.parametrize("method", ["gray_world", "white_patch"])
def test_a_warm_cast_goes_back_to_neutral(method):
    scene = _scene()
    warm = _cast(scene, (1.25, 1.0, 0.75))
    assert _grey_cast(warm) > 0.025
    out, facts = correct_arrays(warm, None, ColorCorrection(white_balance=method))
    assert _grey_cast(out) < 0.004
    gains = facts["white_balance_gains"]
    assert gains[0] < 1 < gains[2]   # red down, blue up
    # lightness kept: the grey patches keep their OKLab L
    assert abs(float(srgb8_to_oklab(out[:, :128])[..., 0].mean() - srgb8_to_oklab(warm[:, :128])[..., 0].mean())) < 0.02


def test_gains_are_bounded_and_strength_tempers_them():
    warm = _cast(_scene(), (2.5, 1.0, 0.4))
    _, facts = correct_arrays(warm, None, ColorCorrection(max_gain=1.5))
    assert all(1 / 1.5 - 1e-6 <= g <= 1.5 + 1e-6 for g in facts["white_balance_gains"])
    _, half = correct_arrays(_cast(_scene(), (1.25, 1.0, 0.75)), None,
                             ColorCorrection(white_balance_strength=0.5))
    _, full = correct_arrays(_cast(_scene(), (1.25, 1.0, 0.75)), None, ColorCorrection())
    assert abs(half["white_balance_gains"][2] - 1) < abs(full["white_balance_gains"][2] - 1)


def test_max_chroma_is_respected_with_lightness_and_hue_kept():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)
    before = srgb8_to_oklab(img)
    assert chroma(before).max() > 0.3
    out, facts = correct_arrays(img, None, ColorCorrection(max_chroma=0.12, white_balance="none"))
    after = srgb8_to_oklab(out)
    assert chroma(after).max() <= 0.12 and facts["chroma_max_after"] <= 0.12
    assert float(np.abs(after[..., 0] - before[..., 0]).mean()) < 0.005
    strong = chroma(after) > 0.05
    hue_before = np.arctan2(before[..., 2], before[..., 1])[strong]
    hue_after = np.arctan2(after[..., 2], after[..., 1])[strong]
    assert float(np.abs(np.angle(np.exp(1j * (hue_after - hue_before)))).mean()) < 0.05
    untouched = chroma(before) < 0.1
    assert np.abs(out[untouched].astype(int) - img[untouched]).max() <= 1


def test_palette_pull_brings_colours_toward_the_palette():
    rng = np.random.default_rng(1)
    img = rng.integers(40, 220, (96, 96, 3)).astype(np.uint8)
    palette = ["#b03a2e", "#2e5cb0", "#d9c9a3", "#3c7a3c"]
    opts = dict(white_balance="none")
    dist = {}
    for strength in (0.0, 0.5, 1.0):
        out, _ = correct_arrays(img, None, ColorCorrection(palette=palette, palette_strength=strength, **opts))
        if strength == 0:
            assert np.array_equal(out, img)
        dist[strength] = check_image(Image.fromarray(out), palette=palette).check("palette")["value"]
    assert dist[1.0] < dist[0.5] < dist[0.0]
    out, _ = correct_arrays(img, None, ColorCorrection(palette=palette, palette_strength=1.0, **opts))
    lab_in, lab_out = srgb8_to_oklab(img), srgb8_to_oklab(out)
    assert float(np.abs(lab_out[..., 0] - lab_in[..., 0]).mean()) < 0.02   # lightness kept


def test_alpha_is_kept_and_transparent_pixels_do_not_steer_white_balance():
    scene = _scene()
    rgba = np.zeros((128, 512, 4), np.uint8)
    rgba[:, :256, :3] = scene
    rgba[:, :256, 3] = 255
    rgba[:, 256:, :3] = (255, 0, 255)   # a strong colour under full transparency
    rgba[:, 256:, 3] = 0
    rgba[:, 256:262, 3] = 77   # faint, still not visible
    img = Image.fromarray(rgba, "RGBA")
    out, facts = correct_colors(img, ColorCorrection())
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    assert all(abs(g - 1) < 0.01 for g in facts["white_balance_gains"])   # the visible scene is neutral


def test_deterministic_bytes():
    img = Image.fromarray(_cast(_scene(), (1.2, 1.0, 0.8)))
    opts = ColorCorrection(palette=["#b03a2e", "#2e5cb0"], max_chroma=0.1)
    blobs = []
    for _ in range(2):
        out, _ = correct_colors(img, opts)
        buf = io.BytesIO()
        out.save(buf, "PNG")
        blobs.append(buf.getvalue())
    assert blobs[0] == blobs[1]


def test_bad_options_are_refused():
    with pytest.raises(ValidationError):
        ColorCorrection(palette=["#12345z"])
    with pytest.raises(ValidationError):
        ColorCorrection(max_chroma=-0.01)


def test_a_chroma_limit_of_zero_leaves_greys():
    """A style guide may ask for greys only (max_chroma 0): the correction gives them, not an error."""
    rgb = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    out, _ = correct_colors(Image.fromarray(rgb), ColorCorrection(max_chroma=0))
    assert float(chroma(srgb8_to_oklab(np.asarray(out)).reshape(-1, 3)).max()) < 1e-4
    with pytest.raises(ValidationError):
        ColorCorrection(white_balance="auto")
    assert hex_to_oklab(["#fff"]).shape == (1, 3)
