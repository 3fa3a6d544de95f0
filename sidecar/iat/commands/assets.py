"""assets.*: a project's file registry, paged newest first."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from iat.commands.common import Page, PageParams, ProjectRef
from iat.lazy import lazy_import
from iat.registry import Result, command

repo = lazy_import("iat.assets.repo")

AssetKind = Literal["input", "reference", "generated", "mask", "upscaled", "bg_removed", "final", "run_log",
                    "export", "other"]


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
