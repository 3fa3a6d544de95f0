"""chat.*: the copilot's conversations (SPEC 2.6, 5.6 chat_sessions / chat_messages, 9.1 Chat Sessions).

A session is one conversation of a user in one project. `chat.messages.send` is one turn: the user's message is
stored, the assistant answers (an LLM with tool calls when the project's `llm` provider is ready, else the offline
parser), the instructions it proposes are created through the guardrails, and the answer is stored with its token
usage. Events: `chat.message.created` for each message, `chat.message.delta` while an LLM streams its answer, and
the instructions' own events (agent.*).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from iat.commands.agent import InstructionOut, instruction_out
from iat.commands.common import Cursor, Page, PageParams, ProjectRef
from iat.errors import GuardrailDenied, ProviderError
from iat.lazy import lazy_import
from iat.pipeline.shots import NO_CONTROL
from iat.registry import Result, command

chat = lazy_import("iat.copilot.chat")
repo = lazy_import("iat.copilot.repo")
audit = lazy_import("iat.audit.repo")

MAX_TEXT = 8000


class SessionOut(Result):
    id: str
    project_id: str
    user_id: str
    title: str
    status: Literal["active", "archived"]
    context_json: dict
    created_at: datetime
    updated_at: datetime


class SessionPage(Page):
    items: list[SessionOut]


class MessageOut(Result):
    id: str
    session_id: str
    role: Literal["user", "assistant", "system", "tool"]
    content_text: str
    content_json: dict = Field(description="assistant: kind (propose|clarify|answer|cancel|refuse|help), source "
                                           "(parser|llm), instruction_ids, and per kind question/options, query/"
                                           "answer, refused proposals with their errors")
    voice_asset_id: str | None
    token_usage_json: dict = Field(description="An LLM answer's prompt/completion/total tokens, cost_usd, model")
    created_at: datetime


class MessagePage(Page):
    items: list[MessageOut]


class CreateSessionParams(ProjectRef):
    title: str = Field("", max_length=200, pattern=NO_CONTROL)
    context: dict[str, Any] = Field(default_factory=dict, description="Free context kept with the session")


class SessionRef(ProjectRef):
    session_id: uuid.UUID


class SessionListParams(PageParams):
    status: Literal["active", "archived"] | None = None


class SendParams(SessionRef):
    text: str = Field(min_length=1, max_length=MAX_TEXT, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
                      description="What the user says (line breaks and tabs allowed, no other control characters)")


class MessageListParams(SessionRef):
    limit: int = Field(50, ge=1, le=500)
    cursor: Cursor | None = None


class TurnOut(Result):
    user_message: MessageOut
    assistant_message: MessageOut
    instructions: list[InstructionOut] = Field(description="The instructions this turn created (queued, or draft "
                                                           "when they need confirmation)")


def _session_out(row: dict) -> SessionOut:
    return SessionOut(**{**row, "id": str(row["id"]), "project_id": str(row["project_id"]),
                         "user_id": str(row["user_id"])})


def _message_out(row: dict) -> MessageOut:
    return MessageOut(**{**row, "id": str(row["id"]), "session_id": str(row["session_id"]),
                         "voice_asset_id": str(row["voice_asset_id"]) if row["voice_asset_id"] else None})


@command("chat.sessions.create", params=CreateSessionParams, result=SessionOut,
         route=("POST", "/api/projects/{slug}/chat/sessions"), mutating=True)
def create_session(ctx, p: CreateSessionParams) -> SessionOut:
    """Starts a conversation with the copilot in the project."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()["id"]

    def write(pid: str) -> dict:
        row = repo.create_session(pid, actor, p.title, p.context)
        audit.record(pid, actor, "chat.session.created", {"session_id": row["id"]})
        return row

    row = handle.store.write(write, handle.id)
    ctx.app.events.publish("chat.session.created", {"project_id": handle.id, "slug": handle.slug,
                                                    "session_id": row["id"]})
    return _session_out(row)


@command("chat.sessions.list", params=SessionListParams, result=SessionPage,
         route=("GET", "/api/projects/{slug}/chat/sessions"))
def list_sessions(ctx, p: SessionListParams) -> SessionPage:
    """Lists the project's conversations, newest first; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_sessions, handle.id, p.status, p.limit, p.cursor)
    return SessionPage(items=[_session_out(r) for r in items], next_cursor=cursor)


@command("chat.sessions.get", params=SessionRef, result=SessionOut,
         route=("GET", "/api/projects/{slug}/chat/sessions/{session_id}"))
def get_session(ctx, p: SessionRef) -> SessionOut:
    """Returns one conversation."""
    handle = ctx.app.projects.open(p.slug)
    return _session_out(handle.store.read(repo.get_session, handle.id, str(p.session_id)))


@command("chat.messages.send", params=SendParams, result=TurnOut,
         route=("POST", "/api/projects/{slug}/chat/sessions/{session_id}/messages"), mutating=True,
         errors=(GuardrailDenied, ProviderError))
def send_message(ctx, p: SendParams) -> TurnOut:
    """Sends the user's message and returns the copilot's answer with the instructions it created.

    The answer proposes instructions (created queued, or draft when they need confirmation), asks back when the
    request is ambiguous, answers questions (costs, instructions) or cancels an instruction. A proposal a guardrail
    refuses (another project's assets, a type the project does not allow) is not created; the answer says why."""
    handle = ctx.app.projects.open(p.slug)
    out = chat.send(ctx.app, handle, ctx.app.current_user()["id"], str(p.session_id), p.text)
    return TurnOut(user_message=_message_out(out["user_message"]),
                   assistant_message=_message_out(out["assistant_message"]),
                   instructions=[instruction_out(ctx.app, handle, r) for r in out["instructions"]])


@command("chat.messages.list", params=MessageListParams, result=MessagePage,
         route=("GET", "/api/projects/{slug}/chat/sessions/{session_id}/messages"))
def list_messages(ctx, p: MessageListParams) -> MessagePage:
    """Lists a conversation's messages, newest first; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_messages, handle.id, str(p.session_id), p.limit, p.cursor)
    return MessagePage(items=[_message_out(r) for r in items], next_cursor=cursor)
