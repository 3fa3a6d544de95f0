"""The pipeline's image operations on any image asset of a project, outside a run (issue 7 §3: what the copilot and
a person call by hand), and the QA guard on one asset.

Each operation runs what a run's post-processing runs (iat.pipeline.post): the background-removal chain
(iat.engines.chain, every attempt recorded), an upscale engine (`lanczos` by default), colour correction toward a
style guide (white balance, palette matching, chroma clamp at the guide's max_chroma). Its output is a new asset
`derived_from` its input, with the operation's facts in metadata_json and in PNG text chunks (`iat:operation`,
`iat:source_sha256`). Background removal also stores the cut-out's alpha as a grayscale `mask` asset, `mask_for`
the input, in the same transaction, and can refine the accepted cut-out first (iat.engines.refine).

Order, so that a refusal changes nothing: the input must be a raster image asset of THIS project (another
project's asset or an unknown id is NotFound, a non-image InvalidParams), engines and guides are resolved, the
work runs on files in a temp folder; only then the output is staged in the store (data flushed), and one write
transaction puts it at its content address (folder entry flushed), inserts the asset row, its link and the audit
rows. If that transaction fails, a file it put in place that no row references is removed again on the writer
(as iat.assets.importer does). The project is leased for the whole call, so a deletion waits for it.

QA (`quality_check`): `check_image` with the guide's QA thresholds, palette and max_chroma (the guide named, else
the project's default, else the embedded default rules). The guide's size is NOT expected by default: an asset
outside a run may be anything (an import, a reference, an upscaled output), so the caller opts in with
`size_check`: "aspect" (the guide's width:height at any resolution, within qa.aspect_tolerance) or "size" (the
guide's exact width x height, within qa.size_tolerance). The report is stored as a `quality_reports` row of type
`output_guard` with no run, job or candidate; its summary has the keys of a run's report (iat.pipeline.post.quality)
plus what was asked and of which asset.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iat.assets import repo as assets_repo
from iat.assets import store as files
from iat.assets.register import write_with_files
from iat.audit import repo as audit
from iat.clock import utcnow
from iat.engines.base import EngineContext
from iat.engines.chain import remove_background as run_chain
from iat.errors import Conflict, EngineError, InvalidParams, NotFound
from iat.imaging.color import ColorCorrection, correct_colors
from iat.imaging.io import open_image, png_bytes
from iat.imaging.pngtext import add_text
from iat.imaging.quality import check_image
from iat.knowledge import repo as knowledge_repo
from iat.knowledge.rules import StyleRules, parse_rules
from iat.pipeline import repo as pipeline_repo
from iat.pipeline.service import DEFAULT_ENGINES
from iat.projects.repo import get_project

UPSCALE_OP = "upscale"
UPSCALER = "auto"  # onnx_sr when a suitable super-resolution model is installed, else lanczos
SIZE_CHECKS = ("none", "aspect", "size")


def _invalid(message: str, loc: str, **details: Any) -> InvalidParams:
    return InvalidParams(message, details={"errors": [{"loc": [loc], "msg": message, "type": "value_error"}],
                                           **details})


# --- the input asset and the style guide ---


def _source(handle, asset_id: str) -> tuple[dict, Path]:
    """The asset row and its file; only a raster image stored locally in this project qualifies."""
    row = handle.store.read(assets_repo.get_asset, handle.id, asset_id)  # NotFound: unknown or another project's
    if not (row["mime_type"] or "").startswith("image/") or row["width"] is None or row["height"] is None:
        # conflict, not invalid_params: the id is a valid asset of the project; what is stored there (speech, a
        # package, a log) is what does not fit the operation.
        raise Conflict(f"asset {asset_id} is not a raster image (kind {row['kind']}, type {row['mime_type']})",
                       details={"asset_id": asset_id, "kind": row["kind"], "mime_type": row["mime_type"]})
    if row["storage_backend"] != files.BACKEND:
        raise _invalid(f"asset {asset_id} is stored on {row['storage_backend']}; only local files are processed",
                       "asset_id", asset_id=asset_id, storage_backend=row["storage_backend"])
    path = files.abs_path(handle.root, row["storage_uri"])
    if not path.is_file():
        raise NotFound(f"the file of asset {asset_id} is missing from the project's store",
                       details={"asset_id": asset_id, "storage_uri": row["storage_uri"], "reason": "file_missing"})
    return row, path


def _guide(handle, guide_id: str | None) -> tuple[dict, StyleRules]:
    """The guide named (NotFound if not this project's), else the project's default, else the embedded one."""
    guide = handle.store.read(knowledge_repo.resolve_style_guide, handle.id, guide_id)
    return guide, parse_rules(guide["rules_json"])


def correction_for(rules: StyleRules) -> ColorCorrection:
    """The colour correction a guide asks for (the same options as a run's post-processing)."""
    try:
        return ColorCorrection(palette=list(rules.palette), max_chroma=rules.max_chroma)
    except ValidationError as exc:  # max_chroma 0 (a grey-only guide): ColorCorrection wants > 0
        raise _invalid(f"the style guide's rules cannot drive colour correction: {exc.errors()[0]['msg']}",
                       "style_guide_id") from None


# --- registering an output ---


def _register(handle, source: dict, kind: str, data: bytes, operation: str, meta: dict, facts: dict,
              actor_id: str) -> tuple[dict, dict]:
    """Stores `data` (a PNG) as a new asset derived_from `source`: row, link and audit in one transaction."""
    data = add_text(data, {"iat:operation": operation, "iat:source_sha256": source["sha256"] or ""})
    staged = files.stage_bytes(handle.root, data)
    metadata = {"operation": operation, "source_asset_id": source["id"], **meta}

    def rows() -> tuple[dict, dict]:
        now = utcnow()
        asset = assets_repo.insert_asset(handle.id, kind, staged.stored, metadata, now, actor_id)
        link = assets_repo.insert_link(handle.id, source["id"], asset["id"], "derived_from", now, actor_id)
        audit.record(handle.id, actor_id, f"image.{operation}",
                     {"source_asset_id": source["id"], "asset_id": asset["id"], "kind": kind, **facts})
        return asset, link

    return write_with_files(handle, [staged], rows)


# --- the operations ---


def _engine_order(handle, engines: list[str] | None) -> list[str]:
    if engines:
        return list(engines)
    configured = (handle.store.read(get_project, handle.id)["settings_json"] or {}).get("background_engines")
    if configured is None:
        return list(DEFAULT_ENGINES)
    if not (isinstance(configured, list) and configured and all(isinstance(c, str) for c in configured)):
        raise _invalid("the project's settings_json.background_engines is not a list of engine codes; give engines",
                       "engines", configured=configured)
    return configured


def _register_cutout(handle, source: dict, cutout: bytes, mask: bytes, meta: dict, facts: dict,
                     actor_id: str) -> dict:
    """Stores the RGBA cut-out (`bg_removed`, derived_from `source`) and its alpha as a grayscale `mask` asset
    (mask_for `source`): both rows, links and the audit row in one transaction."""
    operation = "background_removed"
    cutout = add_text(cutout, {"iat:operation": operation, "iat:source_sha256": source["sha256"] or ""})
    mask = add_text(mask, {"iat:operation": "mask", "iat:source_sha256": source["sha256"] or ""})
    staged = [files.stage_bytes(handle.root, cutout), files.stage_bytes(handle.root, mask)]

    def rows() -> dict:
        now = utcnow()
        asset = assets_repo.insert_asset(handle.id, "bg_removed", staged[0].stored,
                                         {"operation": operation, "source_asset_id": source["id"], **meta}, now,
                                         actor_id)
        link = assets_repo.insert_link(handle.id, source["id"], asset["id"], "derived_from", now, actor_id)
        mask_asset = assets_repo.insert_asset(handle.id, "mask", staged[1].stored,
                                              {"operation": "mask", "source_asset_id": source["id"],
                                               "cutout_asset_id": asset["id"], "engine": meta["engine"],
                                               "refined": bool(meta.get("refine", {}).get("ok"))}, now, actor_id)
        mask_link = assets_repo.insert_link(handle.id, source["id"], mask_asset["id"], "mask_for", now, actor_id)
        audit.record(handle.id, actor_id, f"image.{operation}",
                     {"source_asset_id": source["id"], "asset_id": asset["id"], "kind": "bg_removed",
                      "mask_asset_id": mask_asset["id"], **facts})
        return {"asset": asset, "link": link, "mask": mask_asset, "mask_link": mask_link}

    return write_with_files(handle, staged, rows)


def remove_background(app, slug: str, asset_id: str, engines: list[str] | None, actor_id: str,
                      refine: dict | None = None) -> dict:
    """A `bg_removed` asset from the first engine of the order whose mask passes the check (EngineError with
    every attempt when none does), and its alpha as a `mask` asset (mask_for the input). `refine` (refine
    options, {} for the defaults; None: none) refines the accepted cut-out first (iat.engines.refine); a refinement
    that fails or is rejected leaves the unrefined cut-out, and either way it is recorded."""
    from iat.engines.refine import mask_png

    with app.projects.lease(slug) as handle:
        source, path = _source(handle, asset_id)
        order = _engine_order(handle, engines)
        with tempfile.TemporaryDirectory(prefix="iat-image-") as tmp:
            result = run_chain(app.engines, order, path, Path(tmp) / "cutout.png", ctx=EngineContext(app, handle),
                               refine=refine)
            data = result.result.path.read_bytes()
            mask = mask_png(result.result.path)
        attempts = [a.to_dict() for a in result.attempts]
        refined = result.refine.to_dict() if result.refine else None
        meta = {"engine": result.engine, "engines": order, "attempts": attempts,
                "mask_check": result.check.to_dict()}
        facts = {"engine": result.engine, "engines": order}
        if refined is not None:
            meta["refine"] = refined
            facts["refined"] = refined["ok"]
        out = _register_cutout(handle, source, data, mask, meta, facts, actor_id)
    return {"project_id": handle.id, **out, "engine": result.engine, "attempts": attempts, "refine": refined}


def upscale(app, slug: str, asset_id: str, factor: int, actor_id: str, engine_code: str = UPSCALER) -> dict:
    """An `upscaled` asset, `factor` times the input's width and height. `engine_code` "auto": onnx_sr when a
    super-resolution model suits the factor, else lanczos (iat.engines.upscale_select)."""
    from iat.engines.upscale_select import select

    with app.projects.lease(slug) as handle:
        source, path = _source(handle, asset_id)
        ctx = EngineContext(app, handle)
        chosen = select(app, engine_code, factor, ctx)
        engine_code = chosen.engine
        with tempfile.TemporaryDirectory(prefix="iat-image-") as tmp:
            result = app.engines.get(engine_code).process(path, Path(tmp) / "upscaled.png", chosen.options(factor),
                                                          ctx=ctx)
            data = result.path.read_bytes()
        asset, link = _register(handle, source, "upscaled", data, "upscaled",
                                {"engine": engine_code, "factor": factor, **result.meta},
                                {"engine": engine_code, "factor": factor, "model": result.meta.get("model")},
                                actor_id)
    return {"project_id": handle.id, "asset": asset, "link": link, "engine": engine_code, "factor": factor,
            "model": result.meta.get("model")}


# Colour-corrected images are kind `other`: none of SPEC 5.3's kinds fits an edit of an existing image outside a
# run (`generated` is a provider's output, `final` the chosen output of a run's job, `upscaled`/`bg_removed` other
# edits); metadata_json.operation = "color_corrected" says what it is.
COLOR_KIND = "other"


def color_correct(app, slug: str, asset_id: str, guide_id: str | None, actor_id: str) -> dict:
    """A colour-corrected copy toward the style guide (alpha kept as is)."""
    with app.projects.lease(slug) as handle:
        source, path = _source(handle, asset_id)
        guide, rules = _guide(handle, guide_id)
        options = correction_for(rules)
        image, facts = correct_colors(open_image(path), options)
        data = png_bytes(image)
        guide_facts = {"style_guide_id": guide["id"], "style_guide_name": guide["name"]}
        asset, link = _register(handle, source, COLOR_KIND, data, "color_corrected",
                                {**guide_facts, "correction": options.model_dump(), **facts},
                                {**guide_facts, "chroma_max_after": facts["chroma_max_after"]}, actor_id)
    return {"project_id": handle.id, "asset": asset, "link": link, **guide_facts,
            "correction": options.model_dump(), "facts": facts}


# --- the QA guard ---


def guard_summary(source, rules: StyleRules, *, require_transparency: bool, time_of_day: str | None,
                  size_check: str) -> dict:
    """The QA guard's report on one image, shaped like a run's (iat.pipeline.post.quality) plus `passed` and the
    chroma limit used."""
    if size_check not in SIZE_CHECKS:
        raise _invalid(f"size_check must be one of {', '.join(SIZE_CHECKS)}", "size_check")
    report = check_image(source, thresholds=rules.qa, require_transparency=require_transparency,
                         expected_size=(rules.size.width, rules.size.height) if size_check == "size" else None,
                         expected_aspect=rules.size.aspect if size_check == "aspect" else None,
                         palette=list(rules.palette) or None, max_chroma=rules.max_chroma, time_of_day=time_of_day)
    return {"checks": report.checks, "hard_failures": report.hard_failures, "soft_warnings": report.soft_warnings,
            "avg_chroma_exceed": report.chroma_exceedance, "quality_score": report.quality_score,
            "phash": report.phash, "width": report.width, "height": report.height, "passed": report.passed,
            "chroma_limit": report.facts.get("chroma_limit")}


def quality_check(app, slug: str, asset_id: str, guide_id: str | None, time_of_day: str | None,
                  require_transparency: bool, size_check: str, actor_id: str) -> dict:
    """Runs the QA guard on an image asset and stores the report; returns the quality_reports row."""
    with app.projects.lease(slug) as handle:
        source, path = _source(handle, asset_id)
        guide, rules = _guide(handle, guide_id)
        summary = guard_summary(path, rules, require_transparency=require_transparency, time_of_day=time_of_day,
                                size_check=size_check)
        summary.update(asset_id=source["id"], sha256=source["sha256"], style_guide_id=guide["id"],
                       style_guide_name=guide["name"], time_of_day=time_of_day,
                       require_transparency=require_transparency, size_check=size_check)

        def write() -> dict:
            row = pipeline_repo.insert_report(handle.id, None, None, None, "output_guard", summary, utcnow())
            audit.record(handle.id, actor_id, "quality.checked",
                         {"report_id": row["id"], "asset_id": source["id"], "hard_failures": summary["hard_failures"],
                          "soft_warnings": summary["soft_warnings"]})
            return row

        row = handle.store.write(write)
    return row


def list_reports(app, slug: str, run_id: str | None, candidate_id: str | None, asset_id: str | None,
                 report_type: str | None, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    handle = app.projects.open(slug)
    return handle.store.read(pipeline_repo.list_reports, handle.id, run_id, candidate_id, report_type, limit, cursor,
                             asset_id)
