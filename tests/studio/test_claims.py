"""Job claims (iat.pipeline.claims) on both engines, each side with its own store (its own connections and writer,
as two sidecars have): runners racing to claim never get the same job, an expired claim or one of a dead process
of this host is taken over, a live one is not, and a run is finished by one runner only."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from iat.app import App
from iat.clock import utcnow
from iat.db.store import Store
from iat.pipeline import claims, repo
from iat.settings import Settings
from tests.support import Client

JOBS = 24


@pytest.fixture(params=["sqlite", "postgres"])
def two_stores(request, tmp_path):
    """One project's database opened twice (two stores, as two sidecars open it) and a run of JOBS planned jobs."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database")
        a = App(Settings(home=tmp_path / "a", studio_database_url=url))
        b = App(Settings(home=tmp_path / "b", studio_database_url=url))
        Client(a).call("projects.create", slug="claims", name="Claims", backend="postgres")
        Client(b).call("projects.attach", slug="claims")
        apps = [a, b]
        stores = [a.projects.open("claims").store, b.projects.open("claims").store]
    else:
        a = App(Settings(home=tmp_path / "a"))
        Client(a).call("projects.create", slug="claims", name="Claims")
        apps = [a]
        handle = a.projects.open("claims")
        second = Store.open_sqlite(handle.root / "project.db", "project")
        stores = [handle.store, second]
    project_id = apps[0].projects.open("claims").id
    snapshot = {"jobs": [{"job_key": f"shot-{i:02d}", "shot": {}, "prompts": {"style_lock": f"p{i}"}}
                         for i in range(JOBS)]}
    run = stores[0].write(repo.create_run, project_id, {"run_mode": "run", "provider_code": "preview",
                                                        "settings_snapshot_json": snapshot}, [], None, utcnow())
    order = {job["job_key"]: i for i, job in enumerate(snapshot["jobs"])}
    yield stores, run["id"], order, project_id
    if request.param == "sqlite":
        stores[1].close()
    for app in apps:
        app.close()


def _job_keys(store: Store, run_id: str) -> dict[str, str]:
    return {j["id"]: j["job_key"] for j in store.read(repo.list_jobs, run_id)}


def test_racing_runners_never_get_the_same_job(two_stores):
    stores, run_id, order, _ = two_stores
    got: dict[str, list[str]] = {}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def runner(n: int) -> None:
        worker = f"test-host/{n}/w"  # another host's workers: only their leases count
        store = stores[n % 2]
        start.wait()
        while True:
            row = store.write(claims.claim_next, run_id, order, worker, 60, utcnow())
            if row is None:
                return
            with lock:
                got.setdefault(row["id"], []).append(worker)

    threads = [threading.Thread(target=runner, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == JOBS and all(len(w) == 1 for w in got.values()), got
    assert len({w[0] for w in got.values()}) > 1  # the work was shared
    rows = stores[1].read(lambda: list(claims.Claim.select().dicts()))
    assert sorted(r["job_id"] for r in rows) == sorted(got)
    assert all(r["purpose"] == "job" for r in rows)
    assert {j["status"] for j in stores[0].read(repo.list_jobs, run_id)} == {"running"}


def test_claims_follow_the_shot_list_order(two_stores):
    stores, run_id, order, _ = two_stores
    keys = _job_keys(stores[0], run_id)
    first = [keys[stores[i % 2].write(claims.claim_next, run_id, order, "h/1/a", 60, utcnow())["id"]]
             for i in range(3)]
    assert first == ["shot-00", "shot-01", "shot-02"]


def test_a_live_claim_is_left_and_an_expired_one_taken_over(two_stores):
    stores, run_id, order, _ = two_stores
    now = utcnow()
    only = {"shot-00": 0}  # look at the first job alone
    assert stores[0].write(claims.claim_next, run_id, only, "far-host/1/a", 3, now) is not None
    # Another runner while the lease lasts: nothing of it to take (the other jobs are outside `only`'s order
    # but still claimable, so ask for them explicitly by exhausting the run first).
    held = stores[1].write(claims.claim_next, run_id, order, "far-host/2/b", 3, now + timedelta(seconds=1))
    assert _job_keys(stores[0], run_id)[held["id"]] == "shot-01"
    # After the lease: the first job is free again and goes to the next runner asking, in shot-list order.
    later = now + timedelta(seconds=3.5)
    taken = stores[1].write(claims.claim_next, run_id, order, "far-host/3/c", 3, later)
    assert _job_keys(stores[0], run_id)[taken["id"]] == "shot-00"
    holder = stores[0].read(lambda: claims.Claim.get_by_id(taken["id"]).worker_id)
    assert holder == "far-host/3/c"
    # The first runner's heartbeat renews nothing of it any more: it has lost that claim.
    assert stores[0].write(claims.renew, run_id, "far-host/1/a", 3, later) == 0


def test_a_dead_local_process_claim_is_free_at_once(two_stores):
    stores, run_id, order, _ = two_stores
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{claims.HOST}/{gone.pid}/dead"
    alive = claims.new_worker_id()  # this process: alive
    now = utcnow()
    first = stores[0].write(claims.claim_next, run_id, {"shot-00": 0}, dead, 60, now)
    second = stores[0].write(claims.claim_next, run_id, {"shot-01": 0}, alive, 60, now)
    assert first is not None and second is not None
    taken = [stores[1].write(claims.claim_next, run_id, order, "other-host/9/z", 60, now) for _ in range(2)]
    keys = _job_keys(stores[0], run_id)
    # shot-00 (its holder is gone) is taken at once; shot-01 (held by a live process) is skipped.
    assert [keys[t["id"]] for t in taken] == ["shot-00", "shot-02"]


def test_the_run_is_finished_once(two_stores):
    stores, run_id, order, project_id = two_stores
    jobs = stores[0].read(repo.list_jobs, run_id)
    first = min(jobs, key=lambda j: order[j["job_key"]])["id"]
    stores[0].write(repo.start_run, project_id, run_id, utcnow())
    assert not stores[1].write(repo.start_run, project_id, run_id, utcnow())  # started once
    # A job still unfinished: nobody may finish the run.
    row = stores[0].write(claims.claim_next, run_id, order, "h/1/a", 60, utcnow())
    assert not stores[1].write(claims.claim_finish, run_id, first, "h/2/b", 60, utcnow())

    def finish_all() -> None:
        for job in repo.list_jobs(run_id):
            repo.update_job(job["id"], {"status": "done"})

    stores[0].write(finish_all)
    # The first runner still holds its (live) claim: the other waits for it.
    assert not stores[1].write(claims.claim_finish, run_id, first, "h/2/b", 60, utcnow())
    stores[0].write(claims.release, run_id, "h/1/a", row["id"])

    results: list[bool] = []
    barrier = threading.Barrier(2)

    def finisher(n: int) -> None:
        barrier.wait()
        results.append(stores[n].write(claims.claim_finish, run_id, first, f"h/{n}/f", 60, utcnow()))

    threads = [threading.Thread(target=finisher, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, True]
    ended = [stores[n].write(repo.end_run, project_id, run_id, "done", utcnow(), "run.finished", {})
             for n in range(2)]
    assert ended == [True, False]

    def finished_events() -> int:
        from iat.db.models import AuditEvent
        return AuditEvent.select().where(AuditEvent.event_code == "run.finished").count()

    assert stores[1].read(finished_events) == 1
    assert stores[0].read(repo.get_run, project_id, run_id)["status"] == "done"
