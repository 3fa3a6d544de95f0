"""An external agent API: the envelope POSTed to a loopback agent (tests/vendors/agent_api.py) through the
ledger, its answers (accepted, done, rejected, failed, broken), and its reports through the callback route of a
real HTTP transport, each authenticated by the instruction's own token: another instruction's token, the app's
token or none is refused with nothing changed, an ended instruction takes no more callbacks."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from iat.app import App
from iat.copilot import repo
from iat.rpc.http import HttpTransport
from iat.rpc.protocol import Dispatcher
from iat.settings import Settings

from support import Client
from vendors.agent_api import ENVELOPE_FIELDS, AgentServer, post
from vendors.loopback import Fault

WAIT_S = 120
EXPORT = {"instruction_type": "custom", "inputs": {"action": "export_project"}}


@pytest.fixture
def app(home):
    # Secrets in passphrase mode: the agent's API key is stored without an OS keyring.
    application = App(Settings.from_env({"IAT_SECRETS_PASSPHRASE": "agent-test-passphrase"}, home=home))
    yield application
    application.close()


@pytest.fixture
def http(app: App):
    executor = ThreadPoolExecutor(4)
    transport = HttpTransport(Dispatcher(app), executor, 0, app.settings.max_message_bytes, ())
    transport.start()
    url = f"http://127.0.0.1:{transport.port}"
    app.started_transports["http"] = {"host": "127.0.0.1", "port": transport.port, "url": url}
    yield url
    app.agent.close()
    transport.stop()
    executor.shutdown()


@pytest.fixture
def agent():
    with AgentServer() as server:
        yield server


def use_external(client: Client, server: AgentServer, **config) -> None:
    client.call("projects.update", slug="alpha", settings_json={"copilot": {"agent": "external"}})
    client.call("providers.configure", slug="alpha", provider_code="agent_api",
                config={"endpoint": server.url, "max_attempts": 2, "backoff_s": 0, **config})


def create(client: Client, objective: str = "export it", **more) -> dict:
    return client.call("agent.instructions.create", slug="alpha", objective=objective, **{**EXPORT, **more})


def get(client: Client, instruction_id: str) -> dict:
    return client.call("agent.instructions.get", slug="alpha", instruction_id=instruction_id)


def trail(client: Client, instruction_id: str) -> list[tuple[str, dict]]:
    items = client.call("agent.instructions.events", slug="alpha", instruction_id=instruction_id)["items"]
    return [(e["event_type"], e["event_payload_json"]) for e in items]


def wait_status(client: Client, instruction_id: str, *statuses: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        row = get(client, instruction_id)
        if row["status"] in statuses:
            return row
        assert time.monotonic() < deadline, f"instruction still {row['status']}: {trail(client, instruction_id)}"
        time.sleep(0.02)


def dispatch_row(app: App, instruction_id: str) -> dict:
    return app.projects.open("alpha").store.read(repo.get_dispatch, instruction_id)


def received(server: AgentServer, instruction_id: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [e for e in server.received if e["instruction_id"] == instruction_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "the agent got no envelope"
        time.sleep(0.02)


def snapshot(app: App, client: Client, instruction_id: str) -> tuple:
    """What a refused callback must leave as it was: the row, its events, its dispatch row, the audit trail."""
    audit = client.call("audit.list", slug="alpha", limit=500)["items"]
    return get(client, instruction_id), trail(client, instruction_id), dispatch_row(app, instruction_id), audit


def test_the_agent_gets_the_envelope_and_reports_through_its_callbacks(app, client, project, http, agent):
    use_external(client, agent)
    made = create(client, "export the project for the client")
    done = wait_status(client, made["id"], "done", "failed")
    assert agent.finished.wait(WAIT_S)
    assert done["status"] == "done", trail(client, made["id"])
    envelope = received(agent, made["id"])
    token = envelope["callback"]["token"]
    url = f"{http}/api/projects/alpha/agent/instructions/{made['id']}/callback"
    assert set(envelope) - {"authorization"} == ENVELOPE_FIELDS and envelope["authorization"] is None
    assert envelope["callback"] == {"status_url": url, "events_url": url, "token": token}
    assert (envelope["project_slug"], envelope["instruction_type"], envelope["inputs"], envelope["requested_by"],
            envelope["confirmation_required"]) == ("alpha", "custom", {"action": "export_project", "format": "tar.gz"},
                                                   "local", False)
    assert [(r[2], r[3]["status"]) for r in agent.reports] == [(200, "running"), (200, "running"), (200, "running"),
                                                               (200, "done")]
    events = trail(client, made["id"])
    assert [(p["from"], p["to"]) for t, p in events if t == "status_change"] == [
        (None, "draft"), ("draft", "queued"), ("queued", "running"), ("running", "done")]
    logs = [p for t, p in events if t == "log"]
    assert logs[0] == {"step": "dispatch", "endpoint": agent.url.rstrip("/"), "callback_url": url}
    mine = [p.get("agent_status") or p.get("step") for p in logs[1:]]
    assert [m for m in mine if m != "accepted"] == ["planning", "running", "rendering"]  # the callbacks, in order
    assert dict(events)["result"] == {"echo": "export the project for the client",
                                      "inputs": {"action": "export_project", "format": "tar.gz"},
                                      "message": "all done"}
    assert client.call("exports.list", slug="alpha")["items"] == []  # the external agent did it, not this one
    # Only the token's sha256 is kept; the token is nowhere in the project's database or its events.
    row = dispatch_row(app, made["id"])
    assert row["agent"] == "external" and row["remote_status"] == "done"
    assert row["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(events)
    root = app.projects.open("alpha").root
    assert all(token.encode() not in f.read_bytes() for f in root.glob("project.db*"))
    # The dispatch went through the ledger (one attempt, nothing billed); each callback wrote an audit row.
    calls = client.call("providers.calls", slug="alpha", provider_code="agent_api")["items"]
    assert [(c["operation_code"], c["outcome"], c["http_status"]) for c in calls] == [("agent.dispatch", "ok", 202)]
    assert client.call("costs.summary", slug="alpha")["events"] == 0
    audit = [e for e in client.call("audit.list", slug="alpha", limit=500)["items"]
             if e["event_code"] == "agent.instruction.callback"]
    assert len(audit) == 4 and all(e["actor_user_id"] is None for e in audit)
    assert sorted(e["payload_json"].get("status") or e["payload_json"]["event_type"] for e in audit) == [
        "done", "log", "log", "running"]


def test_callbacks_open_only_the_instruction_whose_token_they_carry(app, client, project, http, agent):
    agent.mode = "hold"
    use_external(client, agent)
    a, b = create(client, "first"), create(client, "second")
    token_a = received(agent, a["id"])["callback"]["token"]
    token_b = received(agent, b["id"])["callback"]["token"]
    url_b = received(agent, b["id"])["callback"]["status_url"]
    wait_status(client, b["id"], "running")
    assert app.agent.wait_idle(WAIT_S)
    before = snapshot(app, client, b["id"])
    refused = [
        ({"status": "done", "message": "not yours", "result": {"x": 1}}, token_a),  # another instruction's token
        ({"event": {"type": "log", "payload": {"step": "sneaky"}}}, token_a),
        ({"status": "done", "message": "no token"}, None),
        ({"status": "done", "message": "the app's token opens no instruction"}, app.token),
        ({"status": "failed", "message": "a made-up token"}, "x" * 43),
    ]
    for body, token in refused:
        status, answer = post(url_b, body, token)
        assert (status, answer["error"]["data"]["name"]) == (401, "unauthorized"), (body, answer)
    # The right token on another instruction's URL, or on an instruction that does not exist, opens nothing either.
    status, answer = post(url_b.replace(b["id"], str(uuid.uuid4())), {"status": "done", "message": "?"}, token_b)
    assert (status, answer["error"]["data"]["name"]) == (401, "unauthorized")
    status, answer = post(url_b.replace("/alpha/", "/nowhere/"), {"status": "done", "message": "?"}, token_b)
    assert (status, answer["error"]["data"]["name"]) == (401, "unauthorized")
    # A body that is neither a status nor an event is invalid, and changes nothing.
    status, answer = post(url_b, {"status": "done", "event": {"type": "log"}}, token_b)
    assert (status, answer["error"]["data"]["name"]) == (422, "invalid_params")
    assert snapshot(app, client, b["id"]) == before

    status, answer = post(url_b, {"event": {"type": "log", "payload": {"step": "rendering", "done": 3}}}, token_b)
    assert status == 200 and answer["status"] == "running" and answer["event_id"]
    status, answer = post(url_b, {"status": "done", "message": "finished", "result": {"frames": 3}}, token_b)
    assert (status, answer["status"]) == (200, "done")
    assert get(client, b["id"])["status"] == "done" and dict(trail(client, b["id"]))["result"] == {
        "frames": 3, "message": "finished"}
    # An ended instruction takes no more callbacks, even with its own token.
    after = snapshot(app, client, b["id"])
    status, answer = post(url_b, {"event": {"type": "log", "payload": {"late": True}}}, token_b)
    assert (status, answer["error"]["data"]["name"]) == (409, "illegal_transition")
    assert snapshot(app, client, b["id"]) == after

    # Over JSON-RPC the token goes in the params: still the instruction's own, and only it.
    err = client.error("agent.instructions.callback", slug="alpha", instruction_id=a["id"], status="failed")
    assert err.name == "unauthorized"
    err = client.error("agent.instructions.callback", slug="alpha", instruction_id=a["id"], token=token_b,
                       status="failed")
    assert err.name == "unauthorized" and get(client, a["id"])["status"] == "running"
    out = client.call("agent.instructions.callback", slug="alpha", instruction_id=a["id"], token=token_a,
                      status="failed", message="gave up", error={"code": "no_gpu"})
    assert out["status"] == "failed"
    error = dict(trail(client, a["id"]))["error"]
    assert error["name"] == "provider_error" and "gave up" in error["message"]
    assert error["details"]["agent_error"] == {"code": "no_gpu"} and error["details"]["agent_status"] == "failed"


def test_a_canceled_external_instruction_refuses_the_agents_later_callbacks(app, client, project, http, agent):
    agent.mode = "hold"
    use_external(client, agent)
    made = create(client)
    callback = received(agent, made["id"])["callback"]
    wait_status(client, made["id"], "running")
    assert client.call("agent.instructions.cancel", slug="alpha", instruction_id=made["id"])["status"] == "canceled"
    status, answer = post(callback["status_url"], {"status": "done", "message": "too late"}, callback["token"])
    assert (status, answer["error"]["data"]["name"]) == (409, "illegal_transition")
    assert get(client, made["id"])["status"] == "canceled" and "result" not in dict(trail(client, made["id"]))


def test_an_agent_that_answers_done_at_once(app, client, project, http, agent):
    agent.mode = "done"
    use_external(client, agent)
    made = create(client, "quick one")
    done = wait_status(client, made["id"], "done", "failed")
    assert done["status"] == "done"
    assert dict(trail(client, made["id"]))["result"] == {"echo": "quick one", "inputs": {
        "action": "export_project", "format": "tar.gz"}, "message": "done already"}
    assert dispatch_row(app, made["id"])["remote_status"] == "done"


@pytest.mark.parametrize("mode, name, words, details", [
    ("reject", "provider_bad_request", "rejected the instruction: this agent does not delete projects",
     {"agent_status": "rejected", "agent_error": {}}),
    ("fail", "provider_error", "failed the instruction: the render farm is down",
     {"agent_status": "failed", "agent_error": {"code": "farm_down", "retry_after_s": 600}}),
    ("broken", "provider_error", "does not follow the response contract (SPEC 9.2): status: Field required", {}),
    ("wrong_id", "provider_error", "answered about instruction", {}),
    ("not_json", "provider_error", "with a body that is not JSON", {"http_status": 200}),
])
def test_refusals_failures_and_broken_answers_fail_the_instruction(app, client, project, http, agent, mode, name,
                                                                   words, details):
    agent.mode = mode
    use_external(client, agent)
    made = create(client)
    failed = wait_status(client, made["id"], "failed", "done")
    events = trail(client, made["id"])
    assert failed["status"] == "failed", events
    error = dict(events)["error"]
    assert error["name"] == name and words in error["message"], error
    assert details.items() <= error["details"].items() and error["details"]["provider"] == "agent_api"
    assert [t for t, _ in events][-2:] in (["status_change", "error"], ["error", "status_change"])
    assert [p for t, p in events if t == "status_change"][-1]["to"] == "failed"
    # A broken answer is not retried: the same request would get the same answer.
    attempts = client.call("providers.calls", slug="alpha", provider_code="agent_api")["items"]
    assert len(attempts) == 1


def test_http_failures_are_retried_then_typed_and_the_api_key_is_sent(app, client, project, http, agent):
    use_external(client, agent)
    agent.server.faults.add("/", Fault.status(500, text="down"), Fault.status(503, text="still down"))
    made = create(client, "first try")
    failed = wait_status(client, made["id"], "failed", "done")
    assert dict(trail(client, made["id"]))["error"]["name"] == "provider_unavailable" and failed["status"] == "failed"
    attempts = client.call("providers.calls", slug="alpha", provider_code="agent_api")["items"]
    assert sorted(a["attempt"] for a in attempts) == [1, 2] and {a["http_status"] for a in attempts} == {500, 503}
    assert agent.received == []

    agent.api_key = "agent-key-123"
    made = create(client, "without the key")
    assert wait_status(client, made["id"], "failed", "done")["status"] == "failed"
    assert dict(trail(client, made["id"]))["error"]["name"] == "provider_auth_failed"
    client.call("secrets.set", slug="alpha", provider_code="agent_api", secret_name="api_key", value="agent-key-123")
    agent.mode = "done"
    made = create(client, "with the key")
    assert wait_status(client, made["id"], "done", "failed")["status"] == "done"
    assert received(agent, made["id"])["authorization"] == "Bearer agent-key-123"
    check = client.call("providers.check", slug="alpha", provider_code="agent_api")["items"][0]
    assert check["ready"] and check["probe"]["info"]["agent"] == {"agent": "loopback", "version": 1}


def test_without_an_http_transport_or_an_endpoint_dispatch_fails_with_a_reason(app, client, project, agent):
    client.call("projects.update", slug="alpha", settings_json={"copilot": {"agent": "external"}})
    made = create(client)
    assert wait_status(client, made["id"], "failed", "done")["status"] == "failed"
    error = dict(trail(client, made["id"]))["error"]
    assert error["name"] == "conflict" and "no endpoint" in error["message"]
    use_external(client, agent)
    made = create(client)
    assert wait_status(client, made["id"], "failed", "done")["status"] == "failed"
    error = dict(trail(client, made["id"]))["error"]
    assert error["name"] == "conflict" and "--http" in error["message"]
    assert agent.received == []
    # The agent account generates nothing: a run cannot use it.
    err = client.error("runs.start", slug="alpha", provider="agent_api", shots=[{"job_key": "a", "scene": "x"}])
    assert err.name == "invalid_params" and "does not generate images" in err.message
