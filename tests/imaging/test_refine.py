"""The refine pass: ViTMatte through an installed matting model (a small model with ViTMatte's I/O, run on the
App's shared session; rembg's own vitmatte_alpha is the reference for the pre- and post-processing), closed-form
matting when none is installed, the time bound, and the background-removal chain with refine (recorded; a
failure or a rejected refinement keeps the accepted cut-out)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from iat.engines import default_engines
from iat.engines.base import Cancelled, EngineContext, EngineResult, EngineStatus
from iat.engines.chain import remove_background
from iat.engines.mask_check import MaskThresholds
from iat.engines.refine import mask_png, refine, vitmatte_alpha
from iat.errors import EngineError, InvalidParams
from iat.imaging import matting
from iat.plugins import LazyRegistry
from tests.onnx_models import install
from tests.onnx_models.matting import colour_projection
from tests.onnx_models.superres import conv_depth_to_space

from test_matting import composite

FG = np.array([0.9, 0.25, 0.15])
BG = np.array([0.15, 0.7, 0.35])


class Scene:
    """A two-colour composite with a known alpha (a blob with hair-like strands), and the coarse cut-out a
    segmentation engine would give for it (the hard mask: the strands' soft pixels lost)."""

    def __init__(self, folder: Path, n: int = 192):
        _, self.alpha, _, _ = composite(n, seed=7)
        a = self.alpha[..., None]
        self.rgb = np.clip(np.rint((a * FG + (1 - a) * BG) * 255), 0, 255).astype(np.uint8)
        self.coarse = ((self.alpha > 0.5) * 255).astype(np.uint8)
        self.src, self.cutout = folder / "src.png", folder / "cutout.png"
        Image.fromarray(self.rgb).save(self.src)
        Image.fromarray(np.dstack([self.rgb, self.coarse])).save(self.cutout)
        self.band = matting.trimap(self.coarse) == matting.UNKNOWN

    def error(self, alpha8: np.ndarray) -> float:
        return float(np.abs(alpha8 / 255.0 - self.alpha)[self.band].mean())

    def resize_floor(self) -> float:
        """The error of the true alpha itself after rembg's resizes to 1024 and back: the best ViTMatte's
        processing can do on this image."""
        a8 = Image.fromarray(np.rint(self.alpha * 255).astype(np.uint8))
        side = self.alpha.shape[0]
        return self.error(np.asarray(a8.resize((1024, 1024), Image.Resampling.BILINEAR)
                                     .resize((side, side), Image.Resampling.BILINEAR)))


def _rgba(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


@pytest.fixture
def scene(tmp_path) -> Scene:
    return Scene(tmp_path)


@pytest.fixture
def vitmatte(app, tmp_path):
    """A matting model with ViTMatte's I/O that recovers this scene's alpha exactly in the unknown band."""
    return install(app.models, colour_projection(tuple(FG), tuple(BG)), "vitmatte-test", "matting", tmp_path)


# --- ViTMatte ---


def test_vitmatte_path_runs_the_installed_model_with_rembgs_processing(app, scene, vitmatte, tmp_path,
                                                                       monkeypatch):
    import rembg.matting as rembg_matting  # the reference; the product does not import rembg's package

    ctx = EngineContext(app)
    dst = tmp_path / "refined.png"
    result = refine(ctx, scene.src, scene.cutout, dst, {})
    facts = result.meta
    assert facts["method"] == "vitmatte" and facts["requested"] == "auto"
    assert facts["model"] == "vitmatte-test" and facts["model_sha256"] == vitmatte.entry.sha256
    assert facts["sha256"] == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert facts["unknown_pixels"] == int(scene.band.sum()) > 1000 and facts["hit_time_bound"] is False
    out = _rgba(dst)
    assert (result.width, result.height) == (192, 192) and out.shape == (192, 192, 4)
    # rembg's own vitmatte_alpha on the same session gives the same alpha, to the byte.
    session = app.models.session(vitmatte)
    monkeypatch.setitem(rembg_matting._sessions, rembg_matting.DEFAULT_VARIANT, session)
    reference = np.asarray(rembg_matting.vitmatte_alpha(Image.fromarray(scene.rgb), Image.fromarray(scene.coarse)))
    assert np.array_equal(out[..., 3], reference)
    assert np.array_equal(vitmatte_alpha(session, scene.rgb, matting.trimap(scene.coarse)), reference)
    # The model recovers the composite's alpha as well as the resizes to 1024 and back allow (they blur the
    # thinnest strands), better than the coarse mask had it.
    assert scene.error(out[..., 3]) < min(scene.resize_floor() + 0.003, scene.error(scene.coarse))


def test_the_models_session_is_built_once_and_reused(app, scene, vitmatte, tmp_path):
    ctx = EngineContext(app)
    refine(ctx, scene.src, scene.cutout, tmp_path / "a.png", {})
    builds = app.models.sessions.builds
    refine(ctx, scene.src, scene.cutout, tmp_path / "b.png", {"model": "vitmatte-test"})
    refine(ctx, scene.src, scene.cutout, tmp_path / "c.png", {"method": "vitmatte"})
    assert app.models.sessions.builds == builds
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes() == (tmp_path / "c.png").read_bytes()


def test_a_matting_model_that_cannot_run_falls_back_in_auto_and_fails_when_asked_for(app, scene, tmp_path):
    # Installs (its signature is a matting model's) but runs only at 512x512, not rembg's 1024.
    install(app.models, colour_projection(tuple(FG), tuple(BG), side=512), "vitmatte-512", "matting", tmp_path)
    ctx = EngineContext(app)
    result = refine(ctx, scene.src, scene.cutout, tmp_path / "auto.png", {})
    assert result.meta["method"] == "closed_form" and "vitmatte-512" in result.meta["fallback"]
    with pytest.raises(EngineError, match="failed to run"):
        refine(ctx, scene.src, scene.cutout, tmp_path / "asked.png", {"method": "vitmatte"})
    assert not (tmp_path / "asked.png").exists()


def test_vitmatte_past_the_time_bound_is_a_failure(app, scene, vitmatte, tmp_path):
    with pytest.raises(EngineError, match="time bound"):
        refine(EngineContext(app), scene.src, scene.cutout, tmp_path / "late.png", {"max_seconds": 1e-9})
    assert not (tmp_path / "late.png").exists()


# --- closed form ---


def test_closed_form_when_no_matting_model_is_installed(app, scene, tmp_path):
    for ctx in (EngineContext(app), None):
        dst = tmp_path / "cf.png"
        result = refine(ctx, scene.src, scene.cutout, dst, {})
        facts = result.meta
        assert facts["method"] == "closed_form" and facts["model"] is None and facts["model_sha256"] is None
        assert facts["solve"]["converged"] and facts["solve"]["unknown"] == facts["unknown_pixels"]
        assert facts["hit_time_bound"] is False and facts["decontaminated"] is True
        out = _rgba(dst)
        assert scene.error(out[..., 3]) < 0.35 * scene.error(scene.coarse)


def test_closed_form_past_its_time_bound_still_writes_a_valid_cutout(app, scene, tmp_path):
    dst = tmp_path / "late.png"
    result = refine(EngineContext(app), scene.src, scene.cutout, dst, {"method": "closed_form", "max_seconds": 1e-9})
    assert result.meta["hit_time_bound"] is True and result.meta["solve"]["iterations"] == 0
    out = _rgba(dst)
    tri = matting.trimap(scene.coarse)
    assert np.all(out[..., 3][tri == 255] == 255) and np.all(out[..., 3][tri == 0] == 0)
    assert np.array_equal(out[..., 3][scene.band], scene.coarse[scene.band])   # the coarse alpha, kept


def test_soft_edges_lose_the_background_tint(app, scene, tmp_path):
    dst, plain = tmp_path / "dc.png", tmp_path / "plain.png"
    refine(None, scene.src, scene.cutout, dst, {})
    refine(None, scene.src, scene.cutout, plain, {"decontaminate": False})
    out, raw = _rgba(dst), _rgba(plain)
    assert np.array_equal(out[..., 3], raw[..., 3])
    soft = (out[..., 3] > 20) & (out[..., 3] < 235)
    fg8 = FG * 255
    assert np.abs(out[..., :3][soft] - fg8).mean() < 0.4 * np.abs(raw[..., :3][soft] - fg8).mean()
    assert np.all(out[..., :3][out[..., 3] == 0] == 0)   # no colour under full transparency


def test_refusals_before_any_work(app, scene, tmp_path):
    ctx = EngineContext(app)
    dst = tmp_path / "x.png"
    bad = [({"method": "vitmatte"}, "none is installed"), ({"model": "nope"}, "no matting model named"),
           ({"method": "closed_form", "model": "nope"}, "vitmatte method only"), ({"max_seconds": 0}, "max_seconds"),
           ({"colour": 1}, "colour")]
    for options, message in bad:
        with pytest.raises(InvalidParams, match=message):
            refine(ctx, scene.src, scene.cutout, dst, options)
    install(app.models, conv_depth_to_space(2), "sr", "super_resolution", tmp_path)
    with pytest.raises(InvalidParams, match="not a matting model"):
        refine(ctx, scene.src, scene.cutout, dst, {"model": "sr"})
    # A pinned model: the sha256 must be the installed file's, and it pins a named model only.
    model = install(app.models, colour_projection(tuple(FG), tuple(BG)), "m", "matting", tmp_path)
    with pytest.raises(InvalidParams, match="not " + "0" * 64):
        refine(ctx, scene.src, scene.cutout, dst, {"model": "m", "sha256": "0" * 64})
    with pytest.raises(InvalidParams, match="give model too"):
        refine(ctx, scene.src, scene.cutout, dst, {"sha256": model.entry.sha256})
    assert not dst.exists()
    assert refine(ctx, scene.src, scene.cutout, tmp_path / "ok.png", {"model": "m", "sha256": model.entry.sha256}
                  ).meta["model_sha256"] == model.entry.sha256
    Image.fromarray(scene.rgb).save(tmp_path / "opaque.png")
    with pytest.raises(EngineError, match="no alpha"):
        refine(ctx, scene.src, tmp_path / "opaque.png", dst, {})
    assert not dst.exists()


def test_a_set_cancel_event_stops_either_method(app, scene, vitmatte, tmp_path):
    cancel = threading.Event()
    cancel.set()
    for options in ({"method": "vitmatte"}, {"method": "closed_form"}):
        with pytest.raises(Cancelled):
            refine(EngineContext(app), scene.src, scene.cutout, tmp_path / "c.png", options, cancel=cancel)
    assert not (tmp_path / "c.png").exists()


def test_mask_png_is_the_cutouts_alpha(scene):
    data = mask_png(scene.cutout)
    import io

    mask = Image.open(io.BytesIO(data))
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), scene.coarse)


# --- the chain with refine ---


class CoarseEngine:
    """Background removal that gives the scene's coarse cut-out (what a segmentation model would)."""

    code: ClassVar[str] = "coarse"
    op: ClassVar[str] = "remove_background"

    def __init__(self, cutout: Path | None = None):
        self.cutout = cutout
        self.calls = 0

    def available(self, ctx=None) -> EngineStatus:
        return EngineStatus(True, "")

    def process(self, src: Path, dst: Path, options: dict[str, Any], *, cancel=None, ctx=None) -> EngineResult:
        self.calls += 1
        Path(dst).write_bytes(self.cutout.read_bytes())
        return EngineResult(Path(dst), 192, 192, {"engine": self.code})


@pytest.fixture
def chain(scene):
    reg = LazyRegistry("engine", default_engines())
    engine = CoarseEngine(scene.cutout)
    reg.register("coarse", engine)
    return reg, engine


def test_chain_refines_the_accepted_cutout_and_records_it(app, scene, chain, vitmatte, tmp_path):
    reg, _ = chain
    dst = tmp_path / "out.png"
    result = remove_background(reg, ["coarse"], scene.src, dst, ctx=EngineContext(app), refine={})
    assert result.engine == "coarse" and [a.engine for a in result.attempts] == ["coarse"]
    record = result.refine
    assert record.engine == "refine" and record.ok and record.reason == ""
    assert record.meta["method"] == "vitmatte" and record.meta["model"] == "vitmatte-test"
    assert record.check["passed"] and result.check.passed and result.check.to_dict() == record.check
    assert record.meta["sha256"] == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert scene.error(_rgba(dst)[..., 3]) < min(scene.resize_floor() + 0.003, scene.error(scene.coarse))
    assert set(record.to_dict()) == set(result.attempts[0].to_dict())   # the attempts' shape
    assert not list(tmp_path.glob(".*attempt.png"))
    # Without refine: the cut-out as the engine gave it, and no record.
    plain = remove_background(reg, ["coarse"], scene.src, tmp_path / "plain.png", ctx=EngineContext(app))
    assert plain.refine is None and (tmp_path / "plain.png").read_bytes() == scene.cutout.read_bytes()


def test_a_failed_refinement_keeps_the_accepted_cutout(app, scene, chain, vitmatte, tmp_path):
    reg, _ = chain
    dst = tmp_path / "out.png"
    result = remove_background(reg, ["coarse"], scene.src, dst, ctx=EngineContext(app),
                               refine={"max_seconds": 1e-9})
    assert result.engine == "coarse" and result.attempts[0].ok
    assert not result.refine.ok and "time bound" in result.refine.reason and result.refine.check is None
    assert dst.read_bytes() == scene.cutout.read_bytes()
    assert result.check.to_dict() == result.attempts[0].check
    assert not list(tmp_path.glob(".*attempt.png"))


def test_a_refinement_whose_mask_fails_the_check_is_not_kept(scene, chain, tmp_path):
    reg, _ = chain
    # The coarse mask's soft edge is narrow; the refined one recovers the strands' soft pixels, which this
    # threshold refuses.
    coarse_band = remove_background(reg, ["coarse"], scene.src, tmp_path / "probe.png").check.metric("soft_band_px")
    refined_band = remove_background(reg, ["coarse"], scene.src, tmp_path / "probe2.png",
                                     refine={}).check.metric("soft_band_px")
    assert refined_band.value > coarse_band.value
    limit = (coarse_band.value + refined_band.value) / 2
    dst = tmp_path / "out.png"
    result = remove_background(reg, ["coarse"], scene.src, dst, refine={},
                               thresholds=MaskThresholds(max_soft_band_px=limit))
    assert result.attempts[0].ok and not result.refine.ok
    assert result.refine.reason.startswith("mask rejected") and result.refine.check["passed"] is False
    assert result.refine.meta["method"] == "closed_form"
    assert dst.read_bytes() == scene.cutout.read_bytes() and result.check.passed


def test_chain_refuses_bad_refine_options_before_any_engine_runs(app, scene, chain, tmp_path):
    reg, engine = chain
    for options in ({"method": "vitmatte"}, {"bogus": True}):
        with pytest.raises(InvalidParams):
            remove_background(reg, ["coarse"], scene.src, tmp_path / "out.png", ctx=EngineContext(app),
                              refine=options)
    assert engine.calls == 0 and not (tmp_path / "out.png").exists()


def test_chain_cancelled_during_refine_leaves_no_refinement_behind(app, scene, chain, tmp_path):
    reg, _ = chain
    cancel = threading.Event()

    class CancellingEngine(CoarseEngine):
        code: ClassVar[str] = "cancelling"

        def process(self, src, dst, options, *, cancel=None, ctx=None):
            out = super().process(src, dst, options)
            cancel_event.set()   # the engine finished; the refinement then sees the cancel
            return out

    cancel_event = cancel
    reg.register("cancelling", CancellingEngine(scene.cutout))
    with pytest.raises(Cancelled):
        remove_background(reg, ["cancelling"], scene.src, tmp_path / "out.png", refine={}, cancel=cancel)
    assert not (tmp_path / "out.png").exists() and not list(tmp_path.glob(".*attempt.png"))
