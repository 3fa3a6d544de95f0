"""The Lanczos upscaler: factors, alpha edges without halos, refusals, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from iat.engines.lanczos import LanczosEngine, upscale
from iat.errors import InvalidParams


def _disc_rgba(size: int = 96) -> np.ndarray:
    """A red anti-aliased disc; the colour under full transparency is green, as leftovers often are."""
    big = Image.new("RGBA", (size * 5, size * 5), (0, 0, 0, 0))
    ImageDraw.Draw(big).ellipse([size, size, size * 4, size * 4], fill=(230, 20, 20, 255))
    small = np.asarray(big.resize((size, size), Image.Resampling.BOX)).copy()
    small[small[..., 3] > 0, :3] = (230, 20, 20)   # the true colour wherever there is any coverage
    small[small[..., 3] == 0, :3] = (0, 255, 0)
    return small


def _straight_alpha_resize(rgba: np.ndarray, factor: int) -> np.ndarray:
    """What resampling each channel on its own (no premultiplication) gives: the reference for halos."""
    h, w = rgba.shape[:2]
    chans = [np.asarray(Image.fromarray(rgba[..., c], "L").resize((w * factor, h * factor),
                                                                   Image.Resampling.LANCZOS)) for c in range(4)]
    return np.dstack(chans)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upscales_by_the_factor_keeping_alpha_edges_clean(tmp_path, factor):
    rgba = _disc_rgba()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    result = LanczosEngine().process(tmp_path / "in.png", tmp_path / "out.png", {"factor": factor})
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert (result.width, result.height) == (96 * factor, 96 * factor) == out.shape[1::-1]
    assert Image.open(tmp_path / "out.png").mode == "RGBA"
    edge = (out[..., 3] > 0) & (out[..., 3] < 255)
    assert edge.sum() > 100
    assert np.abs(out[out[..., 3] > 0][:, :3].astype(int) - (230, 20, 20)).max() <= 2   # red, no green halo
    naive = _straight_alpha_resize(rgba, factor)
    naive_edge = (naive[..., 3] > 0) & (naive[..., 3] < 255)
    assert naive[naive_edge][:, 1].max() > 100   # the halo the premultiplied resize avoids
    # the silhouette is the disc at the new size: centre 48, radius 28.8 source pixels
    n = 96 * factor
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / factor
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 < 28.8 ** 2
    opaque = out[..., 3] > 127
    assert (opaque & disc).sum() / (opaque | disc).sum() > 0.98


def test_rgb_stays_rgb_and_matches_pillow(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    LanczosEngine().process(tmp_path / "in.png", tmp_path / "out.png", {"factor": 2})
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "RGB" and out.size == (60, 80)
    ref = Image.fromarray(rgb).resize((60, 80), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(out), np.asarray(ref))


@pytest.mark.parametrize("options", [{"factor": 1}, {"factor": 5}, {"factor": "2"}, {"factor": 2.5}, {"scale": 2}])
def test_other_factors_are_refused(tmp_path, options):
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    with pytest.raises(InvalidParams):
        LanczosEngine().process(tmp_path / "in.png", tmp_path / "out.png", options)
    assert not (tmp_path / "out.png").exists()


def test_too_large_output_is_refused(tmp_path):
    Image.new("RGB", (5000, 1)).save(tmp_path / "in.png")
    with pytest.raises(InvalidParams):
        LanczosEngine().process(tmp_path / "in.png", tmp_path / "out.png", {"factor": 4})


def test_same_input_gives_identical_bytes(tmp_path):
    Image.fromarray(_disc_rgba(), "RGBA").save(tmp_path / "in.png")
    LanczosEngine().process(tmp_path / "in.png", tmp_path / "a.png", {"factor": 3})
    LanczosEngine().process(tmp_path / "in.png", tmp_path / "b.png", {"factor": 3})
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_upscale_function_leaves_transparent_pixels_black():
    rgba = _disc_rgba(32)
    rgb, alpha = upscale(rgba[..., :3], rgba[..., 3], 2)
    assert (rgb[alpha == 0] == 0).all()
