"""runs.outputs: where a finished run's contact sheet and run log are, for viewers (the desktop window).

The runner stores them as assets of the run when it ends (iat.pipeline.outputs): the contact sheet as kind
`other` with metadata `{run_id, role: "contact_sheet", file_name, page?}` (a PNG and an HTML page per page of the
sheet; no `page` means page 1), the log as kind `run_log`. The answer uses the names of the `run.finished` event's
fields, so a viewer that saw the event and one that asks later read the same thing.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from iat.commands.runs import RunRef, RunStatus
from iat.lazy import lazy_import
from iat.registry import Result, command

assets_store = lazy_import("iat.assets.store")
pipeline_repo = lazy_import("iat.pipeline.repo")
runner = lazy_import("iat.pipeline.runner")

_KINDS = ("other", "run_log")


class SheetPage(Result):
    page: int = Field(ge=1)
    png_asset_id: str | None
    png_path: str | None
    html_asset_id: str | None
    html_path: str | None


class RunOutputs(Result):
    run_id: str
    status: RunStatus
    contact_sheet_asset_id: str | None = Field(description="The contact sheet PNG (its first page); null until the "
                                                           "run finished")
    contact_sheet_path: str | None
    contact_sheet_html_asset_id: str | None = Field(description="The self-contained HTML contact sheet (first page)")
    contact_sheet_html_path: str | None
    contact_sheet_pages: list[SheetPage] = Field(description="Every page of the contact sheet, in order")
    run_log_asset_id: str | None = Field(description="The run log (JSON lines)")
    run_log_path: str | None
    results_dir: str | None = Field(description="The run's results folder, when it exists")


def _output(row: dict, run_id: str) -> tuple[str, int] | None:
    """("png" | "html", page) for a contact sheet file of the run, ("log", 1) for its log, None for the rest."""
    meta = row["metadata_json"] or {}
    if meta.get("run_id") != run_id:
        return None
    if row["kind"] == "run_log":
        return "log", 1
    if meta.get("role") != "contact_sheet":
        return None
    name, mime = str(meta.get("file_name", "")), row["mime_type"] or ""
    fmt = "html" if name.endswith(".html") or mime == "text/html" else \
        "png" if name.endswith(".png") or mime == "image/png" else None
    page = meta.get("page", 1)
    return (fmt, page) if fmt and isinstance(page, int) and page >= 1 else None


def _find(project_id: str, run_id: str) -> tuple[dict, dict[tuple[str, int], dict]]:
    from iat.db.models import Asset

    run = pipeline_repo.get_run(project_id, run_id)  # not_found for a run of another project or of none
    found: dict[tuple[str, int], dict] = {}
    # A few rows per run of these kinds; newest first, so a run finished again (resumed mid-finish) shows its last.
    query = (Asset.select().where((Asset.project_id == project_id) & Asset.kind.in_(_KINDS))
             .order_by(Asset.created_at.desc(), Asset.id.desc()).dicts())
    for row in query:
        which = _output(row, run_id)
        if which is not None and which not in found:
            found[which] = row
    return run, found


@command("runs.outputs", params=RunRef, result=RunOutputs, route=("GET", "/api/projects/{slug}/runs/{run_id}/outputs"))
def outputs(ctx, p: RunRef) -> RunOutputs:
    """A run's contact sheet (PNG and HTML), run log and results folder: asset ids and paths, null for what a run
    that has not finished does not have yet. Read the files with assets.read."""
    handle = ctx.app.projects.open(p.slug)
    run, found = handle.store.read(_find, handle.id, str(p.run_id))

    def where(row: dict | None) -> tuple[str | None, str | None]:
        if row is None or row["storage_backend"] != "local":
            return (row["id"] if row else None), None
        return row["id"], str(assets_store.abs_path(handle.root, row["storage_uri"]))

    pages = []
    for number in sorted({page for fmt, page in found if fmt in ("png", "html")}):
        png, html = where(found.get(("png", number))), where(found.get(("html", number)))
        pages.append(SheetPage(page=number, png_asset_id=png[0], png_path=png[1], html_asset_id=html[0],
                               html_path=html[1]))
    first = pages[0] if pages and pages[0].page == 1 else None
    log = where(found.get(("log", 1)))
    results = Path(handle.root) / runner.RUNS_DIR / run["id"] / "results"
    return RunOutputs(run_id=run["id"], status=run["status"],
                      contact_sheet_asset_id=first.png_asset_id if first else None,
                      contact_sheet_path=first.png_path if first else None,
                      contact_sheet_html_asset_id=first.html_asset_id if first else None,
                      contact_sheet_html_path=first.html_path if first else None,
                      contact_sheet_pages=pages, run_log_asset_id=log[0], run_log_path=log[1],
                      results_dir=str(results) if results.is_dir() else None)
