"""assets.*: a project's file registry: pages newest first, imports, links, lineage and deletion (SPEC 5.3)."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from iat.clock import utcnow
from iat.commands.common import AbsolutePath, Page, PageParams, ProjectRef
from iat.lazy import lazy_import
from iat.errors import Conflict, Forbidden, NotFound, PayloadTooLarge
from iat.registry import Result, command

repo = lazy_import("iat.assets.repo")
importer = lazy_import("iat.assets.importer")
files = lazy_import("iat.assets.store")
deletion = lazy_import("iat.assets.delete")

AssetKind = Literal["input", "reference", "generated", "mask", "upscaled", "bg_removed", "final", "run_log",
                    "export", "other"]
LinkType = Literal["derived_from", "variant_of", "mask_for", "reference_of"]


class AssetOut(Result):
    id: str
    project_id: str
    kind: AssetKind
    storage_uri: str
    storage_backend: Literal["local", "s3"]
    mime_type: str | None
    width: int | None
    height: int | None
    sha256: str | None
    metadata_json: dict
    created_at: datetime


class AssetPage(Page):
    items: list[AssetOut]


class ListParams(PageParams):
    kind: AssetKind | None = None


class AssetRef(ProjectRef):
    asset_id: uuid.UUID


@command("assets.list", params=ListParams, result=AssetPage, route=("GET", "/api/projects/{slug}/assets"))
def list_assets(ctx, p: ListParams) -> AssetPage:
    """Lists a project's assets newest first, optionally of one kind; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_assets, handle.id, p.kind, p.limit, p.cursor)
    return AssetPage(items=items, next_cursor=cursor)


@command("assets.get", params=AssetRef, result=AssetOut, route=("GET", "/api/projects/{slug}/assets/{asset_id}"))
def get_asset(ctx, p: AssetRef) -> AssetOut:
    """Returns one asset of the project."""
    handle = ctx.app.projects.open(p.slug)
    return AssetOut.model_validate(handle.store.read(repo.get_asset, handle.id, str(p.asset_id)))


# --- content ---

# Room the JSON-RPC envelope and the other fields take beside data_base64 in one message.
_READ_ENVELOPE_BYTES = 64 * 1024


class AssetContent(Result):
    id: str
    mime_type: str
    size: int = Field(description="Bytes of the file")
    data_base64: str = Field(description="The file's bytes, base64 (RFC 4648, with padding)")


def max_read_bytes(max_message_bytes: int) -> int:
    """The largest file assets.read returns: its base64 (4 characters per 3 bytes) and the envelope fit one
    message of the transport's limit."""
    return (max_message_bytes - _READ_ENVELOPE_BYTES) // 4 * 3


@command("assets.read", params=AssetRef, result=AssetContent,
         route=("GET", "/api/projects/{slug}/assets/{asset_id}/content"), errors=(NotFound, PayloadTooLarge))
def read_asset(ctx, p: AssetRef) -> AssetContent:
    """Returns one asset's bytes (base64) with its mime type, for viewers (a run's contact sheet, say).

    Refuses (payload_too_large, naming the size and the limit) a file whose base64 would not fit one message,
    and (not_found) an asset whose file is not in the project folder."""
    handle = ctx.app.projects.open(p.slug)
    row = handle.store.read(repo.get_asset, handle.id, str(p.asset_id))
    details = {"asset_id": row["id"], "storage_uri": row["storage_uri"]}
    if row["storage_backend"] != "local":
        raise NotFound(f"asset {row['id']} is not stored in the project folder", details=details)
    path = files.abs_path(handle.root, row["storage_uri"])
    limit = max_read_bytes(ctx.app.settings.max_message_bytes)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise PayloadTooLarge(f"asset {row['id']} has {size} bytes, over the {limit}-byte limit of "
                                      "assets.read", details={**details, "size": size, "limit_bytes": limit})
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"the file of asset {row['id']} is missing", details=details) from None
    if len(data) > limit:  # grew since the stat: content-addressed files never should
        raise PayloadTooLarge(f"asset {row['id']} is over the {limit}-byte limit of assets.read",
                              details={**details, "size": len(data), "limit_bytes": limit})
    return AssetContent(id=row["id"], mime_type=row["mime_type"] or "application/octet-stream", size=len(data),
                        data_base64=base64.b64encode(data).decode("ascii"))


# --- import ---


class ImportParams(ProjectRef):
    # At most 1,000 entries (folders carry larger batches): the longest valid body stays far below the 16 MiB
    # message limit, so an over-long list is refused by the schema, never by the transport's size guard.
    paths: list[AbsolutePath] = Field(min_length=1, max_length=1000, description=(
        "Absolute paths of files or folders, each under one of the project's import roots: "
        "settings_json.import_roots when set, else the user's home folder and the project folder"))
    kind: AssetKind = "input"
    recursive: bool = Field(False, strict=True, description="Also import the files of subfolders of the folders given")


class ImportedAsset(AssetOut):
    deduplicated: bool = Field(description="These bytes were in the project already: this is the existing asset")
    source_path: str


class ImportResult(Result):
    items: list[ImportedAsset]
    created: int
    deduplicated: int


@command("assets.import", params=ImportParams, result=ImportResult,
         route=("POST", "/api/projects/{slug}/assets/import"), mutating=True, errors=(Forbidden, NotFound))
def import_assets(ctx, p: ImportParams) -> ImportResult:
    """Imports files or folders into the project's content-addressed store, all or nothing.

    Refuses, naming each path in details.errors, paths outside the import roots and symlinks leading out of them
    (forbidden), paths naming nothing (not_found), files whose content contradicts their extension or that cannot
    be read (invalid_params); then nothing of the batch is imported. Bytes already in the
    project under this kind return the existing asset (`deduplicated: true`). Long imports publish
    `assets.import.progress` notifications (done/total, at most ~5 a second)."""
    actor = ctx.app.current_user()
    with ctx.app.projects.lease(p.slug) as handle:  # a deletion of the project waits for the import
        def progress(done: int, total: int) -> None:
            ctx.app.events.publish("assets.import.progress",
                                   {"project_id": handle.id, "slug": p.slug, "done": done, "total": total})

        rows = importer.import_files(handle, p.paths, p.kind, p.recursive, actor["id"], progress)
    items = [ImportedAsset.model_validate({**row, "deduplicated": dedup, "source_path": source})
             for row, dedup, source in rows]
    new_ids = list(dict.fromkeys(i.id for i in items if not i.deduplicated))
    if items:
        ctx.app.events.publish("assets.imported", {"project_id": handle.id, "slug": p.slug, "kind": p.kind,
                                                   "asset_ids": new_ids, "files": len(items)})
    return ImportResult(items=items, created=len(new_ids), deduplicated=len(items) - len(new_ids))


# --- links and lineage ---


class LinkParams(ProjectRef):
    parent_asset_id: uuid.UUID = Field(description="The upstream asset (what the child came from or used)")
    child_asset_id: uuid.UUID
    link_type: LinkType = Field(description="Reads 'child <link_type> parent'; reference_of: the parent was a "
                                            "reference for the child")


class LinkOut(Result):
    id: str
    project_id: str
    parent_asset_id: str
    child_asset_id: str
    link_type: LinkType
    created_at: datetime


class LineageParams(AssetRef):
    direction: Literal["ancestors", "descendants"]
    max_depth: int = Field(32, ge=1, le=256, description="How many links away to follow")


class LineageNode(AssetOut):
    depth: int = Field(description="Links between this asset and the one asked about (0: itself)")


class Lineage(Result):
    asset_id: str
    direction: Literal["ancestors", "descendants"]
    nodes: list[LineageNode]
    edges: list[LinkOut]


@command("assets.link", params=LinkParams, result=LinkOut, route=("POST", "/api/projects/{slug}/assets/links"),
         mutating=True, errors=(Conflict,))
def link(ctx, p: LinkParams) -> LinkOut:
    """Links two assets of the project (child derived_from / variant_of / mask_for / reference_of parent).

    Refuses (conflict) an asset of another project or of none, a self-link, a derived_from cycle and a link that
    exists already."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    row = handle.store.write(repo.insert_link, handle.id, str(p.parent_asset_id), str(p.child_asset_id),
                             p.link_type, utcnow(), actor["id"])
    ctx.app.events.publish("asset.linked", {"project_id": handle.id, "slug": p.slug, "link_id": row["id"],
                                            "parent_asset_id": row["parent_asset_id"],
                                            "child_asset_id": row["child_asset_id"], "link_type": p.link_type})
    return LinkOut.model_validate(row)


@command("assets.lineage", params=LineageParams, result=Lineage,
         route=("GET", "/api/projects/{slug}/assets/{asset_id}/lineage"))
def lineage(ctx, p: LineageParams) -> Lineage:
    """An asset's ancestors or descendants through every link type: nodes (asset rows with depth, the asset
    itself at depth 0) and the links followed as edges."""
    handle = ctx.app.projects.open(p.slug)
    return Lineage.model_validate(handle.store.read(repo.lineage, handle.id, str(p.asset_id), p.direction,
                                                    p.max_depth))


# --- deleting ---


class DeletedAsset(Result):
    asset: AssetOut = Field(description="The row as it was")
    links_removed: list[LinkOut] = Field(description="Its links (as parent or child), removed with it")
    file_removed: bool = Field(description="False when another asset row shares the file (same bytes), or the "
                                           "asset is not stored in the project folder")


@command("assets.delete", params=AssetRef, result=DeletedAsset,
         route=("DELETE", "/api/projects/{slug}/assets/{asset_id}"), mutating=True, errors=(NotFound, Conflict))
def delete_asset(ctx, p: AssetRef) -> DeletedAsset:
    """Deletes an asset nothing depends on: its row and its links (children derived from it stay, with their
    files), then its file unless another asset row of the project shares it.

    Refuses (conflict, with details.used_by: table, column, what, count, ids) an asset in use: a shot's or a
    candidate's final, a candidate's output or a step of its chain, a reference set item, an export's package, a
    chat message's or a voice request's recording; then nothing changes. An asset of another project is
    not_found."""
    with ctx.app.projects.lease(p.slug) as handle:  # a deletion of the project waits for the file's removal
        out = deletion.delete_asset(handle, str(p.asset_id), ctx.app.current_user()["id"])
    asset = out["asset"]
    ctx.app.events.publish("asset.deleted", {"project_id": handle.id, "slug": p.slug, "asset_id": asset["id"],
                                             "kind": asset["kind"], "file_removed": out["file_removed"],
                                             "links_removed": len(out["links"])})
    return DeletedAsset(asset=AssetOut.model_validate(asset),
                        links_removed=[LinkOut.model_validate(link) for link in out["links"]],
                        file_removed=out["file_removed"])
