"""Rows of runs, jobs, candidates and quality reports (SPEC 5.4); run inside Store.read / Store.write, always scoped
by project_id. Each mutation records its audit row in the same transaction.

The rows are the runner's queue: a run in status `planned` (mode `run`) or `running` has work left; a job that is
`done`, `failed_output_guard` or `failed` is finished; a candidate row exists only once its work is committed
(with every asset, link and report it made, in one transaction), so after a crash the missing candidates are
exactly the work left, and none can be made twice (unique (job_id, candidate_index)).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from peewee import SQL, NodeList, fn

from iat.audit import repo as audit
from iat.db.migrations import dialect_of
from iat.db.models import QualityReport, Run, RunCandidate, RunJob
from iat.errors import Conflict, NotFound
from iat.pagination import keyset_page

FINISHED_JOB = ("done", "failed_output_guard", "failed")
ACTIVE_RUN = ("planned", "running")


def _id() -> str:
    return str(uuid.uuid4())


# --- runs ---


def create_run(project_id: str, run: dict, shots: list[dict], actor_id: str | None, now: datetime) -> dict:
    """The run row and one planned job per shot; the snapshot records its own run id as the recipe's origin."""
    run_id = run.get("id") or _id()
    snapshot = dict(run["settings_snapshot_json"])
    snapshot["origin_run_id"] = snapshot.get("origin_run_id") or run_id
    row = {"id": run_id, "project_id": project_id, "run_mode": run["run_mode"], "status": "planned",
           "stage": None, "time_of_day": run.get("time_of_day"), "weather": run.get("weather"),
           "model_name": run.get("model_name"), "provider_code": run["provider_code"],
           "settings_snapshot_json": snapshot, "started_at": None, "finished_at": None, "created_at": now}
    Run.insert(**row).execute()
    jobs = [{"id": _id(), "run_id": run_id, "job_key": job["job_key"], "status": "planned",
             "prompt_text": job["prompts"]["style_lock"], "selected_candidate_index": None,
             "final_asset_id": None, "meta_json": {"shot": job["shot"], "prompts": job["prompts"]},
             "created_at": now} for job in snapshot["jobs"]]
    if jobs:
        RunJob.insert_many(jobs).execute()
    audit.record(project_id, actor_id, "run.planned" if run["run_mode"] == "dry" else "run.queued",
                 {"run_id": run_id, "jobs": len(jobs), "provider": run["provider_code"],
                  "replay_of": run.get("replay_of")})
    return row


def get_run(project_id: str, run_id: str) -> dict:
    row = Run.select().where((Run.project_id == project_id) & (Run.id == run_id)).dicts().first()
    if row is None:
        raise NotFound(f"run {run_id} not found in this project", details={"run_id": run_id})
    return row


def list_runs(project_id: str, status: str | None, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    query = Run.select().where(Run.project_id == project_id)
    if status is not None:
        query = query.where(Run.status == status)
    return keyset_page(query, Run, limit, cursor)


def active_runs(project_id: str) -> list[dict]:
    """Runs with work left (mode run, planned or running), oldest first: what the runner resumes."""
    return list(Run.select().where((Run.project_id == project_id) & (Run.run_mode == "run")
                                   & Run.status.in_(ACTIVE_RUN)).order_by(Run.created_at, Run.id).dicts())


def update_run(project_id: str, run_id: str, changes: dict, event: str | None = None, payload: dict | None = None,
               actor_id: str | None = None) -> dict:
    get_run(project_id, run_id)
    Run.update(**changes).where((Run.project_id == project_id) & (Run.id == run_id)).execute()
    if event:
        audit.record(project_id, actor_id, event, {"run_id": run_id, **(payload or {})})
    return get_run(project_id, run_id)


def start_run(project_id: str, run_id: str, now: datetime) -> bool:
    """planned -> running, once: False when another runner started it first (it is joined, not started again)."""
    moved = Run.update(status="running", started_at=now).where(
        (Run.project_id == project_id) & (Run.id == run_id) & (Run.status == "planned")).execute()
    if moved:
        audit.record(project_id, None, "run.started", {"run_id": run_id})
    return bool(moved)


def end_run(project_id: str, run_id: str, status: str, now: datetime, event: str, payload: dict) -> bool:
    """running -> its final status, once (guarded in SQL: UPDATE ... WHERE status = 'running'); False when the run
    had already ended (another runner finished it), then nothing is recorded."""
    moved = Run.update(status=status, finished_at=now).where(
        (Run.project_id == project_id) & (Run.id == run_id) & Run.status.in_(ACTIVE_RUN)).execute()
    if moved:
        audit.record(project_id, None, event, {"run_id": run_id, **payload})
    return bool(moved)


def job_counts(run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (status,) in RunJob.select(RunJob.status).where(RunJob.run_id == run_id).tuples():
        counts[status] = counts.get(status, 0) + 1
    return counts


# --- jobs ---


def list_jobs(run_id: str) -> list[dict]:
    """A run's jobs in shot-list order (created together: ordered by their key's position in the snapshot)."""
    return list(RunJob.select().where(RunJob.run_id == run_id).dicts())


def get_job(project_id: str, job_id: str) -> dict:
    row = (RunJob.select(RunJob).join(Run, on=(RunJob.run_id == Run.id))
           .where((Run.project_id == project_id) & (RunJob.id == job_id)).dicts().first())
    if row is None:
        raise NotFound(f"job {job_id} not found in this project", details={"job_id": job_id})
    return row


def update_job(job_id: str, changes: dict) -> None:
    RunJob.update(**changes).where(RunJob.id == job_id).execute()


# --- candidates ---


def list_candidates(job_ids: list[str]) -> list[dict]:
    if not job_ids:
        return []
    return list(RunCandidate.select().where(RunCandidate.job_id.in_(job_ids))
                .order_by(RunCandidate.job_id, RunCandidate.candidate_index).dicts())


def insert_candidate(project_id: str, run_id: str, job_id: str, candidate: dict, report: dict | None,
                     now: datetime) -> dict:
    """A finished candidate and its QA report, after its assets were registered in the same transaction."""
    exists = (RunCandidate.select(RunCandidate.id).where((RunCandidate.job_id == job_id)
              & (RunCandidate.candidate_index == candidate["candidate_index"])).first())
    if exists is not None:
        raise Conflict(f"candidate {candidate['candidate_index']} of job {job_id} is already recorded",
                       details={"job_id": job_id, "candidate_index": candidate["candidate_index"]})
    row = {"id": _id(), "job_id": job_id, "rank_hard_failures": 0, "rank_soft_warnings": 0,
           "rank_avg_chroma_exceed": Decimal(0), "output_asset_id": None, "final_asset_id": None, "meta_json": {},
           **candidate, "created_at": now}
    row["rank_avg_chroma_exceed"] = Decimal(str(round(float(row["rank_avg_chroma_exceed"]), 6)))
    RunCandidate.insert(**row).execute()
    if report is not None:
        insert_report(project_id, run_id, job_id, row["id"], "output_guard", report, now)
    return row


def update_candidate(candidate_id: str, changes: dict) -> None:
    if "rank_avg_chroma_exceed" in changes:
        changes = {**changes, "rank_avg_chroma_exceed": Decimal(str(round(float(changes["rank_avg_chroma_exceed"]),
                                                                           6)))}
    RunCandidate.update(**changes).where(RunCandidate.id == candidate_id).execute()


def get_candidate(project_id: str, candidate_id: str) -> dict:
    row = (RunCandidate.select(RunCandidate).join(RunJob, on=(RunCandidate.job_id == RunJob.id))
           .join(Run, on=(RunJob.run_id == Run.id))
           .where((Run.project_id == project_id) & (RunCandidate.id == candidate_id)).dicts().first())
    if row is None:
        raise NotFound(f"candidate {candidate_id} not found in this project", details={"candidate_id": candidate_id})
    return row


# --- quality reports ---


def insert_report(project_id: str, run_id: str | None, job_id: str | None, candidate_id: str | None,
                  report_type: str, summary: dict, now: datetime) -> dict:
    row = {"id": _id(), "project_id": project_id, "run_id": run_id, "job_id": job_id, "candidate_id": candidate_id,
           "report_type": report_type, "summary_json": summary, "created_at": now}
    QualityReport.insert(**row).execute()
    return row


def reports_for(candidate_ids: list[str], report_type: str = "output_guard") -> dict[str, dict]:
    """The latest report of the type per candidate."""
    if not candidate_ids:
        return {}
    out: dict[str, dict] = {}
    query = (QualityReport.select().where(QualityReport.candidate_id.in_(candidate_ids)
                                          & (QualityReport.report_type == report_type))
             .order_by(QualityReport.created_at, QualityReport.id).dicts())
    for row in query:
        out[row["candidate_id"]] = row
    return out


def update_report(report_id: str, summary: dict) -> None:
    QualityReport.update(summary_json=summary).where(QualityReport.id == report_id).execute()


def list_reports(project_id: str, run_id: str | None, candidate_id: str | None, report_type: str | None,
                 limit: int, cursor: str | None, asset_id: str | None = None) -> tuple[list[dict], str | None]:
    """A page of reports newest first. With `asset_id`: the reports about that asset, quality.check's
    (summary_json.asset_id) and a run's on the candidate whose final asset it is (its guard's and human_review)."""
    query = QualityReport.select().where(QualityReport.project_id == project_id)
    if asset_id is not None:
        judged = RunCandidate.select(RunCandidate.id).where(RunCandidate.final_asset_id == asset_id)
        query = query.where((_summary_asset_id() == asset_id) | QualityReport.candidate_id.in_(judged))
    if run_id is not None:
        query = query.where(QualityReport.run_id == run_id)
    if candidate_id is not None:
        query = query.where(QualityReport.candidate_id == candidate_id)
    if report_type is not None:
        query = query.where(QualityReport.report_type == report_type)
    return keyset_page(query, QualityReport, limit, cursor)


def _summary_asset_id():
    """`summary_json.asset_id` as SQL text, per dialect: json_extract on SQLite (TEXT), ->> on PostgreSQL (JSONB)."""
    if dialect_of(QualityReport._meta.database) == "postgres":
        return NodeList((QualityReport.summary_json, SQL("->> 'asset_id'")))
    return fn.json_extract(QualityReport.summary_json, "$.asset_id")
