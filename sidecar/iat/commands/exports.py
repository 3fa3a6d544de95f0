"""exports.*: a project as a standalone package (SPEC 2.1.4, 5.5 project_exports) and importing one.

exports.create writes the package into the project's exports/ folder (left out of later packages) and records it
as an `export` asset and a project_exports row; exports.import makes a new project from a package on this machine.
The work is in iat.transfer (export.py, import_.py, safe_extract.py; the format in manifest.py).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from iat.clock import utcnow
from iat.commands.common import AbsolutePath, Page, PageParams, ProjectRef, ProjectRoot, Slug
from iat.errors import Conflict, NotFound, PayloadTooLarge, SchemaVersionError
from iat.lazy import lazy_import
from iat.registry import Params, Result, command

export = lazy_import("iat.transfer.export")
importer = lazy_import("iat.transfer.import_")
repo = lazy_import("iat.transfer.repo")

PROGRESS_INTERVAL_S = 0.2  # at most ~5 progress notifications a second

ExportFormat = Literal["tar.gz", "zip", "folder"]


class ExportOut(Result):
    id: str
    project_id: str
    export_asset_id: str | None
    format: ExportFormat
    sha256: str | None = Field(description="Of the archive; of its manifest.json for a folder (which pins every "
                                           "file's sha256)")
    path: str | None = Field(description="Where the package is on this machine (a file, or the folder)")
    size_bytes: int | None
    created_at: datetime


class ExportCreated(ExportOut):
    row_counts: dict[str, int] = Field(description="Rows per table in the package's database")
    files: int = Field(description="Files in the package, its database included (manifest.json aside)")
    include_secrets: bool


class ExportPage(Page):
    items: list[ExportOut]


class CreateParams(ProjectRef):
    format: ExportFormat = "tar.gz"
    include_secrets: bool = Field(False, strict=True, description=(
        "Also carry the project's encrypted secrets; they decrypt only where this machine's keyring key is"))


class ExportRef(ProjectRef):
    export_id: uuid.UUID


class ImportParams(Params):
    path: AbsolutePath = Field(description="A package on this machine: a .tar.gz or .zip file, or a package folder")
    slug: Slug | None = Field(None, description="The new project's slug (default: the package's, or <slug>-2, "
                                                "-3, ... when taken)")
    local_project_root: ProjectRoot | None = Field(None, description="Absolute folder of the new project (empty or "
                                                   "new); default <home>/projects/<slug>")


class ImportedProject(Result):
    id: str
    slug: str
    name: str
    root_dir: str
    source_project_id: str
    source_slug: str
    id_changed: bool = Field(description="The package's project id was already used here: the project got a new one")
    slug_changed: bool
    files: int
    row_counts: dict[str, int]
    schema_version: int = Field(description="The package database's schema version before migration")


def _throttled(publish, name: str, payload: dict):
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL_S or (total and done >= total):
            last[0] = now
            publish(name, {**payload, "done_bytes": done, "total_bytes": total})

    return progress


def _out(handle, row: dict) -> ExportOut:
    return ExportOut.model_validate(repo.public(handle.root, row))


@command("exports.create", params=CreateParams, result=ExportCreated,
         route=("POST", "/api/projects/{slug}/exports"), mutating=True)
def create_export(ctx, p: CreateParams) -> ExportCreated:
    """Exports the project as a standalone package (tar.gz, zip or folder) in its exports/ folder, while it keeps
    serving: a consistent snapshot of its database (a SQLite project.db whatever the project's database), its
    files, and manifest.json (format and schema version, rows per table, sha256 and size of every file). Secrets
    are left out unless include_secrets. Records an `export` asset and a project_exports row; progress comes as
    `export.progress` notifications ({done_bytes, total_bytes}, at most ~5 a second), then `export.created`."""
    actor = ctx.app.current_user()
    export_id = str(uuid.uuid4())
    with ctx.app.projects.lease(p.slug) as handle:
        progress = _throttled(ctx.app.events.publish, "export.progress",
                              {"project_id": handle.id, "slug": p.slug, "export_id": export_id})
        made = export.write_package(ctx.app, handle, p.format, handle.root / export.EXPORTS_DIR,
                                    include_secrets=p.include_secrets, progress=progress, export_id=export_id)
        try:
            row = handle.store.write(repo.record_export, handle.id, actor["id"], made, utcnow())
        except BaseException:
            repo.remove_package(Path(made["path"]))
            raise
    ctx.app.events.publish("export.created", {"project_id": handle.id, "slug": p.slug, "export_id": row["id"],
                                              "format": p.format, "sha256": made["sha256"]})
    manifest = made["manifest"]
    return ExportCreated.model_validate({**repo.public(handle.root, row), "row_counts": manifest["row_counts"],
                                         "files": len(manifest["files"]), "include_secrets": p.include_secrets})


@command("exports.list", params=PageParams, result=ExportPage, route=("GET", "/api/projects/{slug}/exports"))
def list_exports(ctx, p: PageParams) -> ExportPage:
    """Lists the project's exports newest first; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_exports, handle.id, p.limit, p.cursor)
    return ExportPage(items=[_out(handle, row) for row in items], next_cursor=cursor)


@command("exports.get", params=ExportRef, result=ExportOut,
         route=("GET", "/api/projects/{slug}/exports/{export_id}"))
def get_export(ctx, p: ExportRef) -> ExportOut:
    """Returns one export of the project."""
    handle = ctx.app.projects.open(p.slug)
    return _out(handle, handle.store.read(repo.get_export, handle.id, str(p.export_id)))


@command("exports.import", params=ImportParams, result=ImportedProject, route=("POST", "/api/exports/import"),
         mutating=True, errors=(NotFound, Conflict, PayloadTooLarge, SchemaVersionError))
def import_export(ctx, p: ImportParams) -> ImportedProject:
    """Imports a package (from exports.create, on this machine or another) as a new project: every file's sha256
    checked against the manifest, with nothing missing or unlisted, before anything is registered; an older
    schema migrated; the package's slug kept, or <slug>-2, -3, ... when taken (conflict when the `slug` asked
    for is taken); a new project id when the package's is used here already. Refuses (invalid_params,
    details.reason) names that are absolute or hold `..`, links, devices and other special entries, and
    (payload_too_large) archives over the size, entry or compression-ratio limits; nothing is left behind by a
    refused or failed import. Progress comes as `import.progress` notifications; then `project.imported`."""
    actor = ctx.app.current_user()
    progress = _throttled(ctx.app.events.publish, "import.progress", {"path": p.path})
    handle, info = importer.import_package(ctx.app, p.path, slug=p.slug, progress=progress,
                                           local_project_root=p.local_project_root)
    project = handle.store.read(lambda: repo.project_row(handle.id))
    ctx.app.app_store.write(repo.record_app_import, handle.id, actor["id"], p.path, info)
    ctx.app.events.publish("project.imported", {"project_id": handle.id, "slug": handle.slug,
                                                "source_project_id": info["source"]["id"]})
    return ImportedProject(id=handle.id, slug=handle.slug, name=project["name"], root_dir=str(handle.root),
                           source_project_id=info["source"]["id"], source_slug=info["source"]["slug"],
                           id_changed=info["id_changed"], slug_changed=info["slug_changed"], files=info["files"],
                           row_counts=info["rows"], schema_version=info["schema_version"])
