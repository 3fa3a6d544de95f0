"""The copilot's LLM path: the `llm` provider (the real openai SDK, streaming) against the loopback chat
completions server of tests/vendors/openai_chat.py, through the ledger, and its answers mapped to Replies."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid

import jsonschema
import pytest

from iat.app import App
from iat.copilot import context as context_mod
from iat.copilot import llm
from iat.copilot.envelope import validate_payload
from iat.copilot.replies import Proposal, Reply
from iat.errors import ProviderAuthFailed, ProviderUnavailable
from iat.providers.llm import PUBLISHED_PRICES, ChatConfig, prices
from iat.registry import load_commands
from iat.rpc.openapi import openapi_document
from iat.settings import Settings
from support import Client
from vendors.loopback import LoopbackServer
from vendors.openai_chat import Answer, ChatState, make_app, rate_limited, server_error

PRICE_IN, PRICE_OUT = 2.0, 8.0  # USD per 1M tokens, configured
ASK = "render shots s1 and s3 at dusk in the rain"
PIPELINE_ARGS = {"objective": "Render shots s1, s3 at dusk in the rain",
                 "inputs": {"shot_keys": ["s1", "s3"], "time_of_day": "dusk", "weather": "rain"}}
TOOLS = ["propose_pipeline_run", "propose_asset_edit", "propose_qa_check", "propose_storage_sync", "propose_custom",
         "ask_clarification", "show_costs", "list_instructions", "cancel_instruction", "refuse"]
COMPLETIONS = "/v1/chat/completions"


@pytest.fixture
def chat() -> ChatState:
    return ChatState()


@pytest.fixture
def server(chat):
    with LoopbackServer(make_app(chat)) as srv:
        yield srv


def configure(client: Client, server, **config) -> dict:
    return client.call("providers.configure", slug="alpha", provider_code="llm", config={
        "endpoint": server.url + "/v1", "backoff_s": 0.01, "timeout_s": 10,
        "pricing": {"usd_per_1m_input": PRICE_IN, "usd_per_1m_output": PRICE_OUT}, **config})


@pytest.fixture
def setup(app, client, project, server):
    """The project with the llm provider on the loopback server (no key: a local server), its handle, account
    and a context that knows three shots and another project."""
    configure(client, server)
    client.call("projects.create", slug="beta", name="Beta")
    handle = app.projects.open("alpha")
    account = llm.ready(app, handle)
    assert account is not None
    ctx = context_mod.build(app, handle)
    shots = {k: {"job_key": k, "scene": f"scene {k}", "time_of_day": "day", "weather": "clear"}
             for k in ("s1", "s2", "s3")}
    ctx = dataclasses.replace(ctx, shots=shots, shot_runs=dict.fromkeys(shots, str(uuid.uuid4())))
    return handle, account, ctx


def user(text: str) -> dict:
    return {"role": "user", "content_text": text, "content_json": {}}


def ask(app, setup, text: str = ASK, history: list[dict] | None = None, on_delta=None) -> Reply:
    handle, account, ctx = setup
    return llm.reply(app, handle, account, [*(history or []), user(text)], ctx, on_delta=on_delta)


def calls(client: Client) -> list[dict]:
    return sorted(client.call("providers.calls", slug="alpha", provider_code="llm")["items"],
                  key=lambda c: c["attempt"])


# --- the provider: registered for chat only ---


def test_llm_is_a_chat_provider_never_offered_for_runs(app, client, project, server):
    listed = {p["provider_code"]: p for p in client.call("providers.list", slug="alpha")["items"]}
    assert listed["llm"]["operations"] == ["chat"] and listed["openai"]["operations"] == ["generate"]
    err = client.error("runs.start", slug="alpha", provider="llm", shots=[{"job_key": "a", "scene": "a street"}])
    assert err.name == "invalid_params" and "does not generate images" in err.message
    body = openapi_document(load_commands())["components"]["schemas"]["RunParamsBody"]["properties"]
    assert "llm" not in body["provider"]["enum"] and "preview" in body["provider"]["enum"]


def test_on_openai_a_key_is_needed_on_a_local_server_none(app, client, project, server):
    described = client.call("providers.get", slug="alpha", provider_code="llm")
    assert described["config"]["endpoint"] is None and described["config"]["model"] == "gpt-4o-mini"
    assert described["config"]["timeout_s"] == 60 and not described["ready"] and "api_key" in described["reason"]
    handle = app.projects.open("alpha")
    assert llm.ready(app, handle) is None  # never set up: the offline parser answers
    client.call("providers.configure", slug="alpha", provider_code="llm", config={"model": "gpt-4o"})
    assert llm.ready(app, handle) is None  # api.openai.com without a key
    configure(client, server)
    assert client.call("providers.get", slug="alpha", provider_code="llm")["ready"]
    assert llm.ready(app, handle).config.endpoint == server.url + "/v1"
    client.call("providers.disable", slug="alpha", provider_code="llm")
    assert llm.ready(app, handle) is None


def test_probe_lists_the_models_for_free(app, client, project, server):
    configure(client, server, model="llama-3.1-8b-instruct")
    item = client.call("providers.check", slug="alpha", provider_code="llm", probe=True)["items"][0]
    assert item["ready"] and item["probe"]["ok"]
    assert item["probe"]["info"]["model_listed"] and "gpt-4o-mini" in item["probe"]["info"]["models"]
    assert server.requests_to("/v1/models") == 1
    assert client.call("costs.summary", slug="alpha", group_by="provider")["events"] == 0


def test_list_prices_on_openai_nothing_on_a_local_server_unless_configured():
    assert prices(ChatConfig()) == PUBLISHED_PRICES["gpt-4o-mini"]
    assert prices(ChatConfig(model="gpt-4o-mini-2024-07-18")) == PUBLISHED_PRICES["gpt-4o-mini"]  # not gpt-4o's
    assert prices(ChatConfig(model="gpt-4o")) == (2.5, 10.0)
    dearest = (max(p[0] for p in PUBLISHED_PRICES.values()), max(p[1] for p in PUBLISHED_PRICES.values()))
    assert prices(ChatConfig(model="some-new-model")) == dearest
    assert prices(ChatConfig(endpoint="http://127.0.0.1:8080/v1", model="gpt-4o")) == (0.0, 0.0)
    assert prices(ChatConfig(endpoint="http://127.0.0.1:8080/v1",
                             pricing={"usd_per_1m_input": 1.5})) == (1.5, 0.0)


# --- tool calls to proposals ---


def test_a_pipeline_run_tool_call_is_the_proposal_the_parser_makes(app, setup, chat):
    chat.answer(Answer(tool_calls=[("propose_pipeline_run", PIPELINE_ARGS)], pieces=7))
    reply = ask(app, setup)
    # What the offline parser proposes for the same request, built by hand.
    expected = Proposal("pipeline_run", "Render shots s1, s3 at dusk in the rain",
                        {"shot_keys": ["s1", "s3"], "time_of_day": "dusk", "weather": "rain"})
    assert reply.kind == "propose" and reply.source == "llm" and reply.proposals == (expected,)
    assert "Render shots s1, s3" in reply.text
    # And it becomes an instruction through the same path as any proposal (once a run holds those shots).
    from iat.copilot import service

    handle = setup[0]
    app.agent.close()
    Client(app).call("runs.plan", slug="alpha", shots=[{"job_key": k, "scene": f"scene {k}"} for k in ("s1", "s3")])
    row = service.create(app, handle, app.current_user()["id"], instruction_type=expected.instruction_type,
                         objective=expected.objective, inputs=expected.inputs, execution=expected.execution,
                         constraints=expected.constraints, priority=expected.priority, queue=False)
    assert row["payload_json"]["inputs"] == expected.inputs and row["status"] == "draft"


def test_the_request_carries_the_model_the_tools_the_system_prompt_and_the_history(app, setup, chat):
    chat.answer(Answer(text="Sure."))
    history = [user("hello"), {"role": "assistant", "content_text": "Hi! What shall we render?",
                               "content_json": {"instruction_ids": []}},
               {"role": "tool", "content_text": "ignored", "content_json": {}}]
    ask(app, setup, history=history)
    body = chat.received[-1]["body"]
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 1024 and "max_completion_tokens" not in body  # a local server
    assert [t["function"]["name"] for t in body["tools"]] == TOOLS
    system, *rest = body["messages"]
    assert system["role"] == "system"
    assert '"Alpha" (slug alpha)' in system["content"] and "s1 (day, clear)" in system["content"]
    assert "beta (Beta)" in system["content"]  # the other project, named so the model refuses it
    assert rest == [{"role": "user", "content": "hello"},
                    {"role": "assistant", "content": "Hi! What shall we render?"},
                    {"role": "user", "content": ASK}]
    assert chat.received[-1]["authorization"] == "Bearer sk-no-key-needed"  # the SDK needs some key


def test_every_tool_schema_is_an_object_schema_that_admits_valid_payloads(app, setup):
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in llm.tool_specs()}
    for name, schema in tools.items():
        assert schema["type"] == "object", name
        jsonschema.Draft202012Validator.check_schema(schema)
        assert "oneOf" not in json.dumps(schema) and "discriminator" not in json.dumps(schema)
    samples = {
        "propose_pipeline_run": PIPELINE_ARGS,
        "propose_asset_edit": {"objective": "Upscale", "inputs": {"asset_id": str(uuid.uuid4()),
                                                                  "operation": "upscale", "factor": 4}},
        "propose_qa_check": {"objective": "QA", "inputs": {"run_id": str(uuid.uuid4())},
                             "execution": {"size_check": "aspect"}, "priority": 5},
        "propose_storage_sync": {"objective": "Sync", "inputs": {"direction": "pull"},
                                 "execution": {"dry_run": True}},
        "propose_custom": {"objective": "Export", "inputs": {"action": "export_project", "format": "zip"},
                           "constraints": {"deadline_s": 600}},
    }
    for name, args in samples.items():
        jsonschema.validate(args, tools[name])
        validate_payload(llm.PROPOSE[name][0], args["objective"], args["inputs"], args.get("execution"),
                         args.get("constraints"))
    bad = {"objective": "x", "inputs": {"shot_keys": ["s1"], "time_of_day": "sunset"}}
    assert not jsonschema.Draft202012Validator(tools["propose_pipeline_run"]).is_valid(bad)


def test_two_proposals_in_one_answer_are_both_proposed_with_their_priority(app, setup, chat):
    run_id = str(uuid.uuid4())
    chat.answer(Answer(text="Rendering, then checking.", tool_calls=[
        ("propose_pipeline_run", {**PIPELINE_ARGS, "priority": 10}),
        ("propose_qa_check", {"objective": "Check the last run", "inputs": {"run_id": run_id.upper()},
                              "execution": None})]))
    reply = ask(app, setup)
    assert reply.kind == "propose" and reply.text == "Rendering, then checking."
    assert [(p.instruction_type, p.priority) for p in reply.proposals] == [("pipeline_run", 10), ("qa_check", 100)]
    assert reply.proposals[1].inputs == {"run_id": run_id}  # normalised as validate_payload does


@pytest.mark.parametrize("tool,args,kind,check", [
    ("show_costs", {"group_by": "run"}, "answer", lambda r: r.query == {"kind": "costs", "group_by": "run"}),
    ("show_costs", {}, "answer", lambda r: r.query == {"kind": "costs", "group_by": "provider"}),
    ("list_instructions", {}, "answer", lambda r: r.query == {"kind": "instructions"}),
    ("cancel_instruction", {"instruction_id": "6f0c8a0e-3b1d-4c2e-9a7b-1d2e3f4a5b6c"}, "cancel",
     lambda r: r.instruction_id == "6f0c8a0e-3b1d-4c2e-9a7b-1d2e3f4a5b6c"),
    ("refuse", {"reason": "I only work in project alpha."}, "refuse",
     lambda r: r.text == "I only work in project alpha."),
    ("ask_clarification", {"question": "Which shots?", "options": ["s1", "s2"]}, "clarify",
     lambda r: r.text == "Which shots?" and r.options == ("s1", "s2")),
], ids=["costs-by-run", "costs-default", "instructions", "cancel", "refuse", "clarify"])
def test_the_other_tools_map_to_their_replies(app, setup, chat, tool, args, kind, check):
    chat.answer(Answer(tool_calls=[(tool, args)]))
    reply = ask(app, setup, "whatever")
    assert reply.kind == kind and reply.source == "llm" and not reply.proposals and check(reply)


def test_a_refusal_wins_over_anything_else_and_mixed_decisions_ask_first(app, setup, chat):
    chat.answer(Answer(tool_calls=[("propose_pipeline_run", PIPELINE_ARGS),
                                   ("refuse", {"reason": "That is project beta's."})]),
                Answer(tool_calls=[("propose_pipeline_run", PIPELINE_ARGS), ("show_costs", {"group_by": "day"})]))
    assert ask(app, setup).kind == "refuse"
    mixed = ask(app, setup)
    assert mixed.kind == "clarify" and not mixed.proposals
    assert mixed.options == ("Render shots s1, s3 at dusk in the rain", "Show costs by day")


@pytest.mark.parametrize("tool,args,problem", [
    ("propose_pipeline_run", '{"objective": "Render s1", "inputs": {"shot_keys": ["s1"]', "not JSON"),
    ("propose_pipeline_run", '["s1"]', "not a JSON object"),
    ("propose_pipeline_run", {"objective": "x", "inputs": {"shot_keys": ["s1"], "time_of_day": "sunset"}},
     "inputs.time_of_day"),
    ("propose_pipeline_run", {"objective": "x", "inputs": {"shot_keys": ["s1"],
                                                           "shots": [{"job_key": "s1", "scene": "a"}]}},
     "exactly one of shots and shot_keys"),
    ("propose_asset_edit", {"objective": "x", "inputs": {"asset_id": str(uuid.uuid4()), "operation": "upscale"}},
     "factor is required"),
    ("propose_qa_check", {"objective": "x", "inputs": {"run_id": str(uuid.uuid4())}, "bogus": 1}, "bogus"),
    ("propose_custom", {"objective": "x", "inputs": {"action": "delete_everything"}}, "inputs"),
    ("propose_qa_check", {"objective": "x", "inputs": {"run_id": str(uuid.uuid4())}, "priority": 5000},
     "priority"),
    ("cancel_instruction", {"instruction_id": "the last one"}, "instruction_id"),
    ("show_costs", {"group_by": "colour"}, "group_by"),
    ("make_coffee", {}, "no such tool"),
], ids=["not-json", "not-object", "bad-enum", "both-lists", "no-factor", "unknown-arg", "bad-action",
        "bad-priority", "bad-uuid", "bad-group", "unknown-tool"])
def test_invalid_tool_arguments_ask_again_and_create_nothing(app, setup, chat, tool, args, problem):
    chat.answer(Answer(tool_calls=[(tool, args)]))
    reply = ask(app, setup)
    assert reply.kind == "clarify" and not reply.proposals and reply.instruction_id is None and reply.query is None
    assert "not valid" in reply.text and "nothing was created" in reply.text
    (record,) = reply.usage["invalid_tool_calls"]
    assert record["tool"] == tool and problem in json.dumps(record)
    assert reply.usage["provider_code"] == "llm"  # the call still cost what it cost


def test_one_invalid_proposal_among_valid_ones_proposes_none(app, setup, chat):
    chat.answer(Answer(tool_calls=[("propose_pipeline_run", PIPELINE_ARGS),
                                   ("propose_storage_sync", {"objective": "x", "inputs": {"direction": "up"}})]))
    reply = ask(app, setup)
    assert reply.kind == "clarify" and not reply.proposals
    assert [r["tool"] for r in reply.usage["invalid_tool_calls"]] == ["propose_storage_sync"]


# --- streaming, usage and cost ---


def test_text_deltas_reach_on_delta_in_order_and_make_the_answer(app, setup, chat):
    words = "Shots are drawn in four stages: style lock, light, weather and an advanced pass."
    chat.answer(Answer(text=words, pieces=9))
    seen: list[str] = []
    reply = ask(app, setup, "how does the pipeline work?", on_delta=seen.append)
    assert len(seen) == 9 and "".join(seen) == words
    assert reply == Reply("answer", words, query=None, usage=reply.usage, source="llm")


def test_usage_and_cost_are_on_the_reply_and_in_the_ledger(app, client, setup, chat):
    chat.answer(Answer(text="Hello.", usage=(1200, 80)))
    reply = ask(app, setup, "hi")
    cost = round((1200 * PRICE_IN + 80 * PRICE_OUT) / 1e6, 8)
    assert reply.usage == {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
                           "cost_usd": pytest.approx(cost), "model": "gpt-4o-mini", "provider_code": "llm"}
    (call,) = calls(client)
    assert (call["operation_code"], call["outcome"], call["http_status"], call["attempt"]) == ("chat", "ok", 200, 1)
    summary = client.call("costs.summary", slug="alpha", group_by="provider")
    (group,) = [g for g in summary["groups"] if g["key"] == "llm"]
    assert group["cost_usd"] == pytest.approx(cost) and summary["events"] == 1
    assert [g["key"] for g in client.call("costs.summary", slug="alpha", group_by="operation")["groups"]] == ["chat"]


def test_a_server_without_a_usage_chunk_is_costed_on_estimated_tokens(app, client, setup, chat):
    chat.answer(Answer(text="abcd" * 10, omit_usage=True))
    reply = ask(app, setup, "hi")
    sent = chat.received[-1]["body"]
    prompt = math.ceil((len(json.dumps(sent["messages"])) + len(json.dumps(sent["tools"]))) / 4)
    assert (reply.usage["prompt_tokens"], reply.usage["completion_tokens"]) == (prompt, 10)
    assert reply.usage["cost_usd"] == pytest.approx((prompt * PRICE_IN + 10 * PRICE_OUT) / 1e6)


# --- failures ---


def test_429_is_retried_after_its_retry_after(app, client, setup, chat, server):
    server.faults.add(COMPLETIONS, rate_limited(1))
    chat.answer(Answer(text="Done waiting."))
    started = time.monotonic()
    assert ask(app, setup, "hi").text == "Done waiting."
    assert time.monotonic() - started >= 1.0
    assert [(c["attempt"], c["outcome"], c["http_status"], c["error_code"]) for c in calls(client)] == [
        (1, "error", 429, "rate_limited"), (2, "ok", 200, None)]
    assert client.call("costs.summary", slug="alpha", group_by="provider")["events"] == 1


def test_a_500_and_a_stream_cut_before_any_text_are_retried(app, client, setup, chat, server):
    server.faults.add(COMPLETIONS, server_error())
    chat.answer(Answer(text="lost", cut_after=1), Answer(text="Third time lucky.", pieces=2))
    seen: list[str] = []
    assert ask(app, setup, "hi", on_delta=seen.append).text == "Third time lucky."
    assert seen == ["Third tim", "e lucky."]  # nothing of the broken answer was shown
    assert [(c["outcome"], c["error_code"]) for c in calls(client)] == [
        ("error", "provider_unavailable"), ("error", "provider_unavailable"), ("ok", None)]


@pytest.mark.parametrize("broken", [Answer(text="Hello there, world", pieces=3, cut_after=3),
                                    Answer(text="Hello there, world", pieces=3, no_finish=True)],
                         ids=["connection-broken", "no-finish-reason"])
def test_a_stream_failing_after_text_was_shown_is_not_retried(app, client, setup, chat, broken):
    chat.answer(broken, Answer(text="Hello there, world"))
    seen: list[str] = []
    with pytest.raises(ProviderUnavailable) as info:
        ask(app, setup, "hi", on_delta=seen.append)
    assert info.value.retryable is False and info.value.details["after_delta"] is True
    assert "".join(seen) == "Hello there, world"[:len("".join(seen))] and seen  # shown once, in order
    assert len(chat.script) == 1  # the second answer was never asked for
    (call,) = calls(client)
    assert (call["outcome"], call["error_code"], call["http_status"]) == ("error", "provider_unavailable", 200)


@pytest.fixture
def keyed(tmp_path, server, chat):
    """An App whose secrets are sealed with a passphrase (no keyring needed); the server wants a key."""
    chat.api_key = "sk-loopback-right-key"
    app = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "llm tests"}, home=tmp_path / "keyed"))
    client = Client(app)
    client.call("projects.create", slug="alpha", name="Alpha")
    configure(client, server)
    yield app, client
    app.close()


def test_a_refused_key_is_provider_auth_failed_and_not_retried(keyed, chat):
    app, client = keyed
    wrong = "sk-loopback-wrong-key-0123456789"
    client.call("secrets.set", slug="alpha", provider_code="llm", secret_name="api_key", value=wrong)
    handle = app.projects.open("alpha")
    account = llm.ready(app, handle)
    assert account is not None and account.secrets["api_key"] == wrong
    with pytest.raises(ProviderAuthFailed) as info:
        llm.reply(app, handle, account, [user("hi")], context_mod.build(app, handle))
    assert info.value.details["http_status"] == 401 and wrong not in info.value.message
    assert [(c["outcome"], c["error_code"], c["http_status"]) for c in calls(client)] == [
        ("error", "provider_auth_failed", 401)]
    assert chat.received[-1]["authorization"] == f"Bearer {wrong}"
    client.call("secrets.set", slug="alpha", provider_code="llm", secret_name="api_key", value=chat.api_key)
    chat.answer(Answer(text="Welcome."))
    account = llm.ready(app, handle)
    assert llm.reply(app, handle, account, [user("hi")], context_mod.build(app, handle)).text == "Welcome."
    assert chat.received[-1]["authorization"] == f"Bearer {chat.api_key}"
