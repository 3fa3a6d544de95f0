"""voice_requests rows (SPEC 5.6): one per STT or TTS call, scoped by project (SPEC 7: another project's request is
simply not found). Every function runs inside `Store.read` / `Store.write`."""

from __future__ import annotations

import uuid

from iat.clock import utcnow
from iat.db.models import VoiceRequest
from iat.errors import NotFound


def insert_request(project_id: str, direction: str, provider_code: str, *, input_asset_id: str | None = None,
                   session_id: str | None = None, message_id: str | None = None, meta: dict | None = None,
                   status: str = "running") -> dict:
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "session_id": session_id, "message_id": message_id,
           "direction": direction, "provider_code": provider_code, "input_asset_id": input_asset_id,
           "output_asset_id": None, "status": status, "latency_ms": None, "meta_json": meta or {},
           "created_at": utcnow()}
    VoiceRequest.insert(**row).execute()
    return row


def get_request(project_id: str, request_id: str) -> dict:
    row = (VoiceRequest.select().where(VoiceRequest.project_id == project_id, VoiceRequest.id == str(request_id))
           .dicts().first())
    if row is None:
        raise NotFound(f"voice request {request_id} not found", details={"request_id": str(request_id)})
    return row


def finish_request(project_id: str, request_id: str, **fields) -> dict:
    """Sets the given columns (status, latency_ms, meta_json, output_asset_id, message_id...); returns the row."""
    VoiceRequest.update(**fields).where(VoiceRequest.project_id == project_id,
                                        VoiceRequest.id == str(request_id)).execute()
    return get_request(project_id, request_id)
