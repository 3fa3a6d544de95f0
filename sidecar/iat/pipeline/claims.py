"""Claims on a run's jobs (table run_job_claims, project migration 0004): how several runners (two sidecars on one
app home, or workstations sharing a studio project on PostgreSQL) drain one run with each job worked on by one of
them at a time, and the run finished by exactly one.

A runner claims the next unfinished job nobody holds, in shot-list order, in one write transaction: on PostgreSQL
the job's row is locked with `FOR UPDATE SKIP LOCKED`, so a job another runner is claiming this instant is skipped
rather than waited for or taken twice; on SQLite the single writer (a `BEGIN IMMEDIATE` transaction, exclusive
across processes) serialises the claims. The claim row names the worker and a lease deadline; the runner renews
its leases while it works and drops the claim in the transaction that finishes the job. A claim is free again when
its lease ran out, or at once when its worker is a process on this host that is gone (a sidecar restarted after
SIGKILL resumes immediately, as it always did). Candidates already committed stay (unique (job_id,
candidate_index)), so a job taken over is completed, never redone.

When every job is finished and nobody else holds a live claim on the run, one runner takes the run's `finish`
claim (on its first job, with the same lease) and finishes it; the run's status moves from running once, guarded
in SQL (iat.pipeline.repo.end_run).

Lease deadlines come from each workstation's clock: a studio's machines are expected to keep NTP time, and the
lease (IAT_CLAIM_LEASE_SECONDS, 60 s) is far longer than the skew that leaves.

Every function here runs inside Store.read or Store.write (the models bound to the project's database).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from iat.db.migrations import dialect_of
from iat.db.models import PROJECT_MODELS, RunJob
from iat.lifecycle import pid_alive
from iat.pipeline.repo import FINISHED_JOB

Claim = next(m for m in PROJECT_MODELS if m._meta.table_name == "run_job_claims")

HOST = socket.gethostname()


def new_worker_id() -> str:
    """host/pid/random: the random part tells apart two runners of one process (two Apps in a test)."""
    return f"{HOST}/{os.getpid()}/{secrets.token_hex(4)}"


def _pid_gone(worker: str) -> bool:
    """A worker of this host whose process no longer exists (its claims are free at once)."""
    host, _, rest = worker.partition("/")
    pid_text = rest.partition("/")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    return pid_alive(int(pid_text)) is False  # unknown (Windows): the lease decides


def is_live(claim: dict, now: datetime) -> bool:
    return claim["expires_at"] > now and not _pid_gone(claim["worker_id"])


def _postgres() -> bool:
    return dialect_of(RunJob._meta.database) == "postgres"


def _claim_row(job_id: str) -> dict | None:
    """The claim on a job, locked on PostgreSQL so a renewal by its holder waits for this transaction (and then
    finds it lost the claim) instead of racing it."""
    query = Claim.select().where(Claim.job_id == job_id)
    if _postgres():
        query = query.for_update()
    return query.dicts().first()


def _take(job_id: str, run_id: str, worker: str, purpose: str, lease_s: float, now: datetime) -> bool:
    """Writes the claim unless someone else holds a live one. The caller holds the job row's lock (PostgreSQL)
    or the single writer (SQLite)."""
    current = _claim_row(job_id)
    expires = now + timedelta(seconds=lease_s)
    if current is None:
        Claim.insert(job_id=job_id, run_id=run_id, worker_id=worker, purpose=purpose, expires_at=expires,
                     created_at=now).execute()
        return True
    if current["worker_id"] != worker and is_live(current, now):
        return False
    Claim.update(worker_id=worker, purpose=purpose, expires_at=expires, created_at=now).where(
        Claim.job_id == job_id).execute()
    return True


def _lock_job(job_id: str, skip_locked: bool):
    query = RunJob.select().where(RunJob.id == job_id)
    if _postgres():
        query = query.for_update("FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE")
    return query.dicts().first()


def claim_next(run_id: str, order: dict[str, int], worker: str, lease_s: float, now: datetime) -> dict | None:
    """Claims the first unfinished job of the run (in `order`: job_key -> position) that nobody else holds;
    returns its row (status running from here), or None when every unfinished job is held by someone else."""
    claims = {c["job_id"]: c for c in Claim.select().where(Claim.run_id == run_id).dicts()}
    open_jobs = [j for j in RunJob.select(RunJob.id, RunJob.job_key).where(
        (RunJob.run_id == run_id) & RunJob.status.not_in(FINISHED_JOB)).dicts()
        # A live claim is skipped, this worker's own too (it is working on that job already).
        if j["id"] not in claims or not is_live(claims[j["id"]], now)]
    for job in sorted(open_jobs, key=lambda j: order.get(j["job_key"], len(order))):
        row = _lock_job(job["id"], skip_locked=True)  # another runner claiming it right now: skip it
        if row is None or row["status"] in FINISHED_JOB:
            continue
        if not _take(row["id"], run_id, worker, "job", lease_s, now):
            continue
        if row["status"] == "planned":
            RunJob.update(status="running").where(RunJob.id == row["id"]).execute()
            row["status"] = "running"
        return row
    return None


@dataclass(frozen=True)
class RunState:
    unfinished: int  # jobs not finished
    claimable: int  # of those, the ones nobody else holds a live claim on
    others_live: int  # live claims held by other workers (jobs or the finish)
    canceled: bool  # a finished job says the run was canceled (possibly on another workstation)
    stopped: str | None  # or stopped, by the budget


def run_state(run_id: str, worker: str, now: datetime) -> RunState:
    claims = {c["job_id"]: c for c in Claim.select().where(Claim.run_id == run_id).dicts()}
    jobs = list(RunJob.select(RunJob.id, RunJob.status, RunJob.meta_json).where(RunJob.run_id == run_id).dicts())
    unfinished = [j for j in jobs if j["status"] not in FINISHED_JOB]
    others = [c for c in claims.values() if c["worker_id"] != worker and is_live(c, now)]
    held = {c["job_id"] for c in others}
    return RunState(unfinished=len(unfinished), claimable=sum(1 for j in unfinished if j["id"] not in held),
                    others_live=len(others), canceled=any(j["meta_json"].get("canceled") for j in jobs),
                    stopped=next((j["meta_json"]["stopped"] for j in jobs if j["meta_json"].get("stopped")), None))


def others_live_in_project(worker: str, now: datetime) -> int:
    """Live claims of other workers on any run of the project: while there are some, files they stored but have
    not committed yet must not be swept as orphans."""
    return sum(1 for c in Claim.select().dicts() if c["worker_id"] != worker and is_live(c, now))


def claim_finish(run_id: str, first_job_id: str, worker: str, lease_s: float, now: datetime) -> bool:
    """The finish claim: taken when every job is finished and no other runner holds a live claim on the run."""
    state = run_state(run_id, worker, now)
    if state.unfinished or state.others_live:
        return False
    if _lock_job(first_job_id, skip_locked=False) is None:
        return False
    return _take(first_job_id, run_id, worker, "finish", lease_s, now)


def renew(run_id: str, worker: str, lease_s: float, now: datetime) -> int:
    """Extends this worker's leases on the run (its heartbeat); returns how many claims it still holds."""
    return Claim.update(expires_at=now + timedelta(seconds=lease_s)).where(
        (Claim.run_id == run_id) & (Claim.worker_id == worker)).execute()


def held_jobs(run_id: str, worker: str) -> list[dict]:
    """The jobs this worker holds a job claim on (id, status, meta_json): one finished under it was finished by
    someone else, canceled on another workstation say."""
    held = Claim.select(Claim.job_id).where((Claim.run_id == run_id) & (Claim.worker_id == worker)
                                            & (Claim.purpose == "job"))
    return list(RunJob.select(RunJob.id, RunJob.status, RunJob.meta_json).where(RunJob.id.in_(held)).dicts())


def release(run_id: str, worker: str, job_id: str | None = None) -> int:
    """Drops this worker's claims on the run (one job's, or all of them)."""
    query = Claim.delete().where((Claim.run_id == run_id) & (Claim.worker_id == worker))
    if job_id is not None:
        query = query.where(Claim.job_id == job_id)
    return query.execute()


def lock_job(job_id: str) -> dict | None:
    """The job's row, locked on PostgreSQL for the rest of the transaction (finishing a job: one runner does)."""
    return _lock_job(job_id, skip_locked=False)
