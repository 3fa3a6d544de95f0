"""`refine`: an alpha refinement of a cut-out the background-removal chain accepted. Not a chain engine: it runs
after the chain, on the original image and the accepted cut-out's alpha.

1. A trimap from the cut-out's alpha (iat.imaging.matting.trimap: rembg's thresholds 240/10 and 10 px erosion).
2. The alpha in the trimap's unknown band:
   - `vitmatte`: a ViTMatte model (kind `matting`) from the models folder, on the App's shared ONNX session, with
     rembg's pre- and post-processing (rembg.matting.vitmatte_alpha): image resized bilinearly and trimap by
     nearest neighbour to 1024x1024, both scaled to [0, 1] and stacked as RGB + trimap, the output clipped, made
     8-bit and resized back bilinearly;
   - `closed_form`: closed-form matting (iat.imaging.matting.closed_form_alpha), warm-started from the cut-out's
     alpha.
   `auto` (the default) is vitmatte when a matting model is installed (the one named by `model`, else the first
   one), else closed_form; a vitmatte model that fails to run falls back to closed_form, recorded.
3. The foreground colours decontaminated at soft edges (Forte & Pitie's blur fusion), colour zeroed where alpha is
   0, written as an RGBA PNG.

Bounded by `max_seconds` from the start of the pass to the alpha (decontamination and the PNG come on top, ~0.4 s
at 1024x1024): the closed-form solve stops at the deadline with its best iterate (and shrinks a large band to
`max_unknown` unknowns); a ViTMatte inference still running at the deadline is terminated through onnxruntime's
RunOptions, which is a failure (the chain keeps the unrefined cut-out). The cancel event stops either.

Why closed form and not pymatting: the frozen bundle leaves out pymatting (numba and llvmlite are 171 MB); the
closed-form solve needs only numpy and scipy.sparse, which ship anyway. This module's top level is light (its
options model is part of images.remove_background's schema): numpy, scipy and onnxruntime load on first use.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iat.engines.base import Cancelled, EngineContext, EngineResult, check_cancel, parse_options
from iat.errors import EngineError, InvalidParams, NotFound
from iat.lazy import lazy_import

np = lazy_import("numpy")
matting = lazy_import("iat.imaging.matting")

CODE = "refine"
MATTING_KIND = "matting"
VITMATTE_SIDE = 1024   # rembg's ViTMatte checkpoints are exported at this fixed size (rembg.matting.INPUT_SIZE)
MAX_UNKNOWN = 120_000  # iat.imaging.matting.MAX_UNKNOWN, repeated here so the schema needs no numpy


class RefineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    method: Literal["auto", "vitmatte", "closed_form"] = Field(
        "auto", description="auto: ViTMatte when a matting model is installed, else closed-form matting")
    model: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description=(
        "The installed matting model to run (ViTMatte); default: the first one installed"))
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "With model: refuse unless the installed model's file has this sha256 (a run's replay pins its model)"))
    max_seconds: float = Field(30.0, gt=0, le=600, description="Time bound of the alpha's refinement (reading, "
                               "decontaminating and writing come on top); the closed-form solve returns its best "
                               "iterate at the bound, a model run past it is stopped")
    foreground_threshold: int = Field(240, ge=1, le=255, description="Alpha (0-255) above which a pixel is "
                                      "definite foreground before erosion")
    background_threshold: int = Field(10, ge=0, le=254, description="Alpha (0-255) below which a pixel is "
                                      "definite background before erosion")
    erode_size: int = Field(10, ge=0, le=64, description="Side of the square eroding both definite regions: the "
                            "unknown band is about this wide on each side of the edge")
    max_unknown: int = Field(MAX_UNKNOWN, ge=1_000, le=1_000_000, description="Closed form: unknown pixels solved "
                             "at full size; a larger band is solved on a shrunk image and upsampled")
    decontaminate: bool = Field(True, description="Estimate the foreground colour of semi-transparent pixels so "
                                "they lose the background's tint")


def _invalid(message: str, loc: str, **details: Any) -> InvalidParams:
    return InvalidParams(message, details={"errors": [{"loc": [loc], "msg": message, "type": "value_error"}],
                                           **details})


def prepare(ctx: EngineContext | None, options: dict[str, Any] | None) -> tuple[RefineOptions, Any]:
    """Checks the options and resolves the model before any work: (options, the InstalledModel to run or None for
    closed form). InvalidParams for bad options, a model that is not an installed matting model, or vitmatte asked
    for with none installed."""
    opts: RefineOptions = parse_options(RefineOptions, options, CODE)  # type: ignore[assignment]
    if opts.sha256 is not None and opts.model is None:
        raise _invalid("sha256 pins a named model: give model too", "sha256")
    if opts.method == "closed_form":
        if opts.model is not None:
            raise _invalid("a model applies to the vitmatte method only", "model", model=opts.model)
        return opts, None
    models = getattr(getattr(ctx, "app", None), "models", None)
    if opts.model is not None:
        if models is None:
            raise _invalid(f"model {opts.model!r}: no models folder here", "model", model=opts.model)
        try:
            model = models.get(opts.model)
        except NotFound:
            raise _invalid(f"no matting model named {opts.model!r} is installed", "model", model=opts.model) from None
        if model.entry.kind != MATTING_KIND:
            raise _invalid(f"model {opts.model!r} is a {model.entry.kind} model, not a matting model", "model",
                           model=opts.model, kind=model.entry.kind)
        if opts.sha256 is not None and model.entry.sha256 != opts.sha256:
            raise _invalid(f"model {opts.model!r} is {model.entry.sha256}, not {opts.sha256}", "sha256",
                           model=opts.model, sha256=opts.sha256, installed_sha256=model.entry.sha256)
        return opts, model
    installed = models.find(MATTING_KIND) if models is not None else []
    if installed:
        return opts, installed[0]
    if opts.method == "vitmatte":
        raise _invalid("method vitmatte needs a matting model: none is installed (models.install with kind "
                       "matting)", "method")
    return opts, None


def record(ctx: EngineContext | None, options: dict[str, Any] | None) -> dict[str, Any]:
    """The refine options a run records in its snapshot, resolved now: the method, and for ViTMatte the model's
    name and sha256, so a replay runs the same model or is refused (InvalidParams as `prepare`)."""
    opts, model = prepare(ctx, options)
    out = opts.model_dump(exclude_none=True, exclude={"model", "sha256"})
    if model is None:
        return {**out, "method": "closed_form"}
    return {**out, "method": "vitmatte", "model": model.name, "sha256": model.entry.sha256}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Terminated(Exception):
    """The model run was stopped: the deadline passed or the cancel event was set."""


def vitmatte_alpha(session, rgb, trimap8, *, deadline: float | None = None,
                   cancel: threading.Event | None = None):
    """rembg's ViTMatte processing on a given session: uint8 alpha HxW for uint8 `rgb` HxWx3 and `trimap8`.

    The run is stopped (onnxruntime's RunOptions.terminate) when the deadline passes or `cancel` is set."""
    import onnxruntime as ort
    from PIL import Image

    h, w = trimap8.shape
    # Bilinear for the image, nearest for the trimap: interpolating the trimap would invent levels between the
    # three the model expects.
    image = np.asarray(Image.fromarray(rgb, "RGB").resize((VITMATTE_SIDE, VITMATTE_SIDE), Image.Resampling.BILINEAR),
                       dtype=np.float32)
    tri = np.asarray(Image.fromarray(trimap8, "L").resize((VITMATTE_SIDE, VITMATTE_SIDE), Image.Resampling.NEAREST),
                     dtype=np.float32)
    pixel_values = np.concatenate([(image / 255.0).transpose(2, 0, 1), (tri / 255.0)[None]],
                                  axis=0)[None].astype(np.float32)
    check_cancel(cancel)
    if deadline is not None and time.monotonic() >= deadline:
        raise _Terminated()
    options = ort.RunOptions()
    done = threading.Event()
    stopped = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            if (cancel is not None and cancel.is_set()) or (deadline is not None and time.monotonic() >= deadline):
                stopped.set()
                options.terminate = True
                return

    watcher = threading.Thread(target=watch, name="vitmatte-deadline", daemon=True)
    watcher.start()
    try:
        alphas = session.run(None, {session.get_inputs()[0].name: pixel_values}, options)[0]
    except Exception:
        if stopped.is_set():
            raise _Terminated() from None
        raise
    finally:
        done.set()
        watcher.join()
    alpha = np.clip(alphas[0, 0], 0.0, 1.0)
    return np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR))


def _load(src: Path, cutout: Path):
    from iat.imaging.io import open_image, to_arrays

    rgb = np.asarray(open_image(src).convert("RGB"))
    _, alpha = to_arrays(open_image(cutout))
    if alpha is None:
        raise EngineError("the cut-out to refine has no alpha channel", details={"engine": CODE})
    if alpha.shape != rgb.shape[:2]:
        raise EngineError(f"the cut-out is {alpha.shape[1]}x{alpha.shape[0]}, the image {rgb.shape[1]}x"
                          f"{rgb.shape[0]}", details={"engine": CODE})
    return rgb, alpha


def refine(ctx: EngineContext | None, src: str | Path, cutout: str | Path, dst: str | Path,
           options: dict[str, Any] | None = None, *, cancel: threading.Event | None = None) -> EngineResult:
    """Refines the alpha of `cutout` (an RGBA of `src`) and writes the decontaminated RGBA to `dst`; the result's
    meta holds the facts: method, model and its sha256, the output's sha256, duration, unknown pixels, whether
    the time bound was hit."""
    from iat.imaging.io import from_arrays, save_png

    started = time.monotonic()
    opts, model = prepare(ctx, options)
    deadline = started + opts.max_seconds
    src, cutout, dst = Path(src), Path(cutout), Path(dst)
    check_cancel(cancel)
    rgb, alpha8 = _load(src, cutout)
    tri = matting.trimap(alpha8, foreground_threshold=opts.foreground_threshold,
                         background_threshold=opts.background_threshold, erode_size=opts.erode_size)
    unknown = int((tri == matting.UNKNOWN).sum())
    facts: dict[str, Any] = {"requested": opts.method, "method": None, "model": None, "model_sha256": None,
                             "unknown_pixels": unknown, "max_seconds": opts.max_seconds, "hit_time_bound": False,
                             "trimap": {"foreground_threshold": opts.foreground_threshold,
                                        "background_threshold": opts.background_threshold,
                                        "erode_size": opts.erode_size}}
    refined = None
    if model is not None:
        facts.update(method="vitmatte", model=model.name, model_sha256=model.entry.sha256)
        try:
            session = ctx.app.models.session(model)
            refined = vitmatte_alpha(session, rgb, tri, deadline=deadline, cancel=cancel).astype(np.float32) / 255.0
        except _Terminated:
            check_cancel(cancel)
            raise EngineError(f"ViTMatte ran past the refine's time bound of {opts.max_seconds:g} s",
                              details={"engine": CODE, "model": model.name, "max_seconds": opts.max_seconds}
                              ) from None
        except Cancelled:
            raise
        except Exception as exc:  # onnxruntime's own errors: a model that loads but cannot run this input
            if opts.method == "vitmatte":
                raise EngineError(f"matting model {model.name!r} failed to run ({type(exc).__name__})",
                                  details={"engine": CODE, "model": model.name}) from None
            facts["fallback"] = f"vitmatte model {model.name!r} failed ({type(exc).__name__}); closed form used"
    if refined is None:
        check_cancel(cancel)
        refined, solve = matting.closed_form_alpha(rgb, tri, alpha8, deadline=deadline, cancel=cancel,
                                                   max_unknown=opts.max_unknown)
        facts.update(method="closed_form", solve=solve.to_dict(), hit_time_bound=solve.hit_deadline)
    check_cancel(cancel)
    out_alpha = np.clip(np.rint(refined * 255.0), 0, 255).astype(np.uint8)
    if opts.decontaminate:
        fore = matting.estimate_foreground(rgb, out_alpha)
        out_rgb = np.clip(np.rint(fore * 255.0), 0, 255).astype(np.uint8)
    else:
        out_rgb = rgb.copy()
    out_rgb[out_alpha == 0] = 0
    check_cancel(cancel)
    save_png(from_arrays(out_rgb, out_alpha), dst)
    facts.update(decontaminated=opts.decontaminate, sha256=_sha256(dst),
                 duration_s=round(time.monotonic() - started, 4))
    return EngineResult(dst, int(rgb.shape[1]), int(rgb.shape[0]), facts)


def mask_png(cutout: str | Path) -> bytes:
    """The alpha of an RGBA cut-out as an 8-bit grayscale PNG (the `mask` asset)."""
    from PIL import Image

    from iat.imaging.io import open_image, png_bytes, to_arrays

    _, alpha = to_arrays(open_image(cutout))
    if alpha is None:
        raise EngineError("the cut-out has no alpha channel to make a mask of", details={"engine": CODE})
    return png_bytes(Image.fromarray(alpha, "L"))


__all__ = ["RefineOptions", "mask_png", "prepare", "record", "refine", "vitmatte_alpha"]
