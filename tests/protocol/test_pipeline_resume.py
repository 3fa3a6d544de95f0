"""A run survives SIGKILL: killed mid-run, the sidecar started again on the same home finishes it with every job
done once, no duplicate candidates or assets, no orphan files, a log that says it resumed, and outputs byte for
byte equal to a replay's. Meanwhile system.ping never waits for the run. Against the real process."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

RUN_WAIT_S = 300  # a loaded 2-core machine; waited for by notification, never slept on
SHOTS = [{"job_key": f"shot-{i}", "scene": f"scene {i} by the sea", "characters": ["mira"],
          "time_of_day": ["dawn", "day", "dusk", "night"][i], "weather": ["fog", "clear", "rain", "snow"][i],
          "cutout": i == 1} for i in range(4)]
K = 3


def _count(client, method: str, run_id: str) -> int:
    return sum(1 for m in client.notifications if m.get("method") == method and m["params"].get("run_id") == run_id)


def _wait_finished(client, run_id: str) -> dict:
    return client.wait_notification("run.finished", lambda p: p.get("run_id") == run_id,
                                    timeout=RUN_WAIT_S)["params"]


def _outputs(client, slug: str, run_id: str) -> dict[tuple, str]:
    assets = {}
    cursor = None
    while True:
        page = client.call("assets.list", {"slug": slug, "limit": 500, **({"cursor": cursor} if cursor else {})})
        assets.update({a["id"]: a for a in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            break
    jobs = {j["id"]: j["job_key"] for j in client.call("jobs.list", {"slug": slug, "run_id": run_id})["items"]}
    out = {}
    for cand in client.call("candidates.list", {"slug": slug, "run_id": run_id})["items"]:
        for made in cand["meta_json"]["assets"]:
            out[(jobs[cand["job_id"]], cand["candidate_index"], made["step"])] = assets[made["asset_id"]]["sha256"]
    return out


def test_a_killed_run_resumes_and_finishes_with_nothing_lost_or_doubled(launch, proto, tmp_path):
    home = tmp_path / "home"
    first = launch("stdio", home=home)
    client = first.connect("stdio")
    slug = "resume"
    project = client.call("projects.create", {"slug": slug, "name": "Resume"})
    client.call("characters.create", {"slug": slug, "code": "mira", "name": "Mira"})
    run = client.call("runs.start", {"slug": slug, "shots": SHOTS, "candidates": K, "upscale_factor": 2, "seed": 9})
    deadline = time.monotonic() + RUN_WAIT_S
    while _count(client, "candidate.finished", run["id"]) < 4:
        assert time.monotonic() < deadline, "no progress before the kill"
        assert client.call("system.ping")["pong"] is True  # the run never blocks a ping
        time.sleep(0.05)
    first.kill()  # SIGKILL, mid-run: the runner had candidates in flight

    db = Path(project["root_dir"]) / "project.db"
    with sqlite3.connect(db) as conn:
        status = conn.execute("SELECT status FROM runs WHERE id = ?", (run["id"],)).fetchone()[0]
        made_before = conn.execute("SELECT count(*) FROM run_candidates").fetchone()[0]
    assert status == "running" and 4 <= made_before < len(SHOTS) * K

    second = launch("stdio", home=home)
    again = second.connect("stdio")
    finished = _wait_finished(again, run["id"])  # resumed by itself at start
    assert finished["status"] == "done"
    got = again.call("runs.get", {"slug": slug, "run_id": run["id"]})
    assert got["status"] == "done" and got["jobs"] == {"done": len(SHOTS)}

    # Every job once, every candidate once.
    cands = again.call("candidates.list", {"slug": slug, "run_id": run["id"]})["items"]
    per_job: dict[str, list[int]] = {}
    for cand in cands:
        per_job.setdefault(cand["job_id"], []).append(cand["candidate_index"])
    assert len(per_job) == len(SHOTS) and all(sorted(v) == list(range(K)) for v in per_job.values())
    # No duplicate assets: exactly the candidates' images and the run's three products.
    with sqlite3.connect(db) as conn:
        assets = conn.execute("SELECT id, storage_uri, kind FROM assets").fetchall()
        links = conn.execute("SELECT count(*) FROM asset_links").fetchone()[0]
        audit_finished = conn.execute("SELECT count(*) FROM audit_events WHERE event_code = 'run.finished'") \
            .fetchone()[0]
    # stages, the cut-out and its mask, colour, upscale
    per_candidate = {i: 3 + (2 if SHOTS[i]["cutout"] else 0) + 2 for i in range(len(SHOTS))}
    expected = sum(per_candidate.values()) * K
    assert len([a for a in assets if a[2] not in ("run_log", "other")]) == expected
    assert sorted(a[2] for a in assets if a[2] in ("run_log", "other")) == ["other", "other", "run_log"]
    assert links == expected - len(SHOTS) * K  # one link per image after each style lock (a mask's: mask_for)
    assert audit_finished == 1
    referenced = {a[1] for a in assets}
    on_disk = {str(p.relative_to(project["root_dir"])) for p in (Path(project["root_dir"]) / "assets").rglob("*")
               if p.is_file()}
    assert on_disk == referenced, f"orphans: {on_disk - referenced}, missing: {referenced - on_disk}"
    assert not (Path(project["root_dir"]) / "runs" / run["id"] / "work").exists()
    # The log tells what happened.
    log = [json.loads(line) for line in Path(finished["run_log_path"]).read_text().splitlines()]
    events = [line["event"] for line in log]
    assert events[0] == "started" and "resumed" in events and events[-1] == "finished"

    # What the resumed run made is what an uninterrupted run of the same recipe makes.
    replay = again.call("runs.replay", {"slug": slug, "run_id": run["id"]})
    assert _wait_finished(again, replay["id"])["status"] == "done"
    assert _outputs(again, slug, replay["id"]) == _outputs(again, slug, run["id"])
    assert second.stop() == 0
