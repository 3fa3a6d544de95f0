"""Chat sessions, messages, agent instructions, their events and dispatch rows in the project database (SPEC 5.6).

Every function runs inside `Store.read` / `Store.write` and scopes by project (SPEC 7): a session, message or
instruction of another project is simply not found.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

from iat.clock import utcnow
from iat.db.models import AgentDispatch, AgentInstruction, AgentInstructionEvent, ChatMessage, ChatSession
from iat.errors import NotFound
from iat.pagination import keyset_page

# --- sessions ---


def create_session(project_id: str, user_id: str, title: str, context: dict) -> dict:
    now = utcnow()
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "user_id": user_id, "title": title,
           "status": "active", "context_json": context, "created_at": now, "updated_at": now}
    ChatSession.insert(**row).execute()
    return row


def get_session(project_id: str, session_id: str) -> dict:
    row = (ChatSession.select().where(ChatSession.project_id == project_id, ChatSession.id == session_id)
           .dicts().first())
    if row is None:
        raise NotFound(f"chat session {session_id} not found", details={"session_id": str(session_id)})
    return row


def list_sessions(project_id: str, status: str | None, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    query = ChatSession.select().where(ChatSession.project_id == project_id)
    if status:
        query = query.where(ChatSession.status == status)
    return keyset_page(query, ChatSession, limit, cursor)


def touch_session(session_id: str, **fields) -> None:
    ChatSession.update(updated_at=utcnow(), **fields).where(ChatSession.id == session_id).execute()


def message_counts(session_ids: list[str]) -> dict[str, int]:
    from peewee import fn

    rows = (ChatMessage.select(ChatMessage.session_id, fn.COUNT(ChatMessage.id).alias("n"))
            .where(ChatMessage.session_id.in_(session_ids)).group_by(ChatMessage.session_id).tuples())
    return {str(sid): n for sid, n in rows}


# --- messages ---


def add_message(project_id: str, session_id: str, role: str, text: str, content: dict | None = None,
                token_usage: dict | None = None, voice_asset_id: str | None = None) -> dict:
    get_session(project_id, session_id)
    row = {"id": str(uuid.uuid4()), "session_id": str(session_id), "role": role, "content_text": text,
           "content_json": content or {}, "voice_asset_id": voice_asset_id, "token_usage_json": token_usage or {},
           "created_at": utcnow()}
    ChatMessage.insert(**row).execute()
    touch_session(str(session_id))
    return row


def update_message(message_id: str, **fields) -> None:
    ChatMessage.update(**fields).where(ChatMessage.id == message_id).execute()


def list_messages(project_id: str, session_id: str, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """Newest first, like every page; a transcript reader reverses a page."""
    get_session(project_id, session_id)
    return keyset_page(ChatMessage.select().where(ChatMessage.session_id == session_id), ChatMessage, limit, cursor)


def recent_messages(session_id: str, count: int) -> list[dict]:
    """The last `count` messages, oldest first (the conversation an assistant reads)."""
    rows = list(ChatMessage.select().where(ChatMessage.session_id == session_id)
                .order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc()).limit(count).dicts())
    return rows[::-1]


# --- instructions ---


def insert_instruction(row: dict) -> dict:
    AgentInstruction.insert(**row).execute()
    return row


def get_instruction(project_id: str, instruction_id: str) -> dict:
    row = (AgentInstruction.select()
           .where(AgentInstruction.project_id == project_id, AgentInstruction.id == instruction_id).dicts().first())
    if row is None:
        raise NotFound(f"instruction {instruction_id} not found", details={"instruction_id": str(instruction_id)})
    return row


def find_instruction(instruction_id: str) -> dict | None:
    """By id alone: for callers that must tell another project's instruction from a missing one (guardrails)."""
    return AgentInstruction.select().where(AgentInstruction.id == instruction_id).dicts().first()


def list_instructions(project_id: str, *, status: str | None = None, session_id: str | None = None,
                      instruction_type: str | None = None, limit: int, cursor: str | None
                      ) -> tuple[list[dict], str | None]:
    query = AgentInstruction.select().where(AgentInstruction.project_id == project_id)
    if status:
        query = query.where(AgentInstruction.status == status)
    if session_id:
        query = query.where(AgentInstruction.session_id == session_id)
    if instruction_type:
        query = query.where(AgentInstruction.instruction_type == instruction_type)
    return keyset_page(query, AgentInstruction, limit, cursor)


def update_instruction(instruction_id: str, expected_status: str, **fields) -> bool:
    """Changes the row only while it still has `expected_status` (so two writers cannot both move it)."""
    fields["updated_at"] = utcnow()
    return bool(AgentInstruction.update(**fields)
                .where(AgentInstruction.id == instruction_id, AgentInstruction.status == expected_status).execute())


def queued_in_order(project_id: str, limit: int = 50) -> list[dict]:
    """Queued instructions, the lowest priority number first, then the oldest (SPEC: priority orders the queue)."""
    return list(AgentInstruction.select()
                .where(AgentInstruction.project_id == project_id, AgentInstruction.status == "queued")
                .order_by(AgentInstruction.priority, AgentInstruction.queued_at, AgentInstruction.created_at)
                .limit(limit).dicts())


def with_status(project_id: str, status: str) -> list[dict]:
    return list(AgentInstruction.select()
                .where(AgentInstruction.project_id == project_id, AgentInstruction.status == status).dicts())


# --- events ---


_stamp_lock = threading.Lock()
_last_stamp: datetime | None = None


def _event_time() -> datetime:
    """Strictly increasing in this process: events written in one transaction (a status change and its result)
    would otherwise share a microsecond, and their order would fall to their random ids."""
    global _last_stamp
    with _stamp_lock:
        now = utcnow()
        if _last_stamp is not None and now <= _last_stamp:
            now = _last_stamp + timedelta(microseconds=1)
        _last_stamp = now
        return now


def add_event(instruction_id: str, event_type: str, payload: dict | None = None) -> dict:
    row = {"id": str(uuid.uuid4()), "instruction_id": str(instruction_id), "event_type": event_type,
           "event_payload_json": payload or {}, "created_at": _event_time()}
    AgentInstructionEvent.insert(**row).execute()
    return row


def list_events(project_id: str, instruction_id: str, limit: int, after: str | None) -> tuple[list[dict], str | None]:
    """Oldest first (a trail is read forwards); `after` is the last event id already seen."""
    get_instruction(project_id, instruction_id)
    query = AgentInstructionEvent.select().where(AgentInstructionEvent.instruction_id == instruction_id)
    if after:
        seen = (AgentInstructionEvent.select().where(AgentInstructionEvent.id == after,
                                                     AgentInstructionEvent.instruction_id == instruction_id)
                .dicts().first())
        if seen is None:
            raise NotFound(f"event {after} is not an event of instruction {instruction_id}",
                           details={"after": after})
        query = query.where((AgentInstructionEvent.created_at > seen["created_at"])
                            | ((AgentInstructionEvent.created_at == seen["created_at"])
                               & (AgentInstructionEvent.id > after)))
    rows = list(query.order_by(AgentInstructionEvent.created_at, AgentInstructionEvent.id).limit(limit + 1).dicts())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more and rows else None)


# --- dispatch rows (migration 0006) ---


def get_dispatch(instruction_id: str) -> dict | None:
    return AgentDispatch.select().where(AgentDispatch.instruction_id == instruction_id).dicts().first()


def put_dispatch(instruction_id: str, **fields) -> dict:
    """Creates or updates the instruction's dispatch row (agent, worker_id, token_sha256, remote_status,
    state_json)."""
    now = utcnow()
    current = get_dispatch(instruction_id)
    if current is None:
        row = {"instruction_id": str(instruction_id), "agent": "builtin", "worker_id": "", "token_sha256": None,
               "remote_status": None, "state_json": {}, "created_at": now, "updated_at": now, **fields}
        AgentDispatch.insert(**row).execute()
        return row
    AgentDispatch.update(updated_at=now, **fields).where(AgentDispatch.instruction_id == instruction_id).execute()
    return {**current, **fields, "updated_at": now}
