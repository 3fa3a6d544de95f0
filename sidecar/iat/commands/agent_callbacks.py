"""agent.instructions.callback: where an external agent reports on the instruction it was sent (SPEC 9.2).

The envelope's callback names this route as both its status_url and its events_url. Authentication is the
instruction's own callback token, never the sidecar's (registry auth "instruction"): over REST it is the
`Authorization: Bearer <token>` header (the HTTP guard lets any bearer through to this route only, and the handler
checks it); over JSON-RPC (stdio, socket, POST /rpc, websocket), which already authenticated the peer with the
sidecar's token, the instruction's token is still required, as `token` in the params. So one rule holds on every
transport: a callback opens only the instruction whose token it carries (iat.copilot.external).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iat.commands.common import ProjectRef, require_exactly_one
from iat.copilot.envelope import Status
from iat.errors import IllegalTransition, Unauthorized
from iat.lazy import lazy_import
from iat.registry import Result, command

external = lazy_import("iat.copilot.external")

AgentStatus = Literal["accepted", "running", "done", "failed", "rejected"]


class AgentEvent(BaseModel):
    """One entry of the instruction's trail, as the agent writes it (a `result` or `error` event does not end the
    instruction: a status answer does)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["log", "result", "error"]
    payload: dict[str, Any] = Field(default_factory=dict)


# Exactly one of status and event; message, result and error only with a status (what _one_kind checks).
_ONE_KIND = {"oneOf": [
    {"required": ["status"], "properties": {"status": {"not": {"type": "null"}}, "event": {"type": "null"}}},
    {"required": ["event"], "properties": {"event": {"not": {"type": "null"}}, "status": {"type": "null"},
                                           "message": {"maxLength": 0}, "result": {"type": "null"},
                                           "error": {"type": "null"}}},
]}


class CallbackParams(ProjectRef):
    """Either a status answer (the response contract of SPEC 9.2 without instruction_id, which the path gives:
    status, message, result, error) or an event."""

    model_config = ConfigDict(json_schema_extra=_ONE_KIND)

    instruction_id: uuid.UUID
    token: str | None = Field(None, min_length=1, max_length=256, description=(
        "The instruction's callback token, for JSON-RPC callers; over REST send it as Authorization: Bearer "
        "<token> instead"))
    status: AgentStatus | None = Field(None, description="A status answer: accepted/running keep the instruction "
                                                         "running, done ends it done, failed/rejected end it failed")
    message: str = Field("", max_length=10_000, description="With status: the agent's words")
    result: dict[str, Any] | None = Field(None, description="With status done: what the agent achieved")
    error: dict[str, Any] | None = Field(None, description="With status failed or rejected: the agent's error")
    event: AgentEvent | None = Field(None, description="Or an event for the instruction's trail")

    @model_validator(mode="after")
    def _one_kind(self) -> CallbackParams:
        require_exactly_one(self, "status", "event")
        if self.event is not None and (self.message or self.result is not None or self.error is not None):
            raise ValueError("message, result and error go with a status answer, not with an event")
        return self


class CallbackOut(Result):
    instruction_id: str
    status: Status = Field(description="The instruction's status after the callback")
    event_id: str | None = Field(None, description="The event written, for an event callback")


@command("agent.instructions.callback", params=CallbackParams, result=CallbackOut,
         route=("POST", "/api/projects/{slug}/agent/instructions/{instruction_id}/callback"), mutating=True,
         errors=(Unauthorized, IllegalTransition), auth="instruction")
def callback(ctx, p: CallbackParams) -> CallbackOut:
    """An external agent's report on its instruction: a status answer or an event, authenticated by the
    instruction's own callback token (Authorization: Bearer over REST; `token` over JSON-RPC).

    A wrong or missing token, or another instruction's, is unauthorized and changes nothing; the right token on an
    instruction that has ended is illegal_transition."""
    from iat.copilot.envelope import AgentResponse

    token = p.token or ctx.session.data.get("bearer")
    slug, iid = p.slug, str(p.instruction_id)
    if p.status is not None:
        answer = AgentResponse(instruction_id=p.instruction_id, status=p.status, message=p.message, result=p.result,
                               error=p.error)
        out = external.callback(ctx.app, slug, iid, token, answer=answer)
    else:
        out = external.callback(ctx.app, slug, iid, token, event=p.event.model_dump())
    return CallbackOut(**out)
