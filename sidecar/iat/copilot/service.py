"""Agent instructions: create (through the guardrails), confirm, cancel, advance, log; events published after commit.

The one path that changes an instruction, used by the commands, the chat assistant and both agents. Each change is
one write transaction holding the row, its events (iat.copilot.lifecycle) and, for a user's action, an audit row;
after the commit every event row is published as `agent.instruction.event` and every status change also as
`agent.instruction.status`, so a client follows an instruction without polling.
"""

from __future__ import annotations

import uuid

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.copilot import guardrails, lifecycle, repo
from iat.copilot.envelope import FINAL_STATUSES, validate_payload

DEFAULT_PRIORITY = 100


def _publish(app, handle, events: list[dict], row: dict) -> None:
    base = {"project_id": handle.id, "slug": handle.slug, "instruction_id": str(row["id"])}
    for event in events:
        payload = event["event_payload_json"]
        app.events.publish("agent.instruction.event", {**base, "event_id": event["id"],
                                                       "event_type": event["event_type"], "payload": payload})
        if event["event_type"] == "status_change":
            app.events.publish("agent.instruction.status", {**base, "from": payload.get("from"),
                                                            "status": payload["to"],
                                                            "reason": payload.get("reason")})


def _kick(app, handle, row: dict) -> None:
    if row["status"] == "queued":
        app.agent.kick(handle.slug)


def create(app, handle, actor_id: str, *, instruction_type: str, objective: str, inputs: dict,
           execution: dict | None = None, constraints: dict | None = None, priority: int = DEFAULT_PRIORITY,
           session_id: str | None = None, message_id: str | None = None, queue: bool = True) -> dict:
    """A new instruction in draft, queued at once when `queue` and it needs no confirmation. Refused (nothing
    written) when its payload is invalid or a guardrail denies it."""
    payload = validate_payload(instruction_type, objective, inputs, execution, constraints)

    def check(pid: str) -> list[str]:
        guardrails.check_allowed(pid, instruction_type, payload["inputs"])
        guardrails.check_scope(pid, instruction_type, payload["inputs"])
        if session_id is not None:
            repo.get_session(pid, session_id)
        return guardrails.confirmation_reasons(pid, instruction_type, payload["inputs"])

    reasons = handle.store.read(check, handle.id)
    facts: dict = {}
    if instruction_type == "pipeline_run":
        from iat.copilot.actions import run_params

        run_params(app, handle, payload)  # shot keys no run holds: invalid_params now, not a failure later
        reason, facts = guardrails.over_budget(app, handle, payload)
        if reason:
            reasons.append(reason)
    now = utcnow()
    row = {"id": str(uuid.uuid4()), "project_id": handle.id, "session_id": session_id, "message_id": message_id,
           "instruction_type": instruction_type, "payload_json": payload, "status": "draft", "priority": priority,
           "requires_confirmation": bool(reasons), "confirmed_by_user_id": None, "queued_at": None,
           "started_at": None, "finished_at": None, "created_at": now, "updated_at": now}

    def write(pid: str) -> tuple[dict, list[dict]]:
        repo.insert_instruction(row)
        created = {"from": None, "to": "draft", "actor_user_id": actor_id}
        if reasons:
            created["confirmation_reasons"] = reasons
        if facts:
            created["estimate"] = facts
        events = [repo.add_event(row["id"], "status_change", created)]
        audit.record(pid, actor_id, "agent.instruction.created",
                     {"instruction_id": row["id"], "instruction_type": instruction_type,
                      "requires_confirmation": bool(reasons)})
        out = row
        if queue and not reasons:
            out, more = lifecycle.move(pid, row["id"], "queued", actor_user_id=actor_id)
            events += more
        return out, events

    out, events = handle.store.write(write, handle.id)
    _publish(app, handle, events, out)
    _kick(app, handle, out)
    return out


def confirm(app, handle, actor_id: str, instruction_id: str) -> dict:
    """A user's go: draft -> queued, recording who confirmed (an instruction needing confirmation leaves draft only
    this way)."""
    def write(pid: str):
        row, events = lifecycle.move(pid, instruction_id, "queued", actor_user_id=actor_id, confirm=True)
        audit.record(pid, actor_id, "agent.instruction.confirmed", {"instruction_id": str(instruction_id)})
        return row, events

    row, events = handle.store.write(write, handle.id)
    _publish(app, handle, events, row)
    _kick(app, handle, row)
    return row


def cancel(app, handle, actor_id: str, instruction_id: str, reason: str | None = None) -> dict:
    """Cancels an instruction in any state that has not ended; work in flight is asked to stop."""
    def write(pid: str):
        row, events = lifecycle.move(pid, instruction_id, "canceled", actor_user_id=actor_id,
                                     reason=reason or "canceled by the user")
        audit.record(pid, actor_id, "agent.instruction.canceled", {"instruction_id": str(instruction_id)})
        return row, events

    row, events = handle.store.write(write, handle.id)
    _publish(app, handle, events, row)
    app.agent.cancel(handle.slug, str(instruction_id))
    return row


def advance(app, handle, instruction_id: str, to: str, *, reason: str | None = None, result: dict | None = None,
            error: dict | None = None, dispatch: dict | None = None, audited: tuple | None = None) -> dict:
    """An agent's move (queued -> running, running -> done | failed | canceled), with its `result` or `error`
    event in the same transaction, and optionally its dispatch row's fields and an audit row (`audited`:
    (actor_user_id, event_code, payload), for a command such as an external agent's callback)."""
    def write(pid: str):
        row, events = lifecycle.move(pid, instruction_id, to, reason=reason)
        if audited is not None:
            audit.record(pid, *audited)
        if result is not None:
            events.append(repo.add_event(instruction_id, "result", result))
        if error is not None:
            events.append(repo.add_event(instruction_id, "error", error))
        if dispatch is not None:
            repo.put_dispatch(str(instruction_id), **dispatch)
        return row, events

    row, events = handle.store.write(write, handle.id)
    _publish(app, handle, events, row)
    return row


def log(app, handle, instruction_id: str, event_type: str, payload: dict, *,
        dispatch: dict | None = None, audited: tuple | None = None) -> dict:
    """A `log`, `result` or `error` event of an instruction that has not ended (optionally with its dispatch row's
    fields and an audit row, as in `advance`); refused as illegal_transition once it has."""
    if event_type not in ("log", "result", "error"):
        raise ValueError(f"not an event an agent logs: {event_type}")

    def write(pid: str):
        row = repo.get_instruction(pid, instruction_id)
        if row["status"] in FINAL_STATUSES:
            lifecycle.check(row, row["status"])  # raises: an ended instruction takes no more events
        event = repo.add_event(instruction_id, event_type, payload)
        if dispatch is not None:
            repo.put_dispatch(str(instruction_id), **dispatch)
        if audited is not None:
            audit.record(pid, *audited)
        return row, event

    row, event = handle.store.write(write, handle.id)
    _publish(app, handle, [event], row)
    return event


def envelope(app, handle, row: dict, *, callback: dict | None = None) -> dict:
    """The SPEC 9.2 envelope of an instruction (the callback's token only when the caller gives one)."""
    from iat.copilot.envelope import InstructionEnvelope

    payload = row["payload_json"]
    # Single-user runtime (SPEC 10): the requester is the local user; with accounts it becomes the creator.
    requested_by = app.current_user()["username"]
    return InstructionEnvelope(
        instruction_id=row["id"], project_slug=handle.slug, instruction_type=row["instruction_type"],
        objective=payload["objective"], constraints=payload.get("constraints", {}), inputs=payload["inputs"],
        execution=payload.get("execution", {}), confirmation_required=bool(row["requires_confirmation"]),
        requested_by=requested_by, callback=callback or {}).model_dump(mode="json", exclude_none=False)
