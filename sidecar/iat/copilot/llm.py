"""The copilot's LLM: one chat turn through the project's `llm` provider, the model deciding with tool calls.

`ready(app, handle)` says whether the project has an LLM to use (the `llm` provider set up, enabled and ready); if
not, the assistant uses the offline parser. `reply(...)` sends a system prompt (what the copilot does and may do,
the project's vocabulary from iat.copilot.context), the session's recent messages, and one tool per thing the
copilot can decide: a `propose_<type>` per instruction type (parameters: the envelope parts of
iat.copilot.envelope, so the model fills in the same shapes the parser and the API do), `ask_clarification`,
`show_costs`, `list_instructions`, `cancel_instruction` and `refuse`. The answer streams: text deltas go to
`on_delta` (published as chat.message.delta), tool calls become the Reply.

A tool call whose arguments are not JSON, or do not validate (`validate_payload`), never becomes an instruction:
the Reply asks the user again and says why in `usage["invalid_tool_calls"]`. The call goes through the ledger
(attempts, retries before any text was shown, cost from the usage chunk).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from iat.copilot.context import Context
from iat.copilot.envelope import PARTS, Constraints, validate_payload
from iat.copilot.replies import Proposal, Reply
from iat.errors import IATError, InvalidParams
from iat.ledger.ledger import usage_of
from iat.pipeline.shots import NO_CONTROL
from iat.providers import accounts
from iat.providers.base import Account

log = logging.getLogger(__name__)

CODE = "llm"
MAX_MESSAGE_CHARS = 8000  # one history message, as sent to the model
MAX_SHOT_KEYS = 200  # known shot keys listed in the system prompt
DEFAULT_PRIORITY = 100

PROPOSE = {
    "propose_pipeline_run": ("pipeline_run", "Render shots through the image pipeline: shots of earlier runs by "
                             "job key (inputs.shot_keys) or new shots (inputs.shots), optionally all at one time of "
                             "day and weather; execution holds runs.start's options (candidates, provider, seed...)."),
    "propose_asset_edit": ("asset_edit", "Edit one image asset: remove its background, upscale it (factor 2, 3 or "
                           "4) or colour-correct it."),
    "propose_qa_check": ("qa_check", "Check the quality of a run's final images (inputs.run_id) or of given image "
                         "assets (inputs.asset_ids)."),
    "propose_storage_sync": ("storage_sync", "Sync the project's files with its storage: push or pull; "
                             "delete_remote also deletes remote files with no local copy (destructive)."),
    "propose_custom": ("custom", "Project-level actions: export the project (tar.gz, zip or folder), delete the "
                       "project, delete an asset, or make a run's candidate its shot's final. Destructive ones wait "
                       "for the user's confirmation."),
}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)]


class AskClarification(_Args):
    question: Text = Field(description="The question for the user")
    options: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=10, description="A few answers to choose from, when there are a few")


class ShowCosts(_Args):
    group_by: Literal["provider", "run", "operation", "day"] = Field("provider", description="How to group costs")


class ListInstructions(_Args):
    pass


class CancelInstruction(_Args):
    instruction_id: uuid.UUID = Field(description="The instruction to cancel")


class Refuse(_Args):
    reason: Text = Field(description="Why, in a sentence for the user")


OTHER = {
    "ask_clarification": (AskClarification, "Ask the user a question when a needed value is missing or the request "
                          "is ambiguous; never guess targets, and never guess anything destructive."),
    "show_costs": (ShowCosts, "Show what the project's provider calls cost so far."),
    "list_instructions": (ListInstructions, "Show the project's latest instructions and their status."),
    "cancel_instruction": (CancelInstruction, "Cancel an instruction that has not ended."),
    "refuse": (Refuse, "Refuse a request: one about another project, or anything the copilot must not do."),
}


# --- readiness ---


def ready(app, handle) -> Account | None:
    """The project's `llm` account (secrets decrypted) when it was set up (configured, or its api_key stored),
    is enabled and ready; else None: the assistant answers with the offline parser."""
    if CODE not in app.providers:
        return None
    try:
        row, names = handle.store.read(lambda pid: (accounts.get_row(pid, CODE),
                                                    accounts.secret_names(pid).get(CODE, [])), handle.id)
        if row is None and not names:
            return None
        if not app.providers.get(CODE).status(accounts.account(app, handle, CODE, reveal=False)).ready:
            return None
        return accounts.account(app, handle, CODE)
    except IATError as exc:  # a stored config that no longer validates, a locked keyring: answer offline
        log.warning("the copilot's LLM account of %s is unusable (%s): %s", handle.slug, exc.name, exc.message)
        return None


# --- what is sent ---


def _clean(node: Any) -> Any:
    """A JSON Schema as portable tool parameters: oneOf as anyOf (the union's members are told apart by their
    `action` const anyway), no discriminator or titles, no control-character patterns (validate_payload checks
    those; grammar-constrained local servers choke on them)."""
    if isinstance(node, list):
        return [_clean(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "discriminator") or (key == "pattern" and value == NO_CONTROL):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: _clean(schema) for name, schema in value.items()}
        else:
            out["anyOf" if key == "oneOf" else key] = _clean(value)
    return out


def _proposal_parameters(instruction_type: str) -> dict:
    inputs_model, execution_model = PARTS[instruction_type]
    defs: dict[str, Any] = {}
    parts: dict[str, Any] = {}
    for name, model in (("inputs", inputs_model), ("execution", execution_model), ("constraints", Constraints)):
        schema = TypeAdapter(model).json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        parts[name] = schema
    schema = {"type": "object",
              "properties": {"objective": {"type": "string", "minLength": 1, "maxLength": 2000,
                                           "description": "The goal in a plain sentence, e.g. 'Render shots s1, s3 "
                                                          "at dusk in the rain'"},
                             **parts,
                             "priority": {"type": "integer", "minimum": 0, "maximum": 1000,
                                          "default": DEFAULT_PRIORITY, "description": "Lower runs first"}},
              "required": ["objective", "inputs"], "additionalProperties": False}
    if defs:
        schema["$defs"] = defs
    return _clean(schema)


_TOOLS: list[dict] | None = None


def tool_specs() -> list[dict]:
    """The `tools` of every request (built once)."""
    global _TOOLS
    if _TOOLS is None:
        specs = [(name, description, _proposal_parameters(kind)) for name, (kind, description) in PROPOSE.items()]
        specs += [(name, description, _clean(model.model_json_schema()))
                  for name, (model, description) in OTHER.items()]
        _TOOLS = [{"type": "function", "function": {"name": name, "description": description,
                                                    "parameters": parameters}}
                  for name, description, parameters in specs]
    return _TOOLS


def _listing(items: list[str], empty: str) -> str:
    return ", ".join(items) if items else empty


def system_prompt(ctx: Context) -> str:
    others = ", ".join(f"{slug} ({name})" for slug, name in sorted(ctx.other_projects.items()))
    keys = sorted(ctx.shots)
    shots = [f"{k} ({ctx.shots[k].get('time_of_day', 'day')}, {ctx.shots[k].get('weather', 'clear')})"
             for k in keys[:MAX_SHOT_KEYS]]
    if len(keys) > MAX_SHOT_KEYS:
        shots.append(f"and {len(keys) - MAX_SHOT_KEYS} more")
    lines = [
        f'You are the copilot of IAT Toolkit in the project "{ctx.project_name}" (slug {ctx.slug}). IAT Toolkit '
        "renders illustrated shots through an image pipeline (style lock, light and time of day, weather effects), "
        "checks their quality, edits image assets, syncs the project's files with storage and exports projects.",
        f"You act only in this project ({ctx.slug}). Any request about another project"
        + (f" ({others})" if others else "") + " is refused with the refuse tool, whatever it asks.",
        "To get work done, call a propose_* tool: each call becomes an instruction the user sees, and destructive "
        "ones (deleting, replacing a final, remote deletes, work over the budget) wait for the user's "
        "confirmation. Never claim you did something yourself.",
        "Call show_costs for cost questions, list_instructions for what is queued or running, cancel_instruction to "
        "cancel one, ask_clarification when a needed value is missing or the request is ambiguous (never guess "
        "shots, assets or anything destructive), refuse for what you must not do. Otherwise answer briefly in "
        "plain text. Use only the keys and ids listed here or given by the user.",
        "Times of day: dawn, day, dusk, night. Weather: clear, rain, snow, fog.",
        "",
        "Project facts:",
        f"- Known shot keys (with their time of day and weather): {_listing(shots, 'none yet')}",
        "- Characters: " + _listing([f"{c} ({n})" for c, n in sorted(ctx.characters.items())], "none"),
        f"- Last run: {ctx.last_run_id or 'none yet'}",
        "- Recent runs: " + _listing([f"{r['id']} {r['status']} ({r['run_mode']}, {r['created_at']})"
                                      for r in ctx.runs[:10]], "none"),
        "- Recent assets: " + _listing([f"{a['id']} {a['kind']}" for a in ctx.assets[:20]], "none"),
        "- Recent instructions: " + _listing([f"{i['id']} {i['instruction_type']} {i['status']}: {i['objective']}"
                                              for i in ctx.instructions[:10]], "none"),
    ]
    return "\n".join(lines)


def chat_messages(history: list[dict], ctx: Context) -> list[dict]:
    """The system prompt, then the session's messages oldest first (tool rows left out: they carry no call id)."""
    out = [{"role": "system", "content": system_prompt(ctx)}]
    for row in history:
        role, text = row.get("role"), (row.get("content_text") or "").strip()
        if role == "assistant":
            ids = (row.get("content_json") or {}).get("instruction_ids") or []
            if ids:
                text += f"\n(instructions created: {', '.join(str(i) for i in ids)})"
        if role in ("user", "assistant", "system") and text:
            out.append({"role": role, "content": text[:MAX_MESSAGE_CHARS]})
    return out


# --- the call ---


def reply(app, handle, account: Account, history: list[dict], ctx: Context,
          on_delta: Callable[[str], None] | None = None) -> Reply:
    """The LLM's Reply to the newest message of `history`; raises the typed provider errors when the call fails."""
    provider = app.providers.get(CODE)
    messages = chat_messages(history, ctx)
    tools = tool_specs()
    result = app.ledger.call(
        handle, account, "chat",
        lambda attempt: provider.chat(account, messages, tools=tools, on_delta=on_delta, timeout=attempt.timeout,
                                      cancel=attempt.cancel),
        billable=True, usage=usage_of, estimate_usd=provider.estimate_chat(account, messages, tools).cost_usd)
    used = result.usage
    usage = {"prompt_tokens": used["prompt_tokens"], "completion_tokens": used["completion_tokens"],
             "total_tokens": used["total_tokens"], "cost_usd": used["cost_usd"], "model": used["model"],
             "provider_code": CODE}
    return decide(result.text, result.tool_calls, usage)


# --- the answer as a Reply ---


class _Invalid(Exception):
    def __init__(self, tool: str, problem: str, errors: list | None = None) -> None:
        super().__init__(problem)
        self.record = {"tool": tool, "problem": problem, **({"errors": errors} if errors else {})}


def _arguments(call) -> dict:
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        raise _Invalid(call.name, "its arguments are not JSON") from None
    if not isinstance(value, dict):
        raise _Invalid(call.name, "its arguments are not a JSON object")
    return value


def _proposal(call, instruction_type: str) -> Proposal:
    args = _arguments(call)
    unknown = sorted(set(args) - {"objective", "inputs", "execution", "constraints", "priority"})
    if unknown:
        raise _Invalid(call.name, f"unknown argument(s): {', '.join(unknown)}")
    priority = args.get("priority")
    if priority is None:
        priority = DEFAULT_PRIORITY
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1000:
        raise _Invalid(call.name, "priority must be a whole number from 0 to 1000")
    objective, inputs = args.get("objective"), args.get("inputs")
    if not isinstance(objective, str):
        raise _Invalid(call.name, "objective is missing")
    if not isinstance(inputs, dict):
        raise _Invalid(call.name, "inputs is missing or not an object")
    parts = {k: args.get(k) or {} for k in ("execution", "constraints")}
    if not all(isinstance(v, dict) for v in parts.values()):
        raise _Invalid(call.name, "execution and constraints must be objects")
    try:
        payload = validate_payload(instruction_type, objective, inputs, parts["execution"], parts["constraints"])
    except InvalidParams as exc:
        raise _Invalid(call.name, exc.message, exc.details.get("errors")) from None
    return Proposal(instruction_type, payload["objective"], payload["inputs"], payload["execution"],
                    payload["constraints"], priority)


def _other(call) -> BaseModel:
    model = OTHER[call.name][0]
    try:
        return model.model_validate(_arguments(call))
    except ValidationError as exc:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise _Invalid(call.name, f"{errors[0]['loc'] or 'arguments'}: {errors[0]['msg']}", errors) from None


def _said(*texts: str) -> str:
    """The model's streamed text and a tool's words, each once."""
    out: list[str] = []
    for text in texts:
        text = (text or "").strip()
        if text and text not in out:
            out.append(text)
    return "\n".join(out)


def decide(text: str, tool_calls, usage: dict) -> Reply:
    """Maps the model's answer to a Reply: its tool calls (all proposals: propose; else one decision), or its
    text (answer). Anything invalid, or decisions that do not go together, asks the user instead."""
    def reply(kind, said, **kw) -> Reply:
        return Reply(kind, said, usage=usage, source="llm", **kw)

    if not tool_calls:
        if text.strip():
            return reply("answer", text.strip(), query=None)
        return reply("clarify", "Sorry, I have no answer to that. Could you put it another way?")
    proposals: list[Proposal] = []
    decisions: list[tuple[str, BaseModel]] = []
    invalid: list[dict] = []
    for call in tool_calls:
        try:
            if call.name in PROPOSE:
                proposals.append(_proposal(call, PROPOSE[call.name][0]))
            elif call.name in OTHER:
                decisions.append((call.name, _other(call)))
            else:
                raise _Invalid(call.name, "no such tool")
        except _Invalid as exc:
            invalid.append(exc.record)
    if invalid:
        first = invalid[0]
        return Reply("clarify", f"The model's proposal was not valid ({first['tool']}: {first['problem']}), so "
                                "nothing was created. Could you say what you want again, more precisely?",
                     usage={**usage, "invalid_tool_calls": invalid}, source="llm")
    refusals = [args for name, args in decisions if name == "refuse"]
    if refusals:
        return reply("refuse", _said(*(r.reason for r in refusals)))
    questions = [args for name, args in decisions if name == "ask_clarification"]
    if questions:
        return reply("clarify", _said(text, questions[0].question), options=tuple(questions[0].options))
    if proposals and not decisions:
        return reply("propose", _said(text) or "I propose: " + "; ".join(p.objective for p in proposals) + ".",
                     proposals=tuple(proposals))
    if len(decisions) == 1 and not proposals:
        name, args = decisions[0]
        if name == "show_costs":
            return reply("answer", _said(text), query={"kind": "costs", "group_by": args.group_by})
        if name == "list_instructions":
            return reply("answer", _said(text), query={"kind": "instructions"})
        return reply("cancel", _said(text), instruction_id=str(args.instruction_id))
    wanted = [p.objective for p in proposals] + [_describe(name, args) for name, args in decisions]
    return reply("clarify", "That is several things at once; which one first?", options=tuple(wanted[:10]))


def _describe(name: str, args: BaseModel) -> str:
    if name == "show_costs":
        return f"Show costs by {args.group_by}"
    if name == "list_instructions":
        return "List the instructions"
    return f"Cancel instruction {args.instruction_id}"
