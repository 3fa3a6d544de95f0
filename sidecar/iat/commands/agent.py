"""agent.instructions.*: structured instructions for the AI agent and their lifecycle (SPEC 2.6, 5.6, 9.1, 9.2).

An instruction is created in `draft` through the guardrails (project scope, the project's allowed types, and
confirmation for destructive work) and queued at once unless it needs a user's confirmation or `queue` is false.
Lifecycle: draft -> queued -> running -> done | failed | canceled; anything else is `illegal_transition`. Every
move writes an `agent_instruction_events` row and sends `agent.instruction.status`; every event row is sent as
`agent.instruction.event`. The queue is worked by the project's agent (built in, or an external agent API), the
lowest priority number first.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from iat.commands.common import Page, PageParams, ProjectRef
from iat.copilot.envelope import InstructionType, Status
from iat.errors import ConfirmationRequired, GuardrailDenied, IllegalTransition
from iat.knowledge.rules import json_integer
from iat.lazy import lazy_import
from iat.pipeline.shots import NO_CONTROL
from iat.registry import Result, command

service = lazy_import("iat.copilot.service")
repo = lazy_import("iat.copilot.repo")

EventType = Literal["queued", "started", "log", "result", "error", "status_change"]


class InstructionPayload(Result):
    objective: str
    constraints: dict
    inputs: dict
    execution: dict


class InstructionOut(Result):
    id: str
    project_id: str
    session_id: str | None
    message_id: str | None
    instruction_type: InstructionType
    status: Status
    priority: int
    requires_confirmation: bool
    confirmation_reasons: list[str] = Field(description="Why it needs a user's confirmation (empty: it does not)")
    confirmed_by_user_id: str | None
    payload: InstructionPayload
    envelope: dict = Field(description="The SPEC 9.2 envelope an agent receives (schema/agent_instruction.schema"
                                       ".json), without the callback token")
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime


class InstructionPage(Page):
    items: list[InstructionOut]


class EventOut(Result):
    id: str
    instruction_id: str
    event_type: EventType
    event_payload_json: dict
    created_at: datetime


class EventPage(Result):
    items: list[EventOut]
    next_after: str | None = Field(description="Pass as `after` for the next events (null: none yet)")


class InstructionCreateParams(ProjectRef):
    instruction_type: InstructionType
    objective: str = Field(min_length=1, max_length=2000, pattern=NO_CONTROL, description="The plain-language goal")
    inputs: dict[str, Any] = Field(description="What the type takes (schema/agent_instruction.schema.json "
                                               "$defs/<type>.inputs)")
    execution: dict[str, Any] = Field(default_factory=dict, description="Options ($defs/<type>.execution)")
    constraints: dict[str, Any] = Field(default_factory=dict, description="Hard limits ($defs/constraints)")
    priority: Annotated[int, BeforeValidator(json_integer)] = Field(100, ge=0, le=1000, strict=True,
                                                                    description="Lower runs first")
    session_id: uuid.UUID | None = Field(None, description="The chat session it belongs to")
    queue: bool = Field(True, strict=True, description="Queue it at once when it needs no confirmation; false "
                                                       "leaves it in draft (queue it with confirm)")


class InstructionRef(ProjectRef):
    instruction_id: uuid.UUID


class InstructionCancelParams(InstructionRef):
    reason: str | None = Field(None, max_length=500, pattern=NO_CONTROL)


class InstructionListParams(PageParams):
    status: Status | None = None
    instruction_type: InstructionType | None = None
    session_id: uuid.UUID | None = None


class InstructionEventsParams(InstructionRef):
    limit: int = Field(200, ge=1, le=1000)
    after: uuid.UUID | None = Field(None, description="The last event id already seen: only later ones")


def _creation_reasons(project_id: str, ids: list[str]) -> dict[str, list[str]]:
    from iat.db.models import AgentInstructionEvent as Event

    rows = (Event.select(Event.instruction_id, Event.event_payload_json)
            .where(Event.instruction_id.in_(ids), Event.event_type == "status_change").dicts())
    out: dict[str, list[str]] = {}
    for row in rows:
        payload = row["event_payload_json"]
        if payload.get("from") is None and payload.get("to") == "draft":
            out[str(row["instruction_id"])] = list(payload.get("confirmation_reasons", []))
    return out


def instruction_out(app, handle, row: dict, reasons: list[str] | None = None) -> InstructionOut:
    if reasons is None:
        reasons = handle.store.read(_creation_reasons, handle.id, [str(row["id"])]).get(str(row["id"]), [])
    payload = row["payload_json"]
    text = {k: (str(row[k]) if row.get(k) is not None else None)
            for k in ("id", "project_id", "session_id", "message_id", "confirmed_by_user_id")}
    return InstructionOut(**{**row, **text, "confirmation_reasons": reasons,
                             "payload": {"objective": payload["objective"],
                                         "constraints": payload.get("constraints", {}),
                                         "inputs": payload["inputs"], "execution": payload.get("execution", {})},
                             "envelope": service.envelope(app, handle, row)})


def _actor(ctx) -> str:
    return ctx.app.current_user()["id"]


@command("agent.instructions.create", params=InstructionCreateParams, result=InstructionOut,
         route=("POST", "/api/projects/{slug}/agent/instructions"), mutating=True,
         errors=(GuardrailDenied, ConfirmationRequired))
def create(ctx, p: InstructionCreateParams) -> InstructionOut:
    """Creates an instruction (SPEC 9.2) through the guardrails; queued at once unless it needs confirmation.

    Refused with nothing written: inputs or execution not valid for the type (invalid_params, each problem with its
    place), an asset or run not of this project or a type the project does not allow (guardrail_denied), a
    pipeline_run estimated over its own max_cost_usd (guardrail_denied)."""
    handle = ctx.app.projects.open(p.slug)
    row = service.create(ctx.app, handle, _actor(ctx), instruction_type=p.instruction_type, objective=p.objective,
                         inputs=p.inputs, execution=p.execution, constraints=p.constraints, priority=p.priority,
                         session_id=str(p.session_id) if p.session_id else None, queue=p.queue)
    return instruction_out(ctx.app, handle, row)


@command("agent.instructions.list", params=InstructionListParams, result=InstructionPage,
         route=("GET", "/api/projects/{slug}/agent/instructions"))
def list_instructions(ctx, p: InstructionListParams) -> InstructionPage:
    """Lists the project's instructions newest first, filtered by status, type or session; page with
    next_cursor."""
    handle = ctx.app.projects.open(p.slug)

    def read(pid: str):
        items, cursor = repo.list_instructions(pid, status=p.status, instruction_type=p.instruction_type,
                                               session_id=str(p.session_id) if p.session_id else None,
                                               limit=p.limit, cursor=p.cursor)
        return items, cursor, _creation_reasons(pid, [str(r["id"]) for r in items])

    items, cursor, reasons = handle.store.read(read, handle.id)
    return InstructionPage(items=[instruction_out(ctx.app, handle, r, reasons.get(str(r["id"]), []))
                                  for r in items], next_cursor=cursor)


@command("agent.instructions.get", params=InstructionRef, result=InstructionOut,
         route=("GET", "/api/projects/{slug}/agent/instructions/{instruction_id}"))
def get(ctx, p: InstructionRef) -> InstructionOut:
    """Returns one instruction with its envelope."""
    handle = ctx.app.projects.open(p.slug)
    return instruction_out(ctx.app, handle, handle.store.read(repo.get_instruction, handle.id, str(p.instruction_id)))


@command("agent.instructions.confirm", params=InstructionRef, result=InstructionOut,
         route=("POST", "/api/projects/{slug}/agent/instructions/{instruction_id}/confirm"), mutating=True,
         errors=(IllegalTransition, GuardrailDenied))
def confirm(ctx, p: InstructionRef) -> InstructionOut:
    """A user's go for a draft instruction: it is queued, and the confirming user recorded. Only a draft can be
    confirmed (illegal_transition otherwise)."""
    from iat.copilot.actions import AGENT_TRANSPORT

    if ctx.session.transport == AGENT_TRANSPORT:  # the agent carries out what a user allowed, never allows itself
        raise GuardrailDenied("an agent cannot confirm an instruction; a user must")
    handle = ctx.app.projects.open(p.slug)
    return instruction_out(ctx.app, handle, service.confirm(ctx.app, handle, _actor(ctx), str(p.instruction_id)))


@command("agent.instructions.cancel", params=InstructionCancelParams, result=InstructionOut,
         route=("POST", "/api/projects/{slug}/agent/instructions/{instruction_id}/cancel"), mutating=True,
         errors=(IllegalTransition,))
def cancel(ctx, p: InstructionCancelParams) -> InstructionOut:
    """Cancels an instruction that has not ended (draft, queued or running: work in flight is stopped);
    illegal_transition once it has ended."""
    handle = ctx.app.projects.open(p.slug)
    return instruction_out(ctx.app, handle, service.cancel(ctx.app, handle, _actor(ctx), str(p.instruction_id),
                                                           p.reason))


@command("agent.instructions.events", params=InstructionEventsParams, result=EventPage,
         route=("GET", "/api/projects/{slug}/agent/instructions/{instruction_id}/events"))
def events(ctx, p: InstructionEventsParams) -> EventPage:
    """The instruction's execution trail, oldest first: status changes, queued, started, the agent's log lines,
    its result or error."""
    handle = ctx.app.projects.open(p.slug)
    items, after = handle.store.read(repo.list_events, handle.id, str(p.instruction_id), p.limit,
                                     str(p.after) if p.after else None)
    return EventPage(items=[EventOut(**{**r, "id": str(r["id"]), "instruction_id": str(r["instruction_id"])})
                            for r in items], next_after=after)
