"""audit.*: the audit trail of one project, or of the app (project deletions) when no slug is given."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from iat.commands.common import Cursor, Page, ProjectRef, Slug
from iat.lazy import lazy_import
from iat.registry import Params, Result, command

repo = lazy_import("iat.audit.repo")


class AuditEventOut(Result):
    id: str
    project_id: str | None
    actor_user_id: str | None
    event_code: str
    payload_json: dict
    created_at: datetime


class AuditPage(Page):
    items: list[AuditEventOut]


class AuditParams(Params):
    slug: Slug | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: Cursor | None = None


@command("audit.list", params=AuditParams, result=AuditPage, route=("GET", "/api/audit"),
         errors=ProjectRef.lookup_errors)
def list_events(ctx, p: AuditParams) -> AuditPage:
    """Lists audit events newest first: a project's (slug given) or the app's; page with next_cursor."""
    if p.slug is None:
        items, cursor = ctx.app.app_store.read(repo.list_app_events, p.limit, p.cursor)
    else:
        handle = ctx.app.projects.open(p.slug)
        items, cursor = handle.store.read(repo.list_events, handle.id, p.limit, p.cursor)
    return AuditPage(items=items, next_cursor=cursor)
