"""Tiled inference (iat.imaging.tiling): the blend weights are a partition of unity, tiled output equals whole-frame
output for tile sizes that do and do not divide the image, non-square images and images smaller than one tile,
with numpy models and with ONNX super-resolution models of scale 2, 3 and 4; the model never gets more than one
tile, the float memory is one band, cancel stops between tiles.

Tolerances, and why: a model whose receptive field reaches at most overlap/2 input px sees, wherever a tile's
weight is nonzero, exactly the pixels the whole frame gives it, so tiled and whole-frame differ only by float32
rounding in the blend (w*a + (1-w)*b with a == b up to ~1e-7): FLOAT_TOL on [0, 1] values, at most one uint8 level
after rounding. A wider field (more layers than the overlap covers) leaves real but small differences, which
the ramp spreads out: bounded here, and far below the seams of tiles cut without overlap.
"""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from iat.cancel import Cancelled
from iat.imaging import tiling
from tests.onnx_models import save
from tests.onnx_models.srvgg import srvgg
from tests.onnx_models.superres import conv_depth_to_space

FLOAT_TOL = 2e-6


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def nearest(scale: int):
    def fn(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, scale, 2), scale, 3)
    return fn


def box_blur(scale: int, radius: int):
    """A (2r+1)^2 box blur with zero padding, then nearest upsampling: a receptive field of `radius` px."""
    def fn(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        p = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
        k = 2 * radius + 1
        y = sum(p[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)) / (k * k)
        return np.repeat(np.repeat(y, scale, 2), scale, 3).astype(np.float32)
    return fn


def both(rgb: np.ndarray, fn, scale: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(tiled, whole-frame) as float values."""
    shape = (rgb.shape[0] * scale, rgb.shape[1] * scale, 3)
    tiled = tiling.upscale_tiled(rgb, fn, scale, out=np.empty(shape, np.float32), **kw)
    whole = tiling.upscale_whole(rgb, fn, scale, out=np.empty(shape, np.float32))
    return tiled, whole


def ort_fn(tmp_path, proto):
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    save(proto, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


@pytest.mark.parametrize("size,tile,overlap,scale", [(100, 32, 8, 2), (128, 32, 16, 4), (257, 256, 16, 3),
                                                     (20, 64, 8, 2), (97, 40, 0, 2), (64, 64, 32, 1)])
def test_blend_weights_sum_to_one_at_every_output_px(size, tile, overlap, scale):
    spans = tiling.spans(size, tile, overlap, scale)
    total = np.zeros(size * scale)
    for s in spans:
        total[s.lo * scale:s.hi * scale] += s.weight
        assert s.hi - s.lo <= tile + 2 * overlap
        assert (s.weight[:s.nz_lo - s.lo * scale] == 0).all() and (s.weight[s.nz_hi - s.lo * scale:] == 0).all()
    assert np.abs(total - 1).max() < 1e-6
    # cores of equal size (+-1), none larger than the tile: no sliver at the edge
    sizes = np.diff(tiling.cores(size, tile))
    assert sizes.max() <= tile and sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("h,w,tile,overlap", [
    (128, 128, 32, 8),    # tiles divide the image
    (77, 131, 32, 8),     # they do not, non-square
    (131, 77, 40, 12),
    (20, 13, 64, 16),     # smaller than one tile
    (65, 64, 64, 16),     # one px more than a tile
])
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_tiled_equals_whole_frame_when_the_field_fits_the_overlap(h, w, tile, overlap, scale):
    rgb = image(h, w)
    for fn in (nearest(scale), box_blur(scale, overlap // 2)):
        tiled, whole = both(rgb, fn, scale, tile=tile, overlap=overlap)
        assert np.abs(tiled - whole).max() <= FLOAT_TOL
    out = tiling.upscale_tiled(rgb, box_blur(scale, overlap // 2), scale, tile=tile, overlap=overlap)
    ref = tiling.upscale_whole(rgb, box_blur(scale, overlap // 2), scale)
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - ref).max() <= 1


def test_a_field_wider_than_the_overlap_shows_without_it():
    """The check above can fail: with no overlap the zero padding at each tile's edge makes seams."""
    rgb = image(96, 96)
    tiled, whole = both(rgb, box_blur(2, 3), 2, tile=32, overlap=0)
    assert np.abs(tiled - whole).max() > 0.05


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("h,w,tile", [(96, 96, 32), (70, 101, 32), (24, 18, 64)])
def test_onnx_super_resolution_tiled_equals_whole_frame(tmp_path, scale, h, w, tile):
    fn = ort_fn(tmp_path, conv_depth_to_space(scale, layers=3))   # a receptive field of 3 px, overlap/2 = 4
    rgb = image(h, w, seed=scale)
    tiled, whole = both(rgb, fn, scale, tile=tile, overlap=8)
    assert tiled.shape == (h * scale, w * scale, 3)
    assert np.abs(tiled - whole).max() <= 1e-5   # onnxruntime's conv kernels may sum in another order per size
    out = tiling.upscale_tiled(rgb, fn, scale, tile=tile, overlap=8)
    assert np.abs(out.astype(int) - tiling.upscale_whole(rgb, fn, scale)).max() <= 1


def test_a_receptive_field_wider_than_the_overlap_blends_small_differences(tmp_path):
    """SRVGG-style, 10 conv layers (a field of 10 px) with overlap 8 (4 px of context that carries no weight):
    tiles see a truncated field near their seams; the ramp keeps the difference well under one level on average
    and a few levels at most (0.7 measured), where cutting tiles without overlap leaves seams (23 levels)."""
    fn = ort_fn(tmp_path, srvgg(2, feats=16, convs=8))
    rgb = image(96, 96)
    tiled, whole = both(rgb, fn, 2, tile=32, overlap=8)
    diff = np.abs(tiled - whole) * 255
    assert 0 < diff.max() <= 3 and diff.mean() < 0.05
    cut, _ = both(rgb, fn, 2, tile=32, overlap=0)
    assert (np.abs(cut - whole) * 255).max() > 5 * diff.max()
    wide, _ = both(rgb, fn, 2, tile=40, overlap=20)   # the field fits in overlap/2: float noise only
    assert np.abs(wide - whole).max() <= 1e-5


def _traced_peak(rgb, fn, scale, tile, overlap) -> tuple[int, np.ndarray]:
    out = np.empty((rgb.shape[0] * scale, rgb.shape[1] * scale, 3), np.uint8)   # allocated before tracing
    tracemalloc.start()
    try:
        tiling.upscale_tiled(rgb, fn, scale, tile=tile, overlap=overlap, out=out)
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def test_the_model_gets_one_tile_at_a_time_and_float_memory_is_one_band():
    h, w, scale, tile, overlap = 768, 256, 4, 64, 8
    rgb = image(h, w)
    shapes = []
    blur = box_blur(scale, 2)

    def fn(x: np.ndarray) -> np.ndarray:
        shapes.append(x.shape)
        return blur(x)

    peak, out = _traced_peak(rgb, fn, scale, tile, overlap)
    assert len(shapes) == tiling.tile_count(h, w, tile) == 12 * 4
    assert all(s[0] == 1 and s[1] == 3 and s[2] <= tile + 2 * overlap and s[3] <= tile + 2 * overlap
               for s in shapes)
    whole_float = h * scale * w * scale * 3 * 4          # a float32 frame of the output: 37.7 MB
    band = (tile + overlap) * scale * w * scale * 3 * 4  # the accumulator: one band of tile rows, 3.5 MB
    tile_float = (tile + 2 * overlap) ** 2 * scale ** 2 * 3 * 4 * 4   # the model's output and the box blur's temps
    assert peak <= band + tile_float + 2_000_000, (peak, band, tile_float)   # measured: 6.3 MB
    assert peak < whole_float / 5
    assert np.abs(out.astype(int) - tiling.upscale_whole(rgb, blur, scale)).max() <= 1
    # O(band), not O(frame): a quarter of the height (a quarter of the frame) needs as much.
    short, _ = _traced_peak(rgb[:h // 4], blur, scale, tile, overlap)
    assert abs(peak - short) < 0.05 * peak, (peak, short)


def test_cancel_is_checked_before_each_tile_and_progress_reported_after_each():
    rgb = image(100, 100)
    cancel = threading.Event()
    calls, seen = [], []

    def fn(x):
        calls.append(x.shape)
        return nearest(2)(x)

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        tiling.upscale_tiled(rgb, fn, 2, tile=32, overlap=8, cancel=cancel, progress=progress)
    assert len(calls) == 3 and seen == [(1, 16), (2, 16), (3, 16)]


def test_bad_geometry_and_model_outputs_are_refused():
    with pytest.raises(ValueError, match="half the tile"):
        tiling.upscale_tiled(image(40, 40), nearest(2), 2, tile=32, overlap=17)
    with pytest.raises(ValueError, match="returned"):
        tiling.upscale_tiled(image(40, 40), nearest(3), 2, tile=32, overlap=8)   # not the scale asked for
