"""runs.outputs: where a finished run's contact sheet and run log are, for viewers (the desktop window).

The runner stores them as assets of the run when it ends (iat.pipeline.outputs): kind `other` with metadata
`{run_id, role: "contact_sheet", file_name: "contact_sheet.png" | "contact_sheet.html"}` and kind `run_log`
(`run.jsonl`). The answer uses the names of the `run.finished` event's fields, so a viewer that saw the event and
one that asks later read the same thing.
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

# file_name of the stored asset -> the field prefix in the answer (and in the run.finished event).
_OUTPUTS = {"contact_sheet.png": "contact_sheet", "contact_sheet.html": "contact_sheet_html", "run.jsonl": "run_log"}
_KINDS = ("other", "run_log")


class RunOutputs(Result):
    run_id: str
    status: RunStatus
    contact_sheet_asset_id: str | None = Field(description="The contact sheet PNG; null until the run finished")
    contact_sheet_path: str | None
    contact_sheet_html_asset_id: str | None = Field(description="The self-contained HTML contact sheet")
    contact_sheet_html_path: str | None
    run_log_asset_id: str | None = Field(description="The run log (JSON lines)")
    run_log_path: str | None
    results_dir: str | None = Field(description="The run's results folder, when it exists")


def _find(project_id: str, run_id: str) -> tuple[dict, dict[str, dict]]:
    from iat.db.models import Asset

    run = pipeline_repo.get_run(project_id, run_id)  # not_found for a run of another project or of none
    found: dict[str, dict] = {}
    # A few rows per run of these kinds; newest first, so a run finished again (resumed mid-finish) shows its last.
    query = (Asset.select().where((Asset.project_id == project_id) & Asset.kind.in_(_KINDS))
             .order_by(Asset.created_at.desc(), Asset.id.desc()).dicts())
    for row in query:
        meta = row["metadata_json"] or {}
        prefix = _OUTPUTS.get(meta.get("file_name"))
        if meta.get("run_id") == run_id and prefix and prefix not in found:
            found[prefix] = row
    return run, found


@command("runs.outputs", params=RunRef, result=RunOutputs, route=("GET", "/api/projects/{slug}/runs/{run_id}/outputs"))
def outputs(ctx, p: RunRef) -> RunOutputs:
    """A run's contact sheet (PNG and HTML), run log and results folder: asset ids and paths, null for what a run
    that has not finished does not have yet. Read the files with assets.read."""
    handle = ctx.app.projects.open(p.slug)
    run_id = str(p.run_id)
    run, found = handle.store.read(_find, handle.id, run_id)
    out: dict = {"run_id": run["id"], "status": run["status"]}
    for prefix in _OUTPUTS.values():
        row = found.get(prefix)
        out[f"{prefix}_asset_id"] = row["id"] if row else None
        out[f"{prefix}_path"] = (str(assets_store.abs_path(handle.root, row["storage_uri"]))
                                 if row and row["storage_backend"] == "local" else None)
    results = Path(handle.root) / runner.RUNS_DIR / run["id"] / "results"
    out["results_dir"] = str(results) if results.is_dir() else None
    return RunOutputs.model_validate(out)
