"""The built-in agent, in process and end to end: each instruction type carried out through the command registry
on a real project (the offline preview provider, a loopback S3 server for sync), the event trail complete and in
order, the queue in priority order, a cancel that stops the instruction's run, failing commands that fail the
instruction with their typed error, and a project deleted by its own instruction."""

from __future__ import annotations

import threading
import uuid

import pytest

from iat.app import App
from iat.cancel import Cancelled
from iat.copilot import repo
from iat.errors import InvalidParams
from iat.providers.preview import PreviewProvider

from support import Client, wait_for

WAIT_S = 240  # a loaded 2-core machine: waited for, never slept on
SHOTS = [{"job_key": "harbour", "scene": "a quiet harbour at dawn"}, {"job_key": "hill", "scene": "a windy hill"}]
QUICK = {"candidates": 1, "stages": ["style_lock"], "seed": 7}
GATE = threading.Event()


class Gated(PreviewProvider):
    """The preview renderer, holding every picture until the test opens GATE (or the call is canceled): a run
    that is running for as long as a test needs."""

    code = "gated"

    def generate(self, request, account=None, *, cancel=None, timeout=None):
        while not GATE.wait(0.02):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
        return super().generate(request, account, cancel=cancel, timeout=timeout)


@pytest.fixture
def gated(app: App):
    GATE.clear()
    app.providers.register("gated", f"{__name__}:Gated")
    yield
    GATE.set()


@pytest.fixture
def seen(app: App) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    app.events.subscribe(lambda name, payload: got.append((name, payload)))
    return got


def create(client: Client, instruction_type: str, inputs: dict, execution: dict | None = None, *, slug="alpha",
           **more) -> dict:
    return client.call("agent.instructions.create", slug=slug, instruction_type=instruction_type,
                       objective=f"test {instruction_type}", inputs=inputs, execution=execution or {}, **more)


def settle(app: App, client: Client, instruction_id: str, slug: str = "alpha") -> dict:
    assert app.agent.wait_idle(WAIT_S), "the agent did not finish"
    return client.call("agent.instructions.get", slug=slug, instruction_id=instruction_id)


def trail(client: Client, instruction_id: str, slug: str = "alpha") -> list[tuple[str, dict]]:
    items = client.call("agent.instructions.events", slug=slug, instruction_id=instruction_id, limit=1000)["items"]
    return [(e["event_type"], e["event_payload_json"]) for e in items]


def moves(events: list[tuple[str, dict]]) -> list[tuple]:
    return [(p["from"], p["to"]) for t, p in events if t == "status_change"]


def steps(events: list[tuple[str, dict]]) -> list[tuple]:
    """The agent's log lines: (step, method) before a command, (step, ok) after it."""
    return [(p["step"], p.get("method", p.get("ok"))) for t, p in events if t == "log"]


def check_trail(events: list[tuple[str, dict]], end: str) -> None:
    """The whole trail, in order: created, queued, started, the agent's log lines, then its end (the status change
    and its result or error event, written together)."""
    kinds = [t for t, _ in events]
    assert kinds[:5] == ["status_change", "status_change", "queued", "status_change", "started"], kinds
    closing = "result" if end == "done" else "error"
    assert sorted(kinds[-2:]) == sorted(["status_change", closing]), kinds
    assert set(kinds[5:-2]) <= {"log"} and len(kinds) > 7, kinds
    assert moves(events) == [(None, "draft"), ("draft", "queued"), ("queued", "running"), ("running", end)]


def dispatch_row(app: App, instruction_id: str, slug: str = "alpha") -> dict | None:
    handle = app.projects.open(slug)
    return handle.store.read(repo.get_dispatch, instruction_id)


def finished_run(app: App, client: Client, **params) -> dict:
    run = client.call("runs.start", slug="alpha", shots=SHOTS, **{**QUICK, **params})
    assert app.runner.wait_idle(WAIT_S)
    return client.call("runs.get", slug="alpha", run_id=run["id"])


# --- pipeline_run ---


def test_a_pipeline_run_starts_a_run_follows_it_and_ends_with_its_finals(app, client, project, seen):
    made = create(client, "pipeline_run", {"shots": SHOTS}, QUICK)
    assert made["status"] == "queued"
    done = settle(app, client, made["id"])
    assert done["status"] == "done" and done["started_at"] and done["finished_at"]
    events = trail(client, made["id"])
    check_trail(events, "done")
    assert steps(events) == [("start the run", "runs.start"), ("start the run", True), ("follow the run", None),
                             ("read the run's final images", "jobs.list"), ("read the run's final images", True),
                             ("read the run's outputs", "runs.outputs"), ("read the run's outputs", True)]
    result = dict(events)["result"]
    run = client.call("runs.get", slug="alpha", run_id=result["run_id"])
    assert run["status"] == "done" and result["status"] == "done" and result["jobs"] == {"done": 2}
    assert not result["partial"]
    jobs = client.call("jobs.list", slug="alpha", run_id=run["id"])["items"]
    assert result["finals"] == [{"job_key": j["job_key"], "final_asset_id": j["final_asset_id"]} for j in jobs]
    assert all(f["final_asset_id"] for f in result["finals"])
    assert result["outputs"]["contact_sheet_asset_id"] == client.call(
        "runs.outputs", slug="alpha", run_id=run["id"])["contact_sheet_asset_id"]
    # The run was started like any client's: its audit row, and its shots and options as asked.
    audit = [e for e in client.call("audit.list", slug="alpha", limit=500)["items"]
             if e["payload_json"].get("run_id") == run["id"]]
    assert audit, "runs.start wrote no audit row"
    snapshot = run["settings_snapshot_json"]
    assert [j["job_key"] for j in snapshot["jobs"]] == ["harbour", "hill"] and snapshot["seed"] == 7
    # The dispatch row names this agent and keeps the run id (what a restart resumes from).
    row = dispatch_row(app, made["id"])
    assert row["agent"] == "builtin" and row["worker_id"] == app.agent.worker_id
    assert row["state_json"] == {"run_id": run["id"]}
    # Every event row went out as a notification, in order, and each status change as agent.instruction.status.
    assert app.events.drain()
    sent = [p["event_id"] for n, p in seen if n == "agent.instruction.event" and p["instruction_id"] == made["id"]]
    assert sent == [e["id"] for e in client.call("agent.instructions.events", slug="alpha", instruction_id=made["id"],
                                                  limit=1000)["items"]]
    assert [p["status"] for n, p in seen if n == "agent.instruction.status" and p["instruction_id"] == made["id"]] \
        == ["draft", "queued", "running", "done"]


def test_a_run_of_known_shots_with_another_time_of_day(app, client, project):
    first = finished_run(app, client)
    made = create(client, "pipeline_run", {"shot_keys": ["hill"], "time_of_day": "night", "weather": "fog"}, QUICK)
    done = settle(app, client, made["id"])
    assert done["status"] == "done"
    run = client.call("runs.get", slug="alpha", run_id=dict(trail(client, made["id"]))["result"]["run_id"])
    assert run["id"] != first["id"]
    (shot,) = [j["shot"] for j in run["settings_snapshot_json"]["jobs"]]
    assert (shot["job_key"], shot["scene"], shot["time_of_day"], shot["weather"]) == (
        "hill", "a windy hill", "night", "fog")


def test_a_run_over_the_budget_goes_ahead_once_a_user_confirmed_it(app, client, project):
    client.call("providers.configure", slug="alpha", provider_code="preview", config={"pricing": {"usd_per_image": 0.5}})
    client.call("projects.update", slug="alpha", settings_json={"budget_usd": 0.6})
    made = create(client, "pipeline_run", {"shots": SHOTS}, QUICK)
    assert made["status"] == "draft" and made["requires_confirmation"]
    assert "budget" in made["confirmation_reasons"][0]
    client.call("agent.instructions.confirm", slug="alpha", instruction_id=made["id"])
    done = settle(app, client, made["id"])
    assert done["status"] == "done", trail(client, made["id"])
    run = client.call("runs.get", slug="alpha", run_id=dict(trail(client, made["id"]))["result"]["run_id"])
    assert run["settings_snapshot_json"]["budget_confirmed"] is True and run["jobs"] == {"done": 2}


def test_a_failing_command_fails_the_instruction_with_its_typed_error(app, client, project):
    made = create(client, "pipeline_run", {"shots": SHOTS}, {**QUICK, "provider": "nope"})
    failed = settle(app, client, made["id"])
    assert failed["status"] == "failed"
    events = trail(client, made["id"])
    check_trail(events, "failed")
    error = dict(events)["error"]
    assert error["name"] == "invalid_params" and error["code"] == InvalidParams.code
    assert "unknown provider 'nope'" in error["message"] and error["details"]["errors"][0]["loc"] == ["provider"]
    assert steps(events) == [("start the run", "runs.start"), ("start the run", False)]
    assert [p for t, p in events if t == "log"][-1]["error"]["name"] == "invalid_params"
    assert [p for t, p in events if t == "status_change"][-1]["reason"] == error["message"]
    assert client.call("runs.list", slug="alpha")["items"] == []  # nothing was started


def test_an_unknown_agent_setting_fails_the_instruction(app, client, project):
    client.call("projects.update", slug="alpha", settings_json={"copilot": {"agent": "robot"}})
    made = create(client, "custom", {"action": "export_project"})
    failed = settle(app, client, made["id"])
    error = dict(trail(client, made["id"]))["error"]
    assert failed["status"] == "failed" and error["name"] == "invalid_params" and error["details"]["agent"] == "robot"
    assert client.call("exports.list", slug="alpha")["items"] == []


# --- the queue ---


def test_the_queue_runs_the_lowest_priority_number_first_then_the_oldest(app, client, project, gated):
    blocker = create(client, "pipeline_run", {"shots": SHOTS[:1]}, {**QUICK, "provider": "gated"})
    wait_for(lambda: (dispatch_row(app, blocker["id"]) or {}).get("state_json", {}).get("run_id"),
             what="the first instruction's run")
    order = [(300, "a"), (100, "b"), (200, "c"), (100, "d")]
    made = {name: create(client, "custom", {"action": "export_project"}, priority=priority)
            for priority, name in order}
    assert all(m["status"] == "queued" for m in made.values())  # the project's drain is busy with the run
    GATE.set()
    for name in made:
        assert settle(app, client, made[name]["id"])["status"] == "done"
    started = sorted(made, key=lambda n: client.call("agent.instructions.get", slug="alpha",
                                                     instruction_id=made[n]["id"])["started_at"])
    assert started == ["b", "d", "c", "a"]
    assert client.call("agent.instructions.get", slug="alpha", instruction_id=blocker["id"])["status"] == "done"


def test_canceling_a_running_pipeline_run_cancels_its_run(app, client, project, gated, seen):
    made = create(client, "pipeline_run", {"shots": SHOTS}, {**QUICK, "provider": "gated"})
    run_id = wait_for(lambda: (dispatch_row(app, made["id"]) or {}).get("state_json", {}).get("run_id"),
                      what="the instruction's run")
    wait_for(lambda: client.call("runs.get", slug="alpha", run_id=run_id)["status"] == "running",
             what="the run to start")
    out = client.call("agent.instructions.cancel", slug="alpha", instruction_id=made["id"], reason="changed my mind")
    assert out["status"] == "canceled"
    assert app.agent.wait_idle(WAIT_S) and app.runner.wait_idle(WAIT_S)
    run = client.call("runs.get", slug="alpha", run_id=run_id)
    assert run["status"] == "failed" and run["jobs"] == {"failed": 2}  # no picture was let through the gate
    jobs = client.call("jobs.list", slug="alpha", run_id=run_id)["items"]
    assert all(j["meta_json"].get("canceled") for j in jobs)
    events = trail(client, made["id"])
    assert moves(events)[-1] == ("running", "canceled") and events[-1][0] == "status_change"
    assert events[-1][1]["reason"] == "changed my mind"
    assert "result" not in dict(events) and "error" not in dict(events)
    assert client.call("agent.instructions.get", slug="alpha", instruction_id=made["id"])["status"] == "canceled"


def test_canceling_a_queued_instruction_means_it_never_runs(app, client, project, gated):
    blocker = create(client, "pipeline_run", {"shots": SHOTS[:1]}, {**QUICK, "provider": "gated"})
    wait_for(lambda: (dispatch_row(app, blocker["id"]) or {}).get("state_json", {}).get("run_id"),
             what="the first instruction's run")
    waiting = create(client, "custom", {"action": "export_project"})
    client.call("agent.instructions.cancel", slug="alpha", instruction_id=waiting["id"])
    GATE.set()
    assert settle(app, client, blocker["id"])["status"] == "done"
    assert client.call("agent.instructions.get", slug="alpha", instruction_id=waiting["id"])["started_at"] is None
    assert dispatch_row(app, waiting["id"]) is None and client.call("exports.list", slug="alpha")["items"] == []


# --- qa_check ---


def test_a_qa_check_of_a_run_checks_each_final_image(app, client, project):
    run = finished_run(app, client)
    made = create(client, "qa_check", {"run_id": run["id"]}, {"size_check": "none"})
    done = settle(app, client, made["id"])
    assert done["status"] == "done"
    events = trail(client, made["id"])
    check_trail(events, "done")
    result = dict(events)["result"]
    finals = [j["final_asset_id"] for j in client.call("jobs.list", slug="alpha", run_id=run["id"])["items"]]
    assert [r["asset_id"] for r in result["reports"]] == finals and result["run_id"] == run["id"]
    for report in result["reports"]:
        (stored,) = [r for r in client.call("quality.list", slug="alpha", asset_id=report["asset_id"],
                                            limit=100)["items"] if r["id"] == report["report_id"]]
        assert stored["summary_json"]["passed"] == report["passed"] and stored["run_id"] is None
    assert result["passed"] + result["failed"] == 2 == len(result["reports"])
    assert [s for s in steps(events) if s[1] == "quality.check"] == [("check image 1 of 2", "quality.check"),
                                                                    ("check image 2 of 2", "quality.check")]


def test_a_qa_check_waits_for_a_run_that_has_not_ended(app, client, project, gated):
    run = client.call("runs.start", slug="alpha", shots=SHOTS[:1], provider="gated", **QUICK)
    made = create(client, "qa_check", {"run_id": run["id"]}, {"require_transparency": False})
    wait_for(lambda: any(p.get("step") == "wait for the run to end" for t, p in trail(client, made["id"])),
             what="the agent to wait for the run")
    assert client.call("agent.instructions.get", slug="alpha", instruction_id=made["id"])["status"] == "running"
    assert dispatch_row(app, made["id"])["state_json"]["run_id"] == run["id"]
    GATE.set()
    done = settle(app, client, made["id"])
    assert done["status"] == "done"
    assert client.call("runs.get", slug="alpha", run_id=run["id"])["status"] == "done"
    assert len(dict(trail(client, made["id"]))["result"]["reports"]) == 1


def test_a_qa_check_of_assets_and_a_canceled_wait_leaves_the_run_alone(app, client, project, gated):
    run = client.call("runs.start", slug="alpha", shots=SHOTS[:1], provider="gated", **QUICK)
    made = create(client, "qa_check", {"run_id": run["id"]})
    wait_for(lambda: any(p.get("step") == "wait for the run to end" for t, p in trail(client, made["id"])),
             what="the agent to wait for the run")
    client.call("agent.instructions.cancel", slug="alpha", instruction_id=made["id"])
    assert app.agent.wait_idle(WAIT_S)
    assert client.call("runs.get", slug="alpha", run_id=run["id"])["status"] == "running"  # not its run to cancel
    GATE.set()
    assert app.runner.wait_idle(WAIT_S)
    finals = [j["final_asset_id"] for j in client.call("jobs.list", slug="alpha", run_id=run["id"])["items"]]
    made = create(client, "qa_check", {"asset_ids": finals})
    done = settle(app, client, made["id"])
    assert done["status"] == "done" and [r["asset_id"] for r in dict(trail(client, made["id"]))["result"]["reports"]] \
        == finals


# --- asset_edit ---


def test_asset_edits_make_derived_assets(app, client, project):
    run = finished_run(app, client)
    final = client.call("jobs.list", slug="alpha", run_id=run["id"])["items"][0]["final_asset_id"]
    cases = [({"operation": "remove_background"}, {"engines": ["key"]}, "bg_removed"),
             ({"operation": "upscale", "factor": 2}, {"engine": "lanczos"}, "upscaled"),
             ({"operation": "color_correct"}, {}, "other")]
    for inputs, execution, kind in cases:
        made = create(client, "asset_edit", {"asset_id": final, **inputs}, execution)
        done = settle(app, client, made["id"])
        events = trail(client, made["id"])
        assert done["status"] == "done", events
        check_trail(events, "done")
        result = dict(events)["result"]
        asset = client.call("assets.get", slug="alpha", asset_id=result["asset_id"])
        assert asset["kind"] == kind and result["source_asset_id"] == final
        if inputs["operation"] == "upscale":
            source = client.call("assets.get", slug="alpha", asset_id=final)
            assert (asset["width"], asset["height"]) == (source["width"] * 2, source["height"] * 2)
            assert result["engine"] == "lanczos" and result["factor"] == 2
        if inputs["operation"] == "remove_background":
            assert result["engine"] == "key" and result["mask_asset_id"]


# --- custom ---


def test_export_select_candidate_and_delete_asset(app, client, project):
    made = create(client, "custom", {"action": "export_project", "format": "zip"})
    done = settle(app, client, made["id"])
    assert done["status"] == "done"
    export = dict(trail(client, made["id"]))["result"]["export"]
    assert export["format"] == "zip" and client.call("exports.get", slug="alpha", export_id=export["id"])["path"] \
        == export["path"]

    run = finished_run(app, client, candidates=2)
    job = client.call("jobs.list", slug="alpha", run_id=run["id"])["items"][0]
    other = 1 - job["selected_candidate_index"]
    made = create(client, "custom", {"action": "select_candidate", "run_id": run["id"], "job_key": job["job_key"],
                                     "candidate_index": other})
    assert made["status"] == "draft" and made["requires_confirmation"]  # it replaces the shot's final
    client.call("agent.instructions.confirm", slug="alpha", instruction_id=made["id"])
    done = settle(app, client, made["id"])
    assert done["status"] == "done", trail(client, made["id"])
    after = client.call("jobs.list", slug="alpha", run_id=run["id"])["items"][0]
    assert after["selected_candidate_index"] == other
    assert dict(trail(client, made["id"]))["result"]["final_asset_id"] == after["final_asset_id"]

    edit = create(client, "asset_edit", {"asset_id": after["final_asset_id"], "operation": "upscale", "factor": 2},
                  {"engine": "lanczos"})
    assert settle(app, client, edit["id"])["status"] == "done"
    upscaled = dict(trail(client, edit["id"]))["result"]["asset_id"]
    made = create(client, "custom", {"action": "delete_asset", "asset_id": upscaled})
    assert made["status"] == "draft"
    client.call("agent.instructions.confirm", slug="alpha", instruction_id=made["id"])
    done = settle(app, client, made["id"])
    assert done["status"] == "done", trail(client, made["id"])
    assert client.error("assets.get", slug="alpha", asset_id=upscaled).name == "not_found"
    # An asset in use (a shot's final) is refused by assets.delete: the instruction fails with that conflict.
    made = create(client, "custom", {"action": "delete_asset", "asset_id": after["final_asset_id"]})
    client.call("agent.instructions.confirm", slug="alpha", instruction_id=made["id"])
    failed = settle(app, client, made["id"])
    error = dict(trail(client, made["id"]))["error"]
    assert failed["status"] == "failed" and error["name"] == "conflict" and error["details"]["used_by"]
    assert client.call("assets.get", slug="alpha", asset_id=after["final_asset_id"])


def test_a_project_deleted_by_its_own_instruction(app, client, project, seen):
    client.call("projects.create", slug="beta", name="Beta")
    made = create(client, "custom", {"action": "delete_project"}, slug="beta")
    assert made["status"] == "draft" and made["requires_confirmation"]
    client.call("agent.instructions.confirm", slug="beta", instruction_id=made["id"])
    assert app.agent.wait_idle(WAIT_S)
    assert client.error("projects.get", slug="beta").name == "not_found"
    assert client.call("projects.get", slug="alpha")  # only its own project
    assert app.events.drain()
    mine = [(n, p) for n, p in seen if p.get("instruction_id") == made["id"]]
    assert [p["status"] for n, p in mine if n == "agent.instruction.status"] == ["draft", "queued", "running", "done"]
    logged = [p for n, p in mine if n == "agent.instruction.event" and p["event_type"] == "log"]
    assert logged[-1]["payload"]["step"] == "delete the project"
    ended = [p for n, p in mine if n == "agent.instruction.event" and p["event_type"] == "result"]
    assert ended[0]["persisted"] is False and ended[0]["payload"]["deleted_project"]["slug"] == "beta"
    deleted = [e for e in client.call("audit.list", limit=500)["items"] if e["event_code"] == "project.deleted"]
    assert [e["payload_json"]["slug"] for e in deleted] == ["beta"]


def test_a_failed_project_delete_leaves_the_instruction_failed_not_done(app, client, project, home):
    client.call("projects.create", slug="beta", name="Beta")
    app.settings.trash_dir.parent.mkdir(parents=True, exist_ok=True)
    app.settings.trash_dir.write_text("a file where the trash folder should be")  # projects.delete fails
    made = create(client, "custom", {"action": "delete_project"}, slug="beta")
    client.call("agent.instructions.confirm", slug="beta", instruction_id=made["id"])
    failed = settle(app, client, made["id"], slug="beta")
    assert failed["status"] == "failed"
    events = trail(client, made["id"], slug="beta")
    assert dict(events)["error"]["name"] == "internal_error" and moves(events)[-1] == ("running", "failed")
    assert (app.projects.open("beta").root / "project.db").is_file()


# --- storage_sync ---


@pytest.fixture
def mirror(client: Client, project: dict, s3_endpoint: str, monkeypatch):
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "iat-test", "AWS_SECRET_ACCESS_KEY": "iat-test-secret",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.session.Session(region_name="us-east-1", aws_access_key_id="iat-test",
                               aws_secret_access_key="iat-test-secret").client("s3", endpoint_url=s3_endpoint)
    bucket = f"iat-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    client.call("storage.set", slug="alpha", s3_enabled=True, s3_bucket=bucket, s3_prefix="studio/alpha",
                s3_region="us-east-1", s3_endpoint_url=s3_endpoint)
    return s3, bucket


def _keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


def test_storage_syncs_push_and_delete_remote_only_with_a_users_confirmation(app, client, mirror):
    s3, bucket = mirror
    root = app.projects.open("alpha").root
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / "note.txt").write_text("pushed by the agent")
    made = create(client, "storage_sync", {"direction": "push", "paths": ["results"]})
    done = settle(app, client, made["id"])
    assert done["status"] == "done", trail(client, made["id"])
    result = dict(trail(client, made["id"]))["result"]
    assert result["uploaded"] == 1 and result["deleted"] == 0 and "studio/alpha/results/note.txt" in _keys(s3, bucket)

    s3.put_object(Bucket=bucket, Key="studio/alpha/results/stale.txt", Body=b"only remote")
    made = create(client, "storage_sync", {"direction": "push", "paths": ["results"], "delete_remote": True},
                  {"dry_run": False})
    assert made["status"] == "draft" and made["requires_confirmation"]
    assert "studio/alpha/results/stale.txt" in _keys(s3, bucket)  # nothing ran before the confirmation
    client.call("agent.instructions.confirm", slug="alpha", instruction_id=made["id"])
    done = settle(app, client, made["id"])
    events = trail(client, made["id"])
    assert done["status"] == "done", events
    assert dict(events)["result"]["deleted"] == 1 and "studio/alpha/results/stale.txt" not in _keys(s3, bucket)
    (call,) = [p for t, p in events if t == "log" and p.get("method") == "storage.sync"]
    assert call["params"]["confirm_delete"] is True and call["params"]["delete_remote"] is True
