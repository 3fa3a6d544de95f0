"""An external agent API (SPEC 9.2): the instruction's envelope POSTed to it, its answer, and its callbacks.

Used for a project whose `settings_json.copilot.agent` is "external"; the agent is the provider account
`agent_api` (iat.providers.agent_api: endpoint, timeout_s, retries, optional secret api_key).

Dispatch (on the agent's drain thread, the instruction already running):
1. A callback token, `secrets.token_urlsafe(32)`: only its sha256 is stored (agent_dispatches.token_sha256, written
   with a `log` event before the POST, since an agent may call back before it answers). The token travels in the
   envelope only; it is never logged nor stored.
2. The callback URLs: `status_url` and `events_url` are both the route of `agent.instructions.callback`
   (POST /api/projects/{slug}/agent/instructions/{instruction_id}/callback) on this sidecar's HTTP transport
   (`app.started_transports["http"]`); without one, dispatch fails with a conflict saying so.
3. The POST goes through the ledger (`agent.dispatch`, not billable: its retries, timeout and provider_calls
   rows). The answer must follow the response contract (`AgentResponse`), about this instruction: a broken one
   fails the instruction with a provider_error saying what is wrong.
4. accepted / running: the instruction stays running, waiting for callbacks; done: done with the agent's
   result; rejected / failed: failed, its error event carrying the agent's message and error.

Callbacks (`callback`): the presented token's sha256 is compared, in constant time, with the dispatch row's. A
wrong or missing token, another instruction's token, an unknown instruction or project: unauthorized (401),
nothing changes. The right token on an instruction that has ended: illegal_transition (409), nothing changes. A
status answer moves the instruction as in 4; an event ({type: log|result|error, payload}) is added to its trail
(only a status answer ends it). Each accepted callback writes an audit row (actor: none, the agent is no user).

A canceled instruction is not announced to the agent (the contract has no such call): its next callback gets
illegal_transition, which says the instruction has ended.
"""

from __future__ import annotations

import hashlib
import secrets
from urllib.parse import quote

from iat.cancel import Cancelled
from iat.copilot import repo, service
from iat.copilot.envelope import FINAL_STATUSES
from iat.copilot.executor import _Ended, error_of
from iat.errors import (Conflict, IllegalTransition, NotFound, ProviderBadRequest, ProviderError, Unauthorized)
from iat.providers.agent_api import CODE, parse_answer

CALLBACK_PATH = "/api/projects/{slug}/agent/instructions/{instruction_id}/callback"
AUDIT_EVENT = "agent.instruction.callback"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def callback_url(app, slug: str, instruction_id: str) -> str:
    http = app.started_transports.get("http")
    if not http or not http.get("url"):
        raise Conflict("an external agent reports back through this sidecar's HTTP callback route, and no HTTP "
                       "transport is running (start the sidecar with --http)",
                       details={"transports": sorted(app.started_transports), "provider_code": CODE})
    return http["url"] + CALLBACK_PATH.format(slug=quote(slug, safe=""), instruction_id=instruction_id)


def dispatch(job) -> None:
    """POSTs the instruction to the project's external agent and applies its answer (see the module doc)."""
    from iat.providers import accounts

    app, handle = job.app, job.handle
    provider = app.providers.get(CODE)
    account = accounts.account(app, handle, CODE)
    ready = provider.status(account)
    if not ready.ready:
        raise Conflict(ready.reason or "the external agent is not ready", details={"provider_code": CODE})
    url = callback_url(app, job.slug, job.id)
    token = secrets.token_urlsafe(32)
    app.redactor.add(token)  # should anything ever quote it
    envelope = service.envelope(app, handle, job.row, callback={"status_url": url, "events_url": url,
                                                                "token": token})
    job.check()
    job.log({"step": "dispatch", "endpoint": account.config.endpoint, "callback_url": url},
            dispatch={"token_sha256": token_hash(token), "remote_status": None})
    try:
        answer = app.ledger.call(handle, account, "agent.dispatch",
                                 lambda attempt: provider.dispatch(account, envelope, timeout=attempt.timeout,
                                                                   cancel=attempt.cancel),
                                 cancel=job.work.cancel, billable=False, meta={"instruction_id": job.id})
    except Cancelled:
        raise _Ended() from None
    parsed = parse_answer(answer.body, job.id, answer.http_status)
    try:
        apply(app, handle, job.id, parsed)
    except IllegalTransition:  # the agent's callbacks (or a cancel) ended it before its answer came back
        raise _Ended() from None


def apply(app, handle, instruction_id: str, answer, *, audited: tuple | None = None) -> dict:
    """The agent's answer (AgentResponse), from the dispatch POST or a status callback: accepted/running keep the
    instruction running (a log event), done ends it done, rejected/failed end it failed. Returns the row, or the
    event for a log."""
    status, message = answer.status, answer.message
    fields = {"remote_status": status}
    if status in ("accepted", "running"):
        payload = {"step": "agent", "agent_status": status, "message": message}
        if answer.result:
            payload["result"] = answer.result
        service.log(app, handle, instruction_id, "log", payload, dispatch=fields, audited=audited)
        return {"status": "running"}
    if status == "done":
        result = dict(answer.result or {})
        result.setdefault("message", message)
        return service.advance(app, handle, instruction_id, "done", result=result, dispatch=fields, audited=audited)
    kind = ProviderBadRequest if status == "rejected" else ProviderError
    exc = kind(f"the external agent {'rejected' if status == 'rejected' else 'failed'} the instruction"
               + (f": {message}" if message else ""),
               details={"provider": CODE, "agent_status": status, "agent_error": answer.error or {}})
    return service.advance(app, handle, instruction_id, "failed", reason=exc.message[:500], error=error_of(exc),
                           dispatch=fields, audited=audited)


# --- callbacks ---


def authorize(app, slug: str, instruction_id: str, token: str | None):
    """The project's handle and the instruction, when `token` is this instruction's callback token and it has not
    ended; unauthorized (nothing revealed) or illegal_transition otherwise."""
    refused = Unauthorized("this callback needs the instruction's own callback token (Authorization: Bearer "
                           "<token>, or `token` over JSON-RPC)")
    if not token:
        raise refused
    presented = token_hash(token)
    try:
        handle = app.projects.open(slug)
        row, dispatch = handle.store.read(lambda pid: (repo.get_instruction(pid, instruction_id),
                                                       repo.get_dispatch(instruction_id)), handle.id)
    except NotFound:
        raise refused from None
    stored = (dispatch or {}).get("token_sha256") or ""
    if not secrets.compare_digest(presented, stored) or dispatch["agent"] != "external":
        raise refused
    if row["status"] in FINAL_STATUSES:
        raise IllegalTransition(f"instruction {instruction_id} has ended ({row['status']}): it takes no more "
                                "callbacks", details={"instruction_id": str(instruction_id),
                                                      "status": row["status"]})
    return handle, row


def callback(app, slug: str, instruction_id: str, token: str | None, *, answer=None,
             event: dict | None = None) -> dict:
    """One callback: a status answer (`answer`, an AgentResponse) or an event ({type, payload}). Returns
    {instruction_id, status, event_id?}."""
    handle, row = authorize(app, slug, instruction_id, token)
    what = {"instruction_id": str(instruction_id)}
    if answer is not None:
        audited = (None, AUDIT_EVENT, {**what, "status": answer.status})
        out = apply(app, handle, instruction_id, answer, audited=audited)
        return {**what, "status": out["status"]}
    audited = (None, AUDIT_EVENT, {**what, "event_type": event["type"]})
    made = service.log(app, handle, instruction_id, event["type"], event.get("payload") or {}, audited=audited)
    return {**what, "status": row["status"], "event_id": str(made["id"])}
