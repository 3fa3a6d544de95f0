"""The audit trail (SPEC 5.5 audit_events; app-level events in app_audit_events). Written inside the same
transaction as the change it records, so a change and its audit row land together or not at all."""

from __future__ import annotations

import uuid

from iat.clock import utcnow
from iat.db.models import AppAuditEvent, AuditEvent
from iat.pagination import keyset_page


def _insert(model, project_id: str | None, actor_user_id: str | None, event_code: str, payload: dict | None) -> dict:
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "actor_user_id": actor_user_id,
           "event_code": event_code, "payload_json": payload or {}, "created_at": utcnow()}
    model.insert(**row).execute()
    return row


def record(project_id: str | None, actor_user_id: str | None, event_code: str, payload: dict | None = None) -> dict:
    """An event of one project, in its own database."""
    return _insert(AuditEvent, project_id, actor_user_id, event_code, payload)


def record_app(project_id: str | None, actor_user_id: str | None, event_code: str, payload: dict | None = None) -> dict:
    """An event in app.db, for what outlives a project's database (its deletion)."""
    return _insert(AppAuditEvent, project_id, actor_user_id, event_code, payload)


def list_events(project_id: str, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    query = AuditEvent.select().where(AuditEvent.project_id == project_id)
    return keyset_page(query, AuditEvent, limit, cursor)


def list_app_events(limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    return keyset_page(AppAuditEvent.select(), AppAuditEvent, limit, cursor)
