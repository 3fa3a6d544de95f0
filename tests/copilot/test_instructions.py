"""Agent instructions: the envelope, the enforced lifecycle with its event trail and notifications, the guardrails
(project scope, allow-list, confirmation), priority, and errors that change nothing."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from iat.copilot import envelope, lifecycle, service
from iat.copilot.envelope import InstructionEnvelope
from iat.errors import ConfirmationRequired, IllegalTransition

from support import Client

EXPORT = {"instruction_type": "custom", "objective": "Export the project", "inputs": {"action": "export_project"}}
DELETE = {"instruction_type": "custom", "objective": "Delete the project", "inputs": {"action": "delete_project"}}


@pytest.fixture
def handle(app, project):
    return app.projects.open("alpha")


@pytest.fixture
def idle(app):
    """The agent stopped: these tests move instructions by hand, as an agent would."""
    app.agent.close()


def _events(client: Client, instruction_id: str) -> list[tuple[str, dict]]:
    items = client.call("agent.instructions.events", slug="alpha", instruction_id=instruction_id)["items"]
    return [(e["event_type"], e["event_payload_json"]) for e in items]


def _counts(app, handle) -> tuple[int, int, int]:
    from iat.db.models import AgentInstruction, AgentInstructionEvent, AuditEvent

    return handle.store.read(lambda: (AgentInstruction.select().count(), AgentInstructionEvent.select().count(),
                                      AuditEvent.select().count()))


def test_every_status_path_is_allowed_and_nothing_else():
    statuses = ("draft", "queued", "running", "done", "failed", "canceled")
    allowed = {(a, b) for a in statuses for b in lifecycle.TRANSITIONS[a]}
    assert allowed == {("draft", "queued"), ("draft", "canceled"), ("queued", "running"), ("queued", "canceled"),
                       ("running", "done"), ("running", "failed"), ("running", "canceled")}


@pytest.mark.parametrize("path,illegal", [
    ((), "running"), ((), "done"), ((), "failed"),
    (("queued",), "draft"), (("queued",), "done"), (("queued",), "failed"), (("queued",), "queued"),
    (("queued", "running"), "queued"), (("queued", "running"), "draft"), (("queued", "running"), "running"),
    (("queued", "running", "done"), "failed"), (("queued", "running", "done"), "canceled"),
    (("queued", "running", "failed"), "done"), (("canceled",), "queued"), (("queued", "canceled"), "running"),
])
def test_illegal_transitions_are_refused_and_change_nothing(app, client, handle, idle, path, illegal):
    row = service.create(app, handle, app.current_user()["id"], queue=False, **EXPORT)
    for status in path:
        row = service.advance(app, handle, row["id"], status) if status != "queued" else \
            service.confirm(app, handle, app.current_user()["id"], row["id"])
    before = (_counts(app, handle), client.call("agent.instructions.get", slug="alpha", instruction_id=row["id"]))
    with pytest.raises(IllegalTransition) as info:
        service.advance(app, handle, row["id"], illegal)
    assert info.value.details == {"instruction_id": row["id"], "from": row["status"], "to": illegal,
                                  "allowed": list(lifecycle.TRANSITIONS[row["status"]])}
    assert (_counts(app, handle), client.call("agent.instructions.get", slug="alpha", instruction_id=row["id"])) \
        == before


def test_the_trail_holds_every_transition_with_its_stamps_and_notifications(app, client, handle, idle):
    seen: list[tuple[str, dict]] = []
    app.events.subscribe(lambda name, payload: seen.append((name, payload)))
    made = client.call("agent.instructions.create", slug="alpha", queue=False, **EXPORT)
    assert made["status"] == "draft" and made["queued_at"] is None
    queued = client.call("agent.instructions.confirm", slug="alpha", instruction_id=made["id"])
    assert queued["status"] == "queued" and queued["queued_at"] and queued["confirmed_by_user_id"]
    service.advance(app, handle, made["id"], "running")
    service.log(app, handle, made["id"], "log", {"step": 1})
    service.advance(app, handle, made["id"], "done", result={"ok": True})
    final = client.call("agent.instructions.get", slug="alpha", instruction_id=made["id"])
    assert final["status"] == "done" and final["started_at"] and final["finished_at"] >= final["started_at"]
    trail = _events(client, made["id"])
    assert [t for t, _ in trail] == ["status_change", "status_change", "queued", "status_change", "started", "log",
                                     "status_change", "result"]
    assert [(p["from"], p["to"]) for t, p in trail if t == "status_change"] == [
        (None, "draft"), ("draft", "queued"), ("queued", "running"), ("running", "done")]
    assert trail[-1][1] == {"ok": True}
    assert app.events.drain()
    statuses = [p["status"] for n, p in seen if n == "agent.instruction.status" and p["instruction_id"] == made["id"]]
    assert statuses == ["draft", "queued", "running", "done"]
    event_ids = [p["event_id"] for n, p in seen if n == "agent.instruction.event" and p["instruction_id"] == made["id"]]
    items = client.call("agent.instructions.events", slug="alpha", instruction_id=made["id"])["items"]
    assert event_ids == [e["id"] for e in items]
    # An ended instruction takes no more events.
    with pytest.raises(IllegalTransition):
        service.log(app, handle, made["id"], "log", {"late": True})


def test_events_page_forward_with_after(app, client, handle, idle):
    row = service.create(app, handle, app.current_user()["id"], queue=False, **EXPORT)
    service.confirm(app, handle, app.current_user()["id"], row["id"])
    first = client.call("agent.instructions.events", slug="alpha", instruction_id=row["id"], limit=2)
    assert len(first["items"]) == 2 and first["next_after"] == first["items"][-1]["id"]
    rest = client.call("agent.instructions.events", slug="alpha", instruction_id=row["id"], after=first["next_after"])
    assert [e["event_type"] for e in first["items"] + rest["items"]] == ["status_change", "status_change", "queued"]
    assert rest["next_after"] is None
    err = client.error("agent.instructions.events", slug="alpha", instruction_id=row["id"], after=str(uuid.uuid4()))
    assert err.name == "not_found"


def test_destructive_instructions_wait_in_draft_for_a_user(app, client, handle):
    made = client.call("agent.instructions.create", slug="alpha", **DELETE)
    assert made["status"] == "draft" and made["requires_confirmation"]
    assert made["confirmation_reasons"] == ["it deletes the whole project, its files and its history"]
    assert made["envelope"]["confirmation_required"] is True
    # No path out of draft but a user's confirmation: the agent's own move is refused.
    with pytest.raises(ConfirmationRequired):
        service.advance(app, handle, made["id"], "queued")
    from iat.copilot.actions import call

    err = pytest.raises(Exception, call, app, "agent.instructions.confirm", slug="alpha", instruction_id=made["id"])
    assert err.value.name == "guardrail_denied"  # an agent cannot confirm for the user
    assert client.call("agent.instructions.get", slug="alpha", instruction_id=made["id"])["status"] == "draft"
    # Canceling works in any state that has not ended.
    canceled = client.call("agent.instructions.cancel", slug="alpha", instruction_id=made["id"], reason="not now")
    assert canceled["status"] == "canceled" and canceled["confirmed_by_user_id"] is None
    assert client.error("agent.instructions.confirm", slug="alpha", instruction_id=made["id"]).name == \
        "illegal_transition"
    assert client.call("projects.get", slug="alpha")["slug"] == "alpha"


@pytest.mark.parametrize("kind,inputs,reason", [
    ("custom", {"action": "delete_project"}, "deletes the whole project"),
    ("custom", {"action": "delete_asset", "asset_id": "ASSET"}, "deletes asset"),
    ("storage_sync", {"direction": "push", "delete_remote": True}, "deletes remote objects"),
])
def test_each_destructive_kind_requires_confirmation(app, client, handle, alpha, src, kind, inputs, reason):
    (src / "a.png").write_bytes(_png())
    asset = _import(client, "alpha", src / "a.png")
    inputs = json.loads(json.dumps(inputs).replace("ASSET", asset["id"]))
    made = client.call("agent.instructions.create", slug="alpha", instruction_type=kind, objective="x", inputs=inputs)
    assert made["requires_confirmation"] and made["status"] == "draft"
    assert any(reason in r for r in made["confirmation_reasons"])


def test_non_destructive_work_is_queued_at_once(app, client, handle, alpha, src, idle):
    (src / "a.png").write_bytes(_png())
    asset = _import(client, "alpha", src / "a.png")
    for kind, inputs in (("storage_sync", {"direction": "push"}), ("custom", {"action": "export_project"}),
                         ("asset_edit", {"asset_id": asset["id"], "operation": "upscale", "factor": 2}),
                         ("qa_check", {"asset_ids": [asset["id"]]})):
        made = client.call("agent.instructions.create", slug="alpha", instruction_type=kind, objective="x",
                           inputs=inputs)
        assert (made["status"], made["requires_confirmation"], made["confirmation_reasons"]) == ("queued", False, [])


def test_a_run_over_the_budget_needs_confirmation_and_over_its_own_limit_is_refused(app, client, handle):
    client.call("projects.update", slug="alpha", settings_json={"budget_usd": 0.01})
    client.call("providers.configure", slug="alpha", provider_code="preview",
                config={"pricing": {"usd_per_image": 0.01}})
    shots = [{"job_key": "s1", "scene": "a fox in a field"}]
    made = client.call("agent.instructions.create", slug="alpha", instruction_type="pipeline_run",
                       objective="Render s1", inputs={"shots": shots}, execution={"candidates": 2})
    assert made["status"] == "draft" and made["requires_confirmation"]
    assert "budget" in made["confirmation_reasons"][0]
    before = _counts(app, handle)
    err = client.error("agent.instructions.create", slug="alpha", instruction_type="pipeline_run", objective="x",
                       inputs={"shots": shots}, constraints={"max_cost_usd": 0.001})
    assert err.name == "guardrail_denied" and err.details["estimate_usd"] > 0.001
    assert _counts(app, handle)[0] == before[0]


def test_scope_refuses_another_projects_assets_and_runs(app, client, handle, alpha, src):
    client.call("projects.create", slug="beta", name="Beta")
    client.call("projects.update", slug="beta", settings_json={"import_roots": [str(src)]})
    (src / "b.png").write_bytes(_png())
    theirs = _import(client, "beta", src / "b.png")
    before = _counts(app, handle)
    for kind, inputs in (("asset_edit", {"asset_id": theirs["id"], "operation": "remove_background"}),
                         ("qa_check", {"asset_ids": [theirs["id"]]}),
                         ("qa_check", {"run_id": str(uuid.uuid4())}),
                         ("custom", {"action": "delete_asset", "asset_id": theirs["id"]})):
        err = client.error("agent.instructions.create", slug="alpha", instruction_type=kind, objective="x",
                           inputs=inputs)
        assert err.name == "guardrail_denied", (kind, inputs)
    assert _counts(app, handle) == before


def test_the_allow_list_limits_types_and_actions(app, client, handle, idle):
    client.call("projects.update", slug="alpha", settings_json={"copilot": {
        "allowed_instruction_types": ["qa_check", "custom"], "allowed_custom_actions": ["export_project"]}})
    err = client.error("agent.instructions.create", slug="alpha", instruction_type="storage_sync", objective="x",
                       inputs={})
    assert err.name == "guardrail_denied" and err.details["allowed"] == ["qa_check", "custom"]
    err = client.error("agent.instructions.create", slug="alpha", **DELETE)
    assert err.name == "guardrail_denied" and err.details["action"] == "delete_project"
    assert client.call("agent.instructions.create", slug="alpha", **EXPORT)["status"] == "queued"


def test_invalid_payloads_list_every_problem_and_write_nothing(app, client, handle):
    before = _counts(app, handle)
    err = client.error("agent.instructions.create", slug="alpha", instruction_type="pipeline_run", objective="x",
                       inputs={"shot_keys": ["s1"], "weather": "hail"}, execution={"candidatez": 3})
    assert err.name == "invalid_params"
    assert {e["loc"] for e in err.details["errors"]} == {"inputs.weather", "execution.candidatez"}
    err = client.error("agent.instructions.create", slug="alpha", instruction_type="pipeline_run", objective="x",
                       inputs={"shot_keys": ["nope"]})
    assert err.name == "invalid_params" or err.name == "conflict"
    assert _counts(app, handle) == before


def test_the_queue_is_taken_lowest_priority_number_first(app, handle, idle):
    from iat.copilot import repo

    actor = app.current_user()["id"]
    made = [service.create(app, handle, actor, priority=p, **EXPORT)["id"] for p in (100, 5, 50, 5)]
    order = [r["id"] for r in handle.store.read(repo.queued_in_order, handle.id)]
    assert order == [made[1], made[3], made[2], made[0]]


def test_envelope_is_the_spec_contract_and_matches_the_schema_file(app, client, handle, idle):
    made = client.call("agent.instructions.create", slug="alpha", instruction_type="qa_check",
                       objective="Check the run", inputs={"run_id": _run(client)}, priority=7)
    env = made["envelope"]
    assert set(env) == {"instruction_id", "project_slug", "instruction_type", "objective", "constraints", "inputs",
                        "execution", "confirmation_required", "requested_by", "callback"}
    assert (env["instruction_id"], env["project_slug"], env["requested_by"]) == (made["id"], "alpha", "local")
    InstructionEnvelope.model_validate(env)
    on_disk = json.loads((Path(__file__).parents[2] / "schema" / "agent_instruction.schema.json").read_text())
    assert on_disk == envelope.json_schema()
    import jsonschema

    jsonschema.validate({"envelope": env}, on_disk)
    jsonschema.validate(made["payload"]["inputs"], {**on_disk["$defs"]["qa_check.inputs"],
                                                    "$defs": on_disk["$defs"]})


def test_concurrent_cancel_and_start_leave_one_winner(app, handle, idle):
    """A start and a cancel racing on one queued instruction: each lands once or is refused, none is lost."""
    from iat.copilot import repo

    actor = app.current_user()["id"]
    for _ in range(10):
        row = service.create(app, handle, actor, **EXPORT)
        results: list[str] = []

        def attempt(to: str) -> None:
            try:
                service.advance(app, handle, row["id"], to) if to == "running" else \
                    service.cancel(app, handle, actor, row["id"])
                results.append(to)
            except IllegalTransition:
                results.append("refused")

        threads = [threading.Thread(target=attempt, args=(t,)) for t in ("running", "canceled")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = handle.store.read(repo.get_instruction, handle.id, row["id"])
        # The cancel may land before the start (the start is refused) or after it (running -> canceled).
        assert "canceled" in results and final["status"] == "canceled"
        changes = [e["event_payload_json"]["to"] for e in
                   handle.store.read(repo.list_events, handle.id, row["id"], 50, None)[0]
                   if e["event_type"] == "status_change"]
        assert changes == ["draft", "queued", *(["running"] if "running" in results else []), "canceled"]


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def _import(client: Client, slug: str, path: Path) -> dict:
    return client.call("assets.import", slug=slug, paths=[str(path)])["items"][0]


def _run(client: Client) -> str:
    return client.call("runs.plan", slug="alpha", shots=[{"job_key": "s1", "scene": "a fox"}], candidates=1)["run"]["id"]
