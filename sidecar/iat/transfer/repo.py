"""project_exports rows and the `export` asset beside each (run inside Store.read / Store.write)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from iat.assets import repo as assets
from iat.assets.store import StoredFile, abs_path
from iat.audit import repo as audit
from iat.db.models import Asset, Project, ProjectExport
from iat.errors import Forbidden, NotFound
from iat.pagination import keyset_page

_MIME = {"tar.gz": "application/gzip", "zip": "application/zip", "folder": "application/json"}


def record_export(project_id: str, actor_id: str, made: dict, now: datetime) -> dict:
    """The package's `export` asset (its file under exports/; a folder package by its manifest.json) and its
    project_exports row, audited together."""
    rel = f"exports/{made['name']}" + ("/manifest.json" if made["format"] == "folder" else "")
    ext = {"tar.gz": "tar.gz", "zip": "zip", "folder": "json"}[made["format"]]
    stored = StoredFile(made["sha256"], rel, made["size_bytes"], _MIME[made["format"]], None, None, ext)
    manifest = made["manifest"]
    asset = assets.insert_asset(project_id, "export", stored, {
        "format": made["format"], "files": len(manifest["files"]), "schema_version": manifest["schema_version"],
        "include_secrets": manifest["secrets"]["included"]}, now, actor_id)
    row = {"id": made["id"], "project_id": project_id, "export_asset_id": asset["id"], "format": made["format"],
           "sha256": made["sha256"], "created_at": now}
    ProjectExport.insert(**row).execute()
    audit.record(project_id, actor_id, "export.created", {
        "export_id": row["id"], "format": made["format"], "sha256": made["sha256"], "size_bytes": made["size_bytes"],
        "storage_uri": rel, "files": len(manifest["files"]), "include_secrets": manifest["secrets"]["included"],
        "row_counts": manifest["row_counts"]})
    return {**row, "storage_uri": rel, "size_bytes": made["size_bytes"]}


def remove_package(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _with_assets(project_id: str, rows: list[dict]) -> list[dict]:
    ids = [r["export_asset_id"] for r in rows if r["export_asset_id"]]
    found = {a["id"]: a for a in Asset.select(Asset.id, Asset.storage_uri, Asset.metadata_json)
             .where((Asset.project_id == project_id) & Asset.id.in_(ids)).dicts()} if ids else {}
    out = []
    for row in rows:
        asset = found.get(row["export_asset_id"])
        out.append({**row, "storage_uri": asset["storage_uri"] if asset else None,
                    "size_bytes": (asset["metadata_json"] or {}).get("size_bytes") if asset else None})
    return out


def list_exports(project_id: str, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    query = ProjectExport.select().where(ProjectExport.project_id == project_id)
    rows, next_cursor = keyset_page(query, ProjectExport, limit, cursor)
    return _with_assets(project_id, rows), next_cursor


def get_export(project_id: str, export_id: str) -> dict:
    row = (ProjectExport.select().where((ProjectExport.project_id == project_id) & (ProjectExport.id == export_id))
           .dicts().first())
    if row is None:
        raise NotFound(f"export {export_id} not found", details={"export_id": export_id})
    return _with_assets(project_id, [row])[0]


def public(root: Path, row: dict) -> dict:
    """The row as exports.* answer it: where the package is on this machine (a folder package: its folder)."""
    path = None
    if row.get("storage_uri"):
        try:
            file = abs_path(root, row["storage_uri"])
            path = str(file.parent if row["format"] == "folder" else file)
        except Forbidden:
            path = None
    return {k: row.get(k) for k in ("id", "project_id", "export_asset_id", "format", "sha256", "created_at",
                                    "size_bytes")} | {"path": path}


def project_row(project_id: str) -> dict:
    return Project.select().where(Project.id == project_id).dicts().first()


def record_app_import(project_id: str, actor_id: str, path: str, info: dict) -> None:
    """The import in the app's audit trail (the project's own trail has its project.imported row)."""
    audit.record_app(project_id, actor_id, "project.imported", {
        "path": path, "source_project_id": info["source"]["id"], "source_slug": info["source"]["slug"],
        "id_changed": info["id_changed"], "slug_changed": info["slug_changed"], "files": info["files"]})
