"""Two REAL sidecar processes, each with its own home, on one studio project in PostgreSQL: a run started on A is
picked up by B without a restart and finished by both together with every candidate recorded once and every job
finished once; and again when B is killed with SIGKILL mid-run: A takes B's job over and finishes the run."""

from __future__ import annotations

import time

import pytest

from tests.protocol.conftest import SidecarProcess

pytestmark = [pytest.mark.postgres, pytest.mark.process]

SHOTS = [{"job_key": f"shot-{i:02d}", "scene": f"scene {i} on the pier"} for i in range(12)]
K = 2
RUN_WAIT_S = 300  # a loaded 2-core machine; polled, never slept on


@pytest.fixture
def pair(tmp_path, pg_database):
    env = {"IAT_STUDIO_DATABASE_URL": pg_database, "IAT_CLAIM_LEASE_SECONDS": "3", "IAT_STUDIO_POLL_SECONDS": "0.3"}
    procs = [SidecarProcess(("stdio",), tmp_path / name, env) for name in ("ws-a", "ws-b")]
    yield procs
    for proc in procs:
        proc.cleanup()


def _page(client, method: str, params: dict) -> list[dict]:
    items, cursor = [], None
    while True:
        page = client.call(method, {**params, "limit": 500, **({"cursor": cursor} if cursor else {})})
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def _job_finishes(client, slug: str, run_id: str) -> list[dict]:
    return [e["payload_json"] for e in _page(client, "audit.list", {"slug": slug})
            if e["event_code"] == "job.finished" and e["payload_json"]["run_id"] == run_id]


def _wait_ended(client, slug: str, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_WAIT_S
    while True:
        run = client.call("runs.get", {"slug": slug, "run_id": run_id})
        if run["status"] not in ("planned", "running"):
            return run
        assert time.monotonic() < deadline, f"run still {run['status']}: {run['jobs']}"
        time.sleep(0.2)


def _start(a, b, slug: str):
    ca, cb = a.connect("stdio"), b.connect("stdio")
    ca.call("projects.create", {"slug": slug, "name": slug.title(), "backend": "postgres"})
    cb.call("projects.attach", {"slug": slug})
    run = ca.call("runs.start", {"slug": slug, "shots": SHOTS, "candidates": K, "seed": 5})
    return ca, cb, run


def _check_once(client, slug: str, run_id: str) -> list[dict]:
    """Every candidate recorded once, every job finished once, the run finished once, no stray asset rows."""
    cands = client.call("candidates.list", {"slug": slug, "run_id": run_id})["items"]
    per_job: dict[str, list[int]] = {}
    for cand in cands:
        per_job.setdefault(cand["job_id"], []).append(cand["candidate_index"])
    assert len(per_job) == len(SHOTS) and all(sorted(v) == list(range(K)) for v in per_job.values()), per_job
    finishes = _job_finishes(client, slug, run_id)
    assert sorted(f["job_id"] for f in finishes) == sorted(per_job)  # each job finished exactly once
    ended = [e for e in _page(client, "audit.list", {"slug": slug})
             if e["event_code"] in ("run.finished", "run.canceled") and e["payload_json"]["run_id"] == run_id]
    assert len(ended) == 1
    made = {a["asset_id"] for c in cands for a in c["meta_json"]["assets"] + c["meta_json"].get("masks", [])}
    assets = [a for a in _page(client, "assets.list", {"slug": slug}) if a["kind"] not in ("run_log", "other")]
    assert sorted(a["id"] for a in assets) == sorted(made)  # nothing made twice, nothing left without its row
    return finishes


def test_two_sidecars_finish_one_run_together(pair):
    a, b = pair
    ca, cb, run = _start(a, b, "together")
    ended = _wait_ended(ca, "together", run["id"])
    assert ended["status"] == "done" and ended["jobs"] == {"done": len(SHOTS)}
    finishes = _check_once(cb, "together", run["id"])
    pids = {int(f["worker_id"].split("/")[1]) for f in finishes}
    assert pids == {a.pid, b.pid}, "both workstations did jobs"
    assert cb.call("runs.get", {"slug": "together", "run_id": run["id"]})["status"] == "done"


def test_a_killed_sidecars_jobs_are_taken_over(pair):
    a, b = pair
    ca, cb, run = _start(a, b, "killed")
    deadline = time.monotonic() + RUN_WAIT_S
    while not any(int(f["worker_id"].split("/")[1]) == b.pid for f in _job_finishes(ca, "killed", run["id"])):
        assert time.monotonic() < deadline, "B never finished a job"
        time.sleep(0.1)
    b.kill()  # SIGKILL, mid-run: B held a claim with candidates in flight
    ended = _wait_ended(ca, "killed", run["id"])
    assert ended["status"] == "done" and ended["jobs"] == {"done": len(SHOTS)}
    finishes = _check_once(ca, "killed", run["id"])
    by_pid = {int(f["worker_id"].split("/")[1]) for f in finishes}
    assert by_pid == {a.pid, b.pid}
    assert len(finishes) == len(SHOTS)
