"""reference_sets.*: reusable packs of weighted references to the project's own assets (SPEC 2.3, 5.2)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from iat.clock import utcnow
from iat.commands.common import Page, PageParams, ProjectRef
from iat.lazy import lazy_import
from iat.registry import Result, command

repo = lazy_import("iat.knowledge.repo")

ReferenceKind = Literal["style", "character", "scene", "lighting", "other"]
# reference_items.weight is NUMERIC(8,4): the smallest weight above 0 it holds, and the largest.
MIN_WEIGHT, MAX_WEIGHT = 0.0001, 9999.9999


class ReferenceItemOut(Result):
    id: str
    reference_set_id: str
    asset_id: str
    weight: float
    notes: str
    created_at: datetime


class ReferenceSetSummary(Result):
    id: str
    project_id: str
    name: str
    kind: ReferenceKind
    metadata_json: dict
    created_at: datetime
    updated_at: datetime


class ReferenceSetOut(ReferenceSetSummary):
    items: list[ReferenceItemOut] = Field(description="The set's items, oldest first")


class ReferenceSetPage(Page):
    items: list[ReferenceSetSummary]


class ReferenceSetCreate(ProjectRef):
    name: str = Field(min_length=1, max_length=200)
    kind: ReferenceKind
    metadata_json: dict = Field(default_factory=dict)


class ReferenceSetListParams(PageParams):
    kind: ReferenceKind | None = None


class ReferenceSetRef(ProjectRef):
    reference_set_id: uuid.UUID


class ReferenceItemAdd(ReferenceSetRef):
    asset_id: uuid.UUID = Field(description="An asset of this project")
    weight: float = Field(1.0, ge=MIN_WEIGHT, le=MAX_WEIGHT, strict=True,
                          description="Relative weight, 0.0001..9999.9999, kept to 4 decimal places")
    notes: str = Field("", max_length=2000)


class ReferenceItemRef(ReferenceSetRef):
    asset_id: uuid.UUID


def _publish(ctx, event: str, slug: str, payload: dict) -> None:
    ctx.app.events.publish(event, {"slug": slug, **payload})


@command("reference_sets.create", params=ReferenceSetCreate, result=ReferenceSetOut,
         route=("POST", "/api/projects/{slug}/reference-sets"), mutating=True)
def create(ctx, p: ReferenceSetCreate) -> ReferenceSetOut:
    """Adds an empty reference set of a kind: style, character, scene, lighting or other."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    row = handle.store.write(repo.create_reference_set, handle.id, p.name, p.kind, p.metadata_json, actor["id"],
                             utcnow())
    _publish(ctx, "reference_set.created", p.slug, {"project_id": handle.id, "id": row["id"], "name": row["name"],
                                                     "kind": row["kind"]})
    return ReferenceSetOut.model_validate(row)


@command("reference_sets.list", params=ReferenceSetListParams, result=ReferenceSetPage,
         route=("GET", "/api/projects/{slug}/reference-sets"))
def list_sets(ctx, p: ReferenceSetListParams) -> ReferenceSetPage:
    """Lists the project's reference sets newest first, optionally of one kind; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_reference_sets, handle.id, p.kind, p.limit, p.cursor)
    return ReferenceSetPage(items=items, next_cursor=cursor)


@command("reference_sets.get", params=ReferenceSetRef, result=ReferenceSetOut,
         route=("GET", "/api/projects/{slug}/reference-sets/{reference_set_id}"))
def get(ctx, p: ReferenceSetRef) -> ReferenceSetOut:
    """Returns one reference set with its items."""
    handle = ctx.app.projects.open(p.slug)
    row = handle.store.read(repo.get_reference_set_with_items, handle.id, str(p.reference_set_id))
    return ReferenceSetOut.model_validate(row)


@command("reference_sets.add_item", params=ReferenceItemAdd, result=ReferenceItemOut,
         route=("POST", "/api/projects/{slug}/reference-sets/{reference_set_id}/items"), mutating=True)
def add_item(ctx, p: ReferenceItemAdd) -> ReferenceItemOut:
    """Adds an asset of this project to the set with a weight. An asset of another project or an unknown one is
    not_found; an asset already in the set is a conflict (remove it first to change its weight or notes)."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    weight = Decimal(str(round(p.weight, 4)))
    row = handle.store.write(repo.add_reference_item, handle.id, str(p.reference_set_id), str(p.asset_id), weight,
                             p.notes, actor["id"], utcnow())
    _publish(ctx, "reference_set.item_added", p.slug, {"project_id": handle.id, "reference_set_id": row[
        "reference_set_id"], "id": row["id"], "asset_id": row["asset_id"]})
    return ReferenceItemOut.model_validate(row)


@command("reference_sets.remove_item", params=ReferenceItemRef, result=ReferenceItemOut,
         route=("DELETE", "/api/projects/{slug}/reference-sets/{reference_set_id}/items/{asset_id}"), mutating=True)
def remove_item(ctx, p: ReferenceItemRef) -> ReferenceItemOut:
    """Removes an asset from the set (the asset itself stays); returns the removed item."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    row = handle.store.write(repo.remove_reference_item, handle.id, str(p.reference_set_id), str(p.asset_id),
                             actor["id"], utcnow())
    _publish(ctx, "reference_set.item_removed", p.slug, {"project_id": handle.id, "reference_set_id": row[
        "reference_set_id"], "id": row["id"], "asset_id": row["asset_id"]})
    return ReferenceItemOut.model_validate(row)
