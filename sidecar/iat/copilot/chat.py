"""One chat turn: the user's message in, the assistant's answer out, the instructions it proposed created.

The user's message is committed first (it is never lost, whatever happens after). The assistant is the project's
LLM when one is configured and ready (iat.copilot.llm), else the offline parser; a failing LLM call falls back to
the parser and says so. The Reply is carried out through the same paths every client uses: proposals through
`service.create` (validation and guardrails: a refused proposal is reported in the answer, not created), cost
questions through `costs.summary`, a cancel through `service.cancel`. Then the assistant's message is committed with
what was done (`content_json`) and the LLM's token usage and cost (`token_usage_json`).
"""

from __future__ import annotations

import logging

from iat.audit import repo as audit
from iat.copilot import context as context_mod
from iat.copilot import repo, service
from iat.copilot.replies import Reply
from iat.errors import IATError

log = logging.getLogger(__name__)

HISTORY = 20  # messages an LLM reads (the newest last)


def _publish_message(app, handle, row: dict) -> None:
    app.events.publish("chat.message.created", {"project_id": handle.id, "slug": handle.slug,
                                                "session_id": row["session_id"], "message_id": row["id"],
                                                "role": row["role"]})


def add_user_message(app, handle, actor_id: str, session_id: str, text: str,
                     voice_asset_id: str | None = None) -> dict:
    def write(pid: str) -> dict:
        row = repo.add_message(pid, session_id, "user", text, voice_asset_id=voice_asset_id)
        audit.record(pid, actor_id, "chat.message.sent", {"session_id": session_id, "message_id": row["id"],
                                                          **({"voice_asset_id": voice_asset_id}
                                                             if voice_asset_id else {})})
        return row

    row = handle.store.write(write, handle.id)
    _publish_message(app, handle, row)
    return row


def decide(app, handle, session_id: str, text: str) -> tuple[Reply, dict]:
    """The assistant's Reply to the session's newest message, and notes on how it was reached."""
    from iat.copilot import parser

    ctx = context_mod.build(app, handle)
    notes: dict = {}
    try:
        from iat.copilot import llm
    except ImportError:  # pragma: no cover - the LLM module is part of the package
        llm = None
    account = llm.ready(app, handle) if llm is not None else None
    if account is not None:
        history = handle.store.read(lambda: repo.recent_messages(session_id, HISTORY))

        def delta(piece: str) -> None:
            app.events.publish("chat.message.delta", {"project_id": handle.id, "slug": handle.slug,
                                                      "session_id": session_id, "text": piece})

        try:
            return llm.reply(app, handle, account, history, ctx, on_delta=delta), notes
        except IATError as exc:
            log.warning("the copilot's LLM failed (%s); answering offline", exc.name)
            notes["llm_error"] = {"name": exc.name, "message": exc.message}
    return parser.parse(text, ctx), notes


def _costs_text(summary: dict) -> str:
    lines = [f"- {g['key'] or '(none)'}: {g['cost_usd']:.4f} USD" for g in summary["groups"][:20]]
    head = f"Spent so far: {summary['cost_usd']:.4f} USD over {summary['events']} call(s)."
    left = summary["budget"].get("left_usd")
    if left is not None:
        head += f" Budget left: {left:.4f} USD."
    return "\n".join([head, *lines]) if lines else f"{head} No costs are recorded yet."


def _carry_out(app, handle, actor_id: str, session_id: str, message_id: str, reply: Reply) -> tuple[str, dict, list]:
    """Acts on the Reply; returns the answer's text, its content_json and the instructions created."""
    from iat.copilot import actions

    texts = [reply.text] if reply.text else []
    content: dict = {"kind": reply.kind, "source": reply.source}
    instructions: list[dict] = []
    if reply.kind == "propose":
        refused = []
        for proposal in reply.proposals:
            try:
                instructions.append(service.create(
                    app, handle, actor_id, instruction_type=proposal.instruction_type, objective=proposal.objective,
                    inputs=proposal.inputs, execution=proposal.execution, constraints=proposal.constraints,
                    priority=proposal.priority, session_id=session_id, message_id=message_id))
            except IATError as exc:
                refused.append({"instruction_type": proposal.instruction_type, "objective": proposal.objective,
                                "error": {"name": exc.name, "message": exc.message}})
                texts.append(f"I could not do that: {exc.message}")
        if refused:
            content["refused"] = refused
        for row in instructions:
            if row["requires_confirmation"]:
                texts.append(f"Instruction {str(row['id'])[:8]} needs your confirmation before it runs.")
    elif reply.kind == "clarify":
        content["question"] = reply.text
        content["options"] = list(reply.options)
    elif reply.kind == "answer" and reply.query:
        content["query"] = reply.query
        if reply.query.get("kind") == "costs":
            summary = actions.call(app, "costs.summary", slug=handle.slug,
                                   group_by=reply.query.get("group_by", "provider"))
            content["answer"] = summary
            texts.append(_costs_text(summary))
        elif reply.query.get("kind") == "instructions":
            page = actions.call(app, "agent.instructions.list", slug=handle.slug, limit=10)
            content["answer"] = {"instructions": [{"id": i["id"], "status": i["status"],
                                                   "instruction_type": i["instruction_type"]} for i in page["items"]]}
            texts += [f"- {i['id'][:8]} {i['instruction_type']} {i['status']}: {i['payload']['objective']}"
                      for i in page["items"]] or ["There are no instructions yet."]
    elif reply.kind == "cancel" and reply.instruction_id:
        content["instruction_id"] = reply.instruction_id
        try:
            service.cancel(app, handle, actor_id, reply.instruction_id, reason="canceled from the chat")
            texts.append(f"Canceled instruction {reply.instruction_id[:8]}.")
        except IATError as exc:
            content["error"] = {"name": exc.name, "message": exc.message}
            texts.append(f"I could not cancel it: {exc.message}")
    content["instruction_ids"] = [str(i["id"]) for i in instructions]
    return "\n".join(texts), content, instructions


def send(app, handle, actor_id: str, session_id: str, text: str, voice_asset_id: str | None = None) -> dict:
    """One turn: returns {user_message, assistant_message, instructions}."""
    handle.store.read(repo.get_session, handle.id, session_id)
    user = add_user_message(app, handle, actor_id, session_id, text, voice_asset_id)
    reply, notes = decide(app, handle, session_id, text)
    answer, content, instructions = _carry_out(app, handle, actor_id, session_id, user["id"], reply)
    content.update(notes)
    assistant = handle.store.write(lambda pid: repo.add_message(pid, session_id, "assistant", answer, content,
                                                                dict(reply.usage)), handle.id)
    _publish_message(app, handle, assistant)
    return {"user_message": user, "assistant_message": assistant, "instructions": instructions}
