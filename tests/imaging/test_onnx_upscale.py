"""The onnx_sr engine on installed Conv + DepthToSpace super-resolution models: each factor with its model, a 4x
model for factor 2 (Lanczos down to the size), the default choice, output equal to whole-frame inference, alpha
kept without halos, one session across images, the model pinned by sha256, cancel, refusals.

Tolerance: the models have a receptive field of 3 px (layers=3) and the engine's overlap is 8 (4 px of blended
context), so the engine's PNG equals whole-frame inference rounded to uint8 within one level (float rounding
in the blend can move a value across a rounding boundary).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image, ImageDraw

from iat.cancel import Cancelled
from iat.engines.base import EngineContext
from iat.engines.onnx_upscale import OnnxUpscaleEngine, choose_model, fill_transparent
from iat.errors import EngineError, InvalidParams
from iat.imaging import tiling
from tests.onnx_models import install
from tests.onnx_models.superres import conv_depth_to_space

OPTS = {"tile": 32, "overlap": 8}   # small tiles: several per test image


def add_model(app, tmp_path, scale: int, name: str | None = None, **kw):
    return install(app.models, conv_depth_to_space(scale, layers=3, **kw), name or f"sr{scale}", "super_resolution",
                   tmp_path)


def whole_frame(app, model, rgb: np.ndarray) -> np.ndarray:
    session = app.models.session(model)
    return tiling.upscale_whole(rgb, lambda x: session.run(None, {"x": x})[0], model.entry.scale)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(app, src, dst, **options):
    return OnnxUpscaleEngine().process(src, dst, {**OPTS, **options}, ctx=EngineContext(app))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_each_factor_runs_its_model_tiled_as_whole_frame_would(app, tmp_path, factor):
    models = {s: add_model(app, tmp_path, s) for s in (2, 3, 4)}
    rgb = noise(70, 101, seed=factor)   # 3 x 4 tiles of 32, none dividing the image
    Image.fromarray(rgb).save(tmp_path / "in.png")
    result = run(app, tmp_path / "in.png", tmp_path / "out.png", factor=factor)
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "RGB" and out.size == (101 * factor, 70 * factor) == (result.width, result.height)
    meta = result.meta
    assert (meta["engine"], meta["model"], meta["scale"], meta["factor"]) == ("onnx_sr", f"sr{factor}", factor, factor)
    assert meta["sha256"] == models[factor].entry.sha256 and meta["tiles"] == 3 * 4
    assert (meta["tile"], meta["overlap"]) == (32, 8) and meta["providers"] == ["CPUExecutionProvider"]
    reference = whole_frame(app, models[factor], rgb)
    assert np.abs(np.asarray(out).astype(int) - reference).max() <= 1


def test_a_4x_model_makes_a_2x_image_through_a_lanczos_downscale(app, tmp_path):
    model = add_model(app, tmp_path, 4)
    rgb = noise(40, 56)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    result = run(app, tmp_path / "in.png", tmp_path / "out.png", factor=2)
    assert (result.meta["model"], result.meta["scale"], result.width, result.height) == ("sr4", 4, 112, 80)
    reference = np.asarray(Image.fromarray(whole_frame(app, model, rgb)).resize((112, 80), Image.Resampling.LANCZOS))
    assert np.abs(np.asarray(Image.open(tmp_path / "out.png")).astype(int) - reference).max() <= 1


def test_the_default_model_has_the_factors_scale_else_the_smallest_above(app, tmp_path):
    assert choose_model(app.models, 2) is None
    add_model(app, tmp_path, 4)
    add_model(app, tmp_path, 2)
    add_model(app, tmp_path, 4, name="another4", seed=1)
    assert [choose_model(app.models, f).name for f in (2, 3, 4)] == ["sr2", "sr4", "sr4"]
    app.models.remove("sr4")
    assert choose_model(app.models, 3).name == "another4"
    app.models.remove("another4")
    assert choose_model(app.models, 3) is None   # a 2x model never makes a 3x image


def test_alpha_is_kept_without_halos_and_transparent_px_are_zeroed(app, tmp_path):
    add_model(app, tmp_path, 2)
    size = 64
    big = Image.new("RGBA", (size * 5, size * 5), (0, 0, 0, 0))
    ImageDraw.Draw(big).ellipse([size, size, size * 4, size * 4], fill=(230, 20, 20, 255))
    rgba = np.asarray(big.resize((size, size), Image.Resampling.BOX)).copy()
    rgba[rgba[..., 3] > 0, :3] = (230, 20, 20)
    rgba[rgba[..., 3] == 0, :3] = (0, 255, 0)   # leftover backdrop under full transparency
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    run(app, tmp_path / "in.png", tmp_path / "out.png", factor=2)
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (128, 128, 4)
    alpha_ref = np.asarray(Image.fromarray(rgba[..., 3], "L").resize((128, 128), Image.Resampling.LANCZOS))
    assert np.array_equal(out[..., 3], alpha_ref)
    covered = out[..., 3] > 0
    edge = covered & (out[..., 3] < 255)
    assert edge.sum() > 50
    assert out[covered][:, 1].max() <= 40 and out[covered][:, 0].min() >= 180   # red to the edge, no green
    assert (out[~covered] == 0).all()
    # Without the fill the model blends the backdrop into the edge: the check above would fail.
    session = app.models.session(app.models.get("sr2"))
    naive = tiling.upscale_whole(np.ascontiguousarray(rgba[..., :3]), lambda x: session.run(None, {"x": x})[0], 2)
    assert naive[edge][:, 1].max() > 100
    filled = fill_transparent(rgba[..., :3], rgba[..., 3])
    assert np.array_equal(filled[rgba[..., 3] > 0], rgba[rgba[..., 3] > 0][:, :3])
    assert np.abs(filled[rgba[..., 3] == 0].astype(int) - (230, 20, 20)).max() == 0


def test_one_session_serves_every_image(app, tmp_path):
    add_model(app, tmp_path, 2)
    before = app.models.sessions.builds
    for i in range(3):
        Image.fromarray(noise(30 + i, 40, seed=i)).save(tmp_path / f"in{i}.png")
        run(app, tmp_path / f"in{i}.png", tmp_path / f"out{i}.png", factor=2)
    assert app.models.sessions.builds == before + 1


def test_available_says_why_not(app, tmp_path):
    engine = OnnxUpscaleEngine()
    assert not engine.available().ready and "context" in engine.available().reason
    status = engine.available(EngineContext(app))
    assert not status.ready and "super_resolution" in status.reason
    add_model(app, tmp_path, 2)
    assert engine.available(EngineContext(app)).ready


def test_refusals(app, tmp_path):
    Image.fromarray(noise(20, 20)).save(tmp_path / "in.png")
    with pytest.raises(EngineError) as info:   # no model at all
        run(app, tmp_path / "in.png", tmp_path / "out.png", factor=2)
    assert info.value.details["reason"] == "no_model"
    model = add_model(app, tmp_path, 2)
    for bad in ({"factor": 5}, {"tile": 16}, {"tile": 32, "overlap": 17}, {"model": "Bad Name"}, {"scale": 2},
                {"factor": 3, "model": "sr2"}):
        with pytest.raises(InvalidParams):
            run(app, tmp_path / "in.png", tmp_path / "out.png", **{"factor": 2, **bad})
    with pytest.raises(EngineError) as info:
        run(app, tmp_path / "in.png", tmp_path / "out.png", model="nope")
    assert info.value.details["reason"] == "model_missing"
    with pytest.raises(EngineError) as info:   # pinned to another file: a replay must not run a changed model
        run(app, tmp_path / "in.png", tmp_path / "out.png", model="sr2", sha256="0" * 64)
    assert info.value.details["reason"] == "model_changed"
    run(app, tmp_path / "in.png", tmp_path / "ok.png", model="sr2", sha256=model.entry.sha256)
    with pytest.raises(EngineError):
        OnnxUpscaleEngine().process(tmp_path / "in.png", tmp_path / "out.png", {"factor": 2})   # no context
    Image.new("RGB", (9000, 1)).save(tmp_path / "wide.png")
    with pytest.raises(InvalidParams, match="16384"):
        run(app, tmp_path / "wide.png", tmp_path / "out.png", factor=2)
    add_model(app, tmp_path, 4)   # a 4x model's intermediate for a 2x image is over the limit too
    Image.new("RGB", (5000, 1)).save(tmp_path / "wide.png")
    with pytest.raises(InvalidParams, match="intermediate"):
        run(app, tmp_path / "wide.png", tmp_path / "out.png", factor=2, model="sr4")
    assert not (tmp_path / "out.png").exists()


class CancelAfter(threading.Event):
    """A cancel event that becomes set at its n-th check: cancel at a known point without timing."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.checks = n, 0

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks >= self.n:
            self.set()
        return super().is_set()


def test_cancel_stops_between_tiles_and_writes_nothing(app, tmp_path):
    add_model(app, tmp_path, 2)
    Image.fromarray(noise(100, 100)).save(tmp_path / "in.png")   # 16 tiles
    for n in (1, 2, 5, 17):
        cancel = CancelAfter(n)
        with pytest.raises(Cancelled):
            OnnxUpscaleEngine().process(tmp_path / "in.png", tmp_path / "out.png", {**OPTS, "factor": 2},
                                        cancel=cancel, ctx=EngineContext(app))
        assert cancel.checks == n and not (tmp_path / "out.png").exists()
    cancel = CancelAfter(10**6)
    OnnxUpscaleEngine().process(tmp_path / "in.png", tmp_path / "out.png", {**OPTS, "factor": 2}, cancel=cancel,
                                ctx=EngineContext(app))
    assert cancel.checks >= 16 + 1   # once before the model, once per tile, and before writing


def test_a_fixed_size_model_gets_tiles_that_fit_it(app, tmp_path):
    """A model exported for 48x48 inputs only: tiles of 48 - 2*8, padded; equal to the same weights run on the
    whole frame except within the receptive field of the right and bottom borders, where edge padding stands in
    for zeros."""
    fixed = add_model(app, tmp_path, 2, name="fixed", static_side=48)
    dynamic = add_model(app, tmp_path, 2, name="dynamic")   # the same seed: the same weights
    rgb = noise(70, 90)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    result = run(app, tmp_path / "in.png", tmp_path / "out.png", model="fixed", tile=256, overlap=8)
    assert result.meta["tile"] == 32 and result.meta["model"] == "fixed" and fixed.entry.io.inputs[0].shape[2] == 48
    out = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    reference = whole_frame(app, dynamic, rgb)
    edge = 3 * 2   # the field (3 px) at scale 2
    assert np.abs(out[:-edge, :-edge] - reference[:-edge, :-edge]).max() <= 1
    assert np.abs(out - reference).max() > 1   # where the padding differs: the comparison can see it


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (9, 2), (33, 65), (1030, 40)])   # odd sides, more rows than a chunk
def test_the_fill_takes_the_colour_of_the_covered_px_around_each_hole(h, w):
    rng = np.random.default_rng(h * w)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = (rng.random((h, w)) > 0.6).astype(np.uint8) * 255
    alpha[0, 0] = 255
    filled = fill_transparent(rgb, alpha)
    assert np.array_equal(filled[alpha > 0], rgb[alpha > 0])
    # red and blue covered px, a green backdrop in the holes: the holes take mixes of red and blue, never green
    two = np.zeros((h, w, 3), np.uint8)
    two[:, : (w + 1) // 2] = (200, 10, 10)
    two[:, (w + 1) // 2:] = (10, 10, 200)
    holes = alpha == 0
    two[holes] = (0, 255, 0)
    out = fill_transparent(two, alpha)
    assert out[..., 1].max() <= 10 or not holes.any()
