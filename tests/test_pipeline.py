"""The offline pipeline in process: planning and validation, a run whose rows, assets, links, reports and log tell
the whole story of every candidate, ranking and selection, the output guard, failures, cancel, a person's choice,
and a replay that reproduces every output byte for byte."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from iat.app import App
from iat.assets.store import abs_path
from iat.errors import ProviderError
from iat.imaging.pngtext import read_text
from iat.pipeline import ranking
from iat.providers.base import GenerateRequest, GenerateResult, encode_png
from iat.providers.preview import PreviewProvider

from support import Client, all_assets

WAIT_S = 240  # a loaded 2-core machine; the runner is waited for, never slept on

SHOTS = [
    {"job_key": "street", "scene": "a rainy city street at dusk", "characters": ["mira", "bolt"],
     "time_of_day": "dusk", "weather": "rain"},
    {"job_key": "market", "scene": "a market stall", "characters": ["mira"], "time_of_day": "day",
     "weather": "clear", "cutout": True},
]


class BlankWhenAsked(PreviewProvider):
    """The preview renderer, except that a scene saying 'blank' comes out as one flat colour (a planted defect)."""

    code = "blank_when_asked"

    def generate(self, request: GenerateRequest, account=None, *, cancel=None, timeout=None) -> GenerateResult:
        if "blank" in request.scene.text:
            image = Image.new("RGB", (request.width, request.height), (90, 90, 90))
            return GenerateResult(encode_png(image), request.seed or 0, "flat", request.width, request.height,
                                  {"units": 1, "cost_usd": 0})
        return super().generate(request, account, cancel=cancel)


class RefusesWhenAsked(PreviewProvider):
    """Refuses (as a vendor would) any scene that says 'forbidden'."""

    code = "refuses_when_asked"

    def generate(self, request: GenerateRequest, account=None, *, cancel=None, timeout=None) -> GenerateResult:
        if "forbidden" in request.scene.text:
            raise ProviderError("the provider refused this prompt", details={"reason": "content_policy"})
        return super().generate(request, account, cancel=cancel)


class Counting(PreviewProvider):
    code = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, request: GenerateRequest, account=None, *, cancel=None, timeout=None) -> GenerateResult:
        self.calls += 1
        return super().generate(request, account, cancel=cancel)


@pytest.fixture
def studio(client: Client, project: dict) -> Client:
    client.call("characters.create", slug="alpha", code="mira", name="Mira", identity_constraints_json={
        "appearance": "long light-blue hair, glasses", "outfit": "red dress", "palette": ["#c0392b", "#85c1e9"]})
    client.call("characters.create", slug="alpha", code="bolt", name="Bolt", identity_constraints_json={
        "appearance": "tall, top hat", "outfit": "teal coat", "palette": ["#16a085", "#ecf0f1"]})
    return client


def _run(app: App, client: Client, **params) -> dict:
    run = client.call("runs.start", slug="alpha", **params)
    assert run["status"] == "planned" and run["run_mode"] == "run"
    assert app.runner.wait_idle(WAIT_S), "the run did not finish"
    return client.call("runs.get", slug="alpha", run_id=run["id"])


def _outputs(client: Client, run_id: str) -> dict[tuple, str]:
    """(job_key, candidate index, step) -> sha256 of every image a run made."""
    assets = all_assets(client)
    jobs = {j["id"]: j["job_key"] for j in client.call("jobs.list", slug="alpha", run_id=run_id)["items"]}
    out = {}
    for cand in client.call("candidates.list", slug="alpha", run_id=run_id)["items"]:
        for made in cand["meta_json"].get("assets", []):
            out[(jobs[cand["job_id"]], cand["candidate_index"], made["step"])] = assets[made["asset_id"]]["sha256"]
    return out


# --- planning and validation ---


def test_plan_renders_prompts_and_estimates_without_calling_the_provider(app: App, studio: Client):
    counting = Counting()
    app.providers.register("counting", counting)
    planned = studio.call("runs.plan", slug="alpha", shots=SHOTS, candidates=3, provider="counting")
    assert planned["run"]["run_mode"] == "dry" and planned["run"]["status"] == "planned"
    assert counting.calls == 0
    assert planned["estimate"] == {"units": 2 * 3 * 3, "cost_usd": 0.0, "currency": "USD"}
    street = next(j for j in planned["jobs"] if j["job_key"] == "street")
    assert "Mira (long light-blue hair, glasses; wearing red dress)" in street["prompts"]["style_lock"]
    assert "dusk" in street["prompts"]["light_time"] and "rain" in street["prompts"]["weather_effects"]
    assert len(set(street["seeds"])) == 3
    snapshot = planned["run"]["settings_snapshot_json"]
    assert snapshot["origin_run_id"] == planned["run"]["id"] and snapshot["provider"] == "counting"
    assert [c["code"] for c in snapshot["characters"]] == ["bolt", "mira"]
    assert not app.runner.has(planned["run"]["id"])


BAD_REQUESTS = [
    ({"shots": [{**SHOTS[0], "characters": ["nobody"]}]}, "nobody"),
    ({"shots": SHOTS, "provider": "no_such_provider"}, "no_such_provider"),
    ({"shots": SHOTS, "stages": ["style_lock", "sparkles"]}, "stages"),
    ({"shots": SHOTS, "stages": ["light_time", "style_lock"]}, "start with style_lock"),
    ({"shots": [SHOTS[0], {**SHOTS[1], "job_key": "street"}]}, "duplicate job_key"),
    ({"shots": []}, "shots"),
    ({"shots": SHOTS, "candidates": 0}, "candidates"),
    ({"shots": SHOTS, "candidates": 17}, "candidates"),
    ({"shots_csv": "job_key,scene,time_of_day\na,one,day\nb,two,noon\n"}, "line 3"),
    ({"shots_csv": "job_key,scene\na,\"unterminated\n"}, "line"),
    ({"shots_csv": "job_key,scenery\na,b\n"}, "scenery"),
    ({"shots_csv": "job_key,scene,cutout\na,b,perhaps\n"}, "line 2"),
    ({"shots": SHOTS, "shots_csv": "job_key,scene\na,b\n"}, "not both"),
    ({"shots": SHOTS, "background_engines": ["lanczos"]}, "lanczos"),
    ({"shots": [{**SHOTS[0], "scene": "a\x01b"}]}, "scene"),
    # Neither form, or both null: the schema's oneOf says the same.
    ({}, "neither was given"),
    ({"shots": None, "shots_csv": None}, "neither was given"),
    # JSON types as the schema states them: no coercion of 0, "yes", "4" or 1.
    ({"shots": [{**SHOTS[0], "cutout": 0}]}, "cutout"),
    ({"shots": [{**SHOTS[0], "cutout": "yes"}]}, "cutout"),
    ({"shots": SHOTS, "candidates": "4"}, "candidates"),
    ({"shots": SHOTS, "seed": "7"}, "seed"),
    ({"shots": SHOTS, "color_correct": 1}, "color_correct"),
    # Character codes have the characters' pattern and come once per shot (uniqueItems).
    ({"shots": [{**SHOTS[0], "characters": ["Mira"]}]}, "characters"),
    ({"shots": [{**SHOTS[0], "characters": ["mira", "mira"]}]}, "named twice"),
]


@pytest.mark.parametrize("params,expected", BAD_REQUESTS, ids=[e for _, e in BAD_REQUESTS])
def test_a_bad_shot_list_is_refused_whole_and_writes_nothing(app: App, studio: Client, params, expected):
    before = studio.call("audit.list", slug="alpha", limit=500)["items"]
    for method in ("runs.plan", "runs.start"):
        err = studio.error(method, slug="alpha", **params)
        assert err.name == "invalid_params", (method, err.message)
        assert expected in err.message + json.dumps(err.details), (expected, err.message, err.details)
    assert studio.call("runs.list", slug="alpha")["items"] == []
    assert studio.call("audit.list", slug="alpha", limit=500)["items"] == before


def test_numbers_and_nulls_are_read_as_the_schema_reads_them(app: App, studio: Client):
    # 2.0 is a JSON Schema integer; a null optional field is the same as leaving it out.
    planned = studio.call("runs.plan", slug="alpha", shots=SHOTS, shots_csv=None, candidates=2.0, seed=7.0,
                          stages=None, upscale_factor=None)
    assert planned["run"]["settings_snapshot_json"]["candidates"] == 2
    assert planned["run"]["settings_snapshot_json"]["seed"] == 7


def test_csv_shot_list_is_read_with_its_columns(app: App, studio: Client):
    csv_text = ("job_key,scene,characters,time_of_day,weather,cutout\n"
                "one,a quiet room,mira;bolt,night,fog,no\n"
                "\n"
                "two,a field,mira,dawn,snow,yes\n")
    planned = studio.call("runs.plan", slug="alpha", shots_csv=csv_text, candidates=1)
    shots = [j["shot"] for j in planned["run"]["settings_snapshot_json"]["jobs"]]
    assert shots == [
        {"job_key": "one", "scene": "a quiet room", "characters": ["mira", "bolt"], "time_of_day": "night",
         "weather": "fog", "cutout": False},
        {"job_key": "two", "scene": "a field", "characters": ["mira"], "time_of_day": "dawn", "weather": "snow",
         "cutout": True}]


# --- a run tells its whole story ---


def test_a_run_records_every_candidate_its_lineage_reports_and_log(app: App, studio: Client):
    events: list[tuple[str, dict]] = []
    app.events.subscribe(lambda name, payload: events.append((name, payload)))
    run = _run(app, studio, shots=SHOTS, candidates=3, upscale_factor=2, seed=11)
    assert run["status"] == "done" and run["jobs"] == {"done": 2}
    assert run["started_at"] and run["finished_at"]
    assets = all_assets(studio)
    jobs = studio.call("jobs.list", slug="alpha", run_id=run["id"])["items"]
    assert [j["job_key"] for j in jobs] == ["street", "market"]
    cands = studio.call("candidates.list", slug="alpha", run_id=run["id"])["items"]
    assert len(cands) == 6
    for job in jobs:
        mine = [c for c in cands if c["job_id"] == job["id"]]
        assert sorted(c["candidate_index"] for c in mine) == [0, 1, 2]
        seeds = run["settings_snapshot_json"]["jobs"][jobs.index(job)]["seeds"]
        for cand in mine:
            steps = [a["step"] for a in cand["meta_json"]["assets"]]
            cutout = job["job_key"] == "market"
            assert steps == ["style_lock", "light_time", "weather_effects"] + (["cutout"] if cutout else []) + \
                ["color", "upscale"]
            assert cand["meta_json"]["seed"] == seeds[cand["candidate_index"]]
            ids = [a["asset_id"] for a in cand["meta_json"]["assets"]]
            assert cand["output_asset_id"] == ids[2] and cand["final_asset_id"] == ids[-1]
            final = assets[cand["final_asset_id"]]
            assert final["kind"] == "final" and (final["width"], final["height"]) == (2 * 768, 2 * 512)
            if cutout:
                assert assets[ids[3]]["kind"] == "bg_removed"
            # Lineage: the final image descends, one derived_from step at a time, from the style lock output.
            chain = studio.call("assets.lineage", slug="alpha", asset_id=cand["final_asset_id"],
                                direction="ancestors")
            assert {n["id"] for n in chain["nodes"]} >= set(ids[:-1])
            assert all(e["link_type"] == "derived_from" for e in chain["edges"])
            # The PNG carries its recipe.
            text = read_text(abs_path(Path(studio.call("projects.get", slug="alpha")["root_dir"]),
                                      assets[ids[0]]["storage_uri"]).read_bytes())
            assert text["iat:run"] == run["id"] and text["iat:job"] == job["job_key"]
            assert text["iat:candidate"] == str(cand["candidate_index"]) and text["iat:stage"] == "style_lock"
            assert text["iat:prompt"] == job["meta_json"]["prompts"]["style_lock"]
            report = cand["report"]
            assert report and {c["name"] for c in report["checks"]} >= {"readable", "size", "blank", "chroma",
                                                                        "exposure", "contrast"}
            assert cand["rank_hard_failures"] == report["hard_failures"]
            assert cand["rank_soft_warnings"] == report["soft_warnings"]
        # The chosen candidate is the best by the documented ranking.
        ranked = [ranking.Ranked(c["candidate_index"], c["rank_hard_failures"], c["rank_soft_warnings"],
                                 c["rank_avg_chroma_exceed"], c["meta_json"]["quality_score"]) for c in mine]
        best = ranking.choose(ranked)
        assert job["selected_candidate_index"] == best.index
        assert job["final_asset_id"] == next(c["final_asset_id"] for c in mine if c["candidate_index"] == best.index)
        assert job["meta_json"]["ranking"] == [r.index for r in ranking.rank(ranked)]
    # The run's log, contact sheet and results folder.
    finished = next(p for n, p in events if n == "run.finished" and p["run_id"] == run["id"])
    log_lines = [json.loads(line) for line in Path(finished["run_log_path"]).read_text().splitlines()]
    assert [line["event"] for line in log_lines][0] == "started" and log_lines[-1]["event"] == "finished"
    assert sum(1 for line in log_lines if line["event"] == "candidate") == 6
    assert assets[finished["run_log_asset_id"]]["kind"] == "run_log"
    html = Path(finished["contact_sheet_html_path"]).read_text()
    assert "http://" not in html and "https://" not in html and html.count("data:image") == 6 * 4  # three stages and the final per candidate
    results = Path(finished["results_dir"])
    for job in jobs:
        assert (results / job["job_key"] / "final.png").read_bytes() == \
            abs_path(results.parents[2], assets[job["final_asset_id"]]["storage_uri"]).read_bytes()
        sidecar = json.loads((results / job["job_key"] / "c0-style_lock.json").read_text())
        assert sidecar["run_id"] == run["id"] and sidecar["job_id"] == job["id"] and sidecar["candidate_index"] == 0
    # Progress reached subscribers: every stage of every candidate, then each job and the run.
    stages = {(p["job_key"], p["candidate_index"], p["stage"]) for n, p in events
              if n == "run.progress" and "stage" in p}
    assert ("market", 2, "cutout") in stages and ("street", 0, "weather_effects") in stages
    assert [p["job_key"] for n, p in events if n == "job.finished"] == ["street", "market"]


def test_replay_reproduces_every_output_byte_for_byte(app: App, studio: Client):
    first = _run(app, studio, shots=SHOTS, candidates=2, seed=5)
    replay = studio.call("runs.replay", slug="alpha", run_id=first["id"])
    assert replay["id"] != first["id"]
    assert app.runner.wait_idle(WAIT_S)
    assert studio.call("runs.get", slug="alpha", run_id=replay["id"])["status"] == "done"
    original, again = _outputs(studio, first["id"]), _outputs(studio, replay["id"])
    assert len(original) == 2 * 2 * 4 + 2  # 4 images per candidate, one more (the cutout) on the market shot
    assert again == original
    # The replay stands on the snapshot alone: changing the project's knowledge afterwards changes nothing.
    studio.call("characters.update", slug="alpha",
                character_id=studio.call("characters.list", slug="alpha")["items"][0]["id"], name="Renamed")
    third = studio.call("runs.replay", slug="alpha", run_id=first["id"])
    assert app.runner.wait_idle(WAIT_S)
    assert _outputs(studio, third["id"]) == original


def test_the_output_guard_fails_a_job_whose_candidates_all_fail(app: App, studio: Client):
    app.providers.register("blank_when_asked", BlankWhenAsked())
    shots = [SHOTS[0], {"job_key": "void", "scene": "a blank wall", "characters": [], "time_of_day": "day"}]
    run = _run(app, studio, shots=shots, candidates=2, provider="blank_when_asked")
    assert run["status"] == "partial" and run["jobs"] == {"done": 1, "failed_output_guard": 1}
    void = next(j for j in studio.call("jobs.list", slug="alpha", run_id=run["id"])["items"] if j["job_key"] == "void")
    assert void["selected_candidate_index"] is None and void["final_asset_id"] is None
    for cand in studio.call("candidates.list", slug="alpha", job_id=void["id"])["items"]:
        assert cand["status"] == "failed_output_guard" and cand["rank_hard_failures"] >= 1
        failed = {c["name"] for c in cand["report"]["checks"] if not c["passed"] and c["severity"] == "hard"}
        assert {"blank", "uniform"} <= failed


def test_a_provider_failure_fails_its_candidates_and_the_run_goes_on(app: App, studio: Client):
    app.providers.register("refuses_when_asked", RefusesWhenAsked())
    shots = [{"job_key": "bad", "scene": "something forbidden", "characters": []}, SHOTS[0]]
    run = _run(app, studio, shots=shots, candidates=2, provider="refuses_when_asked")
    assert run["status"] == "partial" and run["jobs"] == {"failed": 1, "done": 1}
    bad = next(j for j in studio.call("jobs.list", slug="alpha", run_id=run["id"])["items"] if j["job_key"] == "bad")
    cands = studio.call("candidates.list", slug="alpha", job_id=bad["id"])["items"]
    assert [c["status"] for c in cands] == ["failed", "failed"]
    assert cands[0]["meta_json"]["error"]["name"] == "provider_error"
    assert cands[0]["output_asset_id"] is None


def test_cancel_ends_a_run_with_the_jobs_left_failed(app: App, studio: Client):
    shots = [{"job_key": f"s{i}", "scene": f"scene {i}", "characters": ["mira"]} for i in range(6)]
    started = threading.Event()
    app.events.subscribe(lambda name, payload: started.set() if name == "candidate.finished" else None)
    run = studio.call("runs.start", slug="alpha", shots=shots, candidates=2)
    assert started.wait(WAIT_S)
    studio.call("runs.cancel", slug="alpha", run_id=run["id"])
    assert app.runner.wait_idle(WAIT_S)
    got = studio.call("runs.get", slug="alpha", run_id=run["id"])
    assert got["status"] in ("partial", "failed") and got["finished_at"]
    jobs = studio.call("jobs.list", slug="alpha", run_id=run["id"])["items"]
    left = [j for j in jobs if j["status"] == "failed"]
    assert left and all(j["meta_json"]["canceled"] for j in left)
    assert all(j["status"] in ("done", "failed") for j in jobs)
    assert studio.error("runs.cancel", slug="alpha", run_id=run["id"]).name == "conflict"
    codes = [e["event_code"] for e in studio.call("audit.list", slug="alpha", limit=500)["items"]]
    assert "run.canceled" in codes


def test_a_person_can_choose_another_candidate_with_a_reason(app: App, studio: Client):
    run = _run(app, studio, shots=SHOTS[:1], candidates=3)
    job = studio.call("jobs.list", slug="alpha", run_id=run["id"])["items"][0]
    other = next(c for c in studio.call("candidates.list", slug="alpha", job_id=job["id"])["items"]
                 if c["candidate_index"] != job["selected_candidate_index"])
    chosen = studio.call("candidates.select", slug="alpha", candidate_id=other["id"], reason="better pose")
    assert chosen["job"]["selected_candidate_index"] == other["candidate_index"]
    assert chosen["job"]["final_asset_id"] == other["final_asset_id"]
    assert chosen["job"]["meta_json"]["human_choice"]["previous"] == job["selected_candidate_index"]
    reports = studio.call("quality.list", slug="alpha", run_id=run["id"], report_type="human_review")["items"]
    assert [r["summary_json"]["reason"] for r in reports] == ["better pose"]
    assert reports[0]["candidate_id"] == other["id"] and reports[0]["id"] == chosen["report_id"]
    assert studio.error("candidates.select", slug="alpha", candidate_id=other["id"], reason="").name == \
        "invalid_params"


def test_a_deleted_project_stops_its_run(app: App, studio: Client):
    shots = [{"job_key": f"s{i}", "scene": f"scene {i}", "characters": ["mira"]} for i in range(6)]
    started = threading.Event()
    app.events.subscribe(lambda name, payload: started.set() if name == "candidate.finished" else None)
    studio.call("runs.start", slug="alpha", shots=shots, candidates=2)
    assert started.wait(WAIT_S)
    deleted = studio.call("projects.delete", slug="alpha", confirm=True)
    assert app.runner.wait_idle(WAIT_S)
    assert studio.error("runs.list", slug="alpha").name == "not_found"
    # The run let go of the project at once: ended in its own database (in the trash), without a contact sheet.
    import sqlite3

    with sqlite3.connect(Path(deleted["trash_dir"], "project.db")) as conn:
        (status,) = conn.execute("SELECT status FROM runs").fetchone()
        sheets = conn.execute("SELECT count(*) FROM assets WHERE kind = 'other'").fetchone()[0]
        left = conn.execute("SELECT count(*) FROM run_jobs WHERE status IN ('planned', 'running')").fetchone()[0]
    assert status in ("partial", "failed") and sheets == 0 and left == 0



def test_deleting_a_project_drops_its_queued_run_without_waiting_for_another_projects_run(app: App, studio: Client):
    studio.call("projects.create", slug="other", name="Other")
    started = threading.Event()
    app.events.subscribe(lambda name, payload: started.set() if name == "candidate.finished" else None)
    long_run = studio.call("runs.start", slug="other", candidates=3,
                           shots=[{"job_key": f"s{i}", "scene": f"scene {i}"} for i in range(8)])
    assert started.wait(WAIT_S)
    queued = studio.call("runs.start", slug="alpha", shots=SHOTS[:1], candidates=1)
    assert app.runner.has(queued["id"])
    studio.call("projects.delete", slug="alpha", confirm=True)
    # The deletion did not wait for the other project's run to end (the runner takes one run at a time).
    assert app.runner.has(long_run["id"]) and not app.runner.has(queued["id"])
    assert app.runner.wait_idle(WAIT_S)
    assert studio.call("runs.get", slug="other", run_id=long_run["id"])["status"] == "done"
