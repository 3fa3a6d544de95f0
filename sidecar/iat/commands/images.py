"""images.*: the pipeline's image operations on any image asset of a project, outside a run (issue 7 §3).

Each output is a new asset `derived_from` its input (see `assets.lineage`; background removal adds the cut-out's
alpha as a `mask` asset, `mask_for` the input), with the operation's facts in its metadata_json; each call writes
the rows, the links and its audit rows in one transaction and then publishes `asset.created` (with `operation` and
`source_asset_id`). The input must be a raster image asset of this project.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field, StrictBool, field_validator

from iat.commands.assets import AssetOut, AssetRef, LinkOut
from iat.commands.common import BackgroundEngine, UpscaleEngine
from iat.engines.refine import RefineOptions
from iat.errors import Conflict, EngineError
from iat.lazy import lazy_import
from iat.registry import Result, command

service = lazy_import("iat.images.service")



class ImageOut(Result):
    asset: AssetOut = Field(description="The new asset")
    link: LinkOut = Field(description="Its derived_from link to the input asset")


class AttemptOut(Result):
    engine: str
    ok: bool = Field(description="The engine produced a mask and the mask passed the check")
    reason: str = Field(description="Empty when ok; else why not")
    duration_s: float
    check: dict | None = Field(description="The mask check's metrics, when the engine produced an image")
    meta: dict


class BackgroundRemovedOut(ImageOut):
    engine: str = Field(description="The engine whose mask was accepted")
    attempts: list[AttemptOut] = Field(description="Every engine tried, in order")
    mask: AssetOut = Field(description="The cut-out's alpha as a grayscale asset (kind mask)")
    mask_link: LinkOut = Field(description="Its mask_for link to the input asset")
    refine: AttemptOut | None = Field(None, description="The refinement when asked (engine \"refine\"): ok when "
                                      "the refined cut-out passed the mask check and is the one stored; else why "
                                      "not (the accepted cut-out is stored unrefined). Its meta: method "
                                      "(vitmatte|closed_form), model and model_sha256, sha256, duration_s, "
                                      "unknown_pixels, hit_time_bound")


class UpscaledOut(ImageOut):
    engine: str
    factor: Literal[2, 3, 4]
    model: str | None = Field(None, description="onnx_sr: the super-resolution model used")


class ColorCorrectedOut(ImageOut):
    style_guide_id: str | None = Field(description="The guide used; null: the embedded default rules")
    style_guide_name: str
    correction: dict = Field(description="The correction's options (palette, max_chroma, white balance)")
    facts: dict = Field(description="White-balance gains and chroma before and after")


class RemoveBackgroundParams(AssetRef):
    engines: list[BackgroundEngine] | None = Field(None, min_length=1, max_length=8,
                                             json_schema_extra={"uniqueItems": True}, description=(
        "Background-removal engines in the order to try, each once; default: the project's "
        "settings_json.background_engines, else [\"key\"]. A code that names no background-removal engine is "
        "invalid_params"))
    refine: StrictBool | RefineOptions = Field(False, description=(
        "Refine the accepted cut-out's alpha (true, or the refine options): ViTMatte when a matting model is "
        "installed, else closed-form matting, bounded by max_seconds, colours decontaminated at soft edges. A "
        "model that is not an installed matting model, or vitmatte with none installed, is invalid_params"))

    @field_validator("engines")
    @classmethod
    def _once(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("each engine may be listed once")
        return v

    def refine_options(self) -> dict | None:
        if isinstance(self.refine, RefineOptions):
            return self.refine.model_dump(exclude_unset=True)
        return {} if self.refine else None


class UpscaleParams(AssetRef):
    factor: Literal[2, 3, 4] = Field(description="Width and height are multiplied by it")
    engine: UpscaleEngine = Field("auto", description=(
        "auto (default): onnx_sr when an installed super-resolution model has the factor's scale (else the "
        "smallest scale above it), else lanczos; or an upscale engine's code. onnx_sr with no suitable model is "
        "conflict"))


class ColorCorrectParams(AssetRef):
    style_guide_id: uuid.UUID | None = Field(None, description="Default: the project's default style guide, or "
                                                                "the embedded default rules")


def _publish(ctx, slug: str, out: dict, operation: str) -> None:
    asset = out["asset"]
    ctx.app.events.publish("asset.created", {"project_id": out["project_id"], "slug": slug, "asset_id": asset["id"],
                                             "kind": asset["kind"], "operation": operation,
                                             "source_asset_id": out["link"]["parent_asset_id"]})


@command("images.remove_background", params=RemoveBackgroundParams, result=BackgroundRemovedOut,
         route=("POST", "/api/projects/{slug}/assets/{asset_id}/remove-background"), mutating=True,
         errors=(EngineError,))
def remove_background(ctx, p: RemoveBackgroundParams) -> BackgroundRemovedOut:
    """Cuts an image asset out of its background: a new bg_removed asset derived from it, and its alpha as a mask
    asset linked to the input (mask_for), both written in one transaction.

    The engines run in order until one's mask passes the mask check (not empty, not full, plausible coverage and
    edges); every attempt is in the result and the asset's metadata. With refine, the accepted cut-out is refined
    and mask-checked again; the refinement is recorded either way, and a failed or rejected one leaves the
    unrefined cut-out. An unknown engine code is invalid_params; when no engine gives an acceptable mask the answer
    is engine_error with the attempts in its details, and nothing is written."""
    out = service.remove_background(ctx.app, p.slug, str(p.asset_id), p.engines, ctx.app.current_user()["id"],
                                    refine=p.refine_options())
    _publish(ctx, p.slug, out, "background_removed")
    _publish(ctx, p.slug, {"project_id": out["project_id"], "asset": out["mask"], "link": out["mask_link"]}, "mask")
    return BackgroundRemovedOut.model_validate(out)


@command("images.upscale", params=UpscaleParams, result=UpscaledOut,
         route=("POST", "/api/projects/{slug}/assets/{asset_id}/upscale"), mutating=True,
         errors=(EngineError, Conflict))
def upscale(ctx, p: UpscaleParams) -> UpscaledOut:
    """Upscales an image asset by 2, 3 or 4: a new upscaled asset derived from it (alpha kept, no halos), with a
    super-resolution model (tiled, in bounded memory) when one is installed, else Lanczos; the engine, and the
    model with its sha256, are in the asset's metadata."""
    out = service.upscale(ctx.app, p.slug, str(p.asset_id), p.factor, ctx.app.current_user()["id"], p.engine)
    _publish(ctx, p.slug, out, "upscaled")
    return UpscaledOut.model_validate(out)


@command("images.color_correct", params=ColorCorrectParams, result=ColorCorrectedOut,
         route=("POST", "/api/projects/{slug}/assets/{asset_id}/color-correct"), mutating=True)
def color_correct(ctx, p: ColorCorrectParams) -> ColorCorrectedOut:
    """Colour-corrects an image asset toward a style guide: a new asset (kind other, metadata_json.operation
    color_corrected) derived from it.

    White balance, palette matching in OKLab and the chroma clamp at the guide's max_chroma; alpha is kept."""
    out = service.color_correct(ctx.app, p.slug, str(p.asset_id),
                                str(p.style_guide_id) if p.style_guide_id else None, ctx.app.current_user()["id"])
    _publish(ctx, p.slug, out, "color_corrected")
    return ColorCorrectedOut.model_validate(out)
