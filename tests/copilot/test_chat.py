"""Chat turns through the offline copilot, end to end: persisted messages, instructions through the guardrails,
the built-in agent carrying them out, questions answered, refusals, clarifications."""

from __future__ import annotations

import pytest

from support import Client

SHOTS = [{"job_key": "s1", "scene": "a fox at the edge of a wood"},
         {"job_key": "s2", "scene": "the fox crosses a stream"}]


@pytest.fixture
def session(client: Client, project: dict) -> dict:
    return client.call("chat.sessions.create", slug="alpha", title="Comic")


def _say(client: Client, session: dict, text: str) -> dict:
    return client.call("chat.messages.send", slug="alpha", session_id=session["id"], text=text)


def test_a_turn_is_persisted_and_its_instruction_carried_out(app, client, session):
    turn = _say(client, session, "Please export the project as a zip")
    user, answer = turn["user_message"], turn["assistant_message"]
    assert (user["role"], user["content_text"]) == ("user", "Please export the project as a zip")
    assert answer["role"] == "assistant" and answer["content_text"]
    assert answer["content_json"]["kind"] == "propose" and answer["content_json"]["source"] == "parser"
    [instruction] = turn["instructions"]
    assert answer["content_json"]["instruction_ids"] == [instruction["id"]]
    assert instruction["instruction_type"] == "custom"
    assert instruction["payload"]["inputs"] == {"action": "export_project", "format": "zip"}
    assert (instruction["session_id"], instruction["message_id"]) == (session["id"], user["id"])
    assert app.agent.wait_idle(60)
    done = client.call("agent.instructions.get", slug="alpha", instruction_id=instruction["id"])
    assert done["status"] == "done"
    [export] = client.call("exports.list", slug="alpha")["items"]
    assert export["format"] == "zip"
    listed = client.call("chat.messages.list", slug="alpha", session_id=session["id"])["items"]
    assert [m["id"] for m in listed] == [answer["id"], user["id"]]  # newest first
    got = client.call("chat.sessions.get", slug="alpha", session_id=session["id"])
    assert got["updated_at"] >= answer["created_at"]


def test_a_spoken_style_run_request_renders_the_named_shots_at_that_time_and_weather(app, client, session):
    first = client.call("runs.start", slug="alpha", shots=SHOTS, candidates=1, seed=1)
    assert app.runner.wait_idle(120)
    turn = _say(client, session, "render shots s1 and s2 again at dusk in the rain")
    [instruction] = turn["instructions"]
    assert instruction["instruction_type"] == "pipeline_run"
    assert instruction["payload"]["inputs"] == {"shot_keys": ["s1", "s2"], "time_of_day": "dusk", "weather": "rain"}
    assert app.agent.wait_idle(120) and app.runner.wait_idle(120)
    done = client.call("agent.instructions.get", slug="alpha", instruction_id=instruction["id"])
    assert done["status"] == "done", client.call("agent.instructions.events", slug="alpha",
                                                  instruction_id=instruction["id"])
    runs = client.call("runs.list", slug="alpha")["items"]
    new = next(r for r in runs if r["id"] != first["id"] and r["run_mode"] == "run")
    run = client.call("runs.get", slug="alpha", run_id=new["id"])
    assert (run["time_of_day"], run["weather"], run["status"]) == ("dusk", "rain", "done")
    jobs = client.call("jobs.list", slug="alpha", run_id=new["id"])["items"]
    assert sorted(j["job_key"] for j in jobs) == ["s1", "s2"]
    trail = [e["event_type"] for e in client.call("agent.instructions.events", slug="alpha",
                                                  instruction_id=instruction["id"])["items"]]
    assert trail[:3] == ["status_change", "status_change", "queued"] and trail[-2:] == ["status_change", "result"]


def test_a_destructive_request_waits_for_the_users_confirmation(app, client, session):
    turn = _say(client, session, "delete the project")
    [instruction] = turn["instructions"]
    assert instruction["status"] == "draft" and instruction["requires_confirmation"]
    assert instruction["payload"]["inputs"] == {"action": "delete_project"}
    assert "confirmation" in turn["assistant_message"]["content_text"]
    assert app.agent.wait_idle(10)
    assert client.call("agent.instructions.get", slug="alpha", instruction_id=instruction["id"])["status"] == "draft"
    assert client.call("projects.get", slug="alpha")["slug"] == "alpha"


def test_a_request_about_another_project_is_refused(app, client, session):
    client.call("projects.create", slug="beta", name="Beta")
    turn = _say(client, session, "export the beta project")
    assert turn["instructions"] == []
    assert turn["assistant_message"]["content_json"]["kind"] == "refuse"
    assert client.call("agent.instructions.list", slug="alpha")["items"] == []
    assert client.call("agent.instructions.list", slug="beta")["items"] == []


def test_an_ambiguous_destructive_request_asks_back(client, session):
    turn = _say(client, session, "delete it")
    assert turn["instructions"] == []
    content = turn["assistant_message"]["content_json"]
    assert content["kind"] == "clarify" and content["question"]


def test_a_cost_question_is_answered_from_the_ledger(app, client, session):
    client.call("providers.configure", slug="alpha", provider_code="preview",
                config={"pricing": {"usd_per_image": 0.25}})
    client.call("runs.start", slug="alpha", shots=SHOTS[:1], candidates=2, stages=["style_lock"], seed=3)
    assert app.runner.wait_idle(120)
    turn = _say(client, session, "how much have we spent per provider?")
    content = turn["assistant_message"]["content_json"]
    assert turn["instructions"] == [] and content["kind"] == "answer"
    assert content["answer"]["cost_usd"] == pytest.approx(0.5)
    assert "0.5000 USD" in turn["assistant_message"]["content_text"]


def test_cancel_from_the_chat(app, client, session):
    app.agent.close()  # keep it queued
    made = _say(client, session, "export the project")["instructions"][0]
    assert made["status"] == "queued"
    turn = _say(client, session, "cancel that")
    assert turn["assistant_message"]["content_json"]["kind"] == "cancel"
    assert client.call("agent.instructions.get", slug="alpha", instruction_id=made["id"])["status"] == "canceled"


def test_bad_turns_are_refused_and_write_nothing(client, session):
    import uuid

    assert client.error("chat.messages.send", slug="alpha", session_id=str(uuid.uuid4()), text="hi").name == \
        "not_found"
    assert client.error("chat.messages.send", slug="alpha", session_id=session["id"], text="a\x00b").name == \
        "invalid_params"
    assert client.error("chat.messages.send", slug="alpha", session_id=session["id"], text="").name == \
        "invalid_params"
    assert client.call("chat.messages.list", slug="alpha", session_id=session["id"])["items"] == []
    other = client.call("projects.create", slug="gamma", name="Gamma")
    assert other["slug"] == "gamma"
    assert client.error("chat.sessions.get", slug="gamma", session_id=session["id"]).name == "not_found"


# --- the LLM path: the same turn through the openai SDK and a loopback chat completions server ---


@pytest.fixture
def llm_server():
    from vendors.loopback import LoopbackServer
    from vendors.openai_chat import ChatState, make_app

    state = ChatState()
    with LoopbackServer(make_app(state)) as server:
        yield state, server


def _use_llm(client: Client, server, **config) -> None:
    client.call("providers.configure", slug="alpha", provider_code="llm", config={
        "endpoint": server.url + "/v1", "backoff_s": 0.01, "timeout_s": 10, "max_attempts": 1,
        "pricing": {"usd_per_1m_input": 2.0, "usd_per_1m_output": 8.0}, **config})


def test_the_llm_proposes_the_same_instruction_as_the_parser_through_tool_calls(app, client, session, llm_server):
    from iat.copilot import context, parser
    from vendors.openai_chat import Answer

    state, server = llm_server
    client.call("runs.start", slug="alpha", shots=SHOTS, candidates=1, seed=1)
    assert app.runner.wait_idle(120)
    ask = "render shots s1 and s2 again at dusk in the rain"
    offline = parser.parse(ask, context.build(app, app.projects.open("alpha")))
    [proposal] = offline.proposals
    _use_llm(client, server)
    state.answer(Answer(text="Rendering them now.", tool_calls=[("propose_pipeline_run", {
        "objective": proposal.objective, "inputs": proposal.inputs, "execution": proposal.execution})], pieces=4))
    deltas: list[str] = []
    app.events.subscribe(lambda name, p: deltas.append(p["text"]) if name == "chat.message.delta" else None)
    app.agent.close()  # the instruction itself is checked, not its run
    turn = _say(client, session, ask)
    [instruction] = turn["instructions"]
    assert (instruction["instruction_type"], instruction["payload"]["inputs"]) == (
        proposal.instruction_type, proposal.inputs)
    answer = turn["assistant_message"]
    assert answer["content_json"]["source"] == "llm" and answer["content_json"]["kind"] == "propose"
    usage = answer["token_usage_json"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0 and usage["cost_usd"] > 0
    assert app.events.drain() and "".join(deltas) == "Rendering them now."
    [call] = client.call("providers.calls", slug="alpha", provider_code="llm")["items"]
    assert call["outcome"] == "ok"
    costs = client.call("costs.summary", slug="alpha", provider_code="llm")
    assert costs["cost_usd"] == pytest.approx(usage["cost_usd"])
    sent = state.received[-1]["body"] if "body" in state.received[-1] else state.received[-1]
    assert sent["messages"][-1]["content"] == ask and any(t["function"]["name"] == "propose_pipeline_run"
                                                          for t in sent["tools"])


def test_a_failing_llm_falls_back_to_the_offline_parser(app, client, session, llm_server):
    from vendors.openai_chat import server_error

    state, server = llm_server
    _use_llm(client, server)
    state.answer(server_error())
    app.agent.close()
    turn = _say(client, session, "export the project")
    content = turn["assistant_message"]["content_json"]
    assert content["source"] == "parser" and content["llm_error"]["name"] == "provider_unavailable"
    assert turn["instructions"][0]["payload"]["inputs"]["action"] == "export_project"
