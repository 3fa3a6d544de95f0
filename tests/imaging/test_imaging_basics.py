"""The building blocks: OKLab conversion, perceptual hash, connected components, box filters, PNG I/O."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from iat.errors import InvalidParams
from iat.imaging import components, filters
from iat.imaging.io import open_image, png_bytes, save_png
from iat.imaging.oklab import chroma, hex_to_oklab, hex_to_rgb8, oklab_to_srgb8, srgb8_to_oklab
from iat.imaging.phash import hamming, phash

from imaging_art import gallery


def test_oklab_reference_values_and_round_trip():
    lab = hex_to_oklab(["#ffffff", "#000000", "#808080", "#ff0000", "#0000ff"])
    assert lab[0] == pytest.approx([1.0, 0.0, 0.0], abs=1e-5)
    assert lab[1] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert lab[2][0] == pytest.approx(0.5999, abs=1e-3)
    # Ottosson's published values for sRGB red and blue
    assert lab[3] == pytest.approx([0.62796, 0.22486, 0.12585], abs=1e-4)
    assert lab[4] == pytest.approx([0.45201, -0.03246, -0.31153], abs=1e-4)
    assert chroma(lab[3]) == pytest.approx(0.2577, abs=1e-4)
    rgb = np.random.default_rng(0).integers(0, 256, (200_000, 3)).astype(np.uint8)
    assert np.array_equal(oklab_to_srgb8(srgb8_to_oklab(rgb)), rgb)
    with pytest.raises(ValueError):
        hex_to_rgb8("#12345")


def test_phash_is_stable_under_small_changes_and_tells_pictures_apart():
    arts = gallery((256, 256))
    img = arts["flat_white"].image()
    h = phash(img)
    assert len(h) == 16 and int(h, 16) >= 0
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    variants = [img.resize((180, 180)), img.filter(ImageFilter.GaussianBlur(1.5)), Image.open(buf),
                ImageEnhance.Brightness(img).enhance(0.9)]
    assert all(hamming(h, phash(v)) <= 6 for v in variants)
    assert hamming(h, phash(arts["very_noisy_gray"].image())) > 16
    assert hamming(h, h) == 0
    with pytest.raises(ValueError):
        hamming(h, h[:8])


def _brute_labels(mask: np.ndarray, conn: int) -> int:
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if conn == 8 else [])
    count = 0
    for i in range(h):
        for j in range(w):
            if mask[i, j] and not seen[i, j]:
                count += 1
                stack = [(i, j)]
                seen[i, j] = True
                while stack:
                    y, x = stack.pop()
                    for dy, dx in steps:
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
    return count


@pytest.mark.parametrize("conn", [4, 8])
def test_components_match_a_flood_fill(conn):
    rng = np.random.default_rng(conn)
    for _ in range(20):
        mask = rng.random((30, 41)) > rng.uniform(0.3, 0.7)
        comp = components.label(mask, connectivity=conn)
        assert comp.count == _brute_labels(mask, conn)
        assert len(set(zip(comp.labels[mask].tolist(), np.nonzero(mask)[0].tolist()))) >= comp.count
        assert (comp.labels[~mask] == 0).all() and comp.areas[1:].sum() == mask.sum()
        assert len(np.unique(comp.labels[mask])) == comp.count


def test_remove_small_and_fill_holes():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:7, 5:7] = False          # a 4-px hole
    m[16, 16] = True             # a speck
    assert not components.remove_small(m, 2)[16, 16] and components.remove_small(m, 2)[2, 2]
    assert components.fill_holes(m)[5, 5] and not components.fill_holes(m, max_area=3)[5, 5]
    m[0, 18] = True              # a piece on the image border
    comp = components.label(m)
    assert comp.touches_border[comp.labels[0, 18]] and not comp.touches_border[comp.labels[2, 2]]


def test_box_filters_and_morphology():
    a = np.random.default_rng(0).random((13, 17)).astype(np.float32)
    ref = np.array([[a[max(0, i - 2):i + 3, max(0, j - 2):j + 3].mean() for j in range(17)] for i in range(13)])
    assert np.allclose(filters.box_mean(a, 2), ref, atol=1e-5)
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    assert filters.dilate(m, 2).sum() == 25 and filters.erode(filters.dilate(m, 2), 1).sum() == 9
    assert filters.boundary(filters.dilate(m, 2)).sum() == 16


def test_png_io_is_deterministic_and_atomic(tmp_path):
    img = gallery((64, 64))["flat_green"].image()
    assert png_bytes(img, {"run": "1", "prompt": "a"}) == png_bytes(img, {"prompt": "a", "run": "1"})
    save_png(img, tmp_path / "a.png", {"run": "1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    back = Image.open(tmp_path / "a.png")
    assert back.text == {"run": "1"} and np.array_equal(np.asarray(back), np.asarray(img))
    with pytest.raises(InvalidParams) as info:
        open_image(b"GIF89a garbage")
    assert info.value.details["reason"] == "unreadable"
