"""quality.*: the QA guard on any image asset, and the project's quality reports (a run's output_guard and
human_review reports, and those of quality.check), newest first."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from iat.commands.assets import AssetRef
from iat.commands.common import Page, PageParams
from iat.lazy import lazy_import
from iat.registry import Result, command

service = lazy_import("iat.images.service")

ReportType = Literal["output_guard", "model_score", "human_review"]


class ReportOut(Result):
    id: str
    project_id: str
    run_id: str | None
    job_id: str | None
    candidate_id: str | None
    report_type: ReportType
    summary_json: dict
    created_at: datetime


class ReportPage(Page):
    items: list[ReportOut]


class CheckParams(AssetRef):
    style_guide_id: uuid.UUID | None = Field(None, description="The guide whose QA thresholds, palette and "
                                             "max_chroma apply; default: the project's default guide, or the "
                                             "embedded default rules")
    time_of_day: Literal["dawn", "day", "dusk", "night"] | None = Field(
        None, description="Checks the exposure against the guide's range for that time (a soft warning)")
    require_transparency: bool = Field(False, strict=True, description="A cut-out: no transparency is a hard failure, and so "
                                                          "is a subject cut by the frame")
    size_check: Literal["none", "aspect", "size"] = Field(
        "none", description="What of the guide's size to expect (hard checks): none; aspect (its width:height at "
                            "any resolution); size (its exact width x height)")


class ListParams(PageParams):
    run_id: uuid.UUID | None = None
    candidate_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = Field(None, description="Reports about this asset: quality.check's on it, and a "
                                                         "run's on the candidate whose final asset it is")
    report_type: ReportType | None = None


@command("quality.check", params=CheckParams, result=ReportOut,
         route=("POST", "/api/projects/{slug}/assets/{asset_id}/quality-check"), mutating=True)
def check(ctx, p: CheckParams) -> ReportOut:
    """Runs the QA guard on an image asset and stores its report (output_guard, no run).

    Hard failures: unreadable, wrong size or aspect (only with size_check), blank or uniform, required
    transparency missing, subject cut at the border. Soft warnings: chroma over the guide's max_chroma, palette
    distance, exposure unfit for the time of day, low contrast. Each check carries its value and threshold; the
    summary adds hard_failures, soft_warnings, avg_chroma_exceed, quality_score, phash and asset_id."""
    row = service.quality_check(ctx.app, p.slug, str(p.asset_id),
                                str(p.style_guide_id) if p.style_guide_id else None, p.time_of_day,
                                p.require_transparency, p.size_check, ctx.app.current_user()["id"])
    summary = row["summary_json"]
    ctx.app.events.publish("quality.checked", {"project_id": row["project_id"], "slug": p.slug, "report_id": row["id"],
                                               "asset_id": summary["asset_id"], "passed": summary["passed"],
                                               "hard_failures": summary["hard_failures"],
                                               "soft_warnings": summary["soft_warnings"]})
    return ReportOut.model_validate(row)


@command("quality.list", params=ListParams, result=ReportPage, route=("GET", "/api/projects/{slug}/quality-reports"))
def list_reports(ctx, p: ListParams) -> ReportPage:
    """Lists a project's quality reports newest first, filtered by run, candidate, asset or type; page with
    next_cursor."""
    items, cursor = service.list_reports(ctx.app, p.slug, str(p.run_id) if p.run_id else None,
                                         str(p.candidate_id) if p.candidate_id else None,
                                         str(p.asset_id) if p.asset_id else None, p.report_type, p.limit, p.cursor)
    return ReportPage(items=items, next_cursor=cursor)
